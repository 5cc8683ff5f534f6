//! The process service's messages in proto3 JSON (`process/process.proto` of E2B's envd).
//!
//! Input types accept what a proto3 JSON parser must: `null` for any field, numbers as strings,
//! enums by name or number, and unknown fields (ignored, as connect-go does, so newer clients work).

use std::collections::BTreeMap;

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::proto::{FromProto, ProtoError, Reader, ToProto, Writer};

use crate::connect::Codec;
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
    /// Run on a pseudo-terminal of this size instead of pipes.
    #[serde(default)]
    pub pty: Option<Pty>,
    /// A caller-chosen name to find the process by.
    #[serde(default)]
    pub tag: Option<String>,
    /// Whether stdin is a pipe the caller can write to; absent means yes (envd's compatibility
    /// default).
    #[serde(default)]
    pub stdin: Option<bool>,
}

/// `PTY`: the terminal a process runs on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Pty {
    /// The terminal's size.
    #[serde(default)]
    pub size: Option<PtySize>,
}

/// `PTY.Size`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct PtySize {
    /// Columns.
    #[serde(default, deserialize_with = "uint32")]
    pub cols: Option<u32>,
    /// Rows.
    #[serde(default, deserialize_with = "uint32")]
    pub rows: Option<u32>,
}

/// `ProcessSelector`: a process by pid or by tag.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
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

impl Signal {
    /// The enum value with number `n`.
    pub fn from_number(n: i64) -> Self {
        match n {
            15 => Signal::Term,
            9 => Signal::Kill,
            n => Signal::Unspecified(n),
        }
    }
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
            Some(Repr::Num(n)) => Signal::from_number(n),
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

/// `ConnectRequest`: attach to a process.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ConnectRequest {
    /// Which process.
    #[serde(default)]
    pub process: Option<ProcessSelector>,
}

/// `CloseStdinRequest`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CloseStdinRequest {
    /// Which process.
    #[serde(default)]
    pub process: Option<ProcessSelector>,
}

/// `UpdateRequest`: change a running process's terminal.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct UpdateRequest {
    /// Which process.
    #[serde(default)]
    pub process: Option<ProcessSelector>,
    /// The terminal's new size; absent changes nothing.
    #[serde(default)]
    pub pty: Option<Pty>,
}

/// `ProcessInput`: bytes for a process, to its stdin pipe or to its terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessInput {
    /// For the stdin pipe of a process started without a PTY.
    Stdin(Bytes),
    /// For the terminal of a PTY process.
    Pty(Bytes),
}

impl<'de> Deserialize<'de> for ProcessInput {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Repr {
            #[serde(default, deserialize_with = "base64_bytes")]
            stdin: Option<Bytes>,
            #[serde(default, deserialize_with = "base64_bytes")]
            pty: Option<Bytes>,
        }
        let repr = Repr::deserialize(de)?;
        match (repr.stdin, repr.pty) {
            (Some(bytes), None) => Ok(ProcessInput::Stdin(bytes)),
            (None, Some(bytes)) => Ok(ProcessInput::Pty(bytes)),
            (Some(_), Some(_)) => Err(serde::de::Error::custom(
                "ProcessInput sets both 'stdin' and 'pty'; a oneof takes one",
            )),
            (None, None) => Err(serde::de::Error::custom(
                "ProcessInput sets neither 'stdin' nor 'pty'",
            )),
        }
    }
}

/// `SendInputRequest`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SendInputRequest {
    /// Which process.
    #[serde(default)]
    pub process: Option<ProcessSelector>,
    /// What to write.
    #[serde(default)]
    pub input: Option<ProcessInput>,
}

/// `StreamInputRequest`: one message of a `StreamInput` client stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StreamInputRequest {
    /// A message with no event set; ignored like a keepalive.
    #[default]
    Empty,
    /// `start`: which process the rest of the stream writes to; must come first.
    Start(Option<ProcessSelector>),
    /// `data`: input for the process.
    Data(Option<ProcessInput>),
    /// `keepalive`: nothing.
    Keepalive,
}

impl<'de> Deserialize<'de> for StreamInputRequest {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct StartEvent {
            #[serde(default)]
            process: Option<ProcessSelector>,
        }
        #[derive(Deserialize)]
        struct DataEvent {
            #[serde(default)]
            input: Option<ProcessInput>,
        }
        #[derive(Deserialize)]
        struct Repr {
            #[serde(default)]
            start: Option<StartEvent>,
            #[serde(default)]
            data: Option<DataEvent>,
            #[serde(default)]
            keepalive: Option<serde::de::IgnoredAny>,
        }
        let repr = Repr::deserialize(de)?;
        let set = [
            repr.start.is_some(),
            repr.data.is_some(),
            repr.keepalive.is_some(),
        ];
        if set.iter().filter(|s| **s).count() > 1 {
            return Err(serde::de::Error::custom(
                "StreamInputRequest sets more than one of 'start', 'data', 'keepalive'",
            ));
        }
        Ok(if let Some(start) = repr.start {
            StreamInputRequest::Start(start.process)
        } else if let Some(data) = repr.data {
            StreamInputRequest::Data(data.input)
        } else if repr.keepalive.is_some() {
            StreamInputRequest::Keepalive
        } else {
            StreamInputRequest::Empty
        })
    }
}

/// A proto3 JSON `bytes` field: standard or URL-safe base64, padded or not; `null` is absent.
fn base64_bytes<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Bytes>, D::Error> {
    let Some(text) = Option::<String>::deserialize(de)? else {
        return Ok(None);
    };
    decode_base64(&text)
        .map(|bytes| Some(Bytes::from(bytes)))
        .map_err(|err| serde::de::Error::custom(format!("invalid base64 in a bytes field: {err}")))
}

/// Decodes base64 the way proto3 JSON parsers must accept it: either alphabet, padding optional.
pub fn decode_base64(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    let normalised: String = text
        .trim_end_matches('=')
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    base64::engine::general_purpose::STANDARD_NO_PAD.decode(normalised)
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
    /// Bytes the process wrote to its terminal (PTY processes have no separate streams).
    Pty(Bytes),
    /// The process ended; the last event.
    End(EndEvent),
    /// Nothing happened for a while; sent so proxies keep the stream open.
    Keepalive,
}

impl ProcessEvent {
    /// The event as the payload of a `StartResponse`/`ConnectResponse` in `codec`.
    pub fn encode(&self, codec: Codec) -> Vec<u8> {
        match codec {
            Codec::Json => self.to_json(),
            Codec::Proto => self.to_proto(),
        }
    }

    /// The event as a JSON `StartResponse`/`ConnectResponse` (`{"event":{...}}`).
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
            ProcessEvent::Pty(bytes) => map.serialize_entry("data", &data("pty", bytes))?,
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

// ---- binary protobuf (field numbers from envd's process.proto) ----

impl FromProto for ProcessConfig {
    fn merge_proto(&mut self, buf: &[u8]) -> Result<(), ProtoError> {
        let mut r = Reader::new(buf);
        while let Some((field, value)) = r.next_field()? {
            match field {
                1 => self.cmd = value.string(field)?,
                2 => self.args.push(value.string(field)?),
                3 => {
                    let (mut key, mut val) = (String::new(), String::new());
                    let mut entry = Reader::new(value.bytes(field)?);
                    while let Some((f, v)) = entry.next_field()? {
                        match f {
                            1 => key = v.string(f)?,
                            2 => val = v.string(f)?,
                            _ => {}
                        }
                    }
                    self.envs.insert(key, val);
                }
                4 => self.cwd = Some(value.string(field)?),
                _ => {}
            }
        }
        Ok(())
    }
}

impl FromProto for PtySize {
    fn merge_proto(&mut self, buf: &[u8]) -> Result<(), ProtoError> {
        let mut r = Reader::new(buf);
        while let Some((field, value)) = r.next_field()? {
            match field {
                1 => self.cols = Some(value.uint32(field)?),
                2 => self.rows = Some(value.uint32(field)?),
                _ => {}
            }
        }
        Ok(())
    }
}

impl FromProto for Pty {
    fn merge_proto(&mut self, buf: &[u8]) -> Result<(), ProtoError> {
        let mut r = Reader::new(buf);
        while let Some((field, value)) = r.next_field()? {
            if field == 1 {
                self.size
                    .get_or_insert_with(PtySize::default)
                    .merge_proto(value.bytes(field)?)?;
            }
        }
        Ok(())
    }
}

impl FromProto for StartRequest {
    fn merge_proto(&mut self, buf: &[u8]) -> Result<(), ProtoError> {
        let mut r = Reader::new(buf);
        while let Some((field, value)) = r.next_field()? {
            match field {
                1 => self
                    .process
                    .get_or_insert_with(ProcessConfig::default)
                    .merge_proto(value.bytes(field)?)?,
                2 => self
                    .pty
                    .get_or_insert_with(Pty::default)
                    .merge_proto(value.bytes(field)?)?,
                3 => self.tag = Some(value.string(field)?),
                4 => self.stdin = Some(value.boolean(field)?),
                _ => {}
            }
        }
        Ok(())
    }
}

impl FromProto for ProcessSelector {
    fn merge_proto(&mut self, buf: &[u8]) -> Result<(), ProtoError> {
        let mut r = Reader::new(buf);
        while let Some((field, value)) = r.next_field()? {
            // A oneof: the last member on the wire wins.
            match field {
                1 => (self.pid, self.tag) = (Some(value.uint32(field)?), None),
                2 => (self.pid, self.tag) = (None, Some(value.string(field)?)),
                _ => {}
            }
        }
        Ok(())
    }
}

impl FromProto for SendSignalRequest {
    fn merge_proto(&mut self, buf: &[u8]) -> Result<(), ProtoError> {
        let mut r = Reader::new(buf);
        while let Some((field, value)) = r.next_field()? {
            match field {
                1 => self
                    .process
                    .get_or_insert_with(ProcessSelector::default)
                    .merge_proto(value.bytes(field)?)?,
                // Enums are int32 on the wire; negative values arrive sign-extended.
                2 => self.signal = Signal::from_number(i64::from(value.varint(field)? as i32)),
                _ => {}
            }
        }
        Ok(())
    }
}

/// Merges an embedded `ProcessSelector` field into `slot`.
fn merge_selector(slot: &mut Option<ProcessSelector>, buf: &[u8]) -> Result<(), ProtoError> {
    slot.get_or_insert_with(ProcessSelector::default)
        .merge_proto(buf)
}

impl FromProto for ConnectRequest {
    fn merge_proto(&mut self, buf: &[u8]) -> Result<(), ProtoError> {
        let mut r = Reader::new(buf);
        while let Some((field, value)) = r.next_field()? {
            if field == 1 {
                merge_selector(&mut self.process, value.bytes(field)?)?;
            }
        }
        Ok(())
    }
}

impl FromProto for CloseStdinRequest {
    fn merge_proto(&mut self, buf: &[u8]) -> Result<(), ProtoError> {
        let mut r = Reader::new(buf);
        while let Some((field, value)) = r.next_field()? {
            if field == 1 {
                merge_selector(&mut self.process, value.bytes(field)?)?;
            }
        }
        Ok(())
    }
}

impl FromProto for UpdateRequest {
    fn merge_proto(&mut self, buf: &[u8]) -> Result<(), ProtoError> {
        let mut r = Reader::new(buf);
        while let Some((field, value)) = r.next_field()? {
            match field {
                1 => merge_selector(&mut self.process, value.bytes(field)?)?,
                2 => self
                    .pty
                    .get_or_insert_with(Pty::default)
                    .merge_proto(value.bytes(field)?)?,
                _ => {}
            }
        }
        Ok(())
    }
}

/// Decodes a `ProcessInput` (a oneof: the last member on the wire wins).
fn read_input(buf: &[u8]) -> Result<Option<ProcessInput>, ProtoError> {
    let mut input = None;
    let mut r = Reader::new(buf);
    while let Some((field, value)) = r.next_field()? {
        match field {
            1 => {
                input = Some(ProcessInput::Stdin(Bytes::copy_from_slice(
                    value.bytes(field)?,
                )))
            }
            2 => {
                input = Some(ProcessInput::Pty(Bytes::copy_from_slice(
                    value.bytes(field)?,
                )))
            }
            _ => {}
        }
    }
    Ok(input)
}

impl FromProto for SendInputRequest {
    fn merge_proto(&mut self, buf: &[u8]) -> Result<(), ProtoError> {
        let mut r = Reader::new(buf);
        while let Some((field, value)) = r.next_field()? {
            match field {
                1 => merge_selector(&mut self.process, value.bytes(field)?)?,
                2 => {
                    if let Some(input) = read_input(value.bytes(field)?)? {
                        self.input = Some(input);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

impl FromProto for StreamInputRequest {
    fn merge_proto(&mut self, buf: &[u8]) -> Result<(), ProtoError> {
        let mut r = Reader::new(buf);
        while let Some((field, value)) = r.next_field()? {
            // A oneof: the last member on the wire wins.
            match field {
                1 => {
                    let mut process = None;
                    let mut start = Reader::new(value.bytes(field)?);
                    while let Some((f, v)) = start.next_field()? {
                        if f == 1 {
                            merge_selector(&mut process, v.bytes(f)?)?;
                        }
                    }
                    *self = StreamInputRequest::Start(process);
                }
                2 => {
                    let mut input = None;
                    let mut data = Reader::new(value.bytes(field)?);
                    while let Some((f, v)) = data.next_field()? {
                        if f == 2 {
                            input = read_input(v.bytes(f)?)?.or(input);
                        }
                    }
                    *self = StreamInputRequest::Data(input);
                }
                3 => {
                    value.bytes(field)?;
                    *self = StreamInputRequest::Keepalive;
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn write_config(w: &mut Writer, config: &ProcessConfig) {
    w.non_empty(1, config.cmd.as_bytes());
    for arg in &config.args {
        w.bytes(2, arg.as_bytes());
    }
    for (key, value) in &config.envs {
        w.message(3, |entry| {
            entry
                .non_empty(1, key.as_bytes())
                .non_empty(2, value.as_bytes());
        });
    }
    if let Some(cwd) = &config.cwd {
        w.bytes(4, cwd.as_bytes());
    }
}

impl ToProto for ProcessEvent {
    /// Encodes `StartResponse { event = 1 }`; oneof members are written even when empty, since
    /// their presence is the information.
    fn to_proto(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.message(1, |event| match self {
            ProcessEvent::Start { pid } => {
                event.message(1, |start| {
                    start.varint(1, u64::from(*pid));
                });
            }
            ProcessEvent::Stdout(bytes) => {
                event.message(2, |data| {
                    data.bytes(1, bytes);
                });
            }
            ProcessEvent::Stderr(bytes) => {
                event.message(2, |data| {
                    data.bytes(2, bytes);
                });
            }
            ProcessEvent::Pty(bytes) => {
                event.message(2, |data| {
                    data.bytes(3, bytes);
                });
            }
            ProcessEvent::End(end) => {
                event.message(3, |e| {
                    e.sint32(1, end.exit_code)
                        .boolean(2, end.exited)
                        .non_empty(3, end.status.as_bytes());
                    if let Some(error) = &end.error {
                        e.bytes(4, error.as_bytes());
                    }
                });
            }
            ProcessEvent::Keepalive => {
                event.bytes(4, &[]);
            }
        });
        w.finish()
    }
}

impl ToProto for ListResponse {
    fn to_proto(&self) -> Vec<u8> {
        let mut w = Writer::new();
        for info in &self.processes {
            w.message(1, |p| {
                p.message(1, |c| write_config(c, &info.config))
                    .varint(2, u64::from(info.pid));
                if let Some(tag) = &info.tag {
                    p.bytes(3, tag.as_bytes());
                }
            });
        }
        w.finish()
    }
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

    #[test]
    fn start_request_decodes_from_protobuf() {
        let mut w = Writer::new();
        w.message(1, |p| {
            p.bytes(1, b"/bin/bash")
                .bytes(2, b"-c")
                .bytes(2, b"echo hi");
            p.message(3, |e| {
                e.bytes(1, b"K").bytes(2, b"V");
            });
            p.bytes(4, b"/tmp");
        })
        .bytes(3, b"tag");
        let mut buf = w.finish();
        // `optional bool stdin = 4` set to false: present on the wire despite being the default.
        buf.extend_from_slice(&[0x20, 0x00]);
        let mut req = StartRequest::default();
        req.merge_proto(&buf).unwrap();
        let p = req.process.unwrap();
        assert_eq!(p.cmd, "/bin/bash");
        assert_eq!(p.args, ["-c", "echo hi"]);
        assert_eq!(p.envs["K"], "V");
        assert_eq!(p.cwd.as_deref(), Some("/tmp"));
        assert_eq!(req.tag.as_deref(), Some("tag"));
        assert_eq!(req.stdin, Some(false));
        let mut sig = SendSignalRequest::default();
        let mut w = Writer::new();
        w.message(1, |s| {
            s.varint(1, 42);
        })
        .varint(2, 9);
        sig.merge_proto(&w.finish()).unwrap();
        assert_eq!(sig.process.unwrap().pid, Some(42));
        assert_eq!(sig.signal, Signal::Kill);
    }

    #[test]
    fn pty_output_is_data_pty_in_both_codecs() {
        let event = ProcessEvent::Pty(Bytes::from_static(b"$ "));
        assert_eq!(as_value(&event), json!({"event":{"data":{"pty":"JCA="}}}));
        let buf = event.to_proto();
        let (_, outer) = Reader::new(&buf).next_field().unwrap().unwrap();
        let (field, data) = Reader::new(outer.bytes(1).unwrap())
            .next_field()
            .unwrap()
            .unwrap();
        assert_eq!(field, 2);
        assert_eq!(
            Reader::new(data.bytes(2).unwrap()).next_field().unwrap(),
            Some((3, crate::proto::Value::Bytes(b"$ ")))
        );
    }

    #[test]
    fn input_requests_decode_from_json() {
        let req: SendInputRequest = serde_json::from_value(json!({
            "process": {"pid": 5}, "input": {"stdin": "aGk="}
        }))
        .unwrap();
        assert_eq!(req.process.unwrap().pid, Some(5));
        assert_eq!(
            req.input,
            Some(ProcessInput::Stdin(Bytes::from_static(b"hi")))
        );
        // URL-safe alphabet and missing padding are valid proto3 JSON for bytes.
        let req: SendInputRequest =
            serde_json::from_value(json!({"process": {"tag": "t"}, "input": {"pty": "-_8"}}))
                .unwrap();
        assert_eq!(
            req.input,
            Some(ProcessInput::Pty(Bytes::from_static(&[0xfb, 0xff])))
        );
        assert!(serde_json::from_value::<SendInputRequest>(
            json!({"input": {"stdin": "aGk=", "pty": "aGk="}})
        )
        .is_err());
        assert!(
            serde_json::from_value::<SendInputRequest>(json!({"input": {"stdin": "%%"}})).is_err()
        );
        let req: SendInputRequest = serde_json::from_value(json!({"input": null})).unwrap();
        assert_eq!(req.input, None);

        let start: StreamInputRequest =
            serde_json::from_value(json!({"start": {"process": {"pid": "7"}}})).unwrap();
        assert_eq!(
            start,
            StreamInputRequest::Start(Some(ProcessSelector {
                pid: Some(7),
                tag: None
            }))
        );
        let data: StreamInputRequest =
            serde_json::from_value(json!({"data": {"input": {"stdin": ""}}})).unwrap();
        assert_eq!(
            data,
            StreamInputRequest::Data(Some(ProcessInput::Stdin(Bytes::new())))
        );
        let keepalive: StreamInputRequest =
            serde_json::from_value(json!({"keepalive": {}})).unwrap();
        assert_eq!(keepalive, StreamInputRequest::Keepalive);
        assert_eq!(
            serde_json::from_value::<StreamInputRequest>(json!({})).unwrap(),
            StreamInputRequest::Empty
        );
        assert!(serde_json::from_value::<StreamInputRequest>(
            json!({"keepalive": {}, "start": {}})
        )
        .is_err());

        let update: UpdateRequest = serde_json::from_value(
            json!({"process": {"pid": 1}, "pty": {"size": {"cols": 120, "rows": "40"}}}),
        )
        .unwrap();
        let size = update.pty.unwrap().size.unwrap();
        assert_eq!((size.cols, size.rows), (Some(120), Some(40)));
    }

    #[test]
    fn input_requests_decode_from_protobuf() {
        let mut w = Writer::new();
        w.message(1, |s| {
            s.bytes(2, b"tagged");
        })
        .message(2, |i| {
            i.bytes(2, b"\x03");
        });
        let req = SendInputRequest::from_proto(&w.finish()).unwrap();
        assert_eq!(req.process.unwrap().tag.as_deref(), Some("tagged"));
        assert_eq!(
            req.input,
            Some(ProcessInput::Pty(Bytes::from_static(b"\x03")))
        );

        let mut w = Writer::new();
        w.message(1, |start| {
            start.message(1, |s| {
                s.varint(1, 9);
            });
        });
        assert_eq!(
            StreamInputRequest::from_proto(&w.finish()).unwrap(),
            StreamInputRequest::Start(Some(ProcessSelector {
                pid: Some(9),
                tag: None
            }))
        );
        let mut w = Writer::new();
        w.message(2, |data| {
            data.message(2, |i| {
                i.bytes(1, b"x");
            });
        });
        assert_eq!(
            StreamInputRequest::from_proto(&w.finish()).unwrap(),
            StreamInputRequest::Data(Some(ProcessInput::Stdin(Bytes::from_static(b"x"))))
        );
        let mut w = Writer::new();
        w.bytes(3, &[]);
        assert_eq!(
            StreamInputRequest::from_proto(&w.finish()).unwrap(),
            StreamInputRequest::Keepalive
        );

        let mut w = Writer::new();
        w.message(1, |s| {
            s.varint(1, 3);
        })
        .message(2, |pty| {
            pty.message(1, |size| {
                size.varint(1, 100).varint(2, 30);
            });
        });
        let update = UpdateRequest::from_proto(&w.finish()).unwrap();
        assert_eq!(update.process.unwrap().pid, Some(3));
        let size = update.pty.unwrap().size.unwrap();
        assert_eq!((size.cols, size.rows), (Some(100), Some(30)));

        let mut w = Writer::new();
        w.message(1, |s| {
            s.varint(1, 4);
        });
        let buf = w.finish();
        assert_eq!(
            ConnectRequest::from_proto(&buf)
                .unwrap()
                .process
                .unwrap()
                .pid,
            Some(4)
        );
        assert_eq!(
            CloseStdinRequest::from_proto(&buf)
                .unwrap()
                .process
                .unwrap()
                .pid,
            Some(4)
        );
    }

    #[test]
    fn end_event_encodes_exit_code_as_zigzag() {
        let end = ProcessEvent::End(EndEvent {
            exit_code: -1,
            exited: false,
            status: "signal: killed".into(),
            error: None,
        });
        let buf = end.to_proto();
        let mut outer = Reader::new(&buf);
        let (_, event) = outer.next_field().unwrap().unwrap();
        let mut event = Reader::new(event.bytes(1).unwrap());
        let (field, end) = event.next_field().unwrap().unwrap();
        assert_eq!(field, 3);
        let mut end = Reader::new(end.bytes(3).unwrap());
        assert_eq!(
            end.next_field().unwrap(),
            Some((1, crate::proto::Value::Varint(1)))
        );
    }
}
