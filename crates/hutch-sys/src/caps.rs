//! Capabilities and privilege limits of the calling thread.

use rustix::thread::CapabilitySet;

use crate::error::{SysError, SysResult};

/// The highest capability number the running kernel knows.
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Drops every capability not in `kept` (capability numbers) from the bounding set, then
/// clears the ambient set. After the next `execve` as root, the permitted set is what is left
/// in the bounding set.
pub fn restrict_bounding_set(kept: &[u32]) -> SysResult<()> {
    for cap in 0..=last_cap().min(63) {
        if kept.contains(&cap) {
            continue;
        }
        rustix::thread::remove_capability_from_bounding_set(CapabilitySet::from_bits_retain(
            1 << cap,
        ))
        .map_err(|e| SysError::call("prctl PR_CAPBSET_DROP", cap, e))?;
    }
    // Kernels before 4.3 have no ambient set (EINVAL); there is then nothing to clear.
    let _ = rustix::thread::clear_ambient_capability_set();
    Ok(())
}

/// Sets `no_new_privs`: no later `execve` can gain privileges (setuid bits and file
/// capabilities are ignored).
pub fn set_no_new_privs() -> rustix::io::Result<()> {
    rustix::thread::set_no_new_privs(true)
}

/// Makes the calling process not dumpable (`PR_SET_DUMPABLE` 0): no core files, its
/// `/proc` entries belong to root, and attaching to it (`ptrace`, `pidfd_getfd`,
/// `/proc/<pid>/mem`) needs `CAP_SYS_PTRACE`, which root inside a sandbox lacks. The next
/// `execve` of an ordinary program makes its image dumpable again.
pub fn set_not_dumpable() -> rustix::io::Result<()> {
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_knows_at_least_the_classic_capabilities() {
        // CAP_AUDIT_READ (37) exists since Linux 3.16.
        assert!(last_cap() >= 37);
    }
}
