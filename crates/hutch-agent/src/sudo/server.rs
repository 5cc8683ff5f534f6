//! The agent's side of sudo: one task per client connection.
//!
//! A session reads the request and the caller's descriptors, identifies the caller by
//! `SO_PEERCRED` (never by anything the client says), checks [`policy`], spawns the command and
//! then waits for whichever comes first: the command's exit, which is reported, or the client
//! going away, which hangs the command up (SIGHUP, then SIGCONT in case it is stopped, to its
//! process group) as a closing terminal would.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::Interest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};

use super::exec::{self, describe_io, Plan, PlanError, Running, Target};
use super::policy::{self, Files, Grant, PasswdEntry};
use super::wire::{
    self, decode_line, encode_line, take_line, ClientMessage, Mode, Reply, Request,
    MAX_MESSAGE_BYTES, MAX_REQUEST_BYTES, REQUEST_FDS,
};
use crate::reaper::Reaper;
use crate::users::UserDb;

/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What a session needs.
#[derive(Clone)]
pub struct Context {
    /// Spawns and reaps the commands.
    pub reaper: Reaper,
    /// Supplementary groups of target users.
    pub users: UserDb,
    /// passwd, group and sudoers.
    pub files: Files,
}

/// Binds the socket at `path`: removes a stale one (from before a restart), creates a missing
/// parent directory 0755, and opens the socket to everyone (0666); [`policy`] decides who gets
/// anything from it.
pub fn listen(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a file that is not a socket is in the way",
            ))
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

/// Accepts clients forever.
pub async fn serve(listener: UnixListener, context: Context) {
    let context = Arc::new(context);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(session(stream, context.clone()));
            }
            Err(err) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %err, "sudo: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn session(stream: UnixStream, context: Arc<Context>) {
    let cred = match stream.peer_cred() {
        Ok(cred) => cred,
        Err(err) => {
            tracing::warn!(error = %err, "sudo: cannot identify the peer");
            return;
        }
    };
    let (request, fds, leftover) =
        match tokio::time::timeout(REQUEST_TIMEOUT, read_request(&stream)).await {
            Ok(Ok(got)) => got,
            Ok(Err(err)) => {
                tracing::info!(uid = cred.uid(), error = %err, "sudo: bad request");
                let (_, mut wr) = stream.into_split();
                let _ = send(&mut wr, &error(format!("sudo: bad request: {err}"))).await;
                return;
            }
            Err(_) => {
                tracing::info!(uid = cred.uid(), "sudo: no request in time");
                return;
            }
        };
    let (mut rd, mut wr) = stream.into_split();
    let uid = cred.uid();
    let ctx = context.clone();
    let prepared = tokio::task::spawn_blocking(move || prepare(&ctx, uid, request, fds)).await;
    let (running, background, master) = match prepared {
        Ok(Prepared::Final(reply)) => {
            let _ = send(&mut wr, &reply).await;
            return;
        }
        Ok(Prepared::Started {
            running,
            background,
            master,
        }) => (running, background, master),
        Err(err) => {
            let _ = send(&mut wr, &error(format!("sudo: internal error: {err}"))).await;
            return;
        }
    };
    let Running { pid, mut exit } = running;
    let started = Reply::Started {
        pid,
        pty: master.is_some(),
    };
    let sent = match &master {
        Some(master) => send_with_fd(&wr, &started, master).await,
        None => send(&mut wr, &started).await,
    };
    // The client holds the only master now; had it not got it (`sent` failed), the kernel hangs
    // the command up once this copy closes, and the loop below sees the client gone.
    drop(master);
    drop(sent);
    if background {
        // `-b`: the client returns now, and its leaving must not hang the command up.
        return;
    }
    let Ok(pid_t) = libc::pid_t::try_from(pid) else {
        return;
    };

    let mut buf = leftover;
    loop {
        tokio::select! {
            status = &mut exit => {
                let reply = match status {
                    Ok(status) => match status.signal() {
                        Some(sig) => Reply::Signaled(sig),
                        None => Reply::Exited(status.exit_code()),
                    },
                    Err(_) => error("sudo: lost track of the command's exit status".into()),
                };
                let _ = send(&mut wr, &reply).await;
                return;
            }
            message = next_message(&mut rd, &mut buf) => match message {
                Ok(Some(ClientMessage::Signal(sig))) => relay_signal(&context.reaper, pid_t, sig),
                Ok(None) | Err(_) => {
                    hang_up(&context.reaper, pid_t);
                    // Nobody to report to; still wait, so the log shows the command ended.
                    let status = exit.await.map_or_else(|_| "unknown".to_owned(), |s| s.describe());
                    tracing::info!(pid, %status, "sudo: command ended after its client left");
                    return;
                }
            }
        }
    }
}

/// What `prepare` decided.
enum Prepared {
    /// Nothing runs; send this and close.
    Final(Reply),
    /// The command is running.
    Started {
        running: Running,
        background: bool,
        /// The master of its terminal, for the client, in pty mode.
        master: Option<OwnedFd>,
    },
}

fn error(message: String) -> Reply {
    Reply::Error { message, status: 1 }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Authorises the request and starts its command. Blocking (files, fork, exec).
fn prepare(ctx: &Context, uid: u32, req: Request, fds: Vec<OwnedFd>) -> Prepared {
    match decide(ctx, uid, req, fds) {
        Ok(prepared) => prepared,
        Err(reply) => Prepared::Final(reply),
    }
}

fn decide(ctx: &Context, uid: u32, req: Request, fds: Vec<OwnedFd>) -> Result<Prepared, Reply> {
    let caller = ctx
        .files
        .user_by_uid(uid)
        .ok_or_else(|| error("sudo: you do not exist in the passwd database".into()))?;
    let grant = policy::grant_for(&ctx.files, &caller);
    let host = hostname();
    let Some(grant) = grant else {
        tracing::info!(user = %caller.name, uid, "sudo: refused, not in sudoers");
        let message = match req.mode {
            Mode::List | Mode::Validate => {
                format!("Sorry, user {} may not run sudo on {host}.", caller.name)
            }
            Mode::Run if req.non_interactive => "sudo: a password is required".to_owned(),
            Mode::Run => format!(
                "sudo: {} is not in the sudoers file (no sudo group membership or sudoers rule)",
                caller.name
            ),
        };
        return Err(error(message));
    };

    let target_user = match &req.user {
        Some(spec) => lookup_user(&ctx.files, spec)
            .ok_or_else(|| error(format!("sudo: unknown user {spec}")))?,
        // `-g` alone keeps the caller's identity, as in sudo.
        None if req.group.is_some() => caller.clone(),
        None => ctx
            .files
            .user_by_uid(0)
            .ok_or_else(|| error("sudo: unknown user root".into()))?,
    };
    let group = match &req.group {
        Some(spec) => Some(
            ctx.files
                .group_id(spec)
                .ok_or_else(|| error(format!("sudo: unknown group {spec}")))?,
        ),
        None => None,
    };
    let target_groups = policy::groups_of(&target_user, &ctx.files.groups());
    let group_allowed = match (group, &grant) {
        (None, _) | (_, Grant::Anyone) => true,
        (Some(gid), Grant::Only(_)) => target_groups.iter().any(|g| g.gid == gid),
    };
    let allowed = group_allowed && grant.allows(&target_user, &target_groups);

    match req.mode {
        Mode::Validate => {
            return Ok(Prepared::Final(Reply::Done));
        }
        Mode::List => {
            if req.command.is_empty() {
                return Ok(Prepared::Final(Reply::Listing(format!(
                    "User {} may run the following commands on {host}:\n    {}\n",
                    caller.name,
                    grant.describe()
                ))));
            }
            if !allowed {
                return Err(error(String::new()));
            }
            let cwd = std::path::PathBuf::from(req.cwd.as_deref().unwrap_or("/"));
            let found = exec::resolve_program(&req.command[0], &cwd, exec::SECURE_PATH)
                .ok_or_else(|| error(format!("sudo: {}: command not found", req.command[0])))?;
            let mut line = std::iter::once(found.to_string_lossy().into_owned())
                .chain(req.command[1..].iter().cloned())
                .collect::<Vec<_>>()
                .join(" ");
            line.push('\n');
            return Ok(Prepared::Final(Reply::Listing(line)));
        }
        Mode::Run => {}
    }

    if !allowed {
        tracing::info!(user = %caller.name, target = %target_user.name, "sudo: refused target");
        return Err(error(format!(
            "Sorry, user {} is not allowed to execute '{}' as {}{} on {host}.",
            caller.name,
            req.command.join(" "),
            target_user.name,
            req.group
                .as_deref()
                .map(|g| format!(":{g}"))
                .unwrap_or_default(),
        )));
    }
    if req.command.is_empty() && !req.login && !req.shell {
        return Err(error("sudo: a command is required".into()));
    }
    let fds: [OwnedFd; REQUEST_FDS] = fds
        .try_into()
        .map_err(|_| error("sudo: bad request: expected stdin, stdout and stderr".into()))?;
    let [stdin, stdout, stderr] = fds;
    let use_pty = req.pty && !req.background && exec::is_tty(&stdin) && exec::is_tty(&stdout);

    // Supplementary groups as initgroups sets them, from users.rs; `-g`'s group comes first.
    let mut groups = ctx
        .users
        .lookup(&target_user.name)
        .map(|u| u.groups)
        .unwrap_or_else(|_| vec![target_user.gid]);
    let gid = group.unwrap_or(target_user.gid);
    if !groups.contains(&gid) {
        groups.insert(0, gid);
    }
    let target = Target {
        user: target_user,
        gid,
        groups,
    };
    let background = req.background;
    let plan: Plan = exec::plan(&req, &caller, target).map_err(|err| match err {
        PlanError::NotFound(_) => error(format!("sudo: {err}")),
    })?;
    let program = plan.program.clone();
    let command_line = plan.env.get("SUDO_COMMAND").cloned().unwrap_or_default();
    let target_name = plan.target.user.name.clone();
    let pty_error = |err: io::Error| {
        error(format!(
            "sudo: unable to allocate pty: {}",
            describe_io(&err)
        ))
    };
    let (stdio, master) = if use_pty {
        let (master, slave) = exec::open_pty(&stdin, plan.target.user.uid).map_err(pty_error)?;
        // stderr goes to the new terminal only if it went to a terminal before; a redirected
        // stderr stays where the caller sent it.
        let err_fd = if exec::is_tty(&stderr) {
            slave.try_clone().map_err(pty_error)?
        } else {
            stderr
        };
        let out_fd = slave.try_clone().map_err(pty_error)?;
        ([slave, out_fd, err_fd], Some(master))
    } else {
        ([stdin, stdout, stderr], None)
    };
    let running = exec::spawn(&ctx.reaper, plan, stdio, master.is_some()).map_err(|err| {
        error(format!(
            "sudo: unable to execute {}: {}",
            program.display(),
            describe_io(&err)
        ))
    })?;
    tracing::info!(
        user = %caller.name,
        target = %target_name,
        pid = running.pid,
        command = %command_line,
        "sudo: command started"
    );
    Ok(Prepared::Started {
        running,
        background,
        master,
    })
}

/// A user given as a name or `#uid`.
fn lookup_user(files: &Files, spec: &str) -> Option<PasswdEntry> {
    match spec.strip_prefix('#') {
        Some(uid) => files.user_by_uid(uid.parse().ok()?),
        None => files.user_by_name(spec),
    }
}

/// Relays a signal the client received. Those a terminal sends (SIGINT, SIGQUIT) go to the
/// command's whole process group, as a terminal would deliver them; the rest to the command
/// alone, as sudo relays them.
fn relay_signal(reaper: &Reaper, pid: libc::pid_t, sig: i32) {
    // Only real signal numbers; 0 would be a mere probe.
    if !(1..=libc::SIGRTMAX()).contains(&sig) {
        return;
    }
    if sig == libc::SIGINT || sig == libc::SIGQUIT {
        signal_group(reaper, pid, sig);
    } else if let Err(err) = reaper.signal(pid, sig) {
        tracing::warn!(pid, sig, error = %err, "sudo: relaying a signal failed");
    }
}

/// SIGHUP (and SIGCONT, so a stopped command sees it) to the command's process group, as when a
/// terminal closes.
fn hang_up(reaper: &Reaper, pid: libc::pid_t) {
    signal_group(reaper, pid, libc::SIGHUP);
    signal_group(reaper, pid, libc::SIGCONT);
}

/// Sends `sig` to the process group the command leads.
fn signal_group(reaper: &Reaper, pid: libc::pid_t, sig: i32) {
    // Only while the leader is unreaped (checked under the reaper's lock), so the group id cannot
    // have been handed to anyone else yet.
    if !matches!(reaper.signal(pid, 0), Ok(true)) {
        return;
    }
    // SAFETY: kill has no memory-safety preconditions; -pid is the group the command leads.
    if unsafe { libc::kill(-pid, sig) } == -1 {
        // The command left its group (it called setsid itself): signal it alone.
        let _ = reaper.signal(pid, sig);
    }
}

/// Reads the request line and the descriptors sent with it; returns what was read past it.
async fn read_request(stream: &UnixStream) -> io::Result<(Request, Vec<OwnedFd>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut fds = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        if let Some(line) = take_line(&mut buf) {
            let request = decode_line(&line)?;
            return Ok((request, fds, buf));
        }
        if buf.len() > MAX_REQUEST_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request too large",
            ));
        }
        let n = stream
            .async_io(Interest::READABLE, || {
                wire::recv_with_fds(stream.as_raw_fd(), &mut chunk, &mut fds)
            })
            .await?;
        if fds.len() > REQUEST_FDS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "too many descriptors",
            ));
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before the request was complete",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The next message from the client; `None` when it closed the connection. Cancel-safe: its
/// only await point is a read, and what was read stays in `buf`.
async fn next_message(
    rd: &mut OwnedReadHalf,
    buf: &mut Vec<u8>,
) -> io::Result<Option<ClientMessage>> {
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(line) = take_line(buf) {
            return decode_line(&line).map(Some);
        }
        if buf.len() > MAX_MESSAGE_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "message too large",
            ));
        }
        let n = rd.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn send(wr: &mut OwnedWriteHalf, reply: &Reply) -> io::Result<()> {
    wr.write_all(&encode_line(reply)?).await
}

/// Sends `reply` with `fd` attached to its first byte.
async fn send_with_fd(wr: &OwnedWriteHalf, reply: &Reply, fd: &OwnedFd) -> io::Result<()> {
    let line = encode_line(reply)?;
    let stream: &UnixStream = wr.as_ref();
    let sent = stream
        .async_io(Interest::WRITABLE, || {
            wire::send_with_fds(stream, &line, &[fd.as_raw_fd()])
        })
        .await?;
    let mut rest = &line[sent..];
    while !rest.is_empty() {
        stream.writable().await?;
        match stream.try_write(rest) {
            Ok(n) => rest = &rest[n..],
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}
