//! hutch's server: the E2B-compatible control plane, the router for sandbox traffic, the
//! sandbox lifecycle and the durable state behind them.

pub mod agent_client;
pub mod agent_http;
pub mod api;
pub mod api_error;
pub mod builds;
pub mod egress;
pub mod keys_api;
pub mod listen;
pub mod network_api;
pub mod openapi;
pub mod pool_api;
pub mod proxy;
pub mod runtime;
pub mod sandbox;
pub mod service;
pub mod snapshot_api;
pub mod startup;
pub mod store;
pub mod template_api;
pub mod templates;
pub mod tenancy;
pub mod volume_api;
pub mod volumes;
pub mod zygote;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use hutch_runtime::{Limits, NetConfig, Runtime, RuntimeConfig};

use crate::service::{SandboxDefaults, Service};
use crate::store::Store;
use crate::templates::Templates;

/// Errors that stop the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The data directory is unusable.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The host could not be prepared for sandboxes.
    #[error("preparing the host for sandboxes: {0}")]
    Runtime(#[from] hutch_runtime::RuntimeError),
    /// The listening address could not be bound.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Everything `hutch serve` is configured with.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address of the control plane and of all sandbox traffic.
    pub listen: SocketAddr,
    /// SQLite database and per-sandbox state.
    pub data_dir: PathBuf,
    /// Built templates and blank disks (outside the data dir so a new data dir reuses them).
    pub cache_dir: PathBuf,
    /// A key accepted besides the stored ones.
    pub api_key: Option<String>,
    /// The agent binary.
    pub agent_bin: PathBuf,
    /// The program and arguments that run the spawn helper.
    pub helper: (PathBuf, Vec<String>),
    /// The program and arguments that run the default templates' build steps confined
    /// (`hutch __template-jail`).
    pub template_jail: hutch_template::JailHelper,
    /// Limits of every sandbox.
    pub limits: Limits,
    /// The most CPUs a template may give its sandboxes (`--max-template-cpus`).
    pub max_cpus: u32,
    /// The most memory (MiB) a template may give its sandboxes (`--max-template-memory-mb`).
    pub max_memory_mb: u64,
    /// How far the sandboxes' disks together may overcommit the data disk
    /// (`--disk-overcommit`); None = no such check.
    pub disk_overcommit: Option<f64>,
    /// Sandbox address range.
    pub net: NetConfig,
    /// Destination ranges no sandbox reaches besides hutch's own list (`--deny-cidr`).
    pub deny: Vec<(std::net::Ipv4Addr, u8)>,
    /// Keep agent logs per sandbox.
    pub agent_log: bool,
    /// Throttling of each sandbox's disk.
    pub disk_io: hutch_runtime::runtime::DiskIo,
    /// Domain under which `{port}-{id}.{domain}` reaches sandbox ports (returned to SDKs).
    pub domain: Option<String>,
    /// Warm pool sizes by template name (`--pool`); sizes set through the API win.
    pub pools: std::collections::BTreeMap<String, service::pool::PoolSize>,
    /// Fork default Python kernels from per-template zygotes.
    pub zygotes: bool,
    /// Run every sandbox on gVisor (`--runtime gvisor`); zygotes are then off.
    pub gvisor: Option<hutch_runtime::gvisor::GvisorConfig>,
    /// The size (quota) of each volume, MiB.
    pub volume_size_mb: u64,
    /// A hosts file the egress proxy resolves names from first (`--egress-hosts`).
    pub egress_hosts: Option<PathBuf>,
    /// Certificates the egress proxy trusts besides the host's (`--egress-ca-file`).
    pub egress_ca_file: Option<PathBuf>,
}

/// What the caller should tell the user once the server is up.
#[derive(Debug, Clone)]
pub struct Started {
    /// The bound address.
    pub addr: SocketAddr,
    /// A key created on this start (printed once, never stored in clear).
    pub new_key: Option<String>,
}

/// Host uid of root inside sandboxes; template rootfs ownership is shifted to match.
pub const ID_BASE: u32 = hutch_template::SANDBOX_ID_BASE;

/// How often layers no template and no sandbox uses any longer (forks') are removed.
const LAYER_SWEEP: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs the server until the process is stopped. `on_started` is called once listening.
pub async fn serve(cfg: ServeConfig, on_started: impl FnOnce(&Started)) -> Result<(), ServeError> {
    std::fs::create_dir_all(&cfg.data_dir).map_err(|e| ServeError::DataDir {
        path: cfg.data_dir.clone(),
        source: e,
    })?;
    let store = Arc::new(Store::open(&cfg.data_dir)?);
    let new_key = if let Some(k) = &cfg.api_key {
        store.add_key(k, Some("--api-key"), None)?;
        None
    } else if store.active_keys()? == 0 {
        let k = store::generate_key();
        // The operator's first key sees every team's sandboxes and templates.
        store.add_team_key(&k, Some("first start"), None, tenancy::DEFAULT_TEAM, true)?;
        Some(k)
    } else {
        None
    };

    let (records, bad) = store.sandboxes()?;
    for id in &bad {
        store.delete_sandbox(id)?;
    }
    let noinet = Service::noinet_addresses(&records, &cfg.net);
    let filtered = Service::egress_filters(&records, &cfg.net);
    // The egress proxy's port is in the firewall's rules: it is bound first.
    let (egress_listener, egress) = egress_proxy(&cfg)?;
    let mut rc = runtime_config(&cfg);
    rc.egress_port = Some(
        egress_listener
            .local_addr()
            .map_err(|e| ServeError::Listen {
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                source: e,
            })?
            .port(),
    );
    let runtime = Runtime::new(rc, &noinet, &filtered)?;
    tracing::info!(cgroup_v2 = runtime.cgroups().is_v2(), "runtime ready");
    let templates = Arc::new(Templates::default());
    let svc = {
        let runtime: Arc<dyn crate::runtime::SandboxRuntime> = Arc::new(runtime);
        let templates = Arc::clone(&templates);
        let defaults = SandboxDefaults {
            limits: cfg.limits,
            max_cpus: cfg.max_cpus.max(cfg.limits.cpus),
            max_memory_mb: cfg.max_memory_mb.max(cfg.limits.memory_mb),
            disk_overcommit: cfg.disk_overcommit,
        };
        let store = Arc::clone(&store);
        tokio::task::spawn_blocking(move || {
            Service::new(runtime, store, templates, defaults, records)
        })
        .await
        .map_err(|e| ServeError::Runtime(hutch_runtime::RuntimeError::Spawn(e.to_string())))?
    };
    {
        let templates = Arc::clone(&templates);
        let cache = cfg.cache_dir.clone();
        let jail = cfg.template_jail.clone();
        std::thread::Builder::new()
            .name("template-build".into())
            .spawn(move || templates.build_defaults(&cache, &jail))
            .map_err(|e| ServeError::DataDir {
                path: cfg.cache_dir.clone(),
                source: e,
            })?;
    }
    if cfg.zygotes && cfg.gvisor.is_some() {
        // A zygote's kernel would join the sandbox's namespaces on the host's kernel,
        // outside gVisor: every kernel boots inside instead.
        tracing::info!("zygotes are off: sandboxes run on gVisor");
    }
    if cfg.zygotes && cfg.gvisor.is_none() {
        let rc = runtime_config(&cfg);
        let seccomp = if rc.seccomp {
            hutch_runtime::seccomp::programs()?
        } else {
            Vec::new()
        };
        svc.enable_zygotes(crate::zygote::Confinement {
            caps_drop: (0..64)
                .filter(|c| !hutch_runtime::caps::KEPT.contains(c))
                .collect(),
            seccomp,
            no_new_privs: rc.no_new_privs,
        });
    }
    svc.set_egress_proxy(Arc::clone(&egress));
    svc.announce_policies();
    tokio::spawn(egress.serve(egress_listener));
    tokio::spawn(Arc::clone(&svc).lifecycle_loop());
    svc.configure_pools(cfg.pools.clone());
    tokio::spawn(Arc::clone(&svc).pool_loop());
    let builds = crate::builds::Builds::new(Arc::clone(&svc));
    {
        let builds = Arc::clone(&builds);
        tokio::task::spawn_blocking(move || builds.load())
            .await
            .map_err(|e| ServeError::Runtime(hutch_runtime::RuntimeError::Spawn(e.to_string())))?
            .map_err(|e| ServeError::Runtime(hutch_runtime::RuntimeError::Spawn(e.to_string())))?;
    }
    {
        // Forks' layers belong to no template: they go once their last sandbox has.
        let builds = Arc::clone(&builds);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(LAYER_SWEEP);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let b = Arc::clone(&builds);
                let _ = tokio::task::spawn_blocking(move || b.sweep()).await;
            }
        });
    }

    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| ServeError::Listen {
            addr: cfg.listen,
            source: e,
        })?;
    let addr = listener.local_addr().map_err(|e| ServeError::Listen {
        addr: cfg.listen,
        source: e,
    })?;
    let volumes = Arc::new(crate::volumes::Volumes::new(
        &cfg.data_dir,
        Arc::clone(&store),
        cfg.volume_size_mb,
        ID_BASE,
        hutch_template::SANDBOX_ID_COUNT,
    ));
    svc.set_volumes(Arc::clone(&volumes));
    let state = api::AppState {
        svc: Arc::clone(&svc),
        store,
        extra_key: cfg.api_key.as_deref().map(Arc::from),
        domain: cfg.domain.as_deref().map(Arc::from),
        builds,
        volumes: Arc::clone(&volumes),
    };
    on_started(&Started { addr, new_key });
    let app = api::app(state);
    listen::serve(listener, app, shutdown_signal()).await;
    svc.drain_pools().await;
    svc.release_kept().await;
    svc.stop_zygotes().await;
    tracing::info!("server stopped; sandboxes keep running and are adopted by the next start");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}

fn runtime_config(cfg: &ServeConfig) -> RuntimeConfig {
    RuntimeConfig {
        state_dir: cfg.data_dir.clone(),
        cache_dir: cfg.cache_dir.join("disks"),
        helper: cfg.helper.clone(),
        agent_bin: cfg.agent_bin.clone(),
        id_base: ID_BASE,
        id_count: hutch_template::SANDBOX_ID_COUNT,
        own_id_ranges: true,
        net: cfg.net,
        deny: cfg.deny.clone(),
        cgroup_parent: "hutch".into(),
        seccomp: true,
        // Off so that Debian's setuid `sudo` works inside; docs/design.md says why that is safe.
        no_new_privs: false,
        agent_log: cfg.agent_log,
        disk_io: cfg.disk_io,
        gvisor: cfg.gvisor.clone(),
        egress_port: None,
    }
}

/// Binds the egress proxy's listener (every address, a port of the kernel's choosing: the
/// firewall lets nothing but redirected sandbox connections reach it) and sets the proxy up.
fn egress_proxy(
    cfg: &ServeConfig,
) -> Result<(tokio::net::TcpListener, Arc<egress::proxy::EgressProxy>), ServeError> {
    let any = SocketAddr::from(([0, 0, 0, 0], 0));
    let listen_err = |e: std::io::Error| ServeError::Listen {
        addr: any,
        source: e,
    };
    let std_listener = std::net::TcpListener::bind(any).map_err(listen_err)?;
    std_listener.set_nonblocking(true).map_err(listen_err)?;
    let listener = tokio::net::TcpListener::from_std(std_listener).map_err(listen_err)?;
    let mut blocked: Vec<(std::net::Ipv4Addr, u8)> = hutch_runtime::net::rules::blocked();
    blocked.extend(cfg.deny.iter().copied());
    blocked.push((cfg.net.base, cfg.net.prefix));
    let proxy = egress::proxy::EgressProxy::new(egress::proxy::ProxyConfig {
        ca_dir: cfg.data_dir.join("egress"),
        extra_roots: cfg.egress_ca_file.clone(),
        hosts: cfg.egress_hosts.clone(),
        blocked,
    })
    .map_err(|e| {
        ServeError::Runtime(hutch_runtime::RuntimeError::Spawn(format!(
            "egress proxy: {e}"
        )))
    })?;
    Ok((listener, proxy))
}

/// Kills every sandbox of a data directory (the server must be stopped), removes whatever
/// they left on the host and hutch's firewall table. Returns how many sandboxes it killed.
pub fn cleanup(cfg: &ServeConfig) -> Result<usize, ServeError> {
    let store = Store::open(&cfg.data_dir)?;
    let (records, bad) = store.sandboxes()?;
    let runtime = Runtime::new(runtime_config(cfg), &[], &[])?;
    let mut killed = 0;
    for rec in &records {
        if let Some(disk) = &rec.saved_disk {
            // Paused without memory: nothing runs, its slot may be another's.
            let _ = std::fs::remove_dir_all(disk);
            store.delete_sandbox(&rec.id)?;
            killed += 1;
            continue;
        }
        let net = runtime.net_for(rec.slot);
        match runtime.destroy(&rec.id, Some(&net), Some((rec.pid, rec.pid_start))) {
            Ok(()) => killed += 1,
            Err(e) => tracing::warn!(sandbox = %rec.id, error = %e, "cleanup failed"),
        }
        store.delete_sandbox(&rec.id)?;
    }
    for id in bad {
        store.delete_sandbox(&id)?;
    }
    for id in runtime.leftover_ids() {
        runtime.destroy(&id, None, None)?;
    }
    // Volumes stay (their files are kept); their host mounts go with the sandboxes.
    crate::volumes::unmount_leftovers(&cfg.data_dir);
    runtime.release_kept_disks();
    for slot in runtime.leftover_slots() {
        hutch_runtime::net::remove_host_side(&runtime.net_for(slot));
    }
    hutch_runtime::net::remove_host_rules()?;
    Ok(killed)
}
