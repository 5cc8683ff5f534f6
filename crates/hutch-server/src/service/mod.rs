//! The sandbox service: every control-plane operation, independent of HTTP.
//!
//! Live sandboxes are kept in memory (one [`Entry`] each) and written through to SQLite.
//! Operations on one sandbox are serialised by its entry's `op` lock; the runtime's
//! blocking work runs on the blocking pool. The runtime is a [`SandboxRuntime`], so all of
//! this runs over an in-memory fake in the unit tests.
//!
//! Concerns live in submodules: [`create`] (new sandboxes, slots, per-key quotas),
//! [`lifecycle`] (kill, pause/resume, timeouts, recovery at start), [`metrics`] and
//! [`list`] (filters and paging).

pub mod create;
pub mod error;
pub mod lifecycle;
pub mod list;
pub mod metrics;
pub mod network;
pub mod pool;
mod warm;
mod zygote;

#[cfg(test)]
pub(crate) mod fake;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_lifecycle;
#[cfg(test)]
mod tests_pool;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hutch_runtime::{Limits, SandboxNet};

use crate::runtime::SandboxRuntime;
use crate::sandbox::{Metric, SandboxRecord, SandboxState};
use crate::store::Store;
use crate::templates::Templates;

pub use create::{AgentReadiness, CreateRequest, HttpReadiness};
pub use error::{Invalid, Missing, Result, RuntimeOp, ServiceError};
pub use list::ListQuery;

/// Longest timeout a sandbox may be given, in seconds (E2B's maximum: 24 h).
pub const MAX_TIMEOUT_SECS: u64 = 24 * 3600;
/// Timeout when the caller gives none.
pub const DEFAULT_TIMEOUT_SECS: u64 = 300;
/// How often metrics are sampled.
pub const METRICS_INTERVAL: Duration = Duration::from_secs(2);

/// Server-wide defaults for new sandboxes.
#[derive(Debug, Clone, Copy)]
pub struct SandboxDefaults {
    /// Limits every sandbox gets.
    pub limits: Limits,
    /// The most CPUs any sandbox gets, whatever its template asks for.
    pub max_cpus: u32,
    /// The most memory (MiB) any sandbox gets, whatever its template asks for.
    pub max_memory_mb: u64,
    /// How many times the data disk's free space the sandboxes' disks may still grow by
    /// together (`--disk-overcommit`); None = only each new disk must fit.
    pub disk_overcommit: Option<f64>,
}

/// One live sandbox.
pub struct Entry {
    rec: Mutex<SandboxRecord>,
    op: tokio::sync::Mutex<()>,
    metrics: Mutex<VecDeque<Metric>>,
    last_cpu: Mutex<Option<(Instant, u64)>>,
    /// Flips to true when the sandbox is killed, so proxied streams end at once instead
    /// of waiting on a peer that vanished without a reset.
    killed: tokio::sync::watch::Sender<bool>,
}

impl Entry {
    fn new(rec: SandboxRecord) -> Arc<Self> {
        Arc::new(Entry {
            rec: Mutex::new(rec),
            op: tokio::sync::Mutex::new(()),
            metrics: Mutex::new(VecDeque::new()),
            last_cpu: Mutex::new(None),
            killed: tokio::sync::watch::channel(false).0,
        })
    }

    /// A copy of the record.
    pub fn record(&self) -> SandboxRecord {
        lock(&self.rec).clone()
    }
}

/// Cold starts allowed at once on this host.
fn cold_starts() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    cpus.max(1) * COLD_STARTS_PER_CPU
}

/// Locks `m`, also after a panic while it was held (the data stays usable).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where the router should send a sandbox's traffic.
#[derive(Debug, Clone)]
pub struct Route {
    /// The sandbox's address.
    pub ip: Ipv4Addr,
    /// Paused sandboxes are not routable.
    pub state: SandboxState,
    /// Becomes true when the sandbox is killed.
    pub killed: tokio::sync::watch::Receiver<bool>,
    /// Host pid and start time of the sandbox's PID 1 (its network namespace).
    pub init: (i32, u64),
    /// The token requests to its ports other than the agent's must carry, if it has one.
    pub traffic_access_token: Option<String>,
    /// A paused sandbox that traffic wakes (`autoResume`).
    pub auto_resume: bool,
    /// Its agent's access token (traffic to the agent wakes it only with this).
    pub envd_access_token: Option<String>,
    /// The `Host` requests to its ports carry (`network.maskRequestHost`; `${PORT}` is
    /// the port).
    pub mask_request_host: Option<String>,
    /// Its ports reached over TLS (`network.httpsPorts`).
    pub https_ports: Vec<u16>,
}

/// The sandbox service.
pub struct Service {
    runtime: Arc<dyn SandboxRuntime>,
    store: Arc<Store>,
    templates: Arc<Templates>,
    defaults: SandboxDefaults,
    live: Mutex<HashMap<String, Arc<Entry>>>,
    reserved_slots: Mutex<HashSet<u32>>,
    /// Sandboxes being created, per key id: they count against the key's limit too.
    creating: Mutex<HashMap<String, u32>>,
    http: crate::agent_http::HttpClient,
    readiness: Arc<dyn AgentReadiness>,
    pools: Arc<pool::Pools>,
    /// Cold starts allowed at once: a burst queues here rather than starting hundreds of
    /// sandboxes that then share two CPUs.
    cold_gate: tokio::sync::Semaphore,
    /// Every template's zygote (off until [`crate::zygote::Zygotes::enable`]).
    zygotes: Arc<crate::zygote::Zygotes>,
    /// The server's volumes (set once at start; without, no sandbox may mount one).
    volumes: std::sync::OnceLock<Arc<crate::volumes::Volumes>>,
    /// The server's egress proxy (set once at start; without, no sandbox may have an
    /// egress policy).
    egress: std::sync::OnceLock<Arc<crate::egress::proxy::EgressProxy>>,
}

/// Host ids for zygotes' roots, right above every sandbox's range (reused in turn).
const ZYGOTE_IDS: u32 = 4096;

/// Cold starts (spawn until the agent answers) allowed at once, per CPU of the host.
const COLD_STARTS_PER_CPU: usize = 4;

/// How long a create waits for its turn to start cold before it is refused with a 503.
const COLD_START_WAIT: Duration = Duration::from_secs(60);

impl Service {
    /// Builds the service and adopts (or cleans up) the sandboxes a previous run left. New
    /// sandboxes are ready once their agent answers over HTTP.
    pub fn new(
        runtime: Arc<dyn SandboxRuntime>,
        store: Arc<Store>,
        templates: Arc<Templates>,
        defaults: SandboxDefaults,
        records: Vec<SandboxRecord>,
    ) -> Arc<Self> {
        let http = crate::agent_http::client();
        let readiness = Arc::new(HttpReadiness::new(http.clone()));
        Self::with_readiness(
            runtime, store, templates, defaults, records, http, readiness,
        )
    }

    /// [`Service::new`] with the given way of waiting for new sandboxes.
    pub fn with_readiness(
        runtime: Arc<dyn SandboxRuntime>,
        store: Arc<Store>,
        templates: Arc<Templates>,
        defaults: SandboxDefaults,
        records: Vec<SandboxRecord>,
        http: crate::agent_http::HttpClient,
        readiness: Arc<dyn AgentReadiness>,
    ) -> Arc<Self> {
        let ids_end = runtime.ids_end();
        let svc = Arc::new(Service {
            runtime,
            store,
            templates,
            defaults,
            live: Mutex::new(HashMap::new()),
            reserved_slots: Mutex::new(HashSet::new()),
            creating: Mutex::new(HashMap::new()),
            http,
            readiness,
            pools: Arc::new(pool::Pools::default()),
            cold_gate: tokio::sync::Semaphore::new(cold_starts()),
            zygotes: Arc::new(crate::zygote::Zygotes::new(ids_end, ZYGOTE_IDS)),
            volumes: std::sync::OnceLock::new(),
            egress: std::sync::OnceLock::new(),
        });
        svc.recover(records);
        svc
    }

    /// Gives the service the server's volumes (once).
    pub fn set_volumes(&self, v: Arc<crate::volumes::Volumes>) {
        let _ = self.volumes.set(v);
    }

    /// Where each of `mounts` is mounted on the host (mounting it first if needed), paired
    /// with the mount: what a sandbox that mounts them is created with.
    pub async fn volume_sources(
        &self,
        mounts: &[crate::sandbox::VolumeMount],
    ) -> Result<Vec<(crate::sandbox::VolumeMount, std::path::PathBuf)>> {
        if mounts.is_empty() {
            return Ok(Vec::new());
        }
        let volumes = self
            .volumes
            .get()
            .cloned()
            .ok_or_else(|| Invalid::Snapshot("this server has no volumes".into()))?;
        let mounts = mounts.to_vec();
        tokio::task::spawn_blocking(move || {
            mounts
                .into_iter()
                .map(|m| {
                    let rec = volumes.get(&m.id, &crate::tenancy::Scope::operator())?;
                    let source = volumes.mount_point(&rec)?;
                    Ok((m, source))
                })
                .collect::<std::result::Result<Vec<_>, crate::volumes::VolumeError>>()
        })
        .await?
        .map_err(|e| ServiceError::NotReady(format!("mounting the sandbox's volumes: {e}")))
    }

    /// The live sandboxes (running or paused) that mount volume `id`.
    pub fn volume_users(&self, id: &str) -> Vec<String> {
        lock(&self.live)
            .values()
            .map(|e| lock(&e.rec))
            .filter(|r| r.volume_mounts.iter().any(|m| m.id == id))
            .map(|r| r.id.clone())
            .collect()
    }

    /// The template registry.
    pub fn templates(&self) -> &Arc<Templates> {
        &self.templates
    }

    /// The limits sandboxes get unless their template sets its own.
    pub fn limits(&self) -> Limits {
        self.defaults.limits
    }

    /// The most CPUs and memory (MiB) a template may give its sandboxes.
    pub fn ceiling(&self) -> (u32, u64) {
        (self.defaults.max_cpus, self.defaults.max_memory_mb)
    }

    /// The database.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The runtime's state directory (`<data>`).
    pub fn state_dir(&self) -> &std::path::Path {
        self.runtime.state_dir()
    }

    /// Layers used by live sandboxes and by sandboxes waiting in warm pools.
    pub fn layers_in_use(&self) -> HashSet<std::path::PathBuf> {
        let mut used: HashSet<std::path::PathBuf> = lock(&self.live)
            .values()
            .flat_map(|e| lock(&e.rec).layers.clone())
            .collect();
        for q in lock(&self.pools.ready).values() {
            used.extend(q.iter().flat_map(|p| p.sandbox.layers.iter().cloned()));
        }
        used
    }

    /// The shared HTTP client for sandbox traffic.
    pub fn http(&self) -> &crate::agent_http::HttpClient {
        &self.http
    }

    /// The addresses of adopted sandboxes without egress (for the firewall rules): those
    /// whose egress plan forwards nothing.
    pub fn noinet_addresses(
        records: &[SandboxRecord],
        runtime_net: &hutch_runtime::NetConfig,
    ) -> Vec<Ipv4Addr> {
        records
            .iter()
            .filter(|r| {
                !r.is_stopped()
                    && !network::EgressPlan::of(r.allow_internet_access, r.network.as_ref())
                        .internet
            })
            .map(|r| runtime_net.slot(r.slot).sandbox_ip)
            .collect()
    }

    fn entry(&self, id: &str) -> Result<Arc<Entry>> {
        lock(&self.live)
            .get(id)
            .cloned()
            .ok_or_else(|| Missing::Sandbox(id.to_string()).into())
    }

    /// The route for a sandbox's traffic, if it exists.
    pub fn route(&self, id: &str) -> Option<Route> {
        let e = lock(&self.live).get(id).cloned()?;
        let rec = e.record();
        Some(Route {
            ip: self.runtime.net_for(rec.slot).sandbox_ip,
            state: rec.state,
            killed: e.killed.subscribe(),
            init: (rec.pid, rec.pid_start),
            traffic_access_token: rec.traffic_access_token.clone(),
            auto_resume: rec.auto_resume,
            envd_access_token: rec.envd_access_token.clone(),
            mask_request_host: rec
                .network
                .as_ref()
                .and_then(|n| n.mask_request_host.clone()),
            https_ports: rec
                .network
                .as_ref()
                .map(|n| n.https_ports.clone())
                .unwrap_or_default(),
        })
    }

    /// Finds the sandbox whose access token signed a `/files` URL. Signed URLs carry no
    /// routing header, so on a shared origin the signature itself names the sandbox: it is
    /// a SHA-256 over the path, operation, user, that sandbox's token and the expiration.
    pub fn find_by_signature(
        &self,
        path: &str,
        operation: &str,
        user: &str,
        signature: &str,
        expiration: Option<&str>,
    ) -> Option<String> {
        let live: Vec<Arc<Entry>> = lock(&self.live).values().cloned().collect();
        live.iter().find_map(|e| {
            let rec = lock(&e.rec);
            let token = rec.envd_access_token.as_deref()?;
            let expect = file_signature(path, operation, user, token, expiration);
            (expect == signature).then(|| rec.id.clone())
        })
    }

    /// Info of one sandbox.
    pub fn get(&self, id: &str) -> Result<SandboxRecord> {
        Ok(self.entry(id)?.record())
    }

    /// Whether `scope` may see sandbox `id`: false only for another team's sandbox (one that
    /// does not exist is left to the call, which answers its own "not found").
    pub fn visible(&self, id: &str, scope: &crate::tenancy::Scope) -> bool {
        self.entry(id)
            .map_or(true, |e| scope.sees(lock(&e.rec).team.as_deref()))
    }

    /// Number of live sandboxes.
    pub fn count(&self) -> usize {
        lock(&self.live).len()
    }

    /// Network facts of a live sandbox.
    pub fn net(&self, id: &str) -> Option<SandboxNet> {
        let e = lock(&self.live).get(id).cloned()?;
        let rec = e.record();
        (!rec.is_stopped()).then(|| self.runtime.net_for(rec.slot))
    }

    /// Whether large downloads and uploads are handed off between the agent and the server
    /// (see [`SandboxRuntime::hands_off_files`]).
    pub fn hands_off_files(&self) -> bool {
        self.runtime.hands_off_files()
    }

    /// Readies sandbox `id`'s disk for a large upload the server is about to write.
    pub async fn before_large_write(&self, id: &str) {
        let id = id.to_string();
        let _ = self.blocking(move |rt| rt.before_large_write(&id)).await;
    }

    /// Runs blocking runtime work on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn SandboxRuntime) -> T + Send + 'static,
    ) -> Result<T> {
        let rt = Arc::clone(&self.runtime);
        Ok(tokio::task::spawn_blocking(move || f(rt.as_ref())).await?)
    }
}

/// The signature envd expects on a signed `/files` URL: `v1_` and the unpadded base64 of
/// SHA-256 over `path:operation:user:token[:expiration]`.
pub fn file_signature(
    path: &str,
    operation: &str,
    user: &str,
    token: &str,
    expiration: Option<&str>,
) -> String {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    let raw = match expiration {
        Some(exp) => format!("{path}:{operation}:{user}:{token}:{exp}"),
        None => format!("{path}:{operation}:{user}:{token}"),
    };
    format!(
        "v1_{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(Sha256::digest(raw.as_bytes()))
    )
}

/// `t` or the default timeout, refused above the maximum.
pub fn validate_timeout(t: Option<u64>) -> Result<u64> {
    let t = t.unwrap_or(DEFAULT_TIMEOUT_SECS);
    if t > MAX_TIMEOUT_SECS {
        return Err(Invalid::Timeout {
            got: t,
            max: MAX_TIMEOUT_SECS,
        }
        .into());
    }
    Ok(t)
}
