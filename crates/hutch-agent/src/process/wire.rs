//! The process service's messages in proto3 JSON (`process/process.proto` of E2B's envd).
//!
//! Input types accept what a proto3 JSON parser must: `null` for any field, numbers as strings,
//! enums by name or number, and unknown fields (ignored, as connect-go does, so newer clients work).

use std::collections::BTreeMap;

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::json::{nullable, uint32};

/// `ProcessConfig`: what to run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct ProcessConfig {
    /// The program; looked up in the process's `PATH` when it has no slash.
    #[serde(default, deserialize_with = "nullable")]
    pub cmd: String,
    /// Arguments after the program name.
    #[serde(default, deserialize_with = "nullable")]
    pub args: Vec<String>,
    /// Extra environment variables; they override the sandbox's.
    #[serde(default, deserialize_with = "nullable")]
    pub envs: BTreeMap<String, String>,
    /// Working directory; absent means the user's home.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
}

/// `StartRequest`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StartRequest {
    /// What to run.
    #[serde(default)]
    pub process: Option<ProcessConfig>,
    /// Run on a pseudo-terminal of this size (kept opaque until PTY support lands).
    #[serde(default)]
    pub pty: Option<serde_json::Value>,
    /// A caller-chosen name to find the process by.
    #[serde(default)]
    pub tag: Option<String>,
    /// Whether stdin is a pipe the caller can write to; absent means yes (envd's compatibility
    /// default).
    #[serde(default)]
    pub stdin: Option<bool>,
}

/// `ProcessSelector`: a process by pid or by tag.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ProcessSelector {
    /// The pid, when selecting by pid.
    #[serde(default, deserialize_with = "uint32")]
    pub pid: Option<u32>,
    /// The tag, when selecting by tag.
    #[serde(default)]
    pub tag: Option<String>,
}

/// `Signal`: the signals a client may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// `SIGNAL_UNSPECIFIED` (0) or a value this agent does not know.
    Unspecified(i64),
    /// `SIGNAL_SIGTERM` (15).
    Term,
    /// `SIGNAL_SIGKILL` (9).
    Kill,
}

impl Default for Signal {
    fn default() -> Self {
        Signal::Unspecified(0)
    }
}

impl<'de> Deserialize<'de> for Signal {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Num(i64),
            Name(String),
        }
        Ok(match Option::<Repr>::deserialize(de)? {
            None => Signal::default(),
            Some(Repr::Num(15)) => Signal::Term,
            Some(Repr::Num(9)) => Signal::Kill,
            Some(Repr::Num(n)) => Signal::Unspecified(n),
            Some(Repr::Name(name)) => match name.as_str() {
                "SIGNAL_SIGTERM" => Signal::Term,
                "SIGNAL_SIGKILL" => Signal::Kill,
                "SIGNAL_UNSPECIFIED" => Signal::Unspecified(0),
                _ => return Err(serde::de::Error::custom(format!("unknown signal '{name}'"))),
            },
        })
    }
}

/// `SendSignalRequest`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SendSignalRequest {
    /// Which process.
    #[serde(default)]
    pub process: Option<ProcessSelector>,
    /// Which signal.
    #[serde(default)]
    pub signal: Signal,
}

/// `ProcessInfo`, an element of `ListResponse`.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessInfo {
    /// The config the process was started with, as the client sent it.
    pub config: ProcessConfig,
    /// Its pid.
    pub pid: u32,
    /// Its tag, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// `ListResponse`.
#[derive(Debug, Clone, Serialize)]
pub struct ListResponse {
    /// Every process started through the agent that has not ended yet.
    pub processes: Vec<ProcessInfo>,
}

/// `ProcessEvent.EndEvent`: how a process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndEvent {
    /// The exit code, -1 when a signal ended the process.
    pub exit_code: i32,
    /// Whether the process exited on its own (not by a signal).
    pub exited: bool,
    /// `exit status N` or `signal: NAME`.
    pub status: String,
    /// Set, to the same words as `status`, whenever the process did not exit with 0 (what Go's
    /// `cmd.Wait` error says, which envd reports).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `ProcessEvent`: one event of a process's lifetime as streamed to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// The process ended; the last event.
    End(EndEvent),
    /// Nothing happened for a while; sent so proxies keep the stream open.
    Keepalive,
}

impl ProcessEvent {
    /// The event as the payload of a `StartResponse`/`ConnectResponse` (`{"event":{...}}`).
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising these plain structs cannot fail; an empty object is a safe fallback that
        // clients ignore.
        serde_json::to_vec(&Envelope { event: self }).unwrap_or_else(|_| b"{}".to_vec())
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    event: &'a ProcessEvent,
}

impl Serialize for ProcessEvent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;

        #[derive(Serialize)]
        struct Start {
            pid: u32,
        }
        #[derive(Serialize)]
        struct Empty {}

        let mut map = s.serialize_map(Some(1))?;
        match self {
            ProcessEvent::Start { pid } => map.serialize_entry("start", &Start { pid: *pid })?,
            ProcessEvent::Stdout(bytes) => map.serialize_entry("data", &data("stdout", bytes))?,
            ProcessEvent::Stderr(bytes) => map.serialize_entry("data", &data("stderr", bytes))?,
            ProcessEvent::End(end) => map.serialize_entry("end", end)?,
            ProcessEvent::Keepalive => map.serialize_entry("keepalive", &Empty {})?,
        }
        map.end()
    }
}

/// `DataEvent`: a oneof of `stdout`/`stderr`/`pty`, bytes as standard base64.
fn data(field: &'static str, bytes: &[u8]) -> BTreeMap<&'static str, String> {
    BTreeMap::from([(
        field,
        base64::engine::general_purpose::STANDARD.encode(bytes),
    )])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn as_value(ev: &ProcessEvent) -> Value {
        serde_json::from_slice(&ev.to_json()).unwrap()
    }

    #[test]
    fn events_serialise_as_proto3_json() {
        assert_eq!(
            as_value(&ProcessEvent::Start { pid: 7 }),
            json!({"event":{"start":{"pid":7}}})
        );
        assert_eq!(
            as_value(&ProcessEvent::Stdout(Bytes::from_static(b"hi\n"))),
            json!({"event":{"data":{"stdout":"aGkK"}}})
        );
        assert_eq!(
            as_value(&ProcessEvent::Keepalive),
            json!({"event":{"keepalive":{}}})
        );
        let end = ProcessEvent::End(EndEvent {
            exit_code: -1,
            exited: false,
            status: "signal: killed".into(),
            error: Some("signal: killed".into()),
        });
        assert_eq!(
            as_value(&end),
            json!({"event":{"end":{"exitCode":-1,"exited":false,"status":"signal: killed","error":"signal: killed"}}})
        );
    }

    #[test]
    fn requests_accept_nulls_strings_and_enum_numbers() {
        let req: StartRequest = serde_json::from_value(json!({
            "process": {"cmd": "/bin/true", "args": null, "envs": null, "cwd": null},
            "stdin": null, "unknownField": 1
        }))
        .unwrap();
        let p = req.process.unwrap();
        assert_eq!(p.cmd, "/bin/true");
        assert!(p.args.is_empty() && p.envs.is_empty() && p.cwd.is_none());

        let sig: SendSignalRequest =
            serde_json::from_value(json!({"process": {"pid": "12"}, "signal": 9})).unwrap();
        assert_eq!(sig.process.unwrap().pid, Some(12));
        assert_eq!(sig.signal, Signal::Kill);
        let sig: SendSignalRequest =
            serde_json::from_value(json!({"process": {"pid": 3}, "signal": "SIGNAL_SIGTERM"}))
                .unwrap();
        assert_eq!(sig.signal, Signal::Term);
        assert!(serde_json::from_value::<SendSignalRequest>(json!({"signal": "SIGHUP"})).is_err());
    }
}
