//! The code interpreter (E2B's port 49999): stateful code contexts, each backed by one Jupyter
//! kernel that the agent spawns and drives over ZeroMQ itself; no Jupyter Server runs.
//!
//! [`InterpreterService`] owns the contexts and knows nothing of HTTP; [`http`] adapts it to
//! E2B's routes and NDJSON stream; [`kernel`] owns one kernel process; [`execution`] runs one
//! `/execute` request; [`language`] maps languages to kernel specs and env snippets.

pub mod execution;
pub mod http;
pub mod kernel;
pub mod language;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use hutch_contracts::agent::{KernelAdopt, KernelPlan};
use hutch_kernel::KernelSpec;

use crate::config::Options;
use crate::identity::Identity;
use crate::reaper::Reaper;
use crate::users::{UserDb, UserError, DEFAULT_USER};
use kernel::{Kernel, Launch, Prepared, StartError, StopReason};

/// Where E2B clients expect the code interpreter.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(
    IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    hutch_contracts::agent::CODE_INTERPRETER_PORT,
);

/// The working directory of a context that names none, when the user's home is unknown.
pub const DEFAULT_CWD: &str = "/home/user";

/// Where kernels' socket directories live inside a sandbox.
pub const SANDBOX_RUNTIME_DIR: &str = "/run/hutch/kernels";

/// `PATH` for kernels when the agent itself was started without one.
const FALLBACK_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Languages whose default context exists from the start, as on E2B (its clients list
/// contexts and expect both). Only Python's kernel is started eagerly; the others start on
/// first use, so an idle sandbox pays for one kernel.
const EAGER_DEFAULTS: [&str; 2] = ["python", "javascript"];

/// Why a request to the interpreter failed.
#[derive(Debug, thiserror::Error)]
pub enum InterpreterError {
    /// No context has that id.
    #[error("Context {0} not found")]
    ContextNotFound(String),
    /// No installed kernel spec runs the language.
    #[error("No kernel for language '{language}' is installed in this sandbox (installed kernels: {installed}); searched {searched}")]
    NoKernel {
        /// The language asked for (normalized).
        language: String,
        /// `name (language)` of every spec found.
        installed: String,
        /// The directories searched.
        searched: String,
    },
    /// The sandbox user the kernels run as cannot be looked up.
    #[error("cannot run kernels as '{DEFAULT_USER}': {0}")]
    User(#[from] UserError),
    /// The kernel could not be started.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The task doing the work panicked (a bug).
    #[error("the interpreter's task failed: {0}")]
    Task(String),
}

/// Why the server's hand-in of the default Python kernel ([`InterpreterService::prepare_kernel`],
/// [`InterpreterService::adopt_kernel`]) failed.
#[derive(Debug, thiserror::Error)]
pub enum HandInError {
    /// The default Python context has a running kernel, or one is being started.
    #[error(
        "the default python context has a kernel already (running or starting); nothing to hand in"
    )]
    HasKernel,
    /// A plan was handed out and not adopted yet.
    #[error("kernel plan {0} is pending already; adopt it first")]
    Pending(String),
    /// No pending plan has the id.
    #[error("no kernel plan {0:?} is pending (adopt the id the last prepare returned, once)")]
    UnknownPlan(String),
    /// The pid cannot be a kernel started for the plan.
    #[error(
        "pid {0} cannot be the kernel: give the pid of the process the plan was carried out by"
    )]
    BadPid(i32),
    /// The context changed while the plan was carried out; the process was killed.
    #[error("the default python context {0} while its kernel plan was carried out; the process was killed")]
    Superseded(&'static str),
    /// Looking up, preparing or connecting the kernel failed.
    #[error(transparent)]
    Interpreter(#[from] InterpreterError),
}

/// A [`KernelPlan`] handed to the server and not adopted yet.
struct Pending {
    id: String,
    context: Arc<Context>,
    prepared: Prepared,
    log: kernel::LogPipe,
}

/// Settings of the interpreter, from the agent's command line and host configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Kernel spec directories, searched in order (the first that has a name wins).
    pub kernel_dirs: Vec<PathBuf>,
    /// Where each kernel's private socket directory is created.
    pub runtime_dir: PathBuf,
    /// The sandbox's users.
    pub users: UserDb,
    /// The sandbox's environment variables (which every kernel gets) and access token.
    pub identity: Identity,
    /// The server hands the default Python kernel in ([`InterpreterService::prepare_kernel`]),
    /// so it is not started with the default contexts.
    pub kernel_from_server: bool,
}

/// A code context: one kernel's worth of state, in one language and working directory.
#[derive(Debug)]
pub struct Context {
    /// Its id (UUID-shaped).
    pub id: String,
    /// Its language, normalized (`python`, `javascript`, ...).
    pub language: String,
    /// Its working directory, as reported to clients.
    pub cwd: String,
    spec: KernelSpec,
    /// The kernel, once started. Held while starting, so concurrent users wait for one kernel.
    kernel: tokio::sync::Mutex<Option<Arc<Kernel>>>,
    /// Held by the running execution: executions in one context run one at a time, in order.
    turn: Arc<tokio::sync::Mutex<()>>,
    removed: AtomicBool,
}

impl Context {
    /// The `{"id","language","cwd"}` object clients receive.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"id": self.id, "language": self.language, "cwd": self.cwd})
    }
}

/// The interpreter: contexts, their kernels, and the default context of each language.
#[derive(Clone)]
pub struct InterpreterService {
    inner: Arc<Inner>,
}

struct Inner {
    reaper: Reaper,
    settings: Settings,
    agent_path: String,
    /// In creation order, which is the order clients list them in.
    contexts: Mutex<Vec<Arc<Context>>>,
    /// Language → id of its default context. An async lock: held while a default is created,
    /// so two first requests in one language share one context.
    defaults: tokio::sync::Mutex<HashMap<String, String>>,
    /// The kernel plan the server is carrying out, if any.
    pending: Mutex<Option<Pending>>,
}

impl InterpreterService {
    /// A service spawning kernels through `reaper`, configured by `settings`.
    pub fn new(reaper: Reaper, settings: Settings) -> Self {
        let agent_path = std::env::var("PATH").unwrap_or_else(|_| FALLBACK_PATH.to_owned());
        Self {
            inner: Arc::new(Inner {
                reaper,
                settings,
                agent_path,
                contexts: Mutex::new(Vec::new()),
                defaults: tokio::sync::Mutex::new(HashMap::new()),
                pending: Mutex::new(None),
            }),
        }
    }

    fn contexts(&self) -> MutexGuard<'_, Vec<Arc<Context>>> {
        // Every critical section is a single push, remove or read.
        self.inner
            .contexts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Every context, oldest first, the default ones included.
    pub async fn list(&self) -> Vec<Arc<Context>> {
        // Kernels installed after the agent started get their default context now.
        self.start_defaults().await;
        self.contexts().clone()
    }

    /// The context with `id`.
    pub fn get(&self, id: &str) -> Result<Arc<Context>, InterpreterError> {
        self.contexts()
            .iter()
            .find(|c| c.id == id)
            .cloned()
            .ok_or_else(|| InterpreterError::ContextNotFound(id.to_owned()))
    }

    /// Creates a context and starts its kernel; an error leaves no context behind.
    pub async fn create(
        &self,
        language: Option<&str>,
        cwd: Option<&str>,
    ) -> Result<Arc<Context>, InterpreterError> {
        let context = self.register(&language::normalize(language), cwd)?;
        if let Err(err) = self.kernel(&context).await {
            // Nobody else knows the id yet, so it is still there to remove.
            let _ = self.unregister(&context.id);
            return Err(err);
        }
        Ok(context)
    }

    /// The default context of `language` (normalized), created (without a kernel yet) on first
    /// use, and again if it was removed.
    pub async fn default_context(&self, language: &str) -> Result<Arc<Context>, InterpreterError> {
        let mut defaults = self.inner.defaults.lock().await;
        if let Some(context) = defaults.get(language).and_then(|id| self.get(id).ok()) {
            return Ok(context);
        }
        let context = self.register(language, None)?;
        defaults.insert(language.to_owned(), context.id.clone());
        Ok(context)
    }

    /// Registers the default contexts E2B clients expect to find, and starts the Python
    /// kernel in the background so the first `run_code` does not wait for it (unless the
    /// server hands that kernel in).
    ///
    /// A language whose default context exists, or existed and was removed by a client, is
    /// left alone: only its next use creates a new one.
    pub async fn start_defaults(&self) {
        for language in EAGER_DEFAULTS {
            if self.inner.defaults.lock().await.contains_key(language) {
                continue;
            }
            match self.default_context(language).await {
                Ok(context)
                    if language == language::DEFAULT_LANGUAGE
                        && !self.inner.settings.kernel_from_server =>
                {
                    let service = self.clone();
                    tokio::spawn(async move {
                        if let Err(err) = service.kernel(&context).await {
                            tracing::warn!(error = %err, "cannot start the default python kernel; the first execution will try again");
                        }
                    });
                }
                Ok(_) => {}
                Err(err) => tracing::debug!(language, error = %err, "no default context"),
            }
        }
    }

    /// Makes the default Python kernel ready for a first user: started, and past a first
    /// (silent) execution. A sandbox waiting in a warm pool is ready once this returns; in
    /// a template without a Python kernel there is nothing to warm.
    pub async fn warm(&self) -> Result<(), InterpreterError> {
        let context = match self.default_context(language::DEFAULT_LANGUAGE).await {
            Ok(context) => context,
            Err(InterpreterError::NoKernel { .. }) => return Ok(()),
            Err(err) => return Err(err),
        };
        let _turn = context.turn.lock().await;
        let kernel = self.kernel(&context).await?;
        kernel.run_hidden("None", "warming the kernel").await;
        Ok(())
    }

    /// Gives every running kernel the sandbox's new variables `new` in place of `old`: what
    /// a claimed sandbox's kernels would have had, had they started after the claim. Kernels
    /// started later read the variables at start.
    pub async fn apply_env(&self, old: &BTreeMap<String, String>, new: &BTreeMap<String, String>) {
        let contexts = self.list().await;
        for context in contexts {
            let Some(dialect) = language::Dialect::of(&context.language) else {
                continue;
            };
            let _turn = context.turn.lock().await;
            let kernel = context.kernel.lock().await.clone();
            let Some(kernel) = kernel.filter(|k| !k.has_exited()) else {
                continue;
            };
            let mut statements: Vec<String> = new
                .iter()
                .filter(|(k, v)| old.get(*k) != Some(*v))
                .map(|(k, v)| dialect.set(k, v))
                .collect();
            statements.extend(
                old.keys()
                    .filter(|k| !new.contains_key(*k))
                    .map(|k| dialect.unset(k)),
            );
            if !statements.is_empty() {
                kernel
                    .run_hidden(&statements.join("\n"), "applying the sandbox's variables")
                    .await;
            }
        }
    }

    /// Restarts the context's kernel: its state is lost, a running execution ends with an
    /// error, and a fresh kernel is ready when this returns.
    pub async fn restart(&self, id: &str) -> Result<(), InterpreterError> {
        let context = self.get(id)?;
        let mut slot = context.kernel.lock().await;
        if let Some(old) = slot.take() {
            old.stop(StopReason::Restarted).await;
        }
        *slot = Some(self.start_kernel(&context).await?);
        Ok(())
    }

    /// Removes the context and stops its kernel.
    pub async fn remove(&self, id: &str) -> Result<(), InterpreterError> {
        let context = self.unregister(id)?;
        let mut slot = context.kernel.lock().await;
        if let Some(kernel) = slot.take() {
            kernel.stop(StopReason::Removed).await;
        }
        Ok(())
    }

    /// The context's running kernel, started now if it has none or the last one died.
    pub async fn kernel(&self, context: &Context) -> Result<Arc<Kernel>, InterpreterError> {
        let mut slot = context.kernel.lock().await;
        if context.removed.load(Ordering::SeqCst) {
            return Err(InterpreterError::ContextNotFound(context.id.clone()));
        }
        if let Some(kernel) = slot.as_ref().filter(|k| !k.has_exited()) {
            return Ok(Arc::clone(kernel));
        }
        if slot.is_some() {
            tracing::info!(context = %context.id, "the context's kernel died; starting a new one");
        }
        let kernel = self.start_kernel(context).await?;
        *slot = Some(Arc::clone(&kernel));
        Ok(kernel)
    }

    /// What starting `context`'s kernel takes: its user, directory and environment (the
    /// sandbox's variables over the user's basics).
    fn launch_for(&self, context: &Context) -> Result<Launch, InterpreterError> {
        let settings = &self.inner.settings;
        let user = settings.users.lookup(DEFAULT_USER)?;
        let mut env = BTreeMap::from([
            ("PATH".to_owned(), self.inner.agent_path.clone()),
            ("HOME".to_owned(), user.home.to_string_lossy().into_owned()),
            ("USER".to_owned(), user.name.clone()),
            ("LOGNAME".to_owned(), user.name.clone()),
        ]);
        env.extend(
            settings
                .identity
                .env()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        let cwd = resolve_cwd(&context.cwd, &user.home);
        Ok(Launch {
            spec: context.spec.clone(),
            language: context.language.clone(),
            user,
            cwd,
            env,
            runtime_dir: settings.runtime_dir.clone(),
        })
    }

    async fn start_kernel(&self, context: &Context) -> Result<Arc<Kernel>, InterpreterError> {
        let launch = self.launch_for(context)?;
        let sandbox_env = self.inner.settings.identity.env();
        let started = std::time::Instant::now();
        let kernel = Kernel::start(&self.inner.reaper, launch).await?;
        // Java has no settable environment; E2B gives its kernels the sandbox's variables
        // as system properties, which is what its clients read.
        if language::Dialect::of(&context.language) == Some(language::Dialect::Java)
            && !sandbox_env.is_empty()
        {
            let properties = language::Dialect::Java.set_all(sandbox_env.iter());
            kernel
                .run_hidden(&properties, "setting sandbox variables as properties")
                .await;
        }
        tracing::info!(
            context = %context.id,
            language = %context.language,
            pid = kernel.pid(),
            ready_ms = started.elapsed().as_millis() as u64,
            adopted = false,
            "kernel ready"
        );
        Ok(kernel)
    }

    fn pending(&self) -> MutexGuard<'_, Option<Pending>> {
        // Only ever assigned whole; a poisoned value is still a valid one.
        self.inner.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Prepares what the default Python context's kernel needs (socket directory,
    /// connection file, an empty log file, all the kernel user's) and returns how to start
    /// it, for the server to carry out and then hand in with [`Self::adopt_kernel`].
    pub async fn prepare_kernel(&self) -> Result<KernelPlan, HandInError> {
        let context = self.default_context(language::DEFAULT_LANGUAGE).await?;
        // A kernel being started holds the slot.
        let slot = context
            .kernel
            .try_lock()
            .map_err(|_| HandInError::HasKernel)?;
        if slot.as_ref().is_some_and(|k| !k.has_exited()) {
            return Err(HandInError::HasKernel);
        }
        let mut pending = self.pending();
        if let Some(plan) = pending.as_ref() {
            return Err(HandInError::Pending(plan.id.clone()));
        }
        let launch = self.launch_for(&context)?;
        let prepared = Prepared::new(&launch).map_err(InterpreterError::from)?;
        let (log_file, log) = match prepared.create_log_pipe(&launch.user) {
            Ok(made) => made,
            Err(err) => {
                prepared.discard();
                return Err(InterpreterError::from(err).into());
            }
        };
        // A spawned kernel falls back to the home when it cannot start in the context's
        // directory; whoever carries out the plan cannot, so the fallback is decided here.
        let cwd = if launch.cwd.is_dir() {
            launch.cwd.clone()
        } else {
            tracing::warn!(cwd = %launch.cwd.display(), home = %launch.user.home.display(), "the context's directory is missing; the kernel plan starts in the user's home");
            launch.user.home.clone()
        };
        let command = &prepared.command;
        let plan = KernelPlan {
            id: hutch_kernel::message::new_id(),
            argv: std::iter::once(command.program.clone())
                .chain(command.args.iter().cloned())
                .collect(),
            env: command.env.iter().cloned().collect(),
            cwd: cwd.to_string_lossy().into_owned(),
            uid: launch.user.uid,
            gid: launch.user.gid,
            groups: launch.user.groups.clone(),
            connection_file: prepared.conn_file.to_string_lossy().into_owned(),
            log_file: log_file.to_string_lossy().into_owned(),
        };
        tracing::info!(plan = %plan.id, context = %context.id, dir = %prepared.dir.display(), "kernel plan prepared");
        *pending = Some(Pending {
            id: plan.id.clone(),
            context: Arc::clone(&context),
            prepared,
            log,
        });
        Ok(plan)
    }

    /// Takes on `adopt.pid`, the process that carried out the pending plan `adopt.id`, as
    /// the default Python context's kernel, and runs a first silent execution as
    /// [`Self::warm`] does. On failure the process is killed and the context has no kernel.
    pub async fn adopt_kernel(&self, adopt: &KernelAdopt) -> Result<(), HandInError> {
        // On a task of its own: a caller that goes away must not leave a process half adopted.
        let service = self.clone();
        let adopt = adopt.clone();
        tokio::spawn(async move { service.adopt_now(&adopt).await })
            .await
            .map_err(|e| InterpreterError::Task(e.to_string()))?
    }

    async fn adopt_now(&self, adopt: &KernelAdopt) -> Result<(), HandInError> {
        let pid = match u32::try_from(adopt.pid) {
            // 1 is the agent itself inside a sandbox.
            Ok(pid) if pid > 1 && pid != std::process::id() => pid,
            _ => return Err(HandInError::BadPid(adopt.pid)),
        };
        let Pending {
            context,
            prepared,
            log,
            ..
        } = {
            let mut pending = self.pending();
            match pending.take() {
                Some(plan) if plan.id == adopt.id => plan,
                other => {
                    *pending = other;
                    return Err(HandInError::UnknownPlan(adopt.id.clone()));
                }
            }
        };
        let started = std::time::Instant::now();
        let reaper = &self.inner.reaper;
        let _turn = context.turn.lock().await;
        let mut slot = context.kernel.lock().await;
        let superseded = if context.removed.load(Ordering::SeqCst) {
            Some("was removed")
        } else if slot.as_ref().is_some_and(|k| !k.has_exited()) {
            Some("started a kernel of its own")
        } else {
            None
        };
        if let Some(what) = superseded {
            kernel::abandon(reaper, pid);
            prepared.discard();
            return Err(HandInError::Superseded(what));
        }
        let kernel = Kernel::adopt(reaper, prepared, pid, log)
            .await
            .map_err(InterpreterError::from)?;
        *slot = Some(Arc::clone(&kernel));
        drop(slot);
        tracing::info!(
            context = %context.id,
            language = %context.language,
            pid,
            ready_ms = started.elapsed().as_millis() as u64,
            adopted = true,
            "kernel ready"
        );
        kernel.run_hidden("None", "warming the kernel").await;
        Ok(())
    }

    fn register(
        &self,
        language: &str,
        cwd: Option<&str>,
    ) -> Result<Arc<Context>, InterpreterError> {
        let spec = self.spec_for(language)?;
        let cwd = match cwd.map(str::trim) {
            Some(cwd) if !cwd.is_empty() => cwd.to_owned(),
            // The template's WORKDIR, else the user's home (E2B's /home/user).
            _ => match crate::users::default_workdir() {
                Some(w) => w.to_string_lossy().into_owned(),
                None => self
                    .inner
                    .settings
                    .users
                    .lookup(DEFAULT_USER)
                    .map(|u| u.home.to_string_lossy().into_owned())
                    .unwrap_or_else(|_| DEFAULT_CWD.to_owned()),
            },
        };
        let context = Arc::new(Context {
            id: hutch_kernel::message::new_id(),
            language: language.to_owned(),
            cwd,
            spec,
            kernel: tokio::sync::Mutex::new(None),
            turn: Arc::new(tokio::sync::Mutex::new(())),
            removed: AtomicBool::new(false),
        });
        self.contexts().push(Arc::clone(&context));
        tracing::info!(context = %context.id, language, kernel = %context.spec.name, cwd = %context.cwd, "context created");
        Ok(context)
    }

    fn unregister(&self, id: &str) -> Result<Arc<Context>, InterpreterError> {
        let mut contexts = self.contexts();
        let index = contexts
            .iter()
            .position(|c| c.id == id)
            .ok_or_else(|| InterpreterError::ContextNotFound(id.to_owned()))?;
        let context = contexts.remove(index);
        context.removed.store(true, Ordering::SeqCst);
        Ok(context)
    }

    /// The kernel spec for `language`, read afresh so kernels installed after start count.
    fn spec_for(&self, language: &str) -> Result<KernelSpec, InterpreterError> {
        let dirs = &self.inner.settings.kernel_dirs;
        let specs = hutch_kernel::find_kernel_specs(dirs);
        language::select_spec(language, &specs)
            .cloned()
            .ok_or_else(|| InterpreterError::NoKernel {
                language: language.to_owned(),
                installed: if specs.is_empty() {
                    "none".to_owned()
                } else {
                    specs
                        .iter()
                        .map(|s| format!("{} ({})", s.name, s.language))
                        .collect::<Vec<_>>()
                        .join(", ")
                },
                searched: dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

/// The directory a kernel starts in: a relative context cwd is taken from the user's home.
fn resolve_cwd(cwd: &str, home: &Path) -> PathBuf {
    let path = Path::new(cwd);
    if path.is_absolute() {
        path.to_owned()
    } else {
        home.join(path)
    }
}

/// The running interpreter; removes its scratch directory when dropped (outside a sandbox).
pub struct Running {
    scratch: Option<PathBuf>,
    /// The interpreter, for the agent's own routes (warming, claims).
    pub service: InterpreterService,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(dir) = &self.scratch {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Starts the interpreter if it should run: in a sandbox on [`DEFAULT_LISTEN`], elsewhere
/// only when `--interpreter-listen` asks. Failing to listen is logged, never fatal: the
/// agent's own service must stay up.
///
/// `kernel_from_server`: the server hands the default Python kernel in, so it is not
/// started here.
pub async fn launch(
    reaper: &Reaper,
    options: &Options,
    identity: &Identity,
    kernel_from_server: bool,
) -> Option<Running> {
    let sandbox = crate::init::in_sandbox();
    let listen: SocketAddr = match options.interpreter_listen {
        Some(addr) => addr,
        None if sandbox => DEFAULT_LISTEN,
        None => return None,
    };
    let (runtime_dir, scratch) = if sandbox {
        (PathBuf::from(SANDBOX_RUNTIME_DIR), None)
    } else {
        let dir = std::env::temp_dir().join(format!("hutch-agent-{}-kernels", std::process::id()));
        (dir.clone(), Some(dir))
    };
    let settings = Settings {
        kernel_dirs: hutch_kernel::kernel_dirs(&options.kernel_dirs),
        runtime_dir,
        users: UserDb::new(&options.passwd, &options.group),
        identity: identity.clone(),
        kernel_from_server,
    };
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(err) => {
            tracing::warn!(addr = %listen, error = %err, "cannot listen for the code interpreter; it is disabled");
            return None;
        }
    };
    let service = InterpreterService::new(reaper.clone(), settings);
    let router = http::router(service.clone(), identity.clone());
    tokio::spawn(async move {
        if let Err(err) = axum::serve(hutch_contracts::net::no_delay(listener), router).await {
            tracing::error!(error = %err, "the code interpreter stopped serving");
        }
    });
    tracing::info!(addr = %listen, "code interpreter listening");
    service.start_defaults().await;
    Some(Running { scratch, service })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_cwd_is_under_home() {
        let home = Path::new("/home/user");
        assert_eq!(resolve_cwd("/tmp", home), PathBuf::from("/tmp"));
        assert_eq!(resolve_cwd("work", home), PathBuf::from("/home/user/work"));
    }
}
