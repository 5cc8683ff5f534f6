//! The server's hand-in of the default Python kernel, without a sandbox: this test process
//! plays the zygote (it starts the plan's process itself, so the process is its child, as the
//! kernel is the agent's once reparented) and the agent (an `InterpreterService` and a
//! `Reaper` running in this process).
//!
//! The test that runs a real kernel needs an ipykernel venv (`$HUTCH_KERNEL_VENV`,
//! `/var/cache/hutch-test/kernel-venv-*` or `/var/cache/hutch-dev/kernel-venv`); without one
//! it prints SKIP and passes.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hutch_agent::identity::Identity;
use hutch_agent::interpreter::{HandInError, InterpreterError, InterpreterService, Settings};
use hutch_agent::reaper::Reaper;
use hutch_agent::users::UserDb;
use hutch_contracts::agent::{KernelAdopt, KernelPlan};
use hutch_kernel::{ExecuteRequest, ExecutionEvent};
use serde_json::json;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The one reaper of this process: it reaps every child (`waitpid(-1)`), so two would steal
/// each other's. Its loop runs on a runtime of its own, which outlives every test's.
fn reaper() -> Reaper {
    static REAPER: OnceLock<Reaper> = OnceLock::new();
    REAPER
        .get_or_init(|| {
            let reaper = Reaper::new();
            let (tx, rx) = std::sync::mpsc::channel();
            let looping = reaper.clone();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    looping.start().unwrap();
                    tx.send(()).unwrap();
                    std::future::pending::<()>().await
                })
            });
            rx.recv().unwrap();
            reaper
        })
        .clone()
}

/// A scratch directory with a passwd naming this process's own user `user`, its home, a
/// kernel spec directory and a runtime directory; removed on drop.
struct Fixture {
    dir: PathBuf,
    home: PathBuf,
    uid: u32,
    gid: u32,
}

impl Fixture {
    fn new() -> Fixture {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("hutch-handin-{}-{n}", std::process::id()));
        let home = dir.join("home");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(dir.join("kernels")).unwrap();
        let uid = rustix::process::geteuid().as_raw();
        let gid = rustix::process::getegid().as_raw();
        std::fs::write(
            dir.join("passwd"),
            format!("user:x:{uid}:{gid}::{}:/bin/sh\n", home.display()),
        )
        .unwrap();
        std::fs::write(dir.join("group"), format!("user:x:{gid}:\n")).unwrap();
        Fixture {
            dir,
            home,
            uid,
            gid,
        }
    }

    /// Installs a kernel spec named python3 for Python with `argv`.
    fn python_spec(&self, argv: serde_json::Value) {
        let spec = self.dir.join("kernels/python3");
        std::fs::create_dir_all(&spec).unwrap();
        let json = json!({"argv": argv, "display_name": "Python 3", "language": "python",
                          "interrupt_mode": "signal"});
        std::fs::write(spec.join("kernel.json"), json.to_string()).unwrap();
    }

    fn runtime_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    fn service(&self, kernel_from_server: bool) -> InterpreterService {
        let settings = Settings {
            kernel_dirs: vec![self.dir.join("kernels")],
            runtime_dir: self.runtime_dir(),
            users: UserDb::new(self.dir.join("passwd"), self.dir.join("group")),
            identity: Identity::new(
                [("SANDBOX_VAR".to_owned(), "from-sandbox".to_owned())].into(),
                None,
            ),
            kernel_from_server,
        };
        InterpreterService::new(reaper(), settings)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts `cmd` and returns its pid. The process-wide reaper collects its exit, so it is not
/// waited for here (`Child::wait` would race the reaper for the status).
#[allow(clippy::zombie_processes)]
fn start(cmd: &mut Command) -> i32 {
    cmd.spawn().unwrap().id() as i32
}

/// Carries out `plan` as the zygote would (minus the namespaces and the user switch: the
/// plan's user is this process's): its own process group, the plan's argv, env and
/// directory, stdout and stderr into its log file.
fn carry_out(plan: &KernelPlan) -> i32 {
    let log = || {
        std::fs::OpenOptions::new()
            .append(true)
            .open(&plan.log_file)
            .unwrap()
    };
    start(
        Command::new(&plan.argv[0])
            .args(&plan.argv[1..])
            .env_clear()
            .envs(&plan.env)
            .current_dir(&plan.cwd)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log())
            .stderr(log()),
    )
}

fn adopt_of(plan: &KernelPlan, pid: i32) -> KernelAdopt {
    KernelAdopt {
        id: plan.id.clone(),
        pid,
    }
}

fn alive(pid: i32) -> bool {
    hutch_sys::signal::exists(pid)
}

async fn wait_gone(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        assert!(Instant::now() < deadline, "process {pid} is still there");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn adopting_a_child_the_reaper_did_not_spawn_delivers_its_exit() {
    let reaper = reaper();
    let pid = start(Command::new("/bin/sh").args(["-c", "sleep 0.3; exit 3"]));
    let waiter = reaper.adopt(pid).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the exit was not delivered")
        .unwrap();
    assert_eq!(status.describe(), "exit status 3");
}

#[tokio::test]
async fn adopting_a_process_already_reaped_resolves_at_once() {
    let reaper = reaper();
    let pid = start(&mut Command::new("/bin/true"));
    // The reap loop takes it as an orphan: nobody is registered for it.
    wait_gone(pid).await;
    let waiter = reaper.adopt(pid).unwrap();
    let status = tokio::time::timeout(Duration::from_millis(100), waiter)
        .await
        .expect("the waiter of a gone process did not resolve at once")
        .unwrap();
    assert!(!status.success(), "{}", status.describe());
}

#[tokio::test]
async fn adopting_a_pid_the_reaper_spawned_is_refused() {
    let reaper = reaper();
    let spawner = reaper.clone();
    let (child, waiter) = tokio::task::spawn_blocking(move || {
        spawner.spawn(Command::new("/bin/sleep").arg("30")).unwrap()
    })
    .await
    .unwrap();
    let pid = child.id() as i32;
    let err = reaper.adopt(pid).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
    // The spawned child's own waiter is untouched.
    assert!(reaper.signal(pid, 9).unwrap());
    let status = waiter.await.unwrap();
    assert_eq!(status.describe(), "signal: killed");
}

#[tokio::test]
async fn prepare_answers_the_plan_a_spawn_would_use_and_holds_it_until_adopted() {
    let fx = Fixture::new();
    fx.python_spec(json!(["/bin/false", "-f", "{connection_file}"]));
    let service = fx.service(true);
    let plan = service.prepare_kernel().await.unwrap();

    let conn = PathBuf::from(&plan.connection_file);
    assert_eq!(
        plan.argv,
        ["/bin/false", "-f", plan.connection_file.as_str()]
    );
    let dir = conn.parent().unwrap();
    assert_eq!(dir.parent().unwrap(), fx.runtime_dir());
    let info = hutch_kernel::ConnectionInfo::read(&conn).unwrap();
    assert_eq!(info.transport, hutch_kernel::Transport::Ipc);

    let log = Path::new(&plan.log_file);
    assert_eq!(log.parent().unwrap(), dir);
    let meta = std::fs::metadata(log).unwrap();
    assert_eq!(meta.len(), 0);
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!((meta.uid(), meta.gid()), (fx.uid, fx.gid));
    assert_eq!(std::fs::metadata(dir).unwrap().uid(), fx.uid);

    assert_eq!((plan.uid, plan.gid), (fx.uid, fx.gid));
    assert_eq!(plan.groups, [fx.gid]);
    assert_eq!(Path::new(&plan.cwd), fx.home);
    assert_eq!(plan.env["HOME"], fx.home.to_string_lossy());
    assert_eq!(plan.env["USER"], "user");
    assert_eq!(plan.env["LOGNAME"], "user");
    assert_eq!(plan.env["SANDBOX_VAR"], "from-sandbox");
    assert!(plan.env.contains_key("PATH"));
    assert!(!plan.id.is_empty());

    // One plan at a time.
    match service.prepare_kernel().await {
        Err(HandInError::Pending(id)) => assert_eq!(id, plan.id),
        other => panic!("a second prepare gave {other:?}"),
    }
    // A wrong id or an impossible pid leaves the plan pending.
    let wrong = KernelAdopt {
        id: "not-the-plan".into(),
        pid: 12345,
    };
    assert!(matches!(
        service.adopt_kernel(&wrong).await,
        Err(HandInError::UnknownPlan(_))
    ));
    for pid in [0, 1, -5, std::process::id() as i32] {
        let bad = KernelAdopt {
            id: plan.id.clone(),
            pid,
        };
        assert!(matches!(
            service.adopt_kernel(&bad).await,
            Err(HandInError::BadPid(_))
        ));
    }
    assert!(matches!(
        service.prepare_kernel().await,
        Err(HandInError::Pending(_))
    ));
}

#[tokio::test]
async fn a_plan_whose_process_dies_fails_adoption_with_its_log_and_is_dropped() {
    let fx = Fixture::new();
    fx.python_spec(json!([
        "/bin/sh",
        "-c",
        "echo 'no module named ipykernel' >&2; exit 3",
        "{connection_file}"
    ]));
    let service = fx.service(true);
    let plan = service.prepare_kernel().await.unwrap();
    let pid = carry_out(&plan);
    let err = service
        .adopt_kernel(&adopt_of(&plan, pid))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, HandInError::Interpreter(InterpreterError::Start(_))),
        "{err:?}"
    );
    assert!(text.contains("no module named ipykernel"), "{text}");
    assert!(!Path::new(&plan.connection_file).parent().unwrap().exists());

    // The plan is gone with it: adopting again is unknown, preparing again works.
    assert!(matches!(
        service.adopt_kernel(&adopt_of(&plan, pid)).await,
        Err(HandInError::UnknownPlan(_))
    ));
    let again = service.prepare_kernel().await.unwrap();
    assert_ne!(again.id, plan.id);
}

#[tokio::test]
async fn a_failed_adoption_kills_what_the_kernel_left_in_its_group() {
    let fx = Fixture::new();
    let bg = fx.dir.join("bg.pid");
    fx.python_spec(json!([
        "/bin/sh",
        "-c",
        format!("sleep 60 & echo $! > {}; exit 1", bg.display()),
        "{connection_file}"
    ]));
    let service = fx.service(true);
    let plan = service.prepare_kernel().await.unwrap();
    let pid = carry_out(&plan);
    let err = service
        .adopt_kernel(&adopt_of(&plan, pid))
        .await
        .unwrap_err();
    assert!(
        matches!(err, HandInError::Interpreter(InterpreterError::Start(_))),
        "{err:?}"
    );
    let sleep: i32 = std::fs::read_to_string(&bg)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_gone(sleep).await;
}

#[tokio::test]
async fn without_a_python_kernel_there_is_nothing_to_prepare() {
    let fx = Fixture::new();
    let service = fx.service(true);
    assert!(matches!(
        service.prepare_kernel().await,
        Err(HandInError::Interpreter(InterpreterError::NoKernel { .. }))
    ));
}

#[tokio::test]
async fn kernel_from_server_keeps_the_default_python_kernel_from_starting() {
    for kernel_from_server in [true, false] {
        let fx = Fixture::new();
        let marker = fx.dir.join("started");
        fx.python_spec(json!([
            "/bin/sh",
            "-c",
            format!("touch {}; exit 1", marker.display()),
            "{connection_file}"
        ]));
        let service = fx.service(kernel_from_server);
        service.start_defaults().await;
        assert!(service.list().await.iter().any(|c| c.language == "python"));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(marker.exists(), !kernel_from_server, "{kernel_from_server}");
    }
}

/// The ipykernel venv, or `None` after printing why the test is skipped.
fn venv() -> Option<PathBuf> {
    let candidates = std::env::var_os("HUTCH_KERNEL_VENV")
        .map(PathBuf::from)
        .into_iter()
        .chain(
            std::fs::read_dir("/var/cache/hutch-test")
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("kernel-venv-"))
                }),
        )
        .chain([PathBuf::from("/var/cache/hutch-dev/kernel-venv")]);
    for dir in candidates {
        if dir.join("bin/python").exists() {
            return Some(dir);
        }
    }
    eprintln!("SKIP: no ipykernel venv ($HUTCH_KERNEL_VENV, /var/cache/hutch-test/kernel-venv-*, /var/cache/hutch-dev/kernel-venv)");
    None
}

async fn run(service: &InterpreterService, code: &str) -> Vec<ExecutionEvent> {
    let context = service.default_context("python").await.unwrap();
    let kernel = service.kernel(&context).await.unwrap();
    let client = kernel.client().unwrap();
    let execution = client.execute(ExecuteRequest::new(code)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(60), execution.collect())
        .await
        .expect("the execution did not end")
        .unwrap()
}

fn result_text(events: &[ExecutionEvent]) -> Option<String> {
    events.iter().find_map(|e| match e {
        ExecutionEvent::Result {
            data,
            is_main_result: true,
            ..
        } => data["text/plain"].as_str().map(str::to_owned),
        _ => None,
    })
}

#[tokio::test]
async fn an_adopted_ipykernel_runs_code_is_interrupted_and_stopped_like_a_spawned_one() {
    let Some(venv) = venv() else { return };
    let fx = Fixture::new();
    fx.python_spec(json!([
        venv.join("bin/python"),
        "-m",
        "ipykernel_launcher",
        "-f",
        "{connection_file}",
        "--InteractiveShell.colors=NoColor"
    ]));
    let service = fx.service(true);
    service.start_defaults().await;
    let plan = service.prepare_kernel().await.unwrap();
    let pid = carry_out(&plan);
    service.adopt_kernel(&adopt_of(&plan, pid)).await.unwrap();

    let context = service.default_context("python").await.unwrap();
    let kernel = service.kernel(&context).await.unwrap();
    assert_eq!(
        kernel.pid() as i32,
        pid,
        "the context started a kernel of its own"
    );
    assert_eq!(
        result_text(&run(&service, "1+1").await).as_deref(),
        Some("2")
    );
    let env = run(&service, "import os; os.environ['SANDBOX_VAR']").await;
    assert_eq!(result_text(&env).as_deref(), Some("'from-sandbox'"));
    assert!(matches!(
        service.prepare_kernel().await,
        Err(HandInError::HasKernel)
    ));

    // A signal-mode interrupt reaches the adopted process.
    let client = kernel.client().unwrap();
    let sleeping = client
        .execute(ExecuteRequest::new("import time; time.sleep(60)"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    kernel.interrupt().await;
    let events = tokio::time::timeout(Duration::from_secs(20), sleeping.collect())
        .await
        .expect("the interrupt did not end the execution")
        .unwrap();
    assert!(
        events.iter().any(
            |e| matches!(e, ExecutionEvent::Error { ename, .. } if ename == "KeyboardInterrupt")
        ),
        "{events:?}"
    );

    // Removing the context stops the process and its directory goes.
    service.remove(&context.id).await.unwrap();
    assert!(kernel.has_exited());
    wait_gone(pid).await;
    let dir = PathBuf::from(&plan.connection_file);
    let deadline = Instant::now() + Duration::from_secs(5);
    while dir.parent().unwrap().exists() {
        assert!(Instant::now() < deadline, "the socket directory stayed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
