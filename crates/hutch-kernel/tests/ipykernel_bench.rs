//! This client against raw jupyter_client / pyzmq on the same ipykernel; a benchmark run by
//! hand, never a pass/fail test. Needs the venv described in `common/mod.rs`.

#[macro_use]
mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use hutch_kernel::{InterruptMode, ReplyStatus};

fn median_ms(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    (samples[samples.len() / 2], samples[samples.len() * 9 / 10])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs the jupyter_client baseline script and returns its samples in milliseconds.
fn python_baseline(venv: &Path, args: &[&str]) -> Vec<f64> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bench_jupyter_client.py");
    let out = Command::new(venv.join("bin/python"))
        .arg(script)
        .args(args)
        .output()
        .expect("run jupyter_client baseline");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("baseline prints JSON");
    v["samples_ms"]
        .as_array()
        .expect("samples")
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn report(what: &str, ours: Vec<f64>, theirs: Vec<f64>, their_name: &str) {
    let (om, op) = median_ms(ours);
    let (tm, tp) = median_ms(theirs);
    eprintln!(
        "{what}: hutch-kernel median {om:.3} ms (p90 {op:.3}) | {their_name} median {tm:.3} ms \
         (p90 {tp:.3}) | ratio {:.2}",
        om / tm
    );
}

/// Not a pass/fail test: prints spawn → ready, `1+1` round trip and heartbeat echo
/// medians for this client against raw jupyter_client / pyzmq on the same kernel.
/// Ours and theirs alternate in blocks, so load from other work on the machine hits both.
/// Timings are never asserted.
///
/// `cargo test -p hutch-kernel --release --test ipykernel_bench -- --ignored --nocapture bench`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run by hand"]
async fn bench_against_jupyter_client() {
    let venv = require_venv!();
    const STARTS: usize = 7;
    const BLOCKS: usize = 6;
    const ROUNDS: usize = 50; // per block
    const HB_ROUNDS: usize = 500; // per block

    for transport in ["ipc", "tcp"] {
        let (mut ours, mut listening, mut theirs) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..STARTS {
            let k = Kernel::start(&venv, transport == "tcp");
            let deadline = Instant::now() + Duration::from_secs(60);
            hutch_kernel::wait_for_endpoints(&k.info, deadline)
                .await
                .unwrap();
            listening.push(ms(k.spawned_at.elapsed()));
            let _c = k.connect(InterruptMode::Signal).await;
            ours.push(ms(k.spawned_at.elapsed()));
            drop(k);
            theirs.extend(python_baseline(&venv, &["startup", transport, "1"]));
        }
        eprintln!(
            "spawn → all {transport} endpoints accept: median {:.1} ms",
            median_ms(listening).0
        );
        report(
            &format!("spawn → ready over {transport}"),
            ours,
            theirs,
            "jupyter_client KernelManager",
        );
    }

    for transport in ["ipc", "tcp"] {
        let k = Kernel::start(&venv, transport == "tcp");
        let c = k.connect(InterruptMode::Signal).await;
        let conn = k.conn_file.to_string_lossy().into_owned();
        for _ in 0..20 {
            run(&c, "1+1").await;
        }
        let (mut rt, mut rt_base, mut hb, mut hb_base) = (vec![], vec![], vec![], vec![]);
        for _ in 0..BLOCKS {
            for _ in 0..ROUNDS {
                let t = Instant::now();
                let ev = run(&c, "1+1").await;
                rt.push(ms(t.elapsed()));
                assert_eq!(done(&ev), ReplyStatus::Ok);
            }
            rt_base.extend(python_baseline(
                &venv,
                &["roundtrip", &conn, &ROUNDS.to_string()],
            ));
            // The heartbeat socket is a libzmq echo device running in C, so this compares
            // the ZeroMQ libraries alone: zeromq (pure Rust) against libzmq (pyzmq).
            for _ in 0..HB_ROUNDS {
                hb.push(ms(c.heartbeat(Duration::from_secs(5)).await.unwrap()));
            }
            hb_base.extend(python_baseline(
                &venv,
                &["heartbeat", &conn, &HB_ROUNDS.to_string()],
            ));
        }
        report(
            &format!("1+1 round trip over {transport}"),
            rt,
            rt_base,
            "jupyter_client",
        );
        report(
            &format!("heartbeat echo over {transport}"),
            hb,
            hb_base,
            "pyzmq (libzmq)",
        );
    }
}
