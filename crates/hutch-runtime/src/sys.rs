//! String conversion, and the mount calls the crate makes, through hutch-sys.

use std::ffi::CString;
use std::io;
use std::path::Path;

/// Converts a string to a C string.
pub(crate) fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "string contains a NUL byte"))
}

/// `mount(2)`.
pub(crate) fn mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    Ok(hutch_sys::mount::mount(
        source, target, fstype, flags, data,
    )?)
}

/// `umount2(2)`.
pub(crate) fn umount2(target: &Path, flags: libc::c_int) -> io::Result<()> {
    Ok(hutch_sys::mount::unmount(target, flags as u32)?)
}
