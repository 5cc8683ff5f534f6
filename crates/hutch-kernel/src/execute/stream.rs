//! A running execution: the stream of one request's events, fed by the client's routes.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::mpsc;

use super::{ExecutionEvent, ExecutionState};
use crate::client::{RouteGuard, Routed};
use crate::error::KernelError;

/// How long a barrier that has finished gets for its marker to arrive; it only fails to when
/// the user's code broke printing (say, replaced `console.log`).
const BARRIER_GRACE: Duration = Duration::from_millis(500);

/// A barrier request sent behind an execution (see the [parent module's docs](super)).
#[derive(Debug)]
pub(crate) struct OutputBarrier {
    pub(crate) msg_id: String,
    pub(crate) marker: String,
    pub(crate) route: RouteGuard,
}

/// A running execution: a stream of [`ExecutionEvent`]s ending with [`ExecutionEvent::Done`].
///
/// Dropping it stops routing this request's output (the kernel keeps running the code:
/// interrupt it if the caller has gone away, as E2B does).
#[derive(Debug)]
pub struct Execution {
    msg_id: String,
    rx: mpsc::UnboundedReceiver<Routed>,
    _route: RouteGuard,
    _barrier_route: Option<RouteGuard>,
    /// Runs while a finished barrier's marker is awaited.
    grace: Option<Pin<Box<tokio::time::Sleep>>>,
    state: ExecutionState,
    pending: VecDeque<ExecutionEvent>,
    failed: bool,
}

impl Execution {
    pub(crate) fn new(
        msg_id: String,
        rx: mpsc::UnboundedReceiver<Routed>,
        route: RouteGuard,
        barrier: Option<OutputBarrier>,
    ) -> Self {
        let (state, barrier_route) = match barrier {
            Some(b) => (
                ExecutionState::with_barrier(b.msg_id, b.marker),
                Some(b.route),
            ),
            None => (ExecutionState::default(), None),
        };
        Execution {
            msg_id,
            rx,
            _route: route,
            _barrier_route: barrier_route,
            grace: None,
            state,
            pending: VecDeque::new(),
            failed: false,
        }
    }

    /// The msg_id of the `execute_request`, which every output names as its parent.
    pub fn msg_id(&self) -> &str {
        &self.msg_id
    }

    /// The next event; `Ok(None)` after [`ExecutionEvent::Done`]. An `Err` means the
    /// kernel was lost mid-execution and no more events will come.
    pub async fn next_event(&mut self) -> Result<Option<ExecutionEvent>, KernelError> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    /// Collects every event up to and including `Done`.
    pub async fn collect(mut self) -> Result<Vec<ExecutionEvent>, KernelError> {
        let mut all = Vec::new();
        while let Some(ev) = self.next_event().await? {
            all.push(ev);
        }
        Ok(all)
    }

    fn poll_event(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<ExecutionEvent>, KernelError>> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Poll::Ready(Ok(Some(ev)));
            }
            if self.state.is_done() || self.failed {
                return Poll::Ready(Ok(None));
            }
            match self.rx.poll_recv(cx) {
                Poll::Pending => {
                    if !self.state.barrier_stalled() {
                        return Poll::Pending;
                    }
                    let grace = self
                        .grace
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(BARRIER_GRACE)));
                    match grace.as_mut().poll(cx) {
                        Poll::Ready(()) => self.state.give_up_barrier(&mut self.pending),
                        Poll::Pending => return Poll::Pending,
                    }
                }
                Poll::Ready(Some(Routed::Message(channel, msg))) => {
                    self.state.handle(channel, &msg, &mut self.pending);
                }
                Poll::Ready(Some(Routed::Lost(reason))) => {
                    self.failed = true;
                    return Poll::Ready(Err(KernelError::Disconnected(reason)));
                }
                Poll::Ready(None) => {
                    self.failed = true;
                    return Poll::Ready(Err(KernelError::Disconnected(
                        "the client was closed".into(),
                    )));
                }
            }
        }
    }
}

impl futures_util::Stream for Execution {
    type Item = Result<ExecutionEvent, KernelError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_event(cx).map(Result::transpose)
    }
}
