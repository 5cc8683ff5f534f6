//! User and group identity: reading the caller's, and the one credential switch every
//! spawned process goes through.

use rustix::io::Result;
use rustix::process::{Gid, Uid};
use rustix::thread::{set_thread_groups, set_thread_res_gid, set_thread_res_uid};

/// The effective user id of the caller.
pub fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// The effective group id of the caller.
fn effective_gid() -> u32 {
    rustix::process::getegid().as_raw()
}

/// Whether the caller runs as (effective) root.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A complete identity to switch to: real, effective and saved ids plus supplementary groups.
///
/// Built (and its group list allocated) before a fork, so that [`Credentials::apply`] in the
/// child allocates nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    uid: Uid,
    gid: Gid,
    groups: Vec<Gid>,
}

impl Credentials {
    /// The identity `uid`:`gid` with supplementary `groups` (which replace the caller's).
    pub fn new(uid: u32, gid: u32, groups: &[u32]) -> Self {
        Credentials {
            uid: Uid::from_raw(uid),
            gid: Gid::from_raw(gid),
            groups: groups.iter().map(|&g| Gid::from_raw(g)).collect(),
        }
    }

    /// uid 0, gid 0 and no supplementary groups (root of the current user namespace).
    pub fn root() -> Self {
        Credentials::new(0, 0, &[])
    }

    /// The user id.
    fn uid(&self) -> u32 {
        self.uid.as_raw()
    }

    /// The group id.
    fn gid(&self) -> u32 {
        self.gid.as_raw()
    }

    /// The supplementary groups.
    #[cfg(test)]
    fn groups(&self) -> Vec<u32> {
        self.groups.iter().map(|g| g.as_raw()).collect()
    }

    /// Whether switching from the caller's identity needs privileges: as root it always
    /// applies (root's own supplementary groups must go); unprivileged, only a no-op switch
    /// can succeed.
    pub fn needs_switch(&self) -> bool {
        is_root() || effective_uid() != self.uid() || effective_gid() != self.gid()
    }

    /// Switches the calling thread to this identity: supplementary groups first, then the
    /// group ids, then the user ids (after which the first two are no longer permitted).
    /// Every step is checked.
    ///
    /// Async-signal-safe. The syscalls act on the calling thread only, which is what a forked
    /// child (one thread) or a single-threaded process wants: libc's wrappers would try to
    /// synchronise the change across threads that do not exist in the child.
    pub fn apply(&self) -> Result<()> {
        set_thread_groups(&self.groups)?;
        set_thread_res_gid(self.gid, self.gid, self.gid)?;
        set_thread_res_uid(self.uid, self.uid, self.uid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_keep_uid_gid_and_groups() {
        let c = Credentials::new(1000, 1001, &[4, 27, 1001]);
        assert_eq!(c.uid(), 1000);
        assert_eq!(c.gid(), 1001);
        assert_eq!(c.groups(), vec![4, 27, 1001]);
    }

    #[test]
    fn root_credentials_have_no_supplementary_groups() {
        let c = Credentials::root();
        assert_eq!((c.uid(), c.gid()), (0, 0));
        assert!(c.groups().is_empty());
    }

    #[test]
    fn switching_to_the_current_identity_needs_no_switch_unless_root() {
        let me = Credentials::new(effective_uid(), effective_gid(), &[]);
        assert_eq!(me.needs_switch(), is_root());
    }
}
