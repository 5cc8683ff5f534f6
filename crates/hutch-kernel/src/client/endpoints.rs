//! Waiting for a starting kernel to listen on every endpoint of its connection file.

use std::time::{Duration, Instant};

use crate::connection::{ConnectionInfo, Transport};
use crate::error::KernelError;
use crate::message::Channel;

/// How long to wait between polls of a starting kernel's endpoints.
///
/// Short, because every poll is a cheap failed `connect` and each millisecond here is a
/// millisecond of sandbox start-up.
const POLL_INTERVAL: Duration = Duration::from_millis(2);

/// Polls until every endpoint of `info` accepts a connection.
///
/// zeromq's own connect retries with a back-off that starts at 50–100 ms, so connecting to a
/// kernel that has not bound yet would add that much to start-up; a cheap probe every few
/// milliseconds finds the sockets as soon as they listen.
pub async fn wait_for_endpoints(
    info: &ConnectionInfo,
    deadline: Instant,
) -> Result<(), KernelError> {
    let started = Instant::now();
    let mut pending: Vec<Channel> = Channel::ALL.to_vec();
    loop {
        let mut still = Vec::new();
        for ch in pending {
            if !accepts(info, ch).await {
                still.push(ch);
            }
        }
        pending = still;
        if pending.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(KernelError::EndpointsTimeout {
                endpoints: pending.iter().map(|c| info.endpoint(*c)).collect(),
                waited: started.elapsed(),
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

async fn accepts(info: &ConnectionInfo, ch: Channel) -> bool {
    match info.transport {
        Transport::Ipc => match info.ipc_path(ch) {
            // Existence alone is not enough: a dead kernel's socket file can linger.
            Some(p) => tokio::net::UnixStream::connect(p).await.is_ok(),
            None => false,
        },
        Transport::Tcp => tokio::net::TcpStream::connect((info.ip.as_str(), info.port(ch)))
            .await
            .is_ok(),
    }
}
