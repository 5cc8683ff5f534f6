//! The one place that calls `waitpid`.
//!
//! As PID 1 the agent inherits every orphan in the sandbox and must reap them all, so it calls
//! `waitpid(-1)`. That makes any other waiter (tokio::process, `Child::wait`) racy: whoever reaps
//! first wins and the other sees `ECHILD`. So the agent spawns its children through [`Reaper`],
//! which registers a waiter for the new pid and hands each exit status to it.
//!
//! A single mutex orders spawning against reaping. A spawn holds it from before `fork` until the
//! waiter is registered, and the reap loop holds it around `waitpid`. Hence an exit can never be
//! reaped before its waiter exists, a status is never kept for later (which would go stale when the
//! kernel reuses the pid), and std's own `waitpid` on a child whose `exec` failed (inside
//! `Command::spawn`) cannot be beaten to the status by the reap loop.

use std::collections::HashMap;
use std::io;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex, MutexGuard};

use hutch_sys::process::WaitStatus;
pub use hutch_sys::signal::Signal as Sig;
use hutch_sys::Errno;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::oneshot;

/// How a child ended, decoded from a raw `waitpid` status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus(WaitStatus);

impl ExitStatus {
    /// Wraps a raw status as `waitpid` returns it.
    pub fn from_raw(raw: i32) -> Self {
        Self(WaitStatus(raw))
    }

    /// Whether the process called `exit` (as opposed to dying from a signal).
    pub fn exited(self) -> bool {
        self.0.exited()
    }

    /// The exit code, or -1 when a signal ended the process (Go's `ProcessState.ExitCode`, which
    /// is what E2B's envd reports).
    pub fn exit_code(self) -> i32 {
        if self.exited() {
            self.0.exit_code()
        } else {
            -1
        }
    }

    /// The signal that ended the process, if one did.
    pub fn signal(self) -> Option<i32> {
        self.0.signal()
    }

    /// Whether the process exited with code 0.
    pub fn success(self) -> bool {
        self.exited() && self.exit_code() == 0
    }

    /// The status in the words E2B's envd uses (Go's `ProcessState.String`): `exit status 3`,
    /// `signal: killed`, `signal: segmentation fault (core dumped)`.
    pub fn describe(self) -> String {
        let mut text = if let Some(sig) = self.signal() {
            format!("signal: {}", signal_name(sig))
        } else if self.exited() {
            format!("exit status {}", self.exit_code())
        } else {
            format!("wait status {:#x}", self.0 .0)
        };
        if self.0.core_dumped() {
            text.push_str(" (core dumped)");
        }
        text
    }
}

/// Go's descriptions of Linux signals, so `status` strings match what E2B clients have seen.
fn signal_name(sig: i32) -> String {
    let name = match sig {
        1 => "hangup",
        2 => "interrupt",
        3 => "quit",
        4 => "illegal instruction",
        5 => "trace/breakpoint trap",
        6 => "aborted",
        7 => "bus error",
        8 => "floating point exception",
        9 => "killed",
        10 => "user defined signal 1",
        11 => "segmentation fault",
        12 => "user defined signal 2",
        13 => "broken pipe",
        14 => "alarm clock",
        15 => "terminated",
        16 => "stack fault",
        17 => "child exited",
        18 => "continued",
        19 => "stopped (signal)",
        20 => "stopped",
        21 => "stopped (tty input)",
        22 => "stopped (tty output)",
        23 => "urgent I/O condition",
        24 => "CPU time limit exceeded",
        25 => "file size limit exceeded",
        26 => "virtual timer expired",
        27 => "profiling timer expired",
        28 => "window changed",
        29 => "I/O possible",
        30 => "power failure",
        31 => "bad system call",
        other => return format!("signal {other}"),
    };
    name.to_owned()
}

/// The receiving end of a registered child's exit status.
pub type ExitWaiter = oneshot::Receiver<ExitStatus>;

/// Spawns children and reaps every process that ends up as the agent's child.
#[derive(Clone, Default)]
pub struct Reaper {
    waiters: Arc<Mutex<HashMap<i32, oneshot::Sender<ExitStatus>>>>,
}

impl Reaper {
    /// A reaper with no children registered yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<i32, oneshot::Sender<ExitStatus>>> {
        // A panic while holding the lock leaves the map consistent (every operation on it is a
        // single insert/remove), so a poisoned lock is safe to keep using.
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Installs the SIGCHLD handler and starts the reap loop on the current tokio runtime.
    ///
    /// Call this before the first spawn: a SIGCHLD that arrives before the handler exists is not
    /// lost (the loop sweeps once at start), but installing first keeps the order obvious.
    pub fn start(&self) -> io::Result<()> {
        let sigchld = signal(SignalKind::child())?;
        let reaper = self.clone();
        tokio::spawn(reaper.run(sigchld));
        Ok(())
    }

    async fn run(self, mut sigchld: Signal) {
        self.reap_all();
        // SIGCHLDs coalesce, so every wakeup drains all exited children, not just one.
        while sigchld.recv().await.is_some() {
            self.reap_all();
        }
    }

    /// Reaps every exited child without blocking and hands each status to its waiter.
    pub fn reap_all(&self) {
        let mut waiters = self.lock();
        loop {
            // Non-blocking: this runs on a runtime thread.
            match hutch_sys::process::reap_any() {
                Ok(None) => break,
                Err(Errno::INTR) => continue,
                Err(err) => {
                    if err != Errno::CHILD {
                        tracing::warn!(error = %io::Error::from(err), "waitpid failed");
                    }
                    break;
                }
                Ok(Some((pid, raw))) => {
                    let status = ExitStatus::from_raw(raw);
                    match waiters.remove(&pid) {
                        // The receiver may be gone if its supervisor was dropped; the status is
                        // then of no use to anyone.
                        Some(tx) => drop(tx.send(status)),
                        None => tracing::debug!(
                            pid,
                            status = %status.describe(),
                            "reaped an orphan"
                        ),
                    }
                }
            }
        }
    }

    /// Spawns `cmd` and registers a waiter for its exit.
    ///
    /// Blocks for the duration of `fork` + `exec` (std waits for `exec` to succeed), so call it
    /// from a blocking context.
    pub fn spawn(&self, cmd: &mut Command) -> io::Result<(Child, ExitWaiter)> {
        let mut waiters = self.lock();
        let child = cmd.spawn()?;
        let pid = i32::try_from(child.id())
            .map_err(|_| io::Error::other("child pid does not fit in pid_t"))?;
        let (tx, rx) = oneshot::channel();
        waiters.insert(pid, tx);
        Ok((child, rx))
    }

    /// Registers a waiter for `pid`, a child the agent did not spawn (a process started
    /// elsewhere and reparented to it).
    ///
    /// Whatever became of the process before this call, the waiter resolves: if it is gone
    /// already (the reap loop may have reaped it as an orphan before it was registered), at
    /// once, with an unknown status (raw -1, as for a waiter that was dropped). Fails when
    /// `pid` has a waiter already: it is a child the agent spawned, not one to adopt.
    pub fn adopt(&self, pid: i32) -> io::Result<ExitWaiter> {
        let mut waiters = self.lock();
        if waiters.contains_key(&pid) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("process {pid} is a child the agent started itself"),
            ));
        }
        let (tx, rx) = oneshot::channel();
        // Under the lock the reap loop cannot run, so the process either is still there to
        // be reaped into this waiter or was reaped before.
        match hutch_sys::signal::kill_raw(pid, 0) {
            Err(Errno::SRCH) => drop(tx.send(ExitStatus::from_raw(-1))),
            _ => {
                waiters.insert(pid, tx);
            }
        }
        Ok(rx)
    }

    /// Sends `sig` to `pid` if it is a registered child that has not been reaped yet.
    ///
    /// Returns `Ok(false)` when the child is already gone. Checking and killing under the reap
    /// lock is what makes this safe: an unreaped pid cannot have been reused by the kernel.
    /// `sig` is a signal number; 0 only checks that the child is still there.
    pub fn signal(&self, pid: i32, sig: i32) -> io::Result<bool> {
        let waiters = self.lock();
        if !waiters.contains_key(&pid) {
            return Ok(false);
        }
        match hutch_sys::signal::kill_raw(pid, sig) {
            Ok(()) => Ok(true),
            Err(Errno::SRCH) => Ok(false),
            Err(err) => Err(err.into()),
        }
    }

    /// Sends `sig` to the process group of every registered child (each child leads its own
    /// session), used on shutdown so nothing the agent started outlives it.
    pub fn signal_all_groups(&self, sig: Sig) {
        let waiters = self.lock();
        for &pid in waiters.keys() {
            // As in `signal`, an unreaped leader keeps its process-group id reserved. Failures
            // mean the group or process is already gone, which is the goal.
            let _ = hutch_sys::signal::kill_group(pid, sig);
            let _ = hutch_sys::signal::kill(pid, sig);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_of(shell: &str) -> ExitStatus {
        let out = Command::new("/bin/sh")
            .args(["-c", shell])
            .status()
            .expect("run sh");
        use std::os::unix::process::ExitStatusExt;
        ExitStatus::from_raw(out.into_raw())
    }

    #[test]
    fn describes_exit_codes_and_signals_like_go() {
        let ok = status_of("exit 0");
        assert!(ok.success());
        assert_eq!(ok.describe(), "exit status 0");
        let three = status_of("exit 3");
        assert_eq!((three.exit_code(), three.exited()), (3, true));
        assert_eq!(three.describe(), "exit status 3");
        let killed = status_of("kill -9 $$");
        assert_eq!((killed.exit_code(), killed.exited()), (-1, false));
        assert_eq!(killed.describe(), "signal: killed");
        assert_eq!(status_of("kill -15 $$").describe(), "signal: terminated");
    }
}
