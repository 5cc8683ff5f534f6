//! The spawn helper: a short-lived, single-threaded process (`hutch __spawn`) that clones
//! the sandbox's PID 1 into fresh namespaces, wires it up from the outside (id maps,
//! cgroup, network) and exits once the agent has been exec'd. The sandbox's init is then
//! reparented to `hutch serve`, which is a child subreaper.
//!
//! Forking happens here rather than in the server because the server is multi-threaded:
//! after `fork` only async-signal-safe calls are allowed there, while this process can do
//! ordinary work in the child.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use hutch_contracts::agent::{
    AGENT_PATH, READY_FD, READY_FD_ENV, WORK_CGROUP_FD, WORK_CGROUP_FD_ENV,
};
use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};
use crate::mounts::plan::{self as mount_plan, Mount, Step};
use crate::net::{self, SandboxNet};
use crate::timing::Steps;
use crate::{caps, proc, seccomp};
use hutch_sys::creds::Credentials;
use hutch_sys::mount::flags;
use hutch_sys::ns::{Fork, Namespaces};

/// What the server asks the helper to start.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpawnRequest {
    /// Sandbox id; also the hostname.
    pub id: String,
    /// The mounted overlay that becomes `/`.
    pub rootfs: PathBuf,
    /// The agent binary on the host.
    pub agent_bin: PathBuf,
    /// Environment of the agent (its configuration travels here).
    pub agent_env: Vec<(String, String)>,
    /// Host uid/gid of root inside.
    pub id_base: u32,
    /// Number of ids mapped.
    pub id_count: u32,
    /// `cgroup.procs` files the helper writes the new process's pid to.
    pub cgroup_procs: Vec<PathBuf>,
    /// cgroup v1 `tasks` files the new process writes `0` to, moving itself in (see
    /// [`crate::CgroupDriver::self_join_files`]).
    #[serde(default)]
    pub cgroup_tasks: Vec<PathBuf>,
    /// Network facts.
    pub net: SandboxNet,
    /// Install the seccomp allowlist.
    pub seccomp: bool,
    /// Set `no_new_privs`.
    pub no_new_privs: bool,
    /// The file (see [`crate::CgroupDriver::work_join_file`]) the agent's processes join
    /// the sandbox's work cgroup through, handed to the agent as [`WORK_CGROUP_FD`].
    #[serde(default)]
    pub work_cgroup: Option<PathBuf>,
    /// Where the agent's stdout/stderr go (None: /dev/null).
    pub log_file: Option<PathBuf>,
    /// Create the sandbox's user namespace inside this one (a zygote's, see
    /// [`crate::zygote`]) instead of the host's, so that the zygote may enter the sandbox.
    #[serde(default)]
    pub parent_userns: Option<ParentUserNs>,
    /// With [`SpawnRequest::parent_userns`]: the id of the parent namespace root inside maps
    /// to. A zygote maps its ids `1..` to the host's from the template range on, so a
    /// sandbox whose range starts `k` ids above the template range's maps to `1 + k`.
    #[serde(default = "first_nested_id")]
    pub nested_root_id: u32,
    /// Run the agent on gVisor's kernel: the `runsc` command line that starts the bundle
    /// written for this sandbox (see [`crate::gvisor`]).
    #[serde(default)]
    pub gvisor: Option<Vec<String>>,
}

fn first_nested_id() -> u32 {
    1
}

/// A user namespace a sandbox's own is nested in, named by a process in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentUserNs {
    /// Host pid of the process.
    pub pid: i32,
    /// Its start time ([`proc::start_time`]), checked after its namespace is opened so
    /// that a reused pid is never taken for it.
    pub start_time: u64,
}

/// What the helper answers on stdout.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpawnResponse {
    /// Host pid of the sandbox's PID 1, on success.
    pub pid: Option<i32>,
    /// Its start time (see [`proc::start_time`]).
    pub start_time: Option<u64>,
    /// What failed, otherwise.
    pub error: Option<String>,
    /// How long each of the helper's steps took, in microseconds (for the debug log).
    #[serde(default)]
    pub timings: Vec<(String, u64)>,
    /// The agent said it serves its API (see `hutch_contracts::agent::READY_FD_ENV`).
    #[serde(default)]
    pub ready: bool,
}

/// Environment variable that makes `hutch __spawn` a long-lived spawner (see
/// [`serve_main`]) instead of a one-shot helper.
pub const SERVE_ENV: &str = "HUTCH_SPAWN_SERVE";

/// Entry point of `hutch __spawn`: reads a [`SpawnRequest`] as JSON on stdin and writes a
/// [`SpawnResponse`] as JSON on stdout. Returns the process exit code. With
/// [`SERVE_ENV`]`=1` it serves many requests instead ([`serve_main`]).
pub fn helper_main() -> i32 {
    // Sandboxes inherit this from the helper, which alone (as host root, before any user
    // namespace) may set a hard limit that sandbox root cannot raise.
    if let Err(e) = hutch_sys::process::forbid_core_dumps() {
        eprintln!("hutch spawn helper: setting RLIMIT_CORE failed: {e}");
        return 1;
    }
    if std::env::var_os(SERVE_ENV).is_some_and(|v| v == "1") {
        return serve_main();
    }
    if std::env::var_os(crate::zygote::HELPER_ENV).is_some_and(|v| v == "1") {
        return crate::zygote::helper_main();
    }
    let mut input = String::new();
    let resp = match std::io::stdin().read_to_string(&mut input) {
        Err(e) => failed(format!("reading request: {e}")),
        Ok(_) => handle(&input),
    };
    let ok = resp.error.is_none();
    let _ = serde_json::to_writer(std::io::stdout(), &resp);
    let _ = std::io::stdout().flush();
    if ok {
        0
    } else {
        1
    }
}

fn failed(error: String) -> SpawnResponse {
    SpawnResponse {
        pid: None,
        start_time: None,
        error: Some(error),
        timings: Vec::new(),
        ready: false,
    }
}

/// Parses one request and starts its sandbox, in a slot network of its own.
fn handle(input: &str) -> SpawnResponse {
    match serde_json::from_str::<SpawnRequest>(input) {
        Err(e) => failed(format!("bad request: {e}")),
        Ok(req) => start(&req, None, Steps::start()),
    }
}

/// Starts the sandbox of `req` in `slot_net` (the slot's kept network), or in a network
/// made for it.
fn start(req: &SpawnRequest, slot_net: Option<BorrowedFd<'_>>, mut steps: Steps) -> SpawnResponse {
    match spawn(req, slot_net, &mut steps) {
        Ok((pid, start, ready)) => {
            let up = agent_up(&ready);
            steps.mark("agent_up");
            SpawnResponse {
                pid: Some(pid),
                start_time: Some(start),
                error: None,
                timings: steps.steps().to_vec(),
                ready: up,
            }
        }
        Err(e) => SpawnResponse {
            timings: steps.steps().to_vec(),
            ..failed(e.to_string())
        },
    }
}

/// One request to a long-lived spawner: a line of JSON on its stdin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServeRequest {
    /// Echoed in the answer.
    pub id: u64,
    /// What to start.
    pub req: SpawnRequest,
}

/// One answer of a long-lived spawner: a line of JSON on its stdout, written in one
/// `write` so that answers of concurrent requests never interleave.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServeResponse {
    /// The request's id.
    pub id: u64,
    /// Its outcome.
    pub resp: SpawnResponse,
}

/// Longest answer line: a pipe write of at most `PIPE_BUF` (4096) bytes is atomic.
const MAX_ANSWER: usize = 4000;

/// The answer line for `id`, shortened (the error text, then the timings) to fit in one
/// atomic pipe write.
pub fn answer_line(id: u64, mut resp: SpawnResponse) -> Vec<u8> {
    loop {
        let mut line = serde_json::to_vec(&ServeResponse {
            id,
            resp: resp.clone(),
        })
        .unwrap_or_default();
        line.push(b'\n');
        if line.len() <= MAX_ANSWER {
            return line;
        }
        if !resp.timings.is_empty() {
            resp.timings.clear();
        } else if let Some(e) = &mut resp.error {
            let keep = e.len().saturating_sub(line.len() - MAX_ANSWER + 16);
            let mut cut = keep.min(e.len());
            while !e.is_char_boundary(cut) {
                cut -= 1;
            }
            e.truncate(cut);
            e.push_str(" [...]");
        } else {
            return line;
        }
    }
}

/// A long-lived spawner (`hutch __spawn` with [`SERVE_ENV`]`=1`), started once by the
/// server: saves the server the start of a new process (exec, dynamic linking, libc's CPU
/// probing) for every sandbox. It reads [`ServeRequest`] lines on stdin and, for each,
/// forks a copy of itself that does exactly what the one-shot helper does (this process is
/// single-threaded, so the copy may run ordinary code), answers with a [`ServeResponse`]
/// line on stdout and exits. The sandbox's init is then orphaned and, as before, adopted by
/// the server, the nearest child subreaper (this process is none). Returns at end of input.
pub fn serve_main() -> i32 {
    let stdin = std::io::stdin();
    let mut lines = stdin.lock();
    let mut line = String::new();
    let mut nets = KeptNets::default();
    loop {
        line.clear();
        match std::io::BufRead::read_line(&mut lines, &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        // Copies that have answered.
        while let Ok(Some(_)) = hutch_sys::process::reap_any() {}
        let (id, req) = match serde_json::from_str::<ServeRequest>(&line) {
            Ok(r) => (r.id, Ok(r.req)),
            Err(e) => (
                serde_json::from_str::<serde_json::Value>(&line)
                    .ok()
                    .and_then(|v| v.get("id").and_then(serde_json::Value::as_u64))
                    .unwrap_or(0),
                Err(format!("bad request: {e}")),
            ),
        };
        let mut steps = Steps::start();
        let net = req.and_then(|req| {
            nets.ready(&req, &mut steps)?;
            let slot = req.net.slot;
            Ok((req, slot))
        });
        let (req, slot) = match net {
            Ok(r) => r,
            Err(e) => {
                if std::io::stdout()
                    .write_all(&answer_line(id, failed(e)))
                    .is_err()
                {
                    break;
                }
                continue;
            }
        };
        match hutch_sys::ns::fork_into_namespaces(Namespaces::empty()) {
            Ok(Fork::Child) => {
                let ns = nets.get(slot);
                let resp = start(&req, ns, steps);
                let _ = std::io::stdout().write_all(&answer_line(id, resp));
                hutch_sys::process::exit_now(0);
            }
            Ok(Fork::Parent(_)) => {}
            Err(e) => {
                let line = answer_line(id, failed(format!("fork: {e}")));
                if std::io::stdout().write_all(&line).is_err() {
                    break;
                }
            }
        }
    }
    // End of input: the server is going; let the copies still working finish.
    while hutch_sys::process::reap_any().is_ok() {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    0
}

/// How many slot networks a long-lived helper keeps at most; beyond, the least recently
/// used goes (a sandbox still in it keeps it until it ends; the slot's next sandbox then
/// gets a new one).
const KEPT_NETS_MAX: usize = 256;

/// The slot networks a long-lived helper keeps (docs/design.md, "Slot networks"): made the
/// first time a sandbox of the slot starts, kept for the slot's next sandboxes with the same
/// owner until this process exits, at most [`KEPT_NETS_MAX`] of them.
#[derive(Default)]
struct KeptNets {
    nets: HashMap<u32, KeptNet>,
    clock: u64,
    /// What slot networks are made from (see [`net::make_parent_net`]): made on first
    /// use; the inner None on a kernel where that gains nothing.
    parent: Option<Option<OwnedFd>>,
}

struct KeptNet {
    /// A zygote's user namespace owns it, or (None) the host's.
    owner: Option<ParentUserNs>,
    net: net::SlotNet,
    /// When it was last handed out ([`KeptNets::clock`]).
    used: u64,
}

impl KeptNets {
    /// Makes sure the network of `req`'s slot is there, with `req`'s owner and its veth
    /// still the slot's (making it anew otherwise).
    fn ready(&mut self, req: &SpawnRequest, steps: &mut Steps) -> std::result::Result<(), String> {
        let slot = req.net.slot;
        if self
            .nets
            .get(&slot)
            .is_some_and(|k| k.owner != req.parent_userns || !k.net.intact(&req.net))
        {
            self.nets.remove(&slot);
        }
        // Nothing of the slot's last sandbox may be left in it for the next.
        if let Some(k) = self.nets.get(&slot) {
            if net::end_leftover_sockets(&k.net.ns).is_err() {
                self.nets.remove(&slot);
            }
            steps.mark("slot_net_sockets");
        }
        self.clock += 1;
        if let Some(k) = self.nets.get_mut(&slot) {
            k.used = self.clock;
            return Ok(());
        }
        let parent = self
            .parent
            .get_or_insert_with(net::make_parent_net)
            .as_ref();
        let net = make_slot_net(req, parent)
            .map_err(|e| format!("making the network of slot {slot}: {e}"))?;
        steps.mark("slot_net");
        self.nets.insert(
            slot,
            KeptNet {
                owner: req.parent_userns,
                net,
                used: self.clock,
            },
        );
        if let Some(old) =
            least_recently_used(self.nets.iter().map(|(s, k)| (*s, k.used)), KEPT_NETS_MAX)
        {
            self.nets.remove(&old);
        }
        Ok(())
    }

    /// The network namespace of `slot`'s kept network.
    fn get(&self, slot: u32) -> Option<BorrowedFd<'_>> {
        self.nets.get(&slot).map(|k| k.net.ns.as_fd())
    }
}

/// Of `entries` (key, last use), the least recently used key when there are more than `max`.
fn least_recently_used(
    entries: impl ExactSizeIterator<Item = (u32, u64)>,
    max: usize,
) -> Option<u32> {
    if entries.len() <= max {
        return None;
    }
    entries.min_by_key(|(_, used)| *used).map(|(k, _)| k)
}

/// Makes the network of `req`'s slot, owned by the host's user namespace or, for a
/// sandbox nested in a zygote's, by that one.
fn make_slot_net(req: &SpawnRequest, parent: Option<&OwnedFd>) -> Result<net::SlotNet> {
    match req.parent_userns {
        None => net::make_slot_net(&req.net, (req.id_base, req.id_count), None, parent),
        Some(owner) => {
            let userns = OwnedFd::from(open_userns(owner)?);
            let ids = (req.nested_root_id, req.id_count);
            net::make_slot_net(&req.net, ids, Some(&userns), parent)
        }
    }
}

/// Everything the child needs, prepared before the clone.
struct ChildPlan {
    hostname: CString,
    rootfs: PathBuf,
    /// The agent binary on the host.
    agent_bin: PathBuf,
    agent_inside: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    programs: Vec<Vec<hutch_sys::seccomp::Instruction>>,
    no_new_privs: bool,
    /// Opened here: once the child has switched to its mapped ids it cannot open host files.
    stdio: Stdio,
    /// The cgroup `tasks` files the child moves itself in with (close-on-exec).
    cgroup_tasks: Vec<fs::File>,
    /// The child starts in the rootfs as its working directory and cannot walk the host's
    /// path to it (its user namespace is a zygote's, see [`fork_nested`]).
    rootfs_is_cwd: bool,
    /// A sysfs of the slot's network namespace, made here: the child may not mount one in a
    /// network namespace its user namespace does not own. None: the child tries itself.
    sysfs: Option<OwnedFd>,
    /// The write end of the pipe on which the agent says it is up: the agent's
    /// [`READY_FD`].
    ready: OwnedFd,
    /// The work cgroup's join file, opened here (as host root): the agent's
    /// [`WORK_CGROUP_FD`].
    work_cgroup: Option<fs::File>,
}

/// How long a helper's copy waits for a new agent to say it is up before answering
/// without (the server then asks the agent itself).
const READY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

pub(crate) fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    hutch_sys::fd::pipe().map_err(|e| RuntimeError::sys("pipe2", e))
}

fn spawn(
    req: &SpawnRequest,
    slot_net: Option<BorrowedFd<'_>>,
    steps: &mut Steps,
) -> Result<(i32, u64, OwnedFd)> {
    // The sandbox joins its slot's network: we enter it (this process is a throwaway copy
    // or the one-shot helper) and the clone inherits it. Without a kept one, one is made
    // for this sandbox alone and goes with it.
    let (ready_r, ready_w) = pipe()?;
    let made;
    let netns = match slot_net {
        Some(ns) => ns,
        None => {
            made = make_slot_net(req, None)?;
            made.ns.as_fd()
        }
    };
    hutch_sys::ns::enter_net_namespace(netns)
        .map_err(|e| RuntimeError::sys("setns (the slot's network namespace)", e))?;
    if let Some(argv) = &req.gvisor {
        drop(ready_w);
        let (pid, start) = spawn_gvisor(req, argv, steps)?;
        // No descriptor reaches an agent through gVisor: the pipe's end, already closed,
        // tells the caller to ask the agent itself.
        return Ok((pid, start, ready_r));
    }
    let mut plan = ChildPlan {
        hostname: cstring(&req.id)?,
        rootfs: req.rootfs.clone(),
        agent_bin: req.agent_bin.clone(),
        agent_inside: cstring(AGENT_PATH)?,
        argv: vec![cstring(AGENT_PATH)?],
        envp: {
            let mut env = env_entries(&req.agent_env)?;
            env.push(cstring(&env_entry(READY_FD_ENV, &READY_FD.to_string()))?);
            if req.work_cgroup.is_some() {
                env.push(cstring(&env_entry(
                    WORK_CGROUP_FD_ENV,
                    &WORK_CGROUP_FD.to_string(),
                ))?);
            }
            env
        },
        programs: if req.seccomp {
            seccomp::programs()?
        } else {
            Vec::new()
        },
        no_new_privs: req.no_new_privs,
        stdio: Stdio::open(req.log_file.as_deref())?,
        cgroup_tasks: open_for_writing(&req.cgroup_tasks)?,
        rootfs_is_cwd: req.parent_userns.is_some(),
        sysfs: None,
        ready: ready_w,
        work_cgroup: match &req.work_cgroup {
            Some(p) => Some(
                fs::OpenOptions::new()
                    .write(true)
                    .open(p)
                    .map_err(|e| RuntimeError::io("open", p, e))?,
            ),
            None => None,
        },
    };
    match hutch_sys::mount::new_sysfs() {
        Ok(fd) => plan.sysfs = Some(fd),
        Err(e) => tracing::debug!(error = %e, "no sysfs made for the sandbox"),
    }
    let parent_userns = req.parent_userns.map(open_userns).transpose()?;
    // No OOM exemption is handed down: a score set here by host root would become the
    // floor every process of the sandbox could lower itself to (-1000 made any of them
    // immune to the host's OOM killer). The agent is a few MiB against the programs it runs,
    // which the OOM killer of the sandbox's cgroup picks first.
    steps.mark("prepare");
    let handshake = Handshake::new()?;
    let flags = Namespaces::NEWUSER
        | Namespaces::NEWPID
        | Namespaces::NEWNS
        | Namespaces::NEWUTS
        | Namespaces::NEWIPC;
    // This process is single-threaded (checked by the call), so the child may run ordinary
    // Rust code.
    // The user namespace is owned by the uid root inside maps to, not by host root: its
    // per-user kernel limits are then charged to that uid, never to the host's root.
    let fork = match &parent_userns {
        None => hutch_sys::ns::fork_into_namespaces_owned_by(flags, req.id_base).map_err(|e| {
            RuntimeError::sys("clone (new user, pid, mount, uts, ipc namespaces)", e)
        })?,
        Some(ns) => fork_nested(ns, req, flags)?,
    };
    let child = match fork {
        Fork::Parent(pid) => handshake.parent(pid),
        Fork::Child => handshake.child(|| child(&plan)),
    };
    steps.mark("clone");
    let pid = child.pid;
    parent_setup(req, pid, parent_userns.is_none(), steps).map_err(|e| child.kill(e))?;
    let start = child.release("the sandbox's init")?;
    steps.mark("child_to_exec");
    // Only the agent may hold the write end now, so that its exit ends the wait.
    drop(plan);
    Ok((pid, start, ready_r))
}

/// What the child that becomes `runsc` needs, prepared before the clone.
struct GvisorPlan {
    /// The sandbox's directory (private to host root), its rootfs and gVisor's bundle in it.
    dir: PathBuf,
    rootfs: PathBuf,
    bundle: PathBuf,
    /// The agent binary on the host.
    agent_bin: PathBuf,
    argv: Vec<CString>,
    envp: Vec<CString>,
    stdio: Stdio,
    cgroup_tasks: Vec<fs::File>,
}

/// Starts a gVisor sandbox (see [`crate::gvisor`]): clones a child into new PID and mount
/// namespaces (in the slot's network namespace, entered by the caller) that joins the
/// sandbox's cgroup, mounts a `/proc` of its own and execs `runsc run`. The child is the
/// sandbox's init: when it dies, so does everything gVisor started in its PID namespace.
fn spawn_gvisor(req: &SpawnRequest, argv: &[String], steps: &mut Steps) -> Result<(i32, u64)> {
    if argv.is_empty() {
        return Err(RuntimeError::Spawn("no runsc command line".into()));
    }
    let dir = req
        .rootfs
        .parent()
        .ok_or_else(|| RuntimeError::Spawn("the rootfs has no parent directory".into()))?
        .to_path_buf();
    let plan = GvisorPlan {
        bundle: crate::gvisor::bundle_dir(&dir),
        rootfs: req.rootfs.clone(),
        agent_bin: req.agent_bin.clone(),
        dir,
        argv: argv.iter().map(|a| cstring(a)).collect::<Result<_>>()?,
        envp: vec![cstring("PATH=/usr/sbin:/usr/bin:/sbin:/bin")?],
        stdio: Stdio::open(req.log_file.as_deref())?,
        cgroup_tasks: open_for_writing(&req.cgroup_tasks)?,
    };
    steps.mark("prepare");
    let handshake = Handshake::new()?;
    let fork = hutch_sys::ns::fork_into_namespaces(Namespaces::NEWPID | Namespaces::NEWNS)
        .map_err(|e| RuntimeError::sys("clone (new pid and mount namespaces)", e))?;
    let child = match fork {
        Fork::Parent(pid) => handshake.parent(pid),
        Fork::Child => handshake.child(|| gvisor_child(&plan)),
    };
    steps.mark("clone");
    let pid = child.pid;
    parent_setup(req, pid, false, steps).map_err(|e| child.kill(e))?;
    let start = child.release("gVisor's runsc")?;
    steps.mark("child_to_exec");
    Ok((pid, start))
}

/// The child of [`spawn_gvisor`]; only returns on failure.
fn gvisor_child(plan: &GvisorPlan) -> std::result::Result<Never, String> {
    for mut f in plan.cgroup_tasks.iter() {
        f.write_all(b"0")
            .map_err(|e| format!("joining the sandbox's cgroup: {e}"))?;
    }
    run_steps(&mount_plan::private_tree())?;
    // gVisor's gofer opens the rootfs and the agent as root of the sandbox's id range, which
    // may not walk the sandbox's directory (private to host root, so that no host user
    // reads the sandbox's files) nor, say, a data directory made by `mktemp -d`. In this
    // mount namespace only, a directory that may be walked covers the first of them, the
    // path down to the sandbox's directory is made again in it, the rootfs and the bundle
    // are bound back, and the agent is bound onto its place in the bundle.
    let rootfs = open_path(&plan.rootfs)?;
    let bundle = open_path(&plan.bundle)?;
    let agent = open_path(&plan.agent_bin)?;
    let closed = first_closed_dir(&plan.dir);
    mnt(
        Some(Path::new("tmpfs")),
        &closed,
        Some("tmpfs"),
        flags::NOSUID | flags::NODEV | flags::NOEXEC,
        Some("mode=711,size=16k"),
    )?;
    mkdir(&plan.dir)?;
    let bind = |fd: &fs::File, target: &Path| {
        mnt(
            Some(&fd_path(fd)),
            target,
            None,
            flags::BIND | flags::REC,
            None,
        )
    };
    for (fd, target) in [(&rootfs, &plan.rootfs), (&bundle, &plan.bundle)] {
        mkdir(target)?;
        bind(fd, target)?;
    }
    bind(&agent, &crate::gvisor::agent_in_bundle(&plan.bundle))?;
    drop((rootfs, bundle, agent));
    // runsc finds its own processes through /proc: it must show this PID namespace.
    mnt(
        Some(Path::new("proc")),
        Path::new("/proc"),
        Some("proc"),
        flags::NOSUID | flags::NODEV | flags::NOEXEC,
        None,
    )?;
    plan.stdio.redirect()?;
    hutch_sys::signal::reset_dispositions();
    hutch_sys::fd::close_from(3).map_err(|e| errno("close_range", e))?;
    let e = hutch_sys::process::exec(&plan.argv[0], &plan.argv, &plan.envp);
    Err(errno("exec runsc", e))
}

/// Opens `p` with `O_PATH` (close-on-exec): a handle to bind-mount from once the path may
/// no longer be reachable (a child that switches ids or covers the path's directories).
fn open_path(p: &Path) -> std::result::Result<fs::File, String> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(p)
        .map_err(|e| format!("open {}: {e}", p.display()))
}

/// The `/proc/self/fd/N` path of `fd`, as a mount source.
fn fd_path(fd: &impl AsRawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// The first directory on the way from `/` down to `dir` (`dir` itself at the latest) that
/// users other than its owner may not walk.
fn first_closed_dir(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let mut chain: Vec<&Path> = dir.ancestors().collect();
    chain.reverse();
    chain
        .into_iter()
        .find(|d| fs::metadata(d).map_or(true, |m| m.permissions().mode() & 0o001 == 0))
        .unwrap_or(dir)
        .to_path_buf()
}

/// Opens each of `paths` for writing (cgroup files the child writes to).
fn open_for_writing(paths: &[PathBuf]) -> Result<Vec<fs::File>> {
    paths
        .iter()
        .map(|p| {
            fs::OpenOptions::new()
                .write(true)
                .open(p)
                .map_err(|e| RuntimeError::io("open", p, e))
        })
        .collect()
}

/// Waits until the agent on the other end of `ready` says it is up (true), exits first or
/// says nothing for [`READY_WAIT`] (false).
fn agent_up(ready: &OwnedFd) -> bool {
    if !hutch_sys::fd::wait_readable(ready, READY_WAIT).unwrap_or(false) {
        return false;
    }
    let mut byte = [0u8; 1];
    matches!(hutch_sys::fd::read(ready, &mut byte), Ok(1))
}

/// Stdio of a cloned child: `/dev/null` for input, the log file (appended to) or
/// `/dev/null` for output. The log file is the FIFO of an `--agent-log` pipe
/// (`agent_log.rs`), opened without waiting: when the server that reads it is gone (killed
/// in the middle of a create), a blocking open would wait for a reader forever, holding the
/// helper's copy and every slot network it inherited.
pub(crate) struct Stdio {
    stdin: fs::File,
    stdout: fs::File,
}

impl Stdio {
    /// Opens them (in the helper: the child may no longer be able to).
    pub(crate) fn open(log_file: Option<&Path>) -> Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let null = Path::new("/dev/null");
        let out = log_file.unwrap_or(null);
        let stdout = fs::OpenOptions::new()
            .create(log_file.is_some())
            .append(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(out)
            .map_err(|e| RuntimeError::io("open", out, e))?;
        hutch_sys::fd::set_blocking(&stdout).map_err(|e| RuntimeError::sys("fcntl", e))?;
        Ok(Stdio {
            stdin: fs::File::open(null).map_err(|e| RuntimeError::io("open", null, e))?,
            stdout,
        })
    }

    /// Makes them the caller's 0, 1 and 2 (in the child). The originals stay open,
    /// close-on-exec.
    pub(crate) fn redirect(&self) -> std::result::Result<(), String> {
        hutch_sys::fd::redirect_stdio(&self.stdin, &self.stdout, &self.stdout)
            .map_err(|e| errno("dup2 stdio", e))
    }
}

/// `NAME=value` entries of an environment, for `execve`.
pub(crate) fn env_entries(env: &[(String, String)]) -> Result<Vec<CString>> {
    env.iter().map(|(k, v)| cstring(&env_entry(k, v))).collect()
}

/// `s` for a system call; refused when it holds a NUL byte.
pub(crate) fn cstring(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| RuntimeError::Spawn(format!("{s:?}: string contains a NUL byte")))
}

/// The two pipes between the helper and a child it clones: the parent's "go" (the child
/// waits for it before it does anything) and the child's error report (closed unread by
/// its successful `exec`, close-on-exec).
pub(crate) struct Handshake {
    go_r: OwnedFd,
    go_w: OwnedFd,
    err_r: OwnedFd,
    err_w: OwnedFd,
}

/// A cloned child from its parent's side, waiting for its go.
pub(crate) struct Waiting {
    /// Its pid.
    pub pid: i32,
    go: OwnedFd,
    err: OwnedFd,
}

impl Handshake {
    /// Both pipes, made before the clone.
    pub(crate) fn new() -> Result<Self> {
        let (go_r, go_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        Ok(Handshake {
            go_r,
            go_w,
            err_r,
            err_w,
        })
    }

    /// In the parent, after the clone of `pid`.
    pub(crate) fn parent(self, pid: i32) -> Waiting {
        Waiting {
            pid,
            go: self.go_w,
            err: self.err_r,
        }
    }

    /// In the child: waits for the go, runs `body` (which only returns on failure), reports
    /// the failure and exits without running the parent's exit handlers.
    pub(crate) fn child(self, body: impl FnOnce() -> std::result::Result<Never, String>) -> ! {
        drop(self.go_w);
        drop(self.err_r);
        let mut b = [0u8; 1];
        let msg = match fs::File::from(self.go_r).read(&mut b) {
            Err(e) => format!("waiting for parent: {e}"),
            Ok(0) => "parent went away".into(),
            Ok(_) => match body() {
                Ok(never) => match never {},
                Err(e) => e,
            },
        };
        let _ = fs::File::from(self.err_w).write_all(msg.as_bytes());
        hutch_sys::process::exit_now(1)
    }
}

impl Waiting {
    /// Kills and reaps the child; returns `e`, what went wrong.
    pub(crate) fn kill(&self, e: RuntimeError) -> RuntimeError {
        kill_and_reap(self.pid, e)
    }

    /// Lets the child go and waits until it has exec'd (`what` names it in errors);
    /// returns its start time. A child that failed is killed.
    pub(crate) fn release(self, what: &str) -> Result<u64> {
        let Waiting { pid, go, err } = self;
        fs::File::from(go)
            .write_all(b"g")
            .map_err(|e| kill_and_reap(pid, RuntimeError::io("signal", what, e)))?;
        let mut msg = String::new();
        let _ = fs::File::from(err).read_to_string(&mut msg);
        if !msg.is_empty() {
            return Err(kill_and_reap(pid, RuntimeError::Helper(msg)));
        }
        proc::start_time(pid)
            .ok_or_else(|| RuntimeError::Spawn(format!("{what} exited right after exec")))
    }
}

fn kill_and_reap(pid: i32, e: RuntimeError) -> RuntimeError {
    let _ = hutch_sys::signal::kill(pid, hutch_sys::signal::Signal::KILL);
    let _ = hutch_sys::process::wait_for(pid);
    e
}

/// Host-side wiring of the new child, before it may continue.
fn parent_setup(req: &SpawnRequest, pid: i32, id_maps: bool, steps: &mut Steps) -> Result<()> {
    if id_maps {
        write_id_maps(pid, &id_map_line(req.id_base, req.id_count))?;
        steps.mark("id_maps");
    }
    for f in &req.cgroup_procs {
        fs::write(f, pid.to_string()).map_err(|e| RuntimeError::io("join cgroup", f, e))?;
    }
    steps.mark("join_cgroup");
    Ok(())
}

/// Writes `map` to process `pid`'s `uid_map` and `gid_map`.
pub(crate) fn write_id_maps(pid: i32, map: &str) -> Result<()> {
    for f in ["uid_map", "gid_map"] {
        let p = PathBuf::from(format!("/proc/{pid}/{f}"));
        fs::write(&p, map).map_err(|e| RuntimeError::io("write", &p, e))?;
    }
    Ok(())
}

/// Opens the user namespace of `owner`, making sure the process is still the one named.
fn open_userns(owner: ParentUserNs) -> Result<fs::File> {
    let p = PathBuf::from(format!("/proc/{}/ns/user", owner.pid));
    let ns = fs::File::open(&p).map_err(|e| RuntimeError::io("open", &p, e))?;
    if proc::start_time(owner.pid) != Some(owner.start_time) {
        return Err(RuntimeError::Spawn(format!(
            "process {} (the owner of the sandbox's parent user namespace) is gone",
            owner.pid
        )));
    }
    Ok(ns)
}

/// Clones the sandbox's init with its user namespace nested in `userns` (a zygote's), as
/// our child like [`hutch_sys::ns::fork_into_namespaces`] would.
///
/// Only a process inside `userns` creates namespaces there, and only one in `userns` may
/// write the new child's id maps, so an intermediate copy of us does both: it enters the
/// rootfs directory (while it can still walk the host's path to it), joins `userns` as its
/// root, clones the child as our sibling-made-child (`CLONE_PARENT`), maps the child's ids
/// through the zygote's (`0 root count`: [`SpawnRequest::nested_root_id`], which is
/// [`SpawnRequest::id_base`] on the host) and exits. The child starts in the rootfs and
/// mounts it from there ([`hutch_sys::ns::bind_cwd_onto_itself`]).
fn fork_nested(userns: &fs::File, req: &SpawnRequest, flags: Namespaces) -> Result<Fork> {
    let (rep_r, rep_w) = pipe()?;
    let fork = hutch_sys::ns::fork_into_namespaces(Namespaces::empty())
        .map_err(|e| RuntimeError::sys("fork", e))?;
    match fork {
        Fork::Parent(q) => {
            drop(rep_w);
            let mut answer = String::new();
            let _ = fs::File::from(rep_r).read_to_string(&mut answer);
            let _ = hutch_sys::process::wait_for(q);
            match answer.strip_prefix("P ").map(str::parse::<i32>) {
                Some(Ok(pid)) => Ok(Fork::Parent(pid)),
                _ => Err(RuntimeError::Spawn(format!(
                    "starting the sandbox in the zygote's user namespace: {}",
                    answer.strip_prefix("E ").unwrap_or(&answer)
                ))),
            }
        }
        Fork::Child => {
            drop(rep_r);
            let mut rep = fs::File::from(rep_w);
            match clone_nested(userns, req, flags) {
                Ok(Fork::Child) => Ok(Fork::Child),
                Ok(Fork::Parent(pid)) => {
                    let _ = rep.write_all(format!("P {pid}").as_bytes());
                    hutch_sys::process::exit_now(0)
                }
                Err(e) => {
                    let _ = rep.write_all(format!("E {e}").as_bytes());
                    hutch_sys::process::exit_now(1)
                }
            }
        }
    }
}

/// The intermediate copy's part of [`fork_nested`].
fn clone_nested(userns: &fs::File, req: &SpawnRequest, flags: Namespaces) -> Result<Fork> {
    hutch_sys::ns::chdir(&req.rootfs).map_err(|e| RuntimeError::sys("chdir into the rootfs", e))?;
    hutch_sys::ns::enter_user_namespace(userns)
        .map_err(|e| RuntimeError::sys("setns into the zygote's user namespace", e))?;
    Credentials::root()
        .apply()
        .map_err(|e| RuntimeError::sys("becoming root of the zygote's user namespace", e))?;
    // The credential change made us undumpable, which would give the child's /proc files
    // (its id maps) to the host's root instead of to us.
    hutch_sys::ns::set_dumpable(true).map_err(|e| RuntimeError::sys("PR_SET_DUMPABLE", e))?;
    let fork = hutch_sys::ns::fork_sibling_into_namespaces(flags).map_err(|e| {
        RuntimeError::sys(
            "clone (new user, pid, mount, uts, ipc namespaces) in the zygote's user namespace",
            e,
        )
    })?;
    if let Fork::Parent(pid) = fork {
        if let Err(e) = write_id_maps(pid, &id_map_line(req.nested_root_id, req.id_count)) {
            let _ = hutch_sys::signal::kill(pid, hutch_sys::signal::Signal::KILL);
            return Err(e);
        }
    }
    Ok(fork)
}

/// What a child's body returns on success: nothing, since it has exec'd.
pub(crate) enum Never {}

pub(crate) fn errno(op: &str, e: hutch_sys::Errno) -> String {
    format!("{op}: {}", std::io::Error::from(e))
}

pub(crate) fn mnt(
    src: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: u64,
    data: Option<&str>,
) -> std::result::Result<(), String> {
    hutch_sys::mount::mount(src, target, fstype, flags, data).map_err(|e| {
        format!(
            "mount {} ({fstype:?}): {}",
            target.display(),
            std::io::Error::from(e)
        )
    })
}

pub(crate) fn bind_ro(src: &Path, target: &Path) -> std::result::Result<(), String> {
    mnt(Some(src), target, None, flags::BIND, None)?;
    remount_ro(target)
}

/// Makes a bind mount read-only. Inside a user namespace the flags the mount inherited
/// from the host (nosuid, nodev, noexec, atime) are locked and must be repeated.
fn remount_ro(target: &Path) -> std::result::Result<(), String> {
    let f_flag = hutch_sys::mount::mount_flags(target).map_err(|e| errno("statvfs", e))?;
    let mut flags =
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV;
    for (st_flag, ms_flag) in [
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if f_flag & st_flag != 0 {
            flags |= ms_flag;
        }
    }
    mnt(None, target, None, flags, None)
}

/// Runs in the cloned child once the parent said go: builds the filesystem view, drops
/// privileges and execs the agent. Only returns on failure.
fn child(plan: &ChildPlan) -> std::result::Result<Never, String> {
    // Join the sandbox's cgroup (v1): "0" is the writing thread, us, single-threaded.
    // Writing to files opened by the host-root helper is allowed from our new namespaces.
    for mut f in plan.cgroup_tasks.iter() {
        f.write_all(b"0")
            .map_err(|e| format!("joining the sandbox's cgroup: {e}"))?;
    }
    // Enter the rootfs while still host root: its parent directories are private to root
    // on the host and the mapped ids below could not walk them. Everything after this
    // works relative to the current directory.
    // pivot_root refuses a new root whose mount was made outside our user namespace (it is
    // locked); a bind of the rootfs onto itself, made here, is ours.
    if plan.rootfs_is_cwd {
        run_steps(&mount_plan::private_tree())?;
        hutch_sys::ns::bind_cwd_onto_itself().map_err(|e| errno("bind the rootfs", e))?;
    } else {
        run_steps(&mount_plan::enter_rootfs(&plan.rootfs))?;
        hutch_sys::ns::chdir(&plan.rootfs).map_err(|e| errno("chdir rootfs", e))?;
    }
    // Likewise the agent binary: opened now (O_PATH, in our own mount namespace — a bind
    // source from another namespace is refused) and bind-mounted through /proc/self/fd.
    let agent_fd = open_path(&plan.agent_bin)?;
    // Files created below (on /dev's tmpfs, in the overlay) must belong to mapped ids, so
    // switch to root-of-the-namespace before creating any.
    Credentials::root()
        .apply()
        .map_err(|e| errno("setgroups/setresgid/setresuid", e))?;
    hutch_sys::ns::set_hostname(plan.hostname.as_bytes()).map_err(|e| errno("sethostname", e))?;
    // stdio: nothing of the helper's (its stdout is the server's pipe) may leak in. The
    // originals stay open (close-on-exec) in `plan`.
    plan.stdio.redirect()?;

    let agent_src = fd_path(&agent_fd);
    run_steps(&mount_plan::sandbox_tree(
        Path::new("."),
        &agent_src,
        AGENT_PATH,
        plan.sysfs.is_none(),
    ))?;
    if let Some(sysfs) = &plan.sysfs {
        hutch_sys::mount::attach(sysfs.as_fd(), Path::new("sys"))
            .map_err(|e| errno("attach sysfs on /sys", e))?;
    }

    // pivot_root(".", ".") stacks the old root on top of the new one; detaching "." then
    // drops the whole host tree.
    let dot = Path::new(".");
    hutch_sys::ns::pivot_root(dot, dot).map_err(|e| errno("pivot_root", e))?;
    hutch_sys::mount::detach(dot).map_err(|e| errno("detach old root", e))?;
    hutch_sys::ns::chdir(Path::new("/")).map_err(|e| errno("chdir /", e))?;
    // This sandbox's share of the per-user limits all sandboxes' namespaces are charged to
    // together (inotify instances and watches; see crate::ucounts).
    crate::ucounts::limit_own_namespace()?;
    run_steps(&mount_plan::proc_masks())?;
    // The parent already moved us into the sandbox's cgroup: make it our cgroup root.
    hutch_sys::ns::unshare_cgroup_namespace().map_err(|e| errno("unshare cgroup namespace", e))?;
    caps::drop_bounding_set().map_err(|e| e.to_string())?;
    if plan.no_new_privs {
        caps::set_no_new_privs().map_err(|e| e.to_string())?;
    }
    hutch_sys::signal::reset_dispositions();
    seccomp::install(&plan.programs).map_err(|e| e.to_string())?;
    // Nothing but stdio reaches the agent: a descriptor the server inherited without
    // close-on-exec (a lock a wrapper script holds, say) must not end up in a sandbox.
    // (A failing exec can then only be told by the init's exit.)
    // Then the agent's readiness pipe, as its descriptor READY_FD (3).
    // And the work cgroup's join file as WORK_CGROUP_FD (4). Both go through copies above
    // 9 first: neither may land on the other's place before it has moved.
    let high = |f: BorrowedFd<'_>, what: &str| {
        hutch_sys::fd::dup_above(f, 10).map_err(|e| errno(&format!("dup ({what})"), e))
    };
    let ready = high(plan.ready.as_fd(), "ready")?;
    let work = match &plan.work_cgroup {
        Some(f) => Some(high(f.as_fd(), "cgroup")?),
        None => None,
    };
    hutch_sys::fd::dup_to(&ready, READY_FD).map_err(|e| errno("dup2 (ready)", e))?;
    let last = match &work {
        Some(f) => {
            hutch_sys::fd::dup_to(f, WORK_CGROUP_FD).map_err(|e| errno("dup2 (cgroup)", e))?;
            WORK_CGROUP_FD
        }
        None => READY_FD,
    };
    hutch_sys::fd::close_from(last as u32 + 1).map_err(|e| errno("close_range", e))?;
    let e = hutch_sys::process::exec(&plan.agent_inside, &plan.argv, &plan.envp);
    Err(errno("exec agent", e))
}

fn mkdir(p: &Path) -> std::result::Result<(), String> {
    match fs::create_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) => Err(format!("mkdir {}: {e}", p.display())),
    }
}

/// The line written to a child's `uid_map` and `gid_map`: root inside is `base` outside,
/// followed by `count - 1` more ids.
pub(crate) fn id_map_line(base: u32, count: u32) -> String {
    format!("0 {base} {count}\n")
}

/// One `NAME=value` entry of the agent's environment.
pub(crate) fn env_entry(key: &str, value: &str) -> String {
    format!("{key}={value}")
}

fn mount_step(m: &Mount) -> std::result::Result<(), String> {
    mnt(
        m.source.as_deref(),
        &m.target,
        m.fstype,
        m.flags.bits(),
        m.data,
    )
}

/// Carries out mount-plan steps in order; the first failure (other than of a
/// [`Step::TryMount`]) ends the sandbox's start.
pub(crate) fn run_steps(steps: &[Step]) -> std::result::Result<(), String> {
    for step in steps {
        match step {
            Step::Mkdir(p) => mkdir(p)?,
            Step::Touch(p) => {
                if !p.exists() {
                    fs::write(p, b"").map_err(|e| format!("create {}: {e}", p.display()))?;
                }
            }
            Step::Symlink { link, to } => std::os::unix::fs::symlink(to, link)
                .map_err(|e| format!("symlink {}: {e}", link.display()))?,
            Step::Mount(m) => mount_step(m)?,
            Step::TryMount(m) => {
                // Informative filesystems only (sysfs: lscpu, psutil); a host that refuses
                // them still runs sandboxes.
                let _ = mount_step(m);
            }
            Step::BindReadOnly { source, target } => bind_ro(source, target)?,
            Step::MaskIfPresent(p) => {
                if p.exists() {
                    mnt(Some(Path::new("/dev/null")), p, None, flags::BIND, None)?;
                }
            }
            Step::ReadOnlyIfPresent(p) => {
                if p.exists() {
                    bind_ro(p, p)?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
