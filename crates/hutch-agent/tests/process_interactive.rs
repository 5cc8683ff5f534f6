//! The interactive half of the process service, end to end against the real agent binary:
//! attaching with `Connect`, feeding input (`SendInput`, `StreamInput`, `CloseStdin`), PTYs and
//! their resizing (`Update`), and selecting processes by tag.

mod common;

use std::convert::Infallible;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame as BodyFrame;
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

const CONFIG: &str = r#"{"sandboxId":"test","envVars":{"FOO":"bar"}}"#;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The pid in a `start` frame.
fn start_pid(frame: &Frame) -> u64 {
    assert_eq!(frame.kind(), "start", "{frame:?}");
    frame.json["event"]["start"]["pid"].as_u64().unwrap()
}

/// Reads frames until the accumulated `data.<field>` output contains `needle`; returns them.
async fn read_until(stream: &mut RpcStream, field: &str, needle: &str) -> Vec<Frame> {
    let mut frames = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let frame = stream.next().await.expect("stream ended early");
            frames.push(frame);
            if String::from_utf8_lossy(&output(&frames, field)).contains(needle) {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "no {needle:?} in {field} output: {:?}",
            String::from_utf8_lossy(&output(&frames, field))
        )
    });
    frames
}

async fn send_input(agent: &Agent, pid: u64, field: &str, data: &[u8]) -> (u16, Value) {
    let (status, body) = agent
        .unary(
            "/process.Process/SendInput",
            &json!({"process": {"pid": pid}, "input": {field: b64(data)}}),
            &[],
        )
        .await;
    (status.as_u16(), body)
}

async fn list(agent: &Agent) -> Value {
    agent
        .unary("/process.Process/List", &json!({}), &[])
        .await
        .1
}

#[tokio::test]
async fn send_input_reaches_stdin_and_close_stdin_delivers_end_of_file() {
    let agent = Agent::start(CONFIG).await;
    let mut stream = agent.start_bash("cat; echo eof", json!({}), &[]).await;
    let pid = start_pid(&stream.next().await.unwrap());

    assert_eq!(send_input(&agent, pid, "stdin", b"hello\n").await.0, 200);
    read_until(&mut stream, "stdout", "hello\n").await;
    // URL-safe base64 without padding is valid proto3 JSON too.
    let (status, _) = agent
        .unary(
            "/process.Process/SendInput",
            &json!({"process": {"pid": pid}, "input": {"stdin": "Pz8-"}}),
            &[],
        )
        .await;
    assert_eq!(status, 200);
    read_until(&mut stream, "stdout", "??>").await;

    let (status, body) = agent
        .unary(
            "/process.Process/CloseStdin",
            &json!({"process": {"pid": pid}}),
            &[],
        )
        .await;
    assert_eq!((status.as_u16(), body), (200, json!({})));
    let rest = stream.collect(10).await;
    assert_eq!(output_str(&rest, "stdout"), "eof\n");
    assert_eq!(end_event(&rest)["exitCode"], 0);

    // The process is gone: input for it is not_found, like envd.
    let (status, body) = send_input(&agent, pid, "stdin", b"late").await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        json!({"code": "not_found", "message": format!("process with pid {pid} not found")})
    );
}

#[tokio::test]
async fn input_needs_an_open_stdin_of_the_right_kind() {
    let agent = Agent::start(CONFIG).await;
    let mut stream = agent
        .start_bash("sleep 30", json!({"stdin": false}), &[])
        .await;
    let pid = start_pid(&stream.next().await.unwrap());
    let (status, body) = send_input(&agent, pid, "stdin", b"x").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("failed_precondition"))
    );
    // Writing to a terminal the process does not have is the caller's mistake.
    let (status, body) = send_input(&agent, pid, "pty", b"x").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_argument"))
    );
    // Neither member of the oneof.
    let (status, body) = agent
        .unary(
            "/process.Process/SendInput",
            &json!({"process": {"pid": pid}, "input": {}}),
            &[],
        )
        .await;
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (400, Some("invalid_argument"))
    );
    // Closing a stdin that is not there is fine.
    let (status, _) = agent
        .unary(
            "/process.Process/CloseStdin",
            &json!({"process": {"pid": pid}}),
            &[],
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = agent
        .unary(
            "/process.Process/SendSignal",
            &json!({"process": {"pid": pid}, "signal": "SIGNAL_SIGKILL"}),
            &[],
        )
        .await;
    assert_eq!(status, 200);
    stream.collect(10).await;

    let (status, body) = agent
        .unary(
            "/process.Process/CloseStdin",
            &json!({"process": {"pid": 999_999}}),
            &[],
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(body["message"], "process with pid 999999 not found");
}

#[tokio::test]
async fn writing_to_a_stdin_nobody_reads_any_more_is_an_error_not_a_crash() {
    let agent = Agent::start(CONFIG).await;
    let mut stream = agent
        .start_bash("exec 0<&-; echo closed; sleep 30", json!({}), &[])
        .await;
    let pid = start_pid(&stream.next().await.unwrap());
    read_until(&mut stream, "stdout", "closed").await;
    let (status, body) = send_input(&agent, pid, "stdin", b"into the void").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (500, Some("internal")),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("stdin"),
        "{body}"
    );
    assert_eq!(agent.get("/health").await.unwrap().status(), 204);
    agent
        .unary(
            "/process.Process/SendSignal",
            &json!({"process": {"pid": pid}, "signal": "SIGNAL_SIGKILL"}),
            &[],
        )
        .await;
    stream.collect(10).await;
}

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

/// A `StreamInput` call whose request body is fed message by message through the returned
/// sender; the response arrives once the sender is dropped (or the agent fails the stream).
struct InputStream {
    tx: tokio::sync::mpsc::Sender<Bytes>,
    response: tokio::task::JoinHandle<(u16, String, Vec<Frame>)>,
}

impl InputStream {
    async fn open(agent: &Agent) -> InputStream {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
        let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|chunk| (Ok::<_, Infallible>(BodyFrame::data(chunk)), rx))
        });
        let stream = tokio::net::TcpStream::connect(agent.addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = Request::post(format!("http://{}/process.Process/StreamInput", agent.addr))
            .header("content-type", "application/connect+json")
            .header("connect-protocol-version", "1")
            .body(StreamBody::new(chunks))
            .unwrap();
        let response = tokio::spawn(async move {
            let resp = sender.send_request(req).await.unwrap();
            let status = resp.status().as_u16();
            let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            let mut frames = Vec::new();
            let mut rest = &body[..];
            while rest.len() >= 5 {
                let len = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
                frames.push(Frame {
                    flags: rest[0],
                    json: serde_json::from_slice(&rest[5..5 + len]).unwrap(),
                });
                rest = &rest[5 + len..];
            }
            assert!(rest.is_empty());
            (status, content_type, frames)
        });
        InputStream { tx, response }
    }

    async fn send(&self, message: Value) {
        self.tx.send(Bytes::from(envelope(&message))).await.unwrap();
    }

    async fn finish(self) -> (u16, String, Vec<Frame>) {
        drop(self.tx);
        tokio::time::timeout(Duration::from_secs(10), self.response)
            .await
            .expect("StreamInput did not answer")
            .unwrap()
    }
}

#[tokio::test]
async fn stream_input_writes_each_message_as_it_arrives() {
    let agent = Agent::start(CONFIG).await;
    let mut stream = agent.start_bash("cat", json!({}), &[]).await;
    let pid = start_pid(&stream.next().await.unwrap());

    let input = InputStream::open(&agent).await;
    input
        .send(json!({"start": {"process": {"pid": pid}}}))
        .await;
    input
        .send(json!({"data": {"input": {"stdin": b64(b"first\n")}}}))
        .await;
    // Delivered while the request is still open, not when it ends.
    read_until(&mut stream, "stdout", "first\n").await;
    input.send(json!({"keepalive": {}})).await;
    input
        .send(json!({"data": {"input": {"stdin": b64(b"second\n")}}}))
        .await;
    read_until(&mut stream, "stdout", "second\n").await;
    let (status, content_type, frames) = input.finish().await;
    assert_eq!(
        (status, content_type.as_str()),
        (200, "application/connect+json")
    );
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert_eq!((frames[0].flags, &frames[0].json), (0, &json!({})));
    assert_eq!((frames[1].flags, &frames[1].json), (2, &json!({})));

    agent
        .unary(
            "/process.Process/CloseStdin",
            &json!({"process": {"pid": pid}}),
            &[],
        )
        .await;
    assert_eq!(end_event(&stream.collect(10).await)["exitCode"], 0);
}

#[tokio::test]
async fn stream_input_reports_unknown_processes_and_data_before_start() {
    let agent = Agent::start(CONFIG).await;
    let input = InputStream::open(&agent).await;
    input
        .send(json!({"start": {"process": {"pid": 999_999}}}))
        .await;
    let (status, _, frames) = input.finish().await;
    assert_eq!(status, 200);
    assert_eq!(
        frames.last().unwrap().json,
        json!({"error": {"code": "not_found", "message": "process with pid 999999 not found"}})
    );

    let input = InputStream::open(&agent).await;
    input
        .send(json!({"data": {"input": {"stdin": b64(b"x")}}}))
        .await;
    let (_, _, frames) = input.finish().await;
    assert_eq!(
        frames.last().unwrap().json["error"]["code"],
        "invalid_argument"
    );

    // A body that stops inside a message.
    let input = InputStream::open(&agent).await;
    input
        .tx
        .send(Bytes::from_static(&[0, 0, 0, 0, 9, b'{']))
        .await
        .unwrap();
    let (_, _, frames) = input.finish().await;
    assert_eq!(
        frames.last().unwrap().json["error"]["code"],
        "invalid_argument"
    );
}

#[tokio::test]
async fn stream_input_types_into_a_pty() {
    let agent = Agent::start(CONFIG).await;
    let mut stream = agent
        .start_bash(
            "read a; read b; echo [$a$b]",
            json!({"pty": {"size": {"cols": 80, "rows": 24}}}),
            &[],
        )
        .await;
    let pid = start_pid(&stream.next().await.unwrap());
    let input = InputStream::open(&agent).await;
    input
        .send(json!({"start": {"process": {"pid": pid}}}))
        .await;
    input
        .send(json!({"data": {"input": {"pty": b64(b"x\n")}}}))
        .await;
    input
        .send(json!({"data": {"input": {"pty": b64(b"y\n")}}}))
        .await;
    let (status, _, frames) = input.finish().await;
    assert_eq!(
        (status, frames.last().unwrap().json.clone()),
        (200, json!({}))
    );
    let rest = stream.collect(10).await;
    let text = String::from_utf8_lossy(&output(&rest, "pty")).into_owned();
    assert!(text.contains("[xy]"), "{text:?}");
}
