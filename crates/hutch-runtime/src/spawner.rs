//! The server's side of the long-lived spawn helper ([`crate::spawn::serve_main`]): one
//! helper process for all sandboxes instead of one per sandbox, with the one-shot helper
//! as the fallback whenever it cannot be used.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::error::{Result, RuntimeError};
use crate::spawn::{ServeRequest, ServeResponse, SpawnRequest, SpawnResponse, SERVE_ENV};

/// How long one sandbox's start may take in the helper before the request is given up.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

type Pending = Arc<Mutex<HashMap<u64, Sender<SpawnResponse>>>>;

/// A running long-lived helper.
#[derive(Debug)]
struct Server {
    child: Child,
    stdin: ChildStdin,
    pending: Pending,
    next: u64,
}

/// Starts sandboxes through the spawn helper.
#[derive(Debug)]
pub(crate) struct Spawner {
    helper: (PathBuf, Vec<String>),
    /// Use the long-lived helper (off for helpers that are not `hutch __spawn`, in tests).
    serve: bool,
    server: Mutex<Option<Server>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Spawner {
    /// A spawner running `helper`; `serve` enables the long-lived mode.
    pub fn new(helper: (PathBuf, Vec<String>), serve: bool) -> Self {
        Spawner {
            helper,
            serve,
            server: Mutex::new(None),
        }
    }

    /// Starts the sandbox of `req` and returns the helper's answer.
    pub fn spawn(&self, req: &SpawnRequest) -> Result<SpawnResponse> {
        if self.serve {
            match self.ask(req) {
                Ok(resp) => return Ok(resp),
                // Nothing was started (the request never reached a helper, or the helper
                // died before taking it): the one-shot helper does it instead.
                Err(e) => {
                    tracing::warn!(error = %e, "long-lived spawn helper unusable; starting a one-shot helper")
                }
            }
        }
        run_helper(&self.helper, req)
    }

    /// Sends `req` to the long-lived helper (started if needed) and waits for its answer.
    fn ask(&self, req: &SpawnRequest) -> Result<SpawnResponse> {
        let rx: Receiver<SpawnResponse>;
        {
            let mut guard = lock(&self.server);
            if guard
                .as_mut()
                .is_some_and(|s| matches!(s.child.try_wait(), Ok(Some(_)) | Err(_)))
            {
                *guard = None;
            }
            if guard.is_none() {
                *guard = Some(self.start()?);
            }
            let server = guard.as_mut().expect("started above");
            server.next += 1;
            let id = server.next;
            let (tx, rx_) = mpsc::channel();
            rx = rx_;
            lock(&server.pending).insert(id, tx);
            let mut line = serde_json::to_vec(&ServeRequest {
                id,
                req: req.clone(),
            })
            .map_err(|e| RuntimeError::Spawn(e.to_string()))?;
            line.push(b'\n');
            if let Err(e) = server.stdin.write_all(&line) {
                lock(&server.pending).remove(&id);
                *guard = None;
                return Err(RuntimeError::io("write to", &self.helper.0, e));
            }
        }
        match rx.recv_timeout(ANSWER_TIMEOUT) {
            Ok(resp) => Ok(resp),
            // The helper died with our request: it may have started the sandbox's init
            // (which the caller's cleanup kills through the cgroup), so no retry.
            Err(mpsc::RecvTimeoutError::Disconnected) => Ok(SpawnResponse {
                pid: None,
                start_time: None,
                error: Some("the spawn helper exited before answering".into()),
                timings: Vec::new(),
                ready: false,
            }),
            Err(mpsc::RecvTimeoutError::Timeout) => Ok(SpawnResponse {
                pid: None,
                start_time: None,
                error: Some(format!(
                    "the spawn helper did not answer within {}s",
                    ANSWER_TIMEOUT.as_secs()
                )),
                timings: Vec::new(),
                ready: false,
            }),
        }
    }

    fn start(&self) -> Result<Server> {
        let mut child = Command::new(&self.helper.0)
            .args(&self.helper.1)
            .env(SERVE_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| RuntimeError::io("run spawn helper", &self.helper.0, e))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let pending: Pending = Arc::default();
        let routes = Arc::clone(&pending);
        let helper = self.helper.0.clone();
        std::thread::Builder::new()
            .name("hutch-spawn-answers".into())
            .spawn(move || read_answers(BufReader::new(stdout), &routes, &helper))
            .map_err(|e| RuntimeError::io("start a thread for", &self.helper.0, e))?;
        tracing::debug!(pid = child.id(), "long-lived spawn helper started");
        Ok(Server {
            child,
            stdin,
            pending,
            next: 0,
        })
    }
}

impl Drop for Spawner {
    fn drop(&mut self) {
        if let Some(mut s) = lock(&self.server).take() {
            // End of input ends it once the sandboxes it is starting are up.
            drop(s.stdin);
            let _ = s.child.wait();
        }
    }
}

/// Hands each answer line to the request waiting for it; at end of output (the helper
/// exited), fails every request still waiting by dropping its sender.
fn read_answers(out: impl BufRead, pending: &Pending, helper: &Path) {
    for line in out.lines() {
        let Ok(line) = line else { break };
        match serde_json::from_str::<ServeResponse>(&line) {
            Ok(ans) => {
                if let Some(tx) = lock(pending).remove(&ans.id) {
                    let _ = tx.send(ans.resp);
                }
            }
            Err(e) => {
                tracing::warn!(helper = %helper.display(), error = %e, line, "unreadable answer from the spawn helper")
            }
        }
    }
    lock(pending).clear();
}

/// Runs the one-shot helper that starts the zygote of `req`, handing it `socket` as its
/// fd 3 ([`crate::zygote::SOCKET_FD`]).
pub(crate) fn run_zygote_helper(
    helper: &(PathBuf, Vec<String>),
    req: &crate::zygote::ZygoteRequest,
    socket: std::os::fd::OwnedFd,
) -> Result<SpawnResponse> {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let raw = socket.as_raw_fd();
    let mut cmd = Command::new(&helper.0);
    cmd.env(crate::zygote::HELPER_ENV, "1");
    // SAFETY: dup2 is async-signal-safe; between fork and exec nothing else runs. dup2
    // clears close-on-exec on the copy (and on a same-numbered fd the helper clears it).
    unsafe {
        cmd.pre_exec(move || {
            if raw != crate::zygote::SOCKET_FD && libc::dup2(raw, crate::zygote::SOCKET_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // Our copy goes once the helper has its own.
    exchange(cmd, helper, req, "zygote helper", Some(socket))
}

/// Runs the one-shot helper for `req`.
pub(crate) fn run_helper(
    helper: &(PathBuf, Vec<String>),
    req: &SpawnRequest,
) -> Result<SpawnResponse> {
    exchange(Command::new(&helper.0), helper, req, "spawn helper", None)
}

/// Runs `cmd` (the helper, with its arguments added here), hands it `req` as JSON on its
/// stdin and reads its [`SpawnResponse`] from its stdout. `handed` is closed once the
/// helper has started (a descriptor it inherited).
fn exchange(
    mut cmd: Command,
    helper: &(PathBuf, Vec<String>),
    req: &impl serde::Serialize,
    what: &str,
    handed: Option<std::os::fd::OwnedFd>,
) -> Result<SpawnResponse> {
    let body = serde_json::to_vec(req).map_err(|e| RuntimeError::Spawn(e.to_string()))?;
    let mut child = cmd
        .args(&helper.1)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| RuntimeError::io("run spawn helper", &helper.0, e))?;
    drop(handed);
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(&body)
            .map_err(|e| RuntimeError::io("write to", &helper.0, e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| RuntimeError::io("wait for", &helper.0, e))?;
    serde_json::from_slice::<SpawnResponse>(&out.stdout).map_err(|_| {
        RuntimeError::Spawn(format!(
            "{what} {} exited with {}: {}{}",
            Path::new(&helper.0).display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    })
}
