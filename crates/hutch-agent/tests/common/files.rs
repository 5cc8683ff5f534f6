//! Helpers for the tests of the plain-HTTP file endpoints (`/files`, `/envs`): requests with
//! the access token, multipart and gzip bodies, and fixtures in the user's home.

use std::io::{Read, Write};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;

use super::Agent;

/// The access token the agent is configured with.
pub const TOKEN: &str = "secret-token";

/// The agent configuration: a few env vars and [`TOKEN`].
pub fn config() -> String {
    json!({"sandboxId": "files", "envVars": {"GREETING": "hi", "EMPTY": ""}, "accessToken": TOKEN})
        .to_string()
}

/// A response, fully read.
pub struct Resp {
    /// The HTTP status.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Vec<u8>,
}

impl Resp {
    /// The body as JSON (`Null` if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// A header's value, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends `req` on a fresh connection and reads the whole response.
pub async fn send<B>(agent: &Agent, req: Request<B>) -> Resp
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
pub async fn call(
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

/// A `multipart/form-data` body with one `file` part per `(filename, data)`.
pub fn multipart(boundary: &str, files: &[(&str, &[u8])]) -> Vec<u8> {
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

/// `data` gzip-compressed.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// `data` gzip-decompressed (all members).
pub fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(data)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// `s` percent-encoded for a query string, keeping `/`.
pub fn enc(s: &str) -> String {
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

/// Writes `data` to `rel` under the user's home, creating parents; returns the path.
pub fn write_fixture(agent: &Agent, rel: &str, data: &[u8]) -> std::path::PathBuf {
    let path = agent.home.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, data).unwrap();
    path
}
