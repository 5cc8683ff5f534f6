//! Which events one request's messages make, and when the request is complete, following
//! the rules in the [parent module's docs](super).

use std::collections::VecDeque;

use serde_json::{Map, Value};

use super::{ExecuteReply, ExecutionEvent, ReplyStatus, StreamName};
use crate::message::{Channel, Message};

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
    pub(super) fn barrier_stalled(&self) -> bool {
        !self.done
            && self.idle
            && self.reply.is_some()
            && self.barrier.as_ref().is_some_and(BarrierState::stalled)
    }

    /// Stops waiting for the barrier's marker.
    pub(super) fn give_up_barrier(&mut self, out: &mut VecDeque<ExecutionEvent>) {
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
