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
//!
//! [`ExecutionState`] applies these rules to one request's messages, with no I/O;
//! [`Execution`] streams the events as the client routes the messages in.

mod state;
mod stream;
#[cfg(test)]
mod tests;

use serde_json::{json, Map, Value};

pub use state::ExecutionState;
pub use stream::Execution;
pub(crate) use stream::OutputBarrier;

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
