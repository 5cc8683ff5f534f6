//! The agent's record of its processes: those running and those that recently ended, and how a
//! `ProcessSelector` picks one of them.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

use super::output::EventHub;
use super::wire::{EndEvent, ProcessConfig, ProcessSelector, Selector};
use crate::connect::ConnectError;

/// How long a finished process's end stays available to `Connect`: long enough for a client
/// that lost its stream (network blip, sandbox paused) to come back and learn how it ended.
pub(super) const FINISHED_RETENTION: Duration = Duration::from_secs(10 * 60);

/// At most this many finished processes are remembered; the oldest go first. Bounds the memory
/// a loop of short commands can make PID 1 hold.
pub(super) const FINISHED_MAX: usize = 1024;

/// Where a process's input goes, as far as the agent still has it.
#[derive(Debug)]
pub(super) enum InputState {
    /// Open: the write end of its stdin pipe, or its PTY master (shared with the output pump).
    Open(Arc<AsyncFd<OwnedFd>>),
    /// Started with `stdin: false`: stdin is /dev/null.
    Disabled,
    /// Closed by `CloseStdin`.
    Closed,
    /// The process has exited.
    Ended,
}

/// A process started through the agent and not yet ended.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) pid: u32,
    pub(super) config: ProcessConfig,
    pub(super) tag: Option<String>,
    pub(super) hub: Arc<EventHub>,
    /// Whether it runs on a PTY (input is `pty`, it can be resized, stdin cannot be closed).
    pub(super) pty: bool,
    pub(super) input: Mutex<InputState>,
    /// Held across each write so concurrent `SendInput` calls do not interleave their bytes.
    pub(super) write_order: tokio::sync::Mutex<()>,
}

impl Entry {
    pub(super) fn input(&self) -> MutexGuard<'_, InputState> {
        // A single assignment is the only thing done under this lock; it cannot be torn.
        self.input.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How a process that is no longer running ended, kept for late `Connect` calls.
#[derive(Debug)]
pub(super) struct Finished {
    pub(super) tag: Option<String>,
    pub(super) end: EndEvent,
    pub(super) at: Instant,
}

/// Every process the agent knows: those running and those that recently ended.
#[derive(Debug, Default)]
pub(super) struct Table {
    pub(super) running: HashMap<u32, Arc<Entry>>,
    pub(super) finished: HashMap<u32, Finished>,
}

impl Table {
    /// Records how `pid` ended, forgetting ends that are too old or too many.
    pub(super) fn remember(&mut self, pid: u32, finished: Finished) {
        self.finished
            .retain(|_, f| f.at.elapsed() < FINISHED_RETENTION);
        while self.finished.len() >= FINISHED_MAX {
            let Some(oldest) = self
                .finished
                .iter()
                .min_by_key(|(_, f)| f.at)
                .map(|(pid, _)| *pid)
            else {
                break;
            };
            self.finished.remove(&oldest);
        }
        self.finished.insert(pid, finished);
    }
}

pub(super) fn not_found(pid: u32) -> ConnectError {
    ConnectError::not_found(format!("process with pid {pid} not found"))
}

/// The process a `ProcessSelector` names; an error when it names none.
pub(super) fn selected(selector: Option<ProcessSelector>) -> Result<Selector, ConnectError> {
    selector.and_then(|s| s.selector).ok_or_else(|| {
        ConnectError::invalid_argument("the process selector names neither a pid nor a tag")
    })
}

/// The error for a selector that matches no process.
pub(super) fn selector_not_found(selector: &Selector) -> ConnectError {
    match selector {
        Selector::Pid(pid) => not_found(*pid),
        Selector::Tag(tag) => ConnectError::not_found(format!("process with tag {tag} not found")),
    }
}

impl Table {
    /// The running process `selector` names.
    pub(super) fn running_selected(&self, selector: &Selector) -> Option<Arc<Entry>> {
        match selector {
            Selector::Pid(pid) => self.running.get(pid).cloned(),
            // Tags are not required to be unique; the oldest process (lowest pid) wins, so the
            // answer is at least stable.
            Selector::Tag(tag) => self
                .running
                .values()
                .filter(|e| e.tag.as_deref() == Some(tag.as_str()))
                .min_by_key(|e| e.pid)
                .cloned(),
        }
    }

    /// The recent end of the process `selector` names, with its pid.
    pub(super) fn finished_selected(&self, selector: &Selector) -> Option<(u32, &Finished)> {
        let fresh = |f: &Finished| f.at.elapsed() < FINISHED_RETENTION;
        match selector {
            Selector::Pid(pid) => self
                .finished
                .get(pid)
                .filter(|f| fresh(f))
                .map(|f| (*pid, f)),
            // The most recent end with that tag.
            Selector::Tag(tag) => self
                .finished
                .iter()
                .filter(|(_, f)| fresh(f) && f.tag.as_deref() == Some(tag.as_str()))
                .max_by_key(|(_, f)| f.at)
                .map(|(pid, f)| (*pid, f)),
        }
    }
}
