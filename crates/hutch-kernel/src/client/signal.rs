//! Interrupting a `signal`-mode kernel by SIGINT.

use crate::error::KernelError;

/// Sends SIGINT to `pid`, or to its whole process group when it leads one (as
/// jupyter_client does), so code the kernel started in a subprocess is interrupted too.
pub fn sigint(pid: u32) -> Result<(), KernelError> {
    use hutch_sys::signal::{self, Signal};
    // Pids that do not fit (or 0, which would mean our own group) name no kernel: ESRCH.
    let raw = i32::try_from(pid).unwrap_or(0);
    let sent = if signal::process_group(raw) == Ok(raw) {
        signal::kill_group(raw, Signal::INT)
    } else {
        signal::kill(raw, Signal::INT)
    };
    match sent {
        Ok(()) => Ok(()),
        Err(e) => Err(KernelError::Signal {
            pid,
            source: e.into(),
        }),
    }
}
