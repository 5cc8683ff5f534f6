//! Capability reduction for the sandbox's PID 1 (and so for everything it starts).
//!
//! Root inside a sandbox holds capabilities only over the sandbox's own user namespace;
//! the bounding set shrinks that further to what ordinary programs need (Docker's default
//! set): no mounting, no raw I/O, no module or clock changes, no ptrace of other
//! namespaces, no network administration, no raw sockets (`ping` uses ICMP datagram
//! sockets, which `net.ipv4.ping_group_range` opens to every group of the sandbox).

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
    18, // CAP_SYS_CHROOT
    27, // CAP_MKNOD
    29, // CAP_AUDIT_WRITE
    31, // CAP_SETFCAP
];

/// Drops every capability not in [`KEPT`] from the bounding set and the ambient set.
/// After the next `execve` as root, the permitted set is the bounding set.
pub fn drop_bounding_set() -> Result<()> {
    hutch_sys::caps::restrict_bounding_set(KEPT)
        .map_err(|e| RuntimeError::sys("drop capabilities from the bounding set", e))
}

/// Sets `no_new_privs`: no later `execve` can gain privileges (setuid bits and file
/// capabilities are ignored).
pub fn set_no_new_privs() -> Result<()> {
    hutch_sys::caps::set_no_new_privs().map_err(|e| RuntimeError::sys("PR_SET_NO_NEW_PRIVS", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dangerous_capabilities_are_not_kept() {
        for cap in [
            2,  // CAP_DAC_READ_SEARCH (open_by_handle_at escapes)
            12, // CAP_NET_ADMIN
            13, // CAP_NET_RAW (AF_PACKET, raw IP: spoofing and sniffing)
            16, // CAP_SYS_MODULE
            17, // CAP_SYS_RAWIO
            19, // CAP_SYS_PTRACE
            21, // CAP_SYS_ADMIN
            22, // CAP_SYS_BOOT
            25, // CAP_SYS_TIME
            38, // CAP_PERFMON
            39, // CAP_BPF
        ] {
            assert!(!KEPT.contains(&cap), "{cap} kept");
        }
    }
}
