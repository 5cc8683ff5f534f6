//! The process service (`process.Process`): starting commands on pipes or on a pseudo-terminal,
//! attaching to them, feeding them input, resizing their terminal, listing and signalling them.
//!
//! [`ProcessService`] holds the policy and the table of processes and knows nothing of HTTP;
//! [`rpc`] adapts it to Connect.

mod cwd;
mod input;
pub mod output;
pub mod rpc;
pub mod spawn;
mod table;
pub mod wire;

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::connect::ConnectError;
use crate::identity::Identity;
use crate::reaper::{ExitStatus, ExitWaiter, Reaper, Sig};
use crate::users::{User, UserDb, UserError};
use cwd::resolve_cwd;
pub use input::InputTarget;
use output::{EventHub, Stream};
use spawn::{Io, SpawnSpec, Spawned, WinSize};
use table::{not_found, selected, selector_not_found, Entry, Finished, InputState, Table};
use wire::{EndEvent, ProcessEvent, ProcessInfo, ProcessInput, ProcessSelector, Pty, Signal};

/// `PATH` for processes when the agent itself was started without one.
const FALLBACK_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `TERM` of PTY processes whose request and sandbox set none (what the SDKs send anyway).
const DEFAULT_TERM: &str = "xterm-256color";

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

/// The process service.
#[derive(Clone)]
pub struct ProcessService {
    inner: Arc<Inner>,
}

struct Inner {
    reaper: Reaper,
    users: UserDb,
    identity: Identity,
    agent_path: String,
    table: Mutex<Table>,
}

impl ProcessService {
    /// A service that spawns through `reaper`, resolves users in `users` and gives every process
    /// the sandbox's variables (`identity`).
    pub fn new(reaper: Reaper, users: UserDb, identity: Identity) -> Self {
        let agent_path = std::env::var("PATH").unwrap_or_else(|_| FALLBACK_PATH.to_owned());
        Self {
            inner: Arc::new(Inner {
                reaper,
                users,
                identity,
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
        env.extend(
            self.inner
                .identity
                .env()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
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
        let selector = selected(selector)?;
        let table = self.table();
        if let Some(entry) = table.running_selected(&selector) {
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
        let (pid, finished) = table
            .finished_selected(&selector)
            .ok_or_else(|| selector_not_found(&selector))?;
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
        let selector = selected(selector)?;
        self.table()
            .running_selected(&selector)
            .ok_or_else(|| selector_not_found(&selector))
    }

    /// Kills every process the agent started, with its process group; used on shutdown.
    pub fn kill_all(&self) {
        self.inner.reaper.signal_all_groups(Sig::KILL);
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

#[cfg(test)]
mod tests;
