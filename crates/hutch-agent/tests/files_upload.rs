//! Uploads to the plain-HTTP `/files` endpoint against the real agent binary: raw, multipart,
//! gzip and chunked bodies, parents and ownership, metadata as xattrs, and a full disk.

mod common;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use common::files::*;
use common::*;
use http_body_util::{BodyExt, Full, StreamBody};
use hutch_agent::files::xattr;
use hyper::body::Frame;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;

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
    // SIGKILL to our own child: sh, exec'd into the agent.
    let _ = child.kill();
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

#[tokio::test]
async fn a_user_cannot_write_or_read_through_a_link_to_roots_files() {
    if !is_root() {
        return;
    }
    let agent = Agent::start(&config()).await;
    // Root's secret outside the user's home, and a link to it the user made in its home.
    let secret_dir = agent.home.parent().unwrap().join("root-only");
    std::fs::create_dir_all(&secret_dir).unwrap();
    let secret = secret_dir.join("sudoers");
    std::fs::write(&secret, "root ALL=(ALL) ALL\n").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let link = agent.home.join("innocent.txt");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    std::os::unix::fs::lchown(&link, Some(TEST_UID), Some(TEST_UID)).unwrap();

    let r = call(
        &agent,
        "POST",
        "/files?path=innocent.txt",
        &[("content-type", "application/octet-stream")],
        b"user ALL=(ALL) NOPASSWD: ALL\n".to_vec(),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.json());
    assert_eq!(std::fs::read(&secret).unwrap(), b"root ALL=(ALL) ALL\n");
    assert_eq!(std::fs::metadata(&secret).unwrap().uid(), 0);
    // Nor straight at a directory it may not write.
    let r = call(
        &agent,
        "POST",
        &format!(
            "/files?path={}",
            enc(&secret_dir.join("new").display().to_string())
        ),
        &[("content-type", "application/octet-stream")],
        b"x".to_vec(),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.json());
    assert!(!secret_dir.join("new").exists());

    let r = call(&agent, "GET", "/files?path=innocent.txt", &[], Vec::new()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(!String::from_utf8_lossy(&r.body).contains("root ALL"));
    // Root itself may.
    let r = call(
        &agent,
        "GET",
        &format!(
            "/files?path={}&username=root",
            enc(&secret.display().to_string())
        ),
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    std::fs::remove_dir_all(&secret_dir).unwrap();
}
