//! Creating sandboxes: request checks, network slots, per-key quotas, the agent's
//! configuration, and the wait until the new sandbox is ready.

use hutch_contracts::agent::{
    AgentConfig, Claim, KernelAdopt, KernelPlan, CLAIM_PATH, CONFIG_ENV, KERNEL_ADOPT_PATH,
    KERNEL_PREPARE_PATH, WARM_PATH,
};

/// How long a pooled sandbox's kernel may take to start and run its first execution.
const WARM_LIMIT: Duration = Duration::from_secs(120);

/// How long a claim may take (the running kernels are given the new variables).
const CLAIM_LIMIT: Duration = Duration::from_secs(10);
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::future::BoxFuture;
use hutch_runtime::{Limits, SandboxSpec, Spawned};

use super::{
    cold_starts, lock, validate_timeout, Entry, Invalid, Result, RuntimeOp, SandboxDefaults,
    Service, ServiceError, COLD_START_WAIT,
};
use crate::sandbox::{new_id, random_hex, SandboxRecord, SandboxState};
use crate::store::Caller;
use crate::templates::{ResolvedTemplate, TemplateRecord};
use crate::tenancy::Scope;

/// `PATH` of the sandbox's agent, and so of everything it starts.
pub(super) const SANDBOX_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

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
    /// `network.allowPublicTraffic` (None = not given = public): when false, the sandbox's
    /// ports other than the agent's answer only requests carrying its traffic access token.
    pub allow_public_traffic: Option<bool>,
    /// Pause rather than kill at the end time.
    pub auto_pause: bool,
    /// That pause keeps only the filesystem (`autoPauseMemory: false`).
    pub auto_pause_filesystem: bool,
    /// Resume when traffic reaches the sandbox through the router while it is paused.
    pub auto_resume: bool,
    /// Who asks: the key's id and how many sandboxes it may hold (None = the server's own key).
    pub caller: Option<Caller>,
    /// Set for a template build's sandbox: the build id. Such a sandbox runs no code
    /// interpreter (its kernels would write into the layer being built).
    pub build: Option<String>,
    /// Set for a fork: the template to start, already resolved (its layers end with the
    /// source sandbox's copied filesystem). Such a sandbox comes from no warm pool and
    /// starts its kernels itself.
    pub template: Option<ResolvedTemplate>,
    /// Volumes to mount, each with where it is mounted on the host. A create with volumes
    /// comes from no warm pool (mounts are made as the sandbox starts).
    pub volume_mounts: Vec<(crate::sandbox::VolumeMount, std::path::PathBuf)>,
    /// `network` options besides `allowPublicTraffic`, checked.
    pub network: Option<crate::sandbox::SandboxNetwork>,
}

/// How the service talks to a new sandbox's agent: waits until it is ready, and warms and
/// claims the sandboxes of warm pools.
pub trait AgentReadiness: Send + Sync + 'static {
    /// Waits until a pooled sandbox's default kernel is started and past a first
    /// execution. `token` is the pool's token.
    fn warm<'a>(
        &'a self,
        ip: Ipv4Addr,
        token: &'a str,
    ) -> BoxFuture<'a, std::result::Result<(), String>>;

    /// Hands a pooled sandbox its variables and access token.
    fn claim<'a>(
        &'a self,
        ip: Ipv4Addr,
        token: &'a str,
        claim: &'a Claim,
    ) -> BoxFuture<'a, std::result::Result<(), String>>;

    /// Asks the agent for the plan of its default Python kernel (see
    /// [`KERNEL_PREPARE_PATH`]).
    fn prepare_kernel<'a>(
        &'a self,
        _ip: Ipv4Addr,
        _token: Option<&'a str>,
    ) -> BoxFuture<'a, std::result::Result<KernelPlan, String>> {
        Box::pin(async { Err("this agent takes no kernels from the server".into()) })
    }

    /// Hands the agent the process that carried out its plan (see [`KERNEL_ADOPT_PATH`]).
    fn adopt_kernel<'a>(
        &'a self,
        _ip: Ipv4Addr,
        _token: Option<&'a str>,
        _adopt: &'a KernelAdopt,
    ) -> BoxFuture<'a, std::result::Result<(), String>> {
        Box::pin(async { Err("this agent takes no kernels from the server".into()) })
    }

    /// Waits until the agent at `ip` answers (unless `agent_up`: it said so to the spawn
    /// helper) and, when `template` is given (a user-built template, outside of builds), its
    /// start command is up. The error is the message.
    fn wait_ready<'a>(
        &'a self,
        ip: Ipv4Addr,
        token: Option<&'a str>,
        template: Option<&'a TemplateRecord>,
        agent_up: bool,
    ) -> BoxFuture<'a, std::result::Result<(), String>>;
}

/// Readiness over HTTP: the agent's `/health`, then the template's start and ready commands.
pub struct HttpReadiness {
    http: crate::agent_http::HttpClient,
}

impl HttpReadiness {
    /// Readiness checks through `http`.
    pub fn new(http: crate::agent_http::HttpClient) -> Self {
        HttpReadiness { http }
    }
}

impl AgentReadiness for HttpReadiness {
    fn warm<'a>(
        &'a self,
        ip: Ipv4Addr,
        token: &'a str,
    ) -> BoxFuture<'a, std::result::Result<(), String>> {
        Box::pin(async move {
            let agent = crate::agent_client::AgentClient::new(&self.http, ip, Some(token));
            agent.post_json(WARM_PATH, b"{}".to_vec(), WARM_LIMIT).await
        })
    }

    fn prepare_kernel<'a>(
        &'a self,
        ip: Ipv4Addr,
        token: Option<&'a str>,
    ) -> BoxFuture<'a, std::result::Result<KernelPlan, String>> {
        Box::pin(async move {
            let agent = crate::agent_client::AgentClient::new(&self.http, ip, token);
            let body = agent
                .post_for_body(KERNEL_PREPARE_PATH, b"{}".to_vec(), CLAIM_LIMIT)
                .await?;
            serde_json::from_slice(&body).map_err(|e| format!("the agent's kernel plan: {e}"))
        })
    }

    fn adopt_kernel<'a>(
        &'a self,
        ip: Ipv4Addr,
        token: Option<&'a str>,
        adopt: &'a KernelAdopt,
    ) -> BoxFuture<'a, std::result::Result<(), String>> {
        Box::pin(async move {
            let agent = crate::agent_client::AgentClient::new(&self.http, ip, token);
            let body = serde_json::to_vec(adopt).map_err(|e| e.to_string())?;
            agent.post_json(KERNEL_ADOPT_PATH, body, WARM_LIMIT).await
        })
    }

    fn claim<'a>(
        &'a self,
        ip: Ipv4Addr,
        token: &'a str,
        claim: &'a Claim,
    ) -> BoxFuture<'a, std::result::Result<(), String>> {
        Box::pin(async move {
            let agent = crate::agent_client::AgentClient::new(&self.http, ip, Some(token));
            let body = serde_json::to_vec(claim).map_err(|e| e.to_string())?;
            agent.post_json(CLAIM_PATH, body, CLAIM_LIMIT).await
        })
    }

    fn wait_ready<'a>(
        &'a self,
        ip: Ipv4Addr,
        token: Option<&'a str>,
        template: Option<&'a TemplateRecord>,
        agent_up: bool,
    ) -> BoxFuture<'a, std::result::Result<(), String>> {
        Box::pin(async move {
            if !agent_up {
                crate::agent_http::wait_healthy(
                    &self.http,
                    ip,
                    hutch_contracts::agent::AGENT_PORT,
                    Duration::from_secs(15),
                )
                .await?;
            }
            // A template's start command runs in every new sandbox, which is ready once the
            // template's ready command succeeds.
            match template {
                Some(t) => {
                    let agent = crate::agent_client::AgentClient::new(&self.http, ip, token);
                    crate::startup::start_and_wait(&agent, t, false, |_| {}).await
                }
                None => Ok(()),
            }
        })
    }
}

/// A sandbox being created for a key (and its team); dropping it (created or failed) stops
/// counting it as pending.
pub(super) struct KeyReservation<'a> {
    creating: &'a Mutex<HashMap<String, u32>>,
    /// The key's id and `team:<name>`.
    counters: [String; 2],
}

impl Drop for KeyReservation<'_> {
    fn drop(&mut self) {
        let mut creating = lock(self.creating);
        for c in &self.counters {
            if let Some(n) = creating.get_mut(c) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    creating.remove(c);
                }
            }
        }
    }
}

/// Refuses environment variables no process could be given: a bad name, or a value with a
/// NUL byte (every process the sandbox started would fail).
fn validate_env(vars: &BTreeMap<String, String>) -> Result<()> {
    for (k, v) in vars {
        if !hutch_contracts::template::valid_env_name(k) {
            return Err(Invalid::EnvName(k.clone()).into());
        }
        if v.contains('\0') {
            return Err(Invalid::EnvValue(k.clone()).into());
        }
    }
    Ok(())
}

/// The server's limits, with a user-built template's own CPUs and memory.
impl Service {
    /// Refuses a sandbox whose disk image (sparse: it takes room only as it fills) could not
    /// be filled on the host's data disk as things stand: a sandbox must not be the one that
    /// fills the host's disk.
    pub(super) fn check_free_disk(&self, disk_mb: u64) -> Result<()> {
        let dir = self.runtime.state_dir();
        match hutch_sys::mount::available(dir) {
            Ok(free) if free >> 20 < disk_mb => Err(ServiceError::DiskFull {
                free_mb: free >> 20,
                needed_mb: disk_mb,
            }),
            Ok(free) => match self.defaults.disk_overcommit {
                // With an operator's ratio, what every sandbox's disk may still take
                // counts too (read from the mounted disks: O(sandboxes) statfs calls).
                Some(ratio) => {
                    let promised_mb = self.runtime.disks_unfilled() >> 20;
                    let free_mb = free >> 20;
                    if (promised_mb + disk_mb) as f64 > ratio * free_mb as f64 {
                        return Err(ServiceError::DiskOvercommitted {
                            free_mb,
                            promised_mb,
                            needed_mb: disk_mb,
                            ratio,
                        });
                    }
                    Ok(())
                }
                None => Ok(()),
            },
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot read the free disk space");
                Ok(())
            }
        }
    }
}

/// A sandbox's limits: the server's defaults, or what its template asks for up to the
/// operator's ceiling (a template built before the ceiling was lowered gets no more).
fn limits_for(defaults: &SandboxDefaults, custom: Option<&TemplateRecord>) -> Limits {
    let mut limits = defaults.limits;
    if let Some(t) = custom {
        limits.cpus = t.cpu_count.unwrap_or(limits.cpus).min(defaults.max_cpus);
        limits.memory_mb = t
            .memory_mb
            .unwrap_or(limits.memory_mb)
            .min(defaults.max_memory_mb);
    }
    limits
}

/// The agent's configuration (`HUTCH_AGENT_CONFIG`).
fn agent_config(
    id: &str,
    env_vars: &BTreeMap<String, String>,
    token: Option<&str>,
    custom: Option<&TemplateRecord>,
    interpreter: bool,
) -> AgentConfig {
    AgentConfig {
        sandbox_id: id.to_owned(),
        env_vars: env_vars.clone(),
        access_token: token.map(str::to_owned),
        default_user: custom.and_then(|t| t.user.clone()),
        default_workdir: custom.and_then(|t| t.workdir.clone()),
        interpreter: Some(interpreter),
        pooled: None,
        kernel_from_server: None,
    }
}

impl Service {
    fn allocate_slot(&self) -> Result<u32> {
        let live = lock(&self.live);
        let mut reserved = lock(&self.reserved_slots);
        let used: std::collections::HashSet<u32> = live
            .values()
            .map(|e| lock(&e.rec))
            .filter(|r| !r.is_stopped())
            .map(|r| r.slot)
            .collect();
        let slots = self.runtime.slots();
        let slot = (0..slots)
            .find(|s| !used.contains(s) && !reserved.contains(s))
            .ok_or(ServiceError::NoSlot { slots })?;
        reserved.insert(slot);
        Ok(slot)
    }

    /// Counts a sandbox about to be created against its key's and its team's limits; refuses
    /// it when either already holds (or is creating) as many as it may.
    fn reserve_for_key(&self, caller: Option<&Caller>) -> Result<Option<KeyReservation<'_>>> {
        let Some(caller) = caller else {
            return Ok(None);
        };
        let team = caller.team.name.as_str();
        let team_counter = format!("team:{team}");
        let live = lock(&self.live);
        let mut creating = lock(&self.creating);
        // Whether `max` is reached by the live sandboxes `mine` picks plus those being created
        // under `counter`.
        let full = |creating: &HashMap<String, u32>,
                    max: u32,
                    counter: &str,
                    mine: &dyn Fn(&SandboxRecord) -> bool| {
            let pending = creating.get(counter).copied().unwrap_or(0);
            let held = live.values().filter(|e| mine(&lock(&e.rec))).count() as u64;
            held + u64::from(pending) >= u64::from(max)
        };
        if let Some(max) = caller.max_sandboxes {
            if full(&creating, max, &caller.key_id, &|r| {
                r.key_id.as_deref() == Some(caller.key_id.as_str())
            }) {
                return Err(ServiceError::RateLimited { max });
            }
        }
        if let Some(max) = caller.team.max_sandboxes {
            let own = Scope::team(team);
            if full(&creating, max, &team_counter, &|r| {
                own.owns(r.team.as_deref())
            }) {
                return Err(ServiceError::TeamRateLimited {
                    team: team.to_string(),
                    max,
                });
            }
        }
        let counters = [caller.key_id.clone(), team_counter];
        for c in &counters {
            *creating.entry(c.clone()).or_insert(0) += 1;
        }
        Ok(Some(KeyReservation {
            creating: &self.creating,
            counters,
        }))
    }

    /// Creates and starts a sandbox; returns once its agent answers. A sandbox waiting in
    /// the template's warm pool is claimed when there is one; otherwise one starts cold.
    pub async fn create(&self, req: CreateRequest) -> Result<SandboxRecord> {
        let timeout = validate_timeout(req.timeout)?;
        let tpl = match &req.template {
            Some(t) => t.clone(),
            None => self
                .templates
                .resolve(&req.template_id, &Scope::of(req.caller.as_ref()))?,
        };
        validate_env(&req.env_vars)?;
        self.check_network(req.network.as_ref())?;
        let plan = super::network::EgressPlan::of(req.allow_internet_access, req.network.as_ref());
        let reservation = self.reserve_for_key(req.caller.as_ref())?;
        if req.build.is_none() && req.template.is_none() && req.volume_mounts.is_empty() {
            self.pools.record_demand(&tpl.template_id);
            self.pools.wake.notify_one();
            if let Some(rec) = self.claim_pooled(&tpl, &req, timeout, &plan).await? {
                drop(reservation);
                return Ok(rec);
            }
        }
        let _cold = self.pools.cold_start();
        let started = Instant::now();
        let _turn = match tokio::time::timeout(COLD_START_WAIT, self.cold_gate.acquire()).await {
            Ok(Ok(permit)) => permit,
            // The semaphore is never closed; a timeout means the host is saturated.
            Ok(Err(_)) | Err(_) => {
                return Err(ServiceError::Busy {
                    starting: cold_starts(),
                    waited_s: started.elapsed().as_secs(),
                })
            }
        };
        // Every sandbox's agent wants its own random access token (E2B's `secure`, which
        // hutch does not let a client turn off: otherwise the id alone would reach it).
        let token = Some(random_hex(24));
        let mut env_vars = sandbox_env(&tpl);
        env_vars.extend(req.env_vars.clone());
        let volumes: Vec<(std::path::PathBuf, String)> = req
            .volume_mounts
            .iter()
            .map(|(m, source)| (source.clone(), m.path.clone()))
            .collect();
        let launched = self
            .launch(Launch {
                tpl: &tpl,
                env_vars: &env_vars,
                token: token.as_deref(),
                allow_internet: plan.internet,
                egress: plan.policy.clone(),
                build: req.build.is_some(),
                pooled: false,
                own_kernel: req.template.is_some(),
                id: None,
                seed_upper: None,
                volumes: &volumes,
            })
            .await?;
        if plan.needs_ca {
            let ip = launched.spawned.net.sandbox_ip;
            if let Err(e) = self.install_egress_ca(ip, token.as_deref()).await {
                self.discard(&launched).await;
                return Err(e);
            }
        }
        let rec = self.record_for(&tpl, &req, timeout, &launched, token);
        let rec = self.go_live(rec, launched.slot).await?;
        drop(reservation);
        tracing::info!(sandbox = %rec.id, template = %rec.template_id, pid = rec.pid, ms = started.elapsed().as_millis() as u64, "sandbox created");
        Ok(rec)
    }

    /// The record of a sandbox just started (cold or claimed from a pool) for `req`.
    pub(super) fn record_for(
        &self,
        tpl: &ResolvedTemplate,
        req: &CreateRequest,
        timeout: u64,
        launched: &Launched,
        token: Option<String>,
    ) -> SandboxRecord {
        let now = Utc::now();
        SandboxRecord {
            id: launched.id.clone(),
            template_id: tpl.template_id.clone(),
            alias: tpl.alias.clone(),
            metadata: req.metadata.clone(),
            env_vars: req.env_vars.clone(),
            started_at: now,
            end_at: now + chrono::Duration::seconds(timeout as i64),
            state: SandboxState::Running,
            cpu_count: launched.limits.cpus,
            memory_mb: launched.limits.memory_mb,
            disk_mb: launched.limits.disk_mb,
            envd_access_token: token,
            allow_internet_access: req.allow_internet_access,
            traffic_access_token: (req.allow_public_traffic == Some(false)).then(|| random_hex(24)),
            auto_pause: req.auto_pause,
            auto_pause_filesystem: req.auto_pause_filesystem,
            auto_resume: req.auto_resume,
            slot: launched.slot,
            pid: launched.spawned.pid,
            pid_start: launched.spawned.start_time,
            key_id: req.caller.as_ref().map(|c| c.key_id.clone()),
            team: req.caller.as_ref().map(|c| c.team.name.clone()),
            layers: launched.layers.clone(),
            build: req.build.clone(),
            saved_disk: None,
            volume_mounts: req.volume_mounts.iter().map(|(m, _)| m.clone()).collect(),
            network: req.network.clone(),
        }
    }

    /// Stores `rec` and makes it live (listed, routed, timed); its slot stops being only
    /// reserved. A sandbox that cannot be stored is killed.
    pub(super) async fn go_live(&self, rec: SandboxRecord, slot: u32) -> Result<SandboxRecord> {
        let entry = Entry::new(rec.clone());
        let stored = self.store.put_sandbox(&rec);
        {
            lock(&self.live).insert(rec.id.clone(), Arc::clone(&entry));
            lock(&self.reserved_slots).remove(&slot);
        }
        if let Err(e) = stored {
            tracing::error!(sandbox = %rec.id, error = %e, "cannot store the new sandbox");
            let _ = self.kill(&rec.id).await;
            return Err(e.into());
        }
        self.sample(&entry);
        Ok(rec)
    }

    /// Spawns a sandbox and waits until it is ready; on failure nothing of it is left. Its
    /// slot stays reserved for the caller, who makes it live or pools it.
    pub(super) async fn launch(&self, l: Launch<'_>) -> Result<Launched> {
        // A user-built template brings its ENV, default user and workdir, and resources.
        let custom = l.tpl.custom.as_ref();
        let limits = limits_for(&self.defaults, custom);
        self.check_free_disk(limits.disk_mb)?;
        let id = l.id.map_or_else(new_id, str::to_string);
        let slot = self.allocate_slot()?;
        // The proxy knows the policy before the firewall sends it the sandbox's first
        // connection.
        if let Some(policy) = &l.egress {
            self.announce_policy(
                self.runtime.net_for(slot).sandbox_ip,
                Some(Arc::clone(policy)),
            );
        }
        let egress_filter = l.egress.as_ref().map(|p| p.filter());
        let mut config = agent_config(&id, l.env_vars, l.token, custom, !l.build);
        config.pooled = Some(l.pooled);
        let mut zygote = if l.build || l.own_kernel {
            None
        } else {
            self.zygote_for(l.tpl, l.env_vars)
        };
        let spec_for = |zygote: Option<&Arc<crate::zygote::Zygote>>| {
            let mut config = config.clone();
            config.kernel_from_server = zygote.map(|_| true);
            SandboxSpec {
                id: id.clone(),
                template_layers: l.tpl.layers.clone(),
                limits,
                allow_internet: l.allow_internet,
                slot,
                agent_env: vec![
                    ("PATH".into(), SANDBOX_PATH.into()),
                    (CONFIG_ENV.into(), config.to_json()),
                ],
                parent_userns: zygote.map(|z| z.owner),
                seed_upper: l.seed_upper.map(std::path::Path::to_path_buf),
                volumes: l.volumes.to_vec(),
                egress_filter: egress_filter.clone(),
            }
        };
        let spec = spec_for(zygote.as_ref());
        let mut spawned = self.blocking(move |rt| rt.create(&spec)).await;
        if let (Ok(Err(e)), Some(z)) = (&spawned, &zygote) {
            // The zygote died meanwhile (the next create starts another), or the host
            // refuses what nesting needs (a user namespace inside another, the agent's path
            // closed to the zygote's ids): start it the usual way, and in the second case
            // stop using this template's zygote.
            // An exiting zygote has dropped its namespaces before it is a zombie.
            let zygote_there = hutch_runtime::proc::is_alive(z.owner.pid, z.owner.start_time)
                && std::fs::File::open(format!("/proc/{}/ns/user", z.owner.pid)).is_ok();
            if zygote_there {
                tracing::warn!(sandbox = %id, error = %e, "cannot start a sandbox inside the zygote's user namespace; starting it without, and no longer using the zygote");
                self.zygotes.refuse(&l.tpl.template_id);
            } else {
                tracing::info!(sandbox = %id, "the zygote exited; starting the sandbox without it");
            }
            zygote = None;
            let spec = spec_for(None);
            spawned = self.blocking(move |rt| rt.create(&spec)).await;
        }
        let spawned = match spawned {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                lock(&self.reserved_slots).remove(&slot);
                tracing::error!(sandbox = %id, error = %e, "sandbox creation failed");
                return Err(ServiceError::runtime(RuntimeOp::Create, &id, e));
            }
            Err(e) => {
                lock(&self.reserved_slots).remove(&slot);
                return Err(e);
            }
        };
        // A template's start command runs in every sandbox but a build's.
        let start_cmd_of = custom.filter(|_| !l.build);
        let ready = self
            .readiness
            .wait_ready(
                spawned.net.sandbox_ip,
                l.token,
                start_cmd_of,
                spawned.agent_up,
            )
            .await;
        let launched = Launched {
            id,
            slot,
            spawned,
            limits,
            layers: l.tpl.layers.clone(),
        };
        if let Err(e) = ready {
            tracing::error!(sandbox = %launched.id, error = %e, "sandbox did not become ready");
            self.discard(&launched).await;
            return Err(ServiceError::NotReady(e));
        }
        if let Some(z) = zygote {
            if let Err(e) = self.hand_in_kernel(&launched, l.token, &z).await {
                tracing::warn!(sandbox = %launched.id, error = %e, "cannot fork a kernel from the zygote; the sandbox starts its own");
            }
        }
        Ok(launched)
    }

    /// Destroys a started sandbox that never became live, and frees its slot.
    pub(super) async fn discard(&self, l: &Launched) {
        let (id, net, init) = (
            l.id.clone(),
            l.spawned.net.clone(),
            (l.spawned.pid, l.spawned.start_time),
        );
        match self
            .blocking(move |rt| rt.destroy(&id, Some(&net), Some(init)))
            .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(sandbox = %l.id, error = %e, "cleanup failed"),
            Err(e) => tracing::warn!(sandbox = %l.id, error = %e, "cleanup failed"),
        }
        lock(&self.reserved_slots).remove(&l.slot);
    }
}

/// What [`Service::launch`] starts.
pub(super) struct Launch<'a> {
    pub tpl: &'a ResolvedTemplate,
    /// Every variable the sandbox's processes get (the template's and the request's).
    pub env_vars: &'a BTreeMap<String, String>,
    pub token: Option<&'a str>,
    pub allow_internet: bool,
    /// Its egress policy, when it has one the proxy and a filter enforce.
    pub egress: Option<Arc<crate::egress::policy::Compiled>>,
    /// A template build's sandbox: no interpreter, no start command.
    pub build: bool,
    /// Started for a warm pool.
    pub pooled: bool,
    /// Its kernels start in it rather than from the template's zygote (a fork: its
    /// filesystem is not the template's).
    pub own_kernel: bool,
    /// Its id, when it has one already (a sandbox paused without memory, booting again).
    pub id: Option<&'a str>,
    /// What its upper dir starts with (that sandbox's saved filesystem).
    pub seed_upper: Option<&'a std::path::Path>,
    /// Volumes: where each is mounted on the host, and its path inside.
    pub volumes: &'a [(std::path::PathBuf, String)],
}

/// A sandbox [`Service::launch`] started, ready but not yet live.
#[derive(Debug, Clone)]
pub(crate) struct Launched {
    pub id: String,
    pub slot: u32,
    pub spawned: Spawned,
    pub limits: Limits,
    pub layers: Vec<std::path::PathBuf>,
}

/// The variables a template gives every process (a user-built template's ENV).
pub(super) fn sandbox_env(tpl: &ResolvedTemplate) -> BTreeMap<String, String> {
    tpl.custom
        .as_ref()
        .map(|t| t.env.clone())
        .unwrap_or_default()
}
