//! Creating sandboxes: request checks, network slots, per-key quotas, the agent's
//! configuration, and the wait until the new sandbox is ready.

use hutch_contracts::agent::{AgentConfig, CONFIG_ENV};
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::future::BoxFuture;
use hutch_runtime::{Limits, SandboxSpec};

use super::{lock, validate_timeout, Entry, Invalid, Result, RuntimeOp, Service, ServiceError};
use crate::sandbox::{new_id, random_hex, SandboxRecord, SandboxState};
use crate::store::Caller;
use crate::templates::TemplateRecord;

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

/// How the service learns that a new sandbox is ready to use.
pub trait AgentReadiness: Send + Sync + 'static {
    /// Waits until the agent at `ip` answers and, when `template` is given (a user-built
    /// template, outside of builds), its start command is up. The error is the message.
    fn wait_ready<'a>(
        &'a self,
        ip: Ipv4Addr,
        token: Option<&'a str>,
        template: Option<&'a TemplateRecord>,
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
    fn wait_ready<'a>(
        &'a self,
        ip: Ipv4Addr,
        token: Option<&'a str>,
        template: Option<&'a TemplateRecord>,
    ) -> BoxFuture<'a, std::result::Result<(), String>> {
        Box::pin(async move {
            crate::agent_http::wait_healthy(
                &self.http,
                ip,
                hutch_contracts::agent::AGENT_PORT,
                Duration::from_secs(15),
            )
            .await?;
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

/// A sandbox being created for a key; dropping it (created or failed) stops counting it as pending.
pub(super) struct KeyReservation<'a> {
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

/// Refuses environment variable names no process could be given.
fn validate_env(vars: &BTreeMap<String, String>) -> Result<()> {
    match vars
        .keys()
        .find(|k| !hutch_contracts::template::valid_env_name(k))
    {
        Some(k) => Err(Invalid::EnvName(k.clone()).into()),
        None => Ok(()),
    }
}

/// The server's limits, with a user-built template's own CPUs and memory.
fn limits_for(mut limits: Limits, custom: Option<&TemplateRecord>) -> Limits {
    if let Some(t) = custom {
        limits.cpus = t.cpu_count.unwrap_or(limits.cpus);
        limits.memory_mb = t.memory_mb.unwrap_or(limits.memory_mb);
    }
    limits
}

/// The agent's configuration (`HUTCH_AGENT_CONFIG`), as JSON.
fn agent_config(
    id: &str,
    env_vars: &BTreeMap<String, String>,
    token: Option<&str>,
    custom: Option<&TemplateRecord>,
    interpreter: bool,
) -> String {
    AgentConfig {
        sandbox_id: id.to_owned(),
        env_vars: env_vars.clone(),
        access_token: token.map(str::to_owned),
        default_user: custom.and_then(|t| t.user.clone()),
        default_workdir: custom.and_then(|t| t.workdir.clone()),
        interpreter: Some(interpreter),
    }
    .to_json()
}

impl Service {
    fn allocate_slot(&self) -> Result<u32> {
        let live = lock(&self.live);
        let mut reserved = lock(&self.reserved_slots);
        let used: std::collections::HashSet<u32> =
            live.values().map(|e| lock(&e.rec).slot).collect();
        let slots = self.runtime.slots();
        let slot = (0..slots)
            .find(|s| !used.contains(s) && !reserved.contains(s))
            .ok_or(ServiceError::NoSlot { slots })?;
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
                return Err(ServiceError::RateLimited { max });
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
        validate_env(&req.env_vars)?;
        let _reservation = self.reserve_for_key(req.caller.as_ref())?;
        let id = new_id();
        // A secure sandbox's agent wants a random access token.
        let token = req.secure.then(|| random_hex(24));
        let slot = self.allocate_slot()?;
        // A user-built template brings its ENV, default user and workdir, and resources.
        let custom = tpl.custom.as_ref();
        let mut env_vars = custom.map(|t| t.env.clone()).unwrap_or_default();
        env_vars.extend(req.env_vars.clone());
        let limits = limits_for(self.defaults.limits, custom);
        let config = agent_config(
            &id,
            &env_vars,
            token.as_deref(),
            custom,
            req.build.is_none(),
        );
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
                (CONFIG_ENV.into(), config),
            ],
        };
        let started = Instant::now();
        let spawned = match self.blocking(move |rt| rt.create(&spec)).await {
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
        let start_cmd_of = custom.filter(|_| req.build.is_none());
        let ready = self
            .readiness
            .wait_ready(
                spawned.net.sandbox_ip,
                rec.envd_access_token.as_deref(),
                start_cmd_of,
            )
            .await;
        let entry = Entry::new(rec.clone());
        let stored = self.store.put_sandbox(&rec);
        {
            lock(&self.live).insert(id.clone(), Arc::clone(&entry));
            lock(&self.reserved_slots).remove(&slot);
        }
        if let Err(e) = ready
            .map_err(ServiceError::NotReady)
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
}
