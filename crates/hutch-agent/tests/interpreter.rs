//! The code interpreter end to end: the real agent binary with `--interpreter-listen`, real
//! ipykernels spawned by it, driven over HTTP the way the `e2b_code_interpreter` SDK drives
//! port 49999.
//!
//! Tests that run code need a venv with ipykernel at `/var/cache/hutch-dev/kernel-venv` (or
//! `$HUTCH_KERNEL_VENV`, which `scripts/test.sh` sets); without one they print SKIP and pass.

mod common;

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

use common::{is_root, TEST_UID};

const DEFAULT_VENV: &str = "/var/cache/hutch-dev/kernel-venv";
const TOKEN: &str = "interp-token";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The ipykernel venv, or `None` after printing why the test is skipped.
fn venv() -> Option<PathBuf> {
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
struct Interp {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
    home: PathBuf,
}

impl Interp {
    /// Starts an agent whose only kernel spec is a python3 one from `venv` (none without).
    async fn start(venv: Option<&Path>) -> Interp {
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
    async fn start_with_spec(spec: Option<Value>) -> Interp {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("hutch-interp-{}-{n}", std::process::id()));
        let home = dir.join("home");
        let kernels = dir.join("kernels");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(&kernels).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let (uid, gid) = if is_root() {
            (TEST_UID, TEST_UID)
        } else {
            // SAFETY: plain getters.
            unsafe { (libc::geteuid(), libc::getegid()) }
        };
        if is_root() {
            std::os::unix::fs::chown(&home, Some(uid), Some(gid)).unwrap();
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

    async fn try_request(
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
    async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, String) {
        self.try_request(method, path, body, true).await.unwrap()
    }

    /// `POST /execute` that has not been read yet.
    async fn start_execute(&self, body: Value) -> Lines {
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
    async fn execute(&self, body: Value) -> Vec<Value> {
        self.start_execute(body).await.all(120).await
    }

    /// Runs `code` in the default python context.
    async fn run(&self, code: &str) -> Vec<Value> {
        self.execute(json!({"code": code})).await
    }

    /// Creates a context; returns its JSON.
    async fn create_context(&self, body: Value) -> Value {
        let (status, text) = self.request("POST", "/contexts", Some(&body)).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        serde_json::from_str(&text).unwrap()
    }

    async fn contexts(&self) -> Vec<Value> {
        let (status, text) = self.request("GET", "/contexts", None).await;
        assert_eq!(status, StatusCode::OK);
        serde_json::from_str(&text).unwrap()
    }
}

impl Drop for Interp {
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

/// An NDJSON response being read line by line.
struct Lines {
    body: Incoming,
    buf: Vec<u8>,
    conn: JoinHandle<()>,
    started: Instant,
}

impl Lines {
    /// The next line and when it arrived (since the request), or `None` at the end.
    async fn next(&mut self) -> Option<(Value, Duration)> {
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

    async fn all(mut self, secs: u64) -> Vec<Value> {
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
    fn disconnect(self) {
        self.conn.abort();
    }
}

fn of_type<'a>(lines: &'a [Value], kind: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["type"] == kind).collect()
}

/// The main result's text.
fn text(lines: &[Value]) -> Option<String> {
    of_type(lines, "result")
        .into_iter()
        .find(|r| r["is_main_result"] == true)
        .and_then(|r| r["text"].as_str().map(str::to_owned))
}

fn stdout(lines: &[Value]) -> String {
    of_type(lines, "stdout")
        .iter()
        .map(|l| l["text"].as_str().unwrap())
        .collect()
}

fn count(lines: &[Value]) -> u64 {
    of_type(lines, "number_of_executions")[0]["execution_count"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn requests_are_checked_like_e2b_before_any_kernel_runs() {
    let interp = Interp::start(None).await;
    let (status, body) = interp.request("GET", "/health", None).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "\"OK\""));

    let (status, body) = interp
        .try_request("POST", "/execute", Some(&json!({"code": "1"})), false)
        .await
        .unwrap();
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::UNAUTHORIZED, "Unauthorized")
    );

    let both = json!({"code": "1", "context_id": "x", "language": "python"});
    let (status, body) = interp.request("POST", "/execute", Some(&both)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body, "Only one of context_id or language can be provided");

    let unknown = json!({"code": "1", "context_id": "nope"});
    let (status, body) = interp.request("POST", "/execute", Some(&unknown)).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::NOT_FOUND, "Context nope not found")
    );

    let cobol = json!({"code": "1", "language": "cobol"});
    let (status, body) = interp.request("POST", "/execute", Some(&cobol)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("No kernel for language 'cobol'"), "{body}");

    let (status, _) = interp
        .request("POST", "/contexts", Some(&json!({"language": "cobol"})))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for (method, path) in [
        ("POST", "/contexts/nope/restart"),
        ("DELETE", "/contexts/nope"),
    ] {
        let (status, body) = interp.request(method, path, None).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::NOT_FOUND, "Context nope not found")
        );
    }
    let (status, _) = interp
        .request("POST", "/execute", Some(&json!({"nocode": 1})))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn python_keeps_state_and_streams_outputs_errors_and_results() {
    let Some(venv) = venv() else { return };
    let interp = Interp::start(Some(&venv)).await;

    // The default context exists (and its kernel starts) before anyone asks.
    let contexts = interp.contexts().await;
    assert_eq!(contexts.len(), 1, "{contexts:?}");
    assert_eq!(contexts[0]["language"], "python");
    assert_eq!(contexts[0]["cwd"], interp.home.to_str().unwrap());

    let first = interp.run("x = 1").await;
    assert_eq!(first[0]["type"], "number_of_executions");
    assert_eq!(first.last().unwrap(), &json!({"type": "end_of_execution"}));
    let second = interp.run("x += 1; x").await;
    assert_eq!(text(&second).as_deref(), Some("2"));
    assert_eq!(count(&second), count(&first) + 1);

    let out = interp
        .run("import sys\nprint('one', flush=True)\nprint('two', file=sys.stderr, flush=True)\nprint('three')")
        .await;
    let streams: Vec<(&str, &str)> = out
        .iter()
        .filter(|l| l["type"] == "stdout" || l["type"] == "stderr")
        .map(|l| (l["type"].as_str().unwrap(), l["text"].as_str().unwrap()))
        .collect();
    assert_eq!(
        streams,
        [
            ("stdout", "one\n"),
            ("stderr", "two\n"),
            ("stdout", "three\n")
        ]
    );
    let stamp = of_type(&out, "stdout")[0]["timestamp"].as_str().unwrap();
    assert!(stamp.ends_with("+00:00"), "{stamp}");

    let err = interp.run("def f():\n    return 1/0\nf()").await;
    let error = of_type(&err, "error")[0];
    assert_eq!(error["name"], "ZeroDivisionError");
    assert_eq!(error["value"], "division by zero");
    let traceback = error["traceback"].as_str().unwrap();
    assert!(traceback.contains("return 1/0"), "{traceback}");
    assert!(!traceback.contains('\u{1b}'), "tracebacks carry no colours");
    assert_eq!(err.last().unwrap()["type"], "end_of_execution");

    let display = interp
        .run("from IPython.display import display, HTML\ndisplay(HTML('<b>hi</b>'))\n'main'")
        .await;
    let results = of_type(&display, "result");
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["is_main_result"], false);
    assert_eq!(results[0]["html"], "<b>hi</b>");
    assert_eq!(results[1]["is_main_result"], true);
    assert_eq!(results[1]["text"], "main");

    let pwd = interp.run("!pwd").await;
    assert_eq!(stdout(&pwd).trim(), interp.home.to_str().unwrap());
    let uid = interp.run("import os; os.getuid()").await;
    let expected_uid = if is_root() {
        TEST_UID
    } else {
        // SAFETY: plain getter.
        unsafe { libc::geteuid() }
    };
    assert_eq!(text(&uid), Some(expected_uid.to_string()));
}

#[tokio::test]
async fn env_vars_apply_to_one_execution_and_the_sandbox_ones_to_all() {
    let Some(venv) = venv() else { return };
    let interp = Interp::start(Some(&venv)).await;
    let probe = "e = __import__('os').environ; (e.get('SANDBOX_VAR'), e.get('SHARED'), e.get('ONLY_NOW', 'unset'))";

    let before = interp.run(probe).await;
    assert_eq!(
        text(&before).as_deref(),
        Some("('from-sandbox', 'sandbox-value', 'unset')")
    );
    let during = interp
        .execute(json!({
            "code": probe,
            "env_vars": {"SHARED": "it's \"quoted\"", "ONLY_NOW": "now"}
        }))
        .await;
    assert_eq!(
        text(&during).as_deref(),
        Some(r#"('from-sandbox', 'it\'s "quoted"', 'now')"#)
    );
    let after = interp.run(probe).await;
    assert_eq!(text(&after), text(&before));
    // The hidden set-up and clean-up runs do not count.
    assert_eq!(count(&after), count(&during) + 1);
    assert_eq!(count(&during), count(&before) + 1);
    // Nor do they leave names behind in the user's namespace.
    let names = interp.run("'os' in dir()").await;
    assert_eq!(text(&names).as_deref(), Some("False"));
}

#[tokio::test]
async fn contexts_are_isolated_listed_restarted_and_removed() {
    let Some(venv) = venv() else { return };
    let interp = Interp::start(Some(&venv)).await;
    let work = interp.dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o777)).unwrap();

    let context = interp
        .create_context(json!({"cwd": work.to_str().unwrap()}))
        .await;
    assert_eq!(context["language"], "python");
    assert_eq!(context["cwd"], work.to_str().unwrap());
    let id = context["id"].as_str().unwrap().to_owned();
    let in_context = |code: &str| json!({"code": code, "context_id": id});

    let cwd = interp.execute(in_context("import os; os.getcwd()")).await;
    assert_eq!(text(&cwd).as_deref(), work.to_str());
    let set = interp.execute(in_context("y = 41")).await;
    assert_eq!(count(&set), 2, "a context counts its own executions");
    interp.run("y = 'default'").await;
    let y = interp.execute(in_context("y + 1")).await;
    assert_eq!(text(&y).as_deref(), Some("42"));
    let by_language = interp
        .execute(json!({"code": "y", "language": "python"}))
        .await;
    assert_eq!(text(&by_language).as_deref(), Some("default"));

    let listed: Vec<String> = interp
        .contexts()
        .await
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed.last(), Some(&id), "newest last");

    // A restart ends a running execution with an error, and wipes the state.
    let mut running = interp
        .start_execute(in_context("import time; time.sleep(120)"))
        .await;
    running.next().await.unwrap();
    let (status, _) = interp
        .request("POST", &format!("/contexts/{id}/restart"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let ended = running.all(30).await;
    assert_eq!(
        of_type(&ended, "error")[0]["name"],
        "ContextRestarting",
        "{ended:?}"
    );
    assert_eq!(ended.last().unwrap()["type"], "end_of_execution");
    let gone = interp.execute(in_context("y")).await;
    assert_eq!(
        of_type(&gone, "error")[0]["value"],
        "name 'y' is not defined"
    );
    assert_eq!(count(&gone), 1, "a restarted kernel counts from 1");

    let (status, _) = interp
        .request("DELETE", &format!("/contexts/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(interp.contexts().await.len(), 1);
    let (status, _) = interp
        .request("POST", "/execute", Some(&in_context("1")))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_client_that_goes_away_interrupts_the_kernel() {
    let Some(venv) = venv() else { return };
    let interp = Interp::start(Some(&venv)).await;
    for _ in 0..3 {
        let mut sleeping = interp
            .start_execute(json!({"code": "import time; time.sleep(120)"}))
            .await;
        let (first, _) = sleeping.next().await.unwrap();
        assert_eq!(first["type"], "number_of_executions");
        sleeping.disconnect();

        // Without the interrupt this would queue behind the 120 s sleep.
        let next = tokio::time::timeout(Duration::from_secs(60), interp.run("1 + 1"))
            .await
            .expect("the next execution waited for the abandoned one");
        assert_eq!(text(&next).as_deref(), Some("2"), "{next:?}");
    }
}

#[tokio::test]
async fn output_streams_as_printed_with_keepalives_in_silence() {
    let Some(venv) = venv() else { return };
    let interp = Interp::start(Some(&venv)).await;
    let mut lines = interp
        .start_execute(
            json!({"code": "import time\nprint('a', flush=True)\ntime.sleep(6)\nprint('b')"}),
        )
        .await;
    let mut seen = Vec::new();
    while let Some((line, at)) = lines.next().await {
        seen.push((line["type"].as_str().unwrap().to_owned(), at));
    }
    let kinds: Vec<&str> = seen.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "number_of_executions",
            "stdout",
            "keepalive",
            "stdout",
            "end_of_execution"
        ]
    );
    // 'a' arrived while the code still ran, not with the end.
    assert!(seen[4].1 - seen[1].1 > Duration::from_secs(3), "{seen:?}");
}

#[tokio::test]
async fn a_dead_kernel_ends_the_stream_with_an_error_and_is_replaced() {
    let Some(venv) = venv() else { return };
    let interp = Interp::start(Some(&venv)).await;
    interp.run("z = 1").await;
    let died = interp.run("import os; os._exit(3)").await;
    let error = of_type(&died, "error")[0];
    assert_eq!(error["name"], "KernelDied");
    assert!(
        error["value"].as_str().unwrap().contains("exit status 3"),
        "{error}"
    );
    assert_eq!(died.last().unwrap()["type"], "end_of_execution");

    let after = interp.run("'z' in dir()").await;
    assert_eq!(text(&after).as_deref(), Some("False"));
    assert_eq!(count(&after), 1);
}

#[tokio::test]
async fn executions_in_one_context_run_in_order() {
    let Some(venv) = venv() else { return };
    let interp = Interp::start(Some(&venv)).await;
    interp.run("log = []").await;
    let runs = (0..4).map(|i| {
        let interp = &interp;
        async move {
            interp
                .run(&format!(
                    "import time; time.sleep(0.2); log.append({i}); len(log)"
                ))
                .await
        }
    });
    let results = futures_util::future::join_all(runs).await;
    let mut lengths: Vec<String> = results.iter().map(|r| text(r).unwrap()).collect();
    lengths.sort();
    // Each saw a different length: none ran alongside another or was aborted.
    assert_eq!(lengths, ["1", "2", "3", "4"]);
}

#[tokio::test]
async fn a_kernel_that_cannot_start_is_reported_with_its_last_words() {
    let interp = Interp::start_with_spec(Some(json!({
        "argv": ["/bin/sh", "-c", "echo 'no module named ipykernel' >&2; exit 2", "{connection_file}"],
        "language": "python",
    })))
    .await;
    let (status, body) = interp.request("POST", "/contexts", Some(&json!({}))).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body.contains("exit status 2"), "{body}");
    assert!(body.contains("no module named ipykernel"), "{body}");
    // A failed create leaves nothing behind; the eager default context stays listed.
    assert_eq!(interp.contexts().await.len(), 1);

    // Headers are out before the kernel starts, so the failure arrives in the stream.
    let lines = interp.run("1").await;
    assert_eq!(lines[0]["type"], "error");
    assert_eq!(lines[0]["name"], "KernelStartError");
    assert!(lines[0]["value"]
        .as_str()
        .unwrap()
        .contains("no module named ipykernel"));
    assert_eq!(lines[1], json!({"type": "end_of_execution"}));
}
