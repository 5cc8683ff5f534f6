//! The server's side of zygotes ([`hutch_runtime::zygote`]): one per template whose
//! default Python kernel is an ipykernel, started on first use, spoken to over its
//! `SOCK_SEQPACKET` socket, retired after [`FORKS_PER_ZYGOTE`] forks (forks of one zygote
//! share its hash seed and memory layout) and restarted when it dies.
//!
//! A kernel hand-in ([`Zygotes::fork_kernel`]) goes: the zygote forks a process into the
//! sandbox's namespaces and reports its host pid; the server moves it into the sandbox's
//! cgroup; "go"; the process drops to the sandbox's limits and forks the kernel, which
//! the sandbox's init adopts.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use hutch_contracts::agent::KernelPlan;
use hutch_runtime::spawn::ParentUserNs;
use serde_json::{json, Value};
use tokio::io::unix::AsyncFd;
use tokio::sync::oneshot;

use crate::service::lock;

/// Forks one zygote serves before it is replaced by a fresh one.
pub const FORKS_PER_ZYGOTE: u32 = 256;

/// How long a zygote may take to import the kernel's machinery.
const READY_LIMIT: Duration = Duration::from_secs(60);

/// How long one step of a fork may take.
const STEP_LIMIT: Duration = Duration::from_secs(10);

/// How long a template whose zygote failed to start goes without one.
const RETRY_AFTER: Duration = Duration::from_secs(300);

/// Variables that change how Python starts: a kernel forked from a zygote must have the
/// zygote's values for all of them.
pub fn startup_relevant(name: &str) -> bool {
    name.starts_with("PYTHON") || name.starts_with("LC_") || name == "LANG" || name == "LANGUAGE"
}

/// The startup-relevant part of `env` ([`startup_relevant`]).
pub fn startup_env<'a>(
    env: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Vec<(String, String)> {
    env.into_iter()
        .filter(|(k, _)| startup_relevant(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The Python of a template's `python3` kernel when that kernel is an ipykernel started as
/// `<python> -m ipykernel_launcher ...` with no startup-relevant variables of its own:
/// the kernels a zygote can start. `layers` topmost first.
pub fn zygote_python(layers: &[PathBuf]) -> Option<String> {
    for dir in hutch_kernel::spec::SYSTEM_KERNEL_DIRS {
        for layer in layers {
            let path = layer
                .join(dir.trim_start_matches('/'))
                .join("python3/kernel.json");
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let spec: Value = serde_json::from_str(&text).ok()?;
            let argv: Vec<&str> = spec
                .get("argv")?
                .as_array()?
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let env_ok = spec
                .get("env")
                .and_then(Value::as_object)
                .is_none_or(|env| !env.keys().any(|k| startup_relevant(k)));
            return match argv.as_slice() {
                [python, "-m", "ipykernel_launcher", ..] if env_ok && python.starts_with('/') => {
                    Some((*python).to_owned())
                }
                _ => None,
            };
        }
    }
    None
}

/// The user kernels run as (the agent's default user).
const KERNEL_USER: &str = "user";

/// The variables a kernel gets from its user (`HOME`, `USER`, `LOGNAME`), from the
/// template's `/etc/passwd` (`layers` topmost first); a zygote must run with the same ones
/// (its imports read some of them).
pub fn kernel_user_env(layers: &[PathBuf]) -> Vec<(String, String)> {
    let home = layers
        .iter()
        .find_map(|l| std::fs::read_to_string(l.join("etc/passwd")).ok())
        .and_then(|passwd| {
            passwd.lines().find_map(|line| {
                let fields: Vec<&str> = line.split(':').collect();
                (fields.len() >= 7 && fields[0] == KERNEL_USER).then(|| fields[5].to_owned())
            })
        })
        .unwrap_or_else(|| format!("/home/{KERNEL_USER}"));
    vec![
        ("HOME".into(), home),
        ("LOGNAME".into(), KERNEL_USER.into()),
        ("USER".into(), KERNEL_USER.into()),
    ]
}

/// What a fork needs besides the plan: the limits the sandbox's init has.
#[derive(Debug, Clone)]
pub struct Confinement {
    /// Capabilities dropped from the bounding set.
    pub caps_drop: Vec<u32>,
    /// Seccomp programs, installed in order.
    pub seccomp: Vec<Vec<hutch_sys::seccomp::Instruction>>,
    /// Set `no_new_privs`.
    pub no_new_privs: bool,
}

impl Confinement {
    /// The fields of a fork request that carry it.
    fn to_json(&self) -> Value {
        let programs: Vec<String> = self
            .seccomp
            .iter()
            .map(|p| {
                let mut bytes = Vec::with_capacity(p.len() * 8);
                for i in p {
                    bytes.extend_from_slice(&i.code.to_ne_bytes());
                    bytes.push(i.jt);
                    bytes.push(i.jf);
                    bytes.extend_from_slice(&i.k.to_ne_bytes());
                }
                base64::engine::general_purpose::STANDARD.encode(bytes)
            })
            .collect();
        json!({
            "capsDrop": self.caps_drop,
            "seccomp": programs,
            "noNewPrivs": self.no_new_privs,
        })
    }
}

/// A running zygote and the conversation with it.
pub struct Zygote {
    /// Its host pid and start time: sandboxes nest their user namespace in its.
    pub owner: ParentUserNs,
    /// The template layers it was started from.
    pub layers: Vec<PathBuf>,
    /// The startup-relevant variables it runs with.
    pub env: Vec<(String, String)>,
    socket: AsyncFd<OwnedFd>,
    waiting: Mutex<HashMap<String, oneshot::Sender<Value>>>,
    ready: Mutex<Option<oneshot::Sender<Value>>>,
    dead: AtomicBool,
    /// Notified when the zygote is gone.
    closed: tokio::sync::Notify,
    /// Its fork server (a child of the zygote's; the server reaps it when the zygote is gone).
    fork_server: Mutex<Option<ParentUserNs>>,
    /// Forks asked for (a zygote is retired after [`FORKS_PER_ZYGOTE`]).
    forks: AtomicU32,
    /// Kernels it started.
    kernels: AtomicU32,
}

impl Zygote {
    /// Waits until the zygote is gone (its socket closed).
    pub async fn gone(&self) {
        if self.is_alive() {
            self.closed.notified().await;
        }
    }

    /// The zygote's processes (it and its fork server), to end and reap once it is gone.
    pub fn processes(&self) -> Vec<ParentUserNs> {
        std::iter::once(self.owner)
            .chain(*lock(&self.fork_server))
            .collect()
    }

    /// Whether the zygote still answers.
    pub fn is_alive(&self) -> bool {
        !self.dead.load(Ordering::SeqCst)
    }

    fn send(&self, msg: &Value, fds: &[std::os::fd::BorrowedFd<'_>]) -> Result<(), String> {
        let bytes = serde_json::to_vec(msg).map_err(|e| e.to_string())?;
        // The socket's buffer holds many messages; a full one means a stuck zygote.
        hutch_sys::fd::send_with_fds(self.socket.get_ref(), &bytes, fds)
            .map(drop)
            .map_err(|e| format!("writing to the zygote: {e}"))
    }

    async fn ask(
        &self,
        id: &str,
        msg: Value,
        fds: &[std::os::fd::BorrowedFd<'_>],
    ) -> Result<Value, String> {
        let (tx, rx) = oneshot::channel();
        lock(&self.waiting).insert(id.to_owned(), tx);
        if let Err(e) = self.send(&msg, fds) {
            lock(&self.waiting).remove(id);
            return Err(e);
        }
        let answer = match tokio::time::timeout(STEP_LIMIT, rx).await {
            Ok(Ok(v)) => v,
            Ok(Err(_)) => return Err("the zygote exited".into()),
            Err(_) => {
                lock(&self.waiting).remove(id);
                return Err(format!("the zygote did not answer within {STEP_LIMIT:?}"));
            }
        };
        match answer.get("op").and_then(Value::as_str) {
            Some("failed") => Err(answer
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("the zygote failed")
                .to_owned()),
            _ => Ok(answer),
        }
    }

    /// Reads the zygote's messages until its socket closes, handing each to whoever waits
    /// for its id.
    async fn read_loop(self: Arc<Self>) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match self.socket.readable().await {
                Ok(mut guard) => {
                    match guard.try_io(|s| {
                        hutch_sys::fd::recv_message(s.get_ref().as_fd(), &mut buf)
                            .map_err(std::io::Error::from)
                    }) {
                        Ok(Ok(n)) => n,
                        Ok(Err(_)) => 0,
                        Err(_would_block) => continue,
                    }
                }
                Err(_) => 0,
            };
            if n == 0 {
                break;
            }
            let Ok(msg) = serde_json::from_slice::<Value>(&buf[..n]) else {
                tracing::warn!(pid = self.owner.pid, "unreadable message from a zygote");
                continue;
            };
            let op = msg.get("op").and_then(Value::as_str).unwrap_or_default();
            if op == "ready" || (op == "failed" && lock(&self.ready).is_some()) {
                if let Some(tx) = lock(&self.ready).take() {
                    let _ = tx.send(msg);
                }
                continue;
            }
            let id = msg.get("id").and_then(Value::as_str).unwrap_or_default();
            if let Some(tx) = lock(&self.waiting).remove(id) {
                let _ = tx.send(msg);
            } else if op != "aborted" {
                tracing::debug!(
                    pid = self.owner.pid,
                    op,
                    id,
                    "zygote message nobody waits for"
                );
            }
        }
        self.dead.store(true, Ordering::SeqCst);
        lock(&self.waiting).clear();
        lock(&self.ready).take();
        self.closed.notify_one();
        tracing::info!(pid = self.owner.pid, "zygote gone");
    }

    /// Forks a kernel for `plan` into the sandbox whose init is `init_pid`. `join` moves a
    /// host pid into the sandbox's cgroup. Returns the kernel's pid inside the sandbox.
    pub async fn fork_kernel<F, Fut>(
        &self,
        plan: &KernelPlan,
        init_pid: i32,
        confinement: &Value,
        join: F,
    ) -> Result<i32, String>
    where
        F: FnOnce(i32) -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        self.forks.fetch_add(1, Ordering::SeqCst);
        let pidfd = hutch_sys::fd::pidfd(init_pid)
            .map_err(|e| format!("pidfd of the sandbox's init: {e}"))?;
        let mut msg = confinement.clone();
        msg["op"] = json!("fork");
        msg["id"] = json!(plan.id);
        msg["plan"] = serde_json::to_value(plan).map_err(|e| e.to_string())?;
        let forked = self.ask(&plan.id, msg, &[pidfd.as_fd()]).await?;
        drop(pidfd);
        let host_pid = forked
            .get("hostPid")
            .and_then(Value::as_i64)
            .and_then(|p| i32::try_from(p).ok())
            .filter(|p| *p > 1)
            .ok_or("the zygote reported no pid")?;
        if let Err(e) = join(host_pid).await {
            let _ = self.send(&json!({"op": "abort", "id": plan.id}), &[]);
            return Err(format!("moving the kernel into the sandbox's cgroup: {e}"));
        }
        let started = self
            .ask(&plan.id, json!({"op": "go", "id": plan.id}), &[])
            .await?;
        let pid = started
            .get("nsPid")
            .and_then(Value::as_i64)
            .and_then(|p| i32::try_from(p).ok())
            .filter(|p| *p > 1)
            .ok_or_else(|| "the zygote reported no kernel pid".to_owned())?;
        self.kernels.fetch_add(1, Ordering::SeqCst);
        Ok(pid)
    }
}

enum Slot {
    Starting,
    Running(Arc<Zygote>),
    Failed(Instant),
}

/// Every template's zygote.
pub struct Zygotes {
    /// What a forked kernel takes on in its sandbox, as the fields of a fork request
    /// (encoded once); `None` while zygotes are off.
    confinement: Mutex<Option<Arc<Value>>>,
    slots: Mutex<HashMap<String, Slot>>,
    /// Next host id for a zygote's root (see [`hutch_runtime::zygote::ZygoteRequest::own_id`]).
    next_id: AtomicU32,
    id_first: u32,
    id_span: u32,
    /// Zygotes replaced or gone whose process is to be reaped.
    retired: Mutex<Vec<Arc<Zygote>>>,
}

impl Zygotes {
    /// Zygotes whose roots take host ids from `id_first` on (`id_span` of them, reused in
    /// turn); off until [`Self::enable`].
    pub fn new(id_first: u32, id_span: u32) -> Self {
        Zygotes {
            confinement: Mutex::new(None),
            slots: Mutex::new(HashMap::new()),
            next_id: AtomicU32::new(0),
            id_first,
            id_span: id_span.max(1),
            retired: Mutex::new(Vec::new()),
        }
    }

    /// Whether zygotes are in use at all.
    pub fn enabled(&self) -> bool {
        lock(&self.confinement).is_some()
    }

    /// Turns zygotes on, with the limits their kernels take on in a sandbox.
    pub fn enable(&self, confinement: &Confinement) {
        *lock(&self.confinement) = Some(Arc::new(confinement.to_json()));
    }

    /// The limits a forked kernel takes on, as [`Zygote::fork_kernel`] sends them.
    pub fn confinement(&self) -> Option<Arc<Value>> {
        lock(&self.confinement).clone()
    }

    /// The running zygote of `template` (started from `layers`) when there is one to use.
    /// Otherwise, unless one is starting or failed lately, returns what to start one with:
    /// the caller starts it (on the blocking pool) and hands it to [`Self::started`].
    ///
    /// `base_env` is every variable the zygote starts with besides its user's (the
    /// template's variables and `PATH`): its imports read some, and the zygote refuses
    /// plans that differ on those. A running zygote started with other startup-relevant
    /// variables is not used.
    pub fn get(
        &self,
        template: &str,
        layers: &[PathBuf],
        base_env: &BTreeMap<String, String>,
    ) -> Lookup {
        if !self.enabled() {
            return Lookup::None;
        }
        let mut slots = lock(&self.slots);
        match slots.get(template) {
            Some(Slot::Running(z))
                if z.is_alive()
                    && z.layers == layers
                    && z.forks.load(Ordering::SeqCst) < FORKS_PER_ZYGOTE =>
            {
                return if z.env == startup_env(base_env) {
                    Lookup::Running(Arc::clone(z))
                } else {
                    Lookup::None
                };
            }
            Some(Slot::Starting) => return Lookup::None,
            Some(Slot::Failed(at)) if at.elapsed() < RETRY_AFTER => return Lookup::None,
            _ => {}
        }
        let Some(python) = zygote_python(layers) else {
            slots.insert(template.to_owned(), Slot::Failed(Instant::now()));
            return Lookup::None;
        };
        if let Some(Slot::Running(old)) = slots.insert(template.to_owned(), Slot::Starting) {
            lock(&self.retired).push(old);
        }
        let n = self.next_id.fetch_add(1, Ordering::SeqCst) % self.id_span;
        let name = format!("{}-{n}", sanitize(template));
        let mut full: BTreeMap<String, String> = base_env.clone();
        full.extend(kernel_user_env(layers));
        let env: Vec<(String, String)> = full.into_iter().collect();
        Lookup::Start(hutch_runtime::runtime::ZygoteSpec {
            name,
            template_layers: layers.to_vec(),
            own_id: self.id_first + n,
            argv: vec![
                python,
                "-c".into(),
                hutch_runtime::zygote::SCRIPT.to_owned(),
            ],
            env,
        })
    }

    /// Takes on a zygote started for `template` (or notes that it failed) and waits until
    /// it has imported everything.
    pub async fn started(
        &self,
        template: &str,
        spec: &hutch_runtime::runtime::ZygoteSpec,
        started: Result<hutch_runtime::runtime::Zygote, String>,
    ) -> Option<Arc<Zygote>> {
        let z = match started.and_then(|z| {
            hutch_sys::fd::set_nonblocking(&z.socket).map_err(|e| e.to_string())?;
            // SAFETY: an `OwnedFd` is an open descriptor that keeps its number until it is
            // dropped, which happens only together with the `AsyncFd`.
            let socket =
                unsafe { AsyncFd::register_with_interest(z.socket, tokio::io::Interest::READABLE) }
                    .map_err(|e| e.to_string())?;
            Ok(Arc::new(Zygote {
                owner: ParentUserNs {
                    pid: z.pid,
                    start_time: z.start_time,
                },
                layers: spec.template_layers.clone(),
                env: startup_env(spec.env.iter().map(|(k, v)| (k, v))),
                socket,
                waiting: Mutex::new(HashMap::new()),
                ready: Mutex::new(None),
                dead: AtomicBool::new(false),
                closed: tokio::sync::Notify::new(),
                fork_server: Mutex::new(None),
                forks: AtomicU32::new(0),
                kernels: AtomicU32::new(0),
            }))
        }) {
            Ok(z) => z,
            Err(e) => {
                tracing::warn!(template, error = %e, "cannot start a zygote; kernels start cold");
                lock(&self.slots).insert(template.to_owned(), Slot::Failed(Instant::now()));
                return None;
            }
        };
        let (tx, rx) = oneshot::channel();
        *lock(&z.ready) = Some(tx);
        tokio::spawn(Arc::clone(&z).read_loop());
        let ready = tokio::time::timeout(READY_LIMIT, rx).await;
        match ready {
            Ok(Ok(msg)) if msg.get("op").and_then(Value::as_str) == Some("ready") => {
                let fork_server = msg
                    .get("forkServerPid")
                    .and_then(Value::as_i64)
                    .and_then(|p| i32::try_from(p).ok())
                    .and_then(|pid| {
                        hutch_runtime::proc::start_time(pid)
                            .map(|start_time| ParentUserNs { pid, start_time })
                    });
                *lock(&z.fork_server) = fork_server;
                tracing::info!(template, pid = z.owner.pid, "zygote ready");
                lock(&self.slots).insert(template.to_owned(), Slot::Running(Arc::clone(&z)));
                Some(z)
            }
            other => {
                let why = match other {
                    Ok(Ok(msg)) => msg.to_string(),
                    Ok(Err(_)) => "it exited".into(),
                    Err(_) => format!("not ready within {READY_LIMIT:?}"),
                };
                tracing::warn!(template, pid = z.owner.pid, error = %why, "zygote failed to start; kernels start cold");
                lock(&self.slots).insert(template.to_owned(), Slot::Failed(Instant::now()));
                lock(&self.retired).push(z);
                None
            }
        }
    }

    /// Zygotes replaced, gone or left over: their sockets are closed (which ends them) and
    /// their pids are returned for the caller to end and reap.
    pub fn take_retired(&self) -> Vec<ParentUserNs> {
        let mut slots = lock(&self.slots);
        let mut retired = std::mem::take(&mut *lock(&self.retired));
        slots.retain(|_, s| match s {
            Slot::Running(z) if !z.is_alive() => {
                retired.push(Arc::clone(z));
                false
            }
            _ => true,
        });
        retired.into_iter().flat_map(|z| z.processes()).collect()
    }

    /// Stops using `template`'s zygote (for [`RETRY_AFTER`]): a sandbox could not be
    /// started inside its user namespace.
    pub fn refuse(&self, template: &str) {
        if let Some(Slot::Running(z)) =
            lock(&self.slots).insert(template.to_owned(), Slot::Failed(Instant::now()))
        {
            lock(&self.retired).push(z);
        }
    }

    /// The running zygote of `template`.
    pub fn info(&self, template: &str) -> Option<ZygoteInfo> {
        match lock(&self.slots).get(template) {
            Some(Slot::Running(z)) if z.is_alive() => Some(ZygoteInfo {
                pid: z.owner.pid,
                kernels: z.kernels.load(Ordering::SeqCst),
            }),
            _ => None,
        }
    }

    /// Every zygote, for shutdown.
    pub fn take_all(&self) -> Vec<ParentUserNs> {
        let mut owners = self.take_retired();
        for (_, slot) in lock(&self.slots).drain() {
            if let Slot::Running(z) = slot {
                owners.extend(z.processes());
            }
        }
        owners
    }
}

/// What the pool API shows of a template's zygote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ZygoteInfo {
    /// Its host pid.
    pub pid: i32,
    /// Kernels it has started.
    pub kernels: u32,
}

/// What [`Zygotes::get`] found.
pub enum Lookup {
    /// Use this one.
    Running(Arc<Zygote>),
    /// Start one with this (and go on without for now).
    Start(hutch_runtime::runtime::ZygoteSpec),
    /// None to use.
    None,
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_startup_variables_must_match() {
        for k in ["PYTHONPATH", "PYTHONHASHSEED", "LANG", "LC_ALL", "LANGUAGE"] {
            assert!(startup_relevant(k), "{k}");
        }
        for k in ["HOME", "PATH", "E2B_SANDBOX", "MY_LANG"] {
            assert!(!startup_relevant(k), "{k}");
        }
    }

    #[test]
    fn only_an_ipykernel_spec_gives_a_zygote_python() {
        let dir = std::env::temp_dir().join(format!("hutch-zyg-spec-{}", std::process::id()));
        let spec_dir = dir.join("usr/local/share/jupyter/kernels/python3");
        std::fs::create_dir_all(&spec_dir).unwrap();
        let write = |argv: &str, env: &str| {
            std::fs::write(
                spec_dir.join("kernel.json"),
                format!(r#"{{"argv": {argv}, "language": "python", "env": {env}}}"#),
            )
            .unwrap();
        };
        let layers = vec![PathBuf::from("/nonexistent"), dir.clone()];
        write(
            r#"["/opt/py/bin/python", "-m", "ipykernel_launcher", "-f", "{connection_file}"]"#,
            "{}",
        );
        assert_eq!(
            zygote_python(&layers).as_deref(),
            Some("/opt/py/bin/python")
        );
        write(
            r#"["/opt/py/bin/python", "-m", "ipykernel_launcher", "-f", "{connection_file}"]"#,
            r#"{"PYTHONPATH": "/x"}"#,
        );
        assert_eq!(zygote_python(&layers), None);
        write(
            r#"["/opt/py/bin/python", "-m", "other_kernel", "-f", "{connection_file}"]"#,
            "{}",
        );
        assert_eq!(zygote_python(&layers), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
