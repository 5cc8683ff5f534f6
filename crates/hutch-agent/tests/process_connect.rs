//! Attaching to running processes end to end against the real agent binary: `Connect` by pid
//! or tag, its timeout, and selecting processes by tag for signals and input.

mod common;

use std::time::{Duration, Instant};

use common::interactive::*;
use common::*;
use serde_json::json;

#[tokio::test]
async fn connect_attaches_by_pid_or_tag_and_sees_live_output_and_the_end() {
    let agent = Agent::start(CONFIG).await;
    let mut first = agent
        .start_bash(
            "read go; echo one; read go; echo two; exit 5",
            json!({"tag": "worker"}),
            &[],
        )
        .await;
    let pid = start_pid(&first.next().await.unwrap());
    assert_eq!(list(&agent).await["processes"][0]["tag"], "worker");

    let mut by_pid = agent
        .stream(
            "/process.Process/Connect",
            &json!({"process": {"pid": pid}}),
            &[],
        )
        .await;
    assert_eq!(by_pid.status, 200);
    assert_eq!(start_pid(&by_pid.next().await.unwrap()), pid);
    let mut by_tag = agent
        .stream(
            "/process.Process/Connect",
            &json!({"process": {"tag": "worker"}}),
            &[],
        )
        .await;
    assert_eq!(start_pid(&by_tag.next().await.unwrap()), pid);

    send_input(&agent, pid, "stdin", b"\n").await;
    read_until(&mut by_pid, "stdout", "one\n").await;
    // A client that goes away does not disturb the process or the other streams.
    by_pid.disconnect();
    send_input(&agent, pid, "stdin", b"\n").await;
    for stream in [first, by_tag] {
        let frames = stream.collect(10).await;
        assert_eq!(output_str(&frames, "stdout"), "one\ntwo\n");
        assert_eq!(end_event(&frames)["exitCode"], 5);
        assert_eq!(frames.last().unwrap().json, json!({}));
    }

    // Finished: Connect replays start and end, by pid and by tag; List no longer shows it.
    assert_eq!(list(&agent).await, json!({"processes": []}));
    for selector in [json!({"pid": pid}), json!({"tag": "worker"})] {
        let frames = agent
            .stream(
                "/process.Process/Connect",
                &json!({"process": selector}),
                &[],
            )
            .await
            .collect(10)
            .await;
        let kinds: Vec<&str> = frames.iter().map(Frame::kind).collect();
        assert_eq!(kinds, ["start", "end", "eos"], "{frames:?}");
        assert_eq!(start_pid(&frames[0]), pid);
        assert_eq!(
            end_event(&frames),
            json!({"exitCode": 5, "exited": true, "status": "exit status 5", "error": "exit status 5"})
        );
    }
    // But it cannot be signalled or written to any more.
    let (status, _) = send_input(&agent, pid, "stdin", b"x").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn connect_to_an_unknown_process_is_not_found() {
    let agent = Agent::start(CONFIG).await;
    let frames = agent
        .stream(
            "/process.Process/Connect",
            &json!({"process": {"pid": 424_242}}),
            &[],
        )
        .await
        .collect(10)
        .await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(
        frames[0].json,
        json!({"error": {"code": "not_found", "message": "process with pid 424242 not found"}})
    );
    let frames = agent
        .stream(
            "/process.Process/Connect",
            &json!({"process": {"tag": "nope"}}),
            &[],
        )
        .await
        .collect(10)
        .await;
    assert_eq!(frames[0].json["error"]["code"], "not_found");
    let frames = agent
        .stream("/process.Process/Connect", &json!({"process": {}}), &[])
        .await
        .collect(10)
        .await;
    assert_eq!(frames[0].json["error"]["code"], "invalid_argument");
}

#[tokio::test]
async fn a_connect_timeout_ends_only_the_stream_not_the_process() {
    let agent = Agent::start(CONFIG).await;
    let mut stream = agent.start_bash("sleep 30", json!({}), &[]).await;
    let pid = start_pid(&stream.next().await.unwrap());
    let started = Instant::now();
    let frames = agent
        .stream(
            "/process.Process/Connect",
            &json!({"process": {"pid": pid}}),
            &[
                ("connect-timeout-ms", "500"),
                ("keepalive-ping-interval", "1"),
            ],
        )
        .await
        .collect(10)
        .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    let kinds: Vec<&str> = frames.iter().map(Frame::kind).collect();
    assert_eq!(kinds, ["start", "eos"], "{frames:?}");
    assert_eq!(frames[1].json["error"]["code"], "deadline_exceeded");
    assert!(is_alive(pid as i32));
    assert_eq!(list(&agent).await["processes"][0]["pid"], pid);
    agent
        .unary(
            "/process.Process/SendSignal",
            &json!({"process": {"pid": pid}, "signal": "SIGNAL_SIGKILL"}),
            &[],
        )
        .await;
    assert_eq!(end_event(&stream.collect(10).await)["exitCode"], -1);
}

#[tokio::test]
async fn send_signal_and_send_input_select_by_tag() {
    let agent = Agent::start(CONFIG).await;
    let mut stream = agent
        .start_bash(
            "read line; echo got:$line; sleep 30",
            json!({"tag": "t1"}),
            &[],
        )
        .await;
    start_pid(&stream.next().await.unwrap());
    let (status, _) = agent
        .unary(
            "/process.Process/SendInput",
            &json!({"process": {"tag": "t1"}, "input": {"stdin": b64(b"x\n")}}),
            &[],
        )
        .await;
    assert_eq!(status, 200);
    read_until(&mut stream, "stdout", "got:x").await;
    let (status, _) = agent
        .unary(
            "/process.Process/SendSignal",
            &json!({"process": {"tag": "t1"}, "signal": "SIGNAL_SIGTERM"}),
            &[],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        end_event(&stream.collect(10).await)["status"],
        "signal: terminated"
    );
    let (status, body) = agent
        .unary(
            "/process.Process/SendSignal",
            &json!({"process": {"tag": "t1"}, "signal": "SIGNAL_SIGTERM"}),
            &[],
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(body["message"], "process with tag t1 not found");
}
