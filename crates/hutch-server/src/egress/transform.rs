//! Header injection for the egress proxy: an HTTP/1.1 relay between a sandbox's connection
//! and the origin's that sets the transform rule's headers on every request passing through.
//! The proxy plays the server to the sandbox and the client to the origin (one hyper
//! connection each way); bodies stream through untouched and upgraded connections
//! (WebSocket) are spliced once both sides have switched.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http::header::{CONNECTION, HOST, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

/// What the sandbox gets back: the origin's body, or the relay's own short answer.
type RelayBody = Either<Incoming, Full<Bytes>>;

/// Headers that describe one connection rather than the message (besides those a
/// `Connection` header names), dropped on the way through; the relay's own connections
/// say what they need.
const HOP_BY_HOP: &[&str] = &["connection", "keep-alive", "proxy-connection", "upgrade"];

/// Relays HTTP/1.1 between `downstream` (the sandbox's side; the proxy plays the server) and
/// `upstream` (already connected to the origin: plain TCP or a TLS stream; the proxy plays the
/// client), setting each header of `headers` on every request (replacing any the request
/// already had with that name; several values of one name in `headers` are all set).
///
/// Keep-alive carries many requests per connection, bodies stream (chunked or not) both
/// ways, and an `Upgrade` (WebSocket) the origin accepts with a 101 turns the two
/// connections into one byte stream (not one to `h2c`, which would carry later requests
/// past the relay: it is dropped from the request). The request keeps its `Host` as sent.
/// Returns when either side is done (the origin closing ends the sandbox's connection too,
/// once any answer in flight is through); an error string describes a failure.
pub async fn relay_with_headers<D, U>(
    downstream: D,
    upstream: U,
    headers: HeaderMap,
) -> Result<(), String>
where
    D: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    U: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, client_conn) = hyper::client::conn::http1::Builder::new()
        .preserve_header_case(true)
        .handshake(TokioIo::new(upstream))
        .await
        .map_err(|e| format!("upstream handshake: {e}"))?;
    let state = Arc::new(State::default());
    let forwarder = Arc::new(Forwarder {
        sender: tokio::sync::Mutex::new(sender),
        headers,
        state: Arc::clone(&state),
    });
    let service = hyper::service::service_fn(move |req| {
        let forwarder = Arc::clone(&forwarder);
        async move { Ok::<_, Infallible>(forwarder.forward(req).await) }
    });
    let server_conn = hyper::server::conn::http1::Builder::new()
        .preserve_header_case(true)
        // A client may shut its writing side down and still wait for the answer.
        .half_close(true)
        .serve_connection(TokioIo::new(downstream), service)
        .with_upgrades();
    let client_conn = client_conn.with_upgrades();
    tokio::pin!(server_conn, client_conn);

    // Both connections are driven here; the upstream one may end first (the origin
    // closed), which ends the sandbox's too.
    let mut upstream_end = None;
    let served = loop {
        tokio::select! {
            r = server_conn.as_mut() => break r,
            r = client_conn.as_mut(), if upstream_end.is_none() => {
                // An upgrade also ends the client connection: the server side must still
                // send its 101 and hand its stream over.
                if !state.upgrading.load(Ordering::SeqCst) {
                    server_conn.as_mut().graceful_shutdown();
                }
                upstream_end = Some(r);
            }
        }
    };
    served.map_err(|e| format!("downstream: {e}"))?;

    let switched = state
        .switched
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    if let Some((down, up)) = switched {
        if upstream_end.is_none() {
            // The client connection hands its stream to `up` as it finishes.
            client_conn
                .as_mut()
                .await
                .map_err(|e| format!("upstream: {e}"))?;
        }
        let down = down.await.map_err(|e| format!("downstream upgrade: {e}"))?;
        let up = up.await.map_err(|e| format!("upstream upgrade: {e}"))?;
        let copied =
            tokio::io::copy_bidirectional(&mut TokioIo::new(down), &mut TokioIo::new(up)).await;
        tracing::debug!(result = ?copied, "upgraded egress connection closed");
        return copied
            .map(drop)
            .map_err(|e| format!("upgraded connection: {e}"));
    }
    if let Some(e) = state
        .failure
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
    {
        return Err(e);
    }
    match upstream_end {
        Some(Err(e)) => Err(format!("upstream: {e}")),
        _ => Ok(()),
    }
}

/// What the service tells the relay about the connection.
#[derive(Default)]
struct State {
    /// An upgrade was asked for and may be under way: the client connection ending is
    /// then no reason to end the server's.
    upgrading: AtomicBool,
    /// Both sides' upgrades once the origin switched protocols.
    switched: Mutex<Option<(OnUpgrade, OnUpgrade)>>,
    /// Why the origin could not be asked a request, the first time it could not.
    failure: Mutex<Option<String>>,
}

/// Forwards each request of the sandbox's connection on the origin's.
struct Forwarder {
    /// HTTP/1 carries one exchange at a time, and the server connection hands over one
    /// request at a time: the lock is never contended, it only shares the sender.
    sender: tokio::sync::Mutex<hyper::client::conn::http1::SendRequest<Incoming>>,
    headers: HeaderMap,
    state: Arc<State>,
}

impl Forwarder {
    async fn forward(&self, mut req: Request<Incoming>) -> Response<RelayBody> {
        let (tokens, upgrade) = connection_tokens(req.headers());
        // After an upgrade to HTTP/2 (h2c) requests would pass as frames no header could be
        // set on: such a request goes on as a plain one.
        let upgrade = upgrade && !names_h2c(req.headers());
        let down_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        let protocol = parts.headers.get(UPGRADE).cloned();
        strip_hop_by_hop(&mut parts.headers, &tokens);
        if let (true, Some(protocol)) = (upgrade, protocol) {
            parts
                .headers
                .insert(CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(UPGRADE, protocol);
            self.state.upgrading.store(true, Ordering::SeqCst);
        }
        // Every name first, then every value: several values of one name all stay.
        for name in self.headers.keys() {
            parts.headers.remove(name);
        }
        for (name, value) in &self.headers {
            parts.headers.append(name, value.clone());
        }
        // The relay speaks HTTP/1.1 to the origin whatever the sandbox spoke.
        parts.version = http::Version::HTTP_11;
        let req = Request::from_parts(parts, body);

        let sent = {
            let mut sender = self.sender.lock().await;
            match sender.ready().await {
                Ok(()) => sender.send_request(req).await,
                Err(e) => Err(e),
            }
        };
        let mut resp = match sent {
            Ok(resp) => resp,
            Err(e) => {
                self.state.upgrading.store(false, Ordering::SeqCst);
                let message = format!("upstream: {e}");
                tracing::debug!(error = %e, "egress request not forwarded");
                self.state
                    .failure
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get_or_insert(message);
                return bad_gateway();
            }
        };

        let (tokens, switching) = connection_tokens(resp.headers());
        let protocol = resp.headers().get(UPGRADE).cloned();
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let (Some(down), Some(protocol), true) = (down_upgrade, protocol, switching) else {
                // Switching without having been asked (or without saying to what) cannot
                // be relayed.
                tracing::debug!("egress origin switched protocols unasked");
                return bad_gateway();
            };
            let up = hyper::upgrade::on(&mut resp);
            *self
                .state
                .switched
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some((down, up));
            strip_hop_by_hop(resp.headers_mut(), &tokens);
            let headers = resp.headers_mut();
            headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(UPGRADE, protocol);
        } else {
            self.state.upgrading.store(false, Ordering::SeqCst);
            let close = tokens.iter().any(|t| t.eq_ignore_ascii_case("close"));
            strip_hop_by_hop(resp.headers_mut(), &tokens);
            if close {
                // The origin's connection ends after this answer, and with it the
                // sandbox's: say so rather than let the sandbox reuse it.
                resp.headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
        }
        resp.map(Either::Left)
    }
}

/// The tokens of a message's `Connection` headers, and whether it asks for an upgrade
/// (an `upgrade` token and an `Upgrade` header).
fn connection_tokens(headers: &HeaderMap) -> (Vec<String>, bool) {
    let tokens: Vec<String> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect();
    let upgrade =
        headers.contains_key(UPGRADE) && tokens.iter().any(|t| t.eq_ignore_ascii_case("upgrade"));
    (tokens, upgrade)
}

/// Whether an `Upgrade` header offers HTTP/2 over cleartext.
fn names_h2c(headers: &HeaderMap) -> bool {
    headers
        .get_all(UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("h2c"))
}

/// Drops the hop-by-hop headers and those `tokens` (the `Connection` header's) name,
/// except `Host`, which the request keeps as sent.
fn strip_hop_by_hop(headers: &mut HeaderMap, tokens: &[String]) {
    for token in tokens {
        if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
            if name != HOST {
                headers.remove(name);
            }
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

/// The answer when the origin could not be asked; the connection ends after it, since the
/// origin's has.
fn bad_gateway() -> Response<RelayBody> {
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from_static(
        b"the origin's connection failed\n",
    ))));
    *resp.status_mut() = StatusCode::BAD_GATEWAY;
    resp.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;
    use http_body_util::{BodyExt, Empty, StreamBody};
    use hyper::body::Frame;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    type Boxed = http_body_util::combinators::BoxBody<Bytes, Infallible>;

    /// A body streamed in `parts`, of no declared length (so sent chunked).
    fn streamed(parts: Vec<String>) -> Boxed {
        let frames = parts
            .into_iter()
            .map(|p| Ok::<_, Infallible>(Frame::data(Bytes::from(p))));
        BodyExt::boxed(StreamBody::new(stream::iter(frames)))
    }

    /// What the test origin answers: the request's line, headers and body (streamed back in
    /// pieces), with the number of its connection; an upgrade to `websocket` is accepted and
    /// the upgraded stream echoed.
    async fn echo(conn: usize, mut req: Request<Incoming>) -> Result<Response<Boxed>, Infallible> {
        if req.headers().contains_key(UPGRADE) {
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let mut io = TokioIo::new(on.await.unwrap());
                let mut buf = [0u8; 1024];
                loop {
                    match io.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => io.write_all(&buf[..n]).await.unwrap(),
                    }
                }
            });
            let resp = Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header(CONNECTION, "Upgrade")
                .header(UPGRADE, "websocket")
                .body(streamed(Vec::new()))
                .unwrap();
            return Ok(resp);
        }
        let mut parts = vec![format!("conn {conn}: {} {}\n", req.method(), req.uri())];
        for (name, value) in req.headers() {
            parts.push(format!("{name}: {}\n", value.to_str().unwrap()));
        }
        let body = req.into_body().collect().await.unwrap().to_bytes();
        parts.push(format!("body: {}\n", String::from_utf8_lossy(&body)));
        Ok(Response::new(streamed(parts)))
    }

    /// An origin on loopback answering with [`echo`], over TLS with `tls` if given.
    async fn origin(tls: Option<Arc<rustls::ServerConfig>>) -> std::net::SocketAddr {
        async fn serve<I>(io: I, conn: usize)
        where
            I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        {
            let service = hyper::service::service_fn(move |req| echo(conn, req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades()
                .await;
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        tokio::spawn(async move {
            let mut conns = 0;
            while let Ok((tcp, _)) = listener.accept().await {
                conns += 1;
                let (conn, acceptor) = (conns, acceptor.clone());
                tokio::spawn(async move {
                    match acceptor {
                        Some(acceptor) => serve(acceptor.accept(tcp).await.unwrap(), conn).await,
                        None => serve(tcp, conn).await,
                    }
                });
            }
        });
        addr
    }

    /// The relay on loopback in front of `origin`, for one connection; its result comes
    /// through the handle.
    async fn relay(
        origin: std::net::SocketAddr,
        headers: HeaderMap,
    ) -> (
        std::net::SocketAddr,
        tokio::task::JoinHandle<Result<(), String>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (down, _) = listener.accept().await.unwrap();
            let up = TcpStream::connect(origin).await.unwrap();
            relay_with_headers(down, up, headers).await
        });
        (addr, task)
    }

    /// An HTTP/1.1 client connection over `io` (upgrades allowed), driven in the background.
    async fn client<I>(io: I) -> hyper::client::conn::http1::SendRequest<Boxed>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = hyper::client::conn::http1::handshake::<_, Boxed>(TokioIo::new(io))
            .await
            .unwrap();
        tokio::spawn(conn.with_upgrades());
        sender
    }

    async fn text(resp: Response<Incoming>) -> String {
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn injects_headers_over_keep_alive_and_upgrades() {
        let mut inject = HeaderMap::new();
        inject.insert("x-token", HeaderValue::from_static("injected"));
        inject.append("x-multi", HeaderValue::from_static("a"));
        inject.append("x-multi", HeaderValue::from_static("b"));
        let (addr, relayed) = relay(origin(None).await, inject).await;

        let mut sender = client(TcpStream::connect(addr).await.unwrap()).await;

        // A plain request: the header it had is replaced, its Host kept.
        let req = Request::get("/one")
            .header(HOST, "api.test")
            .header("x-token", "sandbox's own")
            .header("x-keep", "yes")
            .body(streamed(Vec::new()))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let seen = text(resp).await;
        assert!(seen.starts_with("conn 1: GET /one\n"), "{seen}");
        assert!(seen.contains("\nhost: api.test\n"), "{seen}");
        assert!(seen.contains("\nx-token: injected\n"), "{seen}");
        assert!(!seen.contains("sandbox's own"), "{seen}");
        assert!(seen.contains("\nx-multi: a\nx-multi: b\n"), "{seen}");
        assert!(seen.contains("\nx-keep: yes\n"), "{seen}");

        // A chunked, streamed body on the same connection (to the origin's too).
        sender.ready().await.unwrap();
        let req = Request::post("/two")
            .header(HOST, "api.test")
            .header("x-token", "again")
            .body(streamed(vec!["abc".into(), "def".into(), "ghi".into()]))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            resp.headers().get(http::header::TRANSFER_ENCODING).unwrap(),
            "chunked"
        );
        let seen = text(resp).await;
        assert!(seen.starts_with("conn 1: POST /two\n"), "{seen}");
        assert!(seen.contains("\ntransfer-encoding: chunked\n"), "{seen}");
        assert!(seen.contains("\nx-token: injected\n"), "{seen}");
        assert!(!seen.contains("again"), "{seen}");
        assert!(seen.ends_with("\nbody: abcdefghi\n"), "{seen}");

        // Then a WebSocket upgrade, still on the same connection: bytes flow both ways.
        sender.ready().await.unwrap();
        let req = Request::get("/ws")
            .header(HOST, "api.test")
            .header(CONNECTION, "Upgrade")
            .header(UPGRADE, "websocket")
            .body(streamed(Vec::new()))
            .unwrap();
        let mut resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(resp.headers().get(UPGRADE).unwrap(), "websocket");
        let mut ws = TokioIo::new(hyper::upgrade::on(&mut resp).await.unwrap());
        for msg in [&b"ping"[..], b"and more"] {
            ws.write_all(msg).await.unwrap();
            let mut back = vec![0u8; msg.len()];
            ws.read_exact(&mut back).await.unwrap();
            assert_eq!(back, msg);
        }
        drop(ws);
        drop(sender);
        let done = tokio::time::timeout(std::time::Duration::from_secs(10), relayed)
            .await
            .expect("the relay ends with its connections");
        done.unwrap().unwrap();
    }

    #[tokio::test]
    async fn an_h2c_upgrade_goes_on_as_a_plain_request() {
        let mut inject = HeaderMap::new();
        inject.insert("x-token", HeaderValue::from_static("injected"));
        let (addr, _relayed) = relay(origin(None).await, inject).await;
        let mut sender = client(TcpStream::connect(addr).await.unwrap()).await;
        let req = Request::get("/h2c")
            .header(HOST, "api.test")
            .header(CONNECTION, "Upgrade, HTTP2-Settings")
            .header(UPGRADE, "h2c")
            .header("http2-settings", "AAMAAABkAAQAAP__")
            .body(streamed(Vec::new()))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let seen = text(resp).await;
        assert!(seen.contains("\nx-token: injected\n"), "{seen}");
        assert!(!seen.contains("upgrade"), "{seen}");
        assert!(!seen.contains("http2-settings"), "{seen}");
    }

    #[tokio::test]
    async fn intercepts_tls_on_both_sides() {
        // The sandbox trusts hutch's CA; the origin has a certificate of its own CA, which
        // the proxy's client config is given as an extra root.
        let (ours, theirs) = (temp_dir("ours"), temp_dir("theirs"));
        let hutch_ca = crate::egress::tls::EgressCa::load_or_create(&ours).unwrap();
        let origin_ca = crate::egress::tls::EgressCa::load_or_create(&theirs).unwrap();
        let origin = origin(Some(origin_ca.server_config("api.test").unwrap())).await;
        let origin_roots = theirs.join("roots.pem");
        std::fs::write(&origin_roots, origin_ca.cert_pem()).unwrap();
        let upstream_tls = crate::egress::tls::client_config(Some(&origin_roots)).unwrap();
        let downstream_tls = hutch_ca.server_config("api.test").unwrap();

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let relayed = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let down = tokio_rustls::TlsAcceptor::from(downstream_tls)
                .accept(tcp)
                .await
                .map_err(|e| e.to_string())?;
            let name = rustls::pki_types::ServerName::try_from("api.test").unwrap();
            let up = tokio_rustls::TlsConnector::from(upstream_tls)
                .connect(name, TcpStream::connect(origin).await.unwrap())
                .await
                .map_err(|e| e.to_string())?;
            let mut inject = HeaderMap::new();
            inject.insert("authorization", HeaderValue::from_static("Bearer secret"));
            relay_with_headers(down, up, inject).await
        });

        // Like a sandbox: the system's roots and hutch's CA.
        let sandbox_roots = ours.join("sandbox.pem");
        std::fs::write(&sandbox_roots, hutch_ca.cert_pem()).unwrap();
        let sandbox_tls = crate::egress::tls::client_config(Some(&sandbox_roots)).unwrap();
        let name = rustls::pki_types::ServerName::try_from("api.test").unwrap();
        let tls = tokio_rustls::TlsConnector::from(sandbox_tls)
            .connect(name, TcpStream::connect(addr).await.unwrap())
            .await
            .unwrap();
        let mut sender = client(tls).await;
        for path in ["/a", "/b"] {
            sender.ready().await.unwrap();
            let req = Request::get(path)
                .header(HOST, "api.test")
                .header("authorization", "Bearer sandbox")
                .body(streamed(Vec::new()))
                .unwrap();
            let seen = text(sender.send_request(req).await.unwrap()).await;
            assert!(seen.starts_with(&format!("conn 1: GET {path}\n")), "{seen}");
            assert!(seen.contains("\nauthorization: Bearer secret\n"), "{seen}");
            assert!(!seen.contains("Bearer sandbox"), "{seen}");
        }
        drop(sender);
        let ended = std::time::Duration::from_secs(10);
        tokio::time::timeout(ended, relayed)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        std::fs::remove_dir_all(&ours).unwrap();
        std::fs::remove_dir_all(&theirs).unwrap();
    }

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let mut r = [0u8; 8];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut r);
        std::env::temp_dir().join(format!("hutch-relay-{tag}-{}", hex::encode(r)))
    }

    #[tokio::test]
    async fn origin_closing_ends_the_relay() {
        // An origin that answers one request, asking to close, and closes.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = tcp.read(&mut buf).await.unwrap();
                assert!(n > 0);
                got.extend_from_slice(&buf[..n]);
            }
            tcp.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                .await
                .unwrap();
        });
        let (addr, relayed) = relay(origin, HeaderMap::new()).await;
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(tcp))
                .await
                .unwrap();
        let conn = tokio::spawn(conn);
        let resp = sender
            .send_request(
                Request::get("/")
                    .header(HOST, "x.test")
                    .body(Empty::new())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.headers().get(CONNECTION).unwrap(), "close");
        assert_eq!(text(resp).await, "ok");
        let ended = std::time::Duration::from_secs(10);
        tokio::time::timeout(ended, relayed)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        tokio::time::timeout(ended, conn)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}
