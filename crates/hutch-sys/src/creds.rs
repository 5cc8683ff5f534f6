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

/// The calling thread acting on the filesystem as another user until the guard drops: its
/// filesystem user and group ids (`setfsuid`, `setfsgid`) and supplementary groups switch,
/// so path lookups, permission checks and the owner of new files are that user's, while the
/// process keeps its real and effective ids. Leaving uid 0 drops the thread's filesystem
/// capabilities (DAC override, chown, fowner...) until the guard gives uid 0 back.
///
/// Per thread: the other threads of the process are untouched. Without privileges (an
/// unprivileged agent in development) nothing switches.
///
/// Where `setfsuid` changes nothing (gVisor's kernel), the thread's effective ids switch
/// instead, its real and saved ids staying 0 so that it may switch back: path lookups,
/// permission checks and new files' owners are the same.
pub struct FsIdentity {
    saved: Option<Saved>,
}

/// What [`FsIdentity`] gives back when it drops.
struct Saved {
    /// The effective ids were switched rather than the filesystem ids.
    effective: bool,
    uid: u32,
    gid: u32,
    groups: Vec<Gid>,
}

/// `setfsuid`/`setfsgid` return the previous id and report no error; an id of -1 changes
/// nothing, which reads the current one.
fn set_fs_id(call: libc::c_long, id: u32) -> u32 {
    // SAFETY: the call takes one integer and touches no memory.
    let prev = unsafe { libc::syscall(call, id) };
    prev as u32
}

fn fs_id(call: libc::c_long) -> u32 {
    set_fs_id(call, u32::MAX)
}

impl FsIdentity {
    /// Switches the calling thread's filesystem identity to `uid`:`gid` with `groups`.
    pub fn assume(uid: u32, gid: u32, groups: &[u32]) -> Result<Self> {
        if !is_root() {
            return Ok(FsIdentity { saved: None });
        }
        let saved_groups = rustix::process::getgroups()?;
        let groups: Vec<Gid> = groups.iter().map(|&g| Gid::from_raw(g)).collect();
        set_thread_groups(&groups)?;
        let saved_gid = set_fs_id(libc::SYS_setfsgid, gid);
        let saved_uid = set_fs_id(libc::SYS_setfsuid, uid);
        if fs_id(libc::SYS_setfsuid) == uid && fs_id(libc::SYS_setfsgid) == gid {
            return Ok(FsIdentity {
                saved: Some(Saved {
                    effective: false,
                    uid: saved_uid,
                    gid: saved_gid,
                    groups: saved_groups,
                }),
            });
        }
        set_fs_id(libc::SYS_setfsuid, saved_uid);
        set_fs_id(libc::SYS_setfsgid, saved_gid);
        Self::effective(uid, gid, saved_groups)
    }

    /// The switch of the effective ids, as root whose supplementary groups are already
    /// the new ones (`saved_groups`: the ones to give back).
    fn effective(uid: u32, gid: u32, saved_groups: Vec<Gid>) -> Result<Self> {
        // The guard gives root back whatever part of the switch happened.
        let guard = FsIdentity {
            saved: Some(Saved {
                effective: true,
                uid: 0,
                gid: 0,
                groups: saved_groups,
            }),
        };
        set_thread_res_gid(Gid::ROOT, Gid::from_raw(gid), Gid::ROOT)?;
        set_thread_res_uid(Uid::ROOT, Uid::from_raw(uid), Uid::ROOT)?;
        Ok(guard)
    }
}

impl Drop for FsIdentity {
    fn drop(&mut self) {
        if let Some(s) = self.saved.take() {
            if s.effective {
                // Root again first: the group ids and groups need it.
                let _ = set_thread_res_uid(Uid::ROOT, Uid::ROOT, Uid::ROOT);
                let _ = set_thread_res_gid(Gid::ROOT, Gid::ROOT, Gid::ROOT);
            } else {
                set_fs_id(libc::SYS_setfsuid, s.uid);
                set_fs_id(libc::SYS_setfsgid, s.gid);
            }
            let _ = set_thread_groups(&s.groups);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory (root's, 0755) holding `secret`: "x", readable by root alone.
    fn dir_with_a_secret(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("hutch-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("secret");
        std::fs::write(&secret, "x").unwrap();
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        dir
    }

    #[test]
    fn a_thread_acts_on_files_as_the_user_and_gets_its_identity_back() {
        if !is_root() {
            return;
        }
        let dir = dir_with_a_secret("fsid");
        let secret = dir.join("secret");
        std::thread::spawn({
            let dir = dir.clone();
            move || {
                let guard = FsIdentity::assume(65534, 65534, &[65534]).unwrap();
                // Root's file is closed to the user; what the user creates is the user's.
                assert!(std::fs::read(dir.join("secret")).is_err());
                assert!(
                    std::fs::write(dir.join("mine"), "y").is_err(),
                    "the dir is root's 0755"
                );
                drop(guard);
                assert_eq!(std::fs::read(dir.join("secret")).unwrap(), b"x");
            }
        })
        .join()
        .unwrap();
        // Other threads never changed.
        assert_eq!(std::fs::read(&secret).unwrap(), b"x");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn where_fs_ids_do_not_switch_the_effective_ids_do_and_come_back() {
        if !is_root() {
            return;
        }
        let dir = dir_with_a_secret("euid");
        std::thread::spawn({
            let dir = dir.clone();
            move || {
                let saved = rustix::process::getgroups().unwrap();
                set_thread_groups(&[Gid::from_raw(65534)]).unwrap();
                let guard = FsIdentity::effective(65534, 65534, saved.clone()).unwrap();
                assert_eq!(effective_uid(), 65534);
                assert!(std::fs::read(dir.join("secret")).is_err());
                drop(guard);
                assert!(is_root());
                assert_eq!(rustix::process::getgroups().unwrap(), saved);
                assert_eq!(std::fs::read(dir.join("secret")).unwrap(), b"x");
            }
        })
        .join()
        .unwrap();
        assert!(is_root());
        std::fs::remove_dir_all(&dir).unwrap();
    }

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
