//! A directory tree reached only through a descriptor of its root.
//!
//! Every path is resolved inside the root with `openat2(RESOLVE_IN_ROOT)`: `..` stops at
//! the root, symbolic links resolve as if the root were `/`, and magic links and other
//! mounts are refused. The last component of a path is then worked on relative to its
//! parent's descriptor without following it (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`), and
//! owners and modes are changed through a descriptor of the file itself. So a tree that
//! untrusted code shaped (a volume sandboxes write to) cannot lead an operation outside
//! it, also when the code changes the tree meanwhile.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::{Errno, Result};

/// What a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
    /// Anything else (FIFO, socket, device).
    Other,
}

/// An entry's metadata, as `lstat` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its kind.
    pub kind: Kind,
    /// Size in bytes.
    pub size: u64,
    /// Permission and special bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner (host ids).
    pub uid: u32,
    /// Group (host ids).
    pub gid: u32,
    /// Last access, modification and status change (seconds, nanoseconds).
    pub atime: (i64, u32),
    /// See `atime`.
    pub mtime: (i64, u32),
    /// See `atime`.
    pub ctime: (i64, u32),
    /// Where a symbolic link points.
    pub target: Option<String>,
}

/// Owner and mode given to what is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// Host uid.
    pub uid: u32,
    /// Host gid.
    pub gid: u32,
    /// Permission bits.
    pub mode: u32,
}

/// A directory tree, reached through its root only.
#[derive(Debug)]
pub struct Rooted {
    root: OwnedFd,
}

/// The components of `path` (absolute or not; `.` and empty ones dropped). `..` is kept:
/// resolved in the root, it cannot climb above it, but it cannot be a name to create.
fn components(path: &str) -> Vec<&str> {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect()
}

fn entry_of(st: &rustix::fs::Stat, target: Option<String>) -> Entry {
    let kind = match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => Kind::File,
        FileType::Directory => Kind::Directory,
        FileType::Symlink => Kind::Symlink,
        _ => Kind::Other,
    };
    let t = |s: i64, ns: i64| (s, ns.clamp(0, 999_999_999) as u32);
    Entry {
        kind,
        size: st.st_size as u64,
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        #[allow(clippy::unnecessary_cast)]
        atime: t(st.st_atime as i64, st.st_atime_nsec as i64),
        #[allow(clippy::unnecessary_cast)]
        mtime: t(st.st_mtime as i64, st.st_mtime_nsec as i64),
        #[allow(clippy::unnecessary_cast)]
        ctime: t(st.st_ctime as i64, st.st_ctime_nsec as i64),
        target,
    }
}

impl Rooted {
    /// The tree below the directory `dir` (which the caller trusts).
    pub fn open(dir: &Path) -> Result<Self> {
        let root = rustix::fs::open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Rooted { root })
    }

    /// Opens the path made of `parts` inside the root (the root itself when empty).
    fn resolve(&self, parts: &[&str], flags: OFlags) -> Result<OwnedFd> {
        let rel = if parts.is_empty() {
            ".".to_string()
        } else {
            parts.join("/")
        };
        rustix::fs::openat2(
            &self.root,
            rel.as_str(),
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_XDEV,
        )
    }

    /// The parent directory of `path` and its last component; `None` for the root itself.
    /// A last component of `..` is refused (`EINVAL`).
    fn parent_of<'p>(&self, path: &'p str) -> Result<Option<(OwnedFd, &'p str)>> {
        let parts = components(path);
        let Some((name, dirs)) = parts.split_last() else {
            return Ok(None);
        };
        if *name == ".." {
            return Err(Errno::INVAL);
        }
        let parent = self.resolve(dirs, OFlags::RDONLY | OFlags::DIRECTORY)?;
        Ok(Some((parent, name)))
    }

    fn stat_at(dir: BorrowedFd<'_>, name: &str) -> Result<Entry> {
        let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
        let target = if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
            let t = rustix::fs::readlinkat(dir, name, Vec::new())?;
            Some(t.to_string_lossy().into_owned())
        } else {
            None
        };
        Ok(entry_of(&st, target))
    }

    /// Opens the directory `path` (as `O_PATH`: to mount on).
    pub fn open_dir(&self, path: &str) -> Result<OwnedFd> {
        self.resolve(&components(path), OFlags::PATH | OFlags::DIRECTORY)
    }

    /// The metadata of `path` (a final symbolic link is described, not followed).
    pub fn stat(&self, path: &str) -> Result<Entry> {
        match self.parent_of(path)? {
            None => Ok(entry_of(&rustix::fs::fstat(&self.root)?, None)),
            Some((parent, name)) => Self::stat_at(parent.as_fd(), name),
        }
    }

    /// Opens the regular file `path` for reading (symbolic links resolve inside the root).
    pub fn read(&self, path: &str) -> Result<File> {
        let fd = self.resolve(
            &components(path),
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY,
        )?;
        match FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode) {
            FileType::RegularFile => Ok(File::from(fd)),
            FileType::Directory => Err(Errno::ISDIR),
            _ => Err(Errno::INVAL),
        }
    }

    /// Creates (or, with `replace`, truncates) the regular file `path` for writing, owned
    /// and with the mode `owner` says. Its directory must exist. Without `replace` an
    /// existing file is `EEXIST`; an existing symbolic link is never written through.
    pub fn create(&self, path: &str, replace: bool, owner: Owner) -> Result<File> {
        let (parent, name) = self.parent_of(path)?.ok_or(Errno::ISDIR)?;
        let mut flags = OFlags::WRONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        flags |= if replace { OFlags::TRUNC } else { OFlags::EXCL };
        let fd = rustix::fs::openat(&parent, name, flags, Mode::from_raw_mode(owner.mode))?;
        if FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode) != FileType::RegularFile {
            return Err(Errno::INVAL);
        }
        Self::own(fd.as_fd(), owner.uid, owner.gid, Some(owner.mode))?;
        Ok(File::from(fd))
    }

    /// Makes the directory `path`; with `parents` the missing directories above it too
    /// (and an existing `path` is fine), without them an existing one is `EEXIST`.
    pub fn mkdir(&self, path: &str, parents: bool, owner: Owner) -> Result<()> {
        let parts = components(path);
        if parts.is_empty() {
            return if parents { Ok(()) } else { Err(Errno::EXIST) };
        }
        let from = if parents { 1 } else { parts.len() };
        for end in from..=parts.len() {
            let (name, dirs) = parts[..end].split_last().ok_or(Errno::INVAL)?;
            if *name == ".." {
                return Err(Errno::INVAL);
            }
            let parent = self.resolve(dirs, OFlags::RDONLY | OFlags::DIRECTORY)?;
            match rustix::fs::mkdirat(&parent, *name, Mode::from_raw_mode(owner.mode)) {
                Ok(()) => {}
                Err(Errno::EXIST) if parents => {
                    // Something is there: fine if it is (or leads to) a directory.
                    self.resolve(&parts[..end], OFlags::RDONLY | OFlags::DIRECTORY)?;
                    continue;
                }
                Err(e) => return Err(e),
            }
            let fd = rustix::fs::openat(
                &parent,
                *name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            Self::own(fd.as_fd(), owner.uid, owner.gid, Some(owner.mode))?;
        }
        Ok(())
    }

    fn own(fd: BorrowedFd<'_>, uid: u32, gid: u32, mode: Option<u32>) -> Result<()> {
        rustix::fs::fchown(
            fd,
            Some(rustix::process::Uid::from_raw(uid)),
            Some(rustix::process::Gid::from_raw(gid)),
        )?;
        if let Some(m) = mode {
            rustix::fs::fchmod(fd, Mode::from_raw_mode(m))?;
        }
        Ok(())
    }

    /// Changes the owner and group (each when given) and the mode (when given) of the file
    /// or directory `path`; a symbolic link is refused (`ELOOP`), as are devices, FIFOs and
    /// sockets that cannot be opened.
    pub fn set_owner(
        &self,
        path: &str,
        uid: Option<u32>,
        gid: Option<u32>,
        mode: Option<u32>,
    ) -> Result<Entry> {
        let fd = match self.parent_of(path)? {
            None => self.resolve(&[], OFlags::RDONLY | OFlags::DIRECTORY)?,
            Some((parent, name)) => rustix::fs::openat(
                &parent,
                name,
                OFlags::RDONLY
                    | OFlags::NOFOLLOW
                    | OFlags::NONBLOCK
                    | OFlags::NOCTTY
                    | OFlags::CLOEXEC,
                Mode::empty(),
            )?,
        };
        let st = rustix::fs::fstat(&fd)?;
        Self::own(
            fd.as_fd(),
            uid.unwrap_or(st.st_uid),
            gid.unwrap_or(st.st_gid),
            // chown clears the set-id bits: the mode is set again after it.
            Some(mode.unwrap_or(st.st_mode & 0o7777)),
        )?;
        Ok(entry_of(&rustix::fs::fstat(&fd)?, None))
    }

    /// Removes `path`: a directory with everything below it (never following a symbolic
    /// link), anything else by unlinking it. The root cannot be removed (`EBUSY`).
    pub fn remove(&self, path: &str) -> Result<()> {
        let (parent, name) = self.parent_of(path)?.ok_or(Errno::BUSY)?;
        remove_at(parent.as_fd(), name)
    }

    /// The entries of the directory `path`, with their paths relative to it, down to
    /// `depth` levels (1: its own entries), sorted by path.
    pub fn list(&self, path: &str, depth: u32) -> Result<Vec<(String, Entry)>> {
        let dir = self.resolve(&components(path), OFlags::RDONLY | OFlags::DIRECTORY)?;
        let mut out = Vec::new();
        list_at(dir, "", depth.max(1), &mut out)?;
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

/// The names in the directory `dir` (without `.` and `..`).
fn names(dir: BorrowedFd<'_>) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for e in Dir::read_from(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name != "." && name != ".." {
            out.push(name);
        }
    }
    Ok(out)
}

fn list_at(dir: OwnedFd, prefix: &str, depth: u32, out: &mut Vec<(String, Entry)>) -> Result<()> {
    for name in names(dir.as_fd())? {
        let entry = match Rooted::stat_at(dir.as_fd(), &name) {
            Ok(e) => e,
            // Removed meanwhile.
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(e),
        };
        let rel = format!("{prefix}{name}");
        let is_dir = entry.kind == Kind::Directory;
        out.push((rel.clone(), entry));
        if is_dir && depth > 1 {
            if let Ok(sub) = rustix::fs::openat(
                &dir,
                name.as_str(),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                list_at(sub, &format!("{rel}/"), depth - 1, out)?;
            }
        }
    }
    Ok(())
}

fn remove_at(parent: BorrowedFd<'_>, name: &str) -> Result<()> {
    let st = rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return rustix::fs::unlinkat(parent, name, AtFlags::empty());
    }
    let dir = rustix::fs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    for child in names(dir.as_fd())? {
        match remove_at(dir.as_fd(), &child) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(e),
        }
    }
    rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (tempdir::Dir, Rooted) {
        let d = tempdir::Dir::new();
        let r = Rooted::open(d.path()).expect("open root");
        (d, r)
    }

    mod tempdir {
        /// A directory removed at drop.
        pub struct Dir(std::path::PathBuf);
        impl Dir {
            pub fn new() -> Self {
                let p = std::env::temp_dir().join(format!(
                    "hutch-rooted-{}-{}",
                    std::process::id(),
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos())
                ));
                std::fs::create_dir_all(&p).expect("mkdir");
                Dir(p)
            }
            pub fn path(&self) -> &std::path::Path {
                &self.0
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    fn me() -> Owner {
        Owner {
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
            mode: 0o640,
        }
    }

    #[test]
    fn files_and_directories_are_made_read_listed_and_removed() {
        use std::io::{Read, Write};
        let (_d, r) = tree();
        r.mkdir(
            "/a/b",
            true,
            Owner {
                mode: 0o750,
                ..me()
            },
        )
        .expect("mkdir -p");
        assert_eq!(r.mkdir("/a", false, me()), Err(Errno::EXIST));
        r.mkdir("/a", true, me())
            .expect("existing is fine with parents");
        let mut f = r.create("/a/b/f.txt", false, me()).expect("create");
        f.write_all(b"hello").expect("write");
        drop(f);
        assert_eq!(
            r.create("/a/b/f.txt", false, me()).err(),
            Some(Errno::EXIST)
        );
        assert_eq!(r.create("/nope/f", true, me()).err(), Some(Errno::NOENT));
        let mut s = String::new();
        r.read("a/b/f.txt")
            .expect("read")
            .read_to_string(&mut s)
            .expect("read");
        assert_eq!(s, "hello");
        let e = r.stat("/a/b/f.txt").expect("stat");
        assert_eq!((e.kind, e.size, e.mode), (Kind::File, 5, 0o640));
        assert_eq!(r.stat("/a").expect("stat").mode, 0o750);
        let listed: Vec<String> = r
            .list("/", 3)
            .expect("list")
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert_eq!(listed, ["a", "a/b", "a/b/f.txt"]);
        assert_eq!(r.list("/a", 1).expect("list").len(), 1);
        let e = r
            .set_owner("/a/b/f.txt", None, None, Some(0o600))
            .expect("chmod");
        assert_eq!(e.mode, 0o600);
        r.remove("/a").expect("rm -r");
        assert_eq!(r.stat("/a").err(), Some(Errno::NOENT));
        assert_eq!(r.remove("/").err(), Some(Errno::BUSY));
    }

    #[test]
    fn nothing_leads_outside_the_root() {
        let (d, r) = tree();
        let outside = tempdir::Dir::new();
        let secret = outside.path().join("secret");
        std::fs::write(&secret, b"host").expect("write");
        // `..` stops at the root.
        assert_eq!(r.read("../../../../etc/hostname").err(), Some(Errno::NOENT));
        // A link to an absolute host path resolves inside the root.
        std::os::unix::fs::symlink(&secret, d.path().join("link")).expect("symlink");
        assert_eq!(r.read("/link").err(), Some(Errno::NOENT));
        // Writing, owning and removing through a final link touch the link only.
        assert_eq!(r.create("/link", true, me()).err(), Some(Errno::LOOP));
        assert_eq!(
            r.set_owner("/link", None, None, Some(0o777)).err(),
            Some(Errno::LOOP)
        );
        assert_eq!(r.stat("/link").expect("lstat").kind, Kind::Symlink);
        // A directory link in the middle of a path resolves inside the root as well.
        std::os::unix::fs::symlink(outside.path(), d.path().join("dirlink")).expect("symlink");
        assert_eq!(r.read("/dirlink/secret").err(), Some(Errno::NOENT));
        assert_eq!(
            r.create("/dirlink/new", true, me()).err(),
            Some(Errno::NOENT)
        );
        r.remove("/dirlink").expect("unlink the link");
        r.remove("/link").expect("unlink the link");
        assert_eq!(std::fs::read(&secret).expect("still there"), b"host");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&secret).expect("stat").permissions(),
        );
        assert_ne!(mode & 0o777, 0o777);
    }
}
