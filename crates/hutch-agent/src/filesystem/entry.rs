//! `EntryInfo`: what the filesystem service reports about one path, computed the way envd does.
//!
//! envd's rules, which the SDKs' tests pin down: the entry is `lstat`ed (a symlink is described
//! as itself: its own size, owner and `L` permissions string), but a symlink's `type` and `mode`
//! are those of its final target, `symlink_target` is the fully resolved absolute target, and
//! `is_symlink` marks the link. `mode` holds only the nine permission bits; `permissions` is Go's
//! `os.FileMode.String()` of the whole mode.

use hutch_sys::errno;
use hutch_sys::fs::mode::{
    S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFSOCK, S_ISGID, S_ISUID, S_ISVTX,
};
use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::wire::{EntryInfo, FileType, Timestamp};

/// The xattr namespace file metadata lives in (written by `/files` uploads).
pub const METADATA_XATTR_PREFIX: &str = "user.e2b.";

/// Owner and group names by id, read from the sandbox's passwd and group files.
#[derive(Debug, Default, Clone)]
pub struct Names {
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
}

impl Names {
    /// Reads both files; a missing or unreadable file just means numeric names.
    pub fn load(passwd: &Path, group: &Path) -> Self {
        Self {
            users: id_names(passwd),
            groups: id_names(group),
        }
    }

    /// The user name of `uid`, or the number when no passwd line has it (as Go's envd does).
    pub fn user(&self, uid: u32) -> String {
        self.users
            .get(&uid)
            .cloned()
            .unwrap_or_else(|| uid.to_string())
    }

    /// The group name of `gid`, or the number.
    pub fn group(&self, gid: u32) -> String {
        self.groups
            .get(&gid)
            .cloned()
            .unwrap_or_else(|| gid.to_string())
    }
}

/// `name:x:id:...` lines (passwd and group share the first three columns); the first line
/// with an id wins, as with `getpwuid`.
fn id_names(path: &Path) -> HashMap<u32, String> {
    let mut names = HashMap::new();
    let Ok(text) = std::fs::read_to_string(path) else {
        return names;
    };
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let mut fields = line.split(':');
        let (Some(name), Some(_), Some(id)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        if let Ok(id) = id.parse() {
            names.entry(id).or_insert_with(|| name.to_owned());
        }
    }
    names
}

/// Describes `path` (absolute) without following it if it is a symlink.
pub fn entry_info(path: &Path, names: &Names) -> io::Result<EntryInfo> {
    let meta = std::fs::symlink_metadata(path)?;
    let is_symlink = meta.file_type().is_symlink();
    let (file_type, mode, symlink_target) = if is_symlink {
        // Like Go's filepath.EvalSymlinks: the fully resolved target, or the link's own path
        // when it cannot be resolved (dangling or looping links).
        let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
        let (file_type, mode) = match std::fs::metadata(&target) {
            Ok(t) => (file_type_of(&t), t.mode() & 0o777),
            Err(_) => (FileType::Unspecified, 0),
        };
        (file_type, mode, Some(lossy(&target)))
    } else {
        (file_type_of(&meta), meta.mode() & 0o777, None)
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "/".to_owned());
    let modified_time = (meta.mtime() != 0 || meta.mtime_nsec() != 0).then(|| Timestamp {
        seconds: meta.mtime(),
        // The kernel keeps nanoseconds in 0..1e9; clamping keeps this total.
        nanos: meta.mtime_nsec().clamp(0, 999_999_999) as i32,
    });
    Ok(EntryInfo {
        name,
        r#type: file_type as i32,
        path: lossy(path),
        size: i64::try_from(meta.size()).unwrap_or(i64::MAX),
        mode,
        permissions: go_mode_string(meta.mode()),
        owner: names.user(meta.uid()),
        group: names.group(meta.gid()),
        modified_time,
        symlink_target,
        // Best effort, as in envd: a file whose xattrs cannot be read still has an entry.
        metadata: read_metadata(path).unwrap_or_default(),
        is_symlink,
    })
}

/// A path as the protocol's UTF-8 string (undecodable bytes become U+FFFD).
pub fn lossy(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

fn file_type_of(meta: &std::fs::Metadata) -> FileType {
    let ft = meta.file_type();
    if ft.is_file() {
        FileType::File
    } else if ft.is_dir() {
        FileType::Directory
    } else if ft.is_symlink() {
        FileType::Symlink
    } else {
        // Sockets, fifos and devices have no type in the protocol; the SDKs skip them in lists.
        FileType::Unspecified
    }
}

/// Go's `os.FileMode.String()` for a raw `st_mode`: type and special-bit letters in Go's order
/// (`dalTLDpSugct?`, only those Linux can produce), `-` when there are none, then `rwxrwxrwx`.
pub fn go_mode_string(st_mode: u32) -> String {
    let format = st_mode & S_IFMT;
    let mut out = String::with_capacity(12);
    let mut letter = |cond: bool, c: char| {
        if cond {
            out.push(c);
        }
    };
    letter(format == S_IFDIR, 'd');
    letter(format == S_IFLNK, 'L');
    letter(format == S_IFBLK || format == S_IFCHR, 'D');
    letter(format == S_IFIFO, 'p');
    letter(format == S_IFSOCK, 'S');
    letter(st_mode & S_ISUID != 0, 'u');
    letter(st_mode & S_ISGID != 0, 'g');
    letter(format == S_IFCHR, 'c');
    letter(st_mode & S_ISVTX != 0, 't');
    if out.is_empty() {
        out.push('-');
    }
    for (i, c) in "rwxrwxrwx".chars().enumerate() {
        out.push(if st_mode & (1 << (8 - i)) != 0 {
            c
        } else {
            '-'
        });
    }
    out
}

/// The `user.e2b.*` xattrs of `path` (following symlinks, as envd's `xattr.List` does), prefix
/// stripped. Entries that are not UTF-8 are skipped: they cannot travel in a proto string map.
/// A filesystem without xattr support has no metadata.
pub fn read_metadata(path: &Path) -> io::Result<BTreeMap<String, String>> {
    let mut metadata = BTreeMap::new();
    let names = match list_xattrs(path) {
        Ok(names) => names,
        Err(err) if is_xattr_unsupported(&err) => return Ok(metadata),
        Err(err) => return Err(err),
    };
    for name in &names {
        let Some(key) = name.strip_prefix(METADATA_XATTR_PREFIX.as_bytes()) else {
            continue;
        };
        let Ok(key) = std::str::from_utf8(key) else {
            continue;
        };
        let Ok(c_name) = CString::new(name.as_slice()) else {
            continue;
        };
        let value = match get_xattr(path, &c_name) {
            Ok(v) => v,
            // Removed between listing and reading.
            Err(err) if err.raw_os_error() == Some(errno::ENODATA) => continue,
            Err(err) => return Err(err),
        };
        if let Ok(value) = String::from_utf8(value) {
            metadata.insert(key.to_owned(), value);
        }
    }
    Ok(metadata)
}

fn is_xattr_unsupported(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(errno::ENOTSUP))
}

fn list_xattrs(path: &Path) -> io::Result<Vec<Vec<u8>>> {
    Ok(hutch_sys::xattr::list(path)?)
}

fn get_xattr(path: &Path, name: &CString) -> io::Result<Vec<u8>> {
    Ok(hutch_sys::xattr::get(path, name)?)
}

/// Cleans `path` lexically: no `.` components, `..` folded into its parent (never above `/`),
/// no repeated or trailing slashes. Relative input stays relative.
pub fn clean(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::RootDir => out.push("/"),
            Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                if !out.pop() && !out.has_root() {
                    out.push("..");
                }
            }
            Component::Normal(part) => out.push(part),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(if path.has_root() { "/" } else { "." });
    }
    out
}

/// `path` relative to `root` as an event name: `.` for the root itself (Go's `filepath.Rel`).
pub fn relative_name(root: &Path, path: &Path) -> String {
    match path.strip_prefix(root) {
        Ok(rel) if rel.as_os_str().is_empty() => ".".to_owned(),
        Ok(rel) => lossy(rel),
        Err(_) => lossy(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hutch_sys::fs::mode::S_IFREG;

    #[test]
    fn mode_strings_match_go() {
        assert_eq!(go_mode_string(S_IFREG | 0o644), "-rw-r--r--");
        assert_eq!(go_mode_string(S_IFDIR | 0o755), "drwxr-xr-x");
        assert_eq!(go_mode_string(S_IFLNK | 0o777), "Lrwxrwxrwx");
        assert_eq!(go_mode_string(S_IFDIR | 0o1777), "dtrwxrwxrwx");
        assert_eq!(go_mode_string(S_IFCHR | 0o666), "Dcrw-rw-rw-");
        assert_eq!(go_mode_string(S_IFBLK | 0o660), "Drw-rw----");
        assert_eq!(go_mode_string(S_IFIFO | 0o600), "prw-------");
        assert_eq!(go_mode_string(S_IFSOCK | 0o755), "Srwxr-xr-x");
        assert_eq!(go_mode_string(S_IFREG | 0o4755), "urwxr-xr-x");
        assert_eq!(go_mode_string(S_IFDIR | 0o2775), "dgrwxrwxr-x");
    }

    #[test]
    fn clean_folds_dots_and_slashes() {
        assert_eq!(clean(Path::new("/a/./b//../c/")), PathBuf::from("/a/c"));
        assert_eq!(clean(Path::new("/../..")), PathBuf::from("/"));
        assert_eq!(clean(Path::new("a/../..")), PathBuf::from(".."));
        assert_eq!(clean(Path::new("")), PathBuf::from("."));
    }

    #[test]
    fn relative_names() {
        let root = Path::new("/w");
        assert_eq!(relative_name(root, Path::new("/w")), ".");
        assert_eq!(relative_name(root, Path::new("/w/a/b")), "a/b");
    }

    #[test]
    fn names_fall_back_to_numbers() {
        let dir = std::env::temp_dir().join(format!("hutch-fs-names-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("passwd"), "root:x:0:0::/root:/bin/sh\nbad\n").unwrap();
        std::fs::write(dir.join("group"), "wheel:x:10:\n").unwrap();
        let names = Names::load(&dir.join("passwd"), &dir.join("group"));
        assert_eq!(names.user(0), "root");
        assert_eq!(names.user(1000), "1000");
        assert_eq!(names.group(10), "wheel");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
