//! The runtime's error type.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while creating, inspecting or destroying a sandbox.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A file or directory operation on the host failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The host path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A system call failed.
    #[error("{op} failed: {source}")]
    Sys {
        /// The system call, with its argument when useful.
        op: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// An external tool (ip, nft, mkfs.ext4) failed.
    #[error("`{cmd}` failed: {stderr}; is it installed (setup/install-deps.sh) and are we root?")]
    Command {
        /// The command line.
        cmd: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// No supported cgroup hierarchy was found.
    #[error("no usable cgroup hierarchy: {0}")]
    Cgroup(String),
    /// The spawn helper reported a failure while building the sandbox.
    #[error("starting the sandbox failed: {0}")]
    Spawn(String),
    /// The spawn helper's own report of what failed.
    #[error("{0}")]
    Helper(String),
    /// The seccomp filter could not be compiled.
    #[error("seccomp filter: {0}")]
    Seccomp(String),
    /// Every network slot is taken.
    #[error("no free network slot for a new sandbox (all {0} in use)")]
    NoSlot(u32),
}

impl RuntimeError {
    /// Wraps an I/O error with the operation and path that caused it.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        RuntimeError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Wraps the error of a system call (as hutch-sys reports it) with what was being done.
    pub fn sys(op: impl Into<String>, source: impl Into<io::Error>) -> Self {
        RuntimeError::Sys {
            op: op.into(),
            source: source.into(),
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, RuntimeError>;
