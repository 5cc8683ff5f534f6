//! Writing input to a running process: its stdin pipe or its terminal.

use std::sync::Arc;

use super::output;
use super::table::{not_found, Entry, InputState};
use super::wire::ProcessInput;
use crate::connect::{Code, ConnectError};

/// A running process that input can be written to (the target of a `StreamInput` call).
#[derive(Debug, Clone)]
pub struct InputTarget {
    pub(super) entry: Arc<Entry>,
}

impl InputTarget {
    /// The process's pid.
    pub fn pid(&self) -> u32 {
        self.entry.pid
    }

    /// Writes `input` to the process: its stdin pipe or its terminal, whichever `input` names
    /// and the process has. Waits while the process is not reading.
    pub async fn write(&self, input: ProcessInput) -> Result<(), ConnectError> {
        let entry = &self.entry;
        let pid = entry.pid;
        let (bytes, what) = match (input, entry.pty) {
            (ProcessInput::Stdin(bytes), false) => (bytes, "stdin"),
            (ProcessInput::Pty(bytes), true) => (bytes, "tty"),
            (ProcessInput::Stdin(_), true) => {
                return Err(ConnectError::invalid_argument(format!(
                    "process {pid} runs on a PTY: send its input as 'pty', not 'stdin'"
                )))
            }
            (ProcessInput::Pty(_), false) => {
                return Err(ConnectError::invalid_argument(format!(
                    "process {pid} has no PTY: send its input as 'stdin', not 'pty'"
                )))
            }
        };
        let _order = entry.write_order.lock().await;
        // A clone, so `CloseStdin` or the exit can drop the agent's copy while this write is
        // still waiting; the descriptor closes when the last write finishes.
        let fd = match &*entry.input() {
            InputState::Open(fd) => fd.clone(),
            InputState::Ended => return Err(not_found(pid)),
            InputState::Disabled => {
                return Err(ConnectError::new(
                    Code::FailedPrecondition,
                    format!("process {pid} was started without stdin (stdin: false)"),
                ))
            }
            InputState::Closed => {
                return Err(ConnectError::new(
                    Code::FailedPrecondition,
                    format!("the stdin of process {pid} was already closed"),
                ))
            }
        };
        output::write_all(&fd, &bytes).await.map_err(|err| {
            ConnectError::internal(format!("error writing to {what} of process {pid}: {err}"))
        })
    }
}
