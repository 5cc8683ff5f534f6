//! The agent as the sandbox's init: PID 1 of its own pid namespace, with the OOM protection the
//! host gives it. Skipped where the tests cannot create pid namespaces (not root, no `unshare`).

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const CONFIG: &str = r#"{"sandboxId":"pid1","envVars":{}}"#;

fn setup() -> Option<Setup> {
    if !can_unshare_pid() {
        eprintln!("skipped: cannot create a pid namespace here (needs root and unshare)");
        return None;
    }
    Some(Setup {
        pid1: true,
        oom_protect: true,
    })
}

#[tokio::test]
async fn as_pid1_it_reaps_every_orphan_in_the_namespace() {
    let Some(setup) = setup() else { return };
    let agent = Agent::start_with(CONFIG, setup).await;
    let root = basic("root");
    let frames = agent
        .start_bash(
            // Double-forked sleeps are orphaned to PID 1 at once; after they end, nothing in the
            // namespace may be left a zombie.
            "echo $(cat /proc/1/cmdline | tr '\\0' ' ' | cut -d' ' -f1); for i in 1 2 3 4 5; do (sleep 0.2 &); done; sleep 1; ps -eo stat= | grep -c '^Z' || true",
            json!({}),
            &[("authorization", &root)],
        )
        .await
        .collect(20)
        .await;
    let out = output_str(&frames, "stdout");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].ends_with("hutch-agent"),
        "PID 1 is not the agent: {out}"
    );
    assert_eq!(lines[1], "0", "zombies left in the namespace: {out}");
}

#[tokio::test]
async fn children_do_not_inherit_the_agents_oom_protection() {
    let Some(setup) = setup() else { return };
    let agent = Agent::start_with(CONFIG, setup).await;
    let own = std::fs::read_to_string(format!("/proc/{}/oom_score_adj", agent.pid())).unwrap();
    assert_ne!(
        own.trim(),
        "0",
        "the harness could not give the agent an OOM adjustment"
    );
    for user in ["root", "user"] {
        let auth = basic(user);
        let frames = agent
            .start_bash(
                "cat /proc/self/oom_score_adj",
                json!({}),
                &[("authorization", &auth)],
            )
            .await
            .collect(10)
            .await;
        assert_eq!(output_str(&frames, "stdout"), "0\n", "as {user}");
    }
}

#[tokio::test]
async fn as_pid1_sigterm_exits_cleanly() {
    let Some(setup) = setup() else { return };
    let mut agent = Agent::start_with(CONFIG, setup).await;
    let mut stream = agent.start_bash("sleep 30", json!({}), &[]).await;
    assert_eq!(stream.next().await.unwrap().kind(), "start");
    let started = Instant::now();
    assert!(
        agent.terminate(),
        "agent as PID 1 did not exit 0 on SIGTERM"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// What reached the agent in its environment (its configuration, with the access token)
/// is gone from the memory `/proc/<pid>/environ` reads, for whoever may read it (root of
/// the host here; root inside under gVisor, whose /proc does not honour "not dumpable").
#[tokio::test]
async fn the_agents_initial_environment_is_scrubbed() {
    let token = "scrub-me-0123456789abcdef";
    let config = json!({"sandboxId": "env", "envVars": {}, "accessToken": token}).to_string();
    let agent = Agent::start(&config).await;
    let environ = match std::fs::read(format!("/proc/{}/environ", agent.pid())) {
        Ok(bytes) => bytes,
        Err(e) => {
            eprintln!("skipped: cannot read the agent's environ here: {e}");
            return;
        }
    };
    let text = String::from_utf8_lossy(&environ);
    assert!(!text.contains(token), "{text:?}");
    assert!(!text.contains("HUTCH_AGENT_CONFIG"), "{text:?}");
    assert!(environ.iter().all(|b| *b == 0), "{text:?}");
}
