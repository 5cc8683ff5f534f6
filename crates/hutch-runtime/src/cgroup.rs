//! cgroups for sandboxes, on v1 (one hierarchy per controller) and v2 (unified) hosts.
//!
//! Every sandbox gets its own cgroup named after its id below a `hutch` parent. The
//! limits (memory, CPU, pids), the freezer used by pause, the usage figures behind
//! metrics and the "kill everything" used by kill all live here.
//!
//! The agent's memory is kept apart from what it starts: everything the agent starts
//! joins a `work` child cgroup whose memory limit is the sandbox's less a reserve for the
//! agent ([`CgroupLimits::agent_reserve`]), so an out-of-memory kill among the sandbox's
//! processes never picks the agent, whatever their (or its) OOM scores say. On v1 the
//! agent stays in the sandbox's cgroup and only the memory hierarchy gets the child; on
//! v2, where a cgroup with children holds no processes, the agent is in an `agent` leaf
//! with `memory.min` set to its reserve.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::error::{Result, RuntimeError};

mod detect;
mod limits;
#[cfg(test)]
mod tests;

pub use detect::CgroupLayout;
#[cfg(test)]
use detect::V1_CONTROLLERS;
use limits::stat_field;
use limits::LimitFile;
pub use limits::{CgroupLimits, IoLimits};

/// How the host organises its cgroups.
#[derive(Debug, Clone)]
pub enum CgroupDriver {
    /// cgroup v1: controller name → the directory of hutch's parent cgroup in that hierarchy.
    V1 {
        /// (controller, `<mount>/<parent>`) pairs; co-mounted controllers share a directory.
        parents: Vec<(String, PathBuf)>,
    },
    /// cgroup v2: the directory of hutch's parent cgroup.
    V2 {
        /// `<mount>/<parent>`.
        parent: PathBuf,
        /// Whether sandboxes get the `agent` and `work` leaves (see the module's docs): only
        /// where the hierarchy is mounted with `favordynmods`. Elsewhere every move of a
        /// process into a v2 cgroup (a write to `cgroup.procs`) takes a global lock whose
        /// first taking after a quiet spell waits for an RCU grace period, 7.3 ms at the
        /// median on the development machine (`tasks`, v1's per-thread move, 0.08 ms):
        /// too much for every command the agent starts.
        leaves: bool,
    },
}

/// The child cgroup of what the agent starts.
pub const WORK_LEAF: &str = "work";

/// The agent's own leaf (v2 only).
pub const AGENT_LEAF: &str = "agent";

/// Resource figures read from a sandbox's cgroup.
#[derive(Debug, Clone, Copy, Default)]
pub struct CgroupStats {
    /// CPU time used since creation, in nanoseconds.
    pub cpu_usage_ns: u64,
    /// Memory in use excluding reclaimable page cache, in bytes.
    pub mem_used: u64,
    /// Page cache charged to the sandbox, in bytes.
    pub mem_cache: u64,
    /// Number of processes (tasks) in the cgroup.
    pub pids: u64,
}

fn write(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).map_err(|e| RuntimeError::io("write", path, e))
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|e| RuntimeError::io("read", path, e))
}

fn read_u64(path: &Path) -> Result<u64> {
    let s = read(path)?;
    s.trim().parse().map_err(|_| {
        RuntimeError::io(
            "parse",
            path,
            io::Error::new(io::ErrorKind::InvalidData, s.clone()),
        )
    })
}

/// Creates directory `d`; one that exists already is fine.
fn mkdir_once(d: &Path) -> Result<()> {
    match fs::create_dir(d) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(RuntimeError::io("mkdir", d, e)),
    }
}

/// Writes limit `f` into cgroup directory `dir` (skipped when optional and absent).
fn write_limit(dir: &Path, f: &LimitFile) -> Result<()> {
    let path = dir.join(f.file);
    if f.only_if_present && !path.exists() {
        return Ok(());
    }
    write(&path, &f.value)
}

impl CgroupDriver {
    /// Finds the host's cgroup layout from `/proc/self/mountinfo` and creates hutch's parent
    /// cgroup `name` in it (see [`CgroupLayout::from_mountinfo`] for the choice).
    pub fn detect(name: &str) -> Result<Self> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| RuntimeError::io("read", "/proc/self/mountinfo", e))?;
        let layout = CgroupLayout::from_mountinfo(&mountinfo, |mount| {
            fs::read_to_string(mount.join("cgroup.controllers")).unwrap_or_default()
        })?;
        let mut driver = Self::setup(&layout, name)?;
        if let (CgroupDriver::V2 { leaves, .. }, CgroupLayout::V2 { root }) = (&mut driver, &layout)
        {
            *leaves = detect::favors_dynmods(&mountinfo, root);
            if !*leaves {
                tracing::warn!(
                    mount = %root.display(),
                    "cgroup v2 without favordynmods: a sandbox's agent shares its memory \
                     cgroup with the processes it starts (remount with -o favordynmods, \
                     Linux 6.0 or later, to keep them apart)"
                );
            }
        }
        Ok(driver)
    }

    /// Creates hutch's parent cgroup `name` in the hierarchies of `layout` and returns the
    /// driver for it. The layout's mount points may be any directories (tests use a tree in
    /// a temp dir).
    pub fn setup(layout: &CgroupLayout, name: &str) -> Result<Self> {
        match layout {
            CgroupLayout::V1 { controllers } => {
                let parents: Vec<(String, PathBuf)> = controllers
                    .iter()
                    .map(|(c, m)| (c.clone(), m.join(name)))
                    .collect();
                for (_, p) in &parents {
                    fs::create_dir_all(p).map_err(|e| RuntimeError::io("mkdir", p, e))?;
                }
                // Let memory limits of children apply hierarchically (v1 default is off on old kernels).
                if let Some((_, p)) = parents.iter().find(|(c, _)| c == "memory") {
                    let _ = fs::write(p.join("memory.use_hierarchy"), "1");
                }
                Ok(CgroupDriver::V1 { parents })
            }
            CgroupLayout::V2 { root } => {
                let parent = root.join(name);
                fs::create_dir_all(&parent).map_err(|e| RuntimeError::io("mkdir", &parent, e))?;
                // Controllers must be enabled on every level from the root down to our parent.
                for dir in [root, &parent] {
                    let ctl = dir.join("cgroup.subtree_control");
                    for c in ["+memory", "+cpu", "+pids", "+io"] {
                        let _ = fs::write(&ctl, c);
                    }
                }
                Ok(CgroupDriver::V2 {
                    parent,
                    leaves: true,
                })
            }
        }
    }

    /// True on a unified (v2) host.
    pub fn is_v2(&self) -> bool {
        matches!(self, CgroupDriver::V2 { .. })
    }

    fn dir(&self, controller: &str, id: &str) -> PathBuf {
        match self {
            CgroupDriver::V1 { parents } => parents
                .iter()
                .find(|(c, _)| c == controller)
                .map(|(_, p)| p.join(id))
                .unwrap_or_default(),
            CgroupDriver::V2 { parent, .. } => parent.join(id),
        }
    }

    /// Every distinct directory that makes up sandbox `id`'s cgroup.
    pub fn dirs(&self, id: &str) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = match self {
            CgroupDriver::V1 { parents } => parents.iter().map(|(_, p)| p.join(id)).collect(),
            CgroupDriver::V2 { parent, .. } => vec![parent.join(id)],
        };
        out.sort();
        out.dedup();
        out
    }

    /// The `cgroup.procs` files a process must be written to, to join sandbox `id`.
    pub fn procs_files(&self, id: &str) -> Vec<PathBuf> {
        self.dirs(id)
            .into_iter()
            .map(|d| d.join("cgroup.procs"))
            .collect()
    }

    /// The `cgroup.procs` files the sandbox's init (its agent) is written to, by the spawn
    /// helper: on v2 its leaf's; on v1 none ([`CgroupDriver::self_join_files`]).
    pub fn agent_procs_files(&self, id: &str) -> Vec<PathBuf> {
        match self {
            CgroupDriver::V1 { .. } => Vec::new(),
            CgroupDriver::V2 {
                parent,
                leaves: true,
            } => vec![parent.join(id).join(AGENT_LEAF).join("cgroup.procs")],
            CgroupDriver::V2 { parent, .. } => vec![parent.join(id).join("cgroup.procs")],
        }
    }

    /// The file a process the agent starts writes `0` to, to move itself into the work
    /// leaf: v1, the memory hierarchy's `work/tasks` (the writing thread: a child between
    /// fork and exec has no other); v2, `work/cgroup.procs`; none on v2 without leaves.
    pub fn work_join_file(&self, id: &str) -> Option<PathBuf> {
        match self {
            CgroupDriver::V1 { .. } => Some(self.dir("memory", id).join(WORK_LEAF).join("tasks")),
            CgroupDriver::V2 {
                parent,
                leaves: true,
            } => Some(parent.join(id).join(WORK_LEAF).join("cgroup.procs")),
            CgroupDriver::V2 { .. } => None,
        }
    }

    /// The `cgroup.procs` files a process from outside is written to, to join sandbox `id`
    /// among the processes its agent starts (a kernel a zygote forked for it).
    pub fn work_procs_files(&self, id: &str) -> Vec<PathBuf> {
        let memory = self.dir("memory", id);
        self.dirs(id)
            .into_iter()
            .map(|d| {
                let leaf = match self {
                    CgroupDriver::V1 { .. } => d == memory,
                    CgroupDriver::V2 { leaves, .. } => *leaves,
                };
                if leaf {
                    d.join(WORK_LEAF).join("cgroup.procs")
                } else {
                    d.join("cgroup.procs")
                }
            })
            .collect()
    }

    /// The child cgroups of sandbox `id` that exist (removed before their parents).
    fn leaves(&self, id: &str) -> Vec<PathBuf> {
        self.dirs(id)
            .into_iter()
            .flat_map(|d| [d.join(WORK_LEAF), d.join(AGENT_LEAF)])
            .filter(|d| d.is_dir())
            .collect()
    }

    /// The `tasks` files of sandbox `id`'s cgroup on v1 (none on v2). A single-threaded
    /// process that writes `0` to each moves itself in without the global lock that every
    /// write to `cgroup.procs` takes (an RCU grace period, ~10 ms, whenever it was idle).
    pub fn self_join_files(&self, id: &str) -> Vec<PathBuf> {
        match self {
            CgroupDriver::V1 { .. } => self.dirs(id).into_iter().map(|d| d.join("tasks")).collect(),
            CgroupDriver::V2 { .. } => Vec::new(),
        }
    }

    /// Creates sandbox `id`'s cgroup with its limits.
    pub fn create(&self, id: &str, limits: &CgroupLimits) -> Result<()> {
        for d in self.dirs(id) {
            mkdir_once(&d)?;
        }
        let files = if self.is_v2() {
            limits.v2_files()
        } else {
            limits.v1_files()
        };
        for f in &files {
            write_limit(&self.dir(f.controller, id), f)?;
        }
        self.create_leaves(id, limits)
    }

    fn create_leaves(&self, id: &str, limits: &CgroupLimits) -> Result<()> {
        match self {
            CgroupDriver::V1 { .. } => {
                let work = self.dir("memory", id).join(WORK_LEAF);
                mkdir_once(&work)?;
                for f in &limits.v1_work_files() {
                    write_limit(&work, f)?;
                }
            }
            CgroupDriver::V2 { leaves: false, .. } => {}
            CgroupDriver::V2 { parent, .. } => {
                let d = parent.join(id);
                // The leaves' memory files exist only once the sandbox's cgroup hands the
                // controller down (while it holds no process yet).
                write(&d.join("cgroup.subtree_control"), "+memory")?;
                mkdir_once(&d.join(AGENT_LEAF))?;
                mkdir_once(&d.join(WORK_LEAF))?;
                for (leaf, f) in &limits.v2_leaf_files() {
                    write_limit(&d.join(leaf), f)?;
                }
            }
        }
        Ok(())
    }

    /// Gives sandbox `id` the least CPU time when CPUs are contended (`low`), or the
    /// default share again: a sandbox warming up in a pool yields to every other one.
    pub fn set_low_priority(&self, id: &str, low: bool) -> Result<()> {
        let (file, value) = match (self.is_v2(), low) {
            (false, true) => ("cpu.shares", "2"),
            (false, false) => ("cpu.shares", "1024"),
            (true, true) => ("cpu.weight", "1"),
            (true, false) => ("cpu.weight", "100"),
        };
        let path = self.dir("cpu", id).join(file);
        if !path.exists() {
            // A v2 host without the cpu controller delegated: nothing to weigh.
            return Ok(());
        }
        write(&path, value)
    }

    /// Freezes (`true`) or thaws (`false`) every process of sandbox `id`, waiting until the
    /// kernel reports the new state so that a paused sandbox really uses no CPU.
    pub fn set_frozen(&self, id: &str, frozen: bool) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        match self {
            CgroupDriver::V1 { .. } => {
                let f = self.dir("freezer", id).join("freezer.state");
                let want = if frozen { "FROZEN" } else { "THAWED" };
                loop {
                    write(&f, want)?;
                    if read(&f)?.trim() == want {
                        return Ok(());
                    }
                    if Instant::now() > deadline {
                        return Err(RuntimeError::Cgroup(format!(
                            "{} did not become {want}",
                            f.display()
                        )));
                    }
                    sleep(Duration::from_millis(2));
                }
            }
            CgroupDriver::V2 { .. } => {
                let d = self.dir("", id);
                write(&d.join("cgroup.freeze"), if frozen { "1" } else { "0" })?;
                let want = if frozen { "frozen 1" } else { "frozen 0" };
                loop {
                    if read(&d.join("cgroup.events"))?
                        .lines()
                        .any(|l| l.trim() == want)
                    {
                        return Ok(());
                    }
                    if Instant::now() > deadline {
                        return Err(RuntimeError::Cgroup(format!(
                            "{} did not reach `{want}`",
                            d.display()
                        )));
                    }
                    sleep(Duration::from_millis(2));
                }
            }
        }
    }

    /// True when sandbox `id` is frozen.
    pub fn is_frozen(&self, id: &str) -> bool {
        match self {
            CgroupDriver::V1 { .. } => {
                fs::read_to_string(self.dir("freezer", id).join("freezer.state"))
                    .map(|s| s.trim() == "FROZEN")
                    .unwrap_or(false)
            }
            CgroupDriver::V2 { .. } => fs::read_to_string(self.dir("", id).join("cgroup.events"))
                .map(|s| s.lines().any(|l| l.trim() == "frozen 1"))
                .unwrap_or(false),
        }
    }

    /// The pids of every process in sandbox `id`'s cgroup (its leaves included).
    pub fn pids(&self, id: &str) -> Vec<i32> {
        let ctl = if self.is_v2() { "" } else { "pids" };
        let d = self.dir(ctl, id);
        [d.clone(), d.join(AGENT_LEAF), d.join(WORK_LEAF)]
            .iter()
            .filter_map(|d| fs::read_to_string(d.join("cgroup.procs")).ok())
            .flat_map(|s| {
                s.lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<i32>>()
            })
            .collect()
    }

    /// Sends SIGKILL to every process in sandbox `id`'s cgroup (thawing it first: frozen
    /// tasks do not die).
    pub fn kill_all(&self, id: &str) {
        if self.dirs(id).iter().all(|d| !d.exists()) {
            return;
        }
        if self.is_frozen(id) {
            let _ = self.set_frozen(id, false);
        }
        if let CgroupDriver::V2 { .. } = self {
            let kill = self.dir("", id).join("cgroup.kill");
            if fs::write(&kill, "1").is_ok() {
                return;
            }
        }
        for pid in self.pids(id) {
            let _ = hutch_sys::signal::kill(pid, hutch_sys::signal::Signal::KILL);
        }
    }

    /// Removes sandbox `id`'s cgroup, retrying while exiting tasks still hold it.
    pub fn remove(&self, id: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(5);
        for d in self.leaves(id).into_iter().chain(self.dirs(id)) {
            loop {
                match fs::remove_dir(&d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e) => {
                        if Instant::now() > deadline {
                            return Err(RuntimeError::io("rmdir", &d, e));
                        }
                        self.kill_all(id);
                        sleep(Duration::from_millis(10));
                    }
                }
            }
        }
        Ok(())
    }

    /// Resource usage of sandbox `id`.
    pub fn stats(&self, id: &str) -> Result<CgroupStats> {
        match self {
            CgroupDriver::V1 { .. } => {
                let mem = self.dir("memory", id);
                let usage = read_u64(&mem.join("memory.usage_in_bytes"))?;
                let stat = read(&mem.join("memory.stat"))?;
                let cache = stat_field(&stat, "total_cache")
                    .or_else(|| stat_field(&stat, "cache"))
                    .unwrap_or(0);
                let inactive = stat_field(&stat, "total_inactive_file").unwrap_or(0);
                Ok(CgroupStats {
                    cpu_usage_ns: read_u64(&self.dir("cpuacct", id).join("cpuacct.usage"))?,
                    mem_used: usage.saturating_sub(inactive),
                    mem_cache: cache,
                    pids: read_u64(&self.dir("pids", id).join("pids.current"))?,
                })
            }
            CgroupDriver::V2 { .. } => {
                let d = self.dir("", id);
                let usage = read_u64(&d.join("memory.current"))?;
                let stat = read(&d.join("memory.stat"))?;
                let inactive = stat_field(&stat, "inactive_file").unwrap_or(0);
                let cpu = read(&d.join("cpu.stat"))?;
                Ok(CgroupStats {
                    cpu_usage_ns: stat_field(&cpu, "usage_usec").unwrap_or(0) * 1000,
                    mem_used: usage.saturating_sub(inactive),
                    mem_cache: stat_field(&stat, "file").unwrap_or(0),
                    pids: read_u64(&d.join("pids.current"))?,
                })
            }
        }
    }

    /// Ids of every sandbox cgroup that exists below hutch's parent (for the restart sweep).
    pub fn existing(&self) -> Vec<String> {
        let parent = match self {
            CgroupDriver::V1 { parents } => {
                parents.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>()
            }
            CgroupDriver::V2 { parent, .. } => vec![parent.clone()],
        };
        let mut ids: Vec<String> = parent
            .iter()
            .filter_map(|p| fs::read_dir(p).ok())
            .flatten()
            .flatten()
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }
}
