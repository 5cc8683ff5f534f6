//! Extended attributes. Names are given as bytes (`user.foo`); lists come back as the
//! kernel's NUL-separated name list split into names.

use std::ffi::CStr;
use std::os::fd::AsFd;
use std::path::Path;

use rustix::io::{Errno, Result};

/// Flags of `set`: create or replace.
const ANY: rustix::fs::XattrFlags = rustix::fs::XattrFlags::empty();

/// Runs a "size query, then fill" call until the buffer is big enough (the value can grow
/// between the two calls).
fn sized(
    mut query: impl FnMut() -> Result<usize>,
    mut fill: impl FnMut(&mut [u8]) -> Result<usize>,
) -> Result<Vec<u8>> {
    for _ in 0..8 {
        let needed = query()?;
        let mut buf = vec![0u8; needed];
        if buf.is_empty() {
            return Ok(buf);
        }
        match fill(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(Errno::RANGE) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Errno::RANGE)
}

fn names(raw: Vec<u8>) -> Vec<Vec<u8>> {
    raw.split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// The value of attribute `name` of `path`, following symlinks.
pub fn get(path: &Path, name: &CStr) -> Result<Vec<u8>> {
    sized(
        || rustix::fs::getxattr_query(path, name),
        |buf| rustix::fs::getxattr(path, name, buf),
    )
}

/// The attribute names of `path`, following symlinks.
pub fn list(path: &Path) -> Result<Vec<Vec<u8>>> {
    sized(
        || rustix::fs::listxattr_query(path),
        |buf| rustix::fs::listxattr(path, buf),
    )
    .map(names)
}

/// The value of attribute `name` of `path` itself (a symlink is not followed).
pub fn lget(path: &Path, name: &CStr) -> Result<Vec<u8>> {
    sized(
        || rustix::fs::lgetxattr_query(path, name),
        |buf| rustix::fs::lgetxattr(path, name, buf),
    )
}

/// Sets attribute `name` of `path` itself (a symlink is not followed).
pub fn lset(path: &Path, name: &CStr, value: &[u8]) -> Result<()> {
    rustix::fs::lsetxattr(path, name, value, ANY)
}

/// The value of attribute `name` of the open file `fd`.
pub fn fget(fd: impl AsFd, name: &CStr) -> Result<Vec<u8>> {
    let fd = fd.as_fd();
    sized(
        || rustix::fs::fgetxattr_query(fd, name),
        |buf| rustix::fs::fgetxattr(fd, name, buf),
    )
}

/// The attribute names of the open file `fd`.
pub fn flist(fd: impl AsFd) -> Result<Vec<Vec<u8>>> {
    let fd = fd.as_fd();
    sized(
        || rustix::fs::flistxattr_query(fd),
        |buf| rustix::fs::flistxattr(fd, buf),
    )
    .map(names)
}

/// Sets attribute `name` of the open file `fd` to `value`.
pub fn fset(fd: impl AsFd, name: &CStr, value: &[u8]) -> Result<()> {
    rustix::fs::fsetxattr(fd, name, value, ANY)
}

/// Removes attribute `name` of the open file `fd`.
pub fn fremove(fd: impl AsFd, name: &CStr) -> Result<()> {
    rustix::fs::fremovexattr(fd, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch file on a filesystem with user xattrs (tmpfs since 6.6, ext4, xfs), or
    /// None where they are not supported.
    fn scratch(tag: &str) -> Option<(std::path::PathBuf, std::fs::File)> {
        let dir = std::env::current_dir().unwrap().join("target");
        let dir = if dir.is_dir() {
            dir
        } else {
            std::env::temp_dir()
        };
        let path = dir.join(format!("hutch-sys-xattr-{tag}-{}", std::process::id()));
        let f = std::fs::File::create(&path).unwrap();
        match fset(&f, c"user.probe", b"1") {
            Ok(()) => Some((path, f)),
            Err(_) => {
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    #[test]
    fn a_set_attribute_is_listed_read_back_and_removed() {
        let Some((path, f)) = scratch("rw") else {
            return;
        };
        fset(&f, c"user.k", b"value").unwrap();
        assert_eq!(fget(&f, c"user.k").unwrap(), b"value");
        assert_eq!(get(&path, c"user.k").unwrap(), b"value");
        assert_eq!(lget(&path, c"user.k").unwrap(), b"value");
        assert!(flist(&f).unwrap().contains(&b"user.k".to_vec()));
        assert!(list(&path).unwrap().contains(&b"user.k".to_vec()));
        fremove(&f, c"user.k").unwrap();
        assert_eq!(fget(&f, c"user.k"), Err(Errno::NODATA));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn an_empty_value_reads_back_empty() {
        let Some((path, _f)) = scratch("empty") else {
            return;
        };
        lset(&path, c"user.e", b"").unwrap();
        assert_eq!(lget(&path, c"user.e").unwrap(), b"");
        std::fs::remove_file(&path).unwrap();
    }
}
