//! Sending signals to processes and process groups.

use rustix::io::{Errno, Result};
use rustix::process::Pid;
pub use rustix::process::Signal;

fn pid(raw: i32) -> Result<Pid> {
    if raw <= 0 {
        return Err(Errno::SRCH);
    }
    Pid::from_raw(raw).ok_or(Errno::SRCH)
}

/// Sends `sig` to process `target` (a positive pid; anything else fails with `ESRCH`).
pub fn kill(target: i32, sig: Signal) -> Result<()> {
    rustix::process::kill_process(pid(target)?, sig)
}

/// Sends signal number `sig` to process `target`; 0 only checks that it exists and may be
/// signalled. Numbers without a name (real-time signals) fail with `EINVAL`.
pub fn kill_raw(target: i32, sig: i32) -> Result<()> {
    let target = pid(target)?;
    if sig == 0 {
        return rustix::process::test_kill_process(target);
    }
    let sig = Signal::from_named_raw(sig).ok_or(Errno::INVAL)?;
    rustix::process::kill_process(target, sig)
}

/// Sends `sig` to every process in process group `pgid`.
pub fn kill_group(pgid: i32, sig: Signal) -> Result<()> {
    rustix::process::kill_process_group(pid(pgid)?, sig)
}

/// Whether process `target` exists (including processes we may not signal).
pub fn exists(target: i32) -> bool {
    match pid(target).and_then(rustix::process::test_kill_process) {
        Ok(()) => true,
        Err(e) => e == Errno::PERM,
    }
}

/// The process group of process `target`.
pub fn process_group(target: i32) -> Result<i32> {
    Ok(rustix::process::getpgid(Some(pid(target)?))?
        .as_raw_nonzero()
        .get())
}

/// Gives every signal its default disposition and unblocks all of them: what a program
/// the host starts in a sandbox must begin with, whatever the server inherited (a shell's
/// background job ignores SIGINT and SIGQUIT, for one).
///
/// Async-signal-safe.
pub fn reset_dispositions() {
    // The kernel's `struct sigaction` all zero: SIG_DFL, no flags, empty mask. Through the
    // raw call, since libc refuses the signals it keeps for itself (32 and 33 in glibc),
    // which a parent may still have left ignored.
    let default = [0u64; 4];
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: `default` outlives the call and is at least as large as the kernel's
        // struct sigaction; the old action is not asked for. Unknown numbers fail with
        // EINVAL, which is ignored.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                default.as_ptr(),
                std::ptr::null_mut::<u64>(),
                8usize,
            );
        }
    }
    // SAFETY: an empty set, initialised by sigemptyset before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_exists_and_pid_zero_does_not_count() {
        assert!(exists(std::process::id() as i32));
        assert!(!exists(0));
        assert!(!exists(-1));
    }

    #[test]
    fn signalling_group_zero_or_negative_targets_is_refused() {
        // kill(0) / kill(-1) would hit our own group or every process: never by accident.
        assert_eq!(kill(0, Signal::TERM), Err(Errno::SRCH));
        assert_eq!(kill_group(-5, Signal::TERM), Err(Errno::SRCH));
    }

    #[test]
    fn a_killed_child_dies_of_the_signal() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        kill(child.id() as i32, Signal::KILL).unwrap();
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(Signal::KILL.as_raw()));
    }

    #[test]
    fn raw_signal_numbers_are_sent_or_refused() {
        let me = std::process::id() as i32;
        kill_raw(me, 0).unwrap();
        assert_eq!(kill_raw(me, 1000), Err(Errno::INVAL));
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        kill_raw(child.id() as i32, Signal::TERM.as_raw()).unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(child.wait().unwrap().signal(), Some(Signal::TERM.as_raw()));
    }

    #[test]
    fn our_process_group_is_known() {
        let me = std::process::id() as i32;
        assert!(process_group(me).unwrap() > 0);
    }
}
