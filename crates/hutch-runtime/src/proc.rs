//! Facts about host processes: identity (pid + start time survives pid reuse), liveness,
//! reaping.

use std::fs;

pub use hutch_sys::signal::Signal;

/// The start time of `pid` in clock ticks since boot (field 22 of `/proc/<pid>/stat`), or
/// None if there is no such process.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

/// The state letter of `pid` (field 3): 'Z' for a zombie.
pub fn state(pid: i32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].chars().next()
}

/// True when `pid` is the process that started at `start` and has not exited.
pub fn is_alive(pid: i32, start: u64) -> bool {
    start_time(pid) == Some(start) && state(pid) != Some('Z')
}

/// What `waitpid(pid, WNOHANG)` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reap {
    /// It was our child and has now been reaped.
    Reaped,
    /// It is our child and has not finished exiting (a multi-threaded leader stays a
    /// zombie that cannot be reaped until its last thread is gone).
    Running,
    /// It is not our child (adopted after a server restart): its parent reaps it.
    NotOurs,
}

/// Reaps `pid` if it is our exited child.
pub fn try_reap(pid: i32) -> Reap {
    match hutch_sys::process::try_reap(pid) {
        Ok(None) => Reap::Running,
        Ok(Some(_)) => Reap::Reaped,
        Err(_) => Reap::NotOurs,
    }
}

/// Sends `sig` to `pid` if it is still the process that started at `start`.
pub fn signal(pid: i32, start: u64, sig: Signal) -> bool {
    if start_time(pid) != Some(start) {
        return false;
    }
    hutch_sys::signal::kill(pid, sig).is_ok()
}

/// Makes the calling process a child subreaper: sandbox init processes, orphaned when
/// their short-lived spawn helper exits, become our children so we can reap them.
pub fn become_subreaper() {
    if let Err(e) = hutch_sys::process::set_child_subreaper() {
        // Sandboxes still start; their inits are then reaped by the host's init instead.
        tracing::warn!(error = %e, "cannot become a child subreaper");
    }
}
