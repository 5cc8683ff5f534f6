//! The router for sandbox traffic: requests that name a sandbox (by the `E2b-Sandbox-Id` /
//! `E2b-Sandbox-Port` headers, or a `{port}-{id}.{domain}` Host) are forwarded, body
//! streaming both ways, to that port on the sandbox's address.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::sandbox::{valid_id, SandboxState};
use crate::service::{Service, AGENT_PORT};

/// The HTTP client used to reach sandboxes.
pub type HttpClient = Client<HttpConnector, Body>;

/// A client with short connect timeouts and pooled keep-alive connections.
pub fn client() -> HttpClient {
    let mut conn = HttpConnector::new();
    conn.set_connect_timeout(Some(Duration::from_secs(5)));
    conn.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(conn)
}

/// Which sandbox and port a request is for, if it is sandbox traffic.
pub fn target(headers: &HeaderMap) -> Option<(String, u16)> {
    if let Some(id) = headers.get("e2b-sandbox-id").and_then(|v| v.to_str().ok()) {
        let port = headers
            .get("e2b-sandbox-port")
            .and_then(|v| v.to_str().ok())
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(AGENT_PORT);
        return Some((id.trim().to_string(), port));
    }
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let label = host.split('.').next()?;
    // `{port}-{id}` with a bare IP or name has no '-' in its first label: not sandbox traffic.
    if !host.contains('.') {
        return None;
    }
    let (port, id) = label.split_once('-')?;
    let port: u16 = port.parse().ok()?;
    valid_id(id).then(|| (id.to_string(), port))
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Body> {
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        "application/json".parse().expect("static header"),
    );
    r
}

/// E2B's answer for traffic to a sandbox that does not exist (or is paused).
pub fn not_found(id: &str) -> Response<Body> {
    json(
        StatusCode::BAD_GATEWAY,
        serde_json::json!({"code": 502, "message": "The sandbox was not found", "sandboxId": id}),
    )
}

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(h: &mut HeaderMap) {
    for name in HOP_BY_HOP {
        h.remove(*name);
    }
}

/// Forwards one request to sandbox `id`'s `port`.
pub async fn forward(svc: &Service, id: &str, port: u16, req: Request<Body>) -> Response<Body> {
    if !valid_id(id) {
        return not_found(id);
    }
    let Some(route) = svc.route(id) else {
        return not_found(id);
    };
    if route.state == SandboxState::Paused {
        return not_found(id);
    }
    let (mut parts, body) = req.into_parts();
    let pq = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let uri: Uri = match format!("http://{}:{port}{pq}", route.ip).parse() {
        Ok(u) => u,
        Err(_) => {
            return json(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"code": 400, "message": "invalid request path"}),
            )
        }
    };
    parts.uri = uri;
    parts.version = http::Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    parts
        .headers
        .remove(HeaderName::from_static("e2b-sandbox-id"));
    parts
        .headers
        .remove(HeaderName::from_static("e2b-sandbox-port"));
    let out = Request::from_parts(parts, body);
    match svc.http().request(out).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, Body::new(body))
        }
        Err(e) => {
            tracing::debug!(sandbox = %id, port, error = %e, "sandbox port unreachable");
            if svc.route(id).is_none() {
                return not_found(id);
            }
            json(
                StatusCode::BAD_GATEWAY,
                serde_json::json!({
                    "code": 502,
                    "message": "The sandbox is running but port is not open",
                    "sandboxId": id,
                    "port": port,
                }),
            )
        }
    }
}

/// Waits until `GET /health` on `ip:port` answers 2xx, or `limit` passes.
pub async fn wait_healthy(
    client: &HttpClient,
    ip: Ipv4Addr,
    port: u16,
    limit: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    let mut delay = Duration::from_millis(1);
    let uri: Uri = format!("http://{ip}:{port}/health")
        .parse()
        .map_err(|e| format!("{e}"))?;
    loop {
        let req = Request::get(uri.clone())
            .body(Body::empty())
            .map_err(|e| e.to_string())?;
        let attempt = tokio::time::timeout(Duration::from_secs(2), client.request(req)).await;
        if let Ok(Ok(r)) = attempt {
            if r.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the sandbox agent at {ip}:{port} did not answer /health within {limit:?}"
            ));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        m
    }

    #[test]
    fn routes_by_headers_then_host() {
        assert_eq!(
            target(&h(&[
                ("E2b-Sandbox-Id", "abc"),
                ("E2b-Sandbox-Port", "49999")
            ])),
            Some(("abc".into(), 49999))
        );
        assert_eq!(
            target(&h(&[("E2b-Sandbox-Id", "abc")])),
            Some(("abc".into(), AGENT_PORT))
        );
        assert_eq!(
            target(&h(&[("host", "8080-abc123.sandbox.local:3000")])),
            Some(("abc123".into(), 8080))
        );
        assert_eq!(target(&h(&[("host", "127.0.0.1:49982")])), None);
        assert_eq!(target(&h(&[("host", "localhost")])), None);
        assert_eq!(target(&h(&[("host", "api.example.com")])), None);
    }
}
