//! Duties of being the sandbox's init: owning orphans and shutting down on request.
//!
//! Reaping itself lives in [`crate::reaper`]; this module sets the process up so the reaper sees
//! every orphan, and turns termination signals into a shutdown.

use std::future::Future;
use std::io;

use tokio::signal::unix::{signal, SignalKind};

/// Why init setup failed.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// `prctl(PR_SET_CHILD_SUBREAPER)` failed.
    #[error("cannot become a child subreaper: {0}")]
    Subreaper(io::Error),
    /// A signal handler could not be installed.
    #[error("cannot install the {name} handler: {source}")]
    Signal {
        /// The signal.
        name: &'static str,
        /// The underlying error.
        source: io::Error,
    },
}

/// Whether this process is its pid namespace's init.
pub fn is_pid1() -> bool {
    std::process::id() == 1
}

/// Makes orphans of our descendants come back to the agent even when it is not PID 1 (local
/// runs, tests), so the reaper behaves the same way in both settings.
pub fn adopt_orphans() -> Result<(), InitError> {
    if is_pid1() {
        // The kernel already reparents every orphan in the namespace to PID 1.
        return Ok(());
    }
    hutch_sys::process::set_child_subreaper().map_err(|e| InitError::Subreaper(e.into()))
}

/// Installs SIGTERM and SIGINT handlers now and returns a future that resolves with the name of
/// the first one received.
///
/// PID 1 gets no default action for signals it has no handler for, so without these the host
/// could only stop the sandbox with SIGKILL.
pub fn shutdown_signal() -> Result<impl Future<Output = &'static str>, InitError> {
    let mut term = signal(SignalKind::terminate()).map_err(|source| InitError::Signal {
        name: "SIGTERM",
        source,
    })?;
    let mut int = signal(SignalKind::interrupt()).map_err(|source| InitError::Signal {
        name: "SIGINT",
        source,
    })?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    })
}
