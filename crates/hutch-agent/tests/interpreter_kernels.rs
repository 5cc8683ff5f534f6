//! How the code interpreter drives its kernels, end to end against the real agent binary and
//! real ipykernels: a client going away interrupts, output streams as printed, a dead kernel
//! is replaced, one context runs in order, and a kernel that cannot start is reported. Needs
//! the venv described in `common/interpreter.rs`; without it the tests print SKIP and pass.

mod common;

use std::time::Duration;

use hyper::StatusCode;
use serde_json::json;

use common::interpreter::*;

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
