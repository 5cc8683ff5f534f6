//! OS error numbers as plain `i32`s, for matching `io::Error::raw_os_error()` without libc.

use rustix::io::Errno;

/// Operation not permitted.
pub const EPERM: i32 = Errno::PERM.raw_os_error();
/// No such file or directory.
pub const ENOENT: i32 = Errno::NOENT.raw_os_error();
/// No such process.
pub const ESRCH: i32 = Errno::SRCH.raw_os_error();
/// Interrupted system call.
pub const EINTR: i32 = Errno::INTR.raw_os_error();
/// Input/output error (a PTY master reads it once every slave holder is gone).
pub const EIO: i32 = Errno::IO.raw_os_error();
/// Permission denied.
pub const EACCES: i32 = Errno::ACCESS.raw_os_error();
/// Device or resource busy.
pub const EBUSY: i32 = Errno::BUSY.raw_os_error();
/// File exists.
pub const EEXIST: i32 = Errno::EXIST.raw_os_error();
/// Not a directory.
pub const ENOTDIR: i32 = Errno::NOTDIR.raw_os_error();
/// Is a directory.
pub const EISDIR: i32 = Errno::ISDIR.raw_os_error();
/// Invalid argument.
pub const EINVAL: i32 = Errno::INVAL.raw_os_error();
/// Too many open files in the system.
pub const ENFILE: i32 = Errno::NFILE.raw_os_error();
/// Too many open files in the process.
pub const EMFILE: i32 = Errno::MFILE.raw_os_error();
/// No space left on device.
pub const ENOSPC: i32 = Errno::NOSPC.raw_os_error();
/// Illegal seek (a pipe or socket).
pub const ESPIPE: i32 = Errno::SPIPE.raw_os_error();
/// Read-only file system.
pub const EROFS: i32 = Errno::ROFS.raw_os_error();
/// File name too long.
pub const ENAMETOOLONG: i32 = Errno::NAMETOOLONG.raw_os_error();
/// Directory not empty.
pub const ENOTEMPTY: i32 = Errno::NOTEMPTY.raw_os_error();
/// Too many levels of symbolic links.
pub const ELOOP: i32 = Errno::LOOP.raw_os_error();
/// No such attribute.
pub const ENODATA: i32 = Errno::NODATA.raw_os_error();
/// Operation not supported (e.g. no extended attributes on this filesystem).
pub const ENOTSUP: i32 = Errno::NOTSUP.raw_os_error();
/// Disk quota exceeded.
pub const EDQUOT: i32 = Errno::DQUOT.raw_os_error();

/// The error number the last failed raw call (`libc::syscall`, an ioctl) left, as rustix's
/// type.
pub(crate) fn last() -> Errno {
    Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_the_c_library() {
        assert_eq!(ENOENT, libc::ENOENT);
        assert_eq!(ENODATA, libc::ENODATA);
        assert_eq!(ENOTSUP, libc::ENOTSUP);
        assert_eq!(EDQUOT, libc::EDQUOT);
        assert_eq!(ELOOP, libc::ELOOP);
    }
}
