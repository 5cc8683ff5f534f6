//! Deleting sandbox directories off the destroy path.
//!
//! Deleting a sandbox's disk image (a file of which the kernel may still be writing dirty
//! pages back) takes from 2 ms to 50 ms when the host disk is busy. Destroy renames the
//! directory into the trash instead, which is instant, and a background thread deletes it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::thread::JoinHandle;

use crate::error::{Result, RuntimeError};

/// A directory whose entries a background thread deletes.
#[derive(Debug)]
pub(crate) struct Trash {
    dir: PathBuf,
    /// None when no thread could be started: then everything is deleted in place.
    tx: Option<Sender<PathBuf>>,
    thread: Option<JoinHandle<()>>,
    next: AtomicU64,
}

impl Trash {
    /// Uses (and creates) `dir`, on the same filesystem as what will be thrown in it, and
    /// starts deleting whatever an earlier run left there.
    pub fn new(dir: PathBuf) -> Result<Self> {
        fs::create_dir_all(&dir).map_err(|e| RuntimeError::io("mkdir", &dir, e))?;
        let (tx, rx) = mpsc::channel::<PathBuf>();
        let started = std::thread::Builder::new()
            .name("hutch-trash".into())
            .spawn(move || {
                for path in rx {
                    if let Err(e) = fs::remove_dir_all(&path) {
                        if e.kind() != io::ErrorKind::NotFound {
                            tracing::warn!(path = %path.display(), error = %e, "emptying the trash failed");
                        }
                    }
                }
            });
        let (tx, thread) = match started {
            Ok(t) => (Some(tx), Some(t)),
            Err(e) => {
                tracing::warn!(error = %e, "no thread to empty the trash; deleting in place");
                (None, None)
            }
        };
        let trash = Trash {
            dir,
            tx,
            thread,
            next: AtomicU64::new(0),
        };
        if let Ok(rd) = fs::read_dir(&trash.dir) {
            for entry in rd.flatten() {
                trash.delete(entry.path());
            }
        }
        Ok(trash)
    }

    /// Moves directory `path` (nothing may be mounted below it) into the trash to be deleted
    /// in the background. A missing `path` is fine.
    pub fn discard(&self, path: &Path) -> Result<()> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let dest = self.dir.join(format!("{name}.{}.{n}", std::process::id()));
        match fs::rename(path, &dest) {
            Ok(()) => {
                self.delete(dest);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            // Elsewhere (another filesystem) or refused: delete it in place.
            Err(_) => match fs::remove_dir_all(path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(RuntimeError::io("remove", path, e)),
            },
        }
    }

    fn delete(&self, path: PathBuf) {
        let path = match &self.tx {
            Some(tx) => match tx.send(path) {
                Ok(()) => return,
                Err(mpsc::SendError(path)) => path,
            },
            None => path,
        };
        let _ = fs::remove_dir_all(path);
    }
}

impl Drop for Trash {
    /// Waits for what was thrown away to be deleted (a `hutch cleanup` leaves nothing).
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{put, TempDir};

    #[test]
    fn discarded_directories_leave_at_once_and_are_deleted_later() {
        let tmp = TempDir::new("trash");
        let trash_dir = tmp.path().join("trash");
        // Left by an earlier run.
        put(&trash_dir, "old.1.1/disk.img", "x");
        let trash = Trash::new(trash_dir.clone()).expect("trash");
        put(tmp.path(), "sandboxes/abc/disk.img", "data");
        let dir = tmp.path().join("sandboxes/abc");
        trash.discard(&dir).expect("discard");
        assert!(!dir.exists());
        trash
            .discard(&dir)
            .expect("a second discard finds nothing and is fine");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while fs::read_dir(&trash_dir).expect("list").next().is_some() {
            assert!(std::time::Instant::now() < deadline, "trash never emptied");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}
