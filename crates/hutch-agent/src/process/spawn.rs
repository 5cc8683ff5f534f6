//! Starting one process as a given user: environment, working directory, credentials, and
//! either pipes or a pseudo-terminal for its standard streams.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use hutch_sys::child::ChildSetup;
use hutch_sys::creds::Credentials;

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

pub use hutch_sys::pty::WinSize;

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

    // Own session and process group: the command and its descendants can be signalled as a
    // group, and they share no terminal with the agent. Commands start at the default OOM
    // score whatever the agent's own.
    let mut setup = ChildSetup::new()
        .new_session()
        .oom_score_adj(hutch_sys::oom::DEFAULT);
    // Into the sandbox's work cgroup: whatever the command makes the OOM killer do stays
    // among the sandbox's processes and never reaches the agent (see hutch_runtime::cgroup).
    if let Some(join) = crate::init::work_cgroup() {
        setup = setup.join_cgroup(join);
    }
    if controlling_tty {
        // The PTY slave is on fd 0 by then.
        setup = setup.controlling_tty_on_stdin();
    }
    let creds = Credentials::new(spec.user.uid, spec.user.gid, &spec.user.groups);
    // As root, always set the target's credentials, which also replaces root's supplementary
    // groups. Unprivileged (local development), only a no-op switch can work; any other attempt
    // fails in the child and is reported as a start error.
    if creds.needs_switch() {
        setup = setup.credentials(creds);
    }
    setup.cwd(&spec.cwd)?.install(&mut cmd);

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
fn open_pty(size: WinSize, uid: u32) -> io::Result<(OwnedFd, OwnedFd)> {
    let pty = hutch_sys::pty::open_pty(size)?;
    if let Err(err) = hutch_sys::pty::chown_slave(&pty.slave, uid) {
        tracing::debug!(error = %io::Error::from(err), "cannot chown the pty slave");
    }
    Ok((pty.master, pty.slave))
}

/// Sets the terminal size of the PTY whose master is `master`. The kernel sends SIGWINCH to the
/// terminal's foreground process group when the size changes, so full-screen programs and
/// shells pick it up.
pub fn set_winsize(master: &impl AsFd, size: WinSize) -> io::Result<()> {
    Ok(hutch_sys::pty::set_winsize(master, size)?)
}
