//! Finding and removing mounts below a directory, and deleting directories
//! only once nothing is mounted below them.
//!
//! debootstrap mounts /proc and /sys (and, in some containers, binds the
//! host's /dev) into its target, and our build steps mount a
//! small /dev. A crash can leave these behind; deleting a tree with the host's
//! /dev bound inside would delete host device nodes, so every recursive delete
//! here first unmounts and then re-checks.

use std::path::{Path, PathBuf};

use crate::TemplateError;

/// Mount points at or below `dir`, as listed in /proc/self/mountinfo, deepest
/// first (so unmounting in this order never hits a busy parent).
pub(crate) fn mounts_under(dir: &Path) -> Result<Vec<PathBuf>, TemplateError> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").map_err(TemplateError::io(
        "could not read the mount table",
        Path::new("/proc/self/mountinfo"),
    ))?;
    Ok(mounts_under_in(&info, dir))
}

/// [`mounts_under`] over a given mountinfo text (testable without mounts).
fn mounts_under_in(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = mountinfo
        .lines()
        // Field 5 (index 4) is the mount point, relative to our root.
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    // Stable sort: stacked mounts on one point stay listed once per layer.
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found
}

/// Undoes the kernel's octal escaping of space, tab, newline and backslash
/// in mountinfo paths (`\040` and friends).
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = oct
                    .iter()
                    .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Lazily unmounts everything at or below `dir`, deepest first, and checks
/// that nothing is left. Lazy (`MNT_DETACH`) so a process still holding a
/// file open there cannot make the cleanup fail.
pub(crate) fn unmount_all_under(dir: &Path) -> Result<(), TemplateError> {
    // Mounts can be stacked on one point, each pass peels one layer.
    for _ in 0..16 {
        let mounts = mounts_under(dir)?;
        if mounts.is_empty() {
            return Ok(());
        }
        for m in &mounts {
            tracing::debug!(mount = %m.display(), "unmounting leftover mount");
            if let Err(e) = umount_detach(m) {
                tracing::warn!(mount = %m.display(), error = %e, "unmount failed");
            }
        }
    }
    let left = mounts_under(dir)?;
    if left.is_empty() {
        return Ok(());
    }
    Err(TemplateError::MountsRemain {
        path: dir.to_path_buf(),
        mounts: left
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

fn umount_detach(path: &Path) -> std::io::Result<()> {
    Ok(hutch_sys::mount::detach(path)?)
}

/// Mounts a filesystem of type `fstype` from `source` on `target`.
pub(crate) fn mount(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: u64,
    data: Option<&str>,
) -> std::io::Result<()> {
    Ok(hutch_sys::mount::mount(
        Some(Path::new(source)),
        target,
        Some(fstype),
        flags,
        data,
    )?)
}

/// Deletes `dir` recursively after making sure nothing is mounted below it.
/// A missing `dir` is fine.
pub(crate) fn remove_tree(dir: &Path) -> Result<(), TemplateError> {
    if std::fs::symlink_metadata(dir).is_err() {
        return Ok(());
    }
    unmount_all_under(dir)?;
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(TemplateError::io("could not delete directory", dir)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 22 0:5 / /var/cache/t/.build-ab-1/rootfs/proc rw - proc proc rw
31 22 0:6 / /var/cache/t/.build-ab-1/rootfs/dev rw - tmpfs tmpfs rw
32 31 0:7 / /var/cache/t/.build-ab-1/rootfs/dev/null rw - devtmpfs udev rw
33 22 0:8 / /var/cache/t/.build-ab-10/rootfs/proc rw - proc proc rw
34 22 0:9 / /var/cache/t/with\\040space/x rw - proc proc rw
";

    #[test]
    fn finds_mounts_deepest_first_without_prefix_confusion() {
        let got = mounts_under_in(MOUNTINFO, Path::new("/var/cache/t/.build-ab-1"));
        assert_eq!(
            got,
            vec![
                PathBuf::from("/var/cache/t/.build-ab-1/rootfs/dev/null"),
                PathBuf::from("/var/cache/t/.build-ab-1/rootfs/proc"),
                PathBuf::from("/var/cache/t/.build-ab-1/rootfs/dev"),
            ]
        );
        let got = mounts_under_in(MOUNTINFO, Path::new("/var/cache/t/with space"));
        assert_eq!(got, vec![PathBuf::from("/var/cache/t/with space/x")]);
        assert!(mounts_under_in(MOUNTINFO, Path::new("/nowhere")).is_empty());
    }

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape_mountinfo("a\\040b\\134c"), "a b\\c");
        assert_eq!(unescape_mountinfo("trailing\\04"), "trailing\\04");
        assert_eq!(unescape_mountinfo("plain"), "plain");
    }
}
