//! The plain-HTTP file endpoints (`/files`, `/envs`) against the real agent binary: downloads
//! (ranges, gzip, errors), uploads (raw, multipart, gzip, metadata, ownership, disk full) and
//! signed URLs.

mod common;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full, StreamBody};
use hutch_agent::files::signature::{self, Operation};
use hutch_agent::files::xattr;
use hyper::body::Frame;
use hyper::{HeaderMap, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;

const TOKEN: &str = "secret-token";

fn config() -> String {
    json!({"sandboxId": "files", "envVars": {"GREETING": "hi", "EMPTY": ""}, "accessToken": TOKEN})
        .to_string()
}

/// A response, fully read.
struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn send<B>(agent: &Agent, req: Request<B>) -> Resp
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(agent.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Resp {
        status,
        headers,
        body,
    }
}

/// `method uri` with `headers` and an in-memory `body`; the access token is added unless a
/// header list says `x-access-token` itself or `no-token` is set.
async fn call(
    agent: &Agent,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Resp {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{}{uri}", agent.addr));
    let mut with_token = true;
    for (k, v) in headers {
        if *k == "no-token" {
            with_token = false;
            continue;
        }
        if k.eq_ignore_ascii_case("x-access-token") {
            with_token = false;
        }
        req = req.header(*k, *v);
    }
    if with_token {
        req = req.header("x-access-token", TOKEN);
    }
    send(agent, req.body(Full::new(Bytes::from(body))).unwrap()).await
}

fn multipart(boundary: &str, files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in files {
        out.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(data)
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn write_fixture(agent: &Agent, rel: &str, data: &[u8]) -> std::path::PathBuf {
    let path = agent.home.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, data).unwrap();
    path
}

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
        Some("inline; filename=data.bin")
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

#[tokio::test]
async fn envs_returns_the_sandbox_env_vars_with_a_token_only() {
    let agent = Agent::start(&config()).await;
    let r = call(&agent, "GET", "/envs", &[], vec![]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), json!({"GREETING": "hi", "EMPTY": ""}));
    let r = call(&agent, "GET", "/envs", &[("no-token", "")], vec![]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn uploads_raw_bodies_with_parents_and_ownership() {
    let agent = Agent::start(&config()).await;
    let r = call(
        &agent,
        "POST",
        "/files?path=new/sub/raw.txt",
        &[("content-type", "application/octet-stream")],
        b"raw body".to_vec(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
    let target = agent.home.join("new/sub/raw.txt");
    assert_eq!(
        r.json(),
        json!([{"name": "raw.txt", "path": target.display().to_string(), "type": "file"}])
    );
    assert_eq!(std::fs::read(&target).unwrap(), b"raw body");
    if is_root() {
        for p in [
            agent.home.join("new"),
            agent.home.join("new/sub"),
            target.clone(),
        ] {
            let meta = std::fs::metadata(&p).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (TEST_UID, TEST_UID), "{p:?}");
        }
        // As root, by parameter and by Basic auth: root's files.
        for (uri, headers) in [
            ("/files?path=by_param.txt&username=root", vec![]),
            (
                "/files?path=by_basic.txt",
                vec![("authorization", basic("root"))],
            ),
        ] {
            let mut h: Vec<(&str, &str)> = vec![("content-type", "application/octet-stream")];
            h.extend(headers.iter().map(|(k, v)| (*k, v.as_str())));
            let r = call(&agent, "POST", uri, &h, b"r".to_vec()).await;
            assert_eq!(r.status, StatusCode::OK);
            let path = r.json()[0]["path"].as_str().unwrap().to_owned();
            assert!(path.starts_with("/root/"), "{path}");
            let meta = std::fs::metadata(&path).unwrap();
            assert_eq!(meta.uid(), 0);
            std::fs::remove_file(&path).unwrap();
        }
    }

    // Overwrite truncates; gzip-encoded body.
    let r = call(
        &agent,
        "POST",
        "/files?path=new/sub/raw.txt",
        &[
            ("content-type", "application/octet-stream"),
            ("content-encoding", "gzip"),
        ],
        gzip(b"short"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(std::fs::read(&target).unwrap(), b"short");

    // Errors.
    let r = call(
        &agent,
        "POST",
        "/files",
        &[("content-type", "application/octet-stream")],
        b"x".to_vec(),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json()["message"],
        "path query parameter is required for raw body upload"
    );
    let r = call(
        &agent,
        "POST",
        "/files?path=new",
        &[("content-type", "application/octet-stream")],
        b"x".to_vec(),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = call(
        &agent,
        "POST",
        "/files?path=new/sub/raw.txt/below",
        &[("content-type", "application/octet-stream")],
        b"x".to_vec(),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.json());
    let r = call(
        &agent,
        "POST",
        "/files?path=a",
        &[("content-type", "text/plain")],
        b"x".to_vec(),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = call(
        &agent,
        "POST",
        "/files?path=a",
        &[
            ("content-type", "application/octet-stream"),
            ("content-encoding", "br"),
        ],
        b"x".to_vec(),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = call(
        &agent,
        "POST",
        "/files?path=a",
        &[
            ("content-type", "application/octet-stream"),
            ("content-encoding", "gzip"),
        ],
        b"not gzip at all".to_vec(),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = call(
        &agent,
        "POST",
        "/files?path=a&username=nobody",
        &[("content-type", "application/octet-stream")],
        b"x".to_vec(),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn uploads_multipart_with_full_paths_gzip_and_duplicates() {
    let agent = Agent::start(&config()).await;
    let abs = agent.home.join("abs/one.txt").display().to_string();
    let body = multipart(
        "b0undary",
        &[(&abs, b"one"), ("rel/two.bin", b"\r\n--b0undar\x00two")],
    );
    let r = call(
        &agent,
        "POST",
        "/files",
        &[("content-type", "multipart/form-data; boundary=b0undary")],
        body.clone(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
    let paths: Vec<String> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_owned())
        .collect();
    let two = agent.home.join("rel/two.bin").display().to_string();
    assert_eq!(paths, [abs.clone(), two.clone()]);
    assert_eq!(std::fs::read(&abs).unwrap(), b"one");
    assert_eq!(std::fs::read(&two).unwrap(), b"\r\n--b0undar\x00two");

    // The whole multipart body gzip-compressed.
    let body = multipart("zz", &[("gz/a.txt", b"gzipped part")]);
    let r = call(
        &agent,
        "POST",
        "/files",
        &[
            ("content-type", "multipart/form-data; boundary=zz"),
            ("content-encoding", "gzip"),
        ],
        gzip(&body),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
    assert_eq!(
        std::fs::read(agent.home.join("gz/a.txt")).unwrap(),
        b"gzipped part"
    );

    // `?path=` names the single file, whatever its filename says.
    let body = multipart("q", &[("ignored.txt", b"named by query")]);
    let r = call(
        &agent,
        "POST",
        "/files?path=by_query.txt",
        &[("content-type", "multipart/form-data; boundary=q")],
        body,
    )
    .await;
    assert_eq!(r.json()[0]["name"], "by_query.txt");

    // Two parts for one path.
    let body = multipart("d", &[("dup.txt", b"1"), ("dup.txt", b"2")]);
    let r = call(
        &agent,
        "POST",
        "/files",
        &[("content-type", "multipart/form-data; boundary=d")],
        body,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .starts_with("you cannot upload multiple files to the same path"));

    // Truncated and boundary-less bodies.
    let body = multipart("t", &[("t.txt", b"abc")]);
    let r = call(
        &agent,
        "POST",
        "/files",
        &[("content-type", "multipart/form-data; boundary=t")],
        body[..body.len() - 8].to_vec(),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = call(
        &agent,
        "POST",
        "/files",
        &[("content-type", "multipart/form-data")],
        b"--x--".to_vec(),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn streams_large_chunked_uploads() {
    let agent = Agent::start(&config()).await;
    // 48 MiB in 64 KiB chunks through a chunked body, never built in memory on this side either.
    let chunk: Bytes = (0..65_536u32)
        .map(|i| (i % 253) as u8)
        .collect::<Vec<_>>()
        .into();
    let count = 768;
    let head = Bytes::from_static(
        b"--big\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\n\r\n",
    );
    let tail = Bytes::from_static(b"\r\n--big--\r\n");
    let repeated = chunk.clone();
    let frames = std::iter::once(head)
        .chain((0..count).map(move |_| repeated.clone()))
        .chain(std::iter::once(tail))
        .map(|b| Ok::<_, Infallible>(Frame::data(b)));
    let body = StreamBody::new(futures_util::stream::iter(frames));
    let req = Request::post(format!("http://{}/files", agent.addr))
        .header("content-type", "multipart/form-data; boundary=big")
        .header("x-access-token", TOKEN)
        .body(body)
        .unwrap();
    let r = send(&agent, req).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let written = std::fs::read(agent.home.join("big.bin")).unwrap();
    assert_eq!(written.len(), chunk.len() * count);
    assert!(written.chunks(chunk.len()).all(|c| c == &chunk[..]));

    let r = call(&agent, "GET", "/files?path=big.bin", &[], vec![]).await;
    assert_eq!(r.body.len(), chunk.len() * count);
}

fn xattrs_supported(dir: &Path) -> bool {
    let probe = dir.join(".xattr-probe");
    std::fs::write(&probe, b"").unwrap();
    let file = std::fs::File::open(&probe).unwrap();
    let ok = xattr::replace(
        std::os::fd::AsFd::as_fd(&file),
        &BTreeMap::from([("probe".to_owned(), "1".to_owned())]),
    )
    .is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

#[tokio::test]
async fn metadata_headers_become_xattrs_and_replace_old_ones() {
    let agent = Agent::start(&config()).await;
    if !xattrs_supported(&agent.home) {
        eprintln!("skipped: the test directory has no user xattrs");
        return;
    }
    let r = call(
        &agent,
        "POST",
        "/files?path=meta.txt",
        &[
            ("content-type", "application/octet-stream"),
            ("X-Metadata-Author", "mish"),
            ("x-metadata-purpose", "upload"),
        ],
        b"m".to_vec(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json()[0]["metadata"],
        json!({"author": "mish", "purpose": "upload"})
    );
    let path = agent.home.join("meta.txt");
    assert_eq!(
        xattr::read_path(&path).unwrap(),
        BTreeMap::from([
            ("author".to_owned(), "mish".to_owned()),
            ("purpose".to_owned(), "upload".to_owned())
        ])
    );
    // An overwrite with other metadata replaces the set; one without clears it.
    let body = multipart("m", &[("meta.txt", b"m2")]);
    let r = call(
        &agent,
        "POST",
        "/files",
        &[
            ("content-type", "multipart/form-data; boundary=m"),
            ("x-metadata-stage", "two"),
        ],
        body,
    )
    .await;
    assert_eq!(r.json()[0]["metadata"], json!({"stage": "two"}));
    let r = call(
        &agent,
        "POST",
        "/files?path=meta.txt",
        &[("content-type", "application/octet-stream")],
        b"m3".to_vec(),
    )
    .await;
    assert!(r.json()[0].get("metadata").is_none(), "{:?}", r.json());
    assert!(xattr::read_path(&path).unwrap().is_empty());
    // Invalid metadata is refused before anything is written.
    let r = call(
        &agent,
        "POST",
        "/files?path=never.txt",
        &[
            ("content-type", "application/octet-stream"),
            ("x-metadata-big", &"v".repeat(5000)),
        ],
        b"x".to_vec(),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(!agent.home.join("never.txt").exists());
}

#[tokio::test]
async fn signed_urls_replace_the_token() {
    let agent = Agent::start(&config()).await;
    write_fixture(&agent, "signed.txt", b"signed content");
    let sig =
        |path: &str, op, user: &str, exp: Option<i64>| signature::sign(path, op, user, TOKEN, exp);
    let q = |path: &str, user: Option<&str>, s: &str, exp: Option<i64>| {
        let mut uri = format!("/files?path={}", enc(path));
        if let Some(u) = user {
            uri.push_str(&format!("&username={u}"));
        }
        uri.push_str(&format!("&signature={}", enc(s)));
        if let Some(e) = exp {
            uri.push_str(&format!("&signature_expiration={e}"));
        }
        uri
    };
    let no_token = [("no-token", "")];

    // Read, with and without a username, with a future expiration.
    let s = sig("signed.txt", Operation::Read, "user", None);
    let r = call(
        &agent,
        "GET",
        &q("signed.txt", Some("user"), &s, None),
        &no_token,
        vec![],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, b"signed content");
    let exp = signature::unix_now() + 120;
    let s = sig("signed.txt", Operation::Read, "", Some(exp));
    let r = call(
        &agent,
        "GET",
        &q("signed.txt", None, &s, Some(exp)),
        &no_token,
        vec![],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);

    // Expired: envd's exact answer.
    let exp = signature::unix_now() - 120;
    let s = sig("signed.txt", Operation::Read, "user", Some(exp));
    let r = call(
        &agent,
        "GET",
        &q("signed.txt", Some("user"), &s, Some(exp)),
        &no_token,
        vec![],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.json(),
        json!({"code": 401, "message": "signature is already expired"})
    );

    // Wrong path, user, operation or signature.
    let s = sig("signed.txt", Operation::Read, "user", None);
    for uri in [
        q("other.txt", Some("user"), &s, None),
        q("signed.txt", Some("root"), &s, None),
        q("signed.txt", Some("user"), &format!("{s}x"), None),
    ] {
        let r = call(&agent, "GET", &uri, &no_token, vec![]).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{uri}");
        assert_eq!(
            r.json(),
            json!({"code": 401, "message": "invalid signature"})
        );
    }
    let r = call(
        &agent,
        "POST",
        &q("signed.txt", Some("user"), &s, None),
        &[
            ("no-token", ""),
            ("content-type", "application/octet-stream"),
        ],
        b"no".to_vec(),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        std::fs::read(agent.home.join("signed.txt")).unwrap(),
        b"signed content"
    );

    // A signed upload; Basic auth cannot turn a default-user signature into root.
    let s = sig("up/signed.txt", Operation::Write, "", None);
    let r = call(
        &agent,
        "POST",
        &q("up/signed.txt", None, &s, None),
        &[
            ("no-token", ""),
            ("content-type", "application/octet-stream"),
            ("authorization", &basic("root")),
        ],
        b"uploaded".to_vec(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
    let written = agent.home.join("up/signed.txt");
    assert_eq!(r.json()[0]["path"], written.display().to_string());
    assert_eq!(std::fs::read(&written).unwrap(), b"uploaded");
    if is_root() {
        assert_eq!(std::fs::metadata(&written).unwrap().uid(), TEST_UID);
    }

    // A signature does not open other endpoints.
    let r = call(
        &agent,
        "GET",
        &format!("/envs?signature={}", enc(&s)),
        &no_token,
        vec![],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn without_a_token_signatures_are_ignored() {
    let agent = Agent::start(r#"{"sandboxId":"open","envVars":{}}"#).await;
    write_fixture(&agent, "open.txt", b"open");
    let r = call(
        &agent,
        "GET",
        "/files?path=open.txt&signature=v1_whatever",
        &[("no-token", "")],
        vec![],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, b"open");
}

/// Runs the agent in a mount namespace of its own where `dir` is a 256 KiB tmpfs, and checks
/// that filling it answers 507.
#[tokio::test]
async fn a_full_disk_answers_507() {
    if !can_unshare_pid() {
        eprintln!("skipped: needs root and unshare for a private tmpfs");
        return;
    }
    let agent = Agent::start(&config()).await;
    let small = agent.dir.join("small");
    std::fs::create_dir_all(&small).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let script = format!(
        "mount -t tmpfs -o size=256k tmpfs {small} && exec {bin} --listen 127.0.0.1:{port} --passwd {passwd} --group {group}",
        small = small.display(),
        bin = env!("CARGO_BIN_EXE_hutch-agent"),
        passwd = agent.dir.join("passwd").display(),
        group = agent.dir.join("group").display(),
    );
    let mut child = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .env("HUTCH_AGENT_CONFIG", config())
        .env("HUTCH_AGENT_LOG", "warn")
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut ready = false;
    for _ in 0..200 {
        if TcpStream::connect(addr).await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let result = async {
        assert!(ready, "the agent in the mount namespace did not start");
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let target = small.join("too-big.bin").display().to_string();
        let req = Request::post(format!("http://{addr}/files?path={}", enc(&target)))
            .header("content-type", "application/octet-stream")
            .header("x-access-token", TOKEN)
            .body(Full::new(Bytes::from(vec![7u8; 2 << 20])))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let json: Value = serde_json::from_slice(&body).unwrap();
        (status, json)
    }
    .await;
    // SAFETY: signalling our own child (sh exec'd into the agent) by pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    let (status, json) = result;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{json}");
    assert_eq!(json["code"], 507);
    assert_eq!(
        json["message"],
        format!(
            "attempted to write {} bytes: not enough disk space available",
            2 << 20
        )
    );
}
