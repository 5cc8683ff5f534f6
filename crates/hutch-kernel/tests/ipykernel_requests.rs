//! Running code and other requests against a real ipykernel: results, streams, errors,
//! displays, aborted requests, large outputs and non-execute requests. Needs the venv
//! described in `common/mod.rs`; without it each test prints SKIP and passes.

#[macro_use]
mod common;

use std::time::Duration;

use common::*;
use hutch_kernel::{
    e2b, Channel, ExecutionEvent, InterruptMode, KernelError, ReplyStatus, StreamName,
};

#[tokio::test]
async fn state_persists_and_execution_count_increments() {
    let venv = require_venv!();
    let k = Kernel::start(&venv, false);
    let c = k.connect(InterruptMode::Signal).await;

    let first = run(&c, "x = 1").await;
    assert_eq!(done(&first), ReplyStatus::Ok);
    assert_eq!(main_text(&first), None, "an assignment has no result");
    let second = run(&c, "x += 1; x").await;
    assert_eq!(main_text(&second).as_deref(), Some("2"));
    let (a, b) = (count(&first).unwrap(), count(&second).unwrap());
    assert_eq!(b, a + 1);
    // The count comes first, as E2B's number_of_executions line does.
    assert!(matches!(second[0], ExecutionEvent::ExecutionCount(_)));

    let quoted = run(&c, "'hello'").await;
    assert_eq!(main_text(&quoted).as_deref(), Some("hello"));
}

#[tokio::test]
async fn stdout_and_stderr_arrive_as_streams() {
    let venv = require_venv!();
    let k = Kernel::start(&venv, false);
    let c = k.connect(InterruptMode::Signal).await;

    let ev = run(
        &c,
        "import sys\nprint('to out')\nsys.stdout.flush()\nprint('to err', file=sys.stderr)",
    )
    .await;
    let text = |want: StreamName| -> String {
        ev.iter()
            .filter_map(|e| match e {
                ExecutionEvent::Stream { name, text, .. } if *name == want => Some(text.clone()),
                _ => None,
            })
            .collect()
    };
    assert_eq!(text(StreamName::Stdout), "to out\n");
    assert_eq!(text(StreamName::Stderr), "to err\n");
    let line = ev
        .iter()
        .find(|e| matches!(e, ExecutionEvent::Stream { .. }))
        .map(e2b::event_lines)
        .unwrap();
    assert!(line[0]["timestamp"].as_str().unwrap().ends_with("+00:00"));
}

#[tokio::test]
async fn error_has_name_value_and_traceback_and_the_kernel_goes_on() {
    let venv = require_venv!();
    let k = Kernel::start(&venv, false);
    let c = k.connect(InterruptMode::Signal).await;

    let ev = run(&c, "def f():\n    return 1/0\nf()").await;
    assert_eq!(done(&ev), ReplyStatus::Error);
    let errors: Vec<_> = ev
        .iter()
        .filter_map(|e| match e {
            ExecutionEvent::Error {
                ename,
                evalue,
                traceback,
            } => Some((ename, evalue, traceback)),
            _ => None,
        })
        .collect();
    assert_eq!(
        errors.len(),
        1,
        "one error, though iopub and the reply both carry it"
    );
    let (ename, evalue, traceback) = errors[0];
    assert_eq!(ename, "ZeroDivisionError");
    assert_eq!(evalue, "division by zero");
    let joined = e2b::join_traceback(traceback);
    assert!(joined.contains("ZeroDivisionError"), "{joined}");
    assert!(joined.contains("return 1/0"), "{joined}");
    assert!(
        !joined.contains('\u{1b}'),
        "NoColor leaves no ANSI codes: {joined:?}"
    );

    let undefined = run(&c, "undefined_name").await;
    assert!(undefined
        .iter()
        .any(|e| matches!(e, ExecutionEvent::Error { ename, .. } if ename == "NameError")));
    assert_eq!(main_text(&run(&c, "1+1").await).as_deref(), Some("2"));
}

#[tokio::test]
async fn display_data_is_not_the_main_result() {
    let venv = require_venv!();
    let k = Kernel::start(&venv, false);
    let c = k.connect(InterruptMode::Signal).await;

    let ev = run(
        &c,
        "from IPython.display import display, HTML\ndisplay(HTML('<b>hi</b>'))\n42",
    )
    .await;
    let results: Vec<_> = ev
        .iter()
        .filter_map(|e| match e {
            ExecutionEvent::Result {
                data,
                is_main_result,
                ..
            } => Some(e2b::result_json(data, *is_main_result)),
            _ => None,
        })
        .collect();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["is_main_result"], false);
    assert_eq!(results[0]["html"], "<b>hi</b>");
    assert_eq!(results[1]["is_main_result"], true);
    assert_eq!(results[1]["text"], "42");

    let updated = run(
        &c,
        "h = display(HTML('<i>a</i>'), display_id=True)\nh.update(HTML('<i>b</i>'))",
    )
    .await;
    assert!(updated.iter().any(|e| matches!(
        e,
        ExecutionEvent::UpdateDisplayData {
            display_id: Some(_),
            ..
        }
    )));
}

#[tokio::test]
async fn a_request_queued_behind_an_error_is_aborted() {
    let venv = require_venv!();
    let k = Kernel::start(&venv, false);
    let c = k.connect(InterruptMode::Signal).await;

    // Both are queued before the first fails, so stop_on_error aborts the second.
    let failing = c
        .execute_code("import time\ntime.sleep(0.3)\nraise ValueError('boom')")
        .await
        .unwrap();
    let queued = c.execute_code("'never runs'").await.unwrap();
    let (failing, queued) = tokio::join!(failing.collect(), queued.collect());
    assert_eq!(done(&failing.unwrap()), ReplyStatus::Error);
    let queued = queued.unwrap();
    assert_eq!(done(&queued), ReplyStatus::Aborted);
    assert_eq!(main_text(&queued), None);
    let lines: Vec<_> = queued.iter().flat_map(e2b::event_lines).collect();
    assert_eq!(lines[lines.len() - 2]["name"], "ExecutionAborted");
    assert_eq!(main_text(&run(&c, "'runs'").await).as_deref(), Some("runs"));
}

#[tokio::test]
async fn large_and_many_outputs_arrive_intact() {
    let venv = require_venv!();
    let k = Kernel::start(&venv, false);
    let c = k.connect(InterruptMode::Signal).await;

    let ev = run(
        &c,
        "import sys\nfor i in range(20000):\n    print(i)\n    if i % 1000 == 0: sys.stdout.flush()\n\
         from IPython.display import display\ndisplay({'text/plain': 'y' * 8_000_000}, raw=True)",
    )
    .await;
    let stdout: String = ev
        .iter()
        .filter_map(|e| match e {
            ExecutionEvent::Stream { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    let expected: String = (0..20000).map(|i| format!("{i}\n")).collect();
    assert!(stdout == expected, "stdout lost or reordered lines");
    let big = ev
        .iter()
        .find_map(|e| match e {
            ExecutionEvent::Result { data, .. } => data["text/plain"].as_str().map(str::len),
            _ => None,
        })
        .expect("the 8 MB display arrived");
    assert_eq!(big, 8_000_000);
}

#[tokio::test]
async fn other_requests_get_their_reply() {
    let venv = require_venv!();
    let k = Kernel::start(&venv, true);
    let c = k.connect(InterruptMode::Signal).await;

    let reply = c
        .request(
            Channel::Shell,
            "is_complete_request",
            serde_json::json!({"code": "for i in range(3):"}),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert_eq!(reply.msg_type(), "is_complete_reply");
    assert_eq!(reply.content["status"], "incomplete");
    assert!(matches!(
        c.request(
            Channel::IoPub,
            "x",
            serde_json::json!({}),
            Duration::from_secs(1)
        )
        .await,
        Err(KernelError::NotARequestChannel("iopub"))
    ));
}
