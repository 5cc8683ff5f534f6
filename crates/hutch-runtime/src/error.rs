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
    /// The host has run out of something sandboxes need (loop devices); the request may
    /// succeed later, when other sandboxes have gone. Servers answer it with "retry" (503).
    #[error("the host is out of {0}; retry later")]
    Exhausted(String),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_name_the_operation_and_path() {
        let e = RuntimeError::io(
            "mkdir",
            "/sys/fs/cgroup/memory/hutch",
            io::Error::from_raw_os_error(libc::EACCES),
        );
        assert_eq!(
            e.to_string(),
            "mkdir /sys/fs/cgroup/memory/hutch: Permission denied (os error 13)"
        );
    }

    #[test]
    fn command_errors_point_at_the_install_script() {
        let e = RuntimeError::Command {
            cmd: "nft -f -".into(),
            stderr: "Operation not permitted".into(),
        };
        assert_eq!(
            e.to_string(),
            "`nft -f -` failed: Operation not permitted; is it installed (setup/install-deps.sh) and are we root?"
        );
    }

    #[test]
    fn helper_reports_pass_through_unchanged_and_slots_say_how_many() {
        assert_eq!(
            RuntimeError::Helper("pivot_root: EINVAL".into()).to_string(),
            "pivot_root: EINVAL"
        );
        assert_eq!(
            RuntimeError::NoSlot(64).to_string(),
            "no free network slot for a new sandbox (all 64 in use)"
        );
        assert_eq!(
            RuntimeError::Exhausted("loop devices (LOOP_CTL_GET_FREE: ENOSPC)".into()).to_string(),
            "the host is out of loop devices (LOOP_CTL_GET_FREE: ENOSPC); retry later"
        );
        assert_eq!(
            RuntimeError::Sys {
                op: "setns".into(),
                source: io::Error::from_raw_os_error(libc::EPERM),
            }
            .to_string(),
            "setns failed: Operation not permitted (os error 1)"
        );
    }
}
