//! Re-owning a tree for the sandbox user namespace.
//!
//! Sandboxes map inside ids `0..SANDBOX_ID_COUNT` to host ids
//! `SANDBOX_ID_BASE..`. Pre-shifting the read-only template once means the
//! overlay lower layer already shows correct owners inside every sandbox,
//! without idmapped mounts or a per-sandbox chown.
//!
//! POSIX ACL entries naming specific users are not rewritten; Debian base
//! images carry none.

use std::collections::HashSet;
use std::ffi::CStr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hutch_sys::Errno;

use crate::TemplateError;

/// Name of the xattr holding file capabilities; the kernel drops it on chown.
const CAP_XATTR: &CStr = c"security.capability";

/// Mode bits chown may clear (setuid, setgid) plus sticky, re-applied after
/// re-owning.
const SPECIAL_BITS: u32 = 0o7000;

/// Adds `base` to the owner uid and gid of every file, directory, symlink and
/// special file below (and including) `root`, without following symlinks or
/// crossing into other filesystems. Ids must be below `count`, or already
/// shifted (in `base..base + count`): those stay as they are, so a tree can be
/// shifted again after more files were added to it.
///
/// `progress(done, total)` is called every few hundred entries. Returns the
/// number of entries re-owned.
pub(crate) fn shift_tree(
    root: &Path,
    base: u32,
    count: u32,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<u64, TemplateError> {
    shift_ids(root, (0, base), count, true, progress)
}

/// Moves owners from the id range starting at `from` to the one starting at `to`
/// (`count` ids each, not overlapping) below (and including) `root`: a layer kept
/// in one sandbox id range given to a sandbox of another. Ids in neither range
/// (the overflow id a sandbox sees for files it does not map, such as the
/// whiteouts overlayfs makes) stay as they are, as ids already in `to`'s do.
pub fn shift_tree_from(root: &Path, from: u32, to: u32, count: u32) -> Result<u64, TemplateError> {
    shift_ids(root, (from, to), count, false, &mut |_, _| {})
}

/// [`shift_tree`] and [`shift_tree_from`]: `strict` refuses ids in neither range.
fn shift_ids(
    root: &Path,
    (from, to): (u32, u32),
    count: u32,
    strict: bool,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<u64, TemplateError> {
    let entries = collect(root)?;
    let total = entries.len() as u64;
    progress(0, total);

    // Hard links share one inode: shifting it a second time would push the
    // ids out of range, so remember inodes with more than one link.
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut done = 0u64;
    for path in &entries {
        let meta =
            std::fs::symlink_metadata(path).map_err(TemplateError::io("could not stat", path))?;
        done += 1;
        if !meta.is_dir() && meta.nlink() > 1 && !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        shift_one(path, &meta, (from, to), count, strict)?;
        if done.is_multiple_of(500) {
            progress(done, total);
        }
    }
    progress(total, total);
    Ok(total)
}

/// Lists `root` and everything below it on the same filesystem, parents
/// before children.
fn collect(root: &Path) -> Result<Vec<PathBuf>, TemplateError> {
    let root_meta =
        std::fs::symlink_metadata(root).map_err(TemplateError::io("could not stat", root))?;
    let dev = root_meta.dev();
    let mut out = vec![root.to_path_buf()];
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let rd = std::fs::read_dir(&dir).map_err(TemplateError::io("could not list", &dir))?;
        for entry in rd {
            let entry = entry.map_err(TemplateError::io("could not list", &dir))?;
            let path = entry.path();
            // DirEntry::file_type does not follow symlinks.
            let ft = entry
                .file_type()
                .map_err(TemplateError::io("could not stat", &path))?;
            if ft.is_dir() {
                let meta = std::fs::symlink_metadata(&path)
                    .map_err(TemplateError::io("could not stat", &path))?;
                if meta.dev() != dev {
                    // A mount point: its contents are not part of the image.
                    tracing::warn!(path = %path.display(), "not descending into another filesystem");
                    continue;
                }
                dirs.push(path.clone());
            }
            out.push(path);
        }
    }
    Ok(out)
}

fn shift_one(
    path: &Path,
    meta: &std::fs::Metadata,
    (from, base): (u32, u32),
    count: u32,
    strict: bool,
) -> Result<(), TemplateError> {
    let (uid, gid) = (meta.uid(), meta.gid());
    let shifted = |id: u32| {
        if (from..from + count).contains(&id) {
            Some(base + (id - from))
        } else if (base..base + count).contains(&id) || !strict {
            Some(id)
        } else {
            None
        }
    };
    let (Some(new_uid), Some(new_gid)) = (shifted(uid), shifted(gid)) else {
        return Err(TemplateError::IdOutOfRange {
            path: path.to_path_buf(),
            uid,
            gid,
        });
    };
    if (new_uid, new_gid) == (uid, gid) {
        return Ok(());
    }
    let is_symlink = meta.file_type().is_symlink();
    let caps = if meta.is_file() {
        get_caps(path).map_err(TemplateError::io(
            "could not read file capabilities of",
            path,
        ))?
    } else {
        None
    };

    std::os::unix::fs::lchown(path, Some(new_uid), Some(new_gid))
        .map_err(TemplateError::io("could not change owner of", path))?;

    // Symlink modes are meaningless and chmod would follow the link.
    if !is_symlink && meta.mode() & SPECIAL_BITS != 0 {
        let perms = std::fs::Permissions::from_mode(meta.mode() & 0o7777);
        std::fs::set_permissions(path, perms)
            .map_err(TemplateError::io("could not restore mode of", path))?;
    }
    if let Some(caps) = caps {
        set_caps(path, &caps).map_err(TemplateError::io(
            "could not restore file capabilities of",
            path,
        ))?;
    }
    Ok(())
}

/// Reads `security.capability` of `path` (not following symlinks); `None` if
/// the file has none or the filesystem has no xattrs.
pub(crate) fn get_caps(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    match hutch_sys::xattr::lget(path, CAP_XATTR) {
        Ok(value) => Ok(Some(value)),
        Err(e) if e == Errno::NODATA || e == Errno::NOTSUP => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Writes `security.capability` of `path` (not following symlinks).
pub(crate) fn set_caps(path: &Path, value: &[u8]) -> std::io::Result<()> {
    Ok(hutch_sys::xattr::lset(path, CAP_XATTR, value)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{is_root, TempDir};
    use std::os::unix::fs::{symlink, PermissionsExt};

    /// A v2 capability blob granting cap_net_raw (bit 13) permitted+effective.
    fn net_raw_caps() -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&0x0200_0001u32.to_le_bytes()); // VFS_CAP_REVISION_2 | EFFECTIVE
        v.extend_from_slice(&(1u32 << 13).to_le_bytes()); // permitted lo
        v.extend_from_slice(&0u32.to_le_bytes()); // inheritable lo
        v.extend_from_slice(&0u32.to_le_bytes()); // permitted hi
        v.extend_from_slice(&0u32.to_le_bytes()); // inheritable hi
        v
    }

    #[test]
    fn shifts_owners_keeps_setuid_caps_and_symlinks() {
        if !is_root() {
            eprintln!("skipping: chown needs root");
            return;
        }
        let tmp = TempDir::new("shift");
        let root = tmp.path().join("rootfs");
        std::fs::create_dir_all(root.join("usr/bin")).expect("mkdir");
        std::fs::create_dir_all(root.join("home/user")).expect("mkdir");
        let sudo = root.join("usr/bin/sudo");
        std::fs::write(&sudo, b"#!/bin/true\n").expect("write");
        std::fs::set_permissions(&sudo, std::fs::Permissions::from_mode(0o4755)).expect("chmod");
        let ping = root.join("usr/bin/ping");
        std::fs::write(&ping, b"x").expect("write");
        let caps_supported = set_caps(&ping, &net_raw_caps()).is_ok();
        std::os::unix::fs::lchown(root.join("home/user"), Some(1000), Some(1000)).expect("chown");
        // Hard link: must be shifted once only.
        std::fs::hard_link(&sudo, root.join("usr/bin/sudoedit")).expect("link");
        // Dangling symlink owned by 1000: must be re-owned itself, never
        // followed (following would fail or touch the host).
        let link = root.join("home/user/link");
        symlink("/etc/shadow-does-not-matter", &link).expect("symlink");
        std::os::unix::fs::lchown(&link, Some(1000), Some(1000)).expect("lchown");

        let mut calls = Vec::new();
        let n = shift_tree(&root, 1_000_000, 65_536, &mut |d, t| calls.push((d, t)))
            .expect("shift works");
        assert_eq!(n, 9);
        assert_eq!(calls.last(), Some(&(9, 9)));

        let m = |p: &Path| std::fs::symlink_metadata(p).expect("stat");
        assert_eq!((m(&root).uid(), m(&root).gid()), (1_000_000, 1_000_000));
        let s = m(&sudo);
        assert_eq!((s.uid(), s.gid()), (1_000_000, 1_000_000));
        assert_eq!(s.mode() & 0o7777, 0o4755, "setuid bit must survive chown");
        let h = m(&root.join("home/user"));
        assert_eq!((h.uid(), h.gid()), (1_001_000, 1_001_000));
        let l = m(&link);
        assert!(l.file_type().is_symlink());
        assert_eq!((l.uid(), l.gid()), (1_001_000, 1_001_000));
        if caps_supported {
            assert_eq!(get_caps(&ping).expect("getxattr"), Some(net_raw_caps()));
        }
        assert_eq!(get_caps(&sudo).expect("getxattr"), None);

        // A second pass shifts only what is new (owned by host root here).
        let fresh = root.join("home/user/fresh");
        std::fs::write(&fresh, b"").expect("write");
        shift_tree(&root, 1_000_000, 65_536, &mut |_, _| {}).expect("shift again");
        assert_eq!((m(&fresh).uid(), m(&fresh).gid()), (1_000_000, 1_000_000));
        assert_eq!(
            (m(&sudo).uid(), m(&sudo).mode() & 0o7777),
            (1_000_000, 0o4755)
        );
        assert_eq!(m(&root.join("home/user")).uid(), 1_001_000);
    }

    #[test]
    fn rejects_ids_outside_the_range() {
        if !is_root() {
            eprintln!("skipping: chown needs root");
            return;
        }
        let tmp = TempDir::new("shift-range");
        let root = tmp.path().join("rootfs");
        std::fs::create_dir_all(&root).expect("mkdir");
        let f = root.join("big");
        std::fs::write(&f, b"").expect("write");
        std::os::unix::fs::lchown(&f, Some(70_000), Some(0)).expect("chown");
        let err = shift_tree(&root, 1_000_000, 65_536, &mut |_, _| {}).expect_err("must fail");
        assert!(
            matches!(err, TemplateError::IdOutOfRange { uid: 70_000, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("big"), "{err}");
    }

    #[test]
    fn a_tree_moves_from_one_range_to_another_leaving_unmapped_ids() {
        if !is_root() {
            eprintln!("skipping: chown needs root");
            return;
        }
        let tmp = TempDir::new("shift-from");
        let root = tmp.path().join("upper");
        std::fs::create_dir_all(root.join("home/user")).expect("mkdir");
        let tool = root.join("home/user/tool");
        std::fs::write(&tool, b"x").expect("write");
        for (p, id) in [
            (&root, 1_000_000),
            (&root.join("home/user"), 1_001_000),
            (&tool, 1_001_000),
        ] {
            std::os::unix::fs::lchown(p, Some(id), Some(id)).expect("chown");
        }
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o2755)).expect("chmod");
        // What a sandbox saw as the overflow id (a whiteout overlayfs made) stays.
        let odd = root.join("odd");
        std::fs::write(&odd, b"").expect("write");
        std::os::unix::fs::lchown(&odd, Some(65_534), Some(65_534)).expect("chown");

        shift_tree_from(&root, 1_000_000, 1_131_072, 65_536).expect("shift works");
        let m = |p: &Path| std::fs::symlink_metadata(p).expect("stat");
        assert_eq!(m(&root).uid(), 1_131_072);
        assert_eq!((m(&tool).uid(), m(&tool).gid()), (1_132_072, 1_132_072));
        assert_eq!(
            m(&tool).mode() & 0o7777,
            0o2755,
            "setgid bit must survive chown"
        );
        assert_eq!((m(&odd).uid(), m(&odd).gid()), (65_534, 65_534));
        // Shifting again changes nothing.
        shift_tree_from(&root, 1_000_000, 1_131_072, 65_536).expect("shift again");
        assert_eq!(m(&tool).uid(), 1_132_072);
    }
}
