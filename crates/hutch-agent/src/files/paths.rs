//! Turning the paths clients send into absolute paths, and creating missing parent directories
//! owned by the calling user.

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};

use crate::users::User;

/// Why a client's path cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// `~name/...`: other users' homes are not expanded (as in envd).
    #[error("cannot expand user-specific home dir in '{0}'")]
    OtherHome(String),
    /// The path contains a NUL byte, which no file name can.
    #[error("path '{0}' contains a NUL byte")]
    Nul(String),
}

/// Resolves `path` for `user`: `~` and `~/x` expand to the home directory, a relative path is
/// taken relative to the home directory (and `..` in it resolved lexically), and an absolute path
/// is used as given. An empty path is the home directory.
pub fn resolve(path: &str, user: &User) -> Result<PathBuf, PathError> {
    if path.contains('\0') {
        return Err(PathError::Nul(path.escape_default().to_string()));
    }
    let expanded: PathBuf = match path.strip_prefix('~') {
        Some("") => user.home.clone(),
        Some(rest) if rest.starts_with('/') => user.home.join(rest.trim_start_matches('/')),
        Some(_) => return Err(PathError::OtherHome(path.to_owned())),
        None => PathBuf::from(path),
    };
    if expanded.is_absolute() && !path.starts_with('~') {
        return Ok(expanded);
    }
    Ok(clean(&user.home.join(expanded)))
}

/// Lexically normalises an absolute path: drops `.` and empty components and applies `..`
/// (never above `/`).
pub fn clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// Why the parent directories of a target could not be made.
#[derive(Debug, thiserror::Error)]
pub enum EnsureDirsError {
    /// Something on the way is not a directory.
    #[error("path is a file: {0}")]
    NotADirectory(PathBuf),
    /// A system call failed.
    #[error("failed to {what} directory '{path}': {source}")]
    Io {
        /// `stat`, `create` or `chown`.
        what: &'static str,
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// Creates every missing directory of `dir` (mode 0755 before the umask) and gives the ones it
/// created to `uid:gid`. Existing directories keep their owner.
pub fn ensure_dirs(dir: &Path, uid: u32, gid: u32) -> Result<(), EnsureDirsError> {
    let mut ancestors: Vec<&Path> = dir.ancestors().collect();
    ancestors.reverse();
    for sub in ancestors {
        if sub.as_os_str().is_empty() || sub == Path::new("/") {
            continue;
        }
        match std::fs::metadata(sub) {
            Ok(meta) if meta.is_dir() => continue,
            Ok(_) => return Err(EnsureDirsError::NotADirectory(sub.to_owned())),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(EnsureDirsError::Io {
                    what: "stat",
                    path: sub.to_owned(),
                    source,
                })
            }
        }
        match std::fs::DirBuilder::new().mode(0o755).create(sub) {
            Ok(()) => {}
            // Lost a race with another upload: fine as long as it is a directory (checked on the
            // next component, or by the caller's open).
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(EnsureDirsError::Io {
                    what: "create",
                    path: sub.to_owned(),
                    source,
                })
            }
        }
        // Chown also when another request created it a moment ago: it may not have chowned yet,
        // and chown is idempotent.
        std::os::unix::fs::chown(sub, Some(uid), Some(gid)).map_err(|source| {
            EnsureDirsError::Io {
                what: "chown",
                path: sub.to_owned(),
                source,
            }
        })?;
    }
    Ok(())
}

impl EnsureDirsError {
    /// The OS error behind this, if any (to tell "disk full" apart).
    pub fn os_error(&self) -> Option<&io::Error> {
        match self {
            EnsureDirsError::Io { source, .. } => Some(source),
            EnsureDirsError::NotADirectory(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> User {
        User {
            name: "user".into(),
            uid: 1000,
            gid: 1000,
            home: PathBuf::from("/home/user"),
            groups: vec![1000],
        }
    }

    #[test]
    fn resolves_like_envd() {
        let u = user();
        let r = |p: &str| resolve(p, &u).map(|p| p.display().to_string());
        assert_eq!(r("a.txt").unwrap(), "/home/user/a.txt");
        assert_eq!(r("d/../b.txt").unwrap(), "/home/user/b.txt");
        assert_eq!(r("../../../etc/x").unwrap(), "/etc/x");
        assert_eq!(r("").unwrap(), "/home/user");
        assert_eq!(r("~").unwrap(), "/home/user");
        assert_eq!(r("~/x/./y").unwrap(), "/home/user/x/y");
        assert_eq!(r("/tmp/x").unwrap(), "/tmp/x");
        assert!(matches!(r("~root/x"), Err(PathError::OtherHome(_))));
        assert!(matches!(r("a\0b"), Err(PathError::Nul(_))));
    }
}
