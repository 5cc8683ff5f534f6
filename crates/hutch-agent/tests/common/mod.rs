//! Test harness: runs the real `hutch-agent` binary on a free local port with a fixture user
//! database, and talks Connect to it over plain HTTP/1.1 like the E2B SDKs do.

#![allow(dead_code)] // Each test binary uses a different subset.

pub mod files;
pub mod filesystem;
pub mod interactive;
pub mod interpreter;

use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustix::process::{Pid, Signal};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// The uid the fixture's `user` account has when the tests run as root.
pub const TEST_UID: u32 = 1000;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Whether the tests run as root (needed to switch users and chown the fixture home).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Whether this machine lets the tests run the agent as PID 1 of a new pid namespace.
pub fn can_unshare_pid() -> bool {
    is_root()
        && Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// How to run the agent under test.
#[derive(Debug, Clone, Default)]
pub struct Setup {
    /// Run it as PID 1 of a new pid namespace (`unshare --pid --fork --mount-proc`), as the host
    /// does.
    pub pid1: bool,
    /// Give it a non-zero OOM score adjustment before it runs any command: -1000 as the host
    /// does when the tests may lower it (CAP_SYS_RESOURCE), else 500, which tests the same
    /// thing: children must not keep the agent's value.
    pub oom_protect: bool,
}

/// A running agent, killed (by pid) and cleaned up on drop.
pub struct Agent {
    /// The agent process, or `unshare` around it when running as PID 1.
    child: Child,
    /// The agent's pid as seen from the tests.
    agent_pid: i32,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The fixture directory (passwd, group, home).
    pub dir: PathBuf,
    /// The fixture user's home.
    pub home: PathBuf,
    /// The fixture user's uid.
    pub user_uid: u32,
}

impl Agent {
    /// Starts an agent with the given `HUTCH_AGENT_CONFIG` JSON.
    pub async fn start(config: &str) -> Agent {
        Self::start_with(config, Setup::default()).await
    }

    /// Starts an agent with the given `HUTCH_AGENT_CONFIG` JSON, set up as `setup` says.
    pub async fn start_with(config: &str, setup: Setup) -> Agent {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("hutch-agent-test-{}-{n}", std::process::id()));
        let home = dir.join("home");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let (uid, _gid) = write_user_files(&dir, &home);

        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let agent_bin = env!("CARGO_BIN_EXE_hutch-agent");
        let mut cmd = if setup.pid1 {
            let mut c = Command::new("unshare");
            c.args(["--pid", "--fork", "--mount-proc", agent_bin]);
            c
        } else {
            Command::new(agent_bin)
        };
        let child = cmd
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--passwd")
            .arg(dir.join("passwd"))
            .arg("--group")
            .arg(dir.join("group"))
            .env("HUTCH_AGENT_CONFIG", config)
            .env("HUTCH_AGENT_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                let _ = std::fs::remove_dir_all(&dir);
                panic!("cannot spawn hutch-agent: {err}")
            });
        let mut agent = Agent {
            agent_pid: child.id() as i32,
            child,
            addr,
            dir,
            home,
            user_uid: uid,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(resp) = agent.get("/health").await {
                if resp.status() == StatusCode::NO_CONTENT {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "agent did not become healthy");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if setup.pid1 {
            // unshare forks once; its only child is the agent.
            let outer = agent.child.id();
            let children =
                std::fs::read_to_string(format!("/proc/{outer}/task/{outer}/children")).unwrap();
            agent.agent_pid = children.split_whitespace().next().unwrap().parse().unwrap();
        }
        if setup.oom_protect {
            // Before any test command: the agent's children are what the tests look at.
            let path = format!("/proc/{}/oom_score_adj", agent.agent_pid);
            if std::fs::write(&path, "-1000").is_err() {
                std::fs::write(&path, "500").unwrap_or_else(|e| panic!("cannot write {path}: {e}"));
            }
        }
        agent
    }

    /// The agent's pid (as seen from the tests, outside any namespace).
    pub fn pid(&self) -> i32 {
        self.agent_pid
    }

    /// Sends SIGTERM and waits for the agent to exit; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        signal(self.pid(), Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            if Instant::now() > deadline {
                // The outer child too, in case it is `unshare`.
                signal(self.pid(), Signal::KILL);
                signal(self.child.id() as i32, Signal::KILL);
                let _ = self.child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    async fn connect(
        &self,
    ) -> (
        hyper::client::conn::http1::SendRequest<Full<Bytes>>,
        JoinHandle<()>,
    ) {
        let stream = TcpStream::connect(self.addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        (sender, task)
    }

    /// `GET path`; `None` when the agent does not answer (not listening yet).
    pub async fn get(&self, path: &str) -> Option<Response<Incoming>> {
        let stream = TcpStream::connect(self.addr).await.ok()?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .ok()?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = Request::get(format!("http://{}{path}", self.addr))
            .body(Full::new(Bytes::new()))
            .unwrap();
        sender.send_request(req).await.ok()
    }

    /// `POST path` with raw `body`; returns the response and the connection's task (abort it to
    /// drop the connection).
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (Response<Incoming>, JoinHandle<()>) {
        let (mut sender, task) = self.connect().await;
        let mut req = Request::post(format!("http://{}{path}", self.addr))
            .header("content-type", content_type)
            .header("connect-protocol-version", "1");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = sender
            .send_request(req.body(Full::new(Bytes::from(body))).unwrap())
            .await
            .unwrap();
        (resp, task)
    }

    /// Opens a server stream: `message` enveloped, JSON codec.
    pub async fn stream(&self, path: &str, message: &Value, headers: &[(&str, &str)]) -> RpcStream {
        let (resp, task) = self
            .post_raw(path, "application/connect+json", headers, envelope(message))
            .await;
        RpcStream::new(resp, task)
    }

    /// `Start` with the SDK's shape: `/bin/bash -l -c <script>`.
    pub async fn start_bash(
        &self,
        script: &str,
        extra: Value,
        headers: &[(&str, &str)],
    ) -> RpcStream {
        let mut process = serde_json::json!({"cmd": "/bin/bash", "args": ["-l", "-c", script]});
        if let (Some(p), Some(e)) = (
            process.as_object_mut(),
            extra.get("process").and_then(Value::as_object),
        ) {
            for (k, v) in e {
                p.insert(k.clone(), v.clone());
            }
        }
        let mut req = serde_json::json!({"process": process});
        if let (Some(r), Some(e)) = (req.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                if k != "process" {
                    r.insert(k.clone(), v.clone());
                }
            }
        }
        self.stream("/process.Process/Start", &req, headers).await
    }

    /// A unary JSON call; returns the status and the parsed body.
    pub async fn unary(
        &self,
        path: &str,
        message: &Value,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let (resp, _task) = self
            .post_raw(
                path,
                "application/json",
                headers,
                serde_json::to_vec(message).unwrap(),
            )
            .await;
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.terminate();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sends `sig` to `pid`, ignoring failure (the process may be gone already).
pub fn signal(pid: i32, sig: Signal) {
    if let Some(pid) = Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

/// Frames `message` in a Connect envelope.
pub fn envelope(message: &Value) -> Vec<u8> {
    envelope_bytes(&serde_json::to_vec(message).unwrap())
}

/// Frames an already encoded `payload` (JSON or protobuf) in a Connect envelope.
pub fn envelope_bytes(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Splits a whole Connect stream body into its frames' flags and payloads; panics on bytes
/// left over after the last whole frame.
pub fn split_frames(body: &[u8]) -> Vec<(u8, &[u8])> {
    let mut frames = Vec::new();
    let mut rest = body;
    while rest.len() >= 5 {
        let len = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
        frames.push((rest[0], &rest[5..5 + len]));
        rest = &rest[5 + len..];
    }
    assert!(rest.is_empty());
    frames
}

/// The frames of a whole Connect stream body in the JSON codec.
pub fn json_frames(body: &[u8]) -> Vec<Frame> {
    split_frames(body)
        .into_iter()
        .map(|(flags, payload)| Frame {
            flags,
            json: serde_json::from_slice(payload).unwrap(),
        })
        .collect()
}

/// One decoded frame of a Connect stream.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The envelope flags (2 = end of stream).
    pub flags: u8,
    /// The JSON payload.
    pub json: Value,
}

impl Frame {
    /// Which event a message frame carries (`start`, `data`, `end`, `keepalive`).
    pub fn kind(&self) -> &str {
        if self.flags & 2 != 0 {
            return "eos";
        }
        self.json["event"]
            .as_object()
            .and_then(|o| o.keys().next())
            .map(String::as_str)
            .unwrap_or("?")
    }
}

/// A server stream being read frame by frame.
pub struct RpcStream {
    /// The HTTP status.
    pub status: StatusCode,
    /// The response content type.
    pub content_type: String,
    body: Incoming,
    buf: BytesMut,
    conn: JoinHandle<()>,
}

impl RpcStream {
    fn new(resp: Response<Incoming>, conn: JoinHandle<()>) -> Self {
        let content_type = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        RpcStream {
            status: resp.status(),
            content_type,
            body: resp.into_body(),
            buf: BytesMut::new(),
            conn,
        }
    }

    /// The next frame, or `None` at the end of the body.
    pub async fn next(&mut self) -> Option<Frame> {
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes(self.buf[1..5].try_into().unwrap()) as usize;
                if self.buf.len() >= 5 + len {
                    let flags = self.buf[0];
                    self.buf.advance(5);
                    let payload = self.buf.split_to(len);
                    let json = serde_json::from_slice(&payload).expect("frame payload is JSON");
                    return Some(Frame { flags, json });
                }
            }
            match self.body.frame().await {
                None => {
                    assert!(self.buf.is_empty(), "stream ended inside a frame");
                    return None;
                }
                Some(frame) => {
                    if let Ok(data) = frame.expect("body read").into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    /// Reads every remaining frame; panics if that takes longer than `secs`.
    pub async fn collect(mut self, secs: u64) -> Vec<Frame> {
        tokio::time::timeout(Duration::from_secs(secs), async {
            let mut frames = Vec::new();
            while let Some(f) = self.next().await {
                frames.push(f);
            }
            frames
        })
        .await
        .expect("stream did not finish in time")
    }

    /// Drops the TCP connection without reading further.
    pub fn disconnect(self) {
        self.conn.abort();
    }
}

/// The concatenated, base64-decoded `data.<field>` payloads of `frames`.
pub fn output(frames: &[Frame], field: &str) -> Vec<u8> {
    use base64::Engine as _;
    frames
        .iter()
        .filter_map(|f| f.json["event"]["data"][field].as_str())
        .flat_map(|b64| {
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap()
        })
        .collect()
}

/// `output` as a string.
pub fn output_str(frames: &[Frame], field: &str) -> String {
    String::from_utf8(output(frames, field)).unwrap()
}

/// The `end` event of `frames`.
pub fn end_event(frames: &[Frame]) -> Value {
    frames
        .iter()
        .find(|f| f.kind() == "end")
        .map(|f| f.json["event"]["end"].clone())
        .unwrap_or_else(|| panic!("no end event in {frames:?}"))
}

/// `Authorization` header value selecting `user`.
pub fn basic(user: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:"))
    )
}

/// Whether a process with `pid` exists and is not a zombie.
pub fn is_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .chars()
                .next();
            state != Some('Z') && state != Some('X')
        }
        Err(_) => false,
    }
}

/// Zombie children of `parent`.
pub fn zombie_children(parent: i32) -> Vec<i32> {
    let mut zombies = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let rest: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        if rest.len() > 2 && rest[0] == "Z" && rest[1].parse::<i32>().ok() == Some(parent) {
            zombies.push(pid);
        }
    }
    zombies
}

/// Writes `passwd` and `group` files into `dir` with `root` and a `user` whose home is `home`
/// (which it is given), and returns that user's uid and gid: [`TEST_UID`] as root, else ours.
pub fn write_user_files(dir: &std::path::Path, home: &std::path::Path) -> (u32, u32) {
    let (uid, gid) = if is_root() {
        (TEST_UID, TEST_UID)
    } else {
        (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        )
    };
    if is_root() {
        std::os::unix::fs::chown(home, Some(uid), Some(gid)).unwrap();
    }
    std::fs::write(
        dir.join("passwd"),
        format!(
            "root:x:0:0:root:/root:/bin/bash\nuser:x:{uid}:{gid}::{}:/bin/bash\n",
            home.display()
        ),
    )
    .unwrap();
    std::fs::write(dir.join("group"), format!("root:x:0:\nuser:x:{gid}:\n")).unwrap();
    (uid, gid)
}
