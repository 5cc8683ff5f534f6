//! Serving HTTP over TCP.

/// `listener` with `TCP_NODELAY` set on every accepted connection: streamed output and
/// interactive input go out in small writes that Nagle's algorithm would hold back.
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
