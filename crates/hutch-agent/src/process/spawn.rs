//! Starting one process as a given user: environment, working directory, credentials, and
//! either pipes or a pseudo-terminal for its standard streams.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

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
    /// Whether stdin is a pipe (else `/dev/null`); ignored with a terminal.
    pub stdin: bool,
    /// Run on a new pseudo-terminal of this size instead of pipes.
    pub pty: Option<WinSize>,
}

/// A terminal size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WinSize {
    /// Columns.
    pub cols: u16,
    /// Rows.
    pub rows: u16,
}

/// How the agent talks to a started process.
#[derive(Debug)]
pub enum Io {
    /// Separate pipes.
    Pipes {
        /// The write end of its stdin, when it has a pipe.
        stdin: Option<OwnedFd>,
        /// The read end of its stdout.
        stdout: OwnedFd,
        /// The read end of its stderr.
        stderr: OwnedFd,
    },
    /// The master side of the terminal its stdin, stdout and stderr are on.
    Pty {
        /// The master; reading gives the terminal's output, writing types into it.
        master: OwnedFd,
    },
}

/// A started process.
#[derive(Debug)]
pub struct Spawned {
    /// Its pid.
    pub pid: u32,
    /// Its standard streams, from the agent's side.
    pub io: Io,
    /// Resolves with its exit status.
    pub exit: ExitWaiter,
}

/// Starts `spec` through `reaper`. Blocks until `exec` succeeded or failed.
pub fn spawn(reaper: &Reaper, spec: SpawnSpec) -> io::Result<Spawned> {
    let mut cmd = Command::new(&spec.cmd);
    cmd.args(&spec.args).env_clear().envs(&spec.env);
    let pty = match spec.pty {
        Some(size) => {
            let (master, slave) = open_pty(size, spec.user.uid)?;
            // std dup2s these onto 0, 1 and 2 in the child (which clears close-on-exec there) and
            // closes the parent's copies when `cmd` is dropped below.
            cmd.stdin(Stdio::from(slave.try_clone()?))
                .stdout(Stdio::from(slave.try_clone()?))
                .stderr(Stdio::from(slave));
            Some(master)
        }
        None => {
            cmd.stdin(if spec.stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
            None
        }
    };
    let controlling_tty = pty.is_some();

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
        if controlling_tty {
            // The new session has no terminal yet; make the PTY slave (already on fd 0) its
            // controlling terminal, so job control, `/dev/tty` and hangup on exit work.
            // SAFETY: ioctl on fd 0 with an integer argument.
            if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } == -1 {
                return Err(io::Error::last_os_error());
            }
        }
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
    // calls (setsid, ioctl, open, write, close, setgroups, setresgid, setresuid, chdir) on memory
    // allocated before the fork; it allocates nothing and takes no locks.
    unsafe { cmd.pre_exec(pre_exec) };

    let (mut child, exit) = reaper.spawn(&mut cmd)?;
    // The parent's copies of the slave live in `cmd`; closing them leaves the child as the only
    // holder, so the terminal hangs up once the child's session is gone.
    drop(cmd);
    let pid = child.id();
    let io = match pty {
        Some(master) => Io::Pty { master },
        None => {
            let stdin = child.stdin.take().map(OwnedFd::from);
            let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
                // Cannot happen: both were configured as pipes above.
                return Err(io::Error::other(
                    "spawned process is missing its output pipes",
                ));
            };
            Io::Pipes {
                stdin,
                stdout: stdout.into(),
                stderr: stderr.into(),
            }
        }
    };
    // Dropping `child` neither waits nor kills; the reaper owns its exit.
    drop(child);
    Ok(Spawned { pid, io, exit })
}

/// Opens a new pseudo-terminal of `size` whose slave belongs to `uid`; returns (master, slave).
///
/// Both ends are close-on-exec from the start: other commands are forked concurrently, and must
/// not inherit (and so hold open) a terminal that is not theirs.
fn open_pty(size: WinSize, uid: libc::uid_t) -> io::Result<(OwnedFd, OwnedFd)> {
    // SAFETY: posix_openpt takes flags only and returns a new descriptor or -1.
    let raw = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if raw == -1 {
        return Err(pty_error("posix_openpt"));
    }
    // SAFETY: `raw` is a freshly opened descriptor nothing else owns.
    let master = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: grantpt/unlockpt operate on the open master descriptor only.
    if unsafe { libc::grantpt(master.as_raw_fd()) } != 0 {
        return Err(pty_error("grantpt"));
    }
    // SAFETY: as above.
    if unsafe { libc::unlockpt(master.as_raw_fd()) } != 0 {
        return Err(pty_error("unlockpt"));
    }
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: `name` is writable for `name.len()` bytes; ptsname_r NUL-terminates on success.
    let rc = unsafe { libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    // SAFETY: `name` holds a NUL-terminated path written by ptsname_r.
    let raw = unsafe {
        libc::open(
            name.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if raw == -1 {
        return Err(pty_error("opening the pty slave"));
    }
    // SAFETY: `raw` is a freshly opened descriptor nothing else owns.
    let slave = unsafe { OwnedFd::from_raw_fd(raw) };
    // Like login(1): the terminal belongs to the user on it, so tools that reopen it by name
    // (`tty`, `script`, `write`) work after the switch. The group (tty) stays as devpts set it.
    // SAFETY: fchown on a descriptor we own, integer arguments only.
    if unsafe { libc::fchown(slave.as_raw_fd(), uid, libc::gid_t::MAX) } == -1 {
        tracing::debug!(error = %io::Error::last_os_error(), "cannot chown the pty slave");
    }
    set_winsize(&master, size)?;
    Ok((master, slave))
}

fn pty_error(step: &str) -> io::Error {
    let err = io::Error::last_os_error();
    io::Error::new(err.kind(), format!("{step}: {err}"))
}

/// Sets the terminal size of the PTY whose master is `master`. The kernel sends SIGWINCH to the
/// terminal's foreground process group when the size changes, so full-screen programs and
/// shells pick it up.
pub fn set_winsize(master: &impl AsRawFd, size: WinSize) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a `winsize` from the valid pointer for the duration of the call.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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
