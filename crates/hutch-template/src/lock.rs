//! Advisory file locks that keep two builds of one template apart.
//!
//! flock(2) locks belong to the open file description, so they exclude other
//! processes *and* other threads of this process that opened the file
//! themselves; the kernel drops them when the holder dies, so a crashed
//! build never leaves a stuck lock.

use std::fs::{File, OpenOptions};

use hutch_sys::fs::Lock;
use std::path::Path;

use crate::TemplateError;

/// A held exclusive lock; released on drop.
#[derive(Debug)]
pub(crate) struct FileLock {
    // Closing the file releases the lock.
    _file: File,
}

fn open(path: &Path) -> Result<File, TemplateError> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(TemplateError::io("could not open lock file", path))
}

fn flock(file: &File, lock: Lock) -> std::io::Result<()> {
    Ok(hutch_sys::fs::flock(file, lock)?)
}

/// Takes the lock at `path` without waiting; `None` if someone holds it.
pub(crate) fn try_lock(path: &Path) -> Result<Option<FileLock>, TemplateError> {
    let file = open(path)?;
    match flock(&file, Lock::ExclusiveNonBlocking) {
        Ok(()) => Ok(Some(FileLock { _file: file })),
        Err(e) if e.raw_os_error() == Some(hutch_sys::Errno::WOULDBLOCK.raw_os_error()) => Ok(None),
        Err(e) => Err(TemplateError::io("could not lock", path)(e)),
    }
}

/// Takes the lock at `path`, calling `on_wait` once first if it has to wait.
pub(crate) fn lock(path: &Path, on_wait: &mut dyn FnMut()) -> Result<FileLock, TemplateError> {
    if let Some(l) = try_lock(path)? {
        return Ok(l);
    }
    on_wait();
    let file = open(path)?;
    flock(&file, Lock::Exclusive).map_err(TemplateError::io("could not lock", path))?;
    Ok(FileLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    #[test]
    fn excludes_second_holder_until_released() {
        let tmp = TempDir::new("lock");
        let p = tmp.path().join("k.lock");
        let first = try_lock(&p).expect("lock io").expect("free");
        assert!(try_lock(&p).expect("lock io").is_none());

        let p2 = p.clone();
        let waiter = std::thread::spawn(move || {
            let mut waited = false;
            let l = lock(&p2, &mut || waited = true).expect("lock");
            drop(l);
            waited
        });
        std::thread::sleep(std::time::Duration::from_millis(100));
        drop(first);
        assert!(waiter.join().expect("thread"), "second locker had to wait");
        assert!(try_lock(&p).expect("lock io").is_some());
    }
}
