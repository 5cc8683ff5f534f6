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

/// The highest capability number assumed when the kernel does not say (Linux 5.9+).
const FALLBACK_LAST_CAP: u32 = 40;

fn last_cap() -> u32 {
    parse_last_cap(&std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").unwrap_or_default())
}

/// The kernel's highest capability number from the text of `cap_last_cap`.
fn parse_last_cap(text: &str) -> u32 {
    text.trim().parse().unwrap_or(FALLBACK_LAST_CAP)
}

/// The capabilities up to `last_cap` that leave the bounding set.
fn to_drop(last_cap: u32) -> impl Iterator<Item = u32> {
    (0..=last_cap).filter(|cap| !KEPT.contains(cap))
}

/// Drops every capability not in [`KEPT`] from the bounding set and the ambient set.
/// After the next `execve` as root, the permitted set is the bounding set.
pub fn drop_bounding_set() -> Result<()> {
    for cap in to_drop(last_cap()) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_cap_is_read_from_the_kernel_text_or_falls_back() {
        assert_eq!(parse_last_cap("41\n"), 41);
        assert_eq!(parse_last_cap(""), FALLBACK_LAST_CAP);
        assert_eq!(parse_last_cap("x"), FALLBACK_LAST_CAP);
    }

    #[test]
    fn dangerous_capabilities_are_dropped_and_kept_ones_are_not() {
        let dropped: Vec<u32> = to_drop(40).collect();
        for cap in [
            2,  // CAP_DAC_READ_SEARCH (open_by_handle_at escapes)
            12, // CAP_NET_ADMIN
            16, // CAP_SYS_MODULE
            17, // CAP_SYS_RAWIO
            19, // CAP_SYS_PTRACE
            21, // CAP_SYS_ADMIN
            22, // CAP_SYS_BOOT
            25, // CAP_SYS_TIME
            38, // CAP_PERFMON
            39, // CAP_BPF
        ] {
            assert!(dropped.contains(&cap), "{cap} kept");
        }
        assert!(KEPT.iter().all(|k| !dropped.contains(k)));
        assert_eq!(dropped.len() + KEPT.len(), 41);
    }
}
