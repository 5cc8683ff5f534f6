//! Removing the build directories of builds that died.

use std::path::Path;

use crate::{lock, mounts};

/// Deletes `.build-<key>-<pid>[...]` directories left by builds that died.
///
/// Ours (`held_key`, whose lock we hold) are stale whoever made them. Others
/// are removed only if their pid is dead *and* their key's lock is free, so
/// a live build in another pid namespace is never pulled from under it.
/// Failures are logged, not fatal: they only cost disk space.
pub(crate) fn remove_stale_builds(templates: &Path, held_key: &str) {
    let Ok(entries) = std::fs::read_dir(templates) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some((key, pid)) = parse_build_dir_name(&file_name.to_string_lossy()) else {
            continue;
        };
        let path = entry.path();
        let _other_lock = if key == held_key {
            None
        } else {
            if pid_alive(pid) {
                continue;
            }
            match lock::try_lock(&templates.join(format!("{key}.lock"))) {
                Ok(Some(l)) => Some(l),
                _ => continue,
            }
        };
        tracing::info!(dir = %path.display(), "removing stale build directory");
        if let Err(e) = mounts::remove_tree(&path) {
            tracing::warn!(dir = %path.display(), error = %e, "could not remove stale build directory");
        }
    }
}

/// Splits `.build-<key>-<pid>[-suffix]` into key and pid.
fn parse_build_dir_name(name: &str) -> Option<(String, i32)> {
    let rest = name.strip_prefix(".build-")?;
    let mut parts = rest.split('-');
    let key = parts.next()?;
    let pid = parts.next()?.parse::<i32>().ok()?;
    let key_ok = !key.is_empty() && key.chars().all(|c| c.is_ascii_hexdigit());
    (key_ok && pid > 0).then(|| (key.to_string(), pid))
}

fn pid_alive(pid: i32) -> bool {
    hutch_sys::signal::exists(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_build_dir_names() {
        assert_eq!(
            parse_build_dir_name(".build-ab12-42"),
            Some(("ab12".into(), 42))
        );
        assert_eq!(
            parse_build_dir_name(".build-ab12-42-old"),
            Some(("ab12".into(), 42))
        );
        assert_eq!(parse_build_dir_name(".build-ab12-x"), None);
        assert_eq!(parse_build_dir_name("ab12"), None);
        assert_eq!(parse_build_dir_name(".build-zz-1"), None);
    }
}
