//! Downloads from the plain-HTTP `/files` endpoint against the real agent binary: whole files,
//! ranges, gzip, and errors in envd's JSON shape.

mod common;

use std::time::Duration;

use common::files::*;
use common::*;
use hyper::StatusCode;
use serde_json::json;

#[tokio::test]
async fn downloads_whole_files_ranges_and_gzip() {
    let agent = Agent::start(&config()).await;
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    write_fixture(&agent, "dir/data.bin", &data);

    let r = call(&agent, "GET", "/files?path=dir/data.bin", &[], vec![]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, data);
    assert_eq!(r.header("content-length"), Some("300000"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert_eq!(
        r.header("content-disposition"),
        Some("attachment; filename=data.bin")
    );
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(
        r.header("content-security-policy"),
        Some("sandbox; default-src 'none'")
    );

    // Absolute path, and `~`.
    let abs = format!(
        "/files?path={}",
        enc(&agent.home.join("dir/data.bin").display().to_string())
    );
    assert_eq!(call(&agent, "GET", &abs, &[], vec![]).await.body, data);
    let r = call(&agent, "GET", "/files?path=~/dir/data.bin", &[], vec![]).await;
    assert_eq!(r.body, data);

    // One range.
    let r = call(
        &agent,
        "GET",
        "/files?path=dir/data.bin",
        &[("range", "bytes=10-19")],
        vec![],
    )
    .await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.body, &data[10..20]);
    assert_eq!(r.header("content-range"), Some("bytes 10-19/300000"));
    // A suffix range.
    let r = call(
        &agent,
        "GET",
        "/files?path=dir/data.bin",
        &[("range", "bytes=-5")],
        vec![],
    )
    .await;
    assert_eq!(r.body, &data[299_995..]);
    // Several ranges: multipart/byteranges.
    let r = call(
        &agent,
        "GET",
        "/files?path=dir/data.bin",
        &[("range", "bytes=0-1, 100-102")],
        vec![],
    )
    .await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    let ct = r.header("content-type").unwrap().to_owned();
    let boundary = ct.strip_prefix("multipart/byteranges; boundary=").unwrap();
    let parts = hutch_agent::files::multipart::parse_all(boundary, &r.body).unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0].1, &data[0..2]);
    assert_eq!(parts[1].1, &data[100..103]);
    assert_eq!(
        r.header("content-length").unwrap(),
        r.body.len().to_string()
    );
    // Unsatisfiable.
    let r = call(
        &agent,
        "GET",
        "/files?path=dir/data.bin",
        &[("range", "bytes=400000-")],
        vec![],
    )
    .await;
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.header("content-range"), Some("bytes */300000"));
    assert_eq!(r.json()["code"], 416);

    // gzip when offered, identity for ranges even then.
    let r = call(
        &agent,
        "GET",
        "/files?path=dir/data.bin",
        &[("accept-encoding", "gzip, deflate")],
        vec![],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(gunzip(&r.body), data);
    let r = call(
        &agent,
        "GET",
        "/files?path=dir/data.bin",
        &[("accept-encoding", "gzip"), ("range", "bytes=0-3")],
        vec![],
    )
    .await;
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.body, &data[0..4]);
    let r = call(
        &agent,
        "GET",
        "/files?path=dir/data.bin",
        &[("accept-encoding", "br;q=1, identity;q=0")],
        vec![],
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_ACCEPTABLE);

    // Conditional: not modified since now.
    let later = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(60));
    let r = call(
        &agent,
        "GET",
        "/files?path=dir/data.bin",
        &[("if-modified-since", &later)],
        vec![],
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);

    // Files whose size says nothing are streamed to their end: procfs (size 0), empty files.
    let r = call(
        &agent,
        "GET",
        "/files?path=/proc/sys/kernel/ostype",
        &[],
        vec![],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, b"Linux\n");
    write_fixture(&agent, "empty", b"");
    let r = call(&agent, "GET", "/files?path=empty", &[], vec![]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.is_empty());

    // Text is labelled as such.
    write_fixture(&agent, "notes", b"plain words\n");
    let r = call(&agent, "GET", "/files?path=notes", &[], vec![]).await;
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
}

#[tokio::test]
async fn download_errors_are_envd_json() {
    let agent = Agent::start(&config()).await;
    let r = call(&agent, "GET", "/files?path=missing.txt", &[], vec![]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let missing = agent.home.join("missing.txt");
    assert_eq!(
        r.json(),
        json!({"code": 404, "message": format!("path '{}' does not exist", missing.display())})
    );
    let r = call(&agent, "GET", "/files?path=.", &[], vec![]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .ends_with("is a directory"));
    let r = call(&agent, "GET", "/files?path=x&username=nobody", &[], vec![]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["code"], 401);
    let r = call(&agent, "GET", "/files?path=~root/x", &[], vec![]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // No token, no signature.
    let r = call(&agent, "GET", "/files?path=x", &[("no-token", "")], vec![]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // A wrong token with a signature is still refused.
    let r = call(
        &agent,
        "GET",
        "/files?path=x&signature=v1_abc",
        &[("x-access-token", "wrong")],
        vec![],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}
