//! The binary protobuf codec (`application/proto`, `application/connect+proto`), which Connect
//! clients other than the E2B SDKs may use.

mod common;

use common::*;
use http_body_util::BodyExt;
use hutch_contracts::envd::process::{
    process_event, process_selector, ProcessConfig, ProcessSelector, SendSignalRequest,
    StartRequest, StartResponse,
};
use prost::Message as _;

#[tokio::test]
async fn start_and_list_speak_binary_protobuf() {
    let agent = Agent::start(r#"{"sandboxId":"p","envVars":{}}"#).await;
    let req = StartRequest {
        process: Some(ProcessConfig {
            cmd: "/bin/sh".into(),
            args: vec!["-c".into(), "echo hi; exit 2".into()],
            ..ProcessConfig::default()
        }),
        ..StartRequest::default()
    };
    let (resp, _conn) = agent
        .post_raw(
            "/process.Process/Start",
            "application/connect+proto",
            &[],
            envelope_bytes(&req.encode_to_vec()),
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/connect+proto");
    let body = resp.into_body().collect().await.unwrap().to_bytes();

    let mut events = Vec::new();
    let mut end_of_stream = None;
    for (flags, payload) in split_frames(&body) {
        let payload = payload.to_vec();
        if flags & 2 != 0 {
            end_of_stream = Some(payload);
        } else {
            events.push(payload);
        }
    }
    // The end-of-stream frame is JSON in every codec.
    assert_eq!(end_of_stream.as_deref(), Some(&b"{}"[..]));

    // The data event pinned byte for byte: StartResponse.event(1) > ProcessEvent.data(2) >
    // DataEvent.stdout(1).
    assert_eq!(events[1], b"\x0a\x07\x12\x05\x0a\x03hi\n");
    let events: Vec<process_event::Event> = events
        .iter()
        .map(|e| {
            StartResponse::decode(&e[..])
                .unwrap()
                .event
                .unwrap()
                .event
                .unwrap()
        })
        .collect();
    let [process_event::Event::Start(start), process_event::Event::Data(_), process_event::Event::End(end)] =
        &events[..]
    else {
        panic!("expected start, data, end: {events:?}");
    };
    assert!(start.pid > 1);
    assert_eq!(
        (
            end.exit_code,
            end.exited,
            end.status.as_str(),
            end.error.as_deref()
        ),
        (2, true, "exit status 2", Some("exit status 2"))
    );

    let (resp, _conn) = agent
        .post_raw(
            "/process.Process/List",
            "application/proto",
            &[],
            Vec::new(),
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/proto");
    assert!(resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .is_empty());

    let bad = SendSignalRequest {
        process: Some(ProcessSelector {
            selector: Some(process_selector::Selector::Pid(4_000_000)),
        }),
        signal: 9,
    };
    let (resp, _conn) = agent
        .post_raw(
            "/process.Process/SendSignal",
            "application/proto",
            &[],
            bad.encode_to_vec(),
        )
        .await;
    // Errors are JSON in every codec.
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.headers()["content-type"], "application/json");

    let (resp, _conn) = agent
        .post_raw(
            "/process.Process/SendSignal",
            "application/proto",
            &[],
            vec![0xff, 0xff],
        )
        .await;
    assert_eq!(resp.status(), 400);
}
