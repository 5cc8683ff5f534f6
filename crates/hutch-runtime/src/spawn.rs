//! The spawn helper: a short-lived, single-threaded process (`hutch __spawn`) that clones
//! the sandbox's PID 1 into fresh namespaces, wires it up from the outside (id maps,
//! cgroup, network) and exits once the agent has been exec'd. The sandbox's init is then
//! reparented to `hutch serve`, which is a child subreaper.
//!
//! Forking happens here rather than in the server because the server is multi-threaded:
//! after `fork` only async-signal-safe calls are allowed there, while this process can do
//! ordinary work in the child.

use std::ffi::CString;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use hutch_contracts::agent::AGENT_PATH;
use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};
use crate::net::{self, SandboxNet};
use crate::sys::{self, cpath, cstr};
use crate::{caps, proc, seccomp};

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
    /// `cgroup.procs` files to join.
    pub cgroup_procs: Vec<PathBuf>,
    /// Network facts.
    pub net: SandboxNet,
    /// Install the seccomp allowlist.
    pub seccomp: bool,
    /// Set `no_new_privs`.
    pub no_new_privs: bool,
    /// Where the agent's stdout/stderr go (None: /dev/null).
    pub log_file: Option<PathBuf>,
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
}

/// Entry point of `hutch __spawn`: reads a [`SpawnRequest`] as JSON on stdin and writes a
/// [`SpawnResponse`] as JSON on stdout. Returns the process exit code.
pub fn helper_main() -> i32 {
    let mut input = String::new();
    let resp = match std::io::stdin().read_to_string(&mut input) {
        Err(e) => SpawnResponse {
            pid: None,
            start_time: None,
            error: Some(format!("reading request: {e}")),
        },
        Ok(_) => match serde_json::from_str::<SpawnRequest>(&input) {
            Err(e) => SpawnResponse {
                pid: None,
                start_time: None,
                error: Some(format!("bad request: {e}")),
            },
            Ok(req) => match spawn(&req) {
                Ok((pid, start)) => SpawnResponse {
                    pid: Some(pid),
                    start_time: Some(start),
                    error: None,
                },
                Err(e) => SpawnResponse {
                    pid: None,
                    start_time: None,
                    error: Some(e.to_string()),
                },
            },
        },
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

/// Everything the child needs, prepared before the clone.
struct ChildPlan {
    hostname: CString,
    rootfs: PathBuf,
    /// The agent binary on the host.
    agent_bin: PathBuf,
    agent_inside: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    programs: Vec<seccompiler::BpfProgram>,
    no_new_privs: bool,
    /// Opened here: once the child has switched to its mapped ids it cannot open host files.
    stdin: fs::File,
    stdout: fs::File,
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(RuntimeError::last_os("pipe2"));
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn spawn(req: &SpawnRequest) -> Result<(i32, u64)> {
    let cs = |s: &str| cstr(s).map_err(|e| RuntimeError::Spawn(format!("{s:?}: {e}")));
    let plan = ChildPlan {
        hostname: cs(&req.id)?,
        rootfs: req.rootfs.clone(),
        agent_bin: req.agent_bin.clone(),
        agent_inside: cs(AGENT_PATH)?,
        argv: vec![cs(AGENT_PATH)?],
        envp: req
            .agent_env
            .iter()
            .map(|(k, v)| cs(&format!("{k}={v}")))
            .collect::<Result<_>>()?,
        programs: if req.seccomp {
            seccomp::programs()?
        } else {
            Vec::new()
        },
        no_new_privs: req.no_new_privs,
        stdin: fs::File::open("/dev/null").map_err(|e| RuntimeError::io("open", "/dev/null", e))?,
        stdout: match &req.log_file {
            Some(p) => fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| RuntimeError::io("open", p, e))?,
            None => fs::OpenOptions::new()
                .write(true)
                .open("/dev/null")
                .map_err(|e| RuntimeError::io("open", "/dev/null", e))?,
        },
    };
    // The agent must survive an OOM inside the sandbox, so the child inherits -1000 from
    // us (it resets this for its own children). Set here: once the child sits in its new
    // user namespace its /proc files are no longer writable from outside. Best effort:
    // hosts that withhold CAP_SYS_RESOURCE from root refuse it, and sandboxes still work.
    let _ = fs::write("/proc/self/oom_score_adj", "-1000");
    let (go_r, go_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let flags = libc::CLONE_NEWUSER
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC;
    // SAFETY: a raw clone without a new stack behaves like fork(); this process is
    // single-threaded, so the child may run ordinary Rust code.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        return Err(RuntimeError::last_os(
            "clone (new user, pid, mount, net, uts, ipc namespaces)",
        ));
    }
    if pid == 0 {
        drop(go_w);
        drop(err_r);
        let msg = match child(&plan, go_r) {
            Ok(never) => match never {},
            Err(e) => e,
        };
        let mut f = fs::File::from(err_w);
        let _ = f.write_all(msg.as_bytes());
        // SAFETY: terminate the child without running the parent's atexit handlers.
        unsafe { libc::_exit(1) };
    }
    let pid = pid as i32;
    drop(go_r);
    drop(err_w);
    let kill_child = |e: RuntimeError| {
        // SAFETY: kill and waitpid on our own child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        e
    };
    parent_setup(req, pid).map_err(kill_child)?;
    let mut go = fs::File::from(go_w);
    go.write_all(b"g")
        .map_err(|e| kill_child(RuntimeError::io("signal", "child", e)))?;
    drop(go);
    let mut msg = String::new();
    let _ = fs::File::from(err_r).read_to_string(&mut msg);
    if !msg.is_empty() {
        return Err(kill_child(RuntimeError::Helper(msg)));
    }
    let start = proc::start_time(pid)
        .ok_or_else(|| RuntimeError::Spawn("the sandbox's init exited right after exec".into()))?;
    Ok((pid, start))
}

/// Host-side wiring of the new child, before it may continue.
fn parent_setup(req: &SpawnRequest, pid: i32) -> Result<()> {
    let map = format!("0 {} {}\n", req.id_base, req.id_count);
    for f in ["uid_map", "gid_map"] {
        let p = PathBuf::from(format!("/proc/{pid}/{f}"));
        fs::write(&p, &map).map_err(|e| RuntimeError::io("write", &p, e))?;
    }
    for f in &req.cgroup_procs {
        fs::write(f, pid.to_string()).map_err(|e| RuntimeError::io("join cgroup", f, e))?;
    }
    net::setup_host_side(&req.net, pid)?;
    let nsp = PathBuf::from(format!("/proc/{pid}/ns/net"));
    let ns = fs::File::open(&nsp).map_err(|e| RuntimeError::io("open", &nsp, e))?;
    // SAFETY: setns on an fd we own; this helper is single-threaded and exits soon.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
        return Err(RuntimeError::last_os(
            "setns into the sandbox's network namespace",
        ));
    }
    net::setup_sandbox_side(&req.net)
}

enum Never {}

fn errno(op: &str) -> String {
    format!("{op}: {}", std::io::Error::last_os_error())
}

fn mnt(
    src: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> std::result::Result<(), String> {
    sys::mount(src, target, fstype, flags, data)
        .map_err(|e| format!("mount {} ({fstype:?}): {e}", target.display()))
}

fn bind_ro(src: &Path, target: &Path) -> std::result::Result<(), String> {
    mnt(Some(src), target, None, libc::MS_BIND, None)?;
    remount_ro(target)
}

/// Makes a bind mount read-only. Inside a user namespace the flags the mount inherited
/// from the host (nosuid, nodev, noexec, atime) are locked and must be repeated.
fn remount_ro(target: &Path) -> std::result::Result<(), String> {
    let c = cpath(target).map_err(|e| e.to_string())?;
    // SAFETY: statvfs fills the zeroed struct; c is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } < 0 {
        return Err(errno("statvfs"));
    }
    let mut flags =
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV;
    for (st_flag, ms_flag) in [
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if st.f_flag & st_flag != 0 {
            flags |= ms_flag;
        }
    }
    mnt(None, target, None, flags, None)
}

/// Runs in the cloned child: waits for the parent, builds the filesystem view, drops
/// privileges and execs the agent. Only returns on failure.
fn child(plan: &ChildPlan, go_r: OwnedFd) -> std::result::Result<Never, String> {
    let mut b = [0u8; 1];
    let mut go = fs::File::from(go_r);
    if go
        .read(&mut b)
        .map_err(|e| format!("waiting for parent: {e}"))?
        == 0
    {
        return Err("parent went away".into());
    }
    drop(go);
    // Enter the rootfs while still host root: its parent directories are private to root
    // on the host and the mapped ids below could not walk them. Everything after this
    // works relative to the current directory.
    // pivot_root refuses a new root whose mount was made outside our user namespace (it is
    // locked); a bind of the rootfs onto itself, made here, is ours.
    mnt(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )?;
    mnt(
        Some(&plan.rootfs),
        &plan.rootfs,
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    )?;
    let croot = cpath(&plan.rootfs).map_err(|e| e.to_string())?;
    // SAFETY: chdir with a valid C string.
    if unsafe { libc::chdir(croot.as_ptr()) } < 0 {
        return Err(errno("chdir rootfs"));
    }
    // Likewise the agent binary: opened now (O_PATH, in our own mount namespace — a bind
    // source from another namespace is refused) and bind-mounted through /proc/self/fd.
    let agent_fd = {
        use std::os::unix::fs::OpenOptionsExt;
        fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
            .open(&plan.agent_bin)
            .map_err(|e| format!("open {}: {e}", plan.agent_bin.display()))?
    };
    // Files created below (on /dev's tmpfs, in the overlay) must belong to mapped ids, so
    // switch to root-of-the-namespace before creating any.
    // SAFETY: plain syscalls with integer arguments.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) < 0 {
            return Err(errno("setgroups"));
        }
        if libc::setresgid(0, 0, 0) < 0 {
            return Err(errno("setresgid"));
        }
        if libc::setresuid(0, 0, 0) < 0 {
            return Err(errno("setresuid"));
        }
        if libc::sethostname(plan.hostname.as_ptr(), plan.hostname.as_bytes().len()) < 0 {
            return Err(errno("sethostname"));
        }
    }
    // stdio: nothing of the helper's (its stdout is the server's pipe) may leak in.
    // SAFETY: dup2 onto the standard descriptors of this single-threaded process; the
    // originals stay open (close-on-exec) in `plan`.
    unsafe {
        libc::dup2(plan.stdin.as_raw_fd(), 0);
        libc::dup2(plan.stdout.as_raw_fd(), 1);
        libc::dup2(plan.stdout.as_raw_fd(), 2);
    }

    let root = Path::new(".");
    let nosuid = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    mkdir(&root.join("proc"))?;
    mnt(
        Some(Path::new("proc")),
        &root.join("proc"),
        Some("proc"),
        nosuid,
        None,
    )?;
    setup_dev(root)?;
    mkdir(&root.join("sys"))?;
    // sysfs is informative only (lscpu, psutil); a host that refuses it still runs sandboxes.
    let _ = mnt(
        Some(Path::new("sysfs")),
        &root.join("sys"),
        Some("sysfs"),
        nosuid | libc::MS_RDONLY,
        None,
    );
    let agent = root.join(AGENT_PATH.trim_start_matches('/'));
    if let Some(parent) = agent.parent() {
        mkdir(parent)?;
    }
    if !agent.exists() {
        fs::write(&agent, b"").map_err(|e| format!("create {}: {e}", agent.display()))?;
    }
    let agent_src = PathBuf::from(format!("/proc/self/fd/{}", agent_fd.as_raw_fd()));
    bind_ro(&agent_src, &agent)?;

    let dot = cstr(".").map_err(|e| e.to_string())?;
    // SAFETY: pivot_root/umount2/chdir with valid C strings. pivot_root(".", ".") stacks the
    // old root on top of the new one; detaching "." then drops the whole host tree.
    unsafe {
        if libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) < 0 {
            return Err(errno("pivot_root"));
        }
        if libc::umount2(dot.as_ptr(), libc::MNT_DETACH) < 0 {
            return Err(errno("detach old root"));
        }
        let slash = cstr("/").map_err(|e| e.to_string())?;
        if libc::chdir(slash.as_ptr()) < 0 {
            return Err(errno("chdir /"));
        }
    }
    mask_proc()?;
    // The parent already moved us into the sandbox's cgroup: make it our cgroup root.
    // SAFETY: unshare with a flag constant.
    if unsafe { libc::unshare(libc::CLONE_NEWCGROUP) } < 0 {
        return Err(errno("unshare cgroup namespace"));
    }
    caps::drop_bounding_set().map_err(|e| e.to_string())?;
    if plan.no_new_privs {
        caps::set_no_new_privs().map_err(|e| e.to_string())?;
    }
    seccomp::install(&plan.programs).map_err(|e| e.to_string())?;
    let mut argv: Vec<*const libc::c_char> = plan.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = plan.envp.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: argv and envp are NUL-terminated arrays of valid C strings owned by `plan`.
    unsafe { libc::execve(plan.agent_inside.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    Err(errno("exec agent"))
}

fn mkdir(p: &Path) -> std::result::Result<(), String> {
    match fs::create_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) => Err(format!("mkdir {}: {e}", p.display())),
    }
}

/// A minimal `/dev`: the usual character devices bound from the host, a private devpts
/// instance for PTYs, and a small `/dev/shm`.
fn setup_dev(root: &Path) -> std::result::Result<(), String> {
    let dev = root.join("dev");
    mkdir(&dev)?;
    mnt(
        Some(Path::new("tmpfs")),
        &dev,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("mode=755,size=64k"),
    )?;
    for name in ["null", "zero", "full", "random", "urandom", "tty"] {
        let target = dev.join(name);
        fs::write(&target, b"").map_err(|e| format!("create {}: {e}", target.display()))?;
        mnt(
            Some(&Path::new("/dev").join(name)),
            &target,
            None,
            libc::MS_BIND,
            None,
        )?;
    }
    mkdir(&dev.join("pts"))?;
    mnt(
        Some(Path::new("devpts")),
        &dev.join("pts"),
        Some("devpts"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )?;
    mkdir(&dev.join("shm"))?;
    mnt(
        Some(Path::new("shm")),
        &dev.join("shm"),
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=1777,size=65536k"),
    )?;
    for (link, to) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(to, dev.join(link))
            .map_err(|e| format!("symlink /dev/{link}: {e}"))?;
    }
    Ok(())
}

/// Hides host kernel details in `/proc` and makes its tunables read-only.
fn mask_proc() -> std::result::Result<(), String> {
    for p in [
        "/proc/kcore",
        "/proc/keys",
        "/proc/timer_list",
        "/proc/sched_debug",
        "/proc/kallsyms",
    ] {
        if Path::new(p).exists() {
            mnt(
                Some(Path::new("/dev/null")),
                Path::new(p),
                None,
                libc::MS_BIND,
                None,
            )?;
        }
    }
    for p in [
        "/proc/sys",
        "/proc/sysrq-trigger",
        "/proc/irq",
        "/proc/bus",
        "/proc/fs",
    ] {
        if Path::new(p).exists() {
            bind_ro(Path::new(p), Path::new(p))?;
        }
    }
    Ok(())
}
