//! The agent-backed `sudo`: the real agent binary serves a sudo socket in a temp dir, and the same
//! binary, exec'd through a symlink named `sudo`, is the client, run as fixture users.
//! Needs root (to run clients as other users); skipped otherwise.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

const USER: u32 = 1000;
const NOSUDO: u32 = 1001;
const RULED: u32 = 1002;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn is_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !(state.starts_with('Z') || state.starts_with('X'))
        }
        Err(_) => false,
    }
}

/// An agent serving sudo on a socket in its own fixture directory.
struct SudoAgent {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
    sudo: PathBuf,
}

impl SudoAgent {
    fn start() -> Option<SudoAgent> {
        if !is_root() {
            eprintln!("skipped: the sudo tests need root to run clients as other users");
            return None;
        }
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("hutch-sudo-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        for (name, uid, mode) in [
            ("root", 0, 0o700),
            ("home", USER, 0o755),
            ("nosudo", NOSUDO, 0o755),
            ("ruled", RULED, 0o755),
        ] {
            let home = dir.join(name);
            std::fs::create_dir_all(&home).unwrap();
            std::os::unix::fs::chown(&home, Some(uid), Some(uid)).unwrap();
            std::fs::set_permissions(&home, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let d = dir.display();
        std::fs::write(
            dir.join("passwd"),
            format!(
                "root:x:0:0:root:{d}/root:/bin/bash\n\
                 user:x:{USER}:{USER}::{d}/home:/bin/bash\n\
                 nosudo:x:{NOSUDO}:{NOSUDO}::{d}/nosudo:/bin/sh\n\
                 ruled:x:{RULED}:{RULED}::{d}/ruled:/bin/sh\n"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("group"),
            format!(
                "root:x:0:\nsudo:x:27:user\nuser:x:{USER}:\nnosudo:x:{NOSUDO}:\nruled:x:{RULED}:\n"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("sudoers"),
            "Defaults env_reset\n@includedir sudoers.d\n",
        )
        .unwrap();
        std::fs::create_dir_all(dir.join("sudoers.d")).unwrap();
        std::fs::write(
            dir.join("sudoers.d/ruled"),
            "ruled ALL=(nosudo) NOPASSWD: ALL\n",
        )
        .unwrap();

        let bin = env!("CARGO_BIN_EXE_hutch-agent");
        let sudo = dir.join("sudo");
        std::os::unix::fs::symlink(bin, &sudo).unwrap();
        let socket = dir.join("run/sudo.sock");
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(bin)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--passwd")
            .arg(dir.join("passwd"))
            .arg("--group")
            .arg(dir.join("group"))
            .env("HUTCH_AGENT_CONFIG", r#"{"sandboxId":"sudo-test"}"#)
            .env("HUTCH_AGENT_LOG", "warn")
            .env("HUTCH_SUDO_SOCKET", &socket)
            .env("HUTCH_AGENT_SUDOERS", dir.join("sudoers"))
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let agent = SudoAgent {
            child,
            dir,
            socket,
            sudo,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&agent.socket).is_err() {
            assert!(Instant::now() < deadline, "the sudo socket did not appear");
            std::thread::sleep(Duration::from_millis(20));
        }
        let mode = std::fs::metadata(&agent.socket)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o666);
        Some(agent)
    }

    /// The client command: `sudo args...` as `uid`, in `cwd` (default: the user's home).
    fn command(&self, uid: u32, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.sudo);
        cmd.args(args)
            .uid(uid)
            .gid(uid)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", "/nonexistent")
            .env("TERM", "dumb")
            .env("FOO", "bar")
            .env("HUTCH_SUDO_SOCKET", &self.socket)
            .current_dir(self.dir.join("home"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Runs `sudo args...` as `uid` with `stdin`, and returns its output (20 s at most).
    fn run(&self, uid: u32, args: &[&str], stdin: &[u8]) -> Output {
        let mut cmd = self.command(uid, args);
        cmd.stdin(Stdio::piped());
        wait(cmd.spawn().unwrap(), stdin)
    }

    fn path(&self, rel: &str) -> String {
        self.dir.join(rel).display().to_string()
    }
}

impl Drop for SudoAgent {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn wait(mut child: Child, stdin: &[u8]) -> Output {
    let pid = child.id() as i32;
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin).unwrap();
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            // SAFETY: killing the client we started, by its pid.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("sudo did not finish in time");
        }
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn runs_commands_as_root_and_as_other_users() {
    let Some(agent) = SudoAgent::start() else {
        return;
    };
    let out = agent.run(USER, &["-n", "id", "-u"], b"");
    assert_eq!(
        (out.status.code(), stdout(&out).as_str()),
        (Some(0), "0\n"),
        "{}",
        stderr(&out)
    );
    let out = agent.run(USER, &["whoami"], b"");
    assert_eq!(stdout(&out), "root\n");
    let out = agent.run(USER, &["-u", "nosudo", "id", "-u"], b"");
    assert_eq!(stdout(&out), format!("{NOSUDO}\n"));
    let out = agent.run(USER, &["-u", "#1002", "id", "-u"], b"");
    assert_eq!(stdout(&out), format!("{RULED}\n"));
    let out = agent.run(USER, &["-g", "ruled", "id", "-u"], b"");
    assert_eq!(stdout(&out), format!("{USER}\n"));
    let out = agent.run(USER, &["-g", "ruled", "id", "-g"], b"");
    assert_eq!(stdout(&out), format!("{RULED}\n"));
    // The caller's directory; `-i` goes to the target's home through its login shell.
    let out = agent.run(USER, &["pwd"], b"");
    assert_eq!(stdout(&out), format!("{}\n", agent.path("home")));
    let out = agent.run(USER, &["-i", "pwd"], b"");
    assert_eq!(stdout(&out), format!("{}\n", agent.path("root")));
    let out = agent.run(USER, &["-D", "/", "pwd"], b"");
    assert_eq!(stdout(&out), "/\n");
    let out = agent.run(USER, &["-s", "echo", "hi", "there"], b"");
    assert_eq!(stdout(&out), "hi there\n");
    let out = agent.run(USER, &["-u", "ghost", "true"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("unknown user ghost"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn environment_is_reset_like_sudo() {
    let Some(agent) = SudoAgent::start() else {
        return;
    };
    let script = "echo \"$HOME|$USER|$LOGNAME|$SUDO_USER|$SUDO_UID|${FOO-unset}|$TERM|$PATH\"";
    let out = agent.run(USER, &["sh", "-c", script], b"");
    assert_eq!(
        stdout(&out),
        format!(
            "{}|root|root|user|{USER}|unset|dumb|/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n",
            agent.path("root")
        )
    );
    let out = agent.run(USER, &["-E", "sh", "-c", "echo $FOO $HOME"], b"");
    assert_eq!(stdout(&out), "bar /nonexistent\n");
    let out = agent.run(USER, &["-E", "-H", "sh", "-c", "echo $FOO $HOME"], b"");
    assert_eq!(stdout(&out), format!("bar {}\n", agent.path("root")));
    let out = agent.run(USER, &["--preserve-env=FOO", "sh", "-c", "echo $FOO"], b"");
    assert_eq!(stdout(&out), "bar\n");
    let out = agent.run(USER, &["A=1", "sh", "-c", "echo $A"], b"");
    assert_eq!(stdout(&out), "1\n");
}

#[test]
fn stdin_passes_through_and_exit_statuses_propagate() {
    let Some(agent) = SudoAgent::start() else {
        return;
    };
    let out = agent.run(USER, &["cat"], b"hello\n");
    assert_eq!(stdout(&out), "hello\n");
    // A file only root may write (its directory is 0700 root).
    let file = agent.path("root/x");
    let out = agent.run(USER, &["tee", &file], b"hi\n");
    assert_eq!(
        (out.status.code(), stdout(&out).as_str()),
        (Some(0), "hi\n")
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "hi\n");

    assert_eq!(agent.run(USER, &["false"], b"").status.code(), Some(1));
    assert_eq!(
        agent.run(USER, &["sh", "-c", "exit 7"], b"").status.code(),
        Some(7)
    );
    assert_eq!(
        agent
            .run(USER, &["sh", "-c", "kill -TERM $$"], b"")
            .status
            .code(),
        Some(128 + libc::SIGTERM)
    );
    let out = agent.run(USER, &["no-such-command-xyz"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no-such-command-xyz: command not found"));
    let out = agent.run(USER, &["sh", "-c", "echo out; echo err >&2"], b"");
    assert_eq!(
        (stdout(&out).as_str(), stderr(&out).as_str()),
        ("out\n", "err\n")
    );
}

#[test]
fn refuses_users_without_sudo_rights() {
    let Some(agent) = SudoAgent::start() else {
        return;
    };
    let out = agent.run(NOSUDO, &["-n", "true"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "sudo: a password is required\n");
    let out = agent.run(NOSUDO, &["id", "-u"], b"");
    assert_eq!((out.status.code(), stdout(&out).as_str()), (Some(1), ""));
    assert!(
        stderr(&out).contains("not in the sudoers file"),
        "{}",
        stderr(&out)
    );
    let out = agent.run(NOSUDO, &["-v"], b"");
    assert_eq!(out.status.code(), Some(1));
    let out = agent.run(NOSUDO, &["-l"], b"");
    assert!(
        stderr(&out).contains("may not run sudo"),
        "{}",
        stderr(&out)
    );

    // A sudoers rule that allows running as `nosudo` only.
    let out = agent.run(RULED, &["-u", "nosudo", "id", "-u"], b"");
    assert_eq!(stdout(&out), format!("{NOSUDO}\n"), "{}", stderr(&out));
    let out = agent.run(RULED, &["id", "-u"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("is not allowed to execute"),
        "{}",
        stderr(&out)
    );
    let out = agent.run(RULED, &["-l"], b"");
    assert!(
        stdout(&out).contains("(nosudo) NOPASSWD: ALL"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn flags_that_need_no_command() {
    let Some(agent) = SudoAgent::start() else {
        return;
    };
    for flags in [&["-V"][..], &["-k"], &["-K"], &["-v"], &["-h"]] {
        let out = agent.run(USER, flags, b"");
        assert_eq!(out.status.code(), Some(0), "{flags:?}: {}", stderr(&out));
    }
    let out = agent.run(USER, &["-l"], b"");
    assert!(
        stdout(&out).contains("(ALL : ALL) NOPASSWD: ALL"),
        "{}",
        stdout(&out)
    );
    let out = agent.run(USER, &["-l", "ls"], b"");
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).ends_with("/ls\n"), "{}", stdout(&out));
    let out = agent.run(USER, &["-Z", "true"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).starts_with("sudo: invalid option -- 'Z'\nusage:"));
    let out = agent.run(USER, &[], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("usage:"));
    // Root may always, even when the agent is not in its groups file's sudo group.
    let out = agent.run(0, &["-n", "-u", "user", "id", "-u"], b"");
    assert_eq!(stdout(&out), format!("{USER}\n"));
}

/// Starts `sudo sh -c 'echo $$; exec sleep 100'` and returns the client and the command's pid.
fn start_sleeper(agent: &SudoAgent) -> (Child, i32) {
    let mut child = agent
        .command(USER, &["sh", "-c", "echo $$; exec sleep 100"])
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pid: i32 = line.trim().parse().unwrap();
    assert!(is_alive(pid));
    (child, pid)
}

fn wait_status(child: &mut Child, secs: u64) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn relays_signals_to_the_command() {
    let Some(agent) = SudoAgent::start() else {
        return;
    };
    let (mut client, pid) = start_sleeper(&agent);
    // SAFETY: signalling the client we started.
    unsafe { libc::kill(client.id() as i32, libc::SIGTERM) };
    let status = wait_status(&mut client, 10);
    if status.is_none() {
        let _ = client.kill();
        // SAFETY: the command we started through sudo.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    assert_eq!(status.and_then(|s| s.code()), Some(128 + libc::SIGTERM));
    assert!(!is_alive(pid));
}

#[test]
fn the_command_is_hung_up_when_the_client_dies() {
    let Some(agent) = SudoAgent::start() else {
        return;
    };
    let (mut client, pid) = start_sleeper(&agent);
    client.kill().unwrap();
    client.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while is_alive(pid) {
        if Instant::now() > deadline {
            // SAFETY: the command we started through sudo.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("the command survived its client");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut rest = String::new();
    let _ = client.stderr.take().unwrap().read_to_string(&mut rest);
}

#[test]
fn background_commands_outlive_the_client() {
    let Some(agent) = SudoAgent::start() else {
        return;
    };
    let marker = agent.path("root/bg");
    let script = format!("sleep 0.3; id -u > {marker}");
    let out = agent.run(USER, &["-b", "sh", "-c", &script], b"");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&marker).unwrap_or_default() != "0\n" {
        assert!(
            Instant::now() < deadline,
            "the background command did not run"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A terminal for the client: (master, slave) of a fresh pseudo-terminal.
fn open_terminal() -> (std::fs::File, std::fs::File) {
    use std::os::fd::FromRawFd;
    // SAFETY: plain libc calls on descriptors this function owns; `name` is NUL-terminated by
    // ptsname_r on success.
    unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(master >= 0);
        assert_eq!(libc::grantpt(master), 0);
        assert_eq!(libc::unlockpt(master), 0);
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(libc::ptsname_r(master, name.as_mut_ptr(), name.len()), 0);
        let slave = libc::open(
            name.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        assert!(slave >= 0);
        let flags = libc::fcntl(master, libc::F_GETFL);
        libc::fcntl(master, libc::F_SETFL, flags | libc::O_NONBLOCK);
        (
            std::fs::File::from_raw_fd(master),
            std::fs::File::from_raw_fd(slave),
        )
    }
}

/// Runs `sudo args...` as the user, in the foreground of a terminal of its own, as an
/// interactive shell would.
fn start_on_terminal(agent: &SudoAgent, args: &[&str]) -> (Child, std::fs::File, std::fs::File) {
    let (master, slave) = open_terminal();
    let mut cmd = agent.command(USER, args);
    cmd.stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave.try_clone().unwrap());
    // SAFETY: setsid and ioctl are async-signal-safe and touch no memory.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            if libc::ioctl(0, libc::TIOCSCTTY, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    (cmd.spawn().unwrap(), master, slave)
}

/// Reads the terminal until its output contains `want` (10 s at most); returns all of it.
fn read_until(master: &mut std::fs::File, want: &str) -> String {
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(want) {
        assert!(
            Instant::now() < deadline,
            "no {want:?} in {:?}",
            String::from_utf8_lossy(&seen)
        );
        match master.read(&mut chunk) {
            Ok(n) => seen.extend_from_slice(&chunk[..n]),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

fn canonical(slave: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: tcgetattr fills a plain C struct for an open descriptor.
    unsafe {
        let mut modes: libc::termios = std::mem::zeroed();
        assert_eq!(libc::tcgetattr(slave.as_raw_fd(), &mut modes), 0);
        modes.c_lflag & libc::ICANON != 0
    }
}

#[test]
fn on_a_terminal_the_command_gets_a_terminal_of_its_own() {
    let Some(agent) = SudoAgent::start() else {
        return;
    };
    let script = "exec 3</dev/tty && echo ctty-ok; echo ready; read x; echo got:$x";
    let (mut client, mut master, slave) = start_on_terminal(&agent, &["sh", "-c", script]);
    // Opening /dev/tty works only with a controlling terminal.
    let out = read_until(&mut master, "ready");
    assert!(out.contains("ctty-ok"), "{out}");
    // The caller's terminal is raw meanwhile: keystrokes go to the command's terminal as is.
    assert!(!canonical(&slave));
    master.write_all(b"abc\r").unwrap();
    read_until(&mut master, "got:abc");
    let status = wait_status(&mut client, 10);
    assert_eq!(status.and_then(|s| s.code()), Some(0));
    // ...and gets its modes back afterwards.
    assert!(canonical(&slave));
}

#[test]
fn ctrl_c_on_the_terminal_interrupts_the_command() {
    let Some(agent) = SudoAgent::start() else {
        return;
    };
    let (mut client, mut master, _slave) =
        start_on_terminal(&agent, &["sh", "-c", "echo ready; exec sleep 100"]);
    read_until(&mut master, "ready");
    master.write_all(b"\x03").unwrap();
    let status = wait_status(&mut client, 10);
    if status.is_none() {
        let _ = client.kill();
    }
    assert_eq!(status.and_then(|s| s.code()), Some(128 + libc::SIGINT));
}
