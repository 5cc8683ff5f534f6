//! The tasks that read the kernel's sockets: decode each message and route it, watch iopub
//! for the kernel going away, and answer the stdin channel.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use zeromq::{
    DealerRecvHalf, DealerSocket, SocketEvent, SocketRecv, SocketSend, SubSocket, ZmqMessage,
};

use super::Routes;
use crate::message::{self, Channel, Message, Signer};

pub(super) async fn read_dealer(
    channel: Channel,
    mut rx: DealerRecvHalf,
    signer: Signer,
    routes: Arc<Routes>,
) {
    loop {
        match rx.recv().await {
            Ok(m) => deliver(channel, m, &signer, &routes),
            Err(e) => {
                tracing::debug!(channel = channel.name(), error = %e, "recv failed");
                // Errors here mean the peer went away; avoid a hot loop while it is gone.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

pub(super) async fn read_iopub(mut sub: SubSocket, signer: Signer, routes: Arc<Routes>) {
    loop {
        match sub.recv().await {
            Ok(m) => deliver(Channel::IoPub, m, &signer, &routes),
            Err(e) => {
                tracing::debug!(error = %e, "iopub recv failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The kernel closing its iopub socket means it exited (or crashed): fail everything
/// waiting on it rather than let executions hang.
pub(super) async fn watch_iopub(
    mut events: impl futures_util::Stream<Item = SocketEvent> + Unpin,
    routes: Arc<Routes>,
) {
    use futures_util::StreamExt;
    while let Some(ev) = events.next().await {
        if let SocketEvent::Disconnected(_) = ev {
            tracing::debug!("kernel closed its iopub socket");
            routes.fail_all("the kernel closed its sockets (it exited or crashed)");
        }
    }
}

fn deliver(channel: Channel, frames: ZmqMessage, signer: &Signer, routes: &Routes) {
    match message::decode(frames.into_vec(), signer) {
        Ok(msg) => {
            tracing::trace!(
                channel = channel.name(),
                msg_type = msg.msg_type(),
                parent = msg.parent_msg_id().unwrap_or("-"),
                content = %msg.content,
                "received"
            );
            routes.route(channel, msg)
        }
        Err(e) => tracing::warn!(channel = channel.name(), error = %e, "dropping bad message"),
    }
}

/// Answers `input_request`s. We send `allow_stdin: false`, so a well-behaved kernel never
/// asks; one that asks anyway would block forever, so it gets an empty line.
pub(super) async fn serve_stdin(
    mut sock: DealerSocket,
    signer: Signer,
    session: String,
    username: String,
) {
    loop {
        let frames = match sock.recv().await {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "stdin recv failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let req = match message::decode(frames.into_vec(), &signer) {
            Ok(m) if m.msg_type() == "input_request" => m,
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "dropping bad stdin message");
                continue;
            }
        };
        tracing::warn!(prompt = %req.content["prompt"], "kernel asked for input; answering with an empty line");
        let mut reply = Message::new("input_reply", json!({"value": ""}), &session, &username);
        reply.parent_header = Some(req.header.clone());
        let zmsg = ZmqMessage::try_from(message::encode(&reply, &signer)).expect("frames");
        if let Err(e) = sock.send(zmsg).await {
            tracing::debug!(error = %e, "input_reply failed");
        }
    }
}
