//! The process service (`process.Process`): starting commands, listing and signalling them.
//!
//! [`ProcessService`] holds the policy and the table of running processes and knows nothing of
//! HTTP; [`rpc`] adapts it to Connect.

pub mod output;
pub mod rpc;
pub mod spawn;
pub mod wire;

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};
use std::process::ChildStdin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::connect::ConnectError;
use crate::reaper::{ExitStatus, ExitWaiter, Reaper};
use crate::users::{User, UserDb, UserError};
use output::{EventHub, Stream};
use spawn::{SpawnSpec, Spawned};
use wire::{EndEvent, ProcessConfig, ProcessEvent, ProcessInfo, ProcessSelector, Signal};

/// `PATH` for processes when the agent itself was started without one.
const FALLBACK_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A process started through the agent and not yet ended.
#[derive(Debug)]
struct Entry {
    config: ProcessConfig,
    tag: Option<String>,
    hub: Arc<EventHub>,
    /// Held so the process sees no end of file on stdin until it exits; `SendInput` and
    /// `CloseStdin` will write to and close it.
    stdin: Mutex<Option<ChildStdin>>,
}

/// What a successful start hands to the caller.
#[derive(Debug)]
pub struct Started {
    /// The new process's pid.
    pub pid: u32,
    /// Every event after `start`, ending with `end`; `None` after that.
    pub events: mpsc::Receiver<ProcessEvent>,
    /// When the process gets killed if it is still running.
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
    sandbox_env: BTreeMap<String, String>,
    agent_path: String,
    table: Mutex<HashMap<u32, Arc<Entry>>>,
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
                table: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn table(&self) -> MutexGuard<'_, HashMap<u32, Arc<Entry>>> {
        // Every critical section is a single map operation, so a poisoned map is still valid.
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
        if request.pty.is_some() {
            return Err(ConnectError::unimplemented(
                "PTY processes are not supported by this agent yet",
            ));
        }
        let cwd = resolve_cwd(config.cwd.as_deref(), &user)?;
        let spec = SpawnSpec {
            env: self.environment(&user, &config.envs),
            cmd: config.cmd.clone(),
            args: config.args.clone(),
            cwd,
            stdin: request.stdin.unwrap_or(true),
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
        let Spawned {
            pid,
            stdin,
            stdout,
            stderr,
            exit,
        } = spawned;

        let hub = EventHub::new();
        // Subscribe before the pumps start so not a byte of output is missed.
        let events = hub
            .subscribe()
            .ok_or_else(|| ConnectError::internal("a new event hub is already closed"))?;
        let entry = Arc::new(Entry {
            config,
            tag: request.tag,
            hub: hub.clone(),
            stdin: Mutex::new(stdin),
        });
        self.table().insert(pid, entry.clone());
        tracing::info!(pid, command = %command_line, "process started");

        // Registering the pipes can only fail if the runtime is shutting down; the process is
        // still supervised so it gets reaped and reported.
        let pipes = [(stdout, Stream::Stdout), (stderr, Stream::Stderr)]
            .into_iter()
            .filter_map(|(fd, stream)| match output::async_pipe(fd) {
                Ok(pipe) => Some((pipe, stream)),
                Err(err) => {
                    tracing::error!(pid, error = %err, ?stream, "cannot watch process output");
                    None
                }
            })
            .collect::<Vec<_>>();
        let deadline = lifetime.map(|limit| Instant::now() + limit);
        tokio::spawn(self.clone().supervise(pid, entry, exit, pipes, deadline));
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
        pid: u32,
        entry: Arc<Entry>,
        mut exit: ExitWaiter,
        pipes: Vec<(tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>, Stream)>,
        deadline: Option<Instant>,
    ) {
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
                    self.kill(pid, libc::SIGKILL);
                    exit.await
                }
            },
        };
        // Nothing can be written to a process that is gone.
        entry.stdin.lock().unwrap_or_else(|e| e.into_inner()).take();
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
        // Out of the table before the end event goes out, so a client that lists processes right
        // after seeing the end does not see this one.
        self.table().remove(&pid);
        entry.hub.publish(ProcessEvent::End(end)).await;
        entry.hub.close();
    }

    fn kill(&self, pid: u32, sig: libc::c_int) {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return;
        };
        if let Err(err) = self.inner.reaper.signal(pid, sig) {
            tracing::warn!(pid, sig, error = %err, "signalling process failed");
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
            .iter()
            .map(|(pid, entry)| ProcessInfo {
                config: entry.config.clone(),
                pid: *pid,
                tag: entry.tag.clone(),
            })
            .collect();
        list.sort_by_key(|p| p.pid);
        list
    }

    /// Sends `signal` to the selected process.
    pub fn send_signal(
        &self,
        selector: Option<ProcessSelector>,
        signal: Signal,
    ) -> Result<(), ConnectError> {
        let pid = self.select(selector)?;
        let sig = match signal {
            Signal::Kill => libc::SIGKILL,
            Signal::Term => libc::SIGTERM,
            Signal::Unspecified(n) => {
                return Err(ConnectError::unimplemented(format!(
                    "invalid signal: {n}; send SIGNAL_SIGTERM or SIGNAL_SIGKILL"
                )))
            }
        };
        let pid_t = libc::pid_t::try_from(pid)
            .map_err(|_| ConnectError::not_found(format!("process with pid {pid} not found")))?;
        // Ok(false) means it exited in the meantime, which is what the caller wanted anyway.
        self.inner
            .reaper
            .signal(pid_t, sig)
            .map(drop)
            .map_err(|err| ConnectError::internal(format!("error sending signal: {err}")))
    }

    /// The pid of the running process `selector` names.
    fn select(&self, selector: Option<ProcessSelector>) -> Result<u32, ConnectError> {
        let selector = selector.unwrap_or_default();
        let table = self.table();
        if let Some(pid) = selector.pid {
            return table.contains_key(&pid).then_some(pid).ok_or_else(|| {
                ConnectError::not_found(format!("process with pid {pid} not found"))
            });
        }
        if let Some(tag) = selector.tag {
            return table
                .iter()
                .find(|(_, e)| e.tag.as_deref() == Some(tag.as_str()))
                .map(|(pid, _)| *pid)
                .ok_or_else(|| {
                    ConnectError::not_found(format!("process with tag {tag} not found"))
                });
        }
        Err(ConnectError::invalid_argument(
            "the process selector names neither a pid nor a tag",
        ))
    }

    /// Kills every process the agent started, with its process group; used on shutdown.
    pub fn kill_all(&self) {
        self.inner.reaper.signal_all_groups(libc::SIGKILL);
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
        user.home.clone()
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
