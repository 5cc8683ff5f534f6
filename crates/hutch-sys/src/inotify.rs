//! inotify: the descriptor, its watches, and reading raw event records.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::inotify::{CreateFlags, WatchFlags};
use rustix::io::Result;

/// The `IN_*` event bits watches ask for and events report.
pub mod mask {
    use rustix::fs::inotify::{ReadFlags as R, WatchFlags as W};

    /// A file was created in a watched directory.
    pub const IN_CREATE: u32 = W::CREATE.bits();
    /// A file was written.
    pub const IN_MODIFY: u32 = W::MODIFY.bits();
    /// A file was deleted from a watched directory.
    pub const IN_DELETE: u32 = W::DELETE.bits();
    /// The watched directory itself was deleted.
    pub const IN_DELETE_SELF: u32 = W::DELETE_SELF.bits();
    /// A file was moved into a watched directory.
    pub const IN_MOVED_TO: u32 = W::MOVED_TO.bits();
    /// A file was moved out of a watched directory.
    pub const IN_MOVED_FROM: u32 = W::MOVED_FROM.bits();
    /// The watched directory itself was moved.
    pub const IN_MOVE_SELF: u32 = W::MOVE_SELF.bits();
    /// Metadata (permissions, owner, times, xattrs) changed.
    pub const IN_ATTRIB: u32 = W::ATTRIB.bits();
    /// Only watch the path if it is a directory.
    pub const IN_ONLYDIR: u32 = W::ONLYDIR.bits();
    /// Do not follow a symlink at the path.
    pub const IN_DONT_FOLLOW: u32 = W::DONT_FOLLOW.bits();
    /// The event queue overflowed: events were lost.
    pub const IN_Q_OVERFLOW: u32 = R::QUEUE_OVERFLOW.bits();
    /// The watch was removed (explicitly, or because its directory went away).
    pub const IN_IGNORED: u32 = R::IGNORED.bits();
    /// The filesystem holding the watched directory was unmounted.
    pub const IN_UNMOUNT: u32 = R::UNMOUNT.bits();
    /// The event's subject is a directory.
    pub const IN_ISDIR: u32 = R::ISDIR.bits();
}

/// A new non-blocking, close-on-exec inotify descriptor.
pub fn init() -> Result<OwnedFd> {
    rustix::fs::inotify::init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC)
}

/// Watches `path` for the raw `IN_*` events in `mask`; returns the watch descriptor.
pub fn add_watch(inotify: impl AsFd, path: &Path, mask: u32) -> Result<i32> {
    rustix::fs::inotify::add_watch(inotify, path, WatchFlags::from_bits_retain(mask))
}

/// Removes watch `wd` (fails with `EINVAL` if the kernel already dropped it).
pub fn remove_watch(inotify: impl AsFd, wd: i32) -> Result<()> {
    rustix::fs::inotify::remove_watch(inotify, wd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creating_a_file_in_a_watched_directory_is_reported() {
        let dir = std::env::temp_dir().join(format!("hutch-sys-inotify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fd = init().unwrap();
        let wd = add_watch(&fd, &dir, rustix::fs::inotify::WatchFlags::CREATE.bits()).unwrap();
        std::fs::write(dir.join("new"), b"").unwrap();
        let mut buf = [0u8; 4096];
        let n = crate::fd::read(&fd, &mut buf).unwrap();
        // struct inotify_event: wd (i32), mask (u32), cookie, len, name.
        assert!(n >= 16);
        assert_eq!(i32::from_ne_bytes(buf[0..4].try_into().unwrap()), wd);
        let mask = u32::from_ne_bytes(buf[4..8].try_into().unwrap());
        assert_ne!(mask & rustix::fs::inotify::ReadFlags::CREATE.bits(), 0);
        remove_watch(&fd, wd).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
