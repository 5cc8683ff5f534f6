//! Where a process starts: the requested working directory, resolved against the user's home.

use std::path::{Component, Path, PathBuf};

use crate::connect::ConnectError;
use crate::users::User;

/// Resolves a requested working directory: absent means home, `~` and relative paths are taken
/// from home, and the result must exist.
pub(super) fn resolve_cwd(requested: Option<&str>, user: &User) -> Result<PathBuf, ConnectError> {
    let requested = requested.unwrap_or("");
    let path = if requested.is_empty() {
        crate::users::default_workdir()
            .filter(|w| w.is_dir())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| user.home.clone())
    } else if let Some(rest) = requested.strip_prefix('~') {
        if !(rest.is_empty() || rest.starts_with('/')) {
            return Err(ConnectError::invalid_argument(format!(
                "cannot expand '{requested}': only '~' and '~/...' (the user's own home) are supported"
            )));
        }
        user.home.join(rest.trim_start_matches('/'))
    } else {
        user.home.join(requested)
    };
    let path = lexically_clean(&path);
    if std::fs::metadata(&path).is_err() {
        return Err(ConnectError::invalid_argument(format!(
            "cwd '{}' does not exist",
            path.display()
        )));
    }
    Ok(path)
}

/// Resolves `.` and `..` without touching the filesystem (like Go's `filepath.Clean`).
fn lexically_clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for part in path.components() {
        match part {
            Component::Normal(p) => out.push(p),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}
