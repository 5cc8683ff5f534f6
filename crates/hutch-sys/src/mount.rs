//! Mounting and unmounting.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::io::Result;
use rustix::mount::{MountFlags, UnmountFlags};

/// The `MS_*` flags [`mount`] takes, for callers that do not link libc.
pub mod flags {
    use rustix::mount::MountFlags as F;

    /// `MS_BIND`: bind mount.
    pub const BIND: u64 = F::BIND.bits() as u64;
    /// `MS_RDONLY`: read-only.
    pub const RDONLY: u64 = F::RDONLY.bits() as u64;
    /// `MS_REMOUNT`: change the flags of an existing mount.
    pub const REMOUNT: u64 = libc::MS_REMOUNT;
    /// `MS_NOSUID`: ignore setuid/setgid bits.
    pub const NOSUID: u64 = F::NOSUID.bits() as u64;
    /// `MS_NODEV`: no device files.
    pub const NODEV: u64 = F::NODEV.bits() as u64;
    /// `MS_NOEXEC`: no program execution.
    pub const NOEXEC: u64 = F::NOEXEC.bits() as u64;
    /// `MS_NOATIME`: no access-time updates.
    pub const NOATIME: u64 = F::NOATIME.bits() as u64;
    /// `MS_REC`: apply to the whole subtree.
    pub const REC: u64 = F::REC.bits() as u64;
    /// `MS_PRIVATE`: no mount propagation to or from peers.
    pub const PRIVATE: u64 = rustix::mount::MountPropagationFlags::PRIVATE.bits() as u64;
}

/// `mount(2)` with raw `MS_*` flags.
///
/// A missing `source` or `fstype` is passed as an empty string: every kind of mount that
/// has none (remount, bind, propagation change) ignores the argument.
pub fn mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: u64,
    data: Option<&str>,
) -> Result<()> {
    let data = match data {
        Some(d) => Some(std::ffi::CString::new(d).map_err(|_| rustix::io::Errno::INVAL)?),
        None => None,
    };
    rustix::mount::mount(
        source.unwrap_or(Path::new("")),
        target,
        fstype.unwrap_or(""),
        MountFlags::from_bits_retain(u32::try_from(flags).map_err(|_| rustix::io::Errno::INVAL)?),
        data.as_deref(),
    )
}

/// `umount2(2)` with raw `MNT_*` flags.
pub fn unmount(target: &Path, flags: u32) -> Result<()> {
    rustix::mount::unmount(target, UnmountFlags::from_bits_retain(flags))
}

/// Lazily detaches the mount on `target` (`MNT_DETACH`): it disappears from the tree now and
/// is cleaned up once nothing uses it.
pub fn detach(target: &Path) -> Result<()> {
    rustix::mount::unmount(target, UnmountFlags::DETACH)
}

/// A detached copy of the mount at `src` (only `src`'s subtree, not what is mounted below
/// it) whose files show their owners through the id maps of user namespace `userns`: a
/// file owned by id `k` on disk appears owned by the host id that `k`, read as an id inside
/// `userns`, maps to (ids `userns` does not map appear as the overflow id and cannot be
/// written). Attach it with [`attach`]; dropping the descriptor of an unattached copy
/// releases it.
pub fn clone_idmapped(src: &Path, userns: BorrowedFd<'_>) -> Result<OwnedFd> {
    let tree = clone_tree(src)?;
    // `struct mount_attr` of mount_setattr(2) (rustix has no wrapper).
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: the path is a NUL-terminated empty string, `attr` lives across the call and
    // its size is passed; the kernel only reads it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        return Err(crate::errno::last());
    }
    Ok(tree)
}

/// A detached copy of the mount at `src` (only `src`'s subtree), as [`clone_idmapped`]
/// without an id map. Attach it with [`attach`].
pub fn clone_tree(src: &Path) -> Result<OwnedFd> {
    use rustix::mount::{open_tree, OpenTreeFlags};
    open_tree(
        rustix::fs::CWD,
        src,
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )
}

/// Attaches a detached mount (from [`clone_idmapped`]) on `target`.
pub fn attach(tree: BorrowedFd<'_>, target: &Path) -> Result<()> {
    use rustix::mount::{move_mount, MoveMountFlags};
    move_mount(
        tree,
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
}

/// Attaches a detached mount on the directory open as `target` (an `O_PATH` descriptor
/// is enough): the mount lands exactly where the descriptor points, with no path lookup.
pub fn attach_at(tree: BorrowedFd<'_>, target: BorrowedFd<'_>) -> Result<()> {
    use rustix::mount::{move_mount, MoveMountFlags};
    move_mount(
        tree,
        "",
        target,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
}

/// A new, detached, read-only sysfs mount (`nosuid`, `nodev`, `noexec`) showing the
/// caller's network namespace (sysfs takes it at mount). Attach it with [`attach`]: a
/// process in a user namespace that does not own that network namespace may not mount
/// sysfs itself, but may attach this one.
pub fn new_sysfs() -> Result<OwnedFd> {
    use rustix::mount::{
        fsconfig_create, fsmount, fsopen, FsMountFlags, FsOpenFlags, MountAttrFlags,
    };
    let fs = fsopen("sysfs", FsOpenFlags::FSOPEN_CLOEXEC)?;
    fsconfig_create(&fs)?;
    fsmount(
        &fs,
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_RDONLY
            | MountAttrFlags::MOUNT_ATTR_NOSUID
            | MountAttrFlags::MOUNT_ATTR_NODEV
            | MountAttrFlags::MOUNT_ATTR_NOEXEC,
    )
}

/// The `ST_*` flags (`statvfs(2)`'s `f_flag`) of the filesystem `path` is on: what a
/// read-only remount inside a user namespace must repeat, since they are locked there.
pub fn mount_flags(path: &Path) -> Result<u64> {
    Ok(rustix::fs::statvfs(path)?.f_flag.bits())
}

/// Used and total bytes of the filesystem `path` is on.
pub fn usage(path: &Path) -> Result<(u64, u64)> {
    let st = rustix::fs::statvfs(path)?;
    let total = st.f_blocks * st.f_frsize;
    let free = st.f_bfree * st.f_frsize;
    Ok((total.saturating_sub(free), total))
}

/// Inodes in use on the filesystem `path` is on (files, directories and the filesystem's
/// own reserved ones).
pub fn inodes_used(path: &Path) -> Result<u64> {
    let st = rustix::fs::statvfs(path)?;
    Ok(st.f_files.saturating_sub(st.f_ffree))
}

/// Bytes an unprivileged writer may still use on the filesystem `path` is on.
pub fn available(path: &Path) -> Result<u64> {
    let st = rustix::fs::statvfs(path)?;
    Ok(st.f_bavail * st.f_frsize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmounting_something_that_is_not_a_mount_point_fails_with_einval() {
        let dir = std::env::temp_dir();
        let err = unmount(&dir.join("hutch-sys-not-a-mount-point-xyz"), 0).unwrap_err();
        assert!(
            err == rustix::io::Errno::NOENT || err == rustix::io::Errno::INVAL,
            "{err:?}"
        );
    }

    #[test]
    fn flags_match_the_c_library() {
        assert_eq!(flags::BIND, libc::MS_BIND);
        assert_eq!(flags::RDONLY, libc::MS_RDONLY);
        assert_eq!(flags::NOSUID, libc::MS_NOSUID);
        assert_eq!(flags::NODEV, libc::MS_NODEV);
        assert_eq!(flags::NOEXEC, libc::MS_NOEXEC);
        assert_eq!(flags::NOATIME, libc::MS_NOATIME);
        assert_eq!(flags::REC, libc::MS_REC);
        assert_eq!(flags::PRIVATE, libc::MS_PRIVATE);
    }

    #[test]
    fn the_root_filesystem_reports_a_size() {
        let (used, total) = usage(Path::new("/")).unwrap();
        assert!(total > 0);
        assert!(used <= total);
    }

    #[test]
    fn a_read_only_filesystem_reports_the_read_only_flag() {
        // /proc/sys is mounted read-only in containers, read-write on hosts: compare with
        // what /proc/self/mountinfo says about the mount it is on.
        let flags = mount_flags(Path::new("/proc/sys")).unwrap();
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mount = info
            .lines()
            .filter(|l| {
                let point = l.split(' ').nth(4).unwrap_or("");
                Path::new("/proc/sys").starts_with(point)
            })
            .max_by_key(|l| l.split(' ').nth(4).unwrap_or("").len())
            .unwrap();
        let ro = mount
            .split(' ')
            .nth(5)
            .unwrap()
            .split(',')
            .any(|o| o == "ro");
        assert_eq!(
            flags & rustix::fs::StatVfsMountFlags::RDONLY.bits() != 0,
            ro
        );
    }
}
