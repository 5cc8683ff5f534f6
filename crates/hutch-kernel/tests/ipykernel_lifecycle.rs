//! A real ipykernel's life: interrupts (by message and by signal), shutdown, restart, a
//! killed kernel, and readiness over ipc and tcp. Needs the venv described in
//! `common/mod.rs`; without it each test prints SKIP and passes.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::*;
use hutch_kernel::{
    ConnectOptions, ExecutionEvent, InterruptMode, Interrupted, KernelClient, KernelError,
};

async fn interrupt_sleep(mode: InterruptMode) {
    let venv = require_venv!();
    let k = Kernel::start(&venv, false);
    let c = k.connect(mode).await;

    let mut exec = c.execute_code("import time\ntime.sleep(30)").await.unwrap();
    // Wait until the kernel has started the cell, then give it a moment to enter sleep.
    loop {
        match exec.next_event().await.unwrap() {
            Some(ExecutionEvent::ExecutionCount(_)) => break,
            Some(_) => {}
            None => panic!("finished before running"),
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let how = c.interrupt().await.unwrap();
    match mode {
        InterruptMode::Message => assert_eq!(how, Interrupted::ByMessage),
        InterruptMode::Signal => assert_eq!(how, Interrupted::BySignal(k.pid())),
    }
    let rest = tokio::time::timeout(Duration::from_secs(20), exec.collect())
        .await
        .expect("interrupt did not stop time.sleep(30)")
        .unwrap();
    assert!(rest
        .iter()
        .any(|e| matches!(e, ExecutionEvent::Error { ename, .. } if ename == "KeyboardInterrupt")));
    eprintln!(
        "interrupt ({mode:?}) → execution done in {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(main_text(&run(&c, "1+1").await).as_deref(), Some("2"));
}

#[tokio::test]
async fn interrupt_request_on_control_stops_a_sleep() {
    interrupt_sleep(InterruptMode::Message).await;
}

#[tokio::test]
async fn sigint_to_the_pid_stops_a_sleep() {
    interrupt_sleep(InterruptMode::Signal).await;
}

#[tokio::test]
async fn signal_mode_without_pid_tells_the_caller_to_signal() {
    let venv = require_venv!();
    let k = Kernel::start(&venv, true);
    let opts = ConnectOptions {
        timeout: Duration::from_secs(60),
        interrupt_mode: InterruptMode::Signal,
        pid: None,
        ..ConnectOptions::default()
    };
    let c = KernelClient::connect(&k.info, opts).await.unwrap();
    assert!(matches!(
        c.interrupt().await,
        Err(KernelError::InterruptNeedsSignal)
    ));
}

#[tokio::test]
async fn shutdown_makes_the_kernel_exit() {
    let venv = require_venv!();
    let mut k = Kernel::start(&venv, false);
    let c = k.connect(InterruptMode::Signal).await;
    assert!(c.is_alive(Duration::from_secs(5)).await);
    c.shutdown(false).await.unwrap();
    assert!(
        k.wait_exit(Duration::from_secs(20)).await,
        "kernel still running after shutdown_reply"
    );
    assert!(!c.is_alive(Duration::from_millis(500)).await);
}

#[tokio::test]
async fn restart_gives_a_fresh_kernel_on_the_same_connection() {
    let venv = require_venv!();
    let mut k = Kernel::start(&venv, false);
    let c = k.connect(InterruptMode::Signal).await;
    run(&c, "x = 5").await;
    let before = count(&run(&c, "x").await).unwrap();
    assert!(before >= 2);

    c.shutdown(true).await.unwrap();
    assert!(k.wait_exit(Duration::from_secs(20)).await);
    drop(c);
    k.spawn();
    let c = k.connect(InterruptMode::Signal).await;
    let ev = run(&c, "x").await;
    assert!(
        ev.iter()
            .any(|e| matches!(e, ExecutionEvent::Error { ename, .. } if ename == "NameError")),
        "state survived the restart: {ev:?}"
    );
    assert_eq!(count(&ev), Some(1), "execution count starts again");
}

#[tokio::test]
async fn a_killed_kernel_fails_running_executions_and_heartbeat() {
    let venv = require_venv!();
    let mut k = Kernel::start(&venv, false);
    let c = k.connect(InterruptMode::Signal).await;
    assert!(c.heartbeat(Duration::from_secs(5)).await.is_ok());

    let exec = c.execute_code("import time\ntime.sleep(30)").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    k.kill();
    let outcome = tokio::time::timeout(Duration::from_secs(20), exec.collect())
        .await
        .expect("execution hung after the kernel died");
    assert!(
        matches!(outcome, Err(KernelError::Disconnected(_))),
        "{outcome:?}"
    );
    assert!(!c.is_alive(Duration::from_millis(500)).await);
    assert!(matches!(
        c.execute_code("1").await,
        Err(KernelError::Disconnected(_))
    ));
}

#[tokio::test]
async fn readiness_over_ipc_and_tcp() {
    let venv = require_venv!();
    for tcp in [false, true] {
        let k = Kernel::start(&venv, tcp);
        let c = k.connect(InterruptMode::Signal).await;
        let ready = k.spawned_at.elapsed();
        assert_eq!(c.kernel_info()["language_info"]["name"], "python");
        assert_eq!(main_text(&run(&c, "1+1").await).as_deref(), Some("2"));
        eprintln!(
            "spawn → ready over {}: {:.1} ms",
            if tcp { "tcp" } else { "ipc" },
            ready.as_secs_f64() * 1e3
        );
    }
}
