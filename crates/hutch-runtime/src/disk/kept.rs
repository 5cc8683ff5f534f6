//! Sandbox disks kept mounted from one sandbox to the next.
//!
//! Making a disk costs a copy of the blank image, a loop device bound to it and an ext4
//! mount; throwing it away an unmount, the loop device's teardown and deleting the image:
//! about 12% of all CPU under `base` create + kill (docs/performance.md). A disk whose
//! sandbox wrote little is emptied instead (its `upper` and `work` deleted and made again)
//! and handed to the next sandbox that asks for one of its size. Nothing of the earlier
//! sandbox is left that the next can reach: it sees the disk only through the overlay's new
//! `upper`, and ext4 never shows a file the contents of blocks freed by another.
//!
//! A disk lives in `<state>/disks/<name>/`: its image `disk.img`, mounted on `mnt`. The
//! sandbox holding it has `<state>/sandboxes/<id>/disk` as a symbolic link to that `mnt`,
//! so a disk in use is found again after a restart by that link, and a disk no link names
//! is a kept one (or a leftover): [`Disks::sweep`] removes those.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Result, RuntimeError};
use crate::timing::Steps;
use crate::trash::Trash;

/// How many emptied disks are kept at most (each holds a loop device and a mount).
pub(crate) const MAX_KEPT: usize = 32;

/// A disk with more inodes in use than this (a blank one has about 14: ext4's reserved
/// inodes, its root, `upper` and `work`) is thrown away rather than emptied, which would
/// take longer than making a new one.
const KEEP_MAX_INODES: u64 = 512;

/// A disk whose image holds more host disk than this (blocks the sandbox wrote stay
/// allocated in the image after it deleted them) is thrown away, giving the space back.
const KEEP_MAX_ALLOCATED: u64 = 64 << 20;

/// The host's sandbox disks: the emptied ones waiting for a sandbox, and where all live.
#[derive(Debug)]
pub(crate) struct Disks {
    dir: PathBuf,
    free: Mutex<Vec<Kept>>,
}

#[derive(Debug)]
struct Kept {
    dir: PathBuf,
    size_mb: u64,
}

impl Disks {
    /// Uses (and creates, mode 0700) `dir`; keeps nothing yet.
    pub fn new(dir: PathBuf) -> Result<Self> {
        fs::create_dir_all(&dir).map_err(|e| RuntimeError::io("mkdir", &dir, e))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| RuntimeError::io("chmod", &dir, e))?;
        Ok(Disks {
            dir,
            free: Mutex::new(Vec::new()),
        })
    }

    /// How many emptied disks wait for a sandbox.
    pub fn kept(&self) -> usize {
        self.free_list().len()
    }

    /// A mounted disk of `size_mb` with empty `upper` and `work`: a kept one, or a new one
    /// named `name` copied from `blank`. Returns its mount point.
    pub fn take(
        &self,
        name: &str,
        blank: &Path,
        size_mb: u64,
        steps: &mut Steps,
    ) -> Result<PathBuf> {
        let kept = {
            let mut free = self.free_list();
            free.iter()
                .rposition(|k| k.size_mb == size_mb)
                .map(|i| free.remove(i))
        };
        if let Some(k) = kept {
            steps.mark("kept_disk");
            return Ok(k.dir.join("mnt"));
        }
        let dir = self.dir.join(name);
        let mnt = dir.join("mnt");
        fs::create_dir_all(&mnt).map_err(|e| RuntimeError::io("mkdir", &mnt, e))?;
        let image = dir.join("disk.img");
        let res = super::copy_sparse(blank, &image).and_then(|()| {
            steps.mark("copy_image");
            super::mount_image(&image, &mnt)
        });
        steps.mark("loop_mount");
        match res {
            Ok(()) => Ok(mnt),
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    /// Takes back the disk mounted at `mnt` (a [`Disks::take`] answer) once its sandbox's
    /// processes and overlay are gone: keeps it when it can be emptied cheaply and there is
    /// room, otherwise unmounts it and throws it away. Paths outside this store are ignored.
    pub fn give_back(&self, mnt: &Path, trash: &Trash) {
        let Some(dir) = mnt.parent().filter(|d| d.parent() == Some(&self.dir)) else {
            return;
        };
        let room = {
            let free = self.free_list();
            if free.iter().any(|k| k.dir == dir) {
                return;
            }
            free.len() < MAX_KEPT
        };
        if let Some(size_mb) = room.then(|| emptied(dir)).flatten() {
            let mut free = self.free_list();
            if free.len() < MAX_KEPT && !free.iter().any(|k| k.dir == dir) {
                free.push(Kept {
                    dir: dir.to_path_buf(),
                    size_mb,
                });
                return;
            }
        }
        discard(dir, trash);
    }

    /// Throws away every disk of the store that `in_use` (mount points named by sandboxes'
    /// links) does not name: a start after a crash, or `hutch cleanup`.
    pub fn sweep(&self, in_use: &HashSet<PathBuf>, trash: &Trash) {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return;
        };
        let mut free = self.free_list();
        for entry in rd.flatten() {
            let dir = entry.path();
            if in_use.contains(&dir.join("mnt")) {
                continue;
            }
            free.retain(|k| k.dir != dir);
            discard(&dir, trash);
        }
    }

    /// Throws away every kept disk (the server stops: a disk in use stays with its sandbox).
    pub fn release(&self, trash: &Trash) {
        let kept = std::mem::take(&mut *self.free_list());
        for k in kept {
            discard(&k.dir, trash);
        }
    }

    fn free_list(&self) -> std::sync::MutexGuard<'_, Vec<Kept>> {
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Empties the disk in `dir` for another sandbox: its size in MiB, or None when it should
/// not be kept (not mounted, read-only after an error, too full, too much host disk) or
/// emptying failed.
fn emptied(dir: &Path) -> Option<u64> {
    let mnt = dir.join("mnt");
    let image = fs::metadata(dir.join("disk.img")).ok()?;
    if image.blocks() * 512 > KEEP_MAX_ALLOCATED || image.len() % (1 << 20) != 0 {
        return None;
    }
    // Not mounted: the same filesystem as its directory.
    if fs::metadata(&mnt).ok()?.dev() == fs::metadata(dir).ok()?.dev() {
        return None;
    }
    let read_only = hutch_sys::mount::mount_flags(&mnt).ok()? & libc::ST_RDONLY != 0;
    if read_only || hutch_sys::mount::inodes_used(&mnt).ok()? > KEEP_MAX_INODES {
        return None;
    }
    for name in ["upper", "work"] {
        let d = mnt.join(name);
        match fs::remove_dir_all(&d) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::debug!(path = %d.display(), error = %e, "a sandbox disk could not be emptied");
                return None;
            }
        }
    }
    // Only `upper` and `work` are ever there: the sandbox sees nothing else of its disk.
    if fs::read_dir(&mnt).ok()?.next().is_some() {
        return None;
    }
    for name in ["upper", "work"] {
        let d = mnt.join(name);
        fs::create_dir(&d).ok()?;
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).ok()?;
    }
    Some(image.len() >> 20)
}

/// Unmounts the disk in `dir` and throws the directory (its image) away.
fn discard(dir: &Path, trash: &Trash) {
    if let Err(e) = crate::mounts::unmount_below(dir, &mut Steps::start()) {
        tracing::warn!(path = %dir.display(), error = %e, "a sandbox disk stays mounted");
        return;
    }
    if let Err(e) = trash.discard(dir) {
        tracing::warn!(path = %dir.display(), error = %e, "a sandbox disk was not deleted");
    }
}
