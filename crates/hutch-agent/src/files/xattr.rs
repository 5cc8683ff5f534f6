//! File metadata: user-defined key/value pairs stored as `user.e2b.<key>` extended attributes.
//!
//! Uploads set them from `X-Metadata-<Key>` headers; the filesystem service reports them in
//! `EntryInfo.metadata`. Keys and values are printable ASCII and small: ext4 keeps all of an
//! inode's attributes in one 4 KiB block.

use hutch_sys::errno;
use std::collections::BTreeMap;
use std::ffi::CString;
use std::io;
use std::os::fd::BorrowedFd;
use std::path::Path;

/// The attribute namespace metadata lives in.
pub const PREFIX: &str = "user.e2b.";

/// Longest key: the kernel limits a whole attribute name to 255 bytes.
pub const MAX_KEY_LEN: usize = 255 - PREFIX.len();

/// Most bytes all of a file's metadata may take (names with prefix plus values).
pub const MAX_TOTAL_LEN: usize = 4096;

/// Checks a metadata set before anything is written; the message says what is wrong.
pub fn validate(metadata: &BTreeMap<String, String>) -> Result<(), String> {
    let mut total = 0;
    for (key, value) in metadata {
        if key.is_empty() {
            return Err("metadata key must not be empty".into());
        }
        if key.len() > MAX_KEY_LEN {
            return Err(format!("metadata key {key:?} exceeds {MAX_KEY_LEN} bytes"));
        }
        printable("key", key)?;
        printable(&format!("value for key {key:?}"), value)?;
        total += PREFIX.len() + key.len() + value.len();
    }
    if total > MAX_TOTAL_LEN {
        return Err(format!(
            "total metadata size {total} exceeds {MAX_TOTAL_LEN} bytes"
        ));
    }
    Ok(())
}

fn printable(label: &str, s: &str) -> Result<(), String> {
    match s.bytes().position(|b| !(0x20..=0x7e).contains(&b)) {
        None => Ok(()),
        Some(i) => Err(format!(
            "metadata {label} contains non-printable-ASCII byte 0x{:02x} at offset {i}",
            s.as_bytes()[i]
        )),
    }
}

/// Whether an error means the filesystem has no extended attributes (e.g. /proc, old tmpfs).
pub fn is_unsupported(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(errno::ENOTSUP))
}

/// Replaces the file's metadata with `metadata`: other `user.e2b.*` attributes are removed,
/// because an overwritten file keeps its attributes across `O_TRUNC` and must not keep stale
/// metadata from an earlier upload.
pub fn replace(fd: BorrowedFd<'_>, metadata: &BTreeMap<String, String>) -> io::Result<()> {
    for name in list(fd)? {
        let Some(key) = name.strip_prefix(PREFIX.as_bytes()) else {
            continue;
        };
        let keep = std::str::from_utf8(key).is_ok_and(|k| metadata.contains_key(k));
        if keep {
            continue;
        }
        let cname = CString::new(name).map_err(io::Error::other)?;
        match hutch_sys::xattr::fremove(fd, &cname) {
            Ok(()) | Err(hutch_sys::Errno::NODATA) => {}
            Err(err) => return Err(err.into()),
        }
    }
    for (key, value) in metadata {
        let cname = CString::new(format!("{PREFIX}{key}")).map_err(io::Error::other)?;
        hutch_sys::xattr::fset(fd, &cname, value.as_bytes())?;
    }
    Ok(())
}

/// The metadata of an open file (empty when it has none or the filesystem has no attributes).
pub fn read_fd(fd: BorrowedFd<'_>) -> io::Result<BTreeMap<String, String>> {
    let names = match list(fd) {
        Ok(names) => names,
        Err(err) if is_unsupported(&err) => return Ok(BTreeMap::new()),
        Err(err) => return Err(err),
    };
    let mut out = BTreeMap::new();
    for name in names {
        let Some(key) = name.strip_prefix(PREFIX.as_bytes()) else {
            continue;
        };
        let Ok(key) = std::str::from_utf8(key) else {
            continue;
        };
        let key = key.to_owned();
        let cname = CString::new(name).map_err(io::Error::other)?;
        let value = hutch_sys::xattr::fget(fd, &cname).map_err(io::Error::from);
        match value {
            // Values set out of band (setfattr) may be any bytes; metadata is a string map, so
            // skip what is not UTF-8 rather than fail the whole answer.
            Ok(v) => {
                if let Ok(v) = String::from_utf8(v) {
                    out.insert(key, v);
                }
            }
            Err(err) if err.raw_os_error() == Some(errno::ENODATA) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(out)
}

/// The metadata of the file at `path`, following symlinks.
pub fn read_path(path: &Path) -> io::Result<BTreeMap<String, String>> {
    let file = std::fs::File::open(path)?;
    read_fd(std::os::fd::AsFd::as_fd(&file))
}

fn list(fd: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
    Ok(hutch_sys::xattr::flist(fd)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_keys_values_and_size() {
        let m = |k: &str, v: &str| BTreeMap::from([(k.to_owned(), v.to_owned())]);
        assert!(validate(&m("author", "mish")).is_ok());
        assert!(validate(&m("", "x")).is_err());
        assert!(validate(&m("a", "bad\nvalue")).is_err());
        assert!(validate(&m("a", "é")).is_err());
        assert!(validate(&m(&"k".repeat(MAX_KEY_LEN + 1), "")).is_err());
        assert!(validate(&m("a", &"v".repeat(MAX_TOTAL_LEN))).is_err());
    }
}
