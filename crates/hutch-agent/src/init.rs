//! Duties of being the sandbox's init: owning orphans and shutting down on request.
//!
//! Reaping itself lives in [`crate::reaper`]; this module sets the process up so the reaper sees
//! every orphan, and turns termination signals into a shutdown.

use std::future::Future;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::OnceLock;

use hutch_contracts::agent::AGENT_PATH;
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

/// Where agents before Debian's `sudo` took over linked a `sudo` of their own; template layers
/// built by such an agent still hold the link (see [`remove_legacy_sudo_link`]).
const LEGACY_SUDO_LINK: &str = "/usr/local/bin/sudo";

/// Whether this process is its pid namespace's init.
pub fn is_pid1() -> bool {
    std::process::id() == 1
}

/// Whether the agent runs as a sandbox's init: PID 1 and executing the binary mounted at
/// [`AGENT_PATH`]. A local run as PID 1 of a bare pid namespace (the tests do that) shares the
/// host's filesystem and must not touch it. Found once per process; start-up asks several
/// times.
pub fn in_sandbox() -> bool {
    static IN_SANDBOX: OnceLock<bool> = OnceLock::new();
    *IN_SANDBOX.get_or_init(runs_the_mounted_agent_as_pid1)
}

fn runs_the_mounted_agent_as_pid1() -> bool {
    if !is_pid1() {
        return false;
    }
    // Compared by inode, not by path: when the host rebuilds the binary, /proc/self/exe of a
    // running sandbox reads "... (deleted)" although the mount is still there.
    match (
        std::fs::metadata("/proc/self/exe"),
        std::fs::metadata(AGENT_PATH),
    ) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// The descriptor on which to say the agent is up (see
/// [`hutch_contracts::agent::READY_FD_ENV`]), taken by [`take_ready_fd`].
static READY: std::sync::Mutex<Option<std::os::fd::OwnedFd>> = std::sync::Mutex::new(None);

/// The work cgroup's join file (see [`hutch_contracts::agent::WORK_CGROUP_FD_ENV`]), taken by
/// [`take_ready_fd`].
static WORK_CGROUP: std::sync::OnceLock<std::os::fd::OwnedFd> = std::sync::OnceLock::new();

/// Takes the descriptors the spawn helper handed over, if any (the readiness pipe, the work
/// cgroup's join file): removes their variables from the environment and marks them
/// close-on-exec, so that nothing the agent starts inherits either. Call before any thread
/// starts (it edits the environment).
pub fn take_ready_fd() {
    use hutch_contracts::agent::{READY_FD, READY_FD_ENV, WORK_CGROUP_FD, WORK_CGROUP_FD_ENV};
    if let Some(owned) = take_handed_fd(READY_FD_ENV, READY_FD) {
        *READY.lock().unwrap_or_else(|e| e.into_inner()) = Some(owned);
    }
    if let Some(owned) = take_handed_fd(WORK_CGROUP_FD_ENV, WORK_CGROUP_FD) {
        let _ = WORK_CGROUP.set(owned);
    }
}

/// The work cgroup's join file, when the spawn helper handed one over: every process the
/// agent starts writes `0` to it before `exec`.
pub fn work_cgroup() -> Option<std::os::fd::BorrowedFd<'static>> {
    use std::os::fd::AsFd;
    WORK_CGROUP.get().map(|f| f.as_fd())
}

/// Descriptor `fd`, when variable `env` names it: the variable is removed either way.
fn take_handed_fd(env: &str, fd: i32) -> Option<std::os::fd::OwnedFd> {
    let value = std::env::var_os(env)?;
    std::env::remove_var(env);
    if value.to_str() != Some(&fd.to_string()) {
        tracing::warn!(variable = env, value = ?value, "ignoring an unexpected descriptor");
        return None;
    }
    // Fails with EBADF (and nothing is taken) when it is not open.
    hutch_sys::fd::close_on_exec(fd).ok()?;
    // SAFETY: the variable says descriptor `fd` was handed to this process for this alone;
    // it is open (checked above) and owned by nothing else in this process.
    Some(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// Says the agent is up (its API is served from now on) on the readiness descriptor, once,
/// and closes it.
pub fn signal_ready() {
    let Some(fd) = READY.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return;
    };
    if let Err(e) = hutch_sys::fd::write(&fd, b"1") {
        tracing::debug!(error = %e, "could not say the agent is up");
    }
}

/// Removes the `sudo` → agent link that earlier agents installed, so Debian's `/usr/bin/sudo`
/// answers again in sandboxes of templates built back then. Only in a sandbox, and only that
/// exact link: a `sudo` someone else put there stays.
pub fn remove_legacy_sudo_link() {
    if in_sandbox() {
        remove_link_to(Path::new(LEGACY_SUDO_LINK), Path::new(AGENT_PATH));
    }
}

/// Marks the `/etc/hosts` line the agent manages, so a later start (of this sandbox, or of one
/// whose template layer captured the line) replaces it instead of adding another.
const HOSTS_MARK: &str = "# hutch: this sandbox's hostname";

/// Makes the sandbox's hostname (its id) resolve, as container runtimes do: `sudo` and other
/// tools look their own host up and complain when it is unknown. Only in a sandbox.
pub fn publish_hostname() {
    if !in_sandbox() {
        return;
    }
    let hostname = match std::fs::read_to_string("/proc/sys/kernel/hostname") {
        Ok(name) => name.trim().to_owned(),
        Err(err) => {
            tracing::warn!(error = %err, "cannot read the hostname");
            return;
        }
    };
    let hosts = Path::new("/etc/hosts");
    let old = std::fs::read_to_string(hosts).unwrap_or_default();
    let new = hosts_with(&old, &hostname);
    if new != old {
        if let Err(err) = std::fs::write(hosts, new) {
            tracing::warn!(error = %err, "cannot add the hostname to /etc/hosts");
        }
    }
}

/// `hosts` with the managed line for `hostname` (and no other managed line).
fn hosts_with(hosts: &str, hostname: &str) -> String {
    let mut out: String = hosts
        .lines()
        .filter(|line| !line.ends_with(HOSTS_MARK))
        .flat_map(|line| [line, "\n"])
        .collect();
    out.push_str(&format!("127.0.1.1\t{hostname}\t{HOSTS_MARK}\n"));
    out
}

fn remove_link_to(link: &Path, target: &Path) {
    if std::fs::read_link(link).is_ok_and(|t| t == target) {
        if let Err(err) = std::fs::remove_file(link) {
            tracing::warn!(link = %link.display(), error = %err, "cannot remove the old sudo link");
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_only_a_link_to_the_agent() {
        let dir = std::env::temp_dir().join(format!("hutch-init-link-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let link = dir.join("sudo");
        std::os::unix::fs::symlink("/elsewhere", &link).unwrap();
        remove_link_to(&link, Path::new(AGENT_PATH));
        assert!(
            std::fs::symlink_metadata(&link).is_ok(),
            "a foreign link stays"
        );
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(AGENT_PATH, &link).unwrap();
        remove_link_to(&link, Path::new(AGENT_PATH));
        assert!(
            std::fs::symlink_metadata(&link).is_err(),
            "the agent's link goes"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_hostname_line_is_added_once_and_replaced() {
        let base = "127.0.0.1\tlocalhost\n::1\tlocalhost\n";
        let first = hosts_with(base, "abc");
        assert_eq!(first, format!("{base}127.0.1.1\tabc\t{HOSTS_MARK}\n"));
        assert_eq!(hosts_with(&first, "abc"), first, "idempotent");
        let other = hosts_with(&first, "xyz");
        assert_eq!(other, format!("{base}127.0.1.1\txyz\t{HOSTS_MARK}\n"));
        assert_eq!(hosts_with("", "h"), format!("127.0.1.1\th\t{HOSTS_MARK}\n"));
    }

    #[test]
    fn not_a_sandbox_here() {
        assert!(!in_sandbox());
    }
}
