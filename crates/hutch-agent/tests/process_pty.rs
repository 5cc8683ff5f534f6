//! PTY processes end to end against the real agent binary: the controlling terminal, its
//! size and `TERM`, resizing with `Update`, and a killed shell's foreground job.

mod common;

use std::time::{Duration, Instant};

use common::interactive::*;
use common::*;
use serde_json::json;

#[tokio::test]
async fn a_pty_process_gets_a_controlling_terminal_of_the_requested_size() {
    let agent = Agent::start(CONFIG).await;
    // Opening /dev/tty only works for a process with a controlling terminal.
    let script =
        "tty; echo TERM=$TERM; : </dev/tty && echo ctty-ok; stty size; read line; echo got:$line";
    let mut stream = agent
        .start_bash(
            script,
            json!({"pty": {"size": {"cols": 100, "rows": 30}}}),
            &[],
        )
        .await;
    let pid = start_pid(&stream.next().await.unwrap());
    let frames = read_until(&mut stream, "pty", "30 100").await;
    assert!(output(&frames, "stdout").is_empty() && output(&frames, "stderr").is_empty());
    let text = String::from_utf8_lossy(&output(&frames, "pty")).into_owned();
    assert!(text.contains("/dev/pts/"), "{text:?}");
    assert!(text.contains("TERM=xterm-256color"), "{text:?}");
    assert!(text.contains("ctty-ok"), "{text:?}");

    // Input for a PTY process goes to its terminal, not to a stdin pipe.
    let (status, body) = send_input(&agent, pid, "stdin", b"x\n").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_argument"))
    );
    let (status, body) = agent
        .unary(
            "/process.Process/CloseStdin",
            &json!({"process": {"pid": pid}}),
            &[],
        )
        .await;
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (400, Some("invalid_argument"))
    );

    assert_eq!(send_input(&agent, pid, "pty", b"abc\n").await.0, 200);
    let rest = stream.collect(10).await;
    let text = String::from_utf8_lossy(&output(&rest, "pty")).into_owned();
    // The terminal echoes the typed line and translates newlines to CRLF.
    assert!(text.contains("got:abc\r\n"), "{text:?}");
    assert_eq!(end_event(&rest)["exitCode"], 0);
}

#[tokio::test]
async fn pty_env_term_can_be_overridden_and_the_default_size_is_zero() {
    let agent = Agent::start(CONFIG).await;
    let frames = agent
        .start_bash(
            "echo TERM=$TERM; stty size",
            json!({"pty": {}, "process": {"envs": {"TERM": "dumb"}}}),
            &[],
        )
        .await
        .collect(10)
        .await;
    let text = String::from_utf8_lossy(&output(&frames, "pty")).into_owned();
    assert!(text.contains("TERM=dumb\r\n0 0\r\n"), "{text:?}");
}

#[tokio::test]
async fn update_resizes_the_terminal_and_signals_the_foreground_group() {
    let agent = Agent::start(CONFIG).await;
    let script = "trap 'echo winch $(stty size)' WINCH; echo ready; while :; do sleep 0.05; done";
    let mut stream = agent
        .start_bash(
            script,
            json!({"pty": {"size": {"cols": 80, "rows": 24}}}),
            &[],
        )
        .await;
    let pid = start_pid(&stream.next().await.unwrap());
    read_until(&mut stream, "pty", "ready").await;
    let (status, body) = agent
        .unary(
            "/process.Process/Update",
            &json!({"process": {"pid": pid}, "pty": {"size": {"cols": 123, "rows": 45}}}),
            &[],
        )
        .await;
    assert_eq!((status.as_u16(), body), (200, json!({})));
    read_until(&mut stream, "pty", "winch 45 123").await;

    // Without a pty field nothing changes.
    let (status, _) = agent
        .unary(
            "/process.Process/Update",
            &json!({"process": {"pid": pid}}),
            &[],
        )
        .await;
    assert_eq!(status, 200);

    // Killing a PTY process ends its stream with an end event.
    let (status, _) = agent
        .unary(
            "/process.Process/SendSignal",
            &json!({"process": {"pid": pid}, "signal": "SIGNAL_SIGKILL"}),
            &[],
        )
        .await;
    assert_eq!(status, 200);
    let rest = stream.collect(10).await;
    assert_eq!(
        end_event(&rest),
        json!({"exitCode": -1, "exited": false, "status": "signal: killed", "error": "signal: killed"})
    );
    assert_eq!(rest.last().unwrap().json, json!({}));
}

#[tokio::test]
async fn update_of_a_process_without_a_pty_is_invalid_and_of_an_unknown_one_not_found() {
    let agent = Agent::start(CONFIG).await;
    let mut stream = agent.start_bash("sleep 30", json!({}), &[]).await;
    let pid = start_pid(&stream.next().await.unwrap());
    let resize =
        |pid: u64| json!({"process": {"pid": pid}, "pty": {"size": {"cols": 1, "rows": 1}}});
    let (status, body) = agent
        .unary("/process.Process/Update", &resize(pid), &[])
        .await;
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (400, Some("invalid_argument"))
    );
    let (status, body) = agent
        .unary("/process.Process/Update", &resize(999_999), &[])
        .await;
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (404, Some("not_found"))
    );
    agent
        .unary(
            "/process.Process/SendSignal",
            &json!({"process": {"pid": pid}, "signal": "SIGNAL_SIGKILL"}),
            &[],
        )
        .await;
    stream.collect(10).await;
}

/// The number after the first `marker` in `text` that is followed by a digit (typed input is
/// echoed by the terminal, so the marker also appears in front of the unexpanded `$$`).
fn number_after(text: &str, marker: &str) -> Option<i32> {
    text.match_indices(marker).find_map(|(i, _)| {
        let digits: String = text[i + marker.len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    })
}

#[tokio::test]
async fn a_killed_pty_shell_takes_its_foreground_job_with_it() {
    let agent = Agent::start(CONFIG).await;
    let mut stream = agent
        .stream(
            "/process.Process/Start",
            &json!({"process": {"cmd": "/bin/bash", "args": ["-i"]}, "pty": {"size": {"cols": 80, "rows": 24}}}),
            &[],
        )
        .await;
    let pid = start_pid(&stream.next().await.unwrap());
    send_input(&agent, pid, "pty", b"sh -c 'echo fg=$$; exec sleep 61'\n").await;
    let mut text = String::new();
    let job = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let frame = stream.next().await.expect("stream ended early");
            text.push_str(&String::from_utf8_lossy(&output(&[frame], "pty")));
            if let Some(job) = number_after(&text, "fg=").filter(|_| text.ends_with('\n')) {
                return job;
            }
        }
    })
    .await
    .expect("the job did not report its pid");
    assert!(is_alive(job));
    agent
        .unary(
            "/process.Process/SendSignal",
            &json!({"process": {"pid": pid}, "signal": "SIGNAL_SIGKILL"}),
            &[],
        )
        .await;
    let rest = stream.collect(10).await;
    assert_eq!(end_event(&rest)["exitCode"], -1);
    // The shell was the session leader of the terminal; when it dies the kernel hangs up the
    // terminal's foreground job (SIGHUP), which only happens with a controlling terminal.
    let deadline = Instant::now() + Duration::from_secs(10);
    while is_alive(job) {
        assert!(Instant::now() < deadline, "job {job} outlived its terminal");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
