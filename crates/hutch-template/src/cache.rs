//! The template cache: one build per key at a time, in a temporary directory that becomes
//! `<cache_dir>/templates/<key>` by rename once its marker is written.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::stale::remove_stale_builds;
use crate::{
    find_built, lock, mounts, BuiltTemplate, Progress, Recipe, TemplateError, MARKER_FILE,
    RECIPE_FORMAT, SANDBOX_ID_BASE, SANDBOX_ID_COUNT,
};

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

/// Produces a complete tree at the given rootfs path (which does not exist
/// yet). Swappable so the caching logic can be tested without debootstrap.
type Builder<'a> =
    dyn FnMut(&Path, &Path, &Recipe, &mut dyn FnMut(Progress)) -> Result<(), TemplateError> + 'a;

pub(crate) fn ensure_built_with(
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

/// The built template in `dir` if its marker is valid for `key`.
pub(crate) fn complete(dir: &Path, recipe: &Recipe, key: &str) -> Option<BuiltTemplate> {
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
    hutch_sys::fs::syncfs(&f)
        .map_err(|e| TemplateError::io("could not sync filesystem of", path)(e.into()))
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
    use crate::default_recipes;
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
