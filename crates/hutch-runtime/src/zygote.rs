//! Zygotes: one long-lived Python process per template that has imported the Jupyter
//! kernel's machinery once and forks new kernels straight into sandboxes, so a kernel
//! start costs a fork instead of an interpreter boot (see `docs/design.md`, "Cheap kernel
//! starts").
//!
//! A zygote runs the template's own Python on a read-only view of the template's layers,
//! in user, mount, network, IPC and UTS namespaces of its own, as root of a user namespace
//! that maps that root to a host id of its own ([`ZygoteRequest::own_id`]) and ids
//! `1..count` to the sandboxes' ids. It stays in the host's pid namespace, so that it may
//! enter the pid namespaces of sandboxes. Sandboxes served by a zygote have their user
//! namespace nested in the zygote's ([`crate::spawn::ParentUserNs`]): that is what lets a
//! fork of the zygote enter them, and nothing else changes for them (their ids on the host
//! are the same as without a zygote).
//!
//! The zygote talks to the server over a `SOCK_SEQPACKET` socket on its fd 3; the protocol
//! is in [`SCRIPT`].

use std::ffi::CString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};
use crate::mounts::plan as mount_plan;
use crate::spawn::{
    bind_ro, cstring, env_entries, errno, mnt, run_steps, write_id_maps, Handshake, Never,
    SpawnResponse, Stdio,
};
use hutch_sys::creds::Credentials;
use hutch_sys::ns::{Fork, Namespaces};

/// Environment variable that makes `hutch __spawn` start a zygote ([`helper_main`]).
pub const HELPER_ENV: &str = "HUTCH_SPAWN_ZYGOTE";

/// The zygote itself, run as `python -c SCRIPT`.
pub const SCRIPT: &str = include_str!("zygote/zygote.py");

/// The descriptor a zygote finds its socket to the server on.
pub const SOCKET_FD: i32 = 3;

/// What the server asks the helper to start.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ZygoteRequest {
    /// Its hostname.
    pub name: String,
    /// The template's read-only layers, topmost first.
    pub layers: Vec<PathBuf>,
    /// An empty host directory the template's view is mounted on (in the zygote's own
    /// mount namespace only).
    pub root: PathBuf,
    /// Host id of the sandboxes' root (the zygote's id 1).
    pub id_base: u32,
    /// How many sandbox ids are mapped.
    pub id_count: u32,
    /// Host id of the zygote's root: outside the sandboxes' range, and its own.
    pub own_id: u32,
    /// Command line (the template's Python, `-c`, [`SCRIPT`]).
    pub argv: Vec<String>,
    /// Its environment.
    pub env: Vec<(String, String)>,
    /// Where its stdout/stderr go (None: /dev/null).
    pub log_file: Option<PathBuf>,
}

/// The id maps of a zygote: its root is `own_id`, ids `1..=count` are the sandboxes'.
pub fn id_maps(own_id: u32, id_base: u32, id_count: u32) -> String {
    format!("0 {own_id} 1\n1 {id_base} {id_count}\n")
}

/// Entry point of `hutch __spawn` with [`HELPER_ENV`]`=1`: reads a [`ZygoteRequest`] on
/// stdin, starts the zygote with the helper's fd 3 as its socket and answers a
/// [`SpawnResponse`] on stdout.
pub fn helper_main() -> i32 {
    let mut input = String::new();
    let resp = match std::io::stdin().read_to_string(&mut input) {
        Err(e) => Err(RuntimeError::Spawn(format!("reading request: {e}"))),
        Ok(_) => serde_json::from_str::<ZygoteRequest>(&input)
            .map_err(|e| RuntimeError::Spawn(format!("bad request: {e}")))
            .and_then(|req| start(&req)),
    };
    let (resp, code) = match resp {
        Ok((pid, start)) => (
            SpawnResponse {
                pid: Some(pid),
                start_time: Some(start),
                error: None,
                timings: Vec::new(),
                ready: false,
            },
            0,
        ),
        Err(e) => (
            SpawnResponse {
                pid: None,
                start_time: None,
                error: Some(e.to_string()),
                timings: Vec::new(),
                ready: false,
            },
            1,
        ),
    };
    let _ = serde_json::to_writer(std::io::stdout(), &resp);
    let _ = std::io::stdout().flush();
    code
}

/// Everything the child needs, prepared before the clone.
struct Plan {
    hostname: CString,
    overlay: Option<String>,
    root: PathBuf,
    layers: Vec<PathBuf>,
    argv: Vec<CString>,
    envp: Vec<CString>,
    stdio: Stdio,
}

fn start(req: &ZygoteRequest) -> Result<(i32, u64)> {
    if req.argv.is_empty() || req.layers.is_empty() {
        return Err(RuntimeError::Spawn(
            "a zygote needs a command and at least one layer".into(),
        ));
    }
    // The socket must reach the zygote's exec: not close-on-exec, and really there.
    hutch_sys::fd::keep_open_on_exec(SOCKET_FD)
        .map_err(|e| RuntimeError::sys("the zygote's socket (fd 3)", e))?;
    let plan = Plan {
        hostname: cstring(&req.name)?,
        overlay: (req.layers.len() > 1).then(|| {
            let lower: Vec<String> = req.layers.iter().map(|l| l.display().to_string()).collect();
            format!("lowerdir={}", lower.join(":"))
        }),
        root: req.root.clone(),
        layers: req.layers.clone(),
        argv: req.argv.iter().map(|a| cstring(a)).collect::<Result<_>>()?,
        envp: env_entries(&req.env)?,
        stdio: Stdio::open(req.log_file.as_deref())?,
    };
    let handshake = Handshake::new()?;
    let flags = Namespaces::NEWUSER
        | Namespaces::NEWNS
        | Namespaces::NEWNET
        | Namespaces::NEWUTS
        | Namespaces::NEWIPC;
    // Owned by the uid root inside maps to, as sandboxes' are (see spawn.rs).
    let child = match hutch_sys::ns::fork_into_namespaces_owned_by(flags, req.id_base)
        .map_err(|e| RuntimeError::sys("clone (the zygote's namespaces)", e))?
    {
        Fork::Parent(pid) => handshake.parent(pid),
        Fork::Child => handshake.child(|| child(&plan)),
    };
    let pid = child.pid;
    write_id_maps(pid, &id_maps(req.own_id, req.id_base, req.id_count))
        .map_err(|e| child.kill(e))?;
    let start = child.release("the zygote")?;
    Ok((pid, start))
}

/// Runs in the cloned child: mounts the template's view, becomes root of its namespace,
/// pivots and execs the zygote. Only returns on failure.
fn child(plan: &Plan) -> std::result::Result<Never, String> {
    run_steps(&mount_plan::private_tree())?;
    // Mounted while still host root (the layers' parent directories are closed to others),
    // read-only, without set-uid programs or devices: the zygote must never gain anything
    // from a template's files.
    match &plan.overlay {
        Some(options) => mnt(
            Some(Path::new("overlay")),
            &plan.root,
            Some("overlay"),
            hutch_sys::mount::flags::RDONLY
                | hutch_sys::mount::flags::NOSUID
                | hutch_sys::mount::flags::NODEV,
            Some(options),
        )?,
        None => bind_ro(&plan.layers[0], &plan.root)?,
    }
    hutch_sys::ns::chdir(&plan.root).map_err(|e| errno("chdir root", e))?;
    Credentials::root()
        .apply()
        .map_err(|e| errno("setgroups/setresgid/setresuid", e))?;
    hutch_sys::ns::set_hostname(plan.hostname.as_bytes()).map_err(|e| errno("sethostname", e))?;
    plan.stdio.redirect()?;
    run_steps(&mount_plan::zygote_tree(Path::new(".")))?;
    let dot = Path::new(".");
    hutch_sys::ns::pivot_root(dot, dot).map_err(|e| errno("pivot_root", e))?;
    hutch_sys::mount::detach(dot).map_err(|e| errno("detach old root", e))?;
    hutch_sys::ns::chdir(Path::new("/")).map_err(|e| errno("chdir /", e))?;
    // Only stdio and the socket go on (a shell that started the server may have left
    // descriptors without close-on-exec).
    hutch_sys::fd::close_from(SOCKET_FD as u32 + 1).map_err(|e| errno("close_range", e))?;
    hutch_sys::signal::reset_dispositions();
    let e = hutch_sys::process::exec(&plan.argv[0], &plan.argv, &plan.envp);
    Err(errno("exec zygote", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_zygote_maps_its_root_apart_from_the_sandboxes_ids() {
        assert_eq!(
            id_maps(1_065_536, 1_000_000, 65_536),
            "0 1065536 1\n1 1000000 65536\n"
        );
    }
}
