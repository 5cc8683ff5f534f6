//! Squashing overlayfs layers: several layers that are stacked on the same lower ones
//! become one that, stacked there instead, shows the same tree. A chain of snapshots of
//! snapshots grows a layer each time; the overlay mount takes only so many, so hutch
//! squashes the user's layers of a deep chain into one (docs/snapshots.md).
//!
//! Each layer, bottom to top, is merged into the result as overlayfs would show it on top:
//! - a whiteout (a character device 0:0) removes what is below and stays, to keep hiding
//!   the lower layers' entry;
//! - an opaque directory (`trusted.overlay.opaque` = `y`) replaces what is below;
//! - a directory over a directory merges into it (the upper one's owner and mode win);
//!   over anything else (a whiteout, a file) it becomes opaque: what was there stopped
//!   overlayfs from looking further down, and the lower layers' directory stays hidden;
//! - anything else replaces what is below.
//!
//! Copies go through `cp -a` (owners, modes, extended attributes, special files kept), one
//! process per directory level that has something to copy.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Result, RuntimeError};

const OPAQUE: &std::ffi::CStr = c"trusted.overlay.opaque";

fn is_opaque(dir: &Path) -> bool {
    hutch_sys::xattr::lget(dir, OPAQUE).is_ok_and(|v| v == b"y")
}

fn remove(path: &Path, m: &std::fs::Metadata) -> Result<()> {
    let removed = if m.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    removed.map_err(|e| RuntimeError::io("remove", path, e))
}

/// `cp -a` of `sources` into the directory `dest`.
fn copy_into(sources: &[PathBuf], dest: &Path) -> Result<()> {
    if sources.is_empty() {
        return Ok(());
    }
    let mut paths = vec![dest.to_path_buf()];
    paths.extend_from_slice(sources);
    crate::runtime::cp(
        &["-a", "--remove-destination", "-t"],
        &paths,
        || format!("copying into {}", dest.display()),
        dest,
    )
}

/// Gives `dest` the owner and mode of `src` (an upper directory's win).
fn take_attributes(src: &std::fs::Metadata, dest: &Path) -> Result<()> {
    std::os::unix::fs::lchown(dest, Some(src.uid()), Some(src.gid()))
        .map_err(|e| RuntimeError::io("chown", dest, e))?;
    std::fs::set_permissions(dest, src.permissions())
        .map_err(|e| RuntimeError::io("chmod", dest, e))
}

/// Merges layer directory `src` into `dest` as overlayfs shows `src` over `dest`.
fn merge(src: &Path, dest: &Path) -> Result<()> {
    let mut copies = Vec::new();
    let mut opaque_after = Vec::new();
    let entries = std::fs::read_dir(src).map_err(|e| RuntimeError::io("read", src, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| RuntimeError::io("read", src, e))?;
        let s = entry.path();
        let d = dest.join(entry.file_name());
        let sm = std::fs::symlink_metadata(&s).map_err(|e| RuntimeError::io("stat", &s, e))?;
        let dm = std::fs::symlink_metadata(&d).ok();
        if sm.is_dir() && !is_opaque(&s) {
            match &dm {
                Some(m) if m.is_dir() => {
                    merge(&s, &d)?;
                    take_attributes(&sm, &d)?;
                    continue;
                }
                Some(m) => {
                    opaque_after.push(d.clone());
                    remove(&d, m)?;
                }
                None => {}
            }
        } else if let Some(m) = &dm {
            // Whiteouts, opaque directories and everything else replace what is there.
            remove(&d, m)?;
        }
        copies.push(s);
    }
    copy_into(&copies, dest)?;
    for d in opaque_after {
        hutch_sys::xattr::lset(&d, OPAQUE, b"y")
            .map_err(|e| RuntimeError::io("set the opaque mark of", &d, e.into()))?;
    }
    Ok(())
}

/// Makes `dest` (a new directory) one layer showing what `layers` (bottom first) show
/// stacked on the same lower layers.
pub fn squash(layers: &[PathBuf], dest: &Path) -> Result<()> {
    let Some((first, rest)) = layers.split_first() else {
        return std::fs::create_dir(dest).map_err(|e| RuntimeError::io("mkdir", dest, e));
    };
    crate::runtime::copy_tree(first, dest)?;
    for layer in rest {
        merge(layer, dest)?;
        let m = std::fs::symlink_metadata(layer).map_err(|e| RuntimeError::io("stat", layer, e))?;
        take_attributes(&m, dest)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    fn is_whiteout(m: &std::fs::Metadata) -> bool {
        m.file_type().is_char_device() && m.rdev() == 0
    }

    fn whiteout(p: &Path) {
        let st = std::process::Command::new("mknod")
            .arg(p)
            .args(["c", "0", "0"])
            .status()
            .expect("mknod");
        assert!(st.success());
    }

    fn tree(root: &Path) -> Vec<String> {
        let mut out = Vec::new();
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
            let mut entries: Vec<_> = std::fs::read_dir(dir)
                .expect("read")
                .flatten()
                .map(|e| e.path())
                .collect();
            entries.sort();
            for p in entries {
                let rel = p.strip_prefix(root).expect("rel").display().to_string();
                let m = std::fs::symlink_metadata(&p).expect("stat");
                if is_whiteout(&m) {
                    out.push(format!("{rel} (whiteout)"));
                } else if m.is_dir() {
                    let mark = if is_opaque(&p) { " (opaque)" } else { "" };
                    out.push(format!("{rel}/{mark}"));
                    walk(root, &p, out);
                } else {
                    let text = std::fs::read_to_string(&p).unwrap_or_default();
                    out.push(format!("{rel} = {text}"));
                }
            }
        }
        walk(root, root, &mut out);
        out
    }

    #[test]
    fn a_stack_of_layers_squashes_into_one_that_shows_the_same_when_root() {
        if !hutch_sys::creds::is_root() {
            eprintln!("skipped: needs root (whiteouts, trusted xattrs)");
            return;
        }
        let dir = std::env::temp_dir().join(format!("hutch-squash-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (l1, l2, l3, out) = (
            dir.join("l1"),
            dir.join("l2"),
            dir.join("l3"),
            dir.join("out"),
        );
        for d in [&l1, &l2, &l3] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        // l1: a file, a directory with two files, a whiteout of a base file.
        std::fs::write(l1.join("keep"), "1").expect("write");
        std::fs::create_dir(l1.join("d")).expect("mkdir");
        std::fs::write(l1.join("d/a"), "1").expect("write");
        std::fs::write(l1.join("d/b"), "1").expect("write");
        whiteout(&l1.join("gone-from-base"));
        std::fs::write(l1.join("later-dir"), "file").expect("write");
        std::fs::create_dir(l1.join("o")).expect("mkdir");
        std::fs::write(l1.join("o/old"), "1").expect("write");
        // l2: replaces d/a, whites out d/b, re-creates the base file, an opaque o.
        std::fs::create_dir(l2.join("d")).expect("mkdir");
        std::fs::write(l2.join("d/a"), "2").expect("write");
        whiteout(&l2.join("d/b"));
        std::fs::write(l2.join("gone-from-base"), "back").expect("write");
        std::fs::create_dir(l2.join("o")).expect("mkdir");
        hutch_sys::xattr::lset(&l2.join("o"), OPAQUE, b"y").expect("opaque");
        std::fs::write(l2.join("o/new"), "2").expect("write");
        whiteout(&l2.join("wd"));
        // l3: a directory over l2's whiteout, a directory over l1's file.
        std::fs::create_dir(l3.join("wd")).expect("mkdir");
        std::fs::write(l3.join("wd/x"), "3").expect("write");
        std::fs::create_dir(l3.join("later-dir")).expect("mkdir");
        squash(&[l1, l2, l3], &out).expect("squash");
        assert_eq!(
            tree(&out),
            [
                "d/",
                "d/a = 2",
                "d/b (whiteout)",
                "gone-from-base = back",
                "keep = 1",
                "later-dir/ (opaque)",
                "o/ (opaque)",
                "o/new = 2",
                "wd/ (opaque)",
                "wd/x = 3",
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
