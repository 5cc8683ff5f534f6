//! One kernel process: its private socket directory and connection file, spawning it through
//! the agent's reaper as the sandbox user, connecting to it, interrupting it, and stopping it.
//!
//! The protocol lives in `hutch_kernel`; this module owns only the process.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use hutch_kernel::{
    ConnectOptions, ConnectionInfo, ExecuteRequest, ExecutionEvent, KernelClient, KernelCommand,
    KernelError, KernelSpec,
};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

use crate::process::spawn::{self, Io, SpawnSpec, Spawned};
use crate::reaper::{ExitStatus, ExitWaiter, Reaper};
use crate::users::User;

/// How long a kernel may take from spawn to answering `kernel_info`. Cold starts with the
/// scientific stack imported take seconds on a loaded machine; Java and R take longer.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// How long a stopping kernel gets to answer `shutdown_request` and then to exit, before it
/// is killed.
const SHUTDOWN_REPLY: Duration = Duration::from_secs(1);
const SHUTDOWN_EXIT: Duration = Duration::from_secs(2);

/// How long a kernel that died while starting gets for its log to be read to the end.
const LOG_FLUSH: Duration = Duration::from_millis(200);

/// How long a hidden set-up or clean-up snippet may run.
const SNIPPET_TIMEOUT: Duration = Duration::from_secs(30);

/// How much of a kernel's own stdout/stderr (its log, not the user's output) is kept for
/// error messages.
const LOG_TAIL: usize = 4096;

/// Why a kernel could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The socket directory or connection file could not be set up.
    #[error("cannot prepare the {language} kernel's connection in {dir}: {source}")]
    Prepare {
        /// The language of the kernel.
        language: String,
        /// The directory involved.
        dir: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// The kernel command could not be executed.
    #[error("cannot start the {language} kernel '{program}': {source}")]
    Spawn {
        /// The language of the kernel.
        language: String,
        /// The program from the kernel spec.
        program: String,
        /// What the OS said.
        source: io::Error,
    },
    /// A process started elsewhere could not be taken on as the kernel.
    #[error("cannot adopt process {pid} as the {language} kernel: {source}")]
    Adopt {
        /// The language of the kernel.
        language: String,
        /// The process.
        pid: u32,
        /// What failed.
        source: io::Error,
    },
    /// The kernel exited before it was ready.
    #[error("the {language} kernel exited while starting ({status}); its log ends with: {log}")]
    Exited {
        /// The language of the kernel.
        language: String,
        /// How it ended.
        status: String,
        /// The end of its own stdout/stderr.
        log: String,
    },
    /// The kernel ran but never became ready.
    #[error("the {language} kernel did not become ready: {source}; its log ends with: {log}")]
    NotReady {
        /// The language of the kernel.
        language: String,
        /// What the client saw.
        source: hutch_kernel::KernelError,
        /// The end of its own stdout/stderr.
        log: String,
    },
}

/// Why the agent stopped a kernel on purpose; decides how an execution that loses it is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// `POST /contexts/{id}/restart`.
    Restarted,
    /// `DELETE /contexts/{id}`.
    Removed,
}

/// Everything a new kernel needs.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The kernel spec to run.
    pub spec: KernelSpec,
    /// The language it runs for (for messages).
    pub language: String,
    /// Who runs it.
    pub user: User,
    /// Its working directory.
    pub cwd: PathBuf,
    /// Its environment before the spec's own `env` is layered on.
    pub env: BTreeMap<String, String>,
    /// Where its private socket directory is created.
    pub runtime_dir: PathBuf,
}

/// A kernel's private socket directory and connection file, made ready (and given to its
/// user) for a process that is yet to start, and the command line that starts it.
#[derive(Debug)]
pub struct Prepared {
    /// The directory holding its sockets and connection file; removed when it exits.
    pub dir: PathBuf,
    /// The connection file, inside `dir`.
    pub conn_file: PathBuf,
    /// What the connection file says, for connecting to the kernel.
    pub info: ConnectionInfo,
    /// How to start it: the spec's command line for `conn_file`, in the launch's environment.
    pub command: KernelCommand,
    language: String,
    spec_name: String,
}

impl Prepared {
    /// Creates `launch`'s socket directory and connection file, both owned by its user.
    pub fn new(launch: &Launch) -> Result<Prepared, StartError> {
        let language = launch.language.clone();
        let prepare = |dir: &Path, source| StartError::Prepare {
            language: language.clone(),
            dir: dir.to_owned(),
            source,
        };
        let runtime = &launch.runtime_dir;
        prepare_runtime_dir(runtime).map_err(|e| prepare(runtime, e))?;
        let short_id = hutch_kernel::message::new_id()[..8].to_owned();
        let dir = runtime.join(short_id);
        // Unix sockets where the kernel supports them; Deno reads `ip` as a host name and
        // JeroMQ (Java) has no real ipc transport, so those get loopback TCP (docs/kernels.md).
        let info = if speaks_ipc(&launch.spec.name) {
            ConnectionInfo::new_ipc(&dir)
        } else {
            std::fs::create_dir_all(&dir).map_err(|e| prepare(&dir, e))?;
            ConnectionInfo::new_tcp()
        }
        .map_err(|e| prepare(&dir, io::Error::other(e.to_string())))?;
        let conn_file = dir.join("connection.json");
        let setup = || -> io::Result<()> {
            info.write(&conn_file)
                .map_err(|e| io::Error::other(e.to_string()))?;
            // The kernel binds its sockets in `dir` and reads the file as the user.
            give_to(&dir, &launch.user)?;
            give_to(&conn_file, &launch.user)
        };
        if let Err(e) = setup() {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(prepare(&dir, e));
        }
        let base_env: Vec<(String, String)> = launch
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let command = launch.spec.command(&conn_file, &base_env);
        Ok(Prepared {
            dir,
            conn_file,
            info,
            command,
            language,
            spec_name: launch.spec.name.clone(),
        })
    }

    /// Creates the FIFO a kernel started elsewhere writes its stdout and stderr to (in the
    /// socket directory, `user`'s, mode 0600) and opens it: the agent drains it as it
    /// drains the pipes of a kernel it spawns, so the kernel sees pipes either way.
    pub fn create_log_pipe(&self, user: &User) -> Result<(PathBuf, LogPipe), StartError> {
        let path = self.dir.join("kernel.log");
        let open = |write: bool| hutch_sys::fs::open_fifo(&path, write).map_err(io::Error::from);
        let made = hutch_sys::fs::mkfifo(&path, 0o600)
            .map_err(io::Error::from)
            .and_then(|()| give_to(&path, user))
            // The reader first (a non-blocking writer needs one), then a writer of the
            // agent's own: until the kernel has opened its end, the reader sees no end of file.
            .and_then(|()| Ok((open(false)?, open(true)?)));
        match made {
            Ok((read, keep)) => Ok((path, LogPipe { read, keep })),
            Err(source) => Err(StartError::Prepare {
                language: self.language.clone(),
                dir: self.dir.clone(),
                source,
            }),
        }
    }

    /// Removes the socket directory and everything in it: for a kernel that never ran.
    pub fn discard(self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The FIFO of a kernel started elsewhere ([`Prepared::create_log_pipe`]): its read end,
/// and a write end the agent holds until the kernel is adopted.
#[derive(Debug)]
pub struct LogPipe {
    read: OwnedFd,
    keep: OwnedFd,
}

/// Where a starting kernel's own stdout and stderr go, for the error when it fails.
enum KernelLog {
    /// Pipes the agent drains into a tail.
    Pipes {
        tail: Arc<LogTail>,
        drains: Vec<tokio::task::JoinHandle<()>>,
    },
}

impl KernelLog {
    /// The end of the log now.
    fn text(&self) -> String {
        match self {
            KernelLog::Pipes { tail, .. } => tail.text(),
        }
    }

    /// The end of the log of a kernel that has exited.
    async fn after_exit(self) -> String {
        match self {
            KernelLog::Pipes { tail, drains } => {
                // Its last words (often the reason) may still be in the pipes.
                let _ =
                    tokio::time::timeout(LOG_FLUSH, futures_util::future::join_all(drains)).await;
                tail.text()
            }
        }
    }
}

/// Kills `pid`, a kernel started elsewhere for a plan that can no longer be adopted, and
/// its process group; nothing happens to a pid that is already the agent's own child.
pub fn abandon(reaper: &Reaper, pid: u32) {
    let registered = i32::try_from(pid)
        .map_err(|_| io::Error::other("pid out of range"))
        .and_then(|raw| reaper.adopt(raw));
    if registered.is_ok() {
        kill_adopted(reaper, pid);
    }
}

/// SIGKILLs an adopted kernel's process group and, while it is an unreaped child of the
/// agent, the kernel itself.
fn kill_adopted(reaper: &Reaper, pid: u32) {
    let Ok(raw) = i32::try_from(pid) else {
        return;
    };
    let _ = hutch_sys::signal::kill_group(raw, hutch_sys::signal::Signal::KILL);
    let _ = reaper.signal(raw, hutch_sys::signal::Signal::KILL.as_raw());
}

/// How long an execution that lost its kernel waits for the exit status, to say how the
/// kernel ended (the sockets usually close a moment before the reaper sees the exit).
const EXIT_STATUS_WAIT: Duration = Duration::from_millis(500);

/// A running (or recently ended) kernel process and the client connected to it.
pub struct Kernel {
    pid: u32,
    language: String,
    /// Dropped once the process is gone: its iopub socket would otherwise try to reconnect
    /// to the dead kernel forever.
    client: Mutex<Option<Arc<KernelClient>>>,
    exit: watch::Receiver<Option<ExitStatus>>,
    stop_reason: Mutex<Option<StopReason>>,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernel")
            .field("pid", &self.pid)
            .field("language", &self.language)
            .finish_non_exhaustive()
    }
}

impl Kernel {
    /// Spawns the kernel `launch` describes and connects to it; returns once it is ready.
    pub async fn start(reaper: &Reaper, launch: Launch) -> Result<Arc<Kernel>, StartError> {
        let prepared = Prepared::new(&launch)?;
        let command = &prepared.command;
        let spawn_spec = SpawnSpec {
            user: launch.user.clone(),
            cmd: command.program.clone(),
            args: command.args.clone(),
            env: command.env.iter().cloned().collect(),
            cwd: launch.cwd.clone(),
            stdin: false,
            pty: None,
        };
        let spawned = match spawn_kernel(reaper, spawn_spec, &launch.user).await {
            Ok(spawned) => spawned,
            Err(source) => {
                let program = command.program.clone();
                let language = prepared.language.clone();
                prepared.discard();
                return Err(StartError::Spawn {
                    language,
                    program,
                    source,
                });
            }
        };
        let Spawned { pid, io, exit } = spawned;
        tracing::info!(pid, language = %prepared.language, kernel = %prepared.spec_name, "kernel started");

        let tail = Arc::new(LogTail::default());
        let mut drains = Vec::new();
        if let Io::Pipes { stdout, stderr, .. } = io {
            for (fd, stream) in [(stdout, "stdout"), (stderr, "stderr")] {
                drains.push(tokio::spawn(drain_log(fd, stream, pid, Arc::clone(&tail))));
            }
        }
        Self::connect(prepared, pid, exit, KernelLog::Pipes { tail, drains }).await
    }

    /// Takes on `pid`, a kernel started by someone else (the server's zygote) from
    /// `prepared` with its stdout and stderr in `log_file`, and connects to it; returns
    /// once it is ready. The process must be the agent's child by now (reparented to it)
    /// and lead its own process group, as spawned kernels do.
    ///
    /// On failure the process and its group are killed (unless `pid` is a child the agent
    /// spawned itself, which is refused untouched) and the socket directory is gone.
    pub async fn adopt(
        reaper: &Reaper,
        prepared: Prepared,
        pid: u32,
        log: LogPipe,
    ) -> Result<Arc<Kernel>, StartError> {
        let exit = match i32::try_from(pid)
            .map_err(|_| io::Error::other("pid out of range"))
            .and_then(|raw| reaper.adopt(raw))
        {
            Ok(exit) => exit,
            Err(source) => {
                let language = prepared.language.clone();
                prepared.discard();
                return Err(StartError::Adopt {
                    language,
                    pid,
                    source,
                });
            }
        };
        tracing::info!(pid, language = %prepared.language, kernel = %prepared.spec_name, "kernel adopted");
        let tail = Arc::new(LogTail::default());
        let LogPipe { read, keep } = log;
        let drains = vec![tokio::spawn(drain_log(
            read,
            "stdout+stderr",
            pid,
            Arc::clone(&tail),
        ))];
        // The kernel holds its own write end by now: the pipe ends when the kernel does.
        drop(keep);
        let log = KernelLog::Pipes { tail, drains };
        let dir = prepared.dir.clone();
        let adopted = Self::connect(prepared, pid, exit, log).await;
        if adopted.is_err() {
            kill_adopted(reaper, pid);
            let _ = std::fs::remove_dir_all(&dir);
        }
        adopted
    }

    /// Watches the started process `pid` for its exit and connects to it as `prepared`
    /// says; the part of starting a kernel that does not care who started the process.
    async fn connect(
        prepared: Prepared,
        pid: u32,
        exit: ExitWaiter,
        log: KernelLog,
    ) -> Result<Arc<Kernel>, StartError> {
        let Prepared {
            dir,
            info,
            command,
            language,
            spec_name,
            ..
        } = prepared;
        let (exit_tx, exit_rx) = watch::channel(None);
        tokio::spawn(async move {
            // The reaper never drops a waiter while the child runs; treat it as an exit anyway
            // so nothing waits forever.
            let status = exit.await.unwrap_or(ExitStatus::from_raw(-1));
            tracing::info!(pid, status = %status.describe(), "kernel exited");
            let _ = exit_tx.send(Some(status));
            // Its sockets and connection file are useless now; a restart makes a new directory.
            let _ = std::fs::remove_dir_all(&dir);
        });

        let options = ConnectOptions {
            timeout: START_TIMEOUT,
            interrupt_mode: command.interrupt_mode,
            pid: Some(pid),
            output_barrier: output_barrier(&spec_name),
            ..ConnectOptions::default()
        };
        let mut exited = exit_rx.clone();
        let connected = tokio::select! {
            connected = KernelClient::connect(&info, options) => Some(connected),
            _ = exited.wait_for(Option::is_some) => None,
        };
        let client = match connected {
            Some(Ok(client)) => client,
            None => {
                let status = (*exit_rx.borrow())
                    .map(ExitStatus::describe)
                    .unwrap_or_default();
                return Err(StartError::Exited {
                    language,
                    status,
                    log: log.after_exit().await,
                });
            }
            Some(Err(source)) => {
                kill_group(pid, &exit_rx);
                return Err(StartError::NotReady {
                    language,
                    source,
                    log: log.text(),
                });
            }
        };

        let kernel = Arc::new(Kernel {
            pid,
            language,
            client: Mutex::new(Some(Arc::new(client))),
            exit: exit_rx,
            stop_reason: Mutex::new(None),
        });
        tokio::spawn(report_exit(Arc::downgrade(&kernel), kernel.exit.clone()));
        Ok(kernel)
    }

    /// The connected client; `None` once the process has ended.
    pub fn client(&self) -> Option<Arc<KernelClient>> {
        self.client_slot().clone()
    }

    fn client_slot(&self) -> MutexGuard<'_, Option<Arc<KernelClient>>> {
        // Only ever assigned whole; a poisoned value is still a valid one.
        self.client.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fails everything waiting on the kernel with `reason` and drops the client.
    fn disconnect(&self, reason: &str) {
        if let Some(client) = self.client_slot().take() {
            client.kernel_exited(reason);
        }
    }

    /// The kernel's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the process has ended.
    pub fn has_exited(&self) -> bool {
        self.exit.borrow().is_some()
    }

    fn stop_reason(&self) -> MutexGuard<'_, Option<StopReason>> {
        // Only ever assigned whole; a poisoned value is still a valid one.
        self.stop_reason.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The `error` line's name and value for an execution that lost this kernel.
    pub async fn lost_error(&self) -> (String, String) {
        let mut exit = self.exit.clone();
        let _ = tokio::time::timeout(EXIT_STATUS_WAIT, exit.wait_for(Option::is_some)).await;
        let reason = *self.stop_reason();
        match reason {
            Some(StopReason::Restarted) => {
                ("ContextRestarting".into(), "Context was restarted".into())
            }
            Some(StopReason::Removed) => ("ContextRemoved".into(), "Context was removed".into()),
            None => {
                let status = (*self.exit.borrow())
                    .map(ExitStatus::describe)
                    .unwrap_or_else(|| "its sockets closed".into());
                (
                    "KernelDied".into(),
                    format!(
                        "The {} kernel exited during the execution ({status}). The context's state is lost; its next execution starts a new kernel.",
                        self.language
                    ),
                )
            }
        }
    }

    /// Runs `code` without output, history or execution count (E2B's set-up snippets);
    /// failures are only logged, as E2B does.
    pub async fn run_hidden(&self, code: &str, what: &str) {
        let request = ExecuteRequest {
            silent: true,
            store_history: false,
            // An error here must not abort the user's request queued right behind it.
            stop_on_error: false,
            ..ExecuteRequest::new(code)
        };
        let run = async {
            let client = self
                .client()
                .ok_or_else(|| KernelError::Disconnected("the kernel exited".into()))?;
            let execution = client.execute(request).await?;
            execution.collect().await
        };
        match tokio::time::timeout(SNIPPET_TIMEOUT, run).await {
            Ok(Ok(events)) => {
                for event in events {
                    if let ExecutionEvent::Error { ename, evalue, .. } = event {
                        tracing::warn!(
                            pid = self.pid,
                            what,
                            ename,
                            evalue,
                            "hidden snippet failed"
                        );
                    }
                }
            }
            Ok(Err(err)) => {
                tracing::warn!(pid = self.pid, what, error = %err, "hidden snippet failed")
            }
            Err(_) => tracing::warn!(pid = self.pid, what, "hidden snippet timed out"),
        }
    }

    /// Interrupts whatever the kernel is running (SIGINT to its process group, or an
    /// `interrupt_request`, as its spec says).
    pub async fn interrupt(&self) {
        // Checked first: the pid of a reaped kernel may belong to someone else by now.
        let Some(client) = self.client().filter(|_| !self.has_exited()) else {
            return;
        };
        match client.interrupt().await {
            Ok(how) => tracing::info!(pid = self.pid, ?how, "kernel interrupted"),
            Err(err) => {
                tracing::warn!(pid = self.pid, error = %err, "interrupting the kernel failed")
            }
        }
    }

    /// Stops the kernel for `reason`: asks it to shut down, then kills its whole process group
    /// (so nothing it started outlives it), and waits until it has been reaped.
    pub async fn stop(&self, reason: StopReason) {
        *self.stop_reason() = Some(reason);
        if let Some(client) = self.client().filter(|_| !self.has_exited()) {
            // The control channel answers even while code runs, so a busy kernel exits cleanly
            // too; a hung one is killed below.
            let _ = tokio::time::timeout(SHUTDOWN_REPLY, client.shutdown(false)).await;
            let mut exit = self.exit.clone();
            let _ = tokio::time::timeout(SHUTDOWN_EXIT, exit.wait_for(Option::is_some)).await;
        }
        kill_group(self.pid, &self.exit);
        let mut exit = self.exit.clone();
        let _ = exit.wait_for(Option::is_some).await;
        self.disconnect(&format!("the context was {reason:?}"));
    }
}

/// Tells the client when its process is gone: sockets a forked child inherited could otherwise
/// keep executions waiting forever.
async fn report_exit(kernel: Weak<Kernel>, mut exit: watch::Receiver<Option<ExitStatus>>) {
    let status = exit.wait_for(Option::is_some).await.ok().and_then(|s| *s);
    if let Some(kernel) = kernel.upgrade() {
        let status = status.map(ExitStatus::describe).unwrap_or_default();
        kernel.disconnect(&format!("the kernel process exited ({status})"));
    }
}

/// SIGKILLs the process group led by `pid`, and `pid` itself.
///
/// The group outlives its leader while members remain, so this also reaches what a dead
/// kernel left behind. Its id cannot be handed out again while any member lives; once none
/// does, `kill` finds nothing.
fn kill_group(pid: u32, exit: &watch::Receiver<Option<ExitStatus>>) {
    use hutch_sys::signal::{self, Signal};
    let Ok(raw) = i32::try_from(pid) else {
        return;
    };
    // Failures mean the group or process is already gone.
    let _ = signal::kill_group(raw, Signal::KILL);
    if exit.borrow().is_none() {
        // The leader is unreaped (checked just now), so the pid is still ours.
        let _ = signal::kill(raw, Signal::KILL);
    }
}

/// Spawns off the runtime's threads (fork + exec block). If the kernel cannot start in the
/// requested directory (missing, or closed to the user), it starts in the user's home
/// instead, as E2B's kernels do when their `%cd` fails.
async fn spawn_kernel(reaper: &Reaper, spec: SpawnSpec, user: &User) -> io::Result<Spawned> {
    let try_spawn = |spec: SpawnSpec| {
        let reaper = reaper.clone();
        async move {
            tokio::task::spawn_blocking(move || spawn::spawn(&reaper, spec))
                .await
                .map_err(|e| io::Error::other(format!("the spawning task failed: {e}")))?
        }
    };
    let cwd = spec.cwd.clone();
    let mut in_home = spec.clone();
    in_home.cwd = user.home.clone();
    match try_spawn(spec).await {
        Err(err) if cwd != user.home => match try_spawn(in_home).await {
            Ok(spawned) => {
                tracing::warn!(
                    cwd = %cwd.display(),
                    home = %user.home.display(),
                    error = %err,
                    "kernel cannot start in the context's directory; started in the user's home"
                );
                Ok(spawned)
            }
            Err(_) => Err(err),
        },
        other => other,
    }
}

/// Creates the directory holding every kernel's socket directory: root's, and only
/// traversable by others, so users cannot list each other's kernels.
fn prepare_runtime_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
}

/// Hands `path` to `user` when the agent runs as root (in a sandbox); unprivileged (local
/// development) the kernel runs as the agent's own user and already owns it.
fn give_to(path: &Path, user: &User) -> io::Result<()> {
    if !hutch_sys::creds::is_root() {
        return Ok(());
    }
    std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
}

/// The last [`LOG_TAIL`] bytes a kernel wrote to its own stdout and stderr.
#[derive(Debug, Default)]
struct LogTail(Mutex<VecDeque<u8>>);

impl LogTail {
    fn push(&self, bytes: &[u8]) {
        let mut tail = self.0.lock().unwrap_or_else(|e| e.into_inner());
        tail.extend(bytes);
        let excess = tail.len().saturating_sub(LOG_TAIL);
        tail.drain(..excess);
    }

    fn text(&self) -> String {
        let tail = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let bytes: Vec<u8> = tail.iter().copied().collect();
        let text = String::from_utf8_lossy(&bytes).trim().to_owned();
        if text.is_empty() {
            "(nothing)".into()
        } else {
            text
        }
    }
}

/// Reads a kernel's own output (its logging, not the user's: that travels over iopub) into
/// the agent's debug log and `tail`, so the pipe never fills and blocks the kernel.
async fn drain_log(fd: OwnedFd, stream: &'static str, pid: u32, tail: Arc<LogTail>) {
    let mut pipe = match tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
        Ok(pipe) => pipe,
        Err(err) => {
            tracing::warn!(pid, stream, error = %err, "cannot read the kernel's log");
            return;
        }
    };
    let mut buf = vec![0u8; 8192];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => {
                tail.push(&buf[..n]);
                tracing::debug!(pid, stream, text = %String::from_utf8_lossy(&buf[..n]), "kernel log");
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => {
                tracing::debug!(pid, stream, error = %err, "kernel log closed");
                return;
            }
        }
    }
}

/// Whether the kernel named `name` can bind ZeroMQ's ipc transport: the ipykernel-based ones can.
fn speaks_ipc(name: &str) -> bool {
    matches!(name, "python3" | "bash")
}

/// Deno forwards console output from a task of its own, so a cell's output can arrive after
/// its end (docs/kernels.md): its executions are followed by a barrier that prints a marker.
fn output_barrier(name: &str) -> Option<fn(&str) -> String> {
    (name == "deno").then_some(deno_barrier as fn(&str) -> String)
}

/// Lets pending work of the cell (a result still being published) run first, then prints.
fn deno_barrier(marker: &str) -> String {
    format!("await new Promise((resolve) => setTimeout(resolve, 0));\nconsole.log({marker:?});")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tail_keeps_the_end() {
        let tail = LogTail::default();
        assert_eq!(tail.text(), "(nothing)");
        tail.push(&vec![b'a'; LOG_TAIL]);
        tail.push(b"the end\n");
        let text = tail.text();
        assert!(text.ends_with("the end"));
        assert_eq!(text.len(), LOG_TAIL - 1);
    }
}
