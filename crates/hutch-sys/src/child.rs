//! What a child runs between `fork` and `exec` when started through `std::process::Command`.
//!
//! The child of a multi-threaded parent may only make async-signal-safe calls: no allocation,
//! no locks. [`ChildSetup`] is therefore built (paths converted, groups collected) before the
//! fork, and its steps are plain system calls on that prepared data.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use crate::creds::Credentials;

/// The steps a spawned child takes before `exec`, in this order: cgroup, new session,
/// controlling terminal, OOM score, credential switch, working directory.
#[derive(Debug, Clone, Default)]
pub struct ChildSetup {
    join_cgroup: Option<i32>,
    new_session: bool,
    controlling_tty: bool,
    oom_score_adj: Option<i16>,
    credentials: Option<Credentials>,
    cwd: Option<CString>,
}

impl ChildSetup {
    /// No steps at all.
    pub fn new() -> Self {
        ChildSetup::default()
    }

    /// Moves the child into a cgroup first, by writing `0` to `join` (an open `tasks` or
    /// `cgroup.procs` file, which must stay open until the spawn returns); a failure fails
    /// the spawn.
    pub fn join_cgroup(mut self, join: std::os::fd::BorrowedFd<'_>) -> Self {
        use std::os::fd::AsRawFd;
        self.join_cgroup = Some(join.as_raw_fd());
        self
    }

    /// Starts a new session and process group: the child and its descendants can be signalled
    /// as a group and share no terminal with the parent.
    pub fn new_session(mut self) -> Self {
        self.new_session = true;
        self
    }

    /// Makes the terminal on the child's stdin (a PTY slave) its controlling terminal, so job
    /// control, `/dev/tty` and hangup on exit work. Needs [`ChildSetup::new_session`].
    pub fn controlling_tty_on_stdin(mut self) -> Self {
        self.controlling_tty = true;
        self
    }

    /// Writes `value` to the child's `oom_score_adj` before any credential switch (after it
    /// the process is no longer dumpable and its /proc files are root's). Best effort: a
    /// child without /proc still starts.
    pub fn oom_score_adj(mut self, value: i16) -> Self {
        self.oom_score_adj = Some(value);
        self
    }

    /// Switches to `credentials` (see [`Credentials::apply`]); a failure fails the spawn.
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// Changes to `dir` after the credential switch, so the user can only start in a directory
    /// they may enter. Fails here if the path holds a NUL byte.
    pub fn cwd(mut self, dir: &Path) -> io::Result<Self> {
        let dir = CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "cwd contains a NUL byte"))?;
        self.cwd = Some(dir);
        Ok(self)
    }

    /// Makes `cmd` run these steps in its child before `exec`; an error in any checked step
    /// makes `Command::spawn` fail with it.
    pub fn install(self, cmd: &mut Command) {
        let hook = move || self.run();
        // SAFETY: `run` only makes async-signal-safe system calls (rt_sigaction, sigprocmask,
        // write, setsid, ioctl, open, close, setgroups, setresgid, setresuid, chdir) on data prepared before the fork; it
        // allocates nothing and takes no locks, and errors are plain OS error numbers.
        unsafe { cmd.pre_exec(hook) };
    }

    /// The steps themselves; runs in the forked child.
    fn run(&self) -> io::Result<()> {
        // A child starts with every signal at its default whatever the parent inherited: a
        // parent started under `nohup` (SIGHUP ignored) must not make a terminal's jobs
        // survive their hangup.
        crate::signal::reset_dispositions();
        if let Some(fd) = self.join_cgroup {
            // SAFETY: `join_cgroup` takes a descriptor its caller keeps open until the spawn
            // returns, which is after this runs.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            rustix::io::write(fd, b"0")?;
        }
        if self.new_session {
            rustix::process::setsid()?;
        }
        if self.controlling_tty {
            rustix::process::ioctl_tiocsctty(rustix::stdio::stdin())?;
        }
        if let Some(value) = self.oom_score_adj {
            // Deliberately unchecked: see `oom_score_adj`.
            let _ = crate::oom::set_oom_score_adj(value);
        }
        if let Some(creds) = &self.credentials {
            creds.apply()?;
        }
        if let Some(dir) = &self.cwd {
            rustix::process::chdir(dir.as_c_str())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_child_starts_in_its_own_session_and_directory() {
        let mut cmd = Command::new("sh");
        // Field 6 of /proc/<pid>/stat is the session id; in a new session it equals the pid.
        cmd.args([
            "-c",
            "read -r line < /proc/$$/stat; set -- $line; echo $1 $6; pwd",
        ]);
        ChildSetup::new()
            .new_session()
            .cwd(Path::new("/tmp"))
            .unwrap()
            .install(&mut cmd);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        let mut lines = text.lines();
        let ids: Vec<&str> = lines.next().unwrap().split(' ').collect();
        assert_eq!(ids[0], ids[1], "pid and session id differ: {text}");
        assert_eq!(lines.next(), Some("/tmp"));
    }

    #[test]
    fn the_child_starts_with_default_signal_dispositions_whatever_the_parent_ignores() {
        // SAFETY: SIG_IGN for SIGHUP, which no other test of this binary uses, put back below.
        let old = unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "grep SigIgn /proc/self/status"]);
        ChildSetup::new().install(&mut cmd);
        let out = cmd.output().unwrap();
        // SAFETY: restores the disposition read above.
        unsafe { libc::signal(libc::SIGHUP, old) };
        let text = String::from_utf8(out.stdout).unwrap();
        let mask =
            u64::from_str_radix(text.trim().trim_start_matches("SigIgn:").trim(), 16).unwrap();
        assert_eq!(mask & 1, 0, "SIGHUP is still ignored: {text}");
    }

    #[test]
    fn the_child_runs_with_the_switched_credentials() {
        if !crate::creds::is_root() {
            return;
        }
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "id -u; id -g; id -G"]);
        ChildSetup::new()
            .credentials(Credentials::new(65534, 65533, &[65533, 4242]))
            .install(&mut cmd);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "65534");
        assert_eq!(lines[1], "65533");
        let mut groups: Vec<&str> = lines[2].split(' ').collect();
        groups.sort_unstable();
        assert_eq!(groups, vec!["4242", "65533"]);
    }

    #[test]
    fn a_missing_working_directory_fails_the_spawn() {
        let mut cmd = Command::new("true");
        ChildSetup::new()
            .cwd(Path::new("/nonexistent/hutch-sys-test"))
            .unwrap()
            .install(&mut cmd);
        let err = cmd.spawn().unwrap_err();
        assert_eq!(
            err.raw_os_error(),
            Some(rustix::io::Errno::NOENT.raw_os_error())
        );
    }

    #[test]
    fn a_cwd_with_a_nul_byte_is_refused_before_forking() {
        let err = ChildSetup::new().cwd(Path::new("/tmp/a\0b")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
