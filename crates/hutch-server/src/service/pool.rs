//! Warm pools: per template, sandboxes that are fully started (agent up, the default Python
//! kernel running and past a first execution) and wait to be claimed by a create.
//!
//! A pooled sandbox is spawned like any other, with a one-off pool token as its agent's
//! access token and `pooled` set in its configuration. It is in no list, counts against no
//! key, has no end time and is not stored: a restart of `hutch serve` finds it among the
//! leftovers and removes it, and a graceful shutdown destroys it. A create that claims one
//! gives it its variables and access token over the agent's claim route (the id, hostname,
//! limits and layers were the template's all along), applies the request's egress setting,
//! and turns it into a live sandbox with the request's metadata, timeout and owner.
//!
//! Sizes are per template: `min` sandboxes are always kept ready, and up to `max` while
//! recent demand (creates in the last [`DEMAND_WINDOW`]) asks for them. Refills run in the
//! background one at a time, and only while no cold create is starting, so a burst of
//! users never waits behind them. A template rebuilt or deleted drains its pool.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::create::Launched;
use super::lock;

/// How far back creates count as demand.
pub const DEMAND_WINDOW: Duration = Duration::from_secs(60);

/// How often the pool loop looks at every pool when nothing wakes it.
const TICK: Duration = Duration::from_millis(500);

/// Largest pool size accepted (each waiting sandbox holds memory and an address).
pub const MAX_POOL_SIZE: u32 = 1000;

/// A pool's configured sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolSize {
    /// Sandboxes always kept ready.
    pub min: u32,
    /// Most sandboxes kept ready when demand asks for them (at least `min`).
    pub max: u32,
}

impl PoolSize {
    /// Parses `MIN` or `MIN:MAX`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let num = |t: &str| {
            t.trim()
                .parse::<u32>()
                .map_err(|_| format!("{t:?} is not a pool size (a whole number)"))
        };
        let (min, max) = match s.split_once(':') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => {
                let n = num(s)?;
                (n, n)
            }
        };
        PoolSize::new(min, max)
    }

    /// Checks `min <= max <= MAX_POOL_SIZE`.
    pub fn new(min: u32, max: u32) -> Result<Self, String> {
        if min > max {
            return Err(format!("pool min {min} is larger than its max {max}"));
        }
        if max > MAX_POOL_SIZE {
            return Err(format!(
                "pool size {max} is above the limit of {MAX_POOL_SIZE}"
            ));
        }
        Ok(PoolSize { min, max })
    }

    /// How many sandboxes to keep ready with `demand` creates in the last window: the
    /// demand, within `min..=max`.
    pub fn target(self, demand: usize) -> u32 {
        let demand = u32::try_from(demand).unwrap_or(u32::MAX);
        demand.clamp(self.min, self.max)
    }
}

/// Parses `TEMPLATE=MIN[:MAX]` (the `--pool` flag).
pub fn parse_flag(s: &str) -> Result<(String, PoolSize), String> {
    let (name, size) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected TEMPLATE=MIN[:MAX]"))?;
    let name = name.trim();
    if name.is_empty() {
        return Err(format!("{s:?}: no template name"));
    }
    Ok((name.to_owned(), PoolSize::parse(size)?))
}

/// One sandbox waiting in a pool.
#[derive(Debug, Clone)]
pub(crate) struct Pooled {
    /// The started sandbox; its layers are the ones it was started from (a rebuilt
    /// template has new ones).
    pub sandbox: Launched,
    /// The agent's access token until the claim.
    pub token: String,
}

/// What a pool looks like, for the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolInfo {
    /// The template's id.
    #[serde(rename = "templateID")]
    pub template_id: String,
    /// The name the pool was configured with.
    pub name: String,
    /// Sandboxes always kept ready.
    pub min: u32,
    /// Most kept ready under demand.
    pub max: u32,
    /// What the pool is being filled to now.
    pub target: u32,
    /// Sandboxes ready to be claimed.
    pub ready: u32,
    /// Sandboxes being started for it.
    pub starting: u32,
    /// Its sandboxes being destroyed (the pool shrank, or its template changed).
    pub stopping: u32,
    /// Creates from this template in the last minute.
    pub demand: u32,
    /// The template's zygote, while one runs.
    pub zygote: Option<crate::zygote::ZygoteInfo>,
}

/// Every pool's configuration, waiting sandboxes and demand.
#[derive(Default)]
pub(crate) struct Pools {
    /// Configured sizes by template name (as configured: a name or an id).
    pub sizes: Mutex<BTreeMap<String, PoolSize>>,
    /// Waiting sandboxes by template id, oldest first.
    pub ready: Mutex<HashMap<String, VecDeque<Pooled>>>,
    /// Sandboxes being started, by template id.
    pub starting: Mutex<HashMap<String, u32>>,
    /// Waiting sandboxes being destroyed, by template id.
    pub stopping: Mutex<HashMap<String, u32>>,
    /// Recent creates by template id.
    pub demand: Mutex<HashMap<String, VecDeque<Instant>>>,
    /// Cold creates in progress: refills wait while there are any.
    pub cold: AtomicU32,
    /// Wakes the pool loop (a claim, a new size, a finished cold create).
    pub wake: tokio::sync::Notify,
    /// Templates whose last refill failed (the loop backs off from them).
    pub fill_failed: Mutex<HashSet<String>>,
    /// Set at shutdown: no more refills, and refills in flight discard what they made.
    closed: AtomicBool,
}

impl Pools {
    /// Counts a create from `template_id` as demand.
    pub fn record_demand(&self, template_id: &str) {
        let now = Instant::now();
        let mut demand = lock(&self.demand);
        let q = demand.entry(template_id.to_owned()).or_default();
        q.push_back(now);
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) > DEMAND_WINDOW)
        {
            q.pop_front();
        }
    }

    /// Creates from `template_id` within the demand window.
    pub fn demand(&self, template_id: &str) -> usize {
        let now = Instant::now();
        lock(&self.demand).get(template_id).map_or(0, |q| {
            q.iter()
                .filter(|t| now.duration_since(**t) <= DEMAND_WINDOW)
                .count()
        })
    }

    /// Takes the oldest waiting sandbox of `template_id` started from `layers`; the ones
    /// started from other layers (a template since rebuilt) are returned to be destroyed.
    pub fn take(&self, template_id: &str, layers: &[PathBuf]) -> (Option<Pooled>, Vec<Pooled>) {
        let mut ready = lock(&self.ready);
        let Some(q) = ready.get_mut(template_id) else {
            return (None, Vec::new());
        };
        let mut stale = Vec::new();
        while let Some(p) = q.pop_front() {
            if p.sandbox.layers == layers {
                return (Some(p), stale);
            }
            stale.push(p);
        }
        (None, stale)
    }

    /// Number of waiting sandboxes of `template_id`.
    pub fn ready_count(&self, template_id: &str) -> u32 {
        lock(&self.ready)
            .get(template_id)
            .map_or(0, |q| q.len() as u32)
    }

    /// Number of sandboxes being started for `template_id`.
    pub fn starting_count(&self, template_id: &str) -> u32 {
        lock(&self.starting).get(template_id).copied().unwrap_or(0)
    }

    /// Number of `template_id`'s sandboxes being destroyed.
    pub fn stopping_count(&self, template_id: &str) -> u32 {
        lock(&self.stopping).get(template_id).copied().unwrap_or(0)
    }

    /// Removes and returns every waiting sandbox.
    pub fn drain_all(&self) -> Vec<Pooled> {
        lock(&self.ready)
            .drain()
            .flat_map(|(_, q)| q.into_iter())
            .collect()
    }

    /// Waits until woken or a tick passes.
    pub async fn idle(&self) {
        let _ = tokio::time::timeout(TICK, self.wake.notified()).await;
    }

    /// A cold create starts; refills pause until it ends (the guard).
    pub fn cold_start(self: &Arc<Self>) -> ColdGuard {
        self.cold.fetch_add(1, Ordering::SeqCst);
        ColdGuard(Arc::clone(self))
    }

    /// Stops the pools for good (shutdown).
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// True once [`Pools::close`] was called.
    pub fn closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// True while any cold create runs.
    pub fn cold_running(&self) -> bool {
        self.cold.load(Ordering::SeqCst) > 0
    }
}

/// Counts one cold create while alive.
pub(crate) struct ColdGuard(Arc<Pools>);

impl Drop for ColdGuard {
    fn drop(&mut self) {
        self.0.cold.fetch_sub(1, Ordering::SeqCst);
        self.0.wake.notify_one();
    }
}

/// Which of a pool's in-flight counts a [`CountGuard`] holds.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Count {
    /// A sandbox being started for the pool.
    Starting,
    /// A waiting sandbox being destroyed.
    Stopping,
}

/// Counts one sandbox of a template as starting or stopping while alive.
pub(crate) struct CountGuard {
    pools: Arc<Pools>,
    which: Count,
    template_id: String,
}

impl CountGuard {
    /// Counts one sandbox of `template_id`.
    pub fn new(pools: &Arc<Pools>, which: Count, template_id: &str) -> Self {
        *lock(pools.map(which))
            .entry(template_id.to_owned())
            .or_insert(0) += 1;
        CountGuard {
            pools: Arc::clone(pools),
            which,
            template_id: template_id.to_owned(),
        }
    }
}

impl Pools {
    fn map(&self, which: Count) -> &Mutex<HashMap<String, u32>> {
        match which {
            Count::Starting => &self.starting,
            Count::Stopping => &self.stopping,
        }
    }
}

impl Drop for CountGuard {
    fn drop(&mut self) {
        let mut counts = lock(self.pools.map(self.which));
        if let Some(n) = counts.get_mut(&self.template_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.template_id);
            }
        }
        drop(counts);
        self.pools.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hutch_runtime::{Limits, Spawned};

    #[test]
    fn sizes_parse_from_flags() {
        assert_eq!(
            parse_flag("code-interpreter-v1=2:8"),
            Ok(("code-interpreter-v1".into(), PoolSize { min: 2, max: 8 }))
        );
        assert_eq!(
            parse_flag("base=3"),
            Ok(("base".into(), PoolSize { min: 3, max: 3 }))
        );
        assert!(parse_flag("base").is_err());
        assert!(parse_flag("=1").is_err());
        assert!(parse_flag("base=4:2").is_err());
        assert!(parse_flag("base=x").is_err());
        assert!(parse_flag("base=0:100000").is_err());
    }

    #[test]
    fn the_target_follows_demand_within_the_bounds() {
        let size = PoolSize { min: 1, max: 8 };
        assert_eq!(size.target(0), 1);
        assert_eq!(size.target(5), 5);
        assert_eq!(size.target(50), 8);
        assert_eq!(PoolSize { min: 0, max: 0 }.target(50), 0);
    }

    fn pooled(id: &str, layer: &str) -> Pooled {
        Pooled {
            sandbox: Launched {
                id: id.into(),
                slot: 0,
                spawned: Spawned {
                    pid: 1,
                    start_time: 1,
                    net: hutch_runtime::NetConfig::default().slot(0),
                    agent_up: false,
                },
                layers: vec![PathBuf::from(layer)],
                limits: Limits {
                    memory_mb: 1,
                    cpus: 1,
                    pids: 1,
                    disk_mb: 1,
                },
            },
            token: "t".into(),
        }
    }

    #[test]
    fn take_skips_and_returns_sandboxes_of_an_older_build() {
        let pools = Pools::default();
        lock(&pools.ready).insert(
            "t".into(),
            VecDeque::from([
                pooled("a", "/old"),
                pooled("b", "/new"),
                pooled("c", "/new"),
            ]),
        );
        let (got, stale) = pools.take("t", &[PathBuf::from("/new")]);
        assert_eq!(got.map(|p| p.sandbox.id), Some("b".into()));
        assert_eq!(
            stale.into_iter().map(|p| p.sandbox.id).collect::<Vec<_>>(),
            ["a"]
        );
        assert_eq!(pools.ready_count("t"), 1);
        let (none, _) = pools.take("other", &[]);
        assert!(none.is_none());
    }

    #[test]
    fn demand_counts_recent_creates() {
        let pools = Pools::default();
        for _ in 0..3 {
            pools.record_demand("t");
        }
        assert_eq!(pools.demand("t"), 3);
        assert_eq!(pools.demand("u"), 0);
    }
}
