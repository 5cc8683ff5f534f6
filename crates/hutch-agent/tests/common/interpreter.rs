//! Harness for the code interpreter's tests: the real agent binary with
//! `--interpreter-listen` and one python3 kernel spec, driven over HTTP the way the
//! `e2b_code_interpreter` SDK drives port 49999, and readers of its NDJSON answers.
//!
//! Tests that run code need a venv with ipykernel at `/var/cache/hutch-dev/kernel-venv` (or
//! `$HUTCH_KERNEL_VENV`, which `scripts/test.sh` sets); without one they print SKIP and pass.

use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use rustix::process::Signal;

use super::{signal, write_user_files};

const DEFAULT_VENV: &str = "/var/cache/hutch-dev/kernel-venv";
/// The access token the agent is configured with.
pub const TOKEN: &str = "interp-token";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The ipykernel venv, or `None` after printing why the test is skipped.
pub fn venv() -> Option<PathBuf> {
    let dir = std::env::var_os("HUTCH_KERNEL_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_VENV));
    if dir.join("bin/python").exists() {
        Some(dir)
    } else {
        eprintln!(
            "SKIP: no ipykernel venv at {} (set $HUTCH_KERNEL_VENV); create it with \
             `python3 -m venv {DEFAULT_VENV} && {DEFAULT_VENV}/bin/pip install ipykernel==6.31.0 ipython==9.15.0`",
            dir.display()
        );
        None
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An agent serving the interpreter, killed (by pid) and cleaned up on drop.
pub struct Interp {
    child: Child,
    /// Where the interpreter listens.
    pub addr: SocketAddr,
    /// The fixture directory (passwd, group, home, kernels).
    pub dir: PathBuf,
    /// The fixture user's home.
    pub home: PathBuf,
}

impl Interp {
    /// Starts an agent whose only kernel spec is a python3 one from `venv` (none without).
    pub async fn start(venv: Option<&Path>) -> Interp {
        let spec = venv.map(|venv| {
            json!({
                "argv": [venv.join("bin/python"), "-m", "ipykernel_launcher", "-f",
                         "{connection_file}", "--InteractiveShell.colors=NoColor"],
                "display_name": "Python 3",
                "language": "python",
                "interrupt_mode": "signal",
            })
        });
        Self::start_with_spec(spec).await
    }

    /// Starts an agent whose only kernel spec (if any) is `spec`, named python3.
    pub async fn start_with_spec(spec: Option<Value>) -> Interp {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("hutch-interp-{}-{n}", std::process::id()));
        let home = dir.join("home");
        let kernels = dir.join("kernels");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(&kernels).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        write_user_files(&dir, &home);
        if let Some(spec) = spec {
            std::fs::create_dir_all(kernels.join("python3")).unwrap();
            std::fs::write(kernels.join("python3/kernel.json"), spec.to_string()).unwrap();
        }
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = json!({
            "sandboxId": "interp",
            "envVars": {"SANDBOX_VAR": "from-sandbox", "SHARED": "sandbox-value"},
            "accessToken": TOKEN,
        });
        let child = Command::new(env!("CARGO_BIN_EXE_hutch-agent"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", free_port()))
            .arg("--interpreter-listen")
            .arg(addr.to_string())
            .arg("--kernel-dir")
            .arg(&kernels)
            .arg("--passwd")
            .arg(dir.join("passwd"))
            .arg("--group")
            .arg(dir.join("group"))
            .env("HUTCH_AGENT_CONFIG", config.to_string())
            // HUTCH_INTERP_TEST_LOG=info shows what the agent did.
            .env(
                "HUTCH_AGENT_LOG",
                std::env::var("HUTCH_INTERP_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn hutch-agent");
        let interp = Interp {
            child,
            addr,
            dir,
            home,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok((status, _)) = interp.try_request("GET", "/health", None, false).await {
                assert_eq!(status, StatusCode::OK);
                break;
            }
            assert!(Instant::now() < deadline, "interpreter did not come up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        interp
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        token: bool,
    ) -> Result<(Response<Incoming>, JoinHandle<()>), String> {
        let stream = TcpStream::connect(self.addr)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr))
            .header("content-type", "application/json");
        if token {
            req = req.header("x-access-token", TOKEN);
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let resp = sender
            .send_request(req.body(Full::new(Bytes::from(body))).unwrap())
            .await
            .map_err(|e| e.to_string())?;
        Ok((resp, task))
    }

    /// `method path` with an optional JSON body, with the access token if `token`; returns
    /// the status and the body text, or why the request could not be made.
    pub async fn try_request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        token: bool,
    ) -> Result<(StatusCode, String), String> {
        let (resp, _task) = self.send(method, path, body, token).await?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok((
            status,
            String::from_utf8_lossy(&bytes.to_bytes()).into_owned(),
        ))
    }

    /// A plain request; returns the status and body text.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, String) {
        self.try_request(method, path, body, true).await.unwrap()
    }

    /// `POST /execute` that has not been read yet.
    pub async fn start_execute(&self, body: Value) -> Lines {
        let (resp, task) = self
            .send("POST", "/execute", Some(&body), true)
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
        Lines {
            body: resp.into_body(),
            buf: Vec::new(),
            conn: task,
            started: Instant::now(),
        }
    }

    /// Runs `body` to the end; every line, parsed.
    pub async fn execute(&self, body: Value) -> Vec<Value> {
        self.start_execute(body).await.all(120).await
    }

    /// Runs `code` in the default python context.
    pub async fn run(&self, code: &str) -> Vec<Value> {
        self.execute(json!({"code": code})).await
    }

    /// Creates a context; returns its JSON.
    pub async fn create_context(&self, body: Value) -> Value {
        let (status, text) = self.request("POST", "/contexts", Some(&body)).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        serde_json::from_str(&text).unwrap()
    }

    /// The body of `GET /contexts`.
    pub async fn contexts(&self) -> Vec<Value> {
        let (status, text) = self.request("GET", "/contexts", None).await;
        assert_eq!(status, StatusCode::OK);
        serde_json::from_str(&text).unwrap()
    }
}

impl Drop for Interp {
    fn drop(&mut self) {
        signal(self.child.id() as i32, Signal::TERM);
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

/// An NDJSON response being read line by line.
pub struct Lines {
    body: Incoming,
    buf: Vec<u8>,
    conn: JoinHandle<()>,
    started: Instant,
}

impl Lines {
    /// The next line and when it arrived (since the request), or `None` at the end.
    pub async fn next(&mut self) -> Option<(Value, Duration)> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                let value = serde_json::from_slice(&line[..i]).unwrap_or_else(|e| {
                    panic!("not JSON: {:?}: {e}", String::from_utf8_lossy(&line))
                });
                return Some((value, self.started.elapsed()));
            }
            match self.body.frame().await {
                None => {
                    assert!(self.buf.is_empty(), "stream ended mid-line");
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

    /// Every remaining line; panics if that takes longer than `secs`.
    pub async fn all(mut self, secs: u64) -> Vec<Value> {
        tokio::time::timeout(Duration::from_secs(secs), async {
            let mut lines = Vec::new();
            while let Some((line, _)) = self.next().await {
                lines.push(line);
            }
            lines
        })
        .await
        .expect("execution did not finish in time")
    }

    /// Drops the connection, as an SDK whose timeout fired does.
    pub fn disconnect(self) {
        self.conn.abort();
    }
}

/// The lines whose `type` is `kind`.
pub fn of_type<'a>(lines: &'a [Value], kind: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["type"] == kind).collect()
}

/// The main result's text.
pub fn text(lines: &[Value]) -> Option<String> {
    of_type(lines, "result")
        .into_iter()
        .find(|r| r["is_main_result"] == true)
        .and_then(|r| r["text"].as_str().map(str::to_owned))
}

/// The concatenated stdout text.
pub fn stdout(lines: &[Value]) -> String {
    of_type(lines, "stdout")
        .iter()
        .map(|l| l["text"].as_str().unwrap())
        .collect()
}

/// The execution count the lines report.
pub fn count(lines: &[Value]) -> u64 {
    of_type(lines, "number_of_executions")[0]["execution_count"]
        .as_u64()
        .unwrap()
}
