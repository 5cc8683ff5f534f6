//! Running code: the `execute_request`, and the typed events its replies turn into.
//!
//! Output for one request arrives on two sockets (iopub broadcasts, the shell reply) with
//! no ordering between them. An execution is complete only when both the `execute_reply`
//! and the iopub `status: idle` for its msg_id have arrived; idle is the last iopub
//! message the kernel sends for a request, so nothing is lost after it.
//!
//! Except in kernels that forward output from a task of their own (Deno): there a cell's
//! stream output can arrive after its idle, parented to the cell or to the next request.
//! For those the client queues a hidden *output barrier* right behind the cell
//! ([`crate::ConnectOptions::output_barrier`]): it prints a marker, and the execution lasts
//! until the marker arrives. Whatever the barrier request carries besides the marker is the
//! cell's late output.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use crate::client::{RouteGuard, Routed};
use crate::error::KernelError;
use crate::message::{Channel, Message};

/// The content of an `execute_request`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecuteRequest {
    /// The code to run.
    pub code: String,
    /// Run without broadcasting output or counting (E2B uses it for its own setup code).
    pub silent: bool,
    /// Add to history and increment the execution count.
    pub store_history: bool,
    /// Expressions to evaluate after the code (rarely used).
    pub user_expressions: Map<String, Value>,
    /// Whether the kernel may ask for input; false makes `input()` raise.
    pub allow_stdin: bool,
    /// Abort queued requests after an error.
    pub stop_on_error: bool,
}

impl ExecuteRequest {
    /// A request with E2B's defaults: not silent, stored in history, no stdin, stop on error.
    pub fn new(code: impl Into<String>) -> Self {
        ExecuteRequest {
            code: code.into(),
            silent: false,
            store_history: true,
            user_expressions: Map::new(),
            allow_stdin: false,
            stop_on_error: true,
        }
    }

    /// The message content.
    pub fn content(&self) -> Value {
        json!({
            "code": self.code,
            "silent": self.silent,
            "store_history": self.store_history,
            "user_expressions": self.user_expressions,
            "allow_stdin": self.allow_stdin,
            "stop_on_error": self.stop_on_error,
        })
    }
}

/// Which output stream a `stream` message belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamName {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// How the kernel finished the request (`execute_reply.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyStatus {
    /// The code ran.
    Ok,
    /// The code raised; the error event carries the details.
    Error,
    /// The request never ran, because an earlier one failed with `stop_on_error`.
    Aborted,
}

/// The summary of a finished execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecuteReply {
    /// ok, error or aborted.
    pub status: ReplyStatus,
    /// The count the kernel gave this request, if it reported one.
    pub execution_count: Option<u64>,
}

/// One thing that happened during an execution, in the order the kernel sent it.
#[derive(Debug, Clone, PartialEq)]
pub enum ExecutionEvent {
    /// The request's execution count, from `execute_input` (or the reply, if the kernel
    /// sends no `execute_input`). Sent at most once.
    ExecutionCount(u64),
    /// Text on stdout or stderr.
    Stream {
        /// stdout or stderr.
        name: StreamName,
        /// The text, as the kernel chunked it.
        text: String,
        /// The message's `header.date`, if it had one.
        timestamp: Option<String>,
    },
    /// A MIME bundle: `execute_result` (the main result) or `display_data`.
    Result {
        /// MIME type → value.
        data: Map<String, Value>,
        /// The bundle's metadata.
        metadata: Map<String, Value>,
        /// True for `execute_result`, false for `display_data`.
        is_main_result: bool,
        /// `transient.display_id`, when the output may be updated later.
        display_id: Option<String>,
    },
    /// `update_display_data`: replace an earlier display with this id.
    UpdateDisplayData {
        /// MIME type → value.
        data: Map<String, Value>,
        /// The bundle's metadata.
        metadata: Map<String, Value>,
        /// The display to update.
        display_id: Option<String>,
    },
    /// `clear_output`: clear what this request displayed so far (after the next output if `wait`).
    ClearOutput {
        /// Clear only when the next output arrives.
        wait: bool,
    },
    /// The code raised. Sent at most once, even when both iopub and the reply carry it.
    Error {
        /// Exception class name.
        ename: String,
        /// Exception message.
        evalue: String,
        /// Traceback lines as the kernel formatted them.
        traceback: Vec<String>,
    },
    /// The last event: the reply and the final idle status have both arrived.
    Done(ExecuteReply),
}

/// Turns the messages of one request into [`ExecutionEvent`]s; no I/O, so it is testable
/// with hand-made messages.
#[derive(Debug, Default)]
pub struct ExecutionState {
    count_sent: bool,
    error_sent: bool,
    idle: bool,
    reply: Option<ReplyContent>,
    done: bool,
    barrier: Option<BarrierState>,
}

/// How long a barrier that has finished gets for its marker to arrive; it only fails to when
/// the user's code broke printing (say, replaced `console.log`).
const BARRIER_GRACE: Duration = Duration::from_millis(500);

/// The hidden request queued behind a cell, and what has come back of it.
#[derive(Debug)]
struct BarrierState {
    msg_id: String,
    marker: String,
    idle: bool,
    replied: bool,
    /// The marker arrived, or will not: all of the cell's output is in.
    passed: bool,
}

impl BarrierState {
    /// Finished without the marker having arrived.
    fn stalled(&self) -> bool {
        self.idle && self.replied && !self.passed
    }
}

/// A barrier request sent behind an execution (see the module docs).
#[derive(Debug)]
pub(crate) struct OutputBarrier {
    pub(crate) msg_id: String,
    pub(crate) marker: String,
    pub(crate) route: RouteGuard,
}

#[derive(Debug)]
struct ReplyContent {
    status: ReplyStatus,
    execution_count: Option<u64>,
    error: Option<(String, String, Vec<String>)>,
}

impl ExecutionState {
    /// True once [`ExecutionEvent::Done`] has been produced.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// A state that also follows the output barrier `msg_id`, which prints `marker`.
    pub fn with_barrier(msg_id: impl Into<String>, marker: impl Into<String>) -> Self {
        ExecutionState {
            barrier: Some(BarrierState {
                msg_id: msg_id.into(),
                marker: marker.into(),
                idle: false,
                replied: false,
                passed: false,
            }),
            ..ExecutionState::default()
        }
    }

    /// True when only a finished barrier's marker is still awaited.
    fn barrier_stalled(&self) -> bool {
        !self.done
            && self.idle
            && self.reply.is_some()
            && self.barrier.as_ref().is_some_and(BarrierState::stalled)
    }

    /// Stops waiting for the barrier's marker.
    fn give_up_barrier(&mut self, out: &mut VecDeque<ExecutionEvent>) {
        if let Some(b) = self.barrier.as_mut() {
            tracing::debug!(barrier = %b.msg_id, "output barrier finished without its marker");
            b.passed = true;
        }
        self.maybe_finish(out);
    }

    /// Handles a message of the barrier request; returns the message if it is the cell's
    /// late output, to be handled as the cell's own.
    fn barrier_message<'m>(
        &mut self,
        channel: Channel,
        msg: &'m Message,
    ) -> Option<std::borrow::Cow<'m, Message>> {
        let b = self.barrier.as_mut()?;
        if msg.parent_msg_id() != Some(b.msg_id.as_str()) {
            return Some(std::borrow::Cow::Borrowed(msg));
        }
        let c = &msg.content;
        match (channel, msg.msg_type()) {
            (Channel::IoPub, "status") => {
                if c["execution_state"] == "idle" {
                    b.idle = true;
                }
                None
            }
            (Channel::Shell, "execute_reply") => {
                b.replied = true;
                if c["status"] != "ok" {
                    // An aborted or failed barrier prints nothing.
                    b.passed = true;
                }
                None
            }
            (Channel::IoPub, "stream") => {
                let text = c["text"].as_str().unwrap_or_default();
                let Some(at) = text.find(&b.marker) else {
                    return Some(std::borrow::Cow::Borrowed(msg));
                };
                b.passed = true;
                let after = &text[at + b.marker.len()..];
                let rest = format!(
                    "{}{}",
                    &text[..at],
                    after.strip_prefix('\n').unwrap_or(after)
                );
                if rest.is_empty() {
                    return None;
                }
                let mut m = msg.clone();
                m.content["text"] = Value::String(rest);
                Some(std::borrow::Cow::Owned(m))
            }
            (
                Channel::IoPub,
                "execute_result" | "display_data" | "update_display_data" | "clear_output",
            ) => Some(std::borrow::Cow::Borrowed(msg)),
            (Channel::IoPub, "error") => {
                tracing::warn!(content = %c, "output barrier raised");
                None
            }
            _ => None,
        }
    }

    /// Feeds one message for this request, pushing any resulting events onto `out`.
    pub fn handle(&mut self, channel: Channel, msg: &Message, out: &mut VecDeque<ExecutionEvent>) {
        if self.done {
            return;
        }
        let msg = if self.barrier.is_some() {
            match self.barrier_message(channel, msg) {
                Some(m) => m,
                None => {
                    self.maybe_finish(out);
                    return;
                }
            }
        } else {
            std::borrow::Cow::Borrowed(msg)
        };
        let msg = msg.as_ref();
        let c = &msg.content;
        match (channel, msg.msg_type()) {
            (Channel::IoPub, "status") => {
                if c["execution_state"] == "idle" {
                    self.idle = true;
                }
            }
            (Channel::IoPub, "execute_input") => {
                if let Some(n) = c["execution_count"].as_u64() {
                    if !self.count_sent {
                        self.count_sent = true;
                        out.push_back(ExecutionEvent::ExecutionCount(n));
                    }
                }
            }
            (Channel::IoPub, "stream") => {
                let name = match c["name"].as_str() {
                    Some("stderr") => StreamName::Stderr,
                    _ => StreamName::Stdout,
                };
                out.push_back(ExecutionEvent::Stream {
                    name,
                    text: c["text"].as_str().unwrap_or_default().to_owned(),
                    timestamp: (!msg.header.date.is_empty()).then(|| msg.header.date.clone()),
                });
            }
            (Channel::IoPub, kind @ ("execute_result" | "display_data")) => {
                out.push_back(ExecutionEvent::Result {
                    data: object(&c["data"]),
                    metadata: object(&c["metadata"]),
                    is_main_result: kind == "execute_result",
                    display_id: display_id(c),
                });
            }
            (Channel::IoPub, "update_display_data") => {
                out.push_back(ExecutionEvent::UpdateDisplayData {
                    data: object(&c["data"]),
                    metadata: object(&c["metadata"]),
                    display_id: display_id(c),
                });
            }
            (Channel::IoPub, "clear_output") => {
                out.push_back(ExecutionEvent::ClearOutput {
                    wait: c["wait"].as_bool().unwrap_or(false),
                });
            }
            (Channel::IoPub, "error") => {
                if !self.error_sent {
                    self.error_sent = true;
                    let (ename, evalue, traceback) = error_parts(c);
                    out.push_back(ExecutionEvent::Error {
                        ename,
                        evalue,
                        traceback,
                    });
                }
            }
            (Channel::Shell, "execute_reply") => {
                let status = match c["status"].as_str() {
                    Some("ok") => ReplyStatus::Ok,
                    // Protocol 5.1 renamed "abort" to "aborted"; kernels send either.
                    Some("abort" | "aborted") => ReplyStatus::Aborted,
                    _ => ReplyStatus::Error,
                };
                let error = (status == ReplyStatus::Error).then(|| error_parts(c));
                self.reply = Some(ReplyContent {
                    status,
                    execution_count: c["execution_count"].as_u64(),
                    error,
                });
                // An aborted request may get no idle of its own (E2B ends it here too).
                if status == ReplyStatus::Aborted {
                    self.idle = true;
                }
            }
            (ch, other) => {
                tracing::trace!(channel = ch.name(), msg_type = other, "ignored message");
            }
        }
        self.maybe_finish(out);
    }

    fn maybe_finish(&mut self, out: &mut VecDeque<ExecutionEvent>) {
        if self.barrier.as_ref().is_some_and(|b| !b.passed) {
            return;
        }
        let Some(reply) = self.reply.as_mut().filter(|_| self.idle) else {
            return;
        };
        if !self.count_sent {
            if let Some(n) = reply
                .execution_count
                .filter(|_| reply.status != ReplyStatus::Aborted)
            {
                self.count_sent = true;
                out.push_back(ExecutionEvent::ExecutionCount(n));
            }
        }
        // The reply's error goes out only now, after idle, so it cannot overtake
        // output that iopub delivered later than the shell reply.
        if let Some((ename, evalue, traceback)) = reply.error.take() {
            if !self.error_sent {
                self.error_sent = true;
                out.push_back(ExecutionEvent::Error {
                    ename,
                    evalue,
                    traceback,
                });
            }
        }
        out.push_back(ExecutionEvent::Done(ExecuteReply {
            status: reply.status,
            execution_count: reply.execution_count,
        }));
        self.done = true;
    }
}

fn object(v: &Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

fn display_id(content: &Value) -> Option<String> {
    content["transient"]["display_id"]
        .as_str()
        .map(str::to_owned)
}

fn error_parts(c: &Value) -> (String, String, Vec<String>) {
    let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
    let traceback = c["traceback"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|l| l.as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default();
    (s("ename"), s("evalue"), traceback)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Header;

    fn msg(msg_type: &str, content: Value) -> Message {
        let mut m = Message::new(msg_type, content, "kernel", "k");
        m.parent_header = Some(Header {
            msg_id: "req".into(),
            ..Header::default()
        });
        m
    }

    fn run(script: &[(Channel, Message)]) -> Vec<ExecutionEvent> {
        let mut st = ExecutionState::default();
        let mut out = VecDeque::new();
        for (ch, m) in script {
            st.handle(*ch, m, &mut out);
        }
        out.into_iter().collect()
    }

    use Channel::{IoPub, Shell};

    fn busy() -> (Channel, Message) {
        (IoPub, msg("status", json!({"execution_state": "busy"})))
    }
    fn idle() -> (Channel, Message) {
        (IoPub, msg("status", json!({"execution_state": "idle"})))
    }
    fn input(n: u64) -> (Channel, Message) {
        (
            IoPub,
            msg("execute_input", json!({"code": "", "execution_count": n})),
        )
    }
    fn reply(status: &str, n: u64) -> (Channel, Message) {
        (
            Shell,
            msg(
                "execute_reply",
                json!({"status": status, "execution_count": n,
                       "ename": "E", "evalue": "v", "traceback": ["t1", "t2"]}),
            ),
        )
    }

    #[test]
    fn completes_only_after_reply_and_idle_in_either_order() {
        let out = vec![
            busy(),
            input(4),
            (
                IoPub,
                msg("stream", json!({"name": "stdout", "text": "a\n"})),
            ),
            (
                IoPub,
                msg(
                    "execute_result",
                    json!({"data": {"text/plain": "2"}, "metadata": {}, "execution_count": 4}),
                ),
            ),
        ];
        let mut reply_first = out.clone();
        reply_first.push(reply("ok", 4));
        let partial = run(&reply_first);
        assert!(!partial.iter().any(|e| matches!(e, ExecutionEvent::Done(_))));
        reply_first.push(idle());
        let mut idle_first = out;
        idle_first.push(idle());
        idle_first.push(reply("ok", 4));
        for events in [run(&reply_first), run(&idle_first)] {
            assert_eq!(events[0], ExecutionEvent::ExecutionCount(4));
            assert!(
                matches!(&events[1], ExecutionEvent::Stream { name: StreamName::Stdout, text, .. } if text == "a\n")
            );
            assert!(
                matches!(&events[2], ExecutionEvent::Result { is_main_result: true, data, .. } if data["text/plain"] == "2")
            );
            assert_eq!(
                events[3],
                ExecutionEvent::Done(ExecuteReply {
                    status: ReplyStatus::Ok,
                    execution_count: Some(4)
                })
            );
            assert_eq!(events.len(), 4);
        }
    }

    #[test]
    fn error_is_reported_once_and_a_reply_error_waits_for_iopub() {
        let iopub_err = (
            IoPub,
            msg(
                "error",
                json!({"ename": "NameError", "evalue": "x", "traceback": ["a", "b"]}),
            ),
        );
        let events = run(&[busy(), input(1), reply("error", 1), iopub_err, idle()]);
        let errors: Vec<_> = events
            .iter()
            .filter(|e| matches!(e, ExecutionEvent::Error { .. }))
            .collect();
        assert_eq!(errors.len(), 1);
        assert!(
            matches!(errors[0], ExecutionEvent::Error { ename, traceback, .. } if ename == "NameError" && traceback.len() == 2)
        );

        // A kernel that reports the error only in the reply still yields it, before Done.
        let events = run(&[busy(), reply("error", 2), idle()]);
        assert_eq!(events[0], ExecutionEvent::ExecutionCount(2));
        assert!(matches!(&events[1], ExecutionEvent::Error { ename, .. } if ename == "E"));
        assert!(matches!(
            &events[2],
            ExecutionEvent::Done(ExecuteReply {
                status: ReplyStatus::Error,
                ..
            })
        ));
    }

    #[test]
    fn aborted_reply_ends_without_idle() {
        let events = run(&[reply("aborted", 0)]);
        assert_eq!(
            events,
            vec![ExecutionEvent::Done(ExecuteReply {
                status: ReplyStatus::Aborted,
                execution_count: Some(0)
            })]
        );
    }

    #[test]
    fn display_updates_and_clear_output_are_typed() {
        let events = run(&[
            (
                IoPub,
                msg(
                    "display_data",
                    json!({"data": {"text/html": "<b>"}, "metadata": {}, "transient": {"display_id": "d1"}}),
                ),
            ),
            (
                IoPub,
                msg(
                    "update_display_data",
                    json!({"data": {"text/html": "<i>"}, "metadata": {}, "transient": {"display_id": "d1"}}),
                ),
            ),
            (IoPub, msg("clear_output", json!({"wait": true}))),
            (IoPub, msg("comm_open", json!({}))),
        ]);
        assert!(
            matches!(&events[0], ExecutionEvent::Result { is_main_result: false, display_id: Some(d), .. } if d == "d1")
        );
        assert!(
            matches!(&events[1], ExecutionEvent::UpdateDisplayData { display_id: Some(d), .. } if d == "d1")
        );
        assert_eq!(events[2], ExecutionEvent::ClearOutput { wait: true });
        assert_eq!(events.len(), 3);
    }

    #[test]
    fn request_content_has_e2b_defaults() {
        let c = ExecuteRequest::new("1+1").content();
        assert_eq!(
            c,
            json!({"code": "1+1", "silent": false, "store_history": true,
                   "user_expressions": {}, "allow_stdin": false, "stop_on_error": true})
        );
    }

    /// `m` as if sent for the barrier request "bar".
    fn of_barrier((ch, mut m): (Channel, Message)) -> (Channel, Message) {
        m.parent_header = Some(Header {
            msg_id: "bar".into(),
            ..Header::default()
        });
        (ch, m)
    }

    fn stream(text: &str) -> (Channel, Message) {
        (
            IoPub,
            msg("stream", json!({"name": "stdout", "text": text})),
        )
    }

    fn run_with_barrier(script: &[(Channel, Message)]) -> (Vec<ExecutionEvent>, ExecutionState) {
        let mut st = ExecutionState::with_barrier("bar", "MARK");
        let mut out = VecDeque::new();
        for (ch, m) in script {
            st.handle(*ch, m, &mut out);
        }
        (out.into_iter().collect(), st)
    }

    fn texts(events: &[ExecutionEvent]) -> Vec<&str> {
        events
            .iter()
            .filter_map(|e| match e {
                ExecutionEvent::Stream { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn barrier_keeps_the_execution_open_for_late_output() {
        let (events, st) = run_with_barrier(&[
            busy(),
            input(1),
            idle(),
            reply("ok", 1),
            // The cell's own output, after its idle and reply.
            stream("late\n"),
            of_barrier(busy()),
            // The cell's output, forwarded once the barrier was the current request.
            of_barrier(stream("later\n")),
            of_barrier(idle()),
            of_barrier(reply("ok", 1)),
        ]);
        assert!(!st.is_done(), "the marker has not arrived yet");
        assert!(!events.iter().any(|e| matches!(e, ExecutionEvent::Done(_))));
        assert_eq!(texts(&events), ["late\n", "later\n"]);

        let (events, st) = run_with_barrier(&[
            busy(),
            input(1),
            stream("a\n"),
            idle(),
            reply("ok", 1),
            of_barrier(busy()),
            of_barrier(stream("bMARK\n")),
            of_barrier(idle()),
            of_barrier(reply("ok", 1)),
        ]);
        assert!(st.is_done());
        assert_eq!(texts(&events), ["a\n", "b"]);
        assert!(matches!(events.last(), Some(ExecutionEvent::Done(_))));
        assert_eq!(
            events
                .iter()
                .filter(|e| matches!(e, ExecutionEvent::ExecutionCount(1)))
                .count(),
            1
        );
    }

    #[test]
    fn marker_before_the_cells_end_waits_for_idle_and_reply() {
        let (events, st) = run_with_barrier(&[busy(), of_barrier(stream("MARK\n")), idle()]);
        assert!(!st.is_done());
        assert!(texts(&events).is_empty());
        let mut st = st;
        let mut out = VecDeque::new();
        let (ch, m) = reply("ok", 1);
        st.handle(ch, &m, &mut out);
        assert!(st.is_done());
    }

    #[test]
    fn a_failed_barrier_or_a_given_up_one_ends_the_execution() {
        let (_, st) = run_with_barrier(&[idle(), reply("ok", 1), of_barrier(reply("aborted", 1))]);
        assert!(st.is_done());

        let (_, mut st) = run_with_barrier(&[
            idle(),
            reply("ok", 1),
            of_barrier(idle()),
            of_barrier(reply("ok", 1)),
        ]);
        assert!(st.barrier_stalled());
        let mut out = VecDeque::new();
        st.give_up_barrier(&mut out);
        assert!(st.is_done());
        assert!(matches!(out.back(), Some(ExecutionEvent::Done(_))));
    }

    #[test]
    fn late_results_parented_to_the_barrier_are_the_cells() {
        let (events, _) = run_with_barrier(&[
            idle(),
            reply("ok", 1),
            of_barrier((
                IoPub,
                msg(
                    "execute_result",
                    json!({"data": {"text/plain": "42"}, "metadata": {}}),
                ),
            )),
        ]);
        assert!(matches!(
            &events[..],
            [ExecutionEvent::Result {
                is_main_result: true,
                ..
            }]
        ));
    }
}
