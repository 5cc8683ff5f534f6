//! Writing into the tree without following its symlinks or crossing into mounted
//! filesystems.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::mounts;
use crate::TemplateError;

/// Makes `root/rel` an empty directory on the tree's filesystem: creates it
/// if missing, deletes whatever is inside. Refuses if it is a mount point,
/// which would mean deleting another filesystem's contents.
pub(super) fn ensure_empty_dir(root: &Path, rel: &str) -> Result<(), TemplateError> {
    let dir = root.join(rel);
    match std::fs::symlink_metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            std::fs::remove_file(&dir).map_err(TemplateError::io("could not remove", &dir))?;
            std::fs::create_dir(&dir)
                .map_err(TemplateError::io("could not create directory", &dir))?;
        }
        Err(_) => {
            std::fs::create_dir(&dir)
                .map_err(TemplateError::io("could not create directory", &dir))?;
        }
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
        .map_err(TemplateError::io("could not set mode of", &dir))?;
    clear_dir_contents(root, rel)
}

/// Deletes everything inside `root/rel` (missing is fine), refusing to work
/// on a directory that is a mount point.
pub(super) fn clear_dir_contents(root: &Path, rel: &str) -> Result<(), TemplateError> {
    let dir = root.join(rel);
    let root_dev = std::fs::symlink_metadata(root)
        .map_err(TemplateError::io("could not stat", root))?
        .dev();
    let meta = match std::fs::symlink_metadata(&dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(TemplateError::io("could not stat", &dir)(e)),
    };
    if !meta.is_dir() {
        return Ok(());
    }
    if meta.dev() != root_dev {
        return Err(TemplateError::MountsRemain {
            path: dir.clone(),
            mounts: dir.display().to_string(),
        });
    }
    let entries = std::fs::read_dir(&dir).map_err(TemplateError::io("could not list", &dir))?;
    for entry in entries {
        let entry = entry.map_err(TemplateError::io("could not list", &dir))?;
        let path = entry.path();
        let is_dir = entry
            .file_type()
            .map_err(TemplateError::io("could not stat", &path))?
            .is_dir();
        if is_dir {
            mounts::remove_tree(&path)?;
        } else {
            std::fs::remove_file(&path).map_err(TemplateError::io("could not remove", &path))?;
        }
    }
    Ok(())
}

/// Replaces `root/rel` with a new regular file holding `contents` with
/// `mode`. An existing file or symlink there is removed first, never
/// written through: a symlink in the image may point at a host path.
pub(super) fn write_tree_file(
    root: &Path,
    rel: &str,
    contents: &[u8],
    mode: u32,
) -> Result<(), TemplateError> {
    let path = root.join(rel);
    if std::fs::symlink_metadata(&path).is_ok() {
        std::fs::remove_file(&path).map_err(TemplateError::io("could not replace", &path))?;
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&path)
        .map_err(TemplateError::io("could not create", &path))?;
    f.write_all(contents)
        .map_err(TemplateError::io("could not write", &path))?;
    // The umask may have masked bits off `mode`.
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(TemplateError::io("could not set mode of", &path))
}

/// Sets the mode of directory `root/rel`, refusing to follow a symlink.
pub(super) fn set_mode(root: &Path, rel: &str, mode: u32) -> Result<(), TemplateError> {
    let path = root.join(rel);
    let meta =
        std::fs::symlink_metadata(&path).map_err(TemplateError::io("could not stat", &path))?;
    if meta.file_type().is_symlink() {
        return Err(TemplateError::io("refusing to chmod symlink", &path)(
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "is a symlink"),
        ));
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
        .map_err(TemplateError::io("could not set mode of", &path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    #[test]
    fn write_tree_file_replaces_symlinks_instead_of_following() {
        let tmp = TempDir::new("setup-write");
        let root = tmp.path().join("rootfs");
        std::fs::create_dir_all(root.join("etc")).expect("mkdir");
        let outside = tmp.path().join("outside");
        std::fs::write(&outside, b"host").expect("write");
        std::os::unix::fs::symlink(&outside, root.join("etc/resolv.conf")).expect("symlink");

        write_tree_file(&root, "etc/resolv.conf", b"", 0o644).expect("write");
        assert_eq!(std::fs::read(&outside).expect("read"), b"host");
        let m = std::fs::symlink_metadata(root.join("etc/resolv.conf")).expect("stat");
        assert!(m.is_file());
        assert_eq!(m.len(), 0);
        assert_eq!(m.mode() & 0o7777, 0o644);
    }

    #[test]
    fn ensure_empty_dir_clears_contents() {
        let tmp = TempDir::new("setup-empty");
        let root = tmp.path();
        std::fs::create_dir_all(root.join("dev/pts")).expect("mkdir");
        std::fs::write(root.join("dev/null"), b"").expect("write");
        std::os::unix::fs::symlink("/proc/self/fd", root.join("dev/fd")).expect("symlink");
        ensure_empty_dir(root, "dev").expect("clear");
        ensure_empty_dir(root, "sys").expect("create");
        for d in ["dev", "sys"] {
            let n = std::fs::read_dir(root.join(d)).expect("list").count();
            assert_eq!(n, 0, "{d} is empty");
        }
    }
}
