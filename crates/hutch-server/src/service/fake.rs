//! Test doubles for the service: an in-memory [`SandboxRuntime`] that records its calls and
//! can be told to fail, an [`AgentReadiness`] that answers at once, and a harness that
//! builds a [`Service`] over them with a SQLite store in a temporary directory. Nothing
//! here needs root.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use hutch_contracts::agent::Claim;
use hutch_runtime::runtime::Usage;
use hutch_runtime::{Limits, NetConfig, RuntimeError, SandboxNet, SandboxSpec, Spawned};

use super::{lock, AgentReadiness, CreateRequest, SandboxDefaults, Service, ServiceError};
use crate::runtime::{RuntimeResult, SandboxRuntime};
use crate::sandbox::SandboxRecord;
use crate::store::{Caller, Store};
use crate::templates::{TemplateRecord, Templates};

/// A runtime operation the fake can be told to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Create,
    Destroy,
    Pause,
    Resume,
    Usage,
    Commit,
}

/// One call the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    LowPriority {
        id: String,
        low: bool,
    },
    SetEgressFilter {
        slot: u32,
        filtered: bool,
    },
    SetInternet {
        slot: u32,
        allowed: bool,
    },
    Create {
        id: String,
        slot: u32,
    },
    Destroy {
        id: String,
        net: Option<u32>,
        init: Option<(i32, u64)>,
    },
    Pause(String),
    Resume(String),
    Commit {
        id: String,
        dest: PathBuf,
    },
    ReleaseSlot(u32),
}

#[derive(Default)]
struct State {
    calls: Vec<Call>,
    specs: Vec<SandboxSpec>,
    alive: HashSet<(i32, u64)>,
    failing: HashSet<Op>,
    leftover_ids: Vec<String>,
    leftover_slots: Vec<u32>,
    next_pid: i32,
    usage: Usage,
}

/// An in-memory sandbox runtime.
pub struct FakeRuntime {
    state: Mutex<State>,
    state_dir: PathBuf,
    net: NetConfig,
    /// What [`SandboxRuntime::disks_unfilled`] answers.
    pub disks_unfilled: std::sync::atomic::AtomicU64,
}

impl FakeRuntime {
    /// A runtime with `slots` network slots keeping state under `state_dir`.
    pub fn new(state_dir: &Path, slots: u32) -> Self {
        // Each slot is a /30: the prefix that gives exactly `slots` of them.
        let prefix = 32 - (slots * 4).next_power_of_two().trailing_zeros() as u8;
        FakeRuntime {
            state: Mutex::new(State {
                next_pid: 1000,
                ..State::default()
            }),
            state_dir: state_dir.to_path_buf(),
            net: NetConfig {
                base: Ipv4Addr::new(10, 11, 0, 0),
                prefix,
            },
            disks_unfilled: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Makes `op` fail (or succeed again).
    pub fn fail(&self, op: Op, failing: bool) {
        let mut s = lock(&self.state);
        if failing {
            s.failing.insert(op);
        } else {
            s.failing.remove(&op);
        }
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.state).calls.clone()
    }

    /// The specs of every create call.
    pub fn specs(&self) -> Vec<SandboxSpec> {
        lock(&self.state).specs.clone()
    }

    /// A process the fake reports alive (a sandbox's init adopted at start).
    pub fn add_alive(&self, pid: i32, start: u64) {
        lock(&self.state).alive.insert((pid, start));
    }

    /// Ends a sandbox's init behind the service's back.
    pub fn exit(&self, pid: i32, start: u64) {
        lock(&self.state).alive.remove(&(pid, start));
    }

    /// What the host has left over at start.
    pub fn add_leftovers(&self, ids: &[&str], slots: &[u32]) {
        let mut s = lock(&self.state);
        s.leftover_ids.extend(ids.iter().map(|i| i.to_string()));
        s.leftover_slots.extend(slots);
    }

    /// The usage figures every sandbox reports.
    pub fn set_usage(&self, usage: Usage) {
        lock(&self.state).usage = usage;
    }

    fn check(&self, op: Op) -> RuntimeResult<()> {
        if lock(&self.state).failing.contains(&op) {
            return Err(RuntimeError::Helper(format!("fake {op:?} failure")));
        }
        Ok(())
    }

    fn record(&self, call: Call) {
        lock(&self.state).calls.push(call);
    }
}

impl SandboxRuntime for FakeRuntime {
    fn create(&self, spec: &SandboxSpec) -> RuntimeResult<Spawned> {
        self.record(Call::Create {
            id: spec.id.clone(),
            slot: spec.slot,
        });
        self.check(Op::Create)?;
        let mut s = lock(&self.state);
        s.specs.push(spec.clone());
        s.next_pid += 1;
        let pid = s.next_pid;
        s.alive.insert((pid, 7));
        Ok(Spawned {
            pid,
            start_time: 7,
            net: self.net.slot(spec.slot),
            agent_up: false,
        })
    }

    fn destroy(
        &self,
        id: &str,
        net: Option<&SandboxNet>,
        init: Option<(i32, u64)>,
    ) -> RuntimeResult<()> {
        self.record(Call::Destroy {
            id: id.to_string(),
            net: net.map(|n| n.slot),
            init,
        });
        if let Some(init) = init {
            lock(&self.state).alive.remove(&init);
        }
        self.check(Op::Destroy)
    }

    fn pause(&self, id: &str) -> RuntimeResult<()> {
        self.record(Call::Pause(id.to_string()));
        self.check(Op::Pause)
    }

    fn resume(&self, id: &str) -> RuntimeResult<()> {
        self.record(Call::Resume(id.to_string()));
        self.check(Op::Resume)
    }

    fn usage(&self, _id: &str) -> RuntimeResult<Usage> {
        self.check(Op::Usage)?;
        Ok(lock(&self.state).usage)
    }

    fn commit_upper(&self, id: &str, _stop: Option<(i32, u64)>, dest: &Path) -> RuntimeResult<()> {
        self.record(Call::Commit {
            id: id.to_string(),
            dest: dest.to_path_buf(),
        });
        self.check(Op::Commit)
    }

    fn leftover_ids(&self) -> Vec<String> {
        lock(&self.state).leftover_ids.clone()
    }

    fn leftover_slots(&self) -> Vec<u32> {
        lock(&self.state).leftover_slots.clone()
    }

    fn release_slot(&self, slot: u32) {
        self.record(Call::ReleaseSlot(slot));
    }

    fn set_internet(&self, slot: u32, allowed: bool) -> RuntimeResult<()> {
        self.record(Call::SetInternet { slot, allowed });
        Ok(())
    }

    fn set_egress_filter(
        &self,
        slot: u32,
        filter: Option<hutch_runtime::net::EgressFilter>,
    ) -> RuntimeResult<()> {
        self.record(Call::SetEgressFilter {
            slot,
            filtered: filter.is_some(),
        });
        Ok(())
    }

    fn set_low_priority(&self, id: &str, low: bool) -> RuntimeResult<()> {
        self.record(Call::LowPriority {
            id: id.to_string(),
            low,
        });
        Ok(())
    }

    fn net_for(&self, slot: u32) -> SandboxNet {
        self.net.slot(slot)
    }

    fn slots(&self) -> u32 {
        self.net.slots()
    }

    fn ids_end(&self) -> u32 {
        hutch_template::SANDBOX_ID_BASE + hutch_template::SANDBOX_ID_COUNT
    }

    fn disks_unfilled(&self) -> u64 {
        self.disks_unfilled
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    fn is_alive(&self, pid: i32, start: u64) -> bool {
        lock(&self.state).alive.contains(&(pid, start))
    }

    fn reap(&self, _pid: i32) {}

    fn start_zygote(
        &self,
        _spec: &hutch_runtime::runtime::ZygoteSpec,
    ) -> RuntimeResult<hutch_runtime::runtime::Zygote> {
        Err(RuntimeError::Spawn(
            "the fake runtime has no zygotes".into(),
        ))
    }

    fn join_cgroup(&self, _id: &str, _pid: i32) -> RuntimeResult<()> {
        Ok(())
    }

    fn end_process(&self, _pid: i32, _start: u64) {}
}

/// One wait for readiness: the sandbox's address, its token and the start command waited for.
pub type Wait = (Ipv4Addr, Option<String>, Option<String>);

/// Readiness that answers at once, or fails when told to; remembers what it was asked.
#[derive(Default)]
pub struct FakeReadiness {
    failure: Mutex<Option<String>>,
    /// (address, token, start command) of every wait.
    pub waits: Mutex<Vec<Wait>>,
    /// (address, pool token) of every warm-up.
    pub warms: Mutex<Vec<(Ipv4Addr, String)>>,
    /// (address, pool token, claim) of every claim.
    pub claims: Mutex<Vec<(Ipv4Addr, String, Claim)>>,
    /// When set, claims (only) fail with this message.
    pub claim_failure: Mutex<Option<String>>,
}

impl FakeReadiness {
    /// Makes every wait fail with `message` (None: succeed).
    pub fn fail_with(&self, message: Option<&str>) {
        *lock(&self.failure) = message.map(str::to_string);
    }
}

impl AgentReadiness for FakeReadiness {
    fn warm<'a>(&'a self, ip: Ipv4Addr, token: &'a str) -> BoxFuture<'a, Result<(), String>> {
        lock(&self.warms).push((ip, token.to_owned()));
        let res = lock(&self.failure).clone().map_or(Ok(()), Err);
        Box::pin(async move { res })
    }

    fn claim<'a>(
        &'a self,
        ip: Ipv4Addr,
        token: &'a str,
        claim: &'a Claim,
    ) -> BoxFuture<'a, Result<(), String>> {
        lock(&self.claims).push((ip, token.to_owned(), claim.clone()));
        let res = lock(&self.claim_failure).clone().map_or(Ok(()), Err);
        Box::pin(async move { res })
    }

    fn wait_ready<'a>(
        &'a self,
        ip: Ipv4Addr,
        token: Option<&'a str>,
        template: Option<&'a TemplateRecord>,
        _agent_up: bool,
    ) -> BoxFuture<'a, Result<(), String>> {
        lock(&self.waits).push((
            ip,
            token.map(str::to_string),
            template.and_then(|t| t.start_cmd.clone()),
        ));
        let res = lock(&self.failure).clone().map_or(Ok(()), Err);
        Box::pin(async move { res })
    }
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A new empty directory under the system's temporary directory.
    pub fn new() -> Self {
        let d = std::env::temp_dir().join(format!("hutch-test-{}", crate::sandbox::new_id()));
        std::fs::create_dir_all(&d).expect("temp dir");
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The limits of every test sandbox.
pub const LIMITS: Limits = Limits {
    memory_mb: 512,
    cpus: 2,
    pids: 256,
    disk_mb: 1024,
};

/// A service over the fakes, with `base` as a ready default template.
pub struct Harness {
    pub svc: Arc<Service>,
    pub rt: Arc<FakeRuntime>,
    pub ready: Arc<FakeReadiness>,
    pub store: Arc<Store>,
    pub templates: Arc<Templates>,
    pub dir: TempDir,
}

impl Harness {
    /// A harness with `slots` slots and no previous sandboxes.
    pub fn new(slots: u32) -> Self {
        Self::recovering(slots, Vec::new(), |_| {})
    }

    /// A harness whose creates also check the sandboxes' disks against `ratio` times the
    /// free space (`--disk-overcommit`).
    pub fn with_disk_overcommit(slots: u32, ratio: f64) -> Self {
        Self::build(slots, Vec::new(), |_| {}, Some(ratio))
    }

    /// A harness whose service starts from `records`, after `setup` prepared the runtime.
    pub fn recovering(
        slots: u32,
        records: Vec<SandboxRecord>,
        setup: impl FnOnce(&FakeRuntime),
    ) -> Self {
        Self::build(slots, records, setup, None)
    }

    fn build(
        slots: u32,
        records: Vec<SandboxRecord>,
        setup: impl FnOnce(&FakeRuntime),
        disk_overcommit: Option<f64>,
    ) -> Self {
        let dir = TempDir::new();
        let rt = Arc::new(FakeRuntime::new(&dir.0, slots));
        setup(&rt);
        let store = Arc::new(Store::open(&dir.0).expect("store"));
        for r in &records {
            store.put_sandbox(r).expect("put");
        }
        let templates = Arc::new(Templates::default());
        let rootfs = dir.0.join("rootfs-base");
        std::fs::create_dir_all(&rootfs).expect("rootfs");
        templates.insert("base", rootfs);
        templates.mark_ready();
        let ready = Arc::new(FakeReadiness::default());
        let svc = Service::with_readiness(
            Arc::clone(&rt) as Arc<dyn SandboxRuntime>,
            Arc::clone(&store),
            Arc::clone(&templates),
            SandboxDefaults {
                limits: LIMITS,
                max_cpus: 64,
                max_memory_mb: 262_144,
                disk_overcommit,
            },
            records,
            crate::agent_http::client(),
            Arc::clone(&ready) as Arc<dyn AgentReadiness>,
        );
        Harness {
            svc,
            rt,
            ready,
            store,
            templates,
            dir,
        }
    }

    /// Registers a user-built template whose layer exists on disk.
    pub fn add_custom(&self, t: TemplateRecord) -> TemplateRecord {
        for l in &t.layers {
            std::fs::create_dir_all(l).expect("layer");
        }
        self.templates.put_custom(t.clone());
        t
    }

    /// A user-built template named `name`, one layer, no settings.
    pub fn custom_template(&self, name: &str) -> TemplateRecord {
        let now = chrono::Utc::now();
        TemplateRecord {
            id: format!("{name}-id"),
            name: name.to_string(),
            build_id: "b1".into(),
            parent: "base".into(),
            layers: vec![self
                .dir
                .0
                .join("templates/layers")
                .join(format!("{name}-id"))
                .join("b1")],
            env: Default::default(),
            user: None,
            workdir: None,
            start_cmd: None,
            ready_cmd: None,
            cpu_count: None,
            memory_mb: None,
            created_at: now,
            updated_at: now,
            build_count: 1,
            team: None,
            source_sandbox: None,
        }
    }
}

/// A caller of the default team whose key may hold `max` sandboxes.
pub fn caller(key: &str, max: Option<u32>) -> Caller {
    team_caller(key, max, crate::tenancy::DEFAULT_TEAM)
}

/// A caller of `team` whose key may hold `max` sandboxes.
pub fn team_caller(key: &str, max: Option<u32>, team: &str) -> Caller {
    Caller {
        key_id: key.to_string(),
        max_sandboxes: max,
        team: crate::store::Team {
            name: team.to_string(),
            max_cpu: None,
            max_memory_mb: None,
            max_sandboxes: None,
        },
        admin: false,
    }
}

/// A create request for `template`, with nothing else set.
pub fn req(template: &str) -> CreateRequest {
    CreateRequest {
        template_id: template.to_string(),
        ..CreateRequest::default()
    }
}

/// The HTTP status code a service error is answered with.
pub fn status(e: &ServiceError) -> u16 {
    crate::api::status_of(e).as_u16()
}
