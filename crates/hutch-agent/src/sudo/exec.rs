//! Turning an authorised request into a running command: target credentials, sudo's
//! environment rules, the program to run, and the spawn itself (through the [`Reaper`]).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::args::{shell_escape_join, PreserveEnv};
use super::policy::PasswdEntry;
use super::wire::Request;
use crate::reaper::{ExitWaiter, Reaper};

/// sudo's `secure_path` on Debian: the `PATH` every command gets.
pub const SECURE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Caller variables that survive the environment reset: sudo's built-in `env_keep` list.
const ENV_KEEP: &[&str] = &[
    "COLORS",
    "COLORTERM",
    "DISPLAY",
    "HOSTNAME",
    "KRB5CCNAME",
    "LANG",
    "LANGUAGE",
    "LINGUAS",
    "LS_COLORS",
    "PS1",
    "PS2",
    "TERM",
    "TZ",
    "XAUTHORITY",
    "XAUTHORIZATION",
    "XDG_CURRENT_DESKTOP",
];

/// The credentials a command runs with.
#[derive(Debug, Clone)]
pub struct Target {
    /// The target's passwd entry.
    pub user: PasswdEntry,
    /// Primary gid (the target's, or `-g`'s).
    pub gid: u32,
    /// Supplementary groups (what `initgroups` gives the target, plus `-g`'s group).
    pub groups: Vec<u32>,
}

/// A command ready to spawn.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The executable (absolute, or containing a `/` and relative to `cwd`).
    pub program: PathBuf,
    /// `argv[0]` (`-bash` for a login shell).
    pub arg0: String,
    /// The remaining arguments.
    pub args: Vec<String>,
    /// The complete environment.
    pub env: BTreeMap<String, String>,
    /// Where to run.
    pub cwd: PathBuf,
    /// Whether failing to enter `cwd` is an error (`-i`, `-D`) or only a warning (the caller's
    /// directory, which the target may not be able to enter).
    pub cwd_required: bool,
    /// Who runs it.
    pub target: Target,
}

/// Why a plan could not be made; `Display` is sudo's wording without the `sudo: ` prefix.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The program is not in `PATH` or does not exist.
    #[error("{0}: command not found")]
    NotFound(String),
}

/// The environment of the command, following sudo's `env_reset` (or `-E`) rules.
pub fn environment(
    req: &Request,
    caller: &PasswdEntry,
    target: &Target,
) -> BTreeMap<String, String> {
    let keep_all = req.preserve_env == PreserveEnv::All && !req.login;
    let mut env: BTreeMap<String, String> = if keep_all {
        req.env.clone()
    } else {
        let extra: &[String] = match &req.preserve_env {
            PreserveEnv::Only(list) => list,
            _ => &[],
        };
        req.env
            .iter()
            .filter(|(k, _)| {
                ENV_KEEP.contains(&k.as_str())
                    || k.starts_with("LC_")
                    || extra.iter().any(|e| e == *k)
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let shell = if req.shell && !req.login {
        req.env
            .get("SHELL")
            .cloned()
            .unwrap_or_else(|| caller.shell.clone())
    } else {
        target.user.shell.clone()
    };
    if !keep_all || req.set_home {
        env.insert("HOME".into(), target.user.home.clone());
    }
    if !keep_all {
        env.insert("SHELL".into(), shell);
        env.insert("MAIL".into(), format!("/var/mail/{}", target.user.name));
    }
    env.insert("USER".into(), target.user.name.clone());
    env.insert("LOGNAME".into(), target.user.name.clone());
    env.insert("PATH".into(), SECURE_PATH.into());
    env.insert("SUDO_USER".into(), caller.name.clone());
    env.insert("SUDO_UID".into(), caller.uid.to_string());
    env.insert("SUDO_GID".into(), caller.gid.to_string());
    env.insert("SUDO_HOME".into(), caller.home.clone());
    for (k, v) in &req.set_env {
        env.insert(k.clone(), v.clone());
    }
    env
}

/// Decides what to execute, as whom and where.
pub fn plan(req: &Request, caller: &PasswdEntry, target: Target) -> Result<Plan, PlanError> {
    let env = environment(req, caller, &target);
    let (cwd, cwd_required) = if let Some(dir) = &req.chdir {
        (PathBuf::from(dir), true)
    } else if req.login {
        (PathBuf::from(&target.user.home), true)
    } else {
        (
            PathBuf::from(req.cwd.clone().unwrap_or_else(|| "/".to_owned())),
            false,
        )
    };
    let mut env = env;
    let (program, arg0, args) = if req.login || req.shell {
        let shell = env
            .get("SHELL")
            .cloned()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| target.user.shell.clone());
        let base = Path::new(&shell)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| shell.clone());
        let arg0 = if req.login { format!("-{base}") } else { base };
        let args = if req.command.is_empty() {
            Vec::new()
        } else {
            vec!["-c".to_owned(), shell_escape_join(&req.command)]
        };
        (PathBuf::from(shell), arg0, args)
    } else {
        let Some(name) = req.command.first() else {
            return Err(PlanError::NotFound(String::new()));
        };
        let program = resolve_program(name, &cwd, SECURE_PATH)
            .ok_or_else(|| PlanError::NotFound(name.clone()))?;
        (program, name.clone(), req.command[1..].to_vec())
    };
    let command_line = std::iter::once(program.to_string_lossy().into_owned())
        .chain(args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ");
    env.insert("SUDO_COMMAND".into(), command_line);
    Ok(Plan {
        program,
        arg0,
        args,
        env,
        cwd,
        cwd_required,
        target,
    })
}

/// Finds `name` like sudo does: a name with a `/` is taken as is (relative to `cwd`), anything
/// else is searched in `path`. Only executable regular files count.
pub fn resolve_program(name: &str, cwd: &Path, path: &str) -> Option<PathBuf> {
    if name.is_empty() {
        return None;
    }
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        let full = cwd.join(name);
        return executable(&full).then(|| PathBuf::from(name));
    }
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(name))
        .find(|p| executable(p))
}

/// The started command.
#[derive(Debug)]
pub struct Running {
    /// Its pid.
    pub pid: u32,
    /// Resolves with its exit status.
    pub exit: ExitWaiter,
}

/// Whether `fd` is a terminal.
pub fn is_tty(fd: &impl AsRawFd) -> bool {
    // SAFETY: isatty only queries the descriptor.
    unsafe { libc::isatty(fd.as_raw_fd()) == 1 }
}

/// Opens a pseudo-terminal for the command, set up like the caller's terminal `like` (modes and
/// size), with the slave owned by `uid`; returns (master, slave).
///
/// Both ends are close-on-exec: other commands are forked concurrently and must not inherit a
/// terminal that is not theirs.
pub fn open_pty(like: &impl AsRawFd, uid: u32) -> io::Result<(OwnedFd, OwnedFd)> {
    // SAFETY: posix_openpt takes flags only and returns a new descriptor or -1.
    let raw = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if raw == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a freshly opened descriptor nothing else owns.
    let master = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: grantpt/unlockpt only act on the open master descriptor.
    if unsafe { libc::grantpt(master.as_raw_fd()) } != 0
        || unsafe { libc::unlockpt(master.as_raw_fd()) } != 0
    {
        return Err(io::Error::last_os_error());
    }
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: `name` is writable for `name.len()` bytes; ptsname_r NUL-terminates on success.
    let rc = unsafe { libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    // SAFETY: `name` holds the NUL-terminated path ptsname_r wrote.
    let raw = unsafe {
        libc::open(
            name.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if raw == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a freshly opened descriptor nothing else owns.
    let slave = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: termios and winsize are plain C structs that tcgetattr/TIOCGWINSZ fill in and
    // tcsetattr/TIOCSWINSZ read; every descriptor is open for the duration of the calls. Failures
    // leave the defaults, which still work.
    unsafe {
        let mut modes: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(like.as_raw_fd(), &mut modes) == 0 {
            libc::tcsetattr(slave.as_raw_fd(), libc::TCSANOW, &modes);
        }
        let mut size: libc::winsize = std::mem::zeroed();
        if libc::ioctl(like.as_raw_fd(), libc::TIOCGWINSZ, &mut size) == 0 {
            libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size);
        }
        // Like login(1): the terminal belongs to the user on it.
        libc::fchown(slave.as_raw_fd(), uid, libc::gid_t::MAX);
    }
    Ok((master, slave))
}

/// Starts `plan` with the given stdin, stdout and stderr, in a session of its own; with `ctty`,
/// stdin is a terminal that becomes the session's controlling terminal.
///
/// Blocks for fork + exec: call it from a blocking context.
pub fn spawn(reaper: &Reaper, plan: Plan, stdio: [OwnedFd; 3], ctty: bool) -> io::Result<Running> {
    let [stdin, stdout, stderr] = stdio;
    let mut cmd = Command::new(&plan.program);
    cmd.arg0(&plan.arg0)
        .args(&plan.args)
        .env_clear()
        .envs(&plan.env)
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr));

    let cwd = CString::new(plan.cwd.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "cwd contains a NUL byte"))?;
    // Built before the fork: the child may not allocate.
    let warning = format!(
        "sudo: unable to change directory to {}\n",
        plan.cwd.display()
    )
    .into_bytes();
    let cwd_required = plan.cwd_required;
    let uid = plan.target.user.uid;
    let gid = plan.target.gid;
    let groups: Vec<libc::gid_t> = plan.target.groups.clone();
    // SAFETY: geteuid only reads the caller's credentials.
    let privileged = unsafe { libc::geteuid() } == 0;

    let pre_exec = move || -> io::Result<()> {
        // A session of its own: the command cannot join the caller's (it is the agent's child,
        // not the caller's), and as a group leader it and its children can be hung up together
        // when the caller goes away.
        // SAFETY: setsid takes no arguments; a freshly forked child leads no group, so it works.
        unsafe { libc::setsid() };
        // stdin is already in place (std sets up stdio before this closure runs); as the new
        // session's leader the command takes it as controlling terminal, and its process group
        // becomes the terminal's foreground group.
        // SAFETY: ioctl with an integer argument on fd 0.
        if ctty && unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } == -1 {
            return Err(io::Error::last_os_error());
        }
        reset_oom_score_adj();
        if privileged {
            // Raw syscalls: after fork there is one thread, and glibc's wrappers would try to
            // synchronise credentials with the parent's threads, which do not exist here.
            // SAFETY: `groups` outlives the call and holds `groups.len()` gid_t values.
            if unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) } == -1 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: integer arguments only.
            if unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) } == -1 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: integer arguments only.
            if unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) } == -1 {
                return Err(io::Error::last_os_error());
            }
        }
        // After the switch, so the target only starts where it may go.
        // SAFETY: `cwd` is a NUL-terminated string owned by this closure.
        if unsafe { libc::chdir(cwd.as_ptr()) } == -1 {
            if cwd_required {
                return Err(io::Error::last_os_error());
            }
            // Like sudo: warn and run from `/` instead.
            // SAFETY: writing a buffer built before the fork to fd 2, then chdir to a static path.
            unsafe {
                libc::write(2, warning.as_ptr().cast(), warning.len());
                libc::chdir(c"/".as_ptr());
            }
        }
        Ok(())
    };
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe system
    // calls (setsid, ioctl, open, write, close, setgroups, setresgid, setresuid, chdir) on memory
    // allocated before the fork.
    unsafe { cmd.pre_exec(pre_exec) };

    let (child, exit) = reaper.spawn(&mut cmd)?;
    let pid = child.id();
    // Dropping `child` neither waits nor kills; the reaper owns its exit. Our copies of the
    // caller's descriptors were moved into `cmd` and close with it.
    drop(child);
    Ok(Running { pid, exit })
}

/// Undoes the agent's -1000 OOM score for the command (see `process::spawn`).
fn reset_oom_score_adj() {
    const PATH: &[u8] = b"/proc/self/oom_score_adj\0";
    // SAFETY: PATH is NUL-terminated; open/write/close are async-signal-safe and the buffer is a
    // valid 1-byte static.
    unsafe {
        let fd = libc::open(PATH.as_ptr().cast(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd >= 0 {
            libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
        }
    }
}

/// An I/O error in strerror's words, without Rust's "(os error N)" suffix.
pub fn describe_io(err: &io::Error) -> String {
    let text = err.to_string();
    match text.find(" (os error ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sudo::wire::Mode;

    fn entry(name: &str, uid: u32) -> PasswdEntry {
        PasswdEntry {
            name: name.into(),
            uid,
            gid: uid,
            home: if uid == 0 {
                "/root".into()
            } else {
                format!("/home/{name}")
            },
            shell: "/bin/bash".into(),
        }
    }

    fn request(command: &[&str]) -> Request {
        Request {
            mode: Mode::Run,
            command: command.iter().map(|s| s.to_string()).collect(),
            env: BTreeMap::from([
                ("TERM".into(), "xterm".into()),
                ("FOO".into(), "bar".into()),
                ("HOME".into(), "/home/user".into()),
                ("LC_ALL".into(), "C".into()),
                ("PATH".into(), "/evil".into()),
            ]),
            set_env: vec![("X".into(), "1".into())],
            cwd: Some("/tmp".into()),
            user: None,
            group: None,
            preserve_env: PreserveEnv::Reset,
            set_home: false,
            login: false,
            shell: false,
            background: false,
            chdir: None,
            non_interactive: true,
            pty: false,
        }
    }

    fn root_target() -> Target {
        Target {
            user: entry("root", 0),
            gid: 0,
            groups: vec![0],
        }
    }

    #[test]
    fn resets_the_environment_like_sudo() {
        let caller = entry("user", 1000);
        let env = environment(&request(&["true"]), &caller, &root_target());
        assert_eq!(env["HOME"], "/root");
        assert_eq!(env["USER"], "root");
        assert_eq!(env["TERM"], "xterm");
        assert_eq!(env["LC_ALL"], "C");
        assert_eq!(env["PATH"], SECURE_PATH);
        assert_eq!(env["SUDO_USER"], "user");
        assert_eq!(env["SUDO_UID"], "1000");
        assert_eq!(env["X"], "1");
        assert!(!env.contains_key("FOO"));

        let mut keep = request(&["true"]);
        keep.preserve_env = PreserveEnv::All;
        let env = environment(&keep, &caller, &root_target());
        assert_eq!(env["FOO"], "bar");
        assert_eq!(env["HOME"], "/home/user");
        assert_eq!(env["USER"], "root");
        keep.set_home = true;
        assert_eq!(environment(&keep, &caller, &root_target())["HOME"], "/root");

        let mut some = request(&["true"]);
        some.preserve_env = PreserveEnv::Only(vec!["FOO".into()]);
        assert_eq!(environment(&some, &caller, &root_target())["FOO"], "bar");
    }

    #[test]
    fn plans_login_shells_and_commands() {
        let caller = entry("user", 1000);
        let mut req = request(&["echo", "a b"]);
        req.login = true;
        let plan = plan(&req, &caller, root_target()).unwrap();
        assert_eq!(plan.program, PathBuf::from("/bin/bash"));
        assert_eq!(plan.arg0, "-bash");
        assert_eq!(plan.args, ["-c", "echo a\\ b"]);
        assert_eq!(plan.cwd, PathBuf::from("/root"));

        let plan = super::plan(&request(&["sh", "-c", "true"]), &caller, root_target()).unwrap();
        assert!(plan.program.is_absolute());
        assert_eq!(plan.arg0, "sh");
        assert_eq!(plan.cwd, PathBuf::from("/tmp"));
        assert!(!plan.cwd_required);
        assert!(matches!(
            super::plan(&request(&["no-such-command-xyz"]), &caller, root_target()),
            Err(PlanError::NotFound(_))
        ));
    }
}
