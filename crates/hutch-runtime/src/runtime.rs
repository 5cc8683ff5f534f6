//! [`Runtime`]: create, pause, resume, measure and destroy sandboxes on this host.
//!
//! All methods block (they run external tools and wait on the kernel); async callers wrap
//! them in `spawn_blocking`.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::agent_log::LogPipe;
use crate::cgroup::{CgroupDriver, CgroupLimits, CgroupStats};
use crate::disk::kept::Disks;
use crate::error::{Result, RuntimeError};
use crate::gvisor::{self, GvisorConfig};
use crate::idmap::IdRanges;
use crate::mounts::{self, SandboxPaths};
use crate::net::{self, NetConfig, SandboxNet};
use crate::spawn::{ParentUserNs, SpawnRequest};
use crate::spawner::Spawner;
use crate::timing::Steps;
use crate::trash::Trash;
use crate::zygote::ZygoteRequest;
use crate::{disk, proc};

/// Host-wide settings of the runtime.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Per-sandbox state lives in `<state_dir>/sandboxes/<id>`.
    pub state_dir: PathBuf,
    /// Where blank disk images are cached.
    pub cache_dir: PathBuf,
    /// The program that runs the spawn helper, and its arguments.
    pub helper: (PathBuf, Vec<String>),
    /// The agent binary bind-mounted into every sandbox.
    pub agent_bin: PathBuf,
    /// Host uid/gid of root inside sandboxes, and how many ids are mapped.
    pub id_base: u32,
    /// Number of ids mapped.
    pub id_count: u32,
    /// Give every sandbox a host id range of its own (see [`crate::idmap`]) when the host
    /// can; otherwise all use `id_base..`.
    pub own_id_ranges: bool,
    /// Sandbox address range.
    pub net: NetConfig,
    /// Destination ranges no sandbox reaches, on top of hutch's own list
    /// ([`net::rules::BLOCKED`]): the operator's networks.
    pub deny: Vec<(std::net::Ipv4Addr, u8)>,
    /// Name of hutch's parent cgroup.
    pub cgroup_parent: String,
    /// Install the seccomp allowlist.
    pub seccomp: bool,
    /// Set `no_new_privs` on the sandbox's init.
    pub no_new_privs: bool,
    /// Keep the agent's output in `<state_dir>/sandboxes/<id>/agent.log` (debugging).
    pub agent_log: bool,
    /// Throttling of each sandbox's disk (0 = none): read and write bytes and operations
    /// per second, applied to its loop device through its cgroup.
    pub disk_io: DiskIo,
    /// Run every sandbox's agent on gVisor (`--runtime gvisor`, see [`crate::gvisor`]).
    pub gvisor: Option<GvisorConfig>,
    /// The port of the server's egress proxy, where the TCP of sandboxes with an egress
    /// filter is redirected (None: their TCP goes nowhere).
    pub egress_port: Option<u16>,
}

/// What each sandbox may send to its disk per second; 0 = no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskIo {
    /// Bytes read per second.
    pub read_bps: u64,
    /// Bytes written per second.
    pub write_bps: u64,
    /// Read and write operations per second (each).
    pub iops: u64,
}

impl DiskIo {
    /// The cgroup form of these limits for the disk `device`; None when nothing is limited.
    pub fn for_device(&self, device: (u32, u32)) -> Option<crate::cgroup::IoLimits> {
        (*self != DiskIo::default()).then_some(crate::cgroup::IoLimits {
            device,
            read_bps: self.read_bps,
            write_bps: self.write_bps,
            read_iops: self.iops,
            write_iops: self.iops,
        })
    }
}

/// Resource limits of one sandbox.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Memory in MiB.
    pub memory_mb: u64,
    /// CPUs (CFS quota).
    pub cpus: u32,
    /// Maximum number of processes and threads.
    pub pids: u64,
    /// Disk (writable layer) in MiB.
    pub disk_mb: u64,
}

impl Limits {
    /// The cgroup part of these limits (the disk limit is the size of the sandbox's disk).
    pub fn cgroup_limits(&self) -> CgroupLimits {
        CgroupLimits {
            memory_bytes: self.memory_mb * 1024 * 1024,
            cpus: self.cpus,
            pids: self.pids,
            io: None,
        }
    }
}

/// What to create.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    /// Sandbox id (lowercase alphanumeric).
    pub id: String,
    /// The template's read-only layers, topmost first (a custom template's own layer, then
    /// its parents', down to the base rootfs).
    pub template_layers: Vec<PathBuf>,
    /// Limits.
    pub limits: Limits,
    /// Egress to the internet.
    pub allow_internet: bool,
    /// Network slot allocated by the caller.
    pub slot: u32,
    /// Environment of the agent.
    pub agent_env: Vec<(String, String)>,
    /// Nest the sandbox's user namespace in a zygote's (see [`crate::zygote`]).
    pub parent_userns: Option<ParentUserNs>,
    /// What its overlay's upper dir starts with: a layer [`Runtime::commit_upper`] saved
    /// (a sandbox paused without memory, booting again on its own files).
    pub seed_upper: Option<PathBuf>,
    /// Volumes to mount: where each is mounted on the host (owned in the template range),
    /// and the absolute path it gets inside.
    pub volumes: Vec<(PathBuf, String)>,
    /// Its egress filter (an egress policy's), in place before anything in it runs.
    pub egress_filter: Option<net::EgressFilter>,
}

/// What a zygote is started from.
#[derive(Debug, Clone)]
pub struct ZygoteSpec {
    /// Names it (a directory of the state dir, its hostname).
    pub name: String,
    /// The template's read-only layers, topmost first.
    pub template_layers: Vec<PathBuf>,
    /// Its own host id (see [`crate::zygote::ZygoteRequest::own_id`]).
    pub own_id: u32,
    /// The command line; the script travels in it.
    pub argv: Vec<String>,
    /// Its environment.
    pub env: Vec<(String, String)>,
}

/// A started zygote.
#[derive(Debug)]
pub struct Zygote {
    /// Host pid.
    pub pid: i32,
    /// Its start time.
    pub start_time: u64,
    /// The server's end of its `SOCK_SEQPACKET` socket.
    pub socket: OwnedFd,
}

/// A running sandbox's host-side identity.
#[derive(Debug, Clone)]
pub struct Spawned {
    /// Host pid of the sandbox's PID 1.
    pub pid: i32,
    /// Its start time, to tell it from a later process with the same pid.
    pub start_time: u64,
    /// Its network.
    pub net: SandboxNet,
    /// Its agent said it is up (serves its API) before the create returned.
    pub agent_up: bool,
}

/// Usage figures of one sandbox.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// From the cgroup.
    pub cgroup: CgroupStats,
    /// Bytes used on its disk.
    pub disk_used: u64,
    /// Size of its disk.
    pub disk_total: u64,
}

/// The sandbox runtime of this host.
#[derive(Debug)]
pub struct Runtime {
    cfg: RuntimeConfig,
    cgroups: CgroupDriver,
    /// Addresses in the nftables `noinet` set: only these need a change on destroy.
    noinet: Mutex<HashSet<Ipv4Addr>>,
    /// The egress filters in the nftables sets, by sandbox address.
    filters: Mutex<HashMap<Ipv4Addr, net::EgressFilter>>,
    /// Where destroyed sandboxes' directories go to be deleted in the background.
    trash: Trash,
    /// Runs the spawn helper.
    spawner: Spawner,
    /// Sandbox disks, and the emptied ones kept for the next sandboxes.
    disks: Disks,
    /// Each sandbox's host id range.
    ids: IdRanges,
}

impl Runtime {
    /// Prepares the host: cgroup parent, nftables rules (`noinet` = addresses of existing
    /// sandboxes without egress, `filtered` = those with an egress filter), state
    /// directories.
    pub fn new(
        cfg: RuntimeConfig,
        noinet: &[Ipv4Addr],
        filtered: &[(Ipv4Addr, net::EgressFilter)],
    ) -> Result<Self> {
        let cgroups = CgroupDriver::detect(&cfg.cgroup_parent)?;
        for d in [cfg.state_dir.join("sandboxes"), cfg.cache_dir.clone()] {
            std::fs::create_dir_all(&d).map_err(|e| RuntimeError::io("mkdir", &d, e))?;
        }
        net::install_host_rules(
            &cfg.net,
            &net::rules::HostRules {
                noinet,
                deny: &cfg.deny,
                forward_only_sandboxes: false,
                egress_port: cfg.egress_port,
                filtered,
            },
        )?;
        // Not fatal: a host whose /proc/sys is read-only keeps its own limits (sandboxes
        // then share the host's maxima; each still stops at its own).
        match crate::ucounts::raise_host_limits() {
            Ok(changed) => {
                for (path, from, to) in changed {
                    tracing::info!(
                        path,
                        from,
                        to,
                        "raised a per-user kernel limit sandboxes share"
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not raise the host's inotify limits"),
        }
        proc::become_subreaper();
        let trash = Trash::new(cfg.state_dir.join("trash"))?;
        let disks = Disks::new(cfg.state_dir.join("disks"))?;
        disks.sweep(&disks_in_use(&cfg.state_dir), &trash);
        // `hutch __spawn` can also serve many requests from one process; other helpers
        // (tests' stand-ins) are run once per sandbox.
        let serve = cfg.helper.1.last().is_some_and(|a| a == "__spawn");
        let spawner = Spawner::new(cfg.helper.clone(), serve);
        let ids = if cfg.own_id_ranges {
            IdRanges::probe(cfg.id_base, cfg.id_count, cfg.net.slots(), &cfg.state_dir)
        } else {
            IdRanges::shared(cfg.id_base, cfg.id_count)
        };
        tracing::info!(per_sandbox = ids.per_sandbox(), "sandbox host id ranges");
        Ok(Runtime {
            ids,
            disks,
            cfg,
            cgroups,
            noinet: Mutex::new(noinet.iter().copied().collect()),
            filters: Mutex::new(filtered.iter().cloned().collect()),
            trash,
            spawner,
        })
    }

    /// The runtime's configuration.
    pub fn config(&self) -> &RuntimeConfig {
        &self.cfg
    }

    /// The cgroup driver in use.
    pub fn cgroups(&self) -> &CgroupDriver {
        &self.cgroups
    }

    /// Storage paths of sandbox `id`.
    pub fn paths(&self, id: &str) -> SandboxPaths {
        SandboxPaths::new(&self.cfg.state_dir.join("sandboxes"), id)
    }

    /// Creates and starts a sandbox. On failure nothing of it is left behind.
    pub fn create(&self, spec: &SandboxSpec) -> Result<Spawned> {
        let _span = tracing::debug_span!("create", sandbox = %spec.id).entered();
        let net = self.cfg.net.slot(spec.slot);
        let mut steps = Steps::start();
        let res = self.try_create(spec, &net, &mut steps);
        steps.log("create", &spec.id);
        match res {
            Ok(s) => Ok(s),
            Err(e) => {
                let _ = self.destroy(&spec.id, Some(&net), None);
                Err(e)
            }
        }
    }

    fn try_create(
        &self,
        spec: &SandboxSpec,
        net: &SandboxNet,
        steps: &mut Steps,
    ) -> Result<Spawned> {
        let paths = self.paths(&spec.id);
        let blank = disk::blank_image(&self.cfg.cache_dir, spec.limits.disk_mb)?;
        steps.mark("blank_image");
        mounts::make_dirs(&paths)?;
        steps.mark("dirs");
        let mnt = self
            .disks
            .take(&spec.id, &blank, spec.limits.disk_mb, steps)?;
        // From here on the link is how `destroy` finds the disk, also after a failed create.
        if let Err(e) = std::os::unix::fs::symlink(&mnt, &paths.disk) {
            self.disks.give_back(&mnt, &self.trash);
            return Err(RuntimeError::io("symlink", &paths.disk, e));
        }
        let range = self.ids.base_for_slot(spec.slot);
        if let Some(seed) = &spec.seed_upper {
            self.seed_upper(&mnt.join("upper"), seed, range)?;
            steps.mark("seed_upper");
        }
        mounts::setup(&paths, &spec.template_layers, range, &self.ids, steps)?;
        for (source, target) in &spec.volumes {
            mounts::attach_volume(&paths.rootfs, source, target, range, &self.ids)?;
            steps.mark("volume");
        }
        let mut limits = spec.limits.cgroup_limits();
        if self.cfg.disk_io != DiskIo::default() {
            limits.io = self.cfg.disk_io.for_device(disk::device_of(&paths.disk)?);
        }
        self.cgroups.create(&spec.id, &limits)?;
        steps.mark("cgroup");
        if !spec.allow_internet {
            net::set_internet(net.sandbox_ip, false)?;
            self.noinet_set().insert(net.sandbox_ip);
            steps.mark("noinet");
        }
        if let Some(filter) = &spec.egress_filter {
            self.set_egress_filter(net.sandbox_ip, Some(filter.clone()))?;
            steps.mark("egress_filter");
        }
        let gvisor = match &self.cfg.gvisor {
            None => None,
            Some(g) => {
                gvisor::keep_tmp_on_disk(&paths.rootfs, range)?;
                let argv = gvisor::write_bundle(
                    g,
                    &paths.dir,
                    &gvisor::Bundle {
                        id: &spec.id,
                        rootfs: &paths.rootfs,
                        agent_inside: hutch_contracts::agent::AGENT_PATH,
                        env: &spec.agent_env,
                        ids: (range, self.cfg.id_count),
                        no_new_privs: self.cfg.no_new_privs,
                    },
                )?;
                steps.mark("gvisor_bundle");
                Some(argv)
            }
        };
        let log_pipe = self.log_pipe(&paths.dir.join("agent.log"))?;
        let req = SpawnRequest {
            id: spec.id.clone(),
            rootfs: paths.rootfs.clone(),
            agent_bin: self.cfg.agent_bin.clone(),
            agent_env: spec.agent_env.clone(),
            id_base: range,
            id_count: self.cfg.id_count,
            nested_root_id: 1 + (range - self.ids.template_base()),
            // v1: the sandbox's init moves itself in (cheap); v2: the helper moves it.
            cgroup_procs: if self.cgroups.is_v2() {
                self.cgroups.agent_procs_files(&spec.id)
            } else {
                Vec::new()
            },
            cgroup_tasks: self.cgroups.self_join_files(&spec.id),
            net: net.clone(),
            seccomp: self.cfg.seccomp,
            no_new_privs: self.cfg.no_new_privs,
            log_file: log_pipe.as_ref().map(|p| p.path().to_path_buf()),
            // Under gVisor the agent's processes are the sentry's: its kernel has no such
            // file, and the sentry, the gofer and all run in the sandbox's cgroup as one.
            work_cgroup: gvisor
                .is_none()
                .then(|| self.cgroups.work_join_file(&spec.id))
                .flatten(),
            parent_userns: spec.parent_userns,
            gvisor,
        };
        let resp = self.spawner.spawn(&req);
        if let Some(p) = log_pipe {
            p.drain();
        }
        let resp = resp?;
        steps.extend("helper", &resp.timings);
        steps.mark("helper");
        match (resp.pid, resp.start_time) {
            (Some(pid), Some(start_time)) => Ok(Spawned {
                pid,
                start_time,
                net: net.clone(),
                agent_up: resp.ready,
            }),
            _ => Err(RuntimeError::Helper(
                resp.error
                    .unwrap_or_else(|| "spawn helper gave no pid".into()),
            )),
        }
    }

    /// Allows or denies egress of the sandbox at `ip` (a warm pool's sandbox claimed without
    /// internet), remembering it so that destroying the sandbox gives the slot's next one
    /// its internet back.
    pub fn set_internet(&self, ip: Ipv4Addr, allowed: bool) -> Result<()> {
        let mut set = self.noinet_set();
        net::set_internet(ip, allowed)?;
        if allowed {
            set.remove(&ip);
        } else {
            set.insert(ip);
        }
        Ok(())
    }

    /// Gives the sandbox at `ip` the egress filter `filter` (None: none), replacing the one
    /// it had; destroying the sandbox removes it.
    pub fn set_egress_filter(&self, ip: Ipv4Addr, filter: Option<net::EgressFilter>) -> Result<()> {
        let mut filters = self.filters.lock().unwrap_or_else(|e| e.into_inner());
        net::set_egress_filter(ip, filters.get(&ip), filter.as_ref())?;
        match filter {
            Some(f) => filters.insert(ip, f),
            None => filters.remove(&ip),
        };
        Ok(())
    }

    fn noinet_set(&self) -> std::sync::MutexGuard<'_, HashSet<Ipv4Addr>> {
        self.noinet.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a zygote (see [`crate::zygote`]) through a one-shot spawn helper.
    pub fn start_zygote(&self, spec: &ZygoteSpec) -> Result<Zygote> {
        let root = self.cfg.state_dir.join("zygotes").join(&spec.name);
        std::fs::create_dir_all(&root).map_err(|e| RuntimeError::io("mkdir", &root, e))?;
        let (ours, theirs) =
            hutch_sys::fd::seqpacket_pair().map_err(|e| RuntimeError::sys("socketpair", e))?;
        let log_pipe = self.log_pipe(
            &self
                .cfg
                .state_dir
                .join("zygotes")
                .join(format!("{}.log", spec.name)),
        )?;
        let req = ZygoteRequest {
            name: spec.name.clone(),
            layers: spec.template_layers.clone(),
            root,
            id_base: self.cfg.id_base,
            // Every sandbox range, since any sandbox may be nested in it.
            id_count: self.ids.span(),
            own_id: spec.own_id,
            argv: spec.argv.clone(),
            env: spec.env.clone(),
            log_file: log_pipe.as_ref().map(|p| p.path().to_path_buf()),
        };
        let resp = crate::spawner::run_zygote_helper(&self.cfg.helper, &req, theirs);
        if let Some(p) = log_pipe {
            p.drain();
        }
        let resp = resp?;
        match (resp.pid, resp.start_time) {
            (Some(pid), Some(start_time)) => Ok(Zygote {
                pid,
                start_time,
                socket: ours,
            }),
            _ => Err(RuntimeError::Helper(
                resp.error
                    .unwrap_or_else(|| "spawn helper gave no pid".into()),
            )),
        }
    }

    /// With `--agent-log`, the pipe a new process's output reaches `log` through.
    fn log_pipe(&self, log: &Path) -> Result<Option<LogPipe>> {
        self.cfg.agent_log.then(|| LogPipe::new(log)).transpose()
    }

    /// With `--agent-log`, reads on the agent log of sandbox `id`, which a server before this
    /// one started (its FIFO is still there while the sandbox lives).
    pub fn reattach_log(&self, id: &str) {
        if !self.cfg.agent_log {
            return;
        }
        if let Some(pipe) = LogPipe::reattach(&self.paths(id).dir.join("agent.log")) {
            pipe.drain();
        }
    }

    /// Moves process `pid` (a host pid) into sandbox `id`'s cgroup, among the processes
    /// its agent starts (the work leaf).
    pub fn join_cgroup(&self, id: &str, pid: i32) -> Result<()> {
        for f in self.cgroups.work_procs_files(id) {
            std::fs::write(&f, pid.to_string())
                .map_err(|e| RuntimeError::io("join cgroup", &f, e))?;
        }
        Ok(())
    }

    /// Freezes every process of sandbox `id`.
    pub fn pause(&self, id: &str) -> Result<()> {
        self.cgroups.set_frozen(id, true)
    }

    /// Thaws sandbox `id`.
    pub fn resume(&self, id: &str) -> Result<()> {
        self.cgroups.set_frozen(id, false)
    }

    /// Switches sandbox `id`'s disk to direct I/O now rather than a moment after its
    /// create (see `disk::ensure_direct_io`): a large upload is about to fill it.
    pub fn before_large_write(&self, id: &str) -> Result<()> {
        disk::ensure_direct_io(&self.paths(id).disk)
    }

    /// Usage figures of sandbox `id`.
    pub fn usage(&self, id: &str) -> Result<Usage> {
        let cgroup = self.cgroups.stats(id)?;
        let (disk_used, disk_total) = disk::usage(&self.paths(id).disk)?;
        Ok(Usage {
            cgroup,
            disk_used,
            disk_total,
        })
    }

    /// Kills sandbox `id` and releases everything it holds: processes, cgroup, mounts, disk,
    /// veth, no-egress entry. Idempotent; pieces already gone are skipped.
    /// `init` is the (pid, start time) of its PID 1 when known.
    pub fn destroy(
        &self,
        id: &str,
        net: Option<&SandboxNet>,
        init: Option<(i32, u64)>,
    ) -> Result<()> {
        let _span = tracing::debug_span!("destroy", sandbox = %id).entered();
        let mut steps = Steps::start();
        // The slot's network stays: the spawn helper keeps it for the slot's next sandbox.
        self.stop(id, init)?;
        steps.mark("stop");
        self.cgroups.remove(id)?;
        steps.mark("cgroup");
        let paths = self.paths(id);
        let disk = std::fs::read_link(&paths.disk).ok();
        mounts::unmount_below(&paths.dir, &mut steps)?;
        // Only the destroy that removes the link hands the disk back: a second one (a
        // retried kill) must not hand over a disk another sandbox has taken since.
        if let Some(mnt) = disk {
            if std::fs::remove_file(&paths.disk).is_ok() {
                self.disks.give_back(&mnt, &self.trash);
                steps.mark("disk");
            }
        }
        // What is usually left (the rootfs mount point) goes at once; anything more (an old
        // layout's disk image, an agent log) with the directory through the trash.
        let emptied = std::fs::remove_dir(&paths.rootfs)
            .and_then(|()| std::fs::remove_dir(&paths.dir))
            .is_ok();
        if !emptied {
            self.trash.discard(&paths.dir)?;
        }
        steps.mark("remove_dir");
        // Only a sandbox created without egress (now or before a restart) has an element.
        if let Some(net) = net {
            if self.noinet_set().remove(&net.sandbox_ip) {
                let _ = net::set_internet(net.sandbox_ip, true);
                steps.mark("noinet");
            }
            if let Err(e) = self.set_egress_filter(net.sandbox_ip, None) {
                tracing::warn!(sandbox = %id, error = %e, "removing the egress filter failed");
            }
        }
        steps.log("destroy", id);
        Ok(())
    }

    /// Throws away the disks kept for the next sandboxes (see `disk::kept`): the server
    /// stops. Disks of sandboxes stay with them.
    pub fn release_kept_disks(&self) {
        self.disks.release(&self.trash);
    }

    /// How many emptied disks wait for the next sandboxes.
    pub fn kept_disks(&self) -> usize {
        self.disks.kept()
    }

    /// Copies what sandbox `id` changed (its overlay upper dir: new files, whiteouts of
    /// deleted ones, opaque-directory markers) to `dest`, a new directory, keeping owners,
    /// modes and extended attributes. With `stop` (its init's pid and start time) every
    /// process of the sandbox is ended first and the sandbox is left for
    /// [`Runtime::destroy`]: how a template build keeps its result as a layer. Without,
    /// the caller keeps the sandbox still (frozen) while it is copied: a snapshot or fork.
    pub fn commit_upper(&self, id: &str, stop: Option<(i32, u64)>, dest: &Path) -> Result<()> {
        if let Some(init) = stop {
            self.stop(id, Some(init))?;
        }
        let upper = self.paths(id).disk.join("upper");
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| RuntimeError::io("mkdir", parent, e))?;
        }
        // A layer keeps its files in the template range: a sandbox with a range of its own
        // is copied through an idmapped view that shows its ids as the template's. Root
        // inside owns the upper dir's top (see `mounts::setup`), whichever range it has.
        let owner = std::os::unix::fs::MetadataExt::uid(
            &std::fs::metadata(&upper).map_err(|e| RuntimeError::io("stat", &upper, e))?,
        );
        let range = self.ids.range_of(owner);
        let view = self.paths(id).dir.join("commit");
        let mapped = if range == self.ids.template_base() {
            None
        } else {
            let back = self.ids.back_userns(range)?;
            std::fs::create_dir_all(&view).map_err(|e| RuntimeError::io("mkdir", &view, e))?;
            // Attached: `cp` must see it by path.
            Some(crate::idmap::map_layers(
                std::slice::from_ref(&upper),
                back.as_fd(),
                Some(&view),
            )?)
        };
        let source = mapped.as_ref().map_or(&upper, |m| &m.paths[0]);
        let copied = copy_tree(source, dest);
        if let Some(m) = mapped {
            // Only empty directories are removed: nothing below the view is ever deleted.
            m.detach();
            let _ = std::fs::remove_dir(&view);
        }
        if copied.is_err() {
            let _ = std::fs::remove_dir_all(dest);
        }
        copied?;
        // The agent's runtime state (sockets, kernel connection files) is not content.
        let _ = std::fs::remove_dir_all(dest.join("run/hutch"));
        Ok(())
    }

    /// Fills the empty upper dir `upper` of a new sandbox whose ids start at `range` with
    /// `seed`, a layer [`Runtime::commit_upper`] saved (owned in the template range): a
    /// copy keeping modes, extended attributes and whiteouts, then re-owned into the
    /// sandbox's range, as its own writes would be.
    fn seed_upper(&self, upper: &Path, seed: &Path, range: u32) -> Result<()> {
        copy_tree(seed, upper)?;
        let base = self.ids.template_base();
        if range != base {
            hutch_template::shift_tree_from(upper, base, range, self.cfg.id_count)
                .map_err(|e| RuntimeError::Spawn(format!("re-owning the saved filesystem: {e}")))?;
        }
        Ok(())
    }

    /// Kills every process of sandbox `id` and waits for its init to be gone.
    fn stop(&self, id: &str, init: Option<(i32, u64)>) -> Result<()> {
        self.cgroups.kill_all(id);
        if let Some((pid, start)) = init {
            proc::signal(pid, start, proc::Signal::KILL);
            // Woken by the kernel when init exits; checked against its start time, since the
            // pid may already belong to another process.
            let watch = hutch_sys::process::ExitWatch::new(pid)
                .ok()
                .filter(|_| proc::is_alive(pid, start));
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut fired = false;
            loop {
                let gone = match proc::try_reap(pid) {
                    proc::Reap::Reaped => true,
                    // Our child: only a successful reap means it is gone, or it would be
                    // left a zombie for as long as the server runs.
                    proc::Reap::Running => false,
                    proc::Reap::NotOurs => !proc::is_alive(pid, start),
                };
                if gone {
                    break;
                }
                let now = Instant::now();
                if now > deadline {
                    return Err(RuntimeError::Spawn(format!(
                        "sandbox {id}'s init (pid {pid}) did not exit after SIGKILL"
                    )));
                }
                match &watch {
                    Some(w) if !fired => fired = w.wait(deadline - now).unwrap_or(true),
                    // No watch, or it fired and init is still not reapable: poll.
                    _ => sleep(Duration::from_millis(1)),
                }
            }
        }
        Ok(())
    }

    /// Ids of sandboxes with something left on this host (a state directory or a cgroup).
    pub fn leftover_ids(&self) -> Vec<String> {
        let mut ids = self.cgroups.existing();
        if let Ok(rd) = std::fs::read_dir(self.cfg.state_dir.join("sandboxes")) {
            ids.extend(
                rd.flatten()
                    .filter_map(|e| e.file_name().into_string().ok()),
            );
        }
        ids.sort();
        ids.dedup();
        ids
    }

    /// Slots of `hv*` interfaces present on the host.
    pub fn leftover_slots(&self) -> Vec<u32> {
        net::existing_slots()
    }

    /// Network facts of a slot.
    pub fn net_for(&self, slot: u32) -> SandboxNet {
        self.cfg.net.slot(slot)
    }

    /// Number of slots in the address range.
    pub fn slots(&self) -> u32 {
        self.cfg.net.slots()
    }

    /// Bytes the sandbox disks mounted on this host may still take (their free space), read
    /// from each one's filesystem; a sandbox whose disk is not mounted yet counts nothing.
    pub fn disks_unfilled(&self) -> u64 {
        let dir = self.cfg.state_dir.join("sandboxes");
        let Ok(host) = std::fs::metadata(&dir) else {
            return 0;
        };
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return 0;
        };
        entries
            .flatten()
            .filter_map(|e| {
                let disk = e.path().join("disk");
                let meta = std::fs::metadata(&disk).ok()?;
                // Not mounted: still the data directory's filesystem.
                (std::os::unix::fs::MetadataExt::dev(&meta)
                    != std::os::unix::fs::MetadataExt::dev(&host))
                .then(|| hutch_sys::mount::usage(&disk).ok())
                .flatten()
                .map(|(used, total)| total - used)
            })
            .sum()
    }

    /// The first host id above every sandbox's range (where zygotes' own ids may start).
    pub fn ids_end(&self) -> u32 {
        self.ids.template_base() + self.ids.span()
    }
}

/// The disks sandboxes of `state_dir` hold: the targets of their `disk` links.
fn disks_in_use(state_dir: &Path) -> HashSet<PathBuf> {
    let Ok(rd) = std::fs::read_dir(state_dir.join("sandboxes")) else {
        return HashSet::new();
    };
    rd.flatten()
        .filter_map(|e| std::fs::read_link(e.path().join("disk")).ok())
        .collect()
}

/// Copies the directory tree `src` to `dest` (made, or an existing empty directory) with
/// `cp -a`: owners, modes, extended attributes, links, special files and overlayfs
/// whiteouts are kept. How layers are saved, copied and restored.
pub fn copy_tree(src: &Path, dest: &Path) -> Result<()> {
    cp(
        &["-a", "--no-target-directory"],
        &[src.to_path_buf(), dest.to_path_buf()],
        || format!("copying {} to {}", src.display(), dest.display()),
        dest,
    )
}

/// Runs `cp` with `flags` and `paths`; a failure says `what` with cp's own message.
pub(crate) fn cp(
    flags: &[&str],
    paths: &[PathBuf],
    what: impl FnOnce() -> String,
    dest: &Path,
) -> Result<()> {
    let out = Command::new("cp")
        .args(flags)
        .args(paths)
        .output()
        .map_err(|e| RuntimeError::io("run cp for", dest, e))?;
    if out.status.success() {
        return Ok(());
    }
    Err(RuntimeError::Spawn(format!(
        "{} failed: {}",
        what(),
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

#[cfg(test)]
mod tests;
