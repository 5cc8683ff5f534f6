//! The error type of this crate.

use std::path::{Path, PathBuf};

use crate::{SANDBOX_ID_BASE, SANDBOX_ID_COUNT};

/// Everything that can go wrong while resolving or building a template.
///
/// Each message names the failing input (recipe, path, command) and, where
/// there is one, the fix the operator should try.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The recipe cannot be built as written.
    #[error("template recipe {name:?} is invalid: {reason}; fix the recipe")]
    InvalidRecipe {
        /// Name of the offending recipe.
        name: String,
        /// What is wrong with it.
        reason: String,
    },

    /// Building needs root: debootstrap, the build jail, mount and chown all do.
    #[error(
        "building template {name:?} needs root (debootstrap, the build jail, mount and chown all do), \
         but the effective uid is {euid}; run hutch as root or pre-build the template as root"
    )]
    NotRoot {
        /// Name of the recipe that was to be built.
        name: String,
        /// The effective uid we run with.
        euid: u32,
    },

    /// A host tool the build relies on is not installed.
    #[error(
        "`{tool}` was not found in PATH or /usr/sbin; install it on the host \
         (`apt-get install {package}`) and retry"
    )]
    MissingTool {
        /// The executable that is missing.
        tool: &'static str,
        /// The Debian package that provides it.
        package: &'static str,
    },

    /// A filesystem or process operation failed.
    #[error(
        "{action} {path}: {source}; check that the cache directory is writable, \
         on a local filesystem and has free space"
    )]
    Io {
        /// What was being done, e.g. "could not create directory".
        action: String,
        /// The path it was being done to.
        path: PathBuf,
        /// The underlying OS error.
        #[source]
        source: std::io::Error,
    },

    /// debootstrap exited unsuccessfully.
    #[error(
        "debootstrap of suite {suite:?} from mirror {mirror} into {target} failed ({status}); \
         check that the mirror is reachable and that the suite and package names exist. \
         Last output:\n{output}"
    )]
    Debootstrap {
        /// Debian suite that was requested.
        suite: String,
        /// Mirror URL that was used.
        mirror: String,
        /// Directory debootstrap was writing to (already removed).
        target: PathBuf,
        /// Exit status description.
        status: String,
        /// The last lines debootstrap printed, plus the tail of its log.
        output: String,
    },

    /// A command run inside the template's tree (in the build jail) failed.
    #[error(
        "`{command}` in the build jail of template {template:?} ({root}) failed ({status}); \
         fix the recipe step or the package set. Last output:\n{output}"
    )]
    Step {
        /// Name of the recipe being built.
        template: String,
        /// The command line, as run inside the jail.
        command: String,
        /// The root directory of the tree.
        root: PathBuf,
        /// Exit status description.
        status: String,
        /// The last lines the command printed.
        output: String,
    },

    /// A file in the tree is owned by an id the sandbox user namespace cannot map.
    #[error(
        "{path} is owned by uid {uid} gid {gid}, outside the 0..{count} range that sandboxes \
         map (or that range shifted by {base}); change the recipe so that nothing in the \
         image uses such ids",
        count = SANDBOX_ID_COUNT,
        base = SANDBOX_ID_BASE
    )]
    IdOutOfRange {
        /// The offending file (inside the build directory).
        path: PathBuf,
        /// Its owner uid.
        uid: u32,
        /// Its owner gid.
        gid: u32,
    },

    /// Something is still mounted below a directory that was to be deleted.
    #[error(
        "refusing to delete {path}: still mounted below it: {mounts}; \
         unmount them by hand (`umount -R <dir>`) and retry"
    )]
    MountsRemain {
        /// The directory that was to be deleted.
        path: PathBuf,
        /// The mount points that remain, comma separated.
        mounts: String,
    },
}

impl TemplateError {
    /// Builds an [`TemplateError::Io`] mapper for use with `map_err`.
    pub(crate) fn io(
        action: impl Into<String>,
        path: &Path,
    ) -> impl FnOnce(std::io::Error) -> TemplateError {
        let action = action.into();
        let path = path.to_path_buf();
        move |source| TemplateError::Io {
            action,
            path,
            source,
        }
    }
}
