//! An agent-backed `sudo`.
//!
//! Every sandbox runs with `no_new_privs`, so the real setuid `/usr/bin/sudo` cannot gain
//! privileges. The agent is root inside the sandbox, so it does the privileged part instead:
//!
//! - The agent binary is multi-call: run under the name `sudo` it is a small client
//!   ([`client::main`]), which parses sudo's command line and sends the request, with its stdin,
//!   stdout and stderr attached, to the agent over a unix socket ([`SOCKET_ENV`], by default
//!   [`DEFAULT_SOCKET`]).
//! - The agent ([`server`]) identifies the caller with `SO_PEERCRED`, decides with [`policy`]
//!   whether they may, builds the command like sudo would ([`exec`]: credentials, `env_reset`,
//!   `-i`/`-s` shells) and runs it through the [`Reaper`] with the caller's descriptors. It relays
//!   signals the client receives and reports the exit status, which the client exits with.
//! - In a sandbox, the agent links `/usr/local/bin/sudo` (ahead of `/usr/bin` in `PATH`) to
//!   itself at start ([`LINK_PATH`]).

pub mod args;
pub mod client;
pub mod exec;
pub mod policy;
pub mod server;
pub mod wire;

use std::ffi::OsStr;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::reaper::Reaper;
use crate::users::UserDb;

/// Overrides the socket path: where the agent listens (which also enables the sudo service
/// outside a sandbox, for tests) and where the client connects.
pub const SOCKET_ENV: &str = "HUTCH_SUDO_SOCKET";

/// Overrides the sudoers file the agent reads (tests point it at a fixture).
pub const SUDOERS_ENV: &str = "HUTCH_AGENT_SUDOERS";

/// The socket in a sandbox.
pub const DEFAULT_SOCKET: &str = "/run/hutch/sudo.sock";

/// The main sudoers file.
pub const DEFAULT_SUDOERS: &str = "/etc/sudoers";

/// Where the host mounts the agent inside every sandbox (`hutch_runtime::spawn::AGENT_PATH_INSIDE`;
/// repeated here because the agent does not depend on the runtime crate).
pub const AGENT_PATH: &str = "/.hutch/hutch-agent";

/// The `sudo` link the agent installs in a sandbox; `/usr/local/bin` precedes `/usr/bin` in
/// every default `PATH`.
pub const LINK_PATH: &str = "/usr/local/bin/sudo";

/// Whether this process was started under the name `sudo` (its `argv[0]`'s last component).
pub fn invoked_as_sudo() -> bool {
    std::env::args_os()
        .next()
        .as_deref()
        .and_then(|arg0| Path::new(arg0).file_name())
        == Some(OsStr::new("sudo"))
}

/// Whether the agent runs as a sandbox's init: PID 1 and executing the binary mounted at
/// [`AGENT_PATH`]. A local run as PID 1 of a bare pid namespace (the tests do that) shares the
/// host's filesystem and must not touch it.
pub fn in_sandbox() -> bool {
    if !crate::init::is_pid1() {
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

/// Sets the sudo service up: in a sandbox links `sudo` to the agent and listens on
/// [`DEFAULT_SOCKET`]; elsewhere listens only if [`SOCKET_ENV`] names a socket. Never fatal: the
/// agent serves without sudo if this fails. Must be called inside the tokio runtime.
pub fn start(reaper: &Reaper, passwd: &Path, group: &Path) {
    let sandbox = in_sandbox();
    if sandbox {
        if let Err(err) = install_link(Path::new(LINK_PATH), Path::new(AGENT_PATH)) {
            tracing::warn!(error = %err, link = LINK_PATH, "cannot install the sudo link");
        }
    }
    let socket = match std::env::var_os(SOCKET_ENV) {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ if sandbox => PathBuf::from(DEFAULT_SOCKET),
        _ => return,
    };
    let sudoers = std::env::var_os(SUDOERS_ENV)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SUDOERS));
    let context = server::Context {
        reaper: reaper.clone(),
        users: UserDb::new(passwd, group),
        files: policy::Files {
            passwd: passwd.to_owned(),
            group: group.to_owned(),
            sudoers,
        },
    };
    match server::listen(&socket) {
        Ok(listener) => {
            tracing::info!(socket = %socket.display(), "sudo service listening");
            tokio::spawn(server::serve(listener, context));
        }
        Err(err) => {
            tracing::warn!(socket = %socket.display(), error = %err, "cannot start the sudo service");
        }
    }
}

/// Points `link` at `target`, replacing an older link atomically, but never a real file someone
/// installed there.
pub fn install_link(link: &Path, target: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(link) {
        Ok(meta) if meta.file_type().is_symlink() => {
            if std::fs::read_link(link)? == target {
                return Ok(());
            }
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a file that is not a symlink is in the way; leaving it alone",
            ))
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    if let Some(dir) = link.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    // Create beside it and rename over it, so `sudo` never goes missing for a moment.
    let tmp = link.with_file_name(".sudo.hutch-tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    std::fs::rename(&tmp, link)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_and_refreshes_the_link_but_spares_real_files() {
        let dir = std::env::temp_dir().join(format!("hutch-sudo-link-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let link = dir.join("bin/sudo");
        install_link(&link, Path::new("/a")).unwrap();
        assert_eq!(std::fs::read_link(&link).unwrap(), PathBuf::from("/a"));
        install_link(&link, Path::new("/b")).unwrap();
        assert_eq!(std::fs::read_link(&link).unwrap(), PathBuf::from("/b"));
        std::fs::remove_file(&link).unwrap();
        std::fs::write(&link, "mine").unwrap();
        assert!(install_link(&link, Path::new("/a")).is_err());
        assert_eq!(std::fs::read_to_string(&link).unwrap(), "mine");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn not_a_sandbox_here() {
        assert!(!in_sandbox());
    }
}
