//! The binary protobuf codec (`application/proto`, `application/connect+proto`), which Connect
//! clients other than the E2B SDKs may use.

mod common;

use common::*;
use http_body_util::BodyExt;
use hutch_agent::proto::{Reader, Value, Writer};

fn enveloped(message: Vec<u8>) -> Vec<u8> {
    let mut out = vec![0u8];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(&message);
    out
}

/// The (field, value) pairs of one message.
fn fields(buf: &[u8]) -> Vec<(u32, Value<'_>)> {
    let mut r = Reader::new(buf);
    let mut out = Vec::new();
    while let Some(f) = r.next_field().unwrap() {
        out.push(f);
    }
    out
}

#[tokio::test]
async fn start_and_list_speak_binary_protobuf() {
    let agent = Agent::start(r#"{"sandboxId":"p","envVars":{}}"#).await;
    let mut req = Writer::new();
    req.message(1, |p| {
        p.bytes(1, b"/bin/sh")
            .bytes(2, b"-c")
            .bytes(2, b"echo hi; exit 2");
    });
    let (resp, _conn) = agent
        .post_raw(
            "/process.Process/Start",
            "application/connect+proto",
            &[],
            enveloped(req.finish()),
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/connect+proto");
    let body = resp.into_body().collect().await.unwrap().to_bytes();

    let mut rest = &body[..];
    let mut events = Vec::new();
    let mut end_of_stream = None;
    while rest.len() >= 5 {
        let len = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
        let payload = rest[5..5 + len].to_vec();
        if rest[0] & 2 != 0 {
            end_of_stream = Some(payload);
        } else {
            events.push(payload);
        }
        rest = &rest[5 + len..];
    }
    // The end-of-stream frame is JSON in every codec.
    assert_eq!(end_of_stream.as_deref(), Some(&b"{}"[..]));

    // StartResponse { event = 1: ProcessEvent { start = 1 | data = 2 | end = 3 } }
    let kinds: Vec<(u32, Vec<u8>)> = events
        .iter()
        .map(|e| {
            let outer = fields(e);
            let event = outer[0].1.bytes(1).unwrap();
            let inner = fields(event);
            (inner[0].0, inner[0].1.bytes(inner[0].0).unwrap().to_vec())
        })
        .collect();
    assert_eq!(kinds.iter().map(|k| k.0).collect::<Vec<_>>(), [1, 2, 3]);
    let pid = fields(&kinds[0].1)[0].1.varint(1).unwrap();
    assert!(pid > 1);
    assert_eq!(fields(&kinds[1].1), [(1, Value::Bytes(b"hi\n"))]);
    let end = fields(&kinds[2].1);
    // exit_code is sint32: 2 zigzags to 4; exited = true; status; error.
    assert_eq!(end[0], (1, Value::Varint(4)));
    assert_eq!(end[1], (2, Value::Varint(1)));
    assert_eq!(end[2], (3, Value::Bytes(b"exit status 2")));

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

    let mut bad = Writer::new();
    bad.message(1, |s| {
        s.varint(1, 4_000_000);
    })
    .varint(2, 9);
    let (resp, _conn) = agent
        .post_raw(
            "/process.Process/SendSignal",
            "application/proto",
            &[],
            bad.finish(),
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
