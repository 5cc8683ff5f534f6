//! The sandbox service: every control-plane operation, independent of HTTP.
//!
//! Live sandboxes are kept in memory (one [`Entry`] each) and written through to SQLite.
//! Operations on one sandbox are serialised by its entry's `op` lock; the runtime's
//! blocking work runs on the blocking pool.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use hutch_contracts::agent::{AgentConfig, CONFIG_ENV};
use hutch_runtime::{Limits, Runtime, SandboxNet, SandboxSpec};

use crate::sandbox::{new_id, Metric, SandboxRecord, SandboxState};
use crate::store::{Caller, Store};
use crate::templates::{TemplateLookupError, Templates};

pub use hutch_contracts::agent::AGENT_PORT;
/// Longest timeout a sandbox may be given, in seconds (E2B's maximum: 24 h).
pub const MAX_TIMEOUT_SECS: u64 = 24 * 3600;
/// Timeout when the caller gives none.
pub const DEFAULT_TIMEOUT_SECS: u64 = 300;
/// How often metrics are sampled.
pub const METRICS_INTERVAL: Duration = Duration::from_secs(2);
/// Samples kept per sandbox (one hour at the sampling interval).
const METRICS_KEPT: usize = 1800;

/// Errors of service operations; the API maps them onto E2B's status codes.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// No such sandbox (or template).
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The sandbox is not in a state that allows this.
    #[error("{0}")]
    Conflict(String),
    /// The server cannot do this right now (templates still building).
    #[error("{0}")]
    Unavailable(String),
    /// The request lacks a valid credential.
    #[error("{0}")]
    Unauthorized(String),
    /// The caller already holds as many sandboxes as its key allows.
    #[error("{0}")]
    RateLimited(String),
    /// Something failed on the host.
    #[error("{0}")]
    Internal(String),
}

impl From<TemplateLookupError> for ServiceError {
    fn from(e: TemplateLookupError) -> Self {
        match e {
            TemplateLookupError::NotFound(_) => ServiceError::NotFound(e.to_string()),
            TemplateLookupError::Building(_) => ServiceError::Unavailable(e.to_string()),
            TemplateLookupError::Failed(_) | TemplateLookupError::Broken(..) => {
                ServiceError::Internal(e.to_string())
            }
        }
    }
}

impl From<crate::store::StoreError> for ServiceError {
    fn from(e: crate::store::StoreError) -> Self {
        ServiceError::Internal(e.to_string())
    }
}

/// Result of service operations.
pub type Result<T> = std::result::Result<T, ServiceError>;

/// A create request, already decoded from either API version.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    /// Template name or id.
    pub template_id: String,
    /// Lifetime in seconds.
    pub timeout: Option<u64>,
    /// User metadata.
    pub metadata: BTreeMap<String, String>,
    /// Sandbox-wide environment variables.
    pub env_vars: BTreeMap<String, String>,
    /// Egress allowed (None = not given = allowed).
    pub allow_internet_access: Option<bool>,
    /// Require an access token on the agent.
    pub secure: bool,
    /// Pause rather than kill at the end time.
    pub auto_pause: bool,
    /// Who asks: the key's id and how many sandboxes it may hold (None = the server's own key).
    pub caller: Option<Caller>,
    /// Set for a template build's sandbox: the build id. Such a sandbox runs no code
    /// interpreter (its kernels would write into the layer being built).
    pub build: Option<String>,
}

/// Filters of the list call.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Every pair must match.
    pub metadata: Vec<(String, String)>,
    /// Allowed states (empty = all).
    pub states: Vec<SandboxState>,
    /// Template name or id.
    pub template: Option<String>,
    /// Only sandboxes started after this time.
    pub started_after: Option<DateTime<Utc>>,
    /// Oldest first instead of newest first.
    pub ascending: bool,
    /// Page size (None = everything).
    pub limit: Option<usize>,
    /// Cursor from the previous page.
    pub next_token: Option<String>,
}

/// Server-wide defaults for new sandboxes.
#[derive(Debug, Clone, Copy)]
pub struct SandboxDefaults {
    /// Limits every sandbox gets.
    pub limits: Limits,
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
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
}

/// The sandbox service.
pub struct Service {
    runtime: Arc<Runtime>,
    store: Arc<Store>,
    templates: Arc<Templates>,
    defaults: SandboxDefaults,
    live: Mutex<HashMap<String, Arc<Entry>>>,
    reserved_slots: Mutex<HashSet<u32>>,
    /// Sandboxes being created, per key id: they count against the key's limit too.
    creating: Mutex<HashMap<String, u32>>,
    http: crate::proxy::HttpClient,
}

/// A sandbox being created for a key; dropping it (created or failed) stops counting it as pending.
struct KeyReservation<'a> {
    creating: &'a Mutex<HashMap<String, u32>>,
    key_id: String,
}

impl Drop for KeyReservation<'_> {
    fn drop(&mut self) {
        let mut creating = lock(self.creating);
        if let Some(n) = creating.get_mut(&self.key_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                creating.remove(&self.key_id);
            }
        }
    }
}

fn blocking_err(e: tokio::task::JoinError) -> ServiceError {
    ServiceError::Internal(format!("worker thread failed: {e}"))
}

impl Service {
    /// Builds the service and adopts (or cleans up) the sandboxes a previous run left.
    pub fn new(
        runtime: Arc<Runtime>,
        store: Arc<Store>,
        templates: Arc<Templates>,
        defaults: SandboxDefaults,
        records: Vec<SandboxRecord>,
    ) -> Arc<Self> {
        let svc = Arc::new(Service {
            runtime,
            store,
            templates,
            defaults,
            live: Mutex::new(HashMap::new()),
            reserved_slots: Mutex::new(HashSet::new()),
            creating: Mutex::new(HashMap::new()),
            http: crate::proxy::client(),
        });
        svc.recover(records);
        svc
    }

    /// The template registry.
    pub fn templates(&self) -> &Arc<Templates> {
        &self.templates
    }

    /// The limits sandboxes get unless their template sets its own.
    pub fn limits(&self) -> Limits {
        self.defaults.limits
    }

    /// The database.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The runtime's state directory (`<data>`).
    pub fn state_dir(&self) -> &std::path::Path {
        &self.runtime.config().state_dir
    }

    /// Layers used by live sandboxes.
    pub fn layers_in_use(&self) -> HashSet<std::path::PathBuf> {
        lock(&self.live)
            .values()
            .flat_map(|e| lock(&e.rec).layers.clone())
            .collect()
    }

    /// Ends every process of sandbox `id` and copies what it changed to `dest` (see
    /// [`Runtime::commit_upper`]); the sandbox is then only good for [`Service::kill`].
    pub async fn commit_layer(&self, id: &str, dest: std::path::PathBuf) -> Result<()> {
        let e = self.entry(id)?;
        let _op = e.op.lock().await;
        let rec = e.record();
        let rt = Arc::clone(&self.runtime);
        tokio::task::spawn_blocking(move || {
            rt.commit_upper(&rec.id, (rec.pid, rec.pid_start), &dest)
        })
        .await
        .map_err(blocking_err)?
        .map_err(|e| ServiceError::Internal(e.to_string()))
    }

    /// The shared HTTP client for sandbox traffic.
    pub fn http(&self) -> &crate::proxy::HttpClient {
        &self.http
    }

    /// Splits the stored records into alive ones (adopted) and dead ones (cleaned up), then
    /// removes anything on the host that belongs to no adopted sandbox.
    fn recover(&self, records: Vec<SandboxRecord>) {
        let mut keep = HashSet::new();
        let mut keep_slots = HashSet::new();
        for rec in records {
            let net = self.runtime.net_for(rec.slot);
            if rec.build.is_some() {
                // Its build ended with the server that ran it.
                tracing::info!(sandbox = %rec.id, build = rec.build.as_deref().unwrap_or(""), "ending the sandbox of an interrupted template build");
                let init = Some((rec.pid, rec.pid_start))
                    .filter(|(pid, start)| hutch_runtime::proc::is_alive(*pid, *start));
                if let Err(e) = self.runtime.destroy(&rec.id, Some(&net), init) {
                    tracing::warn!(sandbox = %rec.id, error = %e, "cleanup failed");
                }
                let _ = self.store.delete_sandbox(&rec.id);
            } else if hutch_runtime::proc::is_alive(rec.pid, rec.pid_start) {
                tracing::info!(sandbox = %rec.id, pid = rec.pid, state = rec.state.as_str(), "adopted running sandbox");
                keep.insert(rec.id.clone());
                keep_slots.insert(rec.slot);
                lock(&self.live).insert(rec.id.clone(), Entry::new(rec));
            } else {
                tracing::info!(sandbox = %rec.id, "sandbox died while the server was down; cleaning up");
                if let Err(e) = self.runtime.destroy(&rec.id, Some(&net), None) {
                    tracing::warn!(sandbox = %rec.id, error = %e, "cleanup failed");
                }
                let _ = self.store.delete_sandbox(&rec.id);
            }
        }
        for id in self.runtime.leftover_ids() {
            if !keep.contains(&id) {
                tracing::info!(sandbox = %id, "removing leftovers of an unknown sandbox");
                if let Err(e) = self.runtime.destroy(&id, None, None) {
                    tracing::warn!(sandbox = %id, error = %e, "cleanup failed");
                }
            }
        }
        for slot in self.runtime.leftover_slots() {
            if !keep_slots.contains(&slot) {
                let net = self.runtime.net_for(slot);
                hutch_runtime::net::remove_host_side(&net);
                let _ = hutch_runtime::net::set_internet(net.sandbox_ip, true);
            }
        }
    }

    /// The addresses of adopted sandboxes without egress (for the firewall rules).
    pub fn noinet_addresses(
        records: &[SandboxRecord],
        runtime_net: &hutch_runtime::NetConfig,
    ) -> Vec<Ipv4Addr> {
        records
            .iter()
            .filter(|r| r.allow_internet_access == Some(false))
            .map(|r| runtime_net.slot(r.slot).sandbox_ip)
            .collect()
    }

    fn entry(&self, id: &str) -> Result<Arc<Entry>> {
        lock(&self.live).get(id).cloned().ok_or_else(|| {
            ServiceError::NotFound(format!(
                "sandbox \"{id}\" doesn't exist or you don't have access to it"
            ))
        })
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
        use base64::Engine;
        use sha2::{Digest, Sha256};
        let live: Vec<Arc<Entry>> = lock(&self.live).values().cloned().collect();
        live.iter().find_map(|e| {
            let rec = lock(&e.rec);
            let token = rec.envd_access_token.as_deref()?;
            let raw = match expiration {
                Some(exp) => format!("{path}:{operation}:{user}:{token}:{exp}"),
                None => format!("{path}:{operation}:{user}:{token}"),
            };
            let expect = format!(
                "v1_{}",
                base64::engine::general_purpose::STANDARD_NO_PAD
                    .encode(Sha256::digest(raw.as_bytes()))
            );
            (expect == signature).then(|| rec.id.clone())
        })
    }

    fn allocate_slot(&self) -> Result<u32> {
        let live = lock(&self.live);
        let mut reserved = lock(&self.reserved_slots);
        let used: HashSet<u32> = live.values().map(|e| lock(&e.rec).slot).collect();
        let slot = (0..self.runtime.slots())
            .find(|s| !used.contains(s) && !reserved.contains(s))
            .ok_or_else(|| {
                ServiceError::Unavailable(format!(
                    "all {} sandbox slots are in use",
                    self.runtime.slots()
                ))
            })?;
        reserved.insert(slot);
        Ok(slot)
    }

    /// Counts a sandbox about to be created against its key's limit; refuses it when the key
    /// already holds (or is creating) as many as it may.
    fn reserve_for_key(&self, caller: Option<&Caller>) -> Result<Option<KeyReservation<'_>>> {
        let Some(caller) = caller else {
            return Ok(None);
        };
        let live = lock(&self.live);
        let mut creating = lock(&self.creating);
        let pending = creating.get(&caller.key_id).copied().unwrap_or(0);
        if let Some(max) = caller.max_sandboxes {
            let held = live
                .values()
                .filter(|e| lock(&e.rec).key_id.as_deref() == Some(caller.key_id.as_str()))
                .count() as u64;
            if held + u64::from(pending) >= u64::from(max) {
                return Err(ServiceError::RateLimited(format!(
                    "Rate limit exceeded: this API key may hold at most {max} sandboxes at once \
                     (running and paused); kill one or ask for a key with a higher limit"
                )));
            }
        }
        *creating.entry(caller.key_id.clone()).or_insert(0) += 1;
        Ok(Some(KeyReservation {
            creating: &self.creating,
            key_id: caller.key_id.clone(),
        }))
    }

    /// Creates and starts a sandbox; returns once its agent answers.
    pub async fn create(&self, req: CreateRequest) -> Result<SandboxRecord> {
        let timeout = validate_timeout(req.timeout)?;
        let tpl = self.templates.resolve(&req.template_id)?;
        for k in req.env_vars.keys() {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(ServiceError::BadRequest(format!(
                    "invalid environment variable name {k:?}"
                )));
            }
        }
        let _reservation = self.reserve_for_key(req.caller.as_ref())?;
        let id = new_id();
        let token = req.secure.then(|| {
            use rand::RngCore;
            let mut b = [0u8; 24];
            rand::thread_rng().fill_bytes(&mut b);
            hex::encode(b)
        });
        let slot = self.allocate_slot()?;
        // A user-built template brings its ENV, default user and workdir, and resources.
        let custom = tpl.custom.as_ref();
        let mut env_vars = custom.map(|t| t.env.clone()).unwrap_or_default();
        env_vars.extend(req.env_vars.clone());
        let mut limits = self.defaults.limits;
        if let Some(t) = custom {
            limits.cpus = t.cpu_count.unwrap_or(limits.cpus);
            limits.memory_mb = t.memory_mb.unwrap_or(limits.memory_mb);
        }
        let agent_config = AgentConfig {
            sandbox_id: id.clone(),
            env_vars,
            access_token: token.clone(),
            default_user: custom.and_then(|t| t.user.clone()),
            default_workdir: custom.and_then(|t| t.workdir.clone()),
            interpreter: Some(req.build.is_none()),
        };
        let spec = SandboxSpec {
            id: id.clone(),
            template_layers: tpl.layers.clone(),
            limits,
            allow_internet: req.allow_internet_access.unwrap_or(true),
            slot,
            agent_env: vec![
                (
                    "PATH".into(),
                    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
                ),
                (CONFIG_ENV.into(), agent_config.to_json()),
            ],
        };
        let rt = Arc::clone(&self.runtime);
        let started = Instant::now();
        let spawned = tokio::task::spawn_blocking(move || rt.create(&spec))
            .await
            .map_err(blocking_err);
        let spawned = match spawned {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                lock(&self.reserved_slots).remove(&slot);
                tracing::error!(sandbox = %id, error = %e, "sandbox creation failed");
                return Err(ServiceError::Internal(format!(
                    "creating the sandbox failed: {e}"
                )));
            }
            Err(e) => {
                lock(&self.reserved_slots).remove(&slot);
                return Err(e);
            }
        };
        let now = Utc::now();
        let rec = SandboxRecord {
            id: id.clone(),
            template_id: tpl.template_id,
            alias: tpl.alias,
            metadata: req.metadata,
            env_vars: req.env_vars,
            started_at: now,
            end_at: now + chrono::Duration::seconds(timeout as i64),
            state: SandboxState::Running,
            cpu_count: limits.cpus,
            memory_mb: limits.memory_mb,
            disk_mb: limits.disk_mb,
            envd_access_token: token,
            allow_internet_access: req.allow_internet_access,
            auto_pause: req.auto_pause,
            slot,
            pid: spawned.pid,
            pid_start: spawned.start_time,
            key_id: req.caller.as_ref().map(|c| c.key_id.clone()),
            layers: tpl.layers.clone(),
            build: req.build.clone(),
        };
        let ready = crate::proxy::wait_healthy(
            &self.http,
            spawned.net.sandbox_ip,
            AGENT_PORT,
            Duration::from_secs(15),
        )
        .await;
        // A template's start command runs in every new sandbox, which is ready once the
        // template's ready command succeeds.
        let ready = match (ready, custom) {
            (Ok(()), Some(t)) if req.build.is_none() => {
                let agent = crate::agent_client::AgentClient::new(
                    &self.http,
                    spawned.net.sandbox_ip,
                    rec.envd_access_token.as_deref(),
                );
                crate::builds::start_and_wait(&agent, t, false, |_| {}).await
            }
            (r, _) => r,
        };
        let entry = Entry::new(rec.clone());
        let stored = self.store.put_sandbox(&rec);
        {
            lock(&self.live).insert(id.clone(), Arc::clone(&entry));
            lock(&self.reserved_slots).remove(&slot);
        }
        if let Err(e) = ready
            .map_err(ServiceError::Internal)
            .and(stored.map_err(ServiceError::from))
        {
            tracing::error!(sandbox = %id, error = %e, "sandbox did not become ready");
            let _ = self.kill(&id).await;
            return Err(e);
        }
        self.sample(&entry);
        tracing::info!(sandbox = %id, template = %rec.template_id, pid = spawned.pid, ms = started.elapsed().as_millis() as u64, "sandbox created");
        Ok(rec)
    }

    /// Info of one sandbox.
    pub fn get(&self, id: &str) -> Result<SandboxRecord> {
        Ok(self.entry(id)?.record())
    }

    /// Kills a sandbox and releases everything it holds. NotFound if it does not exist.
    pub async fn kill(&self, id: &str) -> Result<()> {
        let entry = {
            let mut live = lock(&self.live);
            let entry = live
                .remove(id)
                .ok_or_else(|| ServiceError::NotFound(format!("sandbox \"{id}\" not found")))?;
            // The slot (and with it the `hv<slot>` interface name) stays taken until the
            // teardown is over, or a new sandbox could get it and lose its veth to us.
            lock(&self.reserved_slots).insert(lock(&entry.rec).slot);
            entry
        };
        entry.killed.send_replace(true);
        let _op = entry.op.lock().await;
        let rec = entry.record();
        let slot = rec.slot;
        let rt = Arc::clone(&self.runtime);
        let net = rt.net_for(rec.slot);
        let res = tokio::task::spawn_blocking(move || {
            rt.destroy(&rec.id, Some(&net), Some((rec.pid, rec.pid_start)))
        })
        .await;
        lock(&self.reserved_slots).remove(&slot);
        let res = res.map_err(blocking_err)?;
        self.store.delete_sandbox(id)?;
        match res {
            Ok(()) => {
                tracing::info!(sandbox = %id, "sandbox killed");
                Ok(())
            }
            Err(e) => {
                tracing::error!(sandbox = %id, error = %e, "releasing the sandbox failed");
                Err(ServiceError::Internal(format!("killing sandbox {id}: {e}")))
            }
        }
    }

    /// Sets the end time to now + `timeout` (may shorten).
    pub async fn set_timeout(&self, id: &str, timeout: Option<u64>) -> Result<()> {
        let timeout = validate_timeout(timeout)?;
        let e = self.entry(id)?;
        let _op = e.op.lock().await;
        let rec = {
            let mut r = lock(&e.rec);
            r.end_at = Utc::now() + chrono::Duration::seconds(timeout as i64);
            r.clone()
        };
        Ok(self.store.put_sandbox(&rec)?)
    }

    /// Extends the end time to at least now + `duration`.
    pub async fn refresh(&self, id: &str, duration: Option<u64>) -> Result<()> {
        let duration = validate_timeout(duration)?;
        let e = self.entry(id)?;
        let _op = e.op.lock().await;
        let rec = {
            let mut r = lock(&e.rec);
            r.end_at = r
                .end_at
                .max(Utc::now() + chrono::Duration::seconds(duration as i64));
            r.clone()
        };
        Ok(self.store.put_sandbox(&rec)?)
    }

    /// Freezes a running sandbox. Conflict if it is already paused.
    pub async fn pause(&self, id: &str) -> Result<()> {
        let e = self.entry(id)?;
        let _op = e.op.lock().await;
        if e.record().state == SandboxState::Paused {
            return Err(ServiceError::Conflict(format!(
                "sandbox {id} is already paused"
            )));
        }
        let rt = Arc::clone(&self.runtime);
        let sid = id.to_string();
        tokio::task::spawn_blocking(move || rt.pause(&sid))
            .await
            .map_err(blocking_err)?
            .map_err(|e| ServiceError::Internal(format!("pausing sandbox {id}: {e}")))?;
        let rec = {
            let mut r = lock(&e.rec);
            r.state = SandboxState::Paused;
            r.clone()
        };
        tracing::info!(sandbox = %id, "sandbox paused");
        Ok(self.store.put_sandbox(&rec)?)
    }

    /// Connects: resumes a paused sandbox (returns true) and extends the end time to at
    /// least now + `timeout`.
    pub async fn connect(&self, id: &str, timeout: Option<u64>) -> Result<(SandboxRecord, bool)> {
        let timeout = validate_timeout(timeout)?;
        let e = self.entry(id)?;
        let _op = e.op.lock().await;
        let resumed = e.record().state == SandboxState::Paused;
        if resumed {
            self.thaw(id).await?;
        }
        let rec = {
            let mut r = lock(&e.rec);
            let want = Utc::now() + chrono::Duration::seconds(timeout as i64);
            if resumed {
                r.state = SandboxState::Running;
                r.end_at = want;
            } else {
                r.end_at = r.end_at.max(want);
            }
            r.clone()
        };
        self.store.put_sandbox(&rec)?;
        Ok((rec, resumed))
    }

    /// The old resume call: Conflict if the sandbox is running.
    pub async fn resume(&self, id: &str, timeout: Option<u64>) -> Result<SandboxRecord> {
        let timeout = validate_timeout(timeout)?;
        let e = self.entry(id)?;
        let _op = e.op.lock().await;
        if e.record().state == SandboxState::Running {
            return Err(ServiceError::Conflict(format!(
                "sandbox {id} is already running"
            )));
        }
        self.thaw(id).await?;
        let rec = {
            let mut r = lock(&e.rec);
            r.state = SandboxState::Running;
            r.end_at = Utc::now() + chrono::Duration::seconds(timeout as i64);
            r.clone()
        };
        self.store.put_sandbox(&rec)?;
        Ok(rec)
    }

    async fn thaw(&self, id: &str) -> Result<()> {
        let rt = Arc::clone(&self.runtime);
        let sid = id.to_string();
        tokio::task::spawn_blocking(move || rt.resume(&sid))
            .await
            .map_err(blocking_err)?
            .map_err(|e| ServiceError::Internal(format!("resuming sandbox {id}: {e}")))?;
        tracing::info!(sandbox = %id, "sandbox resumed");
        Ok(())
    }

    /// Metrics samples between `start` and `end` (unix seconds, inclusive).
    pub fn metrics(&self, id: &str, start: Option<i64>, end: Option<i64>) -> Result<Vec<Metric>> {
        let e = self.entry(id)?;
        if lock(&e.metrics).is_empty() {
            self.sample(&e);
        }
        let m = lock(&e.metrics);
        Ok(m.iter()
            .filter(|s| {
                start.is_none_or(|t| s.timestamp_unix >= t)
                    && end.is_none_or(|t| s.timestamp_unix <= t)
            })
            .cloned()
            .collect())
    }

    /// Takes one metrics sample of a sandbox.
    fn sample(&self, e: &Entry) {
        let rec = e.record();
        let Ok(u) = self.runtime.usage(&rec.id) else {
            return;
        };
        let now = Instant::now();
        let pct = {
            let mut last = lock(&e.last_cpu);
            let pct = match *last {
                Some((t, ns)) => {
                    let wall =
                        now.duration_since(t).as_nanos() as f64 * f64::from(rec.cpu_count.max(1));
                    if wall > 0.0 {
                        (u.cgroup.cpu_usage_ns.saturating_sub(ns) as f64 / wall * 100.0)
                            .clamp(0.0, 100.0)
                    } else {
                        0.0
                    }
                }
                None => 0.0,
            };
            *last = Some((now, u.cgroup.cpu_usage_ns));
            pct
        };
        let ts = Utc::now();
        let mut m = lock(&e.metrics);
        m.push_back(Metric {
            timestamp: ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            timestamp_unix: ts.timestamp(),
            cpu_count: rec.cpu_count,
            cpu_used_pct: (pct * 100.0).round() / 100.0,
            mem_used: u.cgroup.mem_used,
            mem_total: rec.memory_mb * 1024 * 1024,
            mem_cache: u.cgroup.mem_cache,
            disk_used: u.disk_used,
            disk_total: u.disk_total,
        });
        while m.len() > METRICS_KEPT {
            m.pop_front();
        }
    }

    /// Lists sandboxes; returns one page and the token of the next (if any).
    pub fn list(&self, q: &ListQuery) -> Result<(Vec<SandboxRecord>, Option<String>)> {
        let mut recs: Vec<SandboxRecord> = lock(&self.live).values().map(|e| e.record()).collect();
        recs.retain(|r| {
            (q.states.is_empty() || q.states.contains(&r.state))
                && q.metadata.iter().all(|(k, v)| r.metadata.get(k) == Some(v))
                && q.template.as_ref().is_none_or(|t| {
                    let t = t.split(':').next().unwrap_or(t);
                    r.template_id == t || r.alias.as_deref() == Some(t)
                })
                && q.started_after.is_none_or(|t| r.started_at > t)
        });
        // Newest first by default; ties broken by id so the order (and the cursor) is total.
        recs.sort_by(|a, b| {
            b.started_at
                .cmp(&a.started_at)
                .then_with(|| b.id.cmp(&a.id))
        });
        if q.ascending {
            recs.reverse();
        }
        if let Some(tok) = &q.next_token {
            let (ts, id) = decode_token(tok)
                .ok_or_else(|| ServiceError::BadRequest(format!("invalid nextToken {tok:?}")))?;
            let key = |r: &SandboxRecord| {
                (
                    r.started_at.timestamp_nanos_opt().unwrap_or(0),
                    r.id.clone(),
                )
            };
            recs.retain(|r| {
                if q.ascending {
                    key(r) > (ts, id.clone())
                } else {
                    key(r) < (ts, id.clone())
                }
            });
        }
        let mut next = None;
        if let Some(limit) = q.limit {
            if recs.len() > limit {
                recs.truncate(limit);
                next = recs
                    .last()
                    .map(|r| encode_token(r.started_at.timestamp_nanos_opt().unwrap_or(0), &r.id));
            }
        }
        Ok((recs, next))
    }

    /// Runs forever: expires sandboxes at their end time, notices sandboxes whose init died,
    /// and samples metrics.
    pub async fn lifecycle_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_sample = Instant::now();
        loop {
            tick.tick().await;
            let entries: Vec<Arc<Entry>> = lock(&self.live).values().cloned().collect();
            let now = Utc::now();
            let sample = last_sample.elapsed() >= METRICS_INTERVAL;
            if sample {
                last_sample = Instant::now();
            }
            for e in entries {
                let rec = e.record();
                let _ = hutch_runtime::proc::try_reap(rec.pid);
                if !hutch_runtime::proc::is_alive(rec.pid, rec.pid_start) {
                    tracing::warn!(sandbox = %rec.id, "sandbox init exited; releasing the sandbox");
                    let _ = self.kill(&rec.id).await;
                    continue;
                }
                if rec.state == SandboxState::Running && rec.end_at <= now {
                    if rec.auto_pause {
                        tracing::info!(sandbox = %rec.id, "end time reached; pausing");
                        let _ = self.pause(&rec.id).await;
                    } else {
                        tracing::info!(sandbox = %rec.id, "end time reached; killing");
                        let _ = self.kill(&rec.id).await;
                    }
                    continue;
                }
                if sample && rec.state == SandboxState::Running {
                    self.sample(&e);
                }
            }
        }
    }

    /// Number of live sandboxes.
    pub fn count(&self) -> usize {
        lock(&self.live).len()
    }

    /// Network facts of a live sandbox.
    pub fn net(&self, id: &str) -> Option<SandboxNet> {
        let e = lock(&self.live).get(id).cloned()?;
        let slot = e.record().slot;
        Some(self.runtime.net_for(slot))
    }
}

fn validate_timeout(t: Option<u64>) -> Result<u64> {
    let t = t.unwrap_or(DEFAULT_TIMEOUT_SECS);
    if t > MAX_TIMEOUT_SECS {
        return Err(ServiceError::BadRequest(format!(
            "timeout {t}s is longer than the maximum of {MAX_TIMEOUT_SECS}s"
        )));
    }
    Ok(t)
}

fn encode_token(ts: i64, id: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{ts}.{id}"))
}

fn decode_token(tok: &str) -> Option<(i64, String)> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(tok)
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (ts, id) = s.split_once('.')?;
    Some((ts.parse().ok()?, id.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trips() {
        let t = encode_token(1_700_000_000_123_456_789, "abc123");
        assert_eq!(
            decode_token(&t),
            Some((1_700_000_000_123_456_789, "abc123".to_string()))
        );
        assert_eq!(decode_token("!!"), None);
    }

    #[test]
    fn timeout_defaults_and_bounds() {
        assert_eq!(validate_timeout(None).ok(), Some(DEFAULT_TIMEOUT_SECS));
        assert!(validate_timeout(Some(MAX_TIMEOUT_SECS + 1)).is_err());
    }
}
