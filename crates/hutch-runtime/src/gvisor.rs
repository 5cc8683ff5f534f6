//! gVisor as the stronger boundary (`hutch serve --runtime gvisor`, docs/security.md).
//!
//! A gVisor sandbox is set up on the host like any other (disk, overlay, id range,
//! cgroup, slot network), but its agent runs on gVisor's kernel instead of the host's: the
//! spawn helper clones a process into fresh PID and mount namespaces, in the slot's network
//! namespace and the sandbox's cgroup, that execs `runsc run` on an OCI bundle written here.
//! That process is the sandbox's init as far as the server is concerned: killing it ends
//! its PID namespace and with it gVisor's sentry and gofer, so destroy, pause (the
//! freezer), metrics (the cgroup) and restart recovery work unchanged.
//!
//! Two choices differ from a stock `runsc` deployment, each for a reason measured here:
//! - `--network=host`: the sentry's sockets are host sockets *in the sandbox's own network
//!   namespace*, so the agent, user ports (loopback included), egress rules and the slot
//!   network's reuse work as for native sandboxes. gVisor's own network stack
//!   (`--network=sandbox`) is refused by the `runsc` Debian ships (2024-07-29) on kernels
//!   that have `net.core.rmem_default` in every namespace (6.x): it takes any namespace for
//!   the host's.
//! - `--overlay2=none`: writes go through the gofer to the sandbox's disk on the host, not to
//!   a file or memory inside the sentry, so the disk quota, usage figures and template
//!   builds (`commit_upper`) see them.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{Result, RuntimeError};

/// How gVisor is run (`--runsc`, `--gvisor-platform`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GvisorConfig {
    /// The `runsc` binary.
    pub runsc: PathBuf,
    /// gVisor's platform: `systrap` (default; needs no KVM), `ptrace` or `kvm`.
    pub platform: String,
}

/// What the bundle of one sandbox is made from.
#[derive(Debug, Clone)]
pub struct Bundle<'a> {
    /// Sandbox id; also the hostname and gVisor's container id.
    pub id: &'a str,
    /// The sandbox's mounted overlay.
    pub rootfs: &'a Path,
    /// Where the agent appears inside.
    pub agent_inside: &'a str,
    /// The agent's environment.
    pub env: &'a [(String, String)],
    /// Host id of root inside, and how many ids follow.
    pub ids: (u32, u32),
    /// Set `no_new_privs` on the agent.
    pub no_new_privs: bool,
}

/// Capability names of [`crate::caps::KEPT`], in its order.
const KEPT_NAMES: &[(u32, &str)] = &[
    (0, "CAP_CHOWN"),
    (1, "CAP_DAC_OVERRIDE"),
    (3, "CAP_FOWNER"),
    (4, "CAP_FSETID"),
    (5, "CAP_KILL"),
    (6, "CAP_SETGID"),
    (7, "CAP_SETUID"),
    (8, "CAP_SETPCAP"),
    (10, "CAP_NET_BIND_SERVICE"),
    (18, "CAP_SYS_CHROOT"),
    (27, "CAP_MKNOD"),
    (29, "CAP_AUDIT_WRITE"),
    (31, "CAP_SETFCAP"),
];

/// The capabilities the agent holds: the same as a native sandbox's root.
fn capabilities() -> Vec<&'static str> {
    crate::caps::KEPT
        .iter()
        .filter_map(|c| KEPT_NAMES.iter().find(|(n, _)| n == c).map(|(_, s)| *s))
        .collect()
}

/// The OCI runtime spec (`config.json`) of a sandbox's bundle; `agent` is where the gofer
/// finds the agent binary (see [`agent_in_bundle`]), bound read-only at `b.agent_inside`.
pub fn spec(b: &Bundle<'_>, agent: &Path) -> Value {
    let caps = capabilities();
    let nosuid = ["nosuid", "noexec", "nodev"];
    let (base, count) = b.ids;
    let map = json!([{ "containerID": 0, "hostID": base, "size": count }]);
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": { "uid": 0, "gid": 0 },
            "args": [b.agent_inside],
            "env": b.env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
            "cwd": "/",
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps,
            },
            "rlimits": [
                { "type": "RLIMIT_CORE", "hard": 0, "soft": 0 },
                { "type": "RLIMIT_NOFILE", "hard": 524_288, "soft": 1024 },
            ],
            "noNewPrivileges": b.no_new_privs,
        },
        "root": { "path": b.rootfs, "readonly": false },
        "hostname": b.id,
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc", "options": nosuid },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
              "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
              "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs",
              "options": ["nosuid", "noexec", "nodev", "ro"] },
            { "destination": b.agent_inside, "type": "bind", "source": agent,
              "options": ["rbind", "ro"] },
        ],
        "linux": {
            // The network namespace is the one `runsc` starts in: the slot's.
            "namespaces": [
                { "type": "pid" }, { "type": "ipc" }, { "type": "uts" },
                { "type": "mount" }, { "type": "user" },
                { "type": "network", "path": "/proc/self/ns/net" },
            ],
            "uidMappings": map,
            "gidMappings": map,
        },
    })
}

/// The directory of sandbox `dir`'s bundle (`config.json`, gVisor's state, its log).
pub fn bundle_dir(sandbox_dir: &Path) -> PathBuf {
    sandbox_dir.join("gvisor")
}

/// Where the spawn helper binds the agent binary in the bundle (an empty file on the host):
/// the gofer reads it there, below a path it may walk (see `spawn::gvisor_child`).
pub fn agent_in_bundle(bundle: &Path) -> PathBuf {
    bundle.join("hutch-agent")
}

/// Writes the bundle of `b` below `sandbox_dir` (private to host root; the bundle's own
/// directory may be walked, for the gofer to reach the agent in it) and returns the command
/// line that runs it.
pub fn write_bundle(cfg: &GvisorConfig, sandbox_dir: &Path, b: &Bundle<'_>) -> Result<Vec<String>> {
    let dir = bundle_dir(sandbox_dir);
    match fs::DirBuilder::new().mode(0o711).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(RuntimeError::io("mkdir", &dir, e)),
    }
    let agent = agent_in_bundle(&dir);
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o500)
        .open(&agent)
        .map_err(|e| RuntimeError::io("create", &agent, e))?;
    let config = dir.join("config.json");
    let text = serde_json::to_vec_pretty(&spec(b, &agent)).unwrap_or_default();
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&config)
        .and_then(|mut f| f.write_all(&text))
        .map_err(|e| RuntimeError::io("write", &config, e))?;
    Ok(argv(cfg, &dir, b.id))
}

/// Keeps `/tmp` on the sandbox's disk. gVisor mounts a tmpfs of its own on an empty `/tmp`
/// (in the sentry's memory, a filesystem of its own, so moving a file between `/home` and
/// `/tmp` fails with EXDEV); it leaves a `/tmp` with entries alone. An `.X11-unix` directory,
/// as most Linux systems have, is that entry: made in the sandbox's `rootfs` (mode 1777,
/// owned by root of the sandbox's id range `root_id`) before `runsc` starts.
pub fn keep_tmp_on_disk(rootfs: &Path, root_id: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = rootfs.join("tmp");
    if !tmp.is_dir() {
        return Ok(());
    }
    let x11 = tmp.join(".X11-unix");
    match fs::create_dir(&x11) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(RuntimeError::io("mkdir", &x11, e)),
    }
    std::os::unix::fs::lchown(&x11, Some(root_id), Some(root_id))
        .and_then(|()| fs::set_permissions(&x11, fs::Permissions::from_mode(0o1777)))
        .map_err(|e| RuntimeError::io("chown", &x11, e))
}

/// `runsc` with the global flags hutch needs, then `run` on the bundle in `dir`.
pub fn argv(cfg: &GvisorConfig, dir: &Path, id: &str) -> Vec<String> {
    let path = |p: PathBuf| p.to_string_lossy().into_owned();
    vec![
        path(cfg.runsc.clone()),
        format!("--root={}", path(dir.join("state"))),
        format!("--log={}", path(dir.join("runsc.log"))),
        format!("--platform={}", cfg.platform),
        "--network=host".into(),
        "--overlay2=none".into(),
        "--ignore-cgroups".into(),
        "run".into(),
        format!("--bundle={}", path(dir.to_path_buf())),
        id.to_string(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle<'a>(env: &'a [(String, String)]) -> Bundle<'a> {
        Bundle {
            id: "abc123",
            rootfs: Path::new("/var/lib/hutch/sandboxes/abc123/rootfs"),
            agent_inside: "/.hutch/hutch-agent",
            env,
            ids: (1_065_536, 65_536),
            no_new_privs: false,
        }
    }

    #[test]
    fn the_agent_runs_as_root_of_the_sandbox_range_with_a_native_sandbox_capabilities() {
        let env = [("HUTCH_X".to_string(), "1".to_string())];
        let s = spec(&bundle(&env), Path::new("/usr/lib/hutch/hutch-agent"));
        assert_eq!(s["process"]["args"], json!(["/.hutch/hutch-agent"]));
        assert_eq!(s["process"]["env"], json!(["HUTCH_X=1"]));
        assert_eq!(s["hostname"], "abc123");
        assert_eq!(
            s["linux"]["uidMappings"],
            json!([{ "containerID": 0, "hostID": 1_065_536, "size": 65_536 }])
        );
        assert_eq!(s["linux"]["gidMappings"], s["linux"]["uidMappings"]);
        let caps = s["process"]["capabilities"]["bounding"].as_array().unwrap();
        assert_eq!(caps.len(), crate::caps::KEPT.len());
        assert!(!caps
            .iter()
            .any(|c| c == "CAP_SYS_ADMIN" || c == "CAP_NET_RAW"));
        let agent = s["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/.hutch/hutch-agent")
            .unwrap();
        assert_eq!(agent["source"], "/usr/lib/hutch/hutch-agent");
        assert!(agent["options"].as_array().unwrap().contains(&json!("ro")));
    }

    #[test]
    fn runsc_keeps_its_state_in_the_bundle_and_writes_through_to_the_disk() {
        let cfg = GvisorConfig {
            runsc: PathBuf::from("/opt/runsc"),
            platform: "systrap".into(),
        };
        let a = argv(&cfg, Path::new("/d/gvisor"), "abc123");
        assert_eq!(a[0], "/opt/runsc");
        for flag in [
            "--root=/d/gvisor/state",
            "--network=host",
            "--overlay2=none",
            "--platform=systrap",
            "--bundle=/d/gvisor",
        ] {
            assert!(a.iter().any(|x| x == flag), "{flag} missing from {a:?}");
        }
        assert_eq!(a[a.len() - 2..], ["--bundle=/d/gvisor", "abc123"]);
    }

    #[test]
    fn every_kept_capability_has_a_name() {
        assert_eq!(capabilities().len(), crate::caps::KEPT.len());
    }
}
