//! The error type of the multi-step calls in this crate.

use std::io;
use std::os::fd::RawFd;
use std::path::PathBuf;

/// A failed system call, naming the call and what it was applied to.
#[derive(Debug, thiserror::Error)]
pub enum SysError {
    /// A call on a path failed.
    #[error("{call} {}: {source}", path.display())]
    Path {
        /// The call (or step) that failed.
        call: &'static str,
        /// The path it was given.
        path: PathBuf,
        /// What the kernel answered.
        #[source]
        source: io::Error,
    },
    /// A call on a file descriptor failed.
    #[error("{call} (fd {fd}): {source}")]
    Fd {
        /// The call that failed.
        call: &'static str,
        /// The descriptor it was given.
        fd: RawFd,
        /// What the kernel answered.
        #[source]
        source: io::Error,
    },
    /// A call with other (integer or flag) arguments failed.
    #[error("{call}({arg}): {source}")]
    Call {
        /// The call that failed.
        call: &'static str,
        /// Its arguments, as text.
        arg: String,
        /// What the kernel answered.
        #[source]
        source: io::Error,
    },
}

impl SysError {
    /// A failed call on `path`.
    pub fn path(
        call: &'static str,
        path: impl Into<PathBuf>,
        source: impl Into<io::Error>,
    ) -> Self {
        SysError::Path {
            call,
            path: path.into(),
            source: source.into(),
        }
    }

    /// A failed call on descriptor `fd`.
    pub fn fd(call: &'static str, fd: RawFd, source: impl Into<io::Error>) -> Self {
        SysError::Fd {
            call,
            fd,
            source: source.into(),
        }
    }

    /// A failed call with arguments `arg`.
    pub fn call(call: &'static str, arg: impl ToString, source: impl Into<io::Error>) -> Self {
        SysError::Call {
            call,
            arg: arg.to_string(),
            source: source.into(),
        }
    }

    /// The underlying `io::Error`.
    fn io_error(&self) -> &io::Error {
        match self {
            SysError::Path { source, .. }
            | SysError::Fd { source, .. }
            | SysError::Call { source, .. } => source,
        }
    }

    /// The OS error number, when the kernel gave one.
    pub fn raw_os_error(&self) -> Option<i32> {
        self.io_error().raw_os_error()
    }
}

impl From<SysError> for io::Error {
    /// Keeps the error kind and the full message (call, input, cause).
    fn from(err: SysError) -> Self {
        io::Error::new(err.io_error().kind(), err)
    }
}

/// The result of a multi-step call.
pub type SysResult<T> = Result<T, SysError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_error_names_the_call_the_path_and_the_cause() {
        let err = SysError::path("mount", "/mnt/x", rustix::io::Errno::NOENT);
        let text = err.to_string();
        assert!(text.starts_with("mount /mnt/x: "), "{text}");
        assert_eq!(
            err.raw_os_error(),
            Some(rustix::io::Errno::NOENT.raw_os_error())
        );
        assert_eq!(io::Error::from(err).kind(), io::ErrorKind::NotFound);
    }
}
