//! The calling process: reaping children, subreaper status, exec and immediate exit.

use std::ffi::{CStr, CString};

use rustix::io::{Errno, Result};
use rustix::process::{Pid, WaitOptions};

/// Makes the caller a child subreaper: orphaned descendants are reparented to it rather than
/// to init, so it can reap them.
pub fn set_child_subreaper() -> Result<()> {
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
}

/// Reaps any one exited child without blocking: `Some((pid, raw wait status))`, or `None` if
/// children exist but none has exited. Fails with `ECHILD` when there are no children.
pub fn reap_any() -> Result<Option<(i32, i32)>> {
    Ok(rustix::process::wait(WaitOptions::NOHANG)?
        .map(|(pid, status)| (pid.as_raw_nonzero().get(), status.as_raw())))
}

/// Waits for any one child to exit and reaps it: `(pid, raw wait status)`. Fails with
/// `ECHILD` when there are no children.
pub fn wait_any() -> Result<(i32, i32)> {
    loop {
        match rustix::process::wait(WaitOptions::empty()) {
            Ok(Some((pid, status))) => return Ok((pid.as_raw_nonzero().get(), status.as_raw())),
            Ok(None) | Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Has the kernel send the caller `SIGKILL` when its parent (the thread that forked it)
/// exits (`PR_SET_PDEATHSIG`).
pub fn die_with_parent() -> Result<()> {
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
}

/// A positive pid; anything else (a group or "any child") is not one child of ours.
fn child_pid(raw: i32) -> Result<Pid> {
    if raw <= 0 {
        return Err(Errno::CHILD);
    }
    Pid::from_raw(raw).ok_or(Errno::CHILD)
}

/// Reaps child `pid` if it has exited, without blocking: `Some(raw wait status)` once reaped,
/// `None` while it runs; `ECHILD` if it is not our child.
pub fn try_reap(pid: i32) -> Result<Option<i32>> {
    let pid = child_pid(pid)?;
    Ok(rustix::process::waitpid(Some(pid), WaitOptions::NOHANG)?.map(|(_, s)| s.as_raw()))
}

/// Waits for child `pid` to exit and reaps it; returns its raw wait status.
pub fn wait_for(pid: i32) -> Result<i32> {
    let pid = child_pid(pid)?;
    loop {
        match rustix::process::waitpid(Some(pid), WaitOptions::empty()) {
            Ok(Some((_, status))) => return Ok(status.as_raw()),
            Ok(None) | Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// A handle on process `pid` (a pidfd) that says when it has exited.
#[derive(Debug)]
pub struct ExitWatch(std::os::fd::OwnedFd);

impl ExitWatch {
    /// Watches process `pid`. Fails with `ESRCH` when no such process exists (it may have
    /// been reaped already).
    pub fn new(pid: i32) -> Result<Self> {
        let pid = Pid::from_raw(pid).ok_or(Errno::SRCH)?;
        Ok(ExitWatch(rustix::process::pidfd_open(
            pid,
            rustix::process::PidfdFlags::empty(),
        )?))
    }

    /// Waits up to `timeout` for the process to exit (to become a zombie, for a child of
    /// ours); true once it has.
    pub fn wait(&self, timeout: std::time::Duration) -> Result<bool> {
        use rustix::event::{poll, PollFd, PollFlags, Timespec};
        let ts = Timespec {
            tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(timeout.subsec_nanos()),
        };
        let mut fds = [PollFd::new(&self.0, PollFlags::IN)];
        match poll(&mut fds, Some(&ts)) {
            Ok(n) => Ok(n > 0),
            Err(Errno::INTR) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// A raw `waitpid` status, decoded as `<sys/wait.h>`'s macros do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitStatus(pub i32);

impl WaitStatus {
    /// Whether the process called `exit` (`WIFEXITED`).
    pub fn exited(self) -> bool {
        self.0 & 0x7f == 0
    }

    /// The exit code (`WEXITSTATUS`), meaningful when [`WaitStatus::exited`].
    pub fn exit_code(self) -> i32 {
        (self.0 >> 8) & 0xff
    }

    /// The signal that ended the process (`WIFSIGNALED`/`WTERMSIG`), if one did.
    pub fn signal(self) -> Option<i32> {
        let sig = self.0 & 0x7f;
        // 0 is a normal exit, 0x7f a stopped (not ended) process.
        (sig != 0 && sig != 0x7f).then_some(sig)
    }

    /// Whether the signal that ended the process also dumped core (`WCOREDUMP`).
    pub fn core_dumped(self) -> bool {
        self.signal().is_some() && self.0 & 0x80 != 0
    }
}

/// Where `exec` put the process's environment strings: see [`initial_environment_block`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnvironmentBlock {
    start: usize,
    end: usize,
}

/// Finds the memory the kernel placed the environment's strings in at `exec`: the
/// `env_start`..`env_end` of `/proc/self/stat`, or where those read 0 (gVisor's kernel) the
/// block the C library's `environ` entries span, if they lie end to end as `exec` left them
/// (anything else is refused, not guessed at). None for an empty environment.
///
/// Call it first thing in `main`, before anything sets or removes a variable (a removed
/// one leaves a hole the entries no longer span), with no other thread running.
pub fn initial_environment_block() -> std::io::Result<Option<EnvironmentBlock>> {
    let found = match stat_environment_block()? {
        Some(block) => Some(block),
        None => initial_environ_block()?,
    };
    Ok(found.map(|(start, end)| EnvironmentBlock { start, end }))
}

/// Moves the process's environment off `block` (its initial strings, found by
/// [`initial_environment_block`]) and zeroes that memory, so that `/proc/<pid>/environ`
/// (which reads it) shows nothing: every variable still set is set again (the C library
/// then keeps a copy of its own), then the original strings, those of variables removed
/// since included, are overwritten.
///
/// Only while the process has one thread: nothing may read the environment meanwhile.
pub fn scrub_initial_environment(block: EnvironmentBlock) {
    for (key, value) in std::env::vars_os().collect::<Vec<_>>() {
        std::env::set_var(key, value);
    }
    // SAFETY: [start, end) is this process's own initial environment block, on its stack's
    // mapping (writable). The loop above made every `environ` entry point at a fresh copy,
    // so nothing refers to the block any more; the caller has no other thread that could
    // be reading it.
    unsafe { std::ptr::write_bytes(block.start as *mut u8, 0, block.end - block.start) };
}

/// `env_start` and `env_end` of `/proc/self/stat`; None when the kernel shows none.
fn stat_environment_block() -> std::io::Result<Option<(usize, usize)>> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| std::io::Error::other("unreadable /proc/self/stat"))?;
    let field = |n: usize| -> std::io::Result<usize> {
        rest.split_whitespace()
            .nth(n - 3)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("no field {n} in /proc/self/stat")))
    };
    let (start, end) = (field(50)?, field(51)?);
    Ok((start != 0 && end > start).then_some((start, end)))
}

/// The block the strings of the C library's `environ` span, when they lie end to end (as
/// `exec` placed them); None for an empty environment.
fn initial_environ_block() -> std::io::Result<Option<(usize, usize)>> {
    extern "C" {
        static environ: *const *const libc::c_char;
    }
    let mut strings = Vec::new();
    // SAFETY: `environ` is the C library's NULL-terminated array of NUL-terminated strings;
    // the caller is single-threaded, so nothing changes it while it is read.
    unsafe {
        let mut entry = environ;
        if entry.is_null() {
            return Ok(None);
        }
        while !(*entry).is_null() {
            strings.push((*entry as usize, libc::strlen(*entry) + 1));
            entry = entry.add(1);
        }
    }
    contiguous_span(&strings)
}

/// The block that strings at (address, length with the NUL) fill end to end; an error when
/// they leave a gap or overlap; None when there are none.
fn contiguous_span(strings: &[(usize, usize)]) -> std::io::Result<Option<(usize, usize)>> {
    let (mut start, mut end, mut total) = (usize::MAX, 0usize, 0usize);
    for &(at, len) in strings {
        start = start.min(at);
        end = end.max(at.saturating_add(len));
        total = total.saturating_add(len);
    }
    if total == 0 {
        return Ok(None);
    }
    if end - start != total {
        return Err(std::io::Error::other(
            "the environment's strings are not where exec put them; not scrubbed",
        ));
    }
    Ok(Some((start, end)))
}

/// Stops the calling process and everything it starts from ever dumping core: the hard and
/// soft `RLIMIT_CORE` become 1 byte. A file dump needs at least a page, and the kernel skips
/// a `|helper` core pattern for a process whose limit is exactly 1 (its guard against
/// recursive dumps), so neither a core file nor the host's dump helper, which runs as host
/// root outside every namespace, sees a sandbox's memory. Only a process with
/// CAP_SYS_RESOURCE in the initial user namespace can raise it again.
pub fn forbid_core_dumps() -> Result<()> {
    use rustix::process::{setrlimit, Resource, Rlimit};
    setrlimit(
        Resource::Core,
        Rlimit {
            current: Some(1),
            maximum: Some(1),
        },
    )
}

/// Ends the calling process at once with `code`, running no exit handlers and flushing
/// nothing: what a forked child that failed before `exec` must do.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit takes an integer and never returns; it touches no memory of ours.
    unsafe { libc::_exit(code) }
}

/// Replaces the calling process image with `path`, argument vector `argv` and environment
/// `envp`. Only returns on failure, with the reason.
pub fn exec(path: &CStr, argv: &[CString], envp: &[CString]) -> Errno {
    let mut args: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    args.push(std::ptr::null());
    let mut env: Vec<*const libc::c_char> = envp.iter().map(|e| e.as_ptr()).collect();
    env.push(std::ptr::null());
    // SAFETY: `path` is NUL-terminated; `args` and `env` are null-terminated arrays of
    // pointers to NUL-terminated strings borrowed from `argv`/`envp`, all alive for the call.
    unsafe { libc::execve(path.as_ptr(), args.as_ptr(), env.as_ptr()) };
    Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::NOEXEC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_environment_block_is_found_only_where_its_strings_lie_end_to_end() {
        // As exec leaves them (in any order of the entries).
        assert_eq!(
            contiguous_span(&[(110, 5), (100, 10), (115, 3)]).unwrap(),
            Some((100, 118))
        );
        assert_eq!(contiguous_span(&[]).unwrap(), None);
        // A variable removed from the middle leaves a hole; one set again points elsewhere:
        // neither block may be zeroed as a whole.
        assert!(contiguous_span(&[(100, 10), (120, 5)]).is_err());
        assert!(contiguous_span(&[(100, 10), (110, 5), (9_000_000, 7)]).is_err());
        // The same string twice is not a block of twice its size.
        assert!(contiguous_span(&[(100, 10), (100, 10)]).is_err());
    }

    #[test]
    fn an_exit_watch_fires_when_the_child_exits() {
        let mut child = std::process::Command::new("sleep")
            .arg("0.05")
            .spawn()
            .expect("sleep");
        let w = ExitWatch::new(child.id() as i32).expect("pidfd");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !w.wait(std::time::Duration::from_secs(1)).expect("poll") {
            assert!(std::time::Instant::now() < deadline, "never exited");
        }
        // A zombie now: reaping it does not block.
        assert!(child.try_wait().expect("wait").is_some());
    }

    #[test]
    fn a_finished_child_is_reaped_with_its_exit_status() {
        let child = std::process::Command::new("sh")
            .args(["-c", "exit 7"])
            .spawn()
            .unwrap();
        let status = WaitStatus(wait_for(child.id() as i32).unwrap());
        // Reaped here, so std must not wait for it again.
        std::mem::forget(child);
        assert!(status.exited());
        assert_eq!(status.exit_code(), 7);
        assert_eq!(status.signal(), None);
    }

    #[test]
    fn wait_statuses_decode_like_the_libc_macros() {
        for raw in [0, 7 << 8, 255 << 8, 9, 15, 11 | 0x80, 0x137f, 0xffff] {
            let s = WaitStatus(raw);
            assert_eq!(s.exited(), libc::WIFEXITED(raw), "{raw:#x}");
            if s.exited() {
                assert_eq!(s.exit_code(), libc::WEXITSTATUS(raw), "{raw:#x}");
            }
            assert_eq!(s.signal().is_some(), libc::WIFSIGNALED(raw), "{raw:#x}");
            if let Some(sig) = s.signal() {
                assert_eq!(sig, libc::WTERMSIG(raw), "{raw:#x}");
                assert_eq!(s.core_dumped(), libc::WCOREDUMP(raw), "{raw:#x}");
            }
        }
    }

    #[test]
    fn a_running_child_is_not_reaped_and_a_stranger_is_not_ours() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        assert_eq!(try_reap(child.id() as i32), Ok(None));
        child.kill().unwrap();
        child.wait().unwrap();
        // pid 1 is never our child.
        assert_eq!(try_reap(1), Err(Errno::CHILD));
    }
}
