//! The `sudo` client: what runs when the agent binary is started under the name `sudo`.
//!
//! It is plain blocking code with no runtime, logging or threads: it parses the command line,
//! sends the request with its stdin, stdout and stderr to the agent, relays the signals it
//! receives (SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1/2, SIGWINCH) and exits with the command's
//! status (128 + the signal when a signal ended it).
//!
//! In the foreground of a terminal it asks for pty mode, like sudo's `use_pty`: the command gets
//! a pseudo-terminal of its own as controlling terminal (job control, `/dev/tty`), and the client
//! relays between it and the caller's terminal, which it puts in raw mode meanwhile.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};

use super::args::{self, Action, ArgError};
use super::wire::{self, decode_line, encode_line, take_line, ClientMessage, Mode, Reply, Request};
use super::{DEFAULT_SOCKET, SOCKET_ENV};

/// Signals relayed to the command, like sudo's relay set minus job control.
const RELAYED: [libc::c_int; 7] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
];

/// Write end of the self-pipe the signal handler reports into (-1 before it exists).
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

/// Runs the client; the binary's `main` returns this when [`super::invoked_as_sudo`].
pub fn main() -> ExitCode {
    ExitCode::from(run())
}

fn fail(message: &str) -> u8 {
    if !message.is_empty() {
        say_err(&format!("{message}\n"));
    }
    1
}

/// Writes to stdout, ignoring failures (a closed pipe must not make sudo panic like `print!`).
fn say(text: &str) {
    let mut out = io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// Writes to stderr, ignoring failures.
fn say_err(text: &str) {
    let _ = io::stderr().lock().write_all(text.as_bytes());
}

fn run() -> u8 {
    let inv = match args::parse(std::env::args_os().skip(1)) {
        Ok(inv) => inv,
        Err(err) => return usage_error(&err),
    };
    let mode = match inv.action() {
        Action::Help => {
            say(args::HELP);
            return 0;
        }
        Action::Version => {
            say(&format!(
                "Sudo version 1.9 compatible (hutch-agent {})\n\
                 Agent-backed sudo: commands run through the hutch agent (PID 1).\n",
                env!("CARGO_PKG_VERSION")
            ));
            return 0;
        }
        // No credentials are ever cached, so there is nothing to forget.
        Action::ResetTimestamp => return 0,
        Action::Validate => Mode::Validate,
        Action::List => Mode::List,
        Action::Run => Mode::Run,
    };

    let env: BTreeMap<String, String> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let cwd = std::env::current_dir()
        .ok()
        .and_then(|p| p.into_os_string().into_string().ok());
    let request = Request {
        mode,
        command: inv.command,
        env,
        set_env: inv.set_env,
        cwd,
        user: inv.user,
        group: inv.group,
        preserve_env: inv.preserve_env,
        set_home: inv.set_home,
        login: inv.login,
        shell: inv.shell,
        background: inv.background,
        chdir: inv.chdir,
        non_interactive: inv.non_interactive,
        pty: mode == Mode::Run && !inv.background && foreground_terminal(),
    };

    let socket = std::env::var_os(SOCKET_ENV)
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| DEFAULT_SOCKET.into());
    // Before connecting: from here on a signal must reach the command, not kill the client.
    let signals = match install_signal_relay() {
        Ok(fd) => fd,
        Err(err) => return fail(&format!("sudo: cannot set up signal handling: {err}")),
    };
    let stream = match UnixStream::connect(&socket) {
        Ok(stream) => stream,
        Err(err) => {
            return fail(&format!(
                "sudo: cannot reach the hutch agent at {}: {}",
                std::path::Path::new(&socket).display(),
                super::exec::describe_io(&err)
            ))
        }
    };
    if let Err(err) = send_request(&stream, &request) {
        return fail(&format!(
            "sudo: cannot send the request to the hutch agent: {err}"
        ));
    }
    wait_for_command(&stream, signals, request.background)
}

/// Whether stdin and stdout are a terminal this process is in the foreground of: only then may
/// it take the terminal over (raw mode) for the command's own pseudo-terminal. In the background
/// it would be stopped by SIGTTOU, or steal input from the foreground job.
fn foreground_terminal() -> bool {
    // SAFETY: isatty, tcgetpgrp and getpgrp only query.
    unsafe { libc::isatty(0) == 1 && libc::isatty(1) == 1 && libc::tcgetpgrp(0) == libc::getpgrp() }
}

fn usage_error(err: &ArgError) -> u8 {
    say_err(&format!("sudo: {err}\n"));
    if err.shows_usage() {
        say_err(args::USAGE);
    }
    1
}

/// Sends the request line with fds 0, 1 and 2 attached (a closed one is replaced by
/// `/dev/null`, since a closed descriptor cannot be sent).
fn send_request(stream: &UnixStream, request: &Request) -> io::Result<()> {
    let line = encode_line(request)?;
    let mut keep = Vec::new();
    let mut fds: [RawFd; 3] = [0, 1, 2];
    for fd in &mut fds {
        // SAFETY: F_GETFD only queries the descriptor table.
        if unsafe { libc::fcntl(*fd, libc::F_GETFD) } == -1 {
            let null = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")?;
            *fd = null.as_raw_fd();
            keep.push(null);
        }
    }
    let sent = wire::send_with_fds(stream, &line, &fds)?;
    (&*stream).write_all(&line[sent..])?;
    drop(keep);
    Ok(())
}

/// Relays signals (and, in pty mode, the terminal) and reads replies until the final one;
/// returns the exit status.
fn wait_for_command(stream: &UnixStream, signals: RawFd, background: bool) -> u8 {
    let mut buf = Vec::new();
    let mut received: Vec<OwnedFd> = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut relay: Option<PtyRelay> = None;
    loop {
        while let Some(line) = take_line(&mut buf) {
            let reply = match decode_line::<Reply>(&line) {
                Ok(reply) => reply,
                Err(err) => return fail(&format!("sudo: bad answer from the hutch agent: {err}")),
            };
            match reply {
                Reply::Started { .. } if background => return 0,
                Reply::Started { pty: false, .. } => {}
                Reply::Started { pty: true, .. } => match received.pop() {
                    Some(master) => relay = Some(PtyRelay::new(master)),
                    None => return fail("sudo: the hutch agent sent no terminal"),
                },
                Reply::Exited(code) => {
                    finish(relay.take());
                    return u8::try_from(code & 0xff).unwrap_or(1);
                }
                Reply::Signaled(sig) => {
                    finish(relay.take());
                    return u8::try_from((128 + sig) & 0xff).unwrap_or(1);
                }
                Reply::Error { message, status } => {
                    finish(relay.take());
                    if !message.is_empty() {
                        say_err(&format!("{message}\n"));
                    }
                    return status;
                }
                Reply::Done => return 0,
                Reply::Listing(text) => {
                    say(&text);
                    return 0;
                }
            }
        }

        let mut fds = vec![
            pollfd(stream.as_raw_fd(), libc::POLLIN),
            pollfd(signals, libc::POLLIN),
        ];
        if let Some(relay) = &relay {
            fds.extend(relay.poll_fds());
        }
        // SAFETY: `fds` is a valid, writable array of `fds.len()` pollfd structs.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if rc == -1 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            finish(relay.take());
            return fail("sudo: poll failed");
        }
        if fds[1].revents & libc::POLLIN != 0 {
            let mut sigs = [0u8; 64];
            // SAFETY: reading into a valid local buffer from our non-blocking pipe.
            let n = unsafe { libc::read(signals, sigs.as_mut_ptr().cast(), sigs.len()) };
            for &sig in sigs.iter().take(usize::try_from(n).unwrap_or(0)) {
                let sig = i32::from(sig);
                if let Some(relay) = &relay {
                    // The command's own terminal tells it about size changes.
                    if sig == libc::SIGWINCH {
                        relay.copy_size();
                        continue;
                    }
                }
                if let Ok(line) = encode_line(&ClientMessage::Signal(sig)) {
                    // A failed write shows up as end of stream below.
                    let _ = (&*stream).write_all(&line);
                }
            }
        }
        if let Some(relay) = &mut relay {
            relay.handle(&fds[2..]);
        }
        if fds[0].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            match wire::recv_with_fds(stream.as_raw_fd(), &mut chunk, &mut received) {
                Ok(0) => {
                    finish(relay.take());
                    return fail("sudo: lost the connection to the hutch agent");
                }
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if buf.len() > wire::MAX_MESSAGE_BYTES {
                        finish(relay.take());
                        return fail("sudo: bad answer from the hutch agent: too long");
                    }
                }
                Err(err)
                    if matches!(
                        err.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                    ) => {}
                Err(err) => {
                    finish(relay.take());
                    return fail(&format!(
                        "sudo: lost the connection to the hutch agent: {err}"
                    ));
                }
            }
        }
    }
}

fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// Shows the command's last output and gives the caller its terminal back.
fn finish(relay: Option<PtyRelay>) {
    if let Some(mut relay) = relay {
        // The command has exited, so everything it wrote is already in the terminal's buffer.
        relay.pump_output();
    }
}

/// The client's half of pty mode: it copies what the caller types to the command's terminal and
/// what the terminal shows to the caller, with the caller's terminal in raw mode meanwhile (so
/// Ctrl-C and friends reach the command's terminal as keystrokes, as with sudo's `use_pty`).
struct PtyRelay {
    master: OwnedFd,
    /// The caller's terminal modes, restored on drop.
    saved: Option<libc::termios>,
    /// Typed input the master has not taken yet.
    pending: Vec<u8>,
    /// False once every slave descriptor is closed (reads give EIO).
    output_open: bool,
    /// False once stdin ends or fails.
    input_open: bool,
}

impl PtyRelay {
    fn new(master: OwnedFd) -> Self {
        // Our own descriptor, so non-blocking is ours to set; stdin and stdout are shared with
        // the caller's shell and stay as they are.
        // SAFETY: fcntl on a descriptor we own, integer arguments only.
        unsafe {
            let flags = libc::fcntl(master.as_raw_fd(), libc::F_GETFL);
            if flags != -1 {
                libc::fcntl(master.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
            }
        }
        // SAFETY: termios is a plain C struct that tcgetattr fills and cfmakeraw/tcsetattr read.
        let saved = unsafe {
            let mut modes: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut modes) == 0 {
                let mut raw = modes;
                libc::cfmakeraw(&mut raw);
                libc::tcsetattr(0, libc::TCSADRAIN, &raw);
                Some(modes)
            } else {
                None
            }
        };
        let relay = Self {
            master,
            saved,
            pending: Vec::new(),
            output_open: true,
            input_open: true,
        };
        // The caller's window may have changed between the agent's copy and now.
        relay.copy_size();
        relay
    }

    /// Copies the caller's window size to the command's terminal (which signals the command).
    fn copy_size(&self) {
        // SAFETY: winsize is a plain C struct TIOCGWINSZ fills and TIOCSWINSZ reads.
        unsafe {
            let mut size: libc::winsize = std::mem::zeroed();
            if libc::ioctl(0, libc::TIOCGWINSZ, &mut size) == 0 {
                libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &size);
            }
        }
    }

    /// What to poll: stdin (while nothing is pending) and the master.
    fn poll_fds(&self) -> [libc::pollfd; 2] {
        let stdin = if self.input_open && self.pending.is_empty() {
            pollfd(0, libc::POLLIN)
        } else {
            pollfd(-1, 0)
        };
        let mut events = 0;
        if self.output_open {
            events |= libc::POLLIN;
            if !self.pending.is_empty() {
                events |= libc::POLLOUT;
            }
        }
        let master = if events == 0 {
            pollfd(-1, 0)
        } else {
            pollfd(self.master.as_raw_fd(), events)
        };
        [stdin, master]
    }

    /// Acts on the poll results for [`Self::poll_fds`].
    fn handle(&mut self, fds: &[libc::pollfd]) {
        let [stdin, master] = [fds[0].revents, fds[1].revents];
        if stdin & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            let mut chunk = [0u8; 4096];
            // SAFETY: poll said stdin is readable, so this read of a blocking descriptor returns
            // at once; the buffer is valid for its length.
            let n = unsafe { libc::read(0, chunk.as_mut_ptr().cast(), chunk.len()) };
            match usize::try_from(n) {
                Ok(0) | Err(_) => self.input_open = false,
                Ok(n) => self.pending.extend_from_slice(&chunk[..n]),
            }
        }
        if !self.pending.is_empty() && master & libc::POLLERR == 0 {
            // SAFETY: writing from a valid buffer to our non-blocking master.
            let n = unsafe {
                libc::write(
                    self.master.as_raw_fd(),
                    self.pending.as_ptr().cast(),
                    self.pending.len(),
                )
            };
            if let Ok(n) = usize::try_from(n) {
                self.pending.drain(..n);
            }
        }
        if master & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            self.pump_output();
        }
    }

    /// Copies everything the master has now to stdout.
    fn pump_output(&mut self) {
        let mut chunk = [0u8; 4096];
        while self.output_open {
            // SAFETY: reading into a valid local buffer from our non-blocking master.
            let n = unsafe {
                libc::read(
                    self.master.as_raw_fd(),
                    chunk.as_mut_ptr().cast(),
                    chunk.len(),
                )
            };
            match usize::try_from(n) {
                Ok(0) => self.output_open = false,
                Ok(n) => {
                    let mut out = io::stdout().lock();
                    let _ = out.write_all(&chunk[..n]);
                    let _ = out.flush();
                }
                Err(_) => {
                    let err = io::Error::last_os_error();
                    match err.kind() {
                        io::ErrorKind::Interrupted => {}
                        io::ErrorKind::WouldBlock => return,
                        // EIO: no slave descriptor is open any more.
                        _ => self.output_open = false,
                    }
                }
            }
        }
    }
}

impl Drop for PtyRelay {
    fn drop(&mut self) {
        if let Some(modes) = &self.saved {
            // SAFETY: restoring modes tcgetattr returned for the same descriptor.
            unsafe { libc::tcsetattr(0, libc::TCSADRAIN, modes) };
        }
    }
}

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = SIGNAL_PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = u8::try_from(sig).unwrap_or(0);
        // SAFETY: write is async-signal-safe; `byte` is a valid one-byte buffer. A full pipe
        // drops the signal, which only happens if hundreds arrive before the loop runs.
        unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
    }
}

/// Creates the self-pipe and routes [`RELAYED`] signals into it; returns its read end.
fn install_signal_relay() -> io::Result<RawFd> {
    let mut pipe = [0 as RawFd; 2];
    // SAFETY: `pipe` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } == -1 {
        return Err(io::Error::last_os_error());
    }
    SIGNAL_PIPE.store(pipe[1], Ordering::Relaxed);
    for sig in RELAYED {
        // SAFETY: an all-zero sigaction is valid; we fill in the handler and an empty mask.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
        action.sa_flags = libc::SA_RESTART;
        // SAFETY: `action.sa_mask` is a valid sigset_t to initialise; `action` is fully set up
        // and `on_signal` only performs async-signal-safe work.
        unsafe {
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(sig, &action, std::ptr::null_mut()) == -1 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    // The read end lives as long as the process; the write end must stay open for the handler.
    Ok(pipe[0])
}
