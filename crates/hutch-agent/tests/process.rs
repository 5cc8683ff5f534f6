//! The process service end to end: the real agent binary, driven over HTTP the way the E2B SDK
//! drives envd.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const CONFIG: &str = r#"{"sandboxId":"test","envVars":{"FOO":"bar","SANDBOX_ONLY":"s"}}"#;

#[tokio::test]
async fn health_is_204_with_no_body() {
    let agent = Agent::start(CONFIG).await;
    let resp = agent.get("/health").await.unwrap();
    assert_eq!(resp.status(), 204);
    use http_body_util::BodyExt;
    assert!(resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .is_empty());
}

#[tokio::test]
async fn echo_streams_start_then_stdout_then_end_then_end_of_stream() {
    let agent = Agent::start(CONFIG).await;
    let stream = agent.start_bash("echo hi", json!({}), &[]).await;
    assert_eq!(stream.status, 200);
    assert_eq!(stream.content_type, "application/connect+json");
    let frames = stream.collect(10).await;
    let kinds: Vec<&str> = frames.iter().map(Frame::kind).collect();
    assert_eq!(kinds, ["start", "data", "end", "eos"], "{frames:?}");
    assert!(frames[0].json["event"]["start"]["pid"].as_u64().unwrap() > 1);
    assert_eq!(output_str(&frames, "stdout"), "hi\n");
    assert_eq!(
        end_event(&frames),
        json!({"exitCode": 0, "exited": true, "status": "exit status 0"})
    );
    assert_eq!(frames[3].json, json!({}));
}

#[tokio::test]
async fn nonzero_exit_and_stderr_are_reported_like_envd() {
    let agent = Agent::start(CONFIG).await;
    let frames = agent
        .start_bash("echo out; echo err >&2; exit 3", json!({}), &[])
        .await
        .collect(10)
        .await;
    assert_eq!(output_str(&frames, "stdout"), "out\n");
    assert_eq!(output_str(&frames, "stderr"), "err\n");
    assert_eq!(
        end_event(&frames),
        json!({"exitCode": 3, "exited": true, "status": "exit status 3", "error": "exit status 3"})
    );
}

#[tokio::test]
async fn three_megabytes_of_output_arrive_complete_in_bounded_chunks() {
    let agent = Agent::start(CONFIG).await;
    let frames = agent
        .start_bash("head -c 3000000 /dev/zero | tr '\\0' x", json!({}), &[])
        .await
        .collect(60)
        .await;
    let out = output(&frames, "stdout");
    assert_eq!(out.len(), 3_000_000);
    assert!(out.iter().all(|b| *b == b'x'));
    let data_frames = frames.iter().filter(|f| f.kind() == "data").count();
    assert!(
        data_frames >= 3_000_000 / (32 << 10),
        "only {data_frames} data frames"
    );
    assert_eq!(end_event(&frames)["exitCode"], 0);
}

#[tokio::test]
async fn environment_layers_base_then_sandbox_then_request() {
    let agent = Agent::start(CONFIG).await;
    let frames = agent
        .start_bash(
            "echo \"$FOO|$SANDBOX_ONLY|$REQ|$HOME|$USER|$LOGNAME|${HUTCH_AGENT_CONFIG-unset}\"; test -n \"$PATH\"",
            json!({"process": {"envs": {"FOO": "from-request", "REQ": "r"}}}),
            &[],
        )
        .await
        .collect(10)
        .await;
    let home = agent.home.display().to_string();
    assert_eq!(
        output_str(&frames, "stdout"),
        format!("from-request|s|r|{home}|user|user|unset\n")
    );
    assert_eq!(end_event(&frames)["exitCode"], 0);
}

#[tokio::test]
async fn default_user_runs_in_home_with_its_uid() {
    let agent = Agent::start(CONFIG).await;
    let frames = agent
        .start_bash("id -u; id -g; pwd", json!({}), &[])
        .await
        .collect(10)
        .await;
    assert_eq!(
        output_str(&frames, "stdout"),
        format!(
            "{uid}\n{uid_g}\n{}\n",
            agent.home.display(),
            uid = agent.user_uid,
            uid_g = agent.user_uid
        )
    );
}

#[tokio::test]
async fn root_is_chosen_by_basic_auth_and_unknown_users_are_unauthenticated() {
    if !is_root() {
        eprintln!("skipped: switching to root needs the tests to run as root");
        return;
    }
    let agent = Agent::start(CONFIG).await;
    let auth = basic("root");
    let frames = agent
        .start_bash("id -u; echo $HOME", json!({}), &[("authorization", &auth)])
        .await
        .collect(10)
        .await;
    assert_eq!(output_str(&frames, "stdout"), "0\n/root\n");

    let auth = basic("nosuchuser");
    let frames = agent
        .start_bash("true", json!({}), &[("authorization", &auth)])
        .await
        .collect(10)
        .await;
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].kind(), "eos");
    assert_eq!(frames[0].json["error"]["code"], "unauthenticated");
}

#[tokio::test]
async fn cwd_is_resolved_against_home_and_a_missing_one_is_invalid_argument() {
    let agent = Agent::start(CONFIG).await;
    std::fs::create_dir(agent.home.join("sub")).unwrap();
    let frames = agent
        .start_bash("pwd", json!({"process": {"cwd": "sub"}}), &[])
        .await
        .collect(10)
        .await;
    assert_eq!(
        output_str(&frames, "stdout"),
        format!("{}/sub\n", agent.home.display())
    );
    let frames = agent
        .start_bash("pwd", json!({"process": {"cwd": "/tmp"}}), &[])
        .await
        .collect(10)
        .await;
    assert_eq!(output_str(&frames, "stdout"), "/tmp\n");

    let stream = agent
        .start_bash("pwd", json!({"process": {"cwd": "/no/such/dir"}}), &[])
        .await;
    assert_eq!(stream.status, 200);
    let frames = stream.collect(10).await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0].json["error"]["code"], "invalid_argument");
    assert!(frames[0].json["error"]["message"]
        .as_str()
        .unwrap()
        .contains("/no/such/dir"));
}

#[tokio::test]
async fn stdin_is_an_open_pipe_unless_disabled() {
    let agent = Agent::start(CONFIG).await;
    // `read -t` times out (status > 128) on an open, silent pipe, and fails with 1 at EOF.
    let script = "read -t 1 line; echo $?";
    let open = agent
        .start_bash(script, json!({}), &[])
        .await
        .collect(10)
        .await;
    let code: i32 = output_str(&open, "stdout").trim().parse().unwrap();
    assert!(
        code > 128,
        "stdin was not an open pipe: read returned {code}"
    );
    let closed = agent
        .start_bash(script, json!({"stdin": false}), &[])
        .await
        .collect(10)
        .await;
    assert_eq!(output_str(&closed, "stdout"), "1\n");
}

#[tokio::test]
async fn connect_timeout_kills_the_process_and_ends_the_stream_with_deadline_exceeded() {
    let agent = Agent::start(CONFIG).await;
    let started = Instant::now();
    let mut stream = agent
        .start_bash(
            "echo before; sleep 30",
            json!({}),
            &[("connect-timeout-ms", "700")],
        )
        .await;
    let pid = stream.next().await.unwrap().json["event"]["start"]["pid"]
        .as_i64()
        .unwrap() as i32;
    let frames = stream.collect(10).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(output_str(&frames, "stdout"), "before\n");
    // Like envd, whose limit is also the call's deadline: no `end`, a deadline_exceeded stream end.
    let last = frames.last().unwrap();
    assert_eq!(last.kind(), "eos");
    assert_eq!(
        last.json["error"]["code"], "deadline_exceeded",
        "{frames:?}"
    );
    assert!(frames.iter().all(|f| f.kind() != "end"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while is_alive(pid) {
        assert!(
            Instant::now() < deadline,
            "process {pid} survived its timeout"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The agent forgets the process once its reaper has collected it, a moment after it died.
    loop {
        let (_, list) = agent.unary("/process.Process/List", &json!({}), &[]).await;
        if list == json!({"processes": []}) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the killed process stays listed: {list}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_process_finishing_within_its_timeout_ends_normally() {
    let agent = Agent::start(CONFIG).await;
    let frames = agent
        .start_bash("exit 4", json!({}), &[("connect-timeout-ms", "10000")])
        .await
        .collect(10)
        .await;
    assert_eq!(end_event(&frames)["exitCode"], 4);
    assert_eq!(frames.last().unwrap().json, json!({}));
}

#[tokio::test]
async fn keepalives_fill_silences_longer_than_the_interval() {
    let agent = Agent::start(CONFIG).await;
    let frames = agent
        .start_bash(
            "sleep 3.5; echo done",
            json!({}),
            &[("keepalive-ping-interval", "1")],
        )
        .await
        .collect(10)
        .await;
    let kinds: Vec<&str> = frames.iter().map(Frame::kind).collect();
    let keepalives = kinds.iter().filter(|k| **k == "keepalive").count();
    assert!(keepalives >= 2, "{kinds:?}");
    assert_eq!(kinds.first(), Some(&"start"));
    assert_eq!(&kinds[kinds.len() - 3..], ["data", "end", "eos"]);
}

#[tokio::test]
async fn list_shows_running_processes_and_send_signal_ends_them() {
    let agent = Agent::start(CONFIG).await;
    let mut stream = agent
        .start_bash(
            "sleep 30",
            json!({"tag": "sleeper", "process": {"envs": {"A": "1"}}}),
            &[],
        )
        .await;
    let start = stream.next().await.unwrap();
    let pid = start.json["event"]["start"]["pid"].as_u64().unwrap();

    let (status, list) = agent.unary("/process.Process/List", &json!({}), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(
        list,
        json!({"processes": [{
            "config": {"cmd": "/bin/bash", "args": ["-l", "-c", "sleep 30"], "envs": {"A": "1"}},
            "pid": pid,
            "tag": "sleeper"
        }]})
    );

    let (status, body) = agent
        .unary(
            "/process.Process/SendSignal",
            &json!({"process": {"pid": pid}, "signal": "SIGNAL_SIGTERM"}),
            &[],
        )
        .await;
    assert_eq!((status.as_u16(), body), (200, json!({})));
    let rest = stream.collect(10).await;
    assert_eq!(end_event(&rest)["status"], "signal: terminated");
    assert_eq!(end_event(&rest)["exitCode"], -1);

    let (_, list) = agent.unary("/process.Process/List", &json!({}), &[]).await;
    assert_eq!(list, json!({"processes": []}));
    let (status, body) = agent
        .unary(
            "/process.Process/SendSignal",
            &json!({"process": {"pid": pid}, "signal": "SIGNAL_SIGKILL"}),
            &[],
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        json!({"code": "not_found", "message": format!("process with pid {pid} not found")})
    );
}

#[tokio::test]
async fn a_client_disconnecting_does_not_kill_its_process() {
    let agent = Agent::start(CONFIG).await;
    let marker = agent.home.join("marker");
    let script = format!("sleep 1; echo survived > {}", marker.display());
    let mut stream = agent.start_bash(&script, json!({}), &[]).await;
    let pid = stream.next().await.unwrap().json["event"]["start"]["pid"]
        .as_i64()
        .unwrap();
    stream.disconnect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !marker.exists() {
        assert!(
            Instant::now() < deadline,
            "the process did not survive its client"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And once it ends it is reaped and forgotten.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, list) = agent.unary("/process.Process/List", &json!({}), &[]).await;
        if list == json!({"processes": []}) && !is_alive(pid as i32) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "process {pid} was not reaped: {list}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_background_child_holding_the_pipe_does_not_delay_the_end_and_orphans_are_reaped() {
    let agent = Agent::start(CONFIG).await;
    let started = Instant::now();
    let frames = agent
        .start_bash("sleep 5 & echo $!", json!({}), &[])
        .await
        .collect(10)
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "end waited for the background child"
    );
    assert_eq!(end_event(&frames)["exitCode"], 0);
    let orphan: i32 = output_str(&frames, "stdout").trim().parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while is_alive(orphan) || !zombie_children(agent.pid()).is_empty() {
        assert!(Instant::now() < deadline, "orphan {orphan} was not reaped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sigterm_stops_the_agent_and_the_processes_it_started() {
    let mut agent = Agent::start(CONFIG).await;
    let mut stream = agent.start_bash("sleep 30", json!({}), &[]).await;
    let pid = stream.next().await.unwrap().json["event"]["start"]["pid"]
        .as_i64()
        .unwrap() as i32;
    assert!(is_alive(pid));
    assert!(agent.terminate(), "agent did not exit cleanly on SIGTERM");
    let deadline = Instant::now() + Duration::from_secs(5);
    while is_alive(pid) {
        assert!(Instant::now() < deadline, "child {pid} outlived the agent");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn failing_to_exec_is_invalid_argument() {
    let agent = Agent::start(CONFIG).await;
    let frames = agent
        .stream(
            "/process.Process/Start",
            &json!({"process": {"cmd": "/no/such/binary"}}),
            &[],
        )
        .await
        .collect(10)
        .await;
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].json["error"]["code"], "invalid_argument");
    // The agent is unharmed and can still run things.
    let frames = agent
        .start_bash("echo ok", json!({}), &[])
        .await
        .collect(10)
        .await;
    assert_eq!(output_str(&frames, "stdout"), "ok\n");
}

fn error_code(frames: &[Frame]) -> Value {
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0].kind(), "eos");
    frames[0].json["error"]["code"].clone()
}

#[tokio::test]
async fn malformed_requests_are_invalid_argument_and_never_crash_the_agent() {
    let agent = Agent::start(CONFIG).await;
    let ct = "application/connect+json";
    let bodies: Vec<Vec<u8>> = vec![
        vec![],
        vec![0, 0, 0],
        vec![0, 0, 0, 0, 10, b'{'],
        {
            let mut b = vec![0, 0, 0, 0, 5];
            b.extend_from_slice(b"nope!");
            b
        },
        {
            // Declares 4 GiB - 1 without sending it.
            let mut b = vec![0, 0xff, 0xff, 0xff, 0xff];
            b.extend_from_slice(b"{}");
            b
        },
        {
            let mut b = envelope(&json!({"process": {"cmd": "/bin/true"}}));
            b.extend_from_slice(&envelope(&json!({})));
            b
        },
        envelope(&json!({"process": {"cmd": 5}})),
        envelope(&json!({"process": {"cmd": ""}})),
        envelope(&json!({})),
    ];
    for body in bodies {
        let (resp, _conn) = agent
            .post_raw("/process.Process/Start", ct, &[], body.clone())
            .await;
        let frames = read_frames(resp).await;
        assert_eq!(error_code(&frames), "invalid_argument", "body {body:?}");
    }

    // An actual body over the 16 MiB limit.
    let mut huge = vec![0u8];
    let len = (16 << 20) + 16;
    huge.extend_from_slice(&(len as u32).to_be_bytes());
    huge.resize(5 + len, b' ');
    let (resp, _conn) = agent
        .post_raw("/process.Process/Start", ct, &[], huge)
        .await;
    assert_eq!(error_code(&read_frames(resp).await), "invalid_argument");

    // Unary: bad JSON is a 400 with a Connect error body.
    let (resp, _task) = agent
        .post_raw(
            "/process.Process/SendSignal",
            "application/json",
            &[],
            b"{not json".to_vec(),
        )
        .await;
    assert_eq!(resp.status(), 400);
    use http_body_util::BodyExt;
    let body: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["code"], "invalid_argument");

    let health = agent.get("/health").await.unwrap();
    assert_eq!(health.status(), 204);
}

/// Reads a whole streaming response from a raw POST into frames.
async fn read_frames(resp: hyper::Response<hyper::body::Incoming>) -> Vec<Frame> {
    use http_body_util::BodyExt;
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    json_frames(&body)
}

#[tokio::test]
async fn access_token_guards_everything_but_health() {
    let agent = Agent::start(r#"{"sandboxId":"t","envVars":{},"accessToken":"s3cret"}"#).await;
    assert_eq!(agent.get("/health").await.unwrap().status(), 204);

    let (status, body) = agent.unary("/process.Process/List", &json!({}), &[]).await;
    assert_eq!(status, 401);
    assert_eq!(body["code"], "unauthenticated");
    let (status, _) = agent
        .unary(
            "/process.Process/List",
            &json!({}),
            &[("x-access-token", "wrong")],
        )
        .await;
    assert_eq!(status, 401);

    let stream = agent.start_bash("echo hi", json!({}), &[]).await;
    assert_eq!(stream.status, 401);

    let frames = agent
        .start_bash("echo hi", json!({}), &[("x-access-token", "s3cret")])
        .await
        .collect(10)
        .await;
    assert_eq!(output_str(&frames, "stdout"), "hi\n");
    let (status, _) = agent
        .unary(
            "/process.Process/List",
            &json!({}),
            &[("x-access-token", "s3cret")],
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn unknown_rpcs_are_unimplemented() {
    let agent = Agent::start(CONFIG).await;
    let (status, body) = agent
        .unary(
            "/process.Process/NoSuchMethod",
            &json!({"process": {"pid": 1}}),
            &[],
        )
        .await;
    assert_eq!(status, 501);
    assert_eq!(body["code"], "unimplemented");
    // Shaped like the call: a streaming content type gets a stream end.
    let frames = agent
        .stream(
            "/process.Process/NoSuchStream",
            &json!({"process": {"pid": 1}}),
            &[],
        )
        .await
        .collect(10)
        .await;
    assert_eq!(error_code(&frames), "unimplemented");
}
