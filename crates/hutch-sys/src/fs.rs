//! Filesystem facts and small file operations: filesystem type, sparse-file seeking, locks,
//! device nodes, syncing, and kernel randomness.

use std::os::fd::AsFd;
use std::path::Path;

use rustix::fs::{FileType, FlockOperation, Mode, SeekFrom, CWD};
use rustix::io::{Errno, Result};

/// The file-type and special bits of `st_mode` (the kernel's ABI values).
pub mod mode {
    use rustix::fs::{FileType, Mode};

    /// Mask of the file-type bits.
    pub const S_IFMT: u32 = 0o170_000;
    /// Socket.
    pub const S_IFSOCK: u32 = FileType::Socket.as_raw_mode();
    /// Symbolic link.
    pub const S_IFLNK: u32 = FileType::Symlink.as_raw_mode();
    /// Regular file.
    pub const S_IFREG: u32 = FileType::RegularFile.as_raw_mode();
    /// Block device.
    pub const S_IFBLK: u32 = FileType::BlockDevice.as_raw_mode();
    /// Directory.
    pub const S_IFDIR: u32 = FileType::Directory.as_raw_mode();
    /// Character device.
    pub const S_IFCHR: u32 = FileType::CharacterDevice.as_raw_mode();
    /// FIFO.
    pub const S_IFIFO: u32 = FileType::Fifo.as_raw_mode();
    /// Set-user-id bit.
    pub const S_ISUID: u32 = Mode::SUID.bits();
    /// Set-group-id bit.
    pub const S_ISGID: u32 = Mode::SGID.bits();
    /// Sticky bit.
    pub const S_ISVTX: u32 = Mode::SVTX.bits();
}

/// The magic number of the filesystem `path` is on (`statfs(2)`'s `f_type`).
pub fn fs_magic(path: &Path) -> Result<u32> {
    // f_type's width differs between architectures; the magics all fit in 32 bits unsigned.
    Ok(rustix::fs::statfs(path)?.f_type as u32)
}

/// The magic number of the filesystem the open file `fd` is on.
pub fn fd_fs_magic(fd: impl AsFd) -> Result<u32> {
    Ok(rustix::fs::fstatfs(fd)?.f_type as u32)
}

/// The next extent of data in `fd` at or after `offset` (`lseek(SEEK_DATA)`); `None` when only a
/// hole follows.
pub fn next_data(fd: impl AsFd, offset: u64) -> Result<Option<u64>> {
    match rustix::fs::seek(fd, SeekFrom::Data(offset)) {
        Ok(at) => Ok(Some(at)),
        Err(Errno::NXIO) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The next hole in `fd` at or after `offset` (`lseek(SEEK_HOLE)`); the end of the file counts
/// as one.
pub fn next_hole(fd: impl AsFd, offset: u64) -> Result<u64> {
    rustix::fs::seek(fd, SeekFrom::Hole(offset))
}

/// How [`flock`] locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    /// Exclusive, waiting for other holders.
    Exclusive,
    /// Exclusive, failing with `EWOULDBLOCK` if someone else holds it.
    ExclusiveNonBlocking,
    /// Release.
    Unlock,
}

/// `flock(2)` on `fd`, retried on `EINTR`.
pub fn flock(fd: impl AsFd, lock: Lock) -> Result<()> {
    let op = match lock {
        Lock::Exclusive => FlockOperation::LockExclusive,
        Lock::ExclusiveNonBlocking => FlockOperation::NonBlockingLockExclusive,
        Lock::Unlock => FlockOperation::Unlock,
    };
    loop {
        match rustix::fs::flock(&fd, op) {
            Err(Errno::INTR) => continue,
            other => return other,
        }
    }
}

/// Creates the character device node `path` (`major`:`minor`) with `mode` (subject to the
/// umask).
pub fn mknod_char(path: &Path, mode: u32, major: u32, minor: u32) -> Result<()> {
    rustix::fs::mknodat(
        CWD,
        path,
        FileType::CharacterDevice,
        Mode::from_raw_mode(mode),
        rustix::fs::makedev(major, minor),
    )
}

/// Creates the FIFO `path` with `mode` (subject to the umask).
pub fn mkfifo(path: &Path, mode: u32) -> Result<()> {
    rustix::fs::mknodat(CWD, path, FileType::Fifo, Mode::from_raw_mode(mode), 0)
}

/// Opens the directory `path` for reading (close-on-exec), following a final symlink only
/// with `follow`: fails as the kernel's permission check for listing it does.
pub fn open_dir(path: &Path, follow: bool) -> Result<std::os::fd::OwnedFd> {
    use rustix::fs::OFlags;
    let mut flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    if !follow {
        flags |= OFlags::NOFOLLOW;
    }
    rustix::fs::open(path, flags, Mode::empty())
}

/// Opens the FIFO `path` without blocking (close-on-exec): its read end, or with `write`
/// its write end (which needs a reader to exist).
pub fn open_fifo(path: &Path, write: bool) -> Result<std::os::fd::OwnedFd> {
    use rustix::fs::OFlags;
    let access = if write {
        OFlags::WRONLY
    } else {
        OFlags::RDONLY
    };
    rustix::fs::open(
        path,
        access | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Flushes the filesystem the open file `fd` is on (`syncfs(2)`).
pub fn syncfs(fd: impl AsFd) -> Result<()> {
    rustix::fs::syncfs(fd)
}

/// Fills `buf` from the kernel's random pool (`getrandom(2)`); fails rather than returning
/// fewer bytes.
pub fn random_bytes(buf: &mut [u8]) -> Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        match rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, Write};

    const PROC_SUPER_MAGIC: u32 = 0x9fa0;

    #[test]
    fn mode_bits_match_the_c_library() {
        assert_eq!(mode::S_IFMT, libc::S_IFMT);
        assert_eq!(mode::S_IFDIR, libc::S_IFDIR);
        assert_eq!(mode::S_IFLNK, libc::S_IFLNK);
        assert_eq!(mode::S_IFBLK, libc::S_IFBLK);
        assert_eq!(mode::S_IFSOCK, libc::S_IFSOCK);
        assert_eq!(mode::S_ISVTX, libc::S_ISVTX);
    }

    #[test]
    fn proc_reports_the_proc_magic() {
        assert_eq!(fs_magic(Path::new("/proc")).unwrap(), PROC_SUPER_MAGIC);
        let f = std::fs::File::open("/proc/self/stat").unwrap();
        assert_eq!(fd_fs_magic(&f).unwrap(), PROC_SUPER_MAGIC);
    }

    #[test]
    fn a_file_with_data_at_its_start_has_data_at_zero_and_a_hole_at_its_end() {
        let dir = std::env::temp_dir().join(format!("hutch-sys-fs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sparse");
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(b"hello").unwrap();
        f.seek(std::io::SeekFrom::Start(0)).unwrap();
        assert_eq!(next_data(&f, 0).unwrap(), Some(0));
        assert_eq!(next_hole(&f, 0).unwrap(), 5);
        assert_eq!(next_data(&f, 5).unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_held_lock_is_refused_to_a_second_nonblocking_taker() {
        let dir = std::env::temp_dir().join(format!("hutch-sys-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("lock");
        let a = std::fs::File::create(&path).unwrap();
        let b = std::fs::File::open(&path).unwrap();
        flock(&a, Lock::ExclusiveNonBlocking).unwrap();
        assert_eq!(
            flock(&b, Lock::ExclusiveNonBlocking),
            Err(Errno::WOULDBLOCK)
        );
        flock(&a, Lock::Unlock).unwrap();
        flock(&b, Lock::ExclusiveNonBlocking).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn random_bytes_fill_the_whole_buffer() {
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        random_bytes(&mut a).unwrap();
        random_bytes(&mut b).unwrap();
        assert_ne!(a, b);
    }
}
