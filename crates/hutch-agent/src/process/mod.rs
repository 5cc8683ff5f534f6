//! The process service (`process.Process`): starting commands on pipes or on a pseudo-terminal,
//! attaching to them, feeding them input, resizing their terminal, listing and signalling them.
//!
//! [`ProcessService`] holds the policy and the table of processes and knows nothing of HTTP;
//! [`rpc`] adapts it to Connect.

pub mod output;
pub mod rpc;
pub mod spawn;
pub mod wire;

use std::collections::{BTreeMap, HashMap};
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::connect::{Code, ConnectError};
use crate::reaper::{ExitStatus, ExitWaiter, Reaper, Sig};
use crate::users::{User, UserDb, UserError};
use output::{EventHub, Stream};
use spawn::{Io, SpawnSpec, Spawned, WinSize};
use wire::{
    EndEvent, ProcessConfig, ProcessEvent, ProcessInfo, ProcessInput, ProcessSelector, Pty, Signal,
};

/// `PATH` for processes when the agent itself was started without one.
const FALLBACK_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `TERM` of PTY processes whose request and sandbox set none (what the SDKs send anyway).
const DEFAULT_TERM: &str = "xterm-256color";

/// How long a finished process's end stays available to `Connect`: long enough for a client
/// that lost its stream (network blip, sandbox paused) to come back and learn how it ended.
const FINISHED_RETENTION: Duration = Duration::from_secs(10 * 60);

/// At most this many finished processes are remembered; the oldest go first. Bounds the memory
/// a loop of short commands can make PID 1 hold.
const FINISHED_MAX: usize = 1024;

/// Where a process's input goes, as far as the agent still has it.
#[derive(Debug)]
enum InputState {
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
struct Entry {
    pid: u32,
    config: ProcessConfig,
    tag: Option<String>,
    hub: Arc<EventHub>,
    /// Whether it runs on a PTY (input is `pty`, it can be resized, stdin cannot be closed).
    pty: bool,
    input: Mutex<InputState>,
    /// Held across each write so concurrent `SendInput` calls do not interleave their bytes.
    write_order: tokio::sync::Mutex<()>,
}

impl Entry {
    fn input(&self) -> MutexGuard<'_, InputState> {
        // A single assignment is the only thing done under this lock; it cannot be torn.
        self.input.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How a process that is no longer running ended, kept for late `Connect` calls.
#[derive(Debug)]
struct Finished {
    tag: Option<String>,
    end: EndEvent,
    at: Instant,
}

/// Every process the agent knows: those running and those that recently ended.
#[derive(Debug, Default)]
struct Table {
    running: HashMap<u32, Arc<Entry>>,
    finished: HashMap<u32, Finished>,
}

impl Table {
    /// Records how `pid` ended, forgetting ends that are too old or too many.
    fn remember(&mut self, pid: u32, finished: Finished) {
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

/// A stream of one process's events, for a `Start` or `Connect` call.
#[derive(Debug)]
pub struct Started {
    /// The process's pid.
    pub pid: u32,
    /// Every event after `start`, ending with `end`; `None` after that.
    pub events: mpsc::Receiver<ProcessEvent>,
    /// When the process gets killed if it is still running (`Start` with a lifetime only).
    pub deadline: Option<Instant>,
}

/// A running process that input can be written to (the target of a `StreamInput` call).
#[derive(Debug, Clone)]
pub struct InputTarget {
    entry: Arc<Entry>,
}

impl InputTarget {
    /// The process's pid.
    pub fn pid(&self) -> u32 {
        self.entry.pid
    }

    /// Writes `input` to the process: its stdin pipe or its terminal, whichever `input` names
    /// and the process has. Waits while the process is not reading.
    pub async fn write(&self, input: ProcessInput) -> Result<(), ConnectError> {
        let entry = &self.entry;
        let pid = entry.pid;
        let (bytes, what) = match (input, entry.pty) {
            (ProcessInput::Stdin(bytes), false) => (bytes, "stdin"),
            (ProcessInput::Pty(bytes), true) => (bytes, "tty"),
            (ProcessInput::Stdin(_), true) => {
                return Err(ConnectError::invalid_argument(format!(
                    "process {pid} runs on a PTY: send its input as 'pty', not 'stdin'"
                )))
            }
            (ProcessInput::Pty(_), false) => {
                return Err(ConnectError::invalid_argument(format!(
                    "process {pid} has no PTY: send its input as 'stdin', not 'pty'"
                )))
            }
        };
        let _order = entry.write_order.lock().await;
        // A clone, so `CloseStdin` or the exit can drop the agent's copy while this write is
        // still waiting; the descriptor closes when the last write finishes.
        let fd = match &*entry.input() {
            InputState::Open(fd) => fd.clone(),
            InputState::Ended => return Err(not_found(pid)),
            InputState::Disabled => {
                return Err(ConnectError::new(
                    Code::FailedPrecondition,
                    format!("process {pid} was started without stdin (stdin: false)"),
                ))
            }
            InputState::Closed => {
                return Err(ConnectError::new(
                    Code::FailedPrecondition,
                    format!("the stdin of process {pid} was already closed"),
                ))
            }
        };
        output::write_all(&fd, &bytes).await.map_err(|err| {
            ConnectError::internal(format!("error writing to {what} of process {pid}: {err}"))
        })
    }
}

fn not_found(pid: u32) -> ConnectError {
    ConnectError::not_found(format!("process with pid {pid} not found"))
}

/// The process service.
#[derive(Clone)]
pub struct ProcessService {
    inner: Arc<Inner>,
}

struct Inner {
    reaper: Reaper,
    users: UserDb,
    sandbox_env: BTreeMap<String, String>,
    agent_path: String,
    table: Mutex<Table>,
}

impl ProcessService {
    /// A service that spawns through `reaper`, resolves users in `users` and gives every process
    /// `sandbox_env`.
    pub fn new(reaper: Reaper, users: UserDb, sandbox_env: BTreeMap<String, String>) -> Self {
        let agent_path = std::env::var("PATH").unwrap_or_else(|_| FALLBACK_PATH.to_owned());
        Self {
            inner: Arc::new(Inner {
                reaper,
                users,
                sandbox_env,
                agent_path,
                table: Mutex::new(Table::default()),
            }),
        }
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        // Every critical section leaves the maps consistent between statements, so a poisoned
        // table is still valid.
        self.inner.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Resolves `username` to a user a process can run as.
    pub fn user(&self, username: &str) -> Result<User, ConnectError> {
        self.inner.users.lookup(username).map_err(|err| match err {
            UserError::Unknown(_) => {
                ConnectError::unauthenticated(format!("invalid username: '{username}'"))
            }
            UserError::Read { .. } => ConnectError::internal(err.to_string()),
        })
    }

    /// Starts a process as `user`, to be killed after `lifetime` if it is still running.
    pub async fn start(
        &self,
        request: wire::StartRequest,
        user: User,
        lifetime: Option<Duration>,
    ) -> Result<Started, ConnectError> {
        // On a task of its own: if the caller goes away mid-start (client disconnect), the
        // process that may already exist must still be registered and supervised, not orphaned
        // with closed pipes.
        let service = self.clone();
        tokio::spawn(async move { service.start_detached(request, user, lifetime).await })
            .await
            .map_err(|err| ConnectError::internal(format!("starting the process failed: {err}")))?
    }

    async fn start_detached(
        &self,
        request: wire::StartRequest,
        user: User,
        lifetime: Option<Duration>,
    ) -> Result<Started, ConnectError> {
        let config = request
            .process
            .ok_or_else(|| ConnectError::invalid_argument("the request has no process config"))?;
        if config.cmd.is_empty() {
            return Err(ConnectError::invalid_argument(
                "the process config has an empty cmd",
            ));
        }
        let pty = request.pty.map(|pty| win_size(&pty));
        let cwd = resolve_cwd(config.cwd.as_deref(), &user)?;
        let mut env = self.environment(&user, &config.envs);
        if pty.is_some() {
            env.entry("TERM".to_owned())
                .or_insert_with(|| DEFAULT_TERM.to_owned());
        }
        let spec = SpawnSpec {
            env,
            cmd: config.cmd.clone(),
            args: config.args.clone(),
            cwd,
            stdin: request.stdin.unwrap_or(true),
            pty,
            user,
        };
        let command_line = std::iter::once(&config.cmd)
            .chain(&config.args)
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(" ");

        let reaper = self.inner.reaper.clone();
        let spawned = tokio::task::spawn_blocking(move || spawn::spawn(&reaper, spec))
            .await
            .map_err(|err| ConnectError::internal(format!("spawning task failed: {err}")))?
            .map_err(|err| {
                ConnectError::invalid_argument(format!(
                    "error starting process '{command_line}': {err}"
                ))
            })?;
        let Spawned { pid, io, exit } = spawned;

        // Registering descriptors can only fail if the runtime is shutting down; the process is
        // still supervised so it gets reaped and reported.
        let register = |fd: OwnedFd, interest: Interest, what: &str| {
            output::async_fd(fd, interest)
                .map(Arc::new)
                .map_err(|err| tracing::error!(pid, error = %err, what, "cannot watch process I/O"))
                .ok()
        };
        let (input, pipes) = match io {
            Io::Pipes {
                stdin,
                stdout,
                stderr,
            } => {
                let input = match stdin {
                    Some(fd) => register(fd, Interest::WRITABLE, "stdin")
                        .map_or(InputState::Closed, InputState::Open),
                    None => InputState::Disabled,
                };
                let pipes = [(stdout, Stream::Stdout), (stderr, Stream::Stderr)]
                    .into_iter()
                    .filter_map(|(fd, stream)| {
                        register(fd, Interest::READABLE, "output").map(|fd| (fd, stream))
                    })
                    .collect::<Vec<_>>();
                (input, pipes)
            }
            Io::Pty { master } => {
                match register(master, Interest::READABLE | Interest::WRITABLE, "pty") {
                    Some(fd) => (InputState::Open(fd.clone()), vec![(fd, Stream::Pty)]),
                    None => (InputState::Ended, Vec::new()),
                }
            }
        };

        let hub = EventHub::new();
        // Subscribe before the pumps start so not a byte of output is missed.
        let events = hub
            .subscribe()
            .ok_or_else(|| ConnectError::internal("a new event hub is already closed"))?;
        let entry = Arc::new(Entry {
            pid,
            config,
            tag: request.tag,
            hub,
            pty: pty.is_some(),
            input: Mutex::new(input),
            write_order: tokio::sync::Mutex::new(()),
        });
        {
            let mut table = self.table();
            // The pid was reused: the old process's end is no longer reachable by it.
            table.finished.remove(&pid);
            table.running.insert(pid, entry.clone());
        }
        tracing::info!(pid, command = %command_line, pty = pty.is_some(), "process started");

        let deadline = lifetime.map(|limit| Instant::now() + limit);
        tokio::spawn(self.clone().supervise(entry, exit, pipes, deadline));
        Ok(Started {
            pid,
            events,
            deadline,
        })
    }

    /// Runs for the lifetime of one process: forwards its output, enforces its lifetime, and
    /// reports its end.
    async fn supervise(
        self,
        entry: Arc<Entry>,
        mut exit: ExitWaiter,
        pipes: Vec<(Arc<AsyncFd<OwnedFd>>, Stream)>,
        deadline: Option<Instant>,
    ) {
        let pid = entry.pid;
        let (exited_tx, exited_rx) = watch::channel(false);
        let pumps = pipes
            .into_iter()
            .map(|(pipe, stream)| {
                tokio::spawn(output::pump(
                    pipe,
                    stream,
                    entry.hub.clone(),
                    exited_rx.clone(),
                ))
            })
            .collect::<Vec<_>>();

        let status = match deadline {
            None => exit.await,
            Some(deadline) => tokio::select! {
                status = &mut exit => status,
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::info!(pid, "process outlived its timeout; killing it");
                    self.kill(pid, Sig::KILL);
                    exit.await
                }
            },
        };
        // Nothing can be written to a process that is gone. For a PTY this drops the agent's
        // input reference to the master; the pump's reference closes it once drained, which
        // hangs up whatever the process left running on the terminal (as envd does).
        *entry.input() = InputState::Ended;
        let _ = exited_tx.send(true);
        for pump in pumps {
            // A pump only fails by panicking; its output is lost but the end event still goes out.
            let _ = pump.await;
        }

        let end = match status {
            Ok(status) => end_event(status),
            // The reaper dropped our waiter, which it never does while running; report it rather
            // than leaving the client without an end event.
            Err(_) => EndEvent {
                exit_code: -1,
                exited: false,
                status: "unknown".into(),
                error: Some("the agent lost track of the process's exit status".into()),
            },
        };
        tracing::info!(pid, status = %end.status, "process ended");
        // Out of the running set before the end event goes out, so a client that lists processes
        // right after seeing the end does not see this one; into the finished set in the same
        // step, so a `Connect` either subscribed in time to get the end live or replays it.
        {
            let mut table = self.table();
            table.running.remove(&pid);
            table.remember(
                pid,
                Finished {
                    tag: entry.tag.clone(),
                    end: end.clone(),
                    at: Instant::now(),
                },
            );
        }
        entry.hub.publish(ProcessEvent::End(end)).await;
        entry.hub.close();
    }

    fn kill(&self, pid: u32, sig: Sig) {
        let Ok(pid) = i32::try_from(pid) else {
            return;
        };
        if let Err(err) = self.inner.reaper.signal(pid, sig.as_raw()) {
            tracing::warn!(pid, sig = sig.as_raw(), error = %err, "signalling process failed");
        }
    }

    /// The environment of a process run as `user`: the base variables, then the sandbox's, then
    /// the request's, later ones overriding earlier ones.
    fn environment(
        &self,
        user: &User,
        request_env: &BTreeMap<String, String>,
    ) -> BTreeMap<String, String> {
        let mut env = BTreeMap::from([
            ("PATH".to_owned(), self.inner.agent_path.clone()),
            ("HOME".to_owned(), user.home.to_string_lossy().into_owned()),
            ("USER".to_owned(), user.name.clone()),
            ("LOGNAME".to_owned(), user.name.clone()),
        ]);
        env.extend(self.inner.sandbox_env.clone());
        env.extend(request_env.clone());
        env
    }

    /// Every running process, as `List` reports them.
    pub fn list(&self) -> Vec<ProcessInfo> {
        let mut list: Vec<ProcessInfo> = self
            .table()
            .running
            .iter()
            .map(|(pid, entry)| ProcessInfo {
                config: Some(entry.config.clone()),
                pid: *pid,
                tag: entry.tag.clone(),
            })
            .collect();
        list.sort_by_key(|p| p.pid);
        list
    }

    /// Attaches to the selected process: its live events from now on, ending with its `end`;
    /// for a process that ended recently, just the `end`.
    pub fn connect(&self, selector: Option<ProcessSelector>) -> Result<Started, ConnectError> {
        let selector = Selector::parse(selector)?;
        let table = self.table();
        if let Some(entry) = selector.running(&table) {
            // Under the table lock: the end moves the entry out of `running` under the same lock
            // before it is published, so this subscription cannot miss it.
            if let Some(events) = entry.hub.subscribe() {
                return Ok(Started {
                    pid: entry.pid,
                    events,
                    deadline: None,
                });
            }
        }
        let (pid, finished) = selector
            .finished(&table)
            .ok_or_else(|| selector.not_found())?;
        let (tx, events) = mpsc::channel(1);
        // Cannot fail: the channel is new, has room for one, and `events` is alive.
        let _ = tx.try_send(ProcessEvent::End(finished.end.clone()));
        Ok(Started {
            pid,
            events,
            deadline: None,
        })
    }

    /// The running process `selector` names, as a target for input.
    pub fn input_target(
        &self,
        selector: Option<ProcessSelector>,
    ) -> Result<InputTarget, ConnectError> {
        let entry = self.select(selector)?;
        Ok(InputTarget { entry })
    }

    /// Writes `input` to the selected process.
    pub async fn send_input(
        &self,
        selector: Option<ProcessSelector>,
        input: Option<ProcessInput>,
    ) -> Result<(), ConnectError> {
        let target = self.input_target(selector)?;
        let Some(input) = input else {
            return Err(ConnectError::invalid_argument(
                "the request has no input: set 'stdin' or 'pty'",
            ));
        };
        target.write(input).await
    }

    /// Closes the selected process's stdin so it reads end of file. Closing it again, or the
    /// stdin of a process started without one, does nothing.
    pub fn close_stdin(&self, selector: Option<ProcessSelector>) -> Result<(), ConnectError> {
        let entry = self.select(selector)?;
        if entry.pty {
            return Err(ConnectError::invalid_argument(format!(
                "process {} runs on a PTY, which has no stdin to close: send Ctrl+D (0x04) as \
                 'pty' input instead",
                entry.pid
            )));
        }
        let mut input = entry.input();
        if matches!(*input, InputState::Open(_)) {
            // Dropping the agent's reference closes the pipe, unless a write is still waiting
            // to complete; it then closes right after that write.
            *input = InputState::Closed;
        }
        Ok(())
    }

    /// Applies `pty` (a new terminal size) to the selected PTY process.
    pub fn update(
        &self,
        selector: Option<ProcessSelector>,
        pty: Option<Pty>,
    ) -> Result<(), ConnectError> {
        let entry = self.select(selector)?;
        let Some(pty) = pty else {
            return Ok(());
        };
        if !entry.pty {
            return Err(ConnectError::invalid_argument(format!(
                "process {} has no PTY to resize",
                entry.pid
            )));
        }
        let master = match &*entry.input() {
            InputState::Open(master) => master.clone(),
            _ => return Err(not_found(entry.pid)),
        };
        spawn::set_winsize(master.get_ref(), win_size(&pty)).map_err(|err| {
            ConnectError::internal(format!(
                "error resizing tty of process {}: {err}",
                entry.pid
            ))
        })
    }

    /// Sends `signal` to the selected process.
    pub fn send_signal(
        &self,
        selector: Option<ProcessSelector>,
        signal: i32,
    ) -> Result<(), ConnectError> {
        let pid = self.select(selector)?.pid;
        let sig = match Signal::try_from(signal) {
            Ok(Signal::Sigkill) => Sig::KILL,
            Ok(Signal::Sigterm) => Sig::TERM,
            Ok(Signal::Unspecified) | Err(_) => {
                return Err(ConnectError::unimplemented(format!(
                    "invalid signal: {signal}; send SIGNAL_SIGTERM or SIGNAL_SIGKILL"
                )))
            }
        };
        let pid_t = i32::try_from(pid).map_err(|_| not_found(pid))?;
        // Ok(false) means it exited in the meantime, which is what the caller wanted anyway.
        self.inner
            .reaper
            .signal(pid_t, sig.as_raw())
            .map(drop)
            .map_err(|err| ConnectError::internal(format!("error sending signal: {err}")))
    }

    /// The running process `selector` names.
    fn select(&self, selector: Option<ProcessSelector>) -> Result<Arc<Entry>, ConnectError> {
        let selector = Selector::parse(selector)?;
        selector
            .running(&self.table())
            .ok_or_else(|| selector.not_found())
    }

    /// Kills every process the agent started, with its process group; used on shutdown.
    pub fn kill_all(&self) {
        self.inner.reaper.signal_all_groups(Sig::KILL);
    }
}

/// A validated `ProcessSelector`.
enum Selector {
    Pid(u32),
    Tag(String),
}

impl Selector {
    fn parse(selector: Option<ProcessSelector>) -> Result<Self, ConnectError> {
        match selector.and_then(|s| s.selector) {
            Some(wire::Selector::Pid(pid)) => Ok(Selector::Pid(pid)),
            Some(wire::Selector::Tag(tag)) => Ok(Selector::Tag(tag)),
            None => Err(ConnectError::invalid_argument(
                "the process selector names neither a pid nor a tag",
            )),
        }
    }

    fn running(&self, table: &Table) -> Option<Arc<Entry>> {
        match self {
            Selector::Pid(pid) => table.running.get(pid).cloned(),
            // Tags are not required to be unique; the oldest process (lowest pid) wins, so the
            // answer is at least stable.
            Selector::Tag(tag) => table
                .running
                .values()
                .filter(|e| e.tag.as_deref() == Some(tag.as_str()))
                .min_by_key(|e| e.pid)
                .cloned(),
        }
    }

    fn finished<'t>(&self, table: &'t Table) -> Option<(u32, &'t Finished)> {
        let fresh = |f: &Finished| f.at.elapsed() < FINISHED_RETENTION;
        match self {
            Selector::Pid(pid) => table
                .finished
                .get(pid)
                .filter(|f| fresh(f))
                .map(|f| (*pid, f)),
            // The most recent end with that tag.
            Selector::Tag(tag) => table
                .finished
                .iter()
                .filter(|(_, f)| fresh(f) && f.tag.as_deref() == Some(tag.as_str()))
                .max_by_key(|(_, f)| f.at)
                .map(|(pid, f)| (*pid, f)),
        }
    }

    fn not_found(&self) -> ConnectError {
        match self {
            Selector::Pid(pid) => not_found(*pid),
            Selector::Tag(tag) => {
                ConnectError::not_found(format!("process with tag {tag} not found"))
            }
        }
    }
}

/// A requested terminal size; absent dimensions are 0 (proto3 defaults), and values beyond what
/// the kernel stores saturate.
fn win_size(pty: &Pty) -> WinSize {
    let size = pty.size.unwrap_or_default();
    let clamp = |n: u32| u16::try_from(n).unwrap_or(u16::MAX);
    WinSize {
        cols: clamp(size.cols),
        rows: clamp(size.rows),
    }
}

/// The end event for an exit status, in envd's terms.
fn end_event(status: ExitStatus) -> EndEvent {
    let text = status.describe();
    EndEvent {
        exit_code: status.exit_code(),
        exited: status.exited(),
        error: (!status.success()).then(|| text.clone()),
        status: text,
    }
}

/// Resolves a requested working directory: absent means home, `~` and relative paths are taken
/// from home, and the result must exist.
fn resolve_cwd(requested: Option<&str>, user: &User) -> Result<PathBuf, ConnectError> {
    let requested = requested.unwrap_or("");
    let path = if requested.is_empty() {
        crate::users::default_workdir()
            .filter(|w| w.is_dir())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| user.home.clone())
    } else if let Some(rest) = requested.strip_prefix('~') {
        if !(rest.is_empty() || rest.starts_with('/')) {
            return Err(ConnectError::invalid_argument(format!(
                "cannot expand '{requested}': only '~' and '~/...' (the user's own home) are supported"
            )));
        }
        user.home.join(rest.trim_start_matches('/'))
    } else {
        user.home.join(requested)
    };
    let path = lexically_clean(&path);
    if std::fs::metadata(&path).is_err() {
        return Err(ConnectError::invalid_argument(format!(
            "cwd '{}' does not exist",
            path.display()
        )));
    }
    Ok(path)
}

/// Resolves `.` and `..` without touching the filesystem (like Go's `filepath.Clean`).
fn lexically_clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for part in path.components() {
        match part {
            Component::Normal(p) => out.push(p),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(home: &str) -> User {
        User {
            name: "u".into(),
            uid: 1,
            gid: 1,
            home: home.into(),
            groups: vec![1],
        }
    }

    fn finished(at: Instant, tag: Option<&str>) -> Finished {
        Finished {
            tag: tag.map(str::to_owned),
            end: EndEvent {
                exit_code: 0,
                exited: true,
                status: "exit status 0".into(),
                error: None,
            },
            at,
        }
    }

    #[test]
    fn finished_processes_are_bounded_in_number_and_age() {
        let mut table = Table::default();
        let now = Instant::now();
        for pid in 0..FINISHED_MAX as u32 + 10 {
            table.remember(pid, finished(now, None));
        }
        assert_eq!(table.finished.len(), FINISHED_MAX);
        // An end older than the retention is dropped at the next insert and never selected.
        if let Some(long_ago) = now.checked_sub(FINISHED_RETENTION + Duration::from_secs(1)) {
            let mut table = Table::default();
            table.remember(1, finished(long_ago, Some("t")));
            assert!(Selector::Pid(1).finished(&table).is_none());
            assert!(Selector::Tag("t".into()).finished(&table).is_none());
            table.remember(2, finished(now, Some("t")));
            assert_eq!(table.finished.len(), 1);
            assert_eq!(
                Selector::Tag("t".into())
                    .finished(&table)
                    .map(|(pid, _)| pid),
                Some(2)
            );
        }
    }

    #[test]
    fn terminal_sizes_default_to_zero_and_saturate() {
        let pty = |cols, rows| Pty {
            size: Some(wire::PtySize { cols, rows }),
        };
        assert_eq!(win_size(&pty(80, 24)), WinSize { cols: 80, rows: 24 });
        assert_eq!(
            win_size(&pty(1 << 20, 0)),
            WinSize {
                cols: u16::MAX,
                rows: 0
            }
        );
        assert_eq!(win_size(&Pty::default()), WinSize { cols: 0, rows: 0 });
    }

    #[test]
    fn cwd_defaults_to_home_and_resolves_relative_and_tilde_paths() {
        let u = user("/tmp");
        assert_eq!(resolve_cwd(None, &u).unwrap(), PathBuf::from("/tmp"));
        assert_eq!(resolve_cwd(Some(""), &u).unwrap(), PathBuf::from("/tmp"));
        assert_eq!(resolve_cwd(Some("~"), &u).unwrap(), PathBuf::from("/tmp"));
        assert_eq!(resolve_cwd(Some(".."), &u).unwrap(), PathBuf::from("/"));
        assert_eq!(
            resolve_cwd(Some("/usr/../etc"), &u).unwrap(),
            PathBuf::from("/etc")
        );
        let missing = resolve_cwd(Some("/no/such/dir"), &u).unwrap_err();
        assert_eq!(missing.code, crate::connect::Code::InvalidArgument);
        assert!(missing.message.contains("/no/such/dir"));
        assert!(resolve_cwd(Some("~root"), &u).is_err());
    }
}
