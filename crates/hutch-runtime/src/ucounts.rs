//! The kernel's per-user limits that user namespaces share ("ucounts": inotify instances and
//! watches among them), sized so that no sandbox can take the others' share.
//!
//! The kernel charges such a limit at every level of the chain of user namespaces, up to
//! the initial one, to each namespace's owner. A new namespace's own maxima are unlimited;
//! the host's (the initial namespace's `fs.inotify.*`) bind. Every sandbox's user namespace
//! (and every template zygote's, which code-interpreter sandboxes nest in) is owned by the
//! uid root inside maps to, so at the top all sandboxes share one count. Left at the
//! host's defaults (128 inotify instances), one sandbox could take all 128 and leave every
//! other sandbox unable to watch a directory. So every sandbox's own namespace gets the
//! maxima of [`PER_SANDBOX`] ([`limit_own_namespace`], run inside it before its capabilities
//! go; root inside cannot raise them again without CAP_SYS_RESOURCE), and the host's are
//! raised, once at start and only ever upwards, to what [`SANDBOX_SHARE`] sandboxes at those
//! maxima need ([`raise_host_limits`]).

use crate::error::{Result, RuntimeError};

/// Each limit: its sysctl in a user namespace (under `/proc/sys/user`), the host's file of
/// the same limit, and each sandbox's maximum.
pub const PER_SANDBOX: &[(&str, &str, u64)] = &[
    (
        "max_inotify_instances",
        "/proc/sys/fs/inotify/max_user_instances",
        128,
    ),
    (
        "max_inotify_watches",
        "/proc/sys/fs/inotify/max_user_watches",
        65_536,
    ),
];

/// How many sandboxes at their own maxima the host's limits make room for.
pub const SANDBOX_SHARE: u64 = 1024;

/// Raises the host's maxima to [`SANDBOX_SHARE`] times each sandbox's, leaving higher ones
/// as they are. Returns what it changed, `(path, from, to)`.
pub fn raise_host_limits() -> Result<Vec<(&'static str, u64, u64)>> {
    let mut changed = Vec::new();
    for &(_, path, per) in PER_SANDBOX {
        let want = per.saturating_mul(SANDBOX_SHARE);
        let now: u64 = std::fs::read_to_string(path)
            .map_err(|e| RuntimeError::io("read", path, e))?
            .trim()
            .parse()
            .unwrap_or(0);
        if now < want {
            std::fs::write(path, want.to_string())
                .map_err(|e| RuntimeError::io("write", path, e))?;
            changed.push((path, now, want));
        }
    }
    Ok(changed)
}

/// Sets the calling process's own user namespace's maxima to [`PER_SANDBOX`] (through the
/// `/proc` it sees, whose `sys/user` files are those of the caller's user namespace). For a
/// freshly cloned sandbox init, which holds every capability in its namespace.
pub fn limit_own_namespace() -> std::result::Result<(), String> {
    for (name, _, value) in PER_SANDBOX {
        let path = format!("/proc/sys/user/{name}");
        match std::fs::write(&path, value.to_string()) {
            Ok(()) => {}
            // A kernel without this limit (before 4.9) has nothing to cap.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("write {path}: {e}")),
        }
    }
    Ok(())
}
