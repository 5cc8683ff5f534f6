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
//! Building needs root, the host package `debootstrap` and network access to
//! the recipe's Debian mirror (and to what the recipe's steps download).
//! Only debootstrap's first stage (download, signature check, unpacking)
//! runs as the host's root; every package script and every later step runs
//! in the build jail ([`jail`]), as an unprivileged host user.

#![warn(missing_docs)]

mod cache;
mod debootstrap;
mod error;
pub mod jail;
mod lock;
mod mounts;
mod process;
mod progress;
mod recipe;
mod setup;
mod shift;
mod stale;
#[cfg(test)]
mod testutil;

use std::path::{Path, PathBuf};

pub use debootstrap::find_tool;
pub use error::TemplateError;
pub use jail::JailHelper;
pub use progress::Progress;
pub use recipe::{
    default_recipes, Recipe, BASE_PACKAGES, DEFAULT_MIRROR, DEFAULT_SUITE, RECIPE_FORMAT,
};
pub use setup::{HUTCH_DIR, USER_ID, USER_NAME};
pub use shift::shift_tree_from;

use cache::{complete, ensure_built_with};

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
///
/// The recipe's steps run in the build jail through `helper` (see [`jail`]).
pub fn ensure_built(
    cache_dir: &Path,
    recipe: &Recipe,
    helper: &JailHelper,
    progress: &mut dyn FnMut(Progress),
) -> Result<BuiltTemplate, TemplateError> {
    ensure_built_with(
        cache_dir,
        recipe,
        progress,
        &mut |rootfs, cache_dir, recipe, progress| {
            build_rootfs(rootfs, cache_dir, recipe, helper, progress)
        },
    )
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

/// The real build: debootstrap's first stage, id shift, its second stage and
/// the setup in the jail, a last shift of what the host side wrote.
fn build_rootfs(
    rootfs: &Path,
    cache_dir: &Path,
    recipe: &Recipe,
    helper: &JailHelper,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), TemplateError> {
    let euid = hutch_sys::creds::effective_uid();
    if euid != 0 {
        return Err(TemplateError::NotRoot {
            name: recipe.name.clone(),
            euid,
        });
    }
    let debootstrap_bin = debootstrap::find_tool("debootstrap", "debootstrap")?;

    let debs = cache_dir.join("debs");
    std::fs::create_dir_all(&debs)
        .map_err(TemplateError::io("could not create directory", &debs))?;
    let mut tracker = {
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
        debootstrap::run(&debootstrap_bin, recipe, rootfs, &debs, progress)?
    };

    // The tree belongs to the sandbox id range before any package script runs:
    // the jail's root is that range's first id, and what the scripts and steps
    // make is owned right.
    shift(rootfs, &recipe.name, progress)?;
    setup::second_stage(rootfs, recipe, helper, &mut tracker, progress)?;
    setup::configure(rootfs, recipe, helper, progress)?;
    // Files the host side wrote (hostname, hosts, /.hutch) are root's yet.
    shift(rootfs, &recipe.name, progress)?;
    Ok(())
}

fn shift(
    rootfs: &Path,
    name: &str,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), TemplateError> {
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
