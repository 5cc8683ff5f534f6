//! Request/reply correlation: which waiter each incoming message goes to, by its parent
//! msg_id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::error::KernelError;
use crate::message::{Channel, Message};

/// A message routed to a waiter, or the news that no more will come.
#[derive(Debug)]
pub(crate) enum Routed {
    Message(Channel, Box<Message>),
    Lost(String),
}

/// msg_id → waiter, shared by the reader tasks and the request senders.
#[derive(Debug, Default)]
pub(super) struct Routes {
    map: Mutex<HashMap<String, mpsc::UnboundedSender<Routed>>>,
    /// Set once the kernel is gone; new requests then fail at once.
    lost: Mutex<Option<String>>,
}

impl Routes {
    pub(super) fn register(
        self: &Arc<Self>,
        msg_id: &str,
    ) -> Result<(mpsc::UnboundedReceiver<Routed>, RouteGuard), KernelError> {
        // Hold `lost` while inserting (fail_all takes the same locks in the same order),
        // so a waiter registered as the kernel dies is either refused or told.
        let lost = self.lost.lock().expect("routes lock");
        if let Some(reason) = lost.as_ref() {
            return Err(KernelError::Disconnected(reason.clone()));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        self.map
            .lock()
            .expect("routes lock")
            .insert(msg_id.to_owned(), tx);
        drop(lost);
        Ok((
            rx,
            RouteGuard {
                routes: Arc::clone(self),
                msg_id: msg_id.to_owned(),
            },
        ))
    }

    /// Routes replies to `alias` to the waiter of `msg_id` too.
    pub(super) fn alias(
        self: &Arc<Self>,
        alias: &str,
        msg_id: &str,
    ) -> Result<RouteGuard, KernelError> {
        let mut map = self.map.lock().expect("routes lock");
        let tx = map
            .get(msg_id)
            .cloned()
            .ok_or_else(|| KernelError::Disconnected("the request's waiter is gone".into()))?;
        map.insert(alias.to_owned(), tx);
        Ok(RouteGuard {
            routes: Arc::clone(self),
            msg_id: alias.to_owned(),
        })
    }

    pub(super) fn route(&self, channel: Channel, msg: Message) {
        let Some(parent) = msg.parent_msg_id() else {
            tracing::trace!(
                channel = channel.name(),
                msg_type = msg.msg_type(),
                "message without parent"
            );
            return;
        };
        let map = self.map.lock().expect("routes lock");
        match map.get(parent) {
            // A send error means the waiter was just dropped; nothing to do.
            Some(tx) => drop(tx.send(Routed::Message(channel, Box::new(msg)))),
            None => tracing::trace!(
                channel = channel.name(),
                msg_type = msg.msg_type(),
                parent,
                "message for no waiter"
            ),
        }
    }

    pub(super) fn fail_all(&self, reason: &str) {
        let mut lost = self.lost.lock().expect("routes lock");
        if lost.is_none() {
            *lost = Some(reason.to_owned());
        }
        for tx in self.map.lock().expect("routes lock").values() {
            let _ = tx.send(Routed::Lost(reason.to_owned()));
        }
    }
}

/// Unregisters a waiter when dropped, so abandoned requests do not leak routes.
#[derive(Debug)]
pub(crate) struct RouteGuard {
    routes: Arc<Routes>,
    msg_id: String,
}

impl Drop for RouteGuard {
    fn drop(&mut self) {
        if let Ok(mut map) = self.routes.map.lock() {
            map.remove(&self.msg_id);
        }
    }
}
