//! The runtime's pure pieces and its protocol with the spawn helper, with a shell script
//! standing in for the helper.

use std::path::PathBuf;

use super::*;
use crate::spawner::run_helper;
use crate::testutil::TempDir;

fn request() -> SpawnRequest {
    SpawnRequest {
        id: "sbx1".into(),
        rootfs: PathBuf::from("/s/sbx1/rootfs"),
        agent_bin: PathBuf::from("/usr/lib/hutch/hutch-agent"),
        agent_env: vec![("A".into(), "1".into())],
        id_base: 100_000,
        id_count: 65_536,
        cgroup_procs: Vec::new(),
        cgroup_tasks: Vec::new(),
        net: NetConfig::default().slot(0),
        seccomp: true,
        no_new_privs: true,
        log_file: None,
        work_cgroup: None,
        parent_userns: None,
        nested_root_id: 1,
        gvisor: None,
    }
}

fn sh(script: &str) -> (PathBuf, Vec<String>) {
    (
        PathBuf::from("/bin/sh"),
        vec!["-c".into(), script.to_string()],
    )
}

#[test]
fn limits_convert_megabytes_to_cgroup_bytes() {
    let limits = Limits {
        memory_mb: 512,
        cpus: 2,
        pids: 300,
        disk_mb: 1024,
    };
    assert_eq!(
        limits.cgroup_limits(),
        CgroupLimits {
            memory_bytes: 536_870_912,
            cpus: 2,
            pids: 300,
            io: None,
        }
    );
}

#[test]
fn helper_gets_the_request_on_stdin_and_its_answer_is_parsed() {
    let tmp = TempDir::new("rt-helper");
    let seen = tmp.path().join("request.json");
    let script = format!(
        r#"cat > '{}'; printf '%s' '{{"pid":4242,"start_time":99,"error":null}}'"#,
        seen.display()
    );
    let resp = run_helper(&sh(&script), &request()).expect("helper answers");
    assert_eq!((resp.pid, resp.start_time), (Some(4242), Some(99)));
    let sent: SpawnRequest =
        serde_json::from_str(&std::fs::read_to_string(&seen).expect("request written"))
            .expect("request is JSON");
    assert_eq!(sent.id, "sbx1");
    assert_eq!(sent.net, request().net);
}

#[test]
fn helper_failure_report_is_returned_as_data() {
    let script = r#"cat >/dev/null; printf '%s' '{"pid":null,"start_time":null,"error":"mount proc: EPERM"}'; exit 1"#;
    let resp = run_helper(&sh(script), &request()).expect("a report");
    assert_eq!(resp.pid, None);
    assert_eq!(resp.error.as_deref(), Some("mount proc: EPERM"));
}

#[test]
fn helper_that_answers_garbage_is_reported_with_its_output() {
    let err = run_helper(
        &sh("cat >/dev/null; echo oops; echo bad >&2; exit 3"),
        &request(),
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(
            "starting the sandbox failed: spawn helper /bin/sh exited with exit status: 3: "
        ),
        "{text}"
    );
    assert!(text.contains("oops") && text.contains("bad"), "{text}");
}

#[test]
fn missing_helper_binary_is_named() {
    let helper = (PathBuf::from("/nonexistent/hutch"), vec!["__spawn".into()]);
    let err = run_helper(&helper, &request()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("run spawn helper /nonexistent/hutch: "),
        "{err}"
    );
}
