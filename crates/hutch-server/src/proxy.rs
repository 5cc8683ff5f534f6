//! The router for sandbox traffic: requests that name a sandbox (by the `E2b-Sandbox-Id` /
//! `E2b-Sandbox-Port` headers, or a `{port}-{id}.{domain}` Host) are forwarded, body
//! streaming both ways, to that port on the sandbox's address.

use std::net::Ipv4Addr;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;

use crate::sandbox::{valid_id, SandboxState};
use crate::service::Service;
use hutch_contracts::agent::{AGENT_PORT, FILE_HANDOFF_HEADER};

mod backend_tls;
mod handoff;
mod upload;

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

/// Where a request to a sandbox created with `allowPublicTraffic: false` carries its
/// `trafficAccessToken` (E2B's header).
pub const TRAFFIC_TOKEN_HEADER: &str = "e2b-traffic-access-token";

/// Whether `headers` carry `secret` in `name` (compared in constant time).
fn holds(headers: &HeaderMap, name: &str, secret: &str) -> bool {
    headers
        .get(name)
        .is_some_and(|v| hutch_contracts::auth::constant_time_eq(v.as_bytes(), secret.as_bytes()))
}

/// E2B's 403 for a request to a private sandbox's port without its traffic access token
/// (or with another): JSON, or a page for a browser. None when the token is right.
fn traffic_refusal(id: &str, expected: &str, headers: &HeaderMap) -> Option<Response<Body>> {
    let (message, title) = match headers.get(TRAFFIC_TOKEN_HEADER) {
        None => (
            format!("Sandbox is secured with traffic access token. Token header '{TRAFFIC_TOKEN_HEADER}' is missing"),
            "Missing Traffic Access Token",
        ),
        Some(_) if holds(headers, TRAFFIC_TOKEN_HEADER, expected) => return None,
        Some(_) => (
            format!("Sandbox is secured with traffic access token. Provided token in header '{TRAFFIC_TOKEN_HEADER}' is invalid"),
            "Invalid Traffic Access Token",
        ),
    };
    let browser = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ua| ua.starts_with("Mozilla/"));
    let (body, content_type) = if browser {
        (
            format!(
                "<html><head><title>{title}</title></head><body><h1>{title}</h1>\
                 <p>{message}.</p><p>Sandbox: {id}</p></body></html>"
            ),
            "text/html; charset=utf-8",
        )
    } else {
        (
            serde_json::json!({"code": 403, "message": message, "sandboxId": id}).to_string(),
            "application/json; charset=utf-8",
        )
    };
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::FORBIDDEN;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    Some(r)
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

fn is_upgrade(h: &HeaderMap) -> bool {
    h.get(header::CONNECTION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        })
        && h.contains_key(header::UPGRADE)
}

/// Resolves once the sandbox is killed (or its route is dropped).
async fn killed(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|k| *k).await;
}

/// Forwards one request to sandbox `id`'s `port`: bodies stream both ways, protocol
/// upgrades (WebSocket) are spliced, and everything in flight ends when the sandbox is
/// killed.
pub async fn forward(svc: &Service, id: &str, port: u16, mut req: Request<Body>) -> Response<Body> {
    if !valid_id(id) {
        return not_found(id);
    }
    let Some(mut route) = svc.route(id) else {
        return not_found(id);
    };
    if port != AGENT_PORT {
        if let Some(expected) = route.traffic_access_token.as_deref() {
            if let Some(refusal) = traffic_refusal(id, expected, req.headers()) {
                return refusal;
            }
        }
    }
    if route.state == SandboxState::Paused {
        // A sandbox created with `autoResume` wakes for a request that holds what its port
        // wants (the traffic token, checked above, or the agent's access token), with the
        // default timeout, and the request goes through; any other paused one is not
        // routable.
        let may_wake = route.auto_resume
            && (port != AGENT_PORT
                || route
                    .envd_access_token
                    .as_deref()
                    .is_none_or(|t| holds(req.headers(), "x-access-token", t)));
        if !may_wake || svc.connect(id, None).await.is_err() {
            return not_found(id);
        }
        tracing::info!(sandbox = %id, port, "sandbox resumed by traffic");
        match svc.route(id) {
            Some(r) if r.state != SandboxState::Paused => route = r,
            _ => return not_found(id),
        }
    }
    let upgrade = is_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
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
    let upgrade_hdr = parts.headers.get(header::UPGRADE).cloned();
    strip_hop_by_hop(&mut parts.headers);
    if let (true, Some(u)) = (upgrade, upgrade_hdr) {
        parts.headers.insert(
            header::CONNECTION,
            http::HeaderValue::from_static("upgrade"),
        );
        parts.headers.insert(header::UPGRADE, u);
    }
    parts
        .headers
        .remove(HeaderName::from_static("e2b-sandbox-id"));
    parts
        .headers
        .remove(HeaderName::from_static("e2b-sandbox-port"));
    parts
        .headers
        .remove(HeaderName::from_static(FILE_HANDOFF_HEADER));
    // The client's credential for the router, not for what runs inside.
    parts
        .headers
        .remove(HeaderName::from_static(TRAFFIC_TOKEN_HEADER));
    // `maskRequestHost`: what runs inside sees the host it was given, not the router's.
    if let (true, Some(mask)) = (port != AGENT_PORT, &route.mask_request_host) {
        if let Ok(v) = http::HeaderValue::from_str(&crate::sandbox::masked_host(mask, port)) {
            parts.headers.insert(header::HOST, v);
        }
    }
    // A download from the agent: ask for the open file rather than its bytes, and keep what
    // it takes to ask again the usual way should the hand-off fail.
    let handoffs = port == AGENT_PORT && svc.hands_off_files();
    let plain_download = (handoffs
        && parts.method == http::Method::GET
        && parts.uri.path() == "/files")
        .then(|| {
            let mut again = Request::new(Body::empty());
            *again.method_mut() = parts.method.clone();
            *again.uri_mut() = parts.uri.clone();
            *again.headers_mut() = parts.headers.clone();
            parts.headers.insert(
                HeaderName::from_static(FILE_HANDOFF_HEADER),
                http::HeaderValue::from_static("1"),
            );
            again
        });
    // A large upload to the agent: the server reads the body and writes the files.
    let upload_kind =
        (handoffs && parts.method == http::Method::POST && parts.uri.path() == "/files")
            .then(|| upload::eligible(&parts.headers))
            .flatten();
    let (parts, body) = match upload_kind {
        Some(kind) => {
            svc.before_large_write(id).await;
            let run = upload::run(svc.http(), route.init, parts, body, kind);
            let outcome = tokio::select! {
                r = run => r,
                _ = killed(route.killed.clone()) => return not_found(id),
            };
            match outcome {
                Ok(upload::Outcome::Answered(answer)) => return answer,
                Ok(upload::Outcome::Proxied(resp)) => return passed_on(resp, route.killed),
                Err(e) => return unreachable_port(svc, id, port, &e),
            }
        }
        None => (parts, body),
    };
    let out = Request::from_parts(parts, body);
    let send = async {
        if port == AGENT_PORT {
            let resp = svc.http().request(out).await.map_err(|e| e.to_string())?;
            match plain_download {
                Some(again) if resp.headers().contains_key(FILE_HANDOFF_HEADER) => {
                    match handoff::take(resp, route.init).await {
                        Ok((described, file)) => Ok(Sent::HandedOff(described, file)),
                        Err(e) => {
                            tracing::warn!(sandbox = %id, error = %e, "download hand-off failed; asking again");
                            let resp = svc.http().request(again).await;
                            resp.map(Sent::Proxied).map_err(|e| e.to_string())
                        }
                    }
                }
                _ => Ok(Sent::Proxied(resp)),
            }
        } else {
            send_to_user_port(&route, port, out)
                .await
                .map(Sent::Proxied)
        }
    };
    let sent = tokio::select! {
        r = send => r,
        _ = killed(route.killed.clone()) => return not_found(id),
    };
    let sent = match sent {
        Ok(Sent::HandedOff(described, file)) => {
            return match handoff::response(described, file) {
                Ok(resp) => {
                    let (parts, body) = resp.into_parts();
                    Response::from_parts(
                        parts,
                        Body::new(AbortOnKill {
                            inner: body,
                            killed: Box::pin(killed(route.killed)),
                        }),
                    )
                }
                Err(e) => {
                    tracing::warn!(sandbox = %id, error = %e, "the agent described a bad download");
                    json(
                        StatusCode::BAD_GATEWAY,
                        serde_json::json!({"code": 502, "message": "the sandbox's agent answered a download badly", "sandboxId": id}),
                    )
                }
            };
        }
        Ok(Sent::Proxied(resp)) => Ok(resp),
        Err(e) => Err(e),
    };
    match sent {
        Ok(mut resp) => {
            if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                if let Some(client_upgrade) = client_upgrade {
                    let upstream = hyper::upgrade::on(&mut resp);
                    let killed_rx = route.killed.clone();
                    let sid = id.to_string();
                    tokio::spawn(async move {
                        let (Ok(client), Ok(upstream)) = (client_upgrade.await, upstream.await)
                        else {
                            return;
                        };
                        let mut client = TokioIo::new(client);
                        let mut upstream = TokioIo::new(upstream);
                        tokio::select! {
                            r = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                                tracing::debug!(sandbox = %sid, result = ?r, "upgraded connection closed");
                            }
                            _ = killed(killed_rx) => {}
                        }
                    });
                }
                let (parts, _) = resp.into_parts();
                return Response::from_parts(parts, Body::empty());
            }
            passed_on(resp, route.killed)
        }
        Err(e) => unreachable_port(svc, id, port, &e),
    }
}

/// A sandbox's answer as the client gets it: its body cut when the sandbox is killed.
fn passed_on(
    resp: Response<hyper::body::Incoming>,
    killed_rx: tokio::sync::watch::Receiver<bool>,
) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(
        parts,
        Body::new(AbortOnKill {
            inner: body,
            killed: Box::pin(killed(killed_rx)),
        }),
    )
}

/// The answer when `port` of sandbox `id` could not be reached (`e` says why).
fn unreachable_port(svc: &Service, id: &str, port: u16, e: &str) -> Response<Body> {
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

/// Opens a TCP connection to `port` from inside the sandbox's network namespace, trying
/// its loopback first: programs often listen on 127.0.0.1 only (dev servers do), and
/// those are unreachable through the sandbox's `eth0`. The connecting thread enters the
/// namespace and exits afterwards; the socket keeps the namespace it was made in.
fn connect_in_sandbox(
    init: (i32, u64),
    ip: Ipv4Addr,
    port: u16,
) -> std::io::Result<std::net::TcpStream> {
    let handle = std::thread::Builder::new()
        .name("sandbox-connect".into())
        .spawn(move || {
            let ns = std::fs::File::open(format!("/proc/{}/ns/net", init.0))?;
            // The pid could have been reused by an unrelated process after the sandbox died.
            if hutch_runtime::proc::start_time(init.0) != Some(init.1) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the sandbox is gone",
                ));
            }
            // Only this short-lived thread moves.
            hutch_sys::ns::enter_net_namespace(&ns)?;
            let mut last = None;
            for addr in [Ipv4Addr::LOCALHOST, ip] {
                match std::net::TcpStream::connect_timeout(
                    &(addr, port).into(),
                    Duration::from_secs(5),
                ) {
                    Ok(s) => return Ok(s),
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| std::io::Error::other("no address to try")))
        })?;
    handle
        .join()
        .map_err(|_| std::io::Error::other("connect thread panicked"))?
}

/// Sends a request to a user port over a fresh connection made inside the sandbox.
async fn send_to_user_port(
    route: &crate::service::Route,
    port: u16,
    mut req: Request<Body>,
) -> Result<Response<hyper::body::Incoming>, String> {
    // A bare connection sends the URI as given: use origin-form (`/path?query`).
    let origin: Uri = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .parse()
        .map_err(|e: http::uri::InvalidUri| e.to_string())?;
    *req.uri_mut() = origin;
    let (init, ip) = (route.init, route.ip);
    let stream = tokio::task::spawn_blocking(move || connect_in_sandbox(init, ip, port))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    stream.set_nonblocking(true).map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let stream = tokio::net::TcpStream::from_std(stream).map_err(|e| e.to_string())?;
    if route.https_ports.contains(&port) {
        // `network.httpsPorts`: the service serves TLS itself; its certificate is not
        // checked (self-signed ones are the rule inside sandboxes), as E2B does.
        let tls = backend_tls::connect(stream, ip).await?;
        return send_over(tls, req).await;
    }
    send_over(stream, req).await
}

/// Sends `req` over a new HTTP/1.1 connection on `io`.
async fn send_over<T>(io: T, req: Request<Body>) -> Result<Response<hyper::body::Incoming>, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    sender.send_request(req).await.map_err(|e| e.to_string())
}

/// What the agent or a user port answered.
enum Sent {
    /// A response to pass on.
    Proxied(Response<hyper::body::Incoming>),
    /// A download whose file the server now holds.
    HandedOff(hutch_contracts::agent::FileHandoff, std::fs::File),
}

/// A response body that fails (so the client's connection is cut, not cleanly ended)
/// as soon as its sandbox is killed: a killed sandbox's veth vanishes without a TCP
/// reset, and the stream would otherwise hang; a handed-off file would keep the killed
/// sandbox's disk open.
struct AbortOnKill<B> {
    inner: B,
    killed: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
}

impl<B> http_body::Body for AbortOnKill<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        if self.killed.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "the sandbox was killed",
            ))));
        }
        match std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(std::io::Error::other(e)))),
            other => other.map(|o| o.map(|r| r.map_err(std::io::Error::other))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// For a `/files` request signed with a sandbox's token and without routing headers,
/// the sandbox it belongs to.
pub fn signed_files_target(svc: &Service, method: &http::Method, uri: &Uri) -> Option<String> {
    if uri.path() != "/files" {
        return None;
    }
    let mut path = None;
    let mut user = String::new();
    let mut signature = None;
    let mut expiration = None;
    for (k, v) in url::form_urlencoded::parse(uri.query()?.as_bytes()) {
        match k.as_ref() {
            "path" => path = Some(v.into_owned()),
            "username" => user = v.into_owned(),
            "signature" => signature = Some(v.into_owned()),
            "signature_expiration" => expiration = Some(v.into_owned()),
            _ => {}
        }
    }
    let op = if method == http::Method::GET {
        "read"
    } else {
        "write"
    };
    svc.find_by_signature(
        &path.unwrap_or_default(),
        op,
        &user,
        &signature?,
        expiration.as_deref(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_sandbox_refuses_requests_without_its_traffic_token_as_e2b_does() {
        let id = "abcdefghij0123456789";
        assert!(traffic_refusal(id, "tok", &h(&[(TRAFFIC_TOKEN_HEADER, "tok")])).is_none());
        // Missing, wrong, empty: E2B's 403 (its messages are checked end to end).
        for headers in [
            h(&[]),
            h(&[(TRAFFIC_TOKEN_HEADER, "tok2")]),
            h(&[(TRAFFIC_TOKEN_HEADER, "")]),
        ] {
            let r = traffic_refusal(id, "tok", &headers).expect("refused");
            assert_eq!(r.status(), StatusCode::FORBIDDEN);
            assert_eq!(
                r.headers()[header::CONTENT_TYPE],
                "application/json; charset=utf-8"
            );
        }
        let page = traffic_refusal(id, "tok", &h(&[("user-agent", "Mozilla/5.0 (X11)")]))
            .expect("refused");
        assert_eq!(
            page.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
    }

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
