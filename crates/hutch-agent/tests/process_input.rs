//! Feeding a process's stdin, end to end against the real agent binary: `SendInput`,
//! `StreamInput` and `CloseStdin`, on pipes and PTYs.

mod common;

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use common::interactive::*;
use common::*;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame as BodyFrame;
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

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
            (status, content_type, json_frames(&body))
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
