//! The service's side of warm pools ([`super::pool`]): claiming a waiting sandbox for a
//! create, the loop that keeps every pool at its target, the pools' sizes and what the API
//! shows of them, and draining them at shutdown.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hutch_contracts::agent::Claim;

use super::create::{sandbox_env, Launch};
use super::pool::{Count, CountGuard, PoolInfo, PoolSize, Pooled};
use super::{lock, CreateRequest, Invalid, Result, Service};
use crate::sandbox::{random_hex, SandboxRecord};
use crate::templates::{ResolvedTemplate, TemplateLookupError};
use crate::tenancy::Scope;

/// Refills running at once, across all pools: background work, kept small on purpose.
const FILL_CONCURRENCY: u32 = 1;

/// How long a pool whose refill failed waits before trying again.
const FILL_RETRY: Duration = Duration::from_secs(10);

impl Service {
    /// Claims a sandbox waiting in `tpl`'s pool for `req`. `None` when the pool has none, or
    /// when the claim failed (that sandbox is destroyed; the caller starts one cold).
    pub(super) async fn claim_pooled(
        &self,
        tpl: &ResolvedTemplate,
        req: &CreateRequest,
        timeout: u64,
        plan: &super::network::EgressPlan,
    ) -> Result<Option<SandboxRecord>> {
        let (pooled, stale) = self.pools.take(&tpl.template_id, &tpl.layers);
        for p in stale {
            self.discard(&p.sandbox).await;
        }
        let Some(p) = pooled else {
            return Ok(None);
        };
        // One fewer waiting: the pool loop refills.
        self.pools.wake.notify_one();
        let started = Instant::now();
        let Pooled {
            sandbox: launched,
            token: pool_token,
        } = p;
        self.set_priority(&launched.id, false).await;
        if !plan.internet || plan.policy.is_some() {
            if let Err(e) = self.apply_plan(&launched.id, launched.slot, plan).await {
                tracing::warn!(sandbox = %launched.id, error = %e, "cannot restrict a pooled sandbox's egress; starting one cold");
                self.discard(&launched).await;
                return Ok(None);
            }
        }
        let token = Some(random_hex(24));
        let mut env_vars = sandbox_env(tpl);
        env_vars.extend(req.env_vars.clone());
        let claim = Claim {
            env_vars,
            access_token: token.clone(),
        };
        let ip = launched.spawned.net.sandbox_ip;
        if let Err(e) = self.readiness.claim(ip, &pool_token, &claim).await {
            tracing::warn!(sandbox = %launched.id, error = %e, "claiming a pooled sandbox failed; starting one cold");
            self.discard(&launched).await;
            return Ok(None);
        }
        if plan.needs_ca {
            if let Err(e) = self.install_egress_ca(ip, token.as_deref()).await {
                tracing::warn!(sandbox = %launched.id, error = %e, "cannot give a pooled sandbox the egress CA; starting one cold");
                self.discard(&launched).await;
                return Ok(None);
            }
        }
        let rec = self.record_for(tpl, req, timeout, &launched, token);
        let rec = self.go_live(rec, launched.slot).await?;
        tracing::info!(sandbox = %rec.id, template = %rec.template_id, pid = rec.pid, us = started.elapsed().as_micros() as u64, "sandbox created from the warm pool");
        Ok(Some(rec))
    }

    /// Keeps every pool at its target until the server stops.
    pub async fn pool_loop(self: Arc<Self>) {
        let mut retry_at: HashMap<String, Instant> = HashMap::new();
        loop {
            self.pools.idle().await;
            if self.pools.closed() {
                return;
            }
            self.tend_pools(&mut retry_at);
        }
    }

    /// One look at every pool: drops waiting sandboxes of rebuilt or unconfigured
    /// templates, shrinks pools above their target and starts a refill when one is short
    /// and nothing more urgent runs.
    pub(super) fn tend_pools(self: &Arc<Self>, retry_at: &mut HashMap<String, Instant>) {
        if self.pools.closed() {
            return;
        }
        let now = Instant::now();
        for template_id in lock(&self.pools.fill_failed).drain() {
            retry_at.insert(template_id, now + FILL_RETRY);
        }
        let sizes = lock(&self.pools.sizes).clone();
        let mut configured = HashSet::new();
        let mut doomed: Vec<(String, Pooled)> = Vec::new();
        let mut short: Vec<(ResolvedTemplate, u32)> = Vec::new();
        for (name, size) in sizes {
            let tpl = match self.templates.resolve(&name, &Scope::operator()) {
                Ok(tpl) => tpl,
                // Still building (the defaults at first start): nothing to fill from yet,
                // and nothing to drain either.
                Err(TemplateLookupError::Building(_)) => {
                    configured.insert(name);
                    continue;
                }
                Err(_) => continue,
            };
            configured.insert(tpl.template_id.clone());
            let target = size.target(self.pools.demand(&tpl.template_id));
            {
                let mut ready = lock(&self.pools.ready);
                let q = ready.entry(tpl.template_id.clone()).or_default();
                let (keep, stale): (Vec<_>, Vec<_>) =
                    q.drain(..).partition(|p| p.sandbox.layers == tpl.layers);
                q.extend(keep);
                while q.len() as u32 > target {
                    // The newest goes first: the oldest have waited longest to be claimed.
                    doomed.extend(q.pop_back().map(|p| (tpl.template_id.clone(), p)));
                }
                doomed.extend(stale.into_iter().map(|p| (tpl.template_id.clone(), p)));
            }
            let have = self.pools.ready_count(&tpl.template_id)
                + self.pools.starting_count(&tpl.template_id);
            if have < target {
                short.push((tpl, target - have));
            }
        }
        // Pools no longer configured (or whose template is gone) are drained.
        {
            let mut ready = lock(&self.pools.ready);
            ready.retain(|template_id, q| {
                let keep = configured.contains(template_id);
                if !keep {
                    doomed.extend(q.drain(..).map(|p| (template_id.clone(), p)));
                }
                keep
            });
        }
        for (template_id, p) in doomed {
            let svc = Arc::clone(self);
            let stopping = CountGuard::new(&self.pools, Count::Stopping, &template_id);
            tokio::spawn(async move {
                svc.discard(&p.sandbox).await;
                drop(stopping);
            });
        }
        let starting: u32 = lock(&self.pools.starting).values().sum();
        if starting >= FILL_CONCURRENCY || self.pools.cold_running() {
            return;
        }
        // The pool furthest below its target first.
        short.sort_by_key(|(_, missing)| std::cmp::Reverse(*missing));
        if let Some((tpl, _)) = short
            .into_iter()
            .find(|(tpl, _)| retry_at.get(&tpl.template_id).is_none_or(|t| *t <= now))
        {
            let guard = CountGuard::new(&self.pools, Count::Starting, &tpl.template_id);
            let svc = Arc::clone(self);
            retry_at.remove(&tpl.template_id);
            let failed = Arc::clone(&self.pools);
            tokio::spawn(async move {
                if !svc.fill(&tpl, guard).await {
                    lock(&failed.fill_failed).insert(tpl.template_id.clone());
                }
            });
        }
    }

    /// Starts one sandbox of `tpl` for its pool and warms it; false when that failed.
    async fn fill(&self, tpl: &ResolvedTemplate, _starting: CountGuard) -> bool {
        let started = Instant::now();
        let token = random_hex(24);
        let env_vars = sandbox_env(tpl);
        let launched = match self
            .launch(Launch {
                tpl,
                env_vars: &env_vars,
                token: Some(&token),
                allow_internet: true,
                egress: None,
                build: false,
                pooled: true,
                own_kernel: false,
                id: None,
                seed_upper: None,
                volumes: &[],
            })
            .await
        {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(template = %tpl.template_id, error = %e, "cannot start a sandbox for the warm pool");
                return false;
            }
        };
        // Warming up (the kernel's boot) yields the CPUs to every sandbox in use.
        self.set_priority(&launched.id, true).await;
        let ip = launched.spawned.net.sandbox_ip;
        if let Err(e) = self.readiness.warm(ip, &token).await {
            tracing::warn!(sandbox = %launched.id, template = %tpl.template_id, error = %e, "cannot warm a pooled sandbox");
            self.discard(&launched).await;
            return false;
        }
        if self.pools.closed() {
            self.discard(&launched).await;
            return true;
        }
        tracing::info!(sandbox = %launched.id, template = %tpl.template_id, ms = started.elapsed().as_millis() as u64, "pooled sandbox ready");
        lock(&self.pools.ready)
            .entry(tpl.template_id.clone())
            .or_default()
            .push_back(Pooled {
                sandbox: launched,
                token,
            });
        true
    }

    /// Sets the pool sizes the server starts with: `flags`, overridden by sizes set
    /// through the API before (kept in the database).
    pub fn configure_pools(&self, flags: BTreeMap<String, PoolSize>) {
        let mut sizes = flags;
        match self.store.pools() {
            Ok(saved) => sizes.extend(saved),
            Err(e) => tracing::warn!(error = %e, "cannot read the saved pool sizes"),
        }
        for (name, size) in &sizes {
            tracing::info!(template = %name, min = size.min, max = size.max, "warm pool");
        }
        *lock(&self.pools.sizes) = sizes;
        self.pools.wake.notify_one();
    }

    /// Sets the sizes of `template`'s pool (kept across restarts).
    pub fn set_pool(&self, template: &str, min: u32, max: u32) -> Result<PoolInfo> {
        let size = PoolSize::new(min, max).map_err(Invalid::PoolSize)?;
        let tpl = self.templates.resolve(template, &Scope::operator())?;
        let key = tpl.template_id.clone();
        {
            let mut sizes = lock(&self.pools.sizes);
            // The same template may be configured under another name (a flag's alias).
            let aliases: Vec<String> = sizes
                .keys()
                .filter(|k| {
                    self.templates
                        .resolve(k, &Scope::operator())
                        .is_ok_and(|t| t.template_id == tpl.template_id)
                })
                .cloned()
                .collect();
            for k in aliases {
                sizes.remove(&k);
                let _ = self.store.delete_pool(&k);
            }
            sizes.insert(key.clone(), size);
        }
        self.store.put_pool(&key, size)?;
        self.pools.wake.notify_one();
        tracing::info!(template = %key, min, max, "warm pool resized");
        self.pool_info(template)
    }

    /// What `template`'s pool looks like (sizes 0 when it has none).
    pub fn pool_info(&self, template: &str) -> Result<PoolInfo> {
        let tpl = self.templates.resolve(template, &Scope::operator())?;
        let sizes = lock(&self.pools.sizes).clone();
        let configured = sizes.into_iter().find(|(k, _)| {
            self.templates
                .resolve(k, &Scope::operator())
                .is_ok_and(|t| t.template_id == tpl.template_id)
        });
        let (name, size) =
            configured.unwrap_or((tpl.template_id.clone(), PoolSize { min: 0, max: 0 }));
        Ok(self.info_of(&tpl.template_id, name, size))
    }

    /// Every configured pool.
    pub fn pools_info(&self) -> Vec<PoolInfo> {
        let sizes = lock(&self.pools.sizes).clone();
        sizes
            .into_iter()
            .map(|(name, size)| {
                let template_id = self
                    .templates
                    .resolve(&name, &Scope::operator())
                    .map(|t| t.template_id)
                    .unwrap_or_else(|_| name.clone());
                self.info_of(&template_id, name, size)
            })
            .collect()
    }

    fn info_of(&self, template_id: &str, name: String, size: PoolSize) -> PoolInfo {
        let demand = self.pools.demand(template_id);
        PoolInfo {
            template_id: template_id.to_owned(),
            name,
            min: size.min,
            max: size.max,
            target: size.target(demand),
            ready: self.pools.ready_count(template_id),
            starting: self.pools.starting_count(template_id),
            stopping: self.pools.stopping_count(template_id),
            demand: u32::try_from(demand).unwrap_or(u32::MAX),
            zygote: self.zygotes.info(template_id),
        }
    }

    /// Stops refilling and destroys every waiting sandbox (at shutdown: nobody could claim
    /// them, and the next start would only remove them).
    pub async fn drain_pools(&self) {
        self.pools.close();
        let all = self.pools.drain_all();
        let n = all.len();
        for p in all {
            self.discard(&p.sandbox).await;
        }
        if n > 0 {
            tracing::info!(sandboxes = n, "warm pools drained");
        }
    }

    /// Gives up what the runtime keeps for sandboxes to come (at shutdown, after the pools).
    pub async fn release_kept(&self) {
        if let Err(e) = self.blocking(|rt| rt.release_kept()).await {
            tracing::warn!(error = %e, "kept sandbox disks stay until the next start");
        }
    }
}

impl Service {
    /// Sets a pooled sandbox's CPU share; a failure costs only priority, so it is logged.
    async fn set_priority(&self, id: &str, low: bool) {
        let sid = id.to_owned();
        match self
            .blocking(move |rt| rt.set_low_priority(&sid, low))
            .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(sandbox = %id, low, error = %e, "cannot set the CPU share")
            }
            Err(e) => tracing::warn!(sandbox = %id, low, error = %e, "cannot set the CPU share"),
        }
    }
}
