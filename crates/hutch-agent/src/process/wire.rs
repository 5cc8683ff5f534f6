//! The process service's messages: the generated `process` package of [`hutch_contracts::envd`],
//! plus the agent's own form of a stream event.

use bytes::Bytes;
use hutch_contracts::envd::process::{process_event, ProcessEvent as Message, StartResponse};

use crate::connect::Codec;

pub use hutch_contracts::envd::process::process_event::EndEvent;
pub use hutch_contracts::envd::process::process_input::Input as ProcessInput;
pub use hutch_contracts::envd::process::process_selector::Selector;
pub use hutch_contracts::envd::process::pty::Size as PtySize;
pub use hutch_contracts::envd::process::stream_input_request::Event as StreamInputEvent;
pub use hutch_contracts::envd::process::{
    CloseStdinRequest, ConnectRequest, ListRequest, ListResponse, ProcessConfig, ProcessInfo,
    ProcessSelector, Pty, SendInputRequest, SendSignalRequest, Signal, StartRequest,
    StreamInputRequest, UpdateRequest,
};

/// One event of a process's lifetime as streamed to clients.
#[derive(Debug, Clone, PartialEq)]
pub enum ProcessEvent {
    /// The process started with this pid; always the first event of a stream.
    Start {
        /// The new process's pid.
        pid: u32,
    },
    /// Bytes the process wrote to stdout.
    Stdout(Bytes),
    /// Bytes the process wrote to stderr.
    Stderr(Bytes),
    /// Bytes the process wrote to its terminal (PTY processes have no separate streams).
    Pty(Bytes),
    /// The process ended; the last event.
    End(EndEvent),
    /// Nothing happened for a while; sent so proxies keep the stream open.
    Keepalive,
}

impl ProcessEvent {
    /// The event as a `StartResponse` (`ConnectResponse` has the same shape and encoding).
    pub fn to_message(&self) -> StartResponse {
        use process_event::data_event::Output;
        let data = |output| {
            process_event::Event::Data(process_event::DataEvent {
                output: Some(output),
            })
        };
        let event = match self {
            ProcessEvent::Start { pid } => {
                process_event::Event::Start(process_event::StartEvent { pid: *pid })
            }
            ProcessEvent::Stdout(bytes) => data(Output::Stdout(bytes.clone())),
            ProcessEvent::Stderr(bytes) => data(Output::Stderr(bytes.clone())),
            ProcessEvent::Pty(bytes) => data(Output::Pty(bytes.clone())),
            ProcessEvent::End(end) => process_event::Event::End(end.clone()),
            ProcessEvent::Keepalive => process_event::Event::Keepalive(process_event::KeepAlive {}),
        };
        StartResponse {
            event: Some(Message { event: Some(event) }),
        }
    }

    /// The event as the payload of a `StartResponse`/`ConnectResponse` in `codec`.
    pub fn encode(&self, codec: Codec) -> Vec<u8> {
        codec.encode_message(&self.to_message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn as_json(event: &ProcessEvent) -> Value {
        serde_json::from_slice(&event.encode(Codec::Json)).unwrap()
    }

    #[test]
    fn events_encode_as_envd_does_in_json() {
        assert_eq!(
            as_json(&ProcessEvent::Start { pid: 7 }),
            json!({"event":{"start":{"pid":7}}})
        );
        assert_eq!(
            as_json(&ProcessEvent::Pty(Bytes::from_static(b"$ "))),
            json!({"event":{"data":{"pty":"JCA="}}})
        );
        assert_eq!(
            as_json(&ProcessEvent::Keepalive),
            json!({"event":{"keepalive":{}}})
        );
        let end = ProcessEvent::End(EndEvent {
            exit_code: -1,
            exited: false,
            status: "signal: killed".into(),
            error: Some("signal: killed".into()),
        });
        assert_eq!(
            as_json(&end),
            json!({"event":{"end":{"exitCode":-1,"exited":false,"status":"signal: killed","error":"signal: killed"}}})
        );
    }

    #[test]
    fn events_encode_in_protobuf_with_empty_oneof_members() {
        assert_eq!(
            ProcessEvent::Keepalive.encode(Codec::Proto),
            [0x0a, 0x02, 0x22, 0x00]
        );
        assert_eq!(
            ProcessEvent::Stdout(Bytes::new()).encode(Codec::Proto),
            [0x0a, 0x04, 0x12, 0x02, 0x0a, 0x00]
        );
    }
}
