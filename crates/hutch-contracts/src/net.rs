//! Serving HTTP over TCP.

/// `listener` with Nagle's algorithm off on every accepted connection. Streamed answers (process
/// events, `/execute` lines) are many small writes; with Nagle on, each one after the first
/// waits for the peer's delayed ACK, about 40 ms on Linux.
pub fn no_delay(
    listener: tokio::net::TcpListener,
) -> impl axum::serve::Listener<Io = tokio::net::TcpStream, Addr = std::net::SocketAddr> {
    use axum::serve::ListenerExt;
    listener.tap_io(|stream| {
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(error = %err, "could not set TCP_NODELAY");
        }
    })
}
