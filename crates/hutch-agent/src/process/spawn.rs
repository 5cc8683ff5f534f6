//! Starting one process as a given user: environment, working directory, credentials.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{ChildStdin, Command, Stdio};

use crate::reaper::{ExitWaiter, Reaper};
use crate::users::User;

/// Everything needed to start a process.
#[derive(Debug, Clone)]
pub struct SpawnSpec {
    /// Who runs it.
    pub user: User,
    /// The program.
    pub cmd: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its complete environment.
    pub env: BTreeMap<String, String>,
    /// Its working directory (absolute, already checked to exist).
    pub cwd: PathBuf,
    /// Whether stdin is a pipe (else `/dev/null`).
    pub stdin: bool,
}

/// A started process and its pipes.
#[derive(Debug)]
pub struct Spawned {
    /// Its pid.
    pub pid: u32,
    /// The write end of its stdin, when it has a pipe.
    pub stdin: Option<ChildStdin>,
    /// The read end of its stdout.
    pub stdout: OwnedFd,
    /// The read end of its stderr.
    pub stderr: OwnedFd,
    /// Resolves with its exit status.
    pub exit: ExitWaiter,
}

/// Starts `spec` through `reaper`. Blocks until `exec` succeeded or failed.
pub fn spawn(reaper: &Reaper, spec: SpawnSpec) -> io::Result<Spawned> {
    let mut cmd = Command::new(&spec.cmd);
    cmd.args(&spec.args)
        .env_clear()
        .envs(&spec.env)
        .stdin(if spec.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());

    let cwd = CString::new(spec.cwd.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "cwd contains a NUL byte"))?;
    let uid = spec.user.uid;
    let gid = spec.user.gid;
    let groups: Vec<libc::gid_t> = spec.user.groups.clone();
    // SAFETY: geteuid/getegid only read the caller's credentials.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    // As root, always set the target's credentials, which also replaces root's supplementary
    // groups. Unprivileged (local development), only a no-op switch can work; any other attempt
    // fails in the child and is reported as a start error.
    let switch_credentials = euid == 0 || euid != uid || egid != gid;

    let pre_exec = move || -> io::Result<()> {
        // Own session and process group: the command and its descendants can be signalled as a
        // group, and they share no terminal with the agent.
        // SAFETY: setsid takes no arguments; it fails only if we already lead a group, which a
        // freshly forked child does not.
        unsafe { libc::setsid() };
        // Must precede dropping privileges: after setuid the process is no longer dumpable and
        // its /proc files belong to root.
        reset_oom_score_adj();
        if switch_credentials {
            // Raw syscalls on purpose: the child of a fork has one thread, and glibc's wrappers
            // would try to synchronise credentials across the parent's (absent) threads.
            // SAFETY: `groups` outlives the call and holds `groups.len()` gid_t values.
            if unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) } == -1 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: integer arguments only.
            if unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) } == -1 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: integer arguments only.
            if unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) } == -1 {
                return Err(io::Error::last_os_error());
            }
        }
        // After the switch, so the user can only start in a directory they may enter.
        // SAFETY: `cwd` is a valid NUL-terminated string owned by this closure.
        if unsafe { libc::chdir(cwd.as_ptr()) } == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe system
    // calls (setsid, open, write, close, setgroups, setresgid, setresuid, chdir) on memory
    // allocated before the fork; it allocates nothing and takes no locks.
    unsafe { cmd.pre_exec(pre_exec) };

    let (mut child, exit) = reaper.spawn(&mut cmd)?;
    let pid = child.id();
    let stdin = child.stdin.take();
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        // Cannot happen: both were configured as pipes above.
        return Err(io::Error::other(
            "spawned process is missing its output pipes",
        ));
    };
    // Dropping `child` neither waits nor kills; the reaper owns its exit.
    drop(child);
    Ok(Spawned {
        pid,
        stdin,
        stdout: stdout.into(),
        stderr: stderr.into(),
        exit,
    })
}

/// Undoes the -1000 OOM score the host gives the agent, which every child would inherit: the
/// kernel should kill a runaway command, never the agent. Failure (no /proc) is not fatal.
fn reset_oom_score_adj() {
    const PATH: &[u8] = b"/proc/self/oom_score_adj\0";
    // SAFETY: PATH is NUL-terminated; open/write/close are async-signal-safe and the buffer
    // passed to write is a valid 1-byte static.
    unsafe {
        let fd = libc::open(PATH.as_ptr().cast(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd >= 0 {
            libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
        }
    }
}
