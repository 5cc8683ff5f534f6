//! The HTTP client the server reaches sandboxes with (the router forwards through it, the
//! service waits on it for a new sandbox's agent), kept apart from both so neither depends
//! on the other for it.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

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
