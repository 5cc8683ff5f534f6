//! Harness for the integration tests against a real ipykernel.
//!
//! They need a venv with ipykernel at `/var/cache/hutch-dev/kernel-venv` (or
//! `$HUTCH_KERNEL_VENV`); without it each test prints SKIP and passes. Create it with:
//!
//! ```sh
//! python3 -m venv /var/cache/hutch-dev/kernel-venv
//! /var/cache/hutch-dev/kernel-venv/bin/pip install ipykernel==6.31.0 ipython==9.15.0 jupyter_client==8.6.3
//! ```
//!
//! Every kernel is killed by pid when its guard drops, including when a test panics.

#![allow(dead_code)] // Each test binary uses a different subset.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hutch_kernel::{
    e2b, ConnectOptions, ConnectionInfo, ExecutionEvent, InterruptMode, KernelClient, ReplyStatus,
};

/// Where the venv is looked for without `$HUTCH_KERNEL_VENV`.
pub const DEFAULT_VENV: &str = "/var/cache/hutch-dev/kernel-venv";

/// The venv to use, or the path where it was looked for.
pub fn venv() -> Result<PathBuf, PathBuf> {
    let dir = std::env::var_os("HUTCH_KERNEL_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_VENV));
    if dir.join("bin/python").exists() {
        Ok(dir)
    } else {
        Err(dir)
    }
}

macro_rules! require_venv {
    () => {
        match venv() {
            Ok(v) => v,
            Err(missing) => {
                eprintln!(
                    "SKIP: no ipykernel venv at {} (set $HUTCH_KERNEL_VENV to use another); \
                     create it with `python3 -m venv {DEFAULT_VENV} && \
                     {DEFAULT_VENV}/bin/pip install ipykernel==6.31.0 ipython==9.15.0 jupyter_client==8.6.3`",
                    missing.display()
                );
                return;
            }
        }
    };
}

/// A kernel process this test started; killed (by pid) and cleaned up on drop.
pub struct Kernel {
    venv: PathBuf,
    dir: PathBuf,
    /// The connection file the kernel was started with.
    pub conn_file: PathBuf,
    /// The kernel's connection.
    pub info: ConnectionInfo,
    child: Option<Child>,
    /// When the process was last spawned.
    pub spawned_at: Instant,
}

impl Kernel {
    /// Starts ipykernel from `venv` on a new connection file (tcp or ipc).
    pub fn start(venv: &Path, tcp: bool) -> Kernel {
        let dir = std::env::temp_dir().join(format!("hk-{}", hutch_kernel::message::new_id()));
        std::fs::create_dir_all(&dir).unwrap();
        let info = if tcp {
            ConnectionInfo::new_tcp().unwrap()
        } else {
            ConnectionInfo::new_ipc(&dir.join("s")).unwrap()
        };
        let conn_file = dir.join("connection.json");
        info.write(&conn_file).unwrap();
        let mut k = Kernel {
            venv: venv.to_owned(),
            dir,
            conn_file,
            info,
            child: None,
            spawned_at: Instant::now(),
        };
        k.spawn();
        k
    }

    /// Starts (or restarts) the process on the same connection file.
    pub fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.join("kernel.log")).unwrap();
        let child = Command::new(self.venv.join("bin/python"))
            .args(["-m", "ipykernel_launcher", "-f"])
            .arg(&self.conn_file)
            // E2B's kernels run with colours off; tracebacks then carry no ANSI codes.
            .arg("--InteractiveShell.colors=NoColor")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            // Own process group, as the agent should do, so SIGINT reaches the whole group.
            .process_group(0)
            .spawn()
            .expect("spawn ipykernel");
        self.spawned_at = Instant::now();
        self.child = Some(child);
    }

    /// The running process's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Connects a client; panics with the kernel's log if that fails.
    pub async fn connect(&self, mode: InterruptMode) -> KernelClient {
        let opts = ConnectOptions {
            timeout: Duration::from_secs(60),
            interrupt_mode: mode,
            pid: Some(self.pid()),
            ..ConnectOptions::default()
        };
        match KernelClient::connect(&self.info, opts).await {
            Ok(c) => c,
            Err(e) => panic!("connect failed: {e}\nkernel log:\n{}", self.log()),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("kernel.log")).unwrap_or_default()
    }

    /// Waits for the process to exit on its own; false on timeout.
    pub async fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Kills and reaps the process, if it runs.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        self.kill();
        if std::env::var_os("HUTCH_KERNEL_TEST_LOG").is_some() || std::thread::panicking() {
            eprintln!("--- kernel log ({}):\n{}", self.dir.display(), self.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `code` and collects its events; panics if that takes over a minute.
pub async fn run(client: &KernelClient, code: &str) -> Vec<ExecutionEvent> {
    let exec = client
        .execute_code(code)
        .await
        .expect("send execute_request");
    tokio::time::timeout(Duration::from_secs(60), exec.collect())
        .await
        .expect("execution did not finish")
        .expect("kernel lost")
}

/// The main result's text, as E2B would report it.
pub fn main_text(events: &[ExecutionEvent]) -> Option<String> {
    events.iter().find_map(|e| match e {
        ExecutionEvent::Result {
            data,
            is_main_result: true,
            ..
        } => e2b::result_json(data, true)["text"]
            .as_str()
            .map(str::to_owned),
        _ => None,
    })
}

/// The execution count the events report.
pub fn count(events: &[ExecutionEvent]) -> Option<u64> {
    events.iter().find_map(|e| match e {
        ExecutionEvent::ExecutionCount(n) => Some(*n),
        _ => None,
    })
}

/// The reply status of the final `Done` event.
pub fn done(events: &[ExecutionEvent]) -> ReplyStatus {
    match events.last() {
        Some(ExecutionEvent::Done(r)) => r.status,
        other => panic!("last event is not Done: {other:?}"),
    }
}
