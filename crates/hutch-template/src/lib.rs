//! Builds and caches the root filesystems that hutch sandboxes run on.
//!
//! A template is a Debian tree made by debootstrap from a [`Recipe`], set up
//! for sandboxes (an unprivileged `user` with passwordless sudo, an empty
//! `/.hutch/hutch-agent` bind-mount target, empty `/proc`, `/sys`, `/dev`)
//! and re-owned so that its ids already match the sandbox user namespace
//! (inside id `n` is host id [`SANDBOX_ID_BASE`]` + n`). The runtime uses the
//! tree read-only as the lower layer of each sandbox's overlayfs.
//!
//! Built trees live in `<cache_dir>/templates/<key>/rootfs`, where the key is
//! a hash of the recipe's content ([`Recipe::key`]), so recipes that differ
//! only in name share one tree and a changed recipe never reuses a stale one.
//! [`ensure_built`] returns a cached tree at once and builds it otherwise.
//!
//! Building needs root and the host packages `debootstrap` and `coreutils`
//! (for `chroot`), plus network access to the recipe's Debian mirror.

#![warn(missing_docs)]

mod debootstrap;
mod error;
mod lock;
mod mounts;
mod process;
mod progress;
mod recipe;
mod setup;
mod shift;
#[cfg(test)]
mod testutil;

use std::fs::File;
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

pub use error::TemplateError;
pub use progress::Progress;
pub use recipe::{
    default_recipes, Recipe, BASE_PACKAGES, DEFAULT_MIRROR, DEFAULT_SUITE, RECIPE_FORMAT,
};
pub use setup::{HUTCH_DIR, USER_ID, USER_NAME};

/// Host uid/gid that uid/gid 0 inside every sandbox maps to; inside ids
/// `0..SANDBOX_ID_COUNT` map to `SANDBOX_ID_BASE..SANDBOX_ID_BASE + SANDBOX_ID_COUNT`.
pub const SANDBOX_ID_BASE: u32 = 1_000_000;

/// Number of ids mapped into every sandbox user namespace.
pub const SANDBOX_ID_COUNT: u32 = 65_536;

/// Name of the marker file next to `rootfs` in a template directory. It is
/// written last, so a directory with a valid marker holds a complete tree.
pub const MARKER_FILE: &str = ".hutch-template.json";

/// A template tree ready for use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltTemplate {
    /// The recipe name it was requested under (several names may share a tree).
    pub name: String,
    /// The recipe's cache key ([`Recipe::key`]).
    pub key: String,
    /// The root directory of the tree; treat it as read-only.
    pub rootfs: PathBuf,
}

/// Contents of [`MARKER_FILE`].
#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    format: u32,
    key: String,
    /// Name of the recipe that happened to build the tree.
    name: String,
    recipe: Recipe,
    id_base: u32,
    id_count: u32,
    built_at: String,
    build_seconds: f64,
}

/// Returns the tree for `recipe`, building it first if
/// `<cache_dir>/templates/<key>` holds no complete one.
///
/// A cached tree is returned at once, without root. Otherwise (as root) the
/// build runs in `<cache_dir>/templates/.build-<key>-<pid>` and is renamed
/// into place when complete, calling `progress` throughout. A lock file per
/// key makes concurrent callers (threads or processes) wait for one build
/// rather than duplicate it. Downloaded packages are kept in
/// `<cache_dir>/debs` so later builds download less; delete it to reclaim
/// space.
pub fn ensure_built(
    cache_dir: &Path,
    recipe: &Recipe,
    progress: &mut dyn FnMut(Progress),
) -> Result<BuiltTemplate, TemplateError> {
    ensure_built_with(cache_dir, recipe, progress, &mut build_rootfs)
}

/// Returns the tree for `recipe` if it is already built, without building,
/// locking or needing root.
pub fn find_built(cache_dir: &Path, recipe: &Recipe) -> Option<BuiltTemplate> {
    let key = recipe.key();
    // Report the same absolute path a build would have returned.
    let cache_dir = cache_dir
        .canonicalize()
        .unwrap_or_else(|_| cache_dir.to_path_buf());
    complete(&cache_dir.join("templates").join(&key), recipe, &key)
}

/// Produces a complete tree at the given rootfs path (which does not exist
/// yet). Swappable so the caching logic can be tested without debootstrap.
type Builder<'a> =
    dyn FnMut(&Path, &Path, &Recipe, &mut dyn FnMut(Progress)) -> Result<(), TemplateError> + 'a;

fn ensure_built_with(
    cache_dir: &Path,
    recipe: &Recipe,
    progress: &mut dyn FnMut(Progress),
    build: &mut Builder<'_>,
) -> Result<BuiltTemplate, TemplateError> {
    recipe.validate()?;
    let key = recipe.key();
    let name = recipe.name.as_str();

    // Fast path: no lock, no writes, works for non-root readers.
    if let Some(built) = find_built(cache_dir, recipe) {
        progress(Progress::new(
            name,
            "done",
            1,
            1,
            "template already built".into(),
        ));
        return Ok(built);
    }

    let templates_rel = cache_dir.join("templates");
    std::fs::create_dir_all(&templates_rel).map_err(TemplateError::io(
        "could not create directory",
        &templates_rel,
    ))?;
    // Absolute and symlink-free: debootstrap needs an absolute --cache-dir,
    // and mount points are matched against /proc/self/mountinfo paths.
    let cache_dir = cache_dir
        .canonicalize()
        .map_err(TemplateError::io("could not resolve", cache_dir))?;
    let templates = cache_dir.join("templates");
    let final_dir = templates.join(&key);

    let lock_path = templates.join(format!("{key}.lock"));
    let _lock = lock::lock(&lock_path, &mut || {
        tracing::info!(template = name, key = %key, "waiting for another build of this template");
        progress(Progress::new(
            name,
            "wait",
            0,
            1,
            "waiting for another process building the same template".into(),
        ));
    })?;
    // Whoever held the lock may just have finished it.
    if let Some(built) = complete(&final_dir, recipe, &key) {
        progress(Progress::new(
            name,
            "done",
            1,
            1,
            "template built by another process".into(),
        ));
        return Ok(built);
    }

    progress(Progress::new(
        name,
        "prepare",
        0,
        1,
        "removing stale build directories".into(),
    ));
    remove_stale_builds(&templates, &key);
    // A directory without a valid marker is a damaged entry, not a template.
    if std::fs::symlink_metadata(&final_dir).is_ok() {
        tracing::warn!(dir = %final_dir.display(), "removing incomplete template directory");
        mounts::remove_tree(&final_dir)?;
    }
    let build_dir = templates.join(format!(".build-{key}-{}", std::process::id()));
    mounts::remove_tree(&build_dir)?;
    std::fs::create_dir(&build_dir)
        .map_err(TemplateError::io("could not create directory", &build_dir))?;
    let mut guard = BuildDirGuard {
        dir: Some(build_dir.clone()),
    };
    progress(Progress::new(
        name,
        "prepare",
        1,
        1,
        format!("building in {}", build_dir.display()),
    ));

    let started = Instant::now();
    tracing::info!(template = name, key = %key, "building template");
    build(&build_dir.join("rootfs"), &cache_dir, recipe, progress)?;

    progress(Progress::new(
        name,
        "finalize",
        0,
        2,
        "flushing the tree to disk".into(),
    ));
    // The marker promises a complete tree, also after a power cut: flush
    // the tree before the marker exists.
    sync_filesystem(&build_dir)?;
    let marker = Marker {
        format: RECIPE_FORMAT,
        key: key.clone(),
        name: name.to_string(),
        recipe: recipe.clone(),
        id_base: SANDBOX_ID_BASE,
        id_count: SANDBOX_ID_COUNT,
        built_at: chrono::Utc::now().to_rfc3339(),
        build_seconds: started.elapsed().as_secs_f64(),
    };
    write_marker(&build_dir, &marker)?;
    progress(Progress::new(
        name,
        "finalize",
        1,
        2,
        "moving the tree into place".into(),
    ));
    std::fs::rename(&build_dir, &final_dir).map_err(TemplateError::io(
        "could not rename build directory to",
        &final_dir,
    ))?;
    guard.dir = None;
    fsync_path(&templates)?;

    let built = BuiltTemplate {
        name: name.to_string(),
        key: key.clone(),
        rootfs: final_dir.join("rootfs"),
    };
    tracing::info!(
        template = name,
        key = %key,
        seconds = marker.build_seconds,
        rootfs = %built.rootfs.display(),
        "template built"
    );
    progress(Progress::new(
        name,
        "done",
        1,
        1,
        format!("template ready in {:.0} s", marker.build_seconds),
    ));
    Ok(built)
}

/// The real build: debootstrap, chroot setup, id shift.
fn build_rootfs(
    rootfs: &Path,
    cache_dir: &Path,
    recipe: &Recipe,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), TemplateError> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Err(TemplateError::NotRoot {
            name: recipe.name.clone(),
            euid,
        });
    }
    let debootstrap_bin = debootstrap::find_tool("debootstrap", "debootstrap")?;
    let chroot_bin = debootstrap::find_tool("chroot", "coreutils")?;

    let debs = cache_dir.join("debs");
    std::fs::create_dir_all(&debs)
        .map_err(TemplateError::io("could not create directory", &debs))?;
    {
        // Builds of different keys share the .deb cache; debootstrap does
        // not expect company in it.
        let _debs_lock = lock::lock(&cache_dir.join("debs.lock"), &mut || {
            progress(Progress::new(
                &recipe.name,
                "wait",
                0,
                1,
                "waiting for another build using the package cache".into(),
            ));
        })?;
        debootstrap::run(&debootstrap_bin, recipe, rootfs, &debs, progress)?;
    }

    setup::configure(rootfs, recipe, &chroot_bin, progress)?;

    let name = recipe.name.as_str();
    shift::shift_tree(
        rootfs,
        SANDBOX_ID_BASE,
        SANDBOX_ID_COUNT,
        &mut |done, total| {
            progress(Progress::new(
                name,
                "shift",
                done,
                total,
                format!("re-owning files for the sandbox user namespace (+{SANDBOX_ID_BASE})"),
            ));
        },
    )?;
    Ok(())
}

/// The built template in `dir` if its marker is valid for `key`.
fn complete(dir: &Path, recipe: &Recipe, key: &str) -> Option<BuiltTemplate> {
    let text = std::fs::read_to_string(dir.join(MARKER_FILE)).ok()?;
    let marker: Marker = serde_json::from_str(&text).ok()?;
    let rootfs = dir.join("rootfs");
    let ok = marker.key == key && marker.format == RECIPE_FORMAT && rootfs.is_dir();
    ok.then(|| BuiltTemplate {
        name: recipe.name.clone(),
        key: key.to_string(),
        rootfs,
    })
}

/// Writes the marker via a temporary file so it is never seen half-written.
fn write_marker(build_dir: &Path, marker: &Marker) -> Result<(), TemplateError> {
    let path = build_dir.join(MARKER_FILE);
    let tmp = build_dir.join(format!("{MARKER_FILE}.tmp"));
    let json = serde_json::to_vec_pretty(marker).map_err(|e| {
        TemplateError::io("could not serialise marker", &path)(std::io::Error::other(e))
    })?;
    let mut f = File::create(&tmp).map_err(TemplateError::io("could not create", &tmp))?;
    f.write_all(&json)
        .and_then(|()| f.sync_all())
        .map_err(TemplateError::io("could not write", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(TemplateError::io("could not rename marker to", &path))?;
    fsync_path(build_dir)
}

/// fsyncs a file or directory, e.g. to persist a rename.
fn fsync_path(path: &Path) -> Result<(), TemplateError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(TemplateError::io("could not sync", path))
}

/// Flushes the whole filesystem holding `path`: one syncfs is far cheaper
/// than fsyncing the tens of thousands of files of a tree one by one.
fn sync_filesystem(path: &Path) -> Result<(), TemplateError> {
    let f = File::open(path).map_err(TemplateError::io("could not open", path))?;
    // SAFETY: the descriptor is owned by `f`, which outlives the call.
    let rc = unsafe { libc::syncfs(f.as_raw_fd()) };
    if rc != 0 {
        return Err(TemplateError::io("could not sync filesystem of", path)(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Deletes `.build-<key>-<pid>[...]` directories left by builds that died.
///
/// Ours (`held_key`, whose lock we hold) are stale whoever made them. Others
/// are removed only if their pid is dead *and* their key's lock is free, so
/// a live build in another pid namespace is never pulled from under it.
/// Failures are logged, not fatal: they only cost disk space.
fn remove_stale_builds(templates: &Path, held_key: &str) {
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
    // SAFETY: signal 0 only checks for existence and permission; it sends
    // nothing and touches no memory.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Deletes the build directory (unmounting first) unless the build reached
/// the rename, so a failed or panicking build leaves nothing behind.
struct BuildDirGuard {
    dir: Option<PathBuf>,
}

impl Drop for BuildDirGuard {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            tracing::info!(dir = %dir.display(), "removing failed build directory");
            if let Err(e) = mounts::remove_tree(&dir) {
                tracing::error!(dir = %dir.display(), error = %e, "could not remove failed build directory");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn fake_builder(
        calls: Arc<AtomicUsize>,
        fail: bool,
    ) -> impl FnMut(&Path, &Path, &Recipe, &mut dyn FnMut(Progress)) -> Result<(), TemplateError>
    {
        move |rootfs, cache_dir, recipe, progress| {
            assert!(cache_dir.is_absolute());
            calls.fetch_add(1, Ordering::SeqCst);
            std::fs::create_dir_all(rootfs.join("etc")).expect("mkdir");
            std::fs::write(rootfs.join("etc/hostname"), "sandbox\n").expect("write");
            progress(Progress::new(
                &recipe.name,
                "install",
                1,
                2,
                "working".into(),
            ));
            std::thread::sleep(std::time::Duration::from_millis(150));
            if fail {
                return Err(TemplateError::InvalidRecipe {
                    name: recipe.name.clone(),
                    reason: "fake failure".into(),
                });
            }
            Ok(())
        }
    }

    fn dead_pid() -> i32 {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id() as i32;
        child.wait().expect("wait");
        pid
    }

    #[test]
    fn builds_once_and_shares_tree_between_names() {
        let tmp = TempDir::new("ensure");
        let calls = Arc::new(AtomicUsize::new(0));
        // Two names for the same content.
        let base = default_recipes().remove(0);
        let alias = Recipe {
            name: "alias".into(),
            ..base.clone()
        };
        let recipes = [base, alias];
        let mut reports = Vec::new();
        let mut b = fake_builder(calls.clone(), false);
        let first = ensure_built_with(tmp.path(), &recipes[0], &mut |p| reports.push(p), &mut b)
            .expect("build");
        assert_eq!(first.name, "base");
        assert_eq!(first.key, recipes[0].key());
        assert!(first.rootfs.join("etc/hostname").is_file());
        assert_eq!(reports.last().map(|p| p.phase.as_str()), Some("done"));

        let marker = first.rootfs.parent().expect("parent").join(MARKER_FILE);
        let m: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(marker).expect("marker")).expect("json");
        assert_eq!(m["key"], first.key);
        assert_eq!(m["recipe"]["suite"], "bookworm");

        let t = Instant::now();
        let second =
            ensure_built_with(tmp.path(), &recipes[1], &mut |_| {}, &mut b).expect("cached");
        assert!(t.elapsed().as_millis() < 100);
        assert_eq!(second.name, "alias");
        assert_eq!(second.rootfs, first.rootfs);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(find_built(tmp.path(), &recipes[1]), Some(second));

        let leftovers: Vec<_> = std::fs::read_dir(tmp.path().join("templates"))
            .expect("list")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".build-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn failed_build_leaves_nothing() {
        let tmp = TempDir::new("ensure-fail");
        let calls = Arc::new(AtomicUsize::new(0));
        let recipe = default_recipes().remove(0);
        let mut b = fake_builder(calls.clone(), true);
        let err = ensure_built_with(tmp.path(), &recipe, &mut |_| {}, &mut b).expect_err("fails");
        assert!(err.to_string().contains("fake failure"));
        let names: Vec<_> = std::fs::read_dir(tmp.path().join("templates"))
            .expect("list")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![format!("{}.lock", recipe.key())]);
        assert!(find_built(tmp.path(), &recipe).is_none());
    }

    #[test]
    fn concurrent_callers_build_once() {
        let tmp = TempDir::new("ensure-conc");
        let calls = Arc::new(AtomicUsize::new(0));
        let dir = tmp.path().to_path_buf();
        let base = default_recipes().remove(0);
        let alias = Recipe {
            name: "alias".into(),
            ..base.clone()
        };
        let handles: Vec<_> = [base, alias]
            .into_iter()
            .map(|r| {
                let calls = calls.clone();
                let dir = dir.clone();
                std::thread::spawn(move || {
                    let mut b = fake_builder(calls, false);
                    ensure_built_with(&dir, &r, &mut |_| {}, &mut b).expect("build")
                })
            })
            .collect();
        let built: Vec<BuiltTemplate> = handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect();
        assert_eq!(built[0].rootfs, built[1].rootfs);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn removes_stale_build_dirs_of_dead_processes_only() {
        let tmp = TempDir::new("ensure-stale");
        let templates = tmp.path().join("templates");
        let recipe = default_recipes().remove(0);
        let key = recipe.key();
        let dead = dead_pid();
        let own = std::process::id();
        let stale_same = templates.join(format!(".build-{key}-{dead}"));
        let stale_other = templates.join(format!(".build-abc123-{dead}"));
        let live_other = templates.join(format!(".build-abc456-{own}"));
        let unrelated = templates.join(".build-notakey-x");
        for d in [&stale_same, &stale_other, &live_other, &unrelated] {
            std::fs::create_dir_all(d.join("rootfs/etc")).expect("mkdir");
        }
        let mut b = fake_builder(Arc::new(AtomicUsize::new(0)), false);
        ensure_built_with(tmp.path(), &recipe, &mut |_| {}, &mut b).expect("build");
        assert!(!stale_same.exists());
        assert!(!stale_other.exists());
        assert!(live_other.exists());
        assert!(unrelated.exists());
    }

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

    #[test]
    fn rejects_invalid_recipe_before_touching_disk() {
        let tmp = TempDir::new("ensure-invalid");
        let mut r = default_recipes().remove(0);
        r.packages.push("Bad Name".into());
        let mut b = fake_builder(Arc::new(AtomicUsize::new(0)), false);
        let err = ensure_built_with(tmp.path(), &r, &mut |_| {}, &mut b).expect_err("invalid");
        assert!(matches!(err, TemplateError::InvalidRecipe { .. }));
        assert!(!tmp.path().join("templates").exists());
    }
}
