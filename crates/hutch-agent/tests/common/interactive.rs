//! Helpers for the interactive process tests: input, the pid a stream started, and output
//! read up to a marker.

use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

use super::{output, Agent, Frame, RpcStream};

/// The agent configuration the interactive process tests use.
pub const CONFIG: &str = r#"{"sandboxId":"test","envVars":{"FOO":"bar"}}"#;

/// `bytes` in standard base64.
pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The pid in a `start` frame.
pub fn start_pid(frame: &Frame) -> u64 {
    assert_eq!(frame.kind(), "start", "{frame:?}");
    frame.json["event"]["start"]["pid"].as_u64().unwrap()
}

/// Reads frames until the accumulated `data.<field>` output contains `needle`; returns them.
pub async fn read_until(stream: &mut RpcStream, field: &str, needle: &str) -> Vec<Frame> {
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

/// `SendInput` of `data` to `pid`'s `field` (`stdin` or `pty`); returns status and body.
pub async fn send_input(agent: &Agent, pid: u64, field: &str, data: &[u8]) -> (u16, Value) {
    let (status, body) = agent
        .unary(
            "/process.Process/SendInput",
            &json!({"process": {"pid": pid}, "input": {field: b64(data)}}),
            &[],
        )
        .await;
    (status.as_u16(), body)
}

/// The body of a `List` call.
pub async fn list(agent: &Agent) -> Value {
    agent
        .unary("/process.Process/List", &json!({}), &[])
        .await
        .1
}
