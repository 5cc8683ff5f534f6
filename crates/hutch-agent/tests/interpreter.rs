//! The code interpreter end to end: the real agent binary with `--interpreter-listen`, real
//! ipykernels spawned by it, driven over HTTP the way the `e2b_code_interpreter` SDK drives
//! port 49999.
//!
//! Tests that run code need a venv with ipykernel at `/var/cache/hutch-dev/kernel-venv` (or
//! `$HUTCH_KERNEL_VENV`, which `scripts/test.sh` sets); without one they print SKIP and pass.

mod common;

use std::os::unix::fs::PermissionsExt;

use hyper::StatusCode;
use serde_json::json;

use common::interpreter::*;
use common::{is_root, TEST_UID};

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
        rustix::process::geteuid().as_raw()
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
