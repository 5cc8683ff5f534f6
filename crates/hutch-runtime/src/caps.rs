//! Capability reduction for the sandbox's PID 1 (and so for everything it starts).
//!
//! Root inside a sandbox holds capabilities only over the sandbox's own user namespace;
//! the bounding set shrinks that further to what ordinary programs need (Docker's default
//! set): no mounting, no raw I/O, no module or clock changes, no ptrace of other
//! namespaces, no network administration.

use crate::error::{Result, RuntimeError};

/// Capabilities kept in the bounding set.
pub const KEPT: &[u32] = &[
    0,  // CAP_CHOWN
    1,  // CAP_DAC_OVERRIDE
    3,  // CAP_FOWNER
    4,  // CAP_FSETID
    5,  // CAP_KILL
    6,  // CAP_SETGID
    7,  // CAP_SETUID
    8,  // CAP_SETPCAP
    10, // CAP_NET_BIND_SERVICE
    13, // CAP_NET_RAW
    18, // CAP_SYS_CHROOT
    27, // CAP_MKNOD
    29, // CAP_AUDIT_WRITE
    31, // CAP_SETFCAP
];

fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Drops every capability not in [`KEPT`] from the bounding set and the ambient set.
/// After the next `execve` as root, the permitted set is the bounding set.
pub fn drop_bounding_set() -> Result<()> {
    for cap in 0..=last_cap() {
        if KEPT.contains(&cap) {
            continue;
        }
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } < 0 {
            return Err(RuntimeError::last_os(format!("PR_CAPBSET_DROP {cap}")));
        }
    }
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    Ok(())
}

/// Sets `no_new_privs`: no later `execve` can gain privileges (setuid bits and file
/// capabilities are ignored).
pub fn set_no_new_privs() -> Result<()> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0 {
        return Err(RuntimeError::last_os("PR_SET_NO_NEW_PRIVS"));
    }
    Ok(())
}
