//! The Jupyter wire format: headers, messages, HMAC signing and multipart framing.
//!
//! A message on the wire is `[identities..., b"<IDS|MSG>", signature, header,
//! parent_header, metadata, content, buffers...]`. The signature is the hex HMAC of
//! the four JSON frames, in that order, as the bytes that travel (never re-serialized).

use bytes::Bytes;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::Sha256;

use crate::error::ProtocolError;

/// The frame that separates routing identities from the message proper.
pub const DELIMITER: &[u8] = b"<IDS|MSG>";

/// The messaging protocol version we speak.
pub const PROTOCOL_VERSION: &str = "5.3";

/// The five sockets a kernel listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Requests and replies (DEALER to the kernel's ROUTER).
    Shell,
    /// Broadcast outputs and status (SUB to the kernel's PUB).
    IoPub,
    /// Input requests from the kernel (DEALER to the kernel's ROUTER).
    Stdin,
    /// Interrupt and shutdown, answered even while shell is busy.
    Control,
    /// Echo liveness check (REQ to the kernel's echo socket).
    Heartbeat,
}

impl Channel {
    /// All five channels, in connection-file order.
    pub const ALL: [Channel; 5] = [
        Channel::Shell,
        Channel::IoPub,
        Channel::Stdin,
        Channel::Control,
        Channel::Heartbeat,
    ];

    /// The channel's name as Jupyter spells it.
    pub fn name(self) -> &'static str {
        match self {
            Channel::Shell => "shell",
            Channel::IoPub => "iopub",
            Channel::Stdin => "stdin",
            Channel::Control => "control",
            Channel::Heartbeat => "hb",
        }
    }
}

/// A message header (`header` and `parent_header` share this shape).
///
/// Every field defaults, because kernels send `{}` as the parent of unsolicited
/// messages and some send partial parents.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Unique id of this message; replies name it in their parent header.
    #[serde(default)]
    pub msg_id: String,
    /// The sending session (one per client).
    #[serde(default)]
    pub session: String,
    /// The sending user.
    #[serde(default)]
    pub username: String,
    /// ISO 8601 time the message was created.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub date: String,
    /// The message type, e.g. `execute_request`.
    #[serde(default)]
    pub msg_type: String,
    /// Protocol version, `5.3` for ours.
    #[serde(default)]
    pub version: String,
}

impl Header {
    /// A fresh header for a message of `msg_type` from `session`.
    pub fn new(msg_type: &str, session: &str, username: &str) -> Self {
        Header {
            msg_id: new_id(),
            session: session.to_owned(),
            username: username.to_owned(),
            date: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            msg_type: msg_type.to_owned(),
            version: PROTOCOL_VERSION.to_owned(),
        }
    }
}

/// One Jupyter message, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Routing frames before the delimiter (the topic on iopub).
    pub identities: Vec<Bytes>,
    /// This message's header.
    pub header: Header,
    /// The header of the request this answers, if any (`{}` on the wire when none).
    pub parent_header: Option<Header>,
    /// Free-form metadata.
    pub metadata: Map<String, Value>,
    /// The message body; its shape depends on `header.msg_type`.
    pub content: Value,
    /// Extra binary frames after content.
    pub buffers: Vec<Bytes>,
}

impl Message {
    /// A new request with no parent, empty metadata and no buffers.
    pub fn new(msg_type: &str, content: Value, session: &str, username: &str) -> Self {
        Message {
            identities: Vec::new(),
            header: Header::new(msg_type, session, username),
            parent_header: None,
            metadata: Map::new(),
            content,
            buffers: Vec::new(),
        }
    }

    /// The message type, e.g. `stream`.
    pub fn msg_type(&self) -> &str {
        &self.header.msg_type
    }

    /// The msg_id of the request this message answers, if it names one.
    pub fn parent_msg_id(&self) -> Option<&str> {
        self.parent_header
            .as_ref()
            .map(|p| p.msg_id.as_str())
            .filter(|id| !id.is_empty())
    }
}

/// Signs and verifies messages with the connection's key.
///
/// An empty key disables signing, as the protocol specifies: the signature frame
/// is then empty and not checked.
#[derive(Clone)]
pub struct Signer {
    mac: Option<Hmac<Sha256>>,
}

impl std::fmt::Debug for Signer {
    // The key is a secret: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("signing", &self.mac.is_some())
            .finish()
    }
}

impl Signer {
    /// A signer for `key`, used as its bytes (Jupyter keys are ASCII text, not hex-decoded).
    pub fn new(key: &str) -> Self {
        let mac = (!key.is_empty()).then(|| {
            // HMAC accepts keys of any length, so this cannot fail.
            Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key length")
        });
        Signer { mac }
    }

    /// The lowercase hex signature of the four JSON frames.
    pub fn sign(&self, parts: [&[u8]; 4]) -> String {
        match &self.mac {
            None => String::new(),
            Some(mac) => {
                let mut mac = mac.clone();
                for part in parts {
                    mac.update(part);
                }
                hex::encode(mac.finalize().into_bytes())
            }
        }
    }

    /// Checks `signature` against the four JSON frames, in constant time.
    pub fn verify(&self, signature: &[u8], parts: [&[u8]; 4]) -> Result<(), ProtocolError> {
        let Some(mac) = &self.mac else {
            return Ok(());
        };
        let expected = hex::decode(signature).map_err(|_| ProtocolError::BadSignature)?;
        let mut mac = mac.clone();
        for part in parts {
            mac.update(part);
        }
        mac.verify_slice(&expected)
            .map_err(|_| ProtocolError::BadSignature)
    }
}

/// Serializes and signs `msg` into the frames to send.
pub fn encode(msg: &Message, signer: &Signer) -> Vec<Bytes> {
    // Serializing these types cannot fail: string keys, JSON values.
    let header = serde_json::to_vec(&msg.header).expect("header serializes");
    let parent = match &msg.parent_header {
        Some(p) => serde_json::to_vec(p).expect("parent header serializes"),
        None => b"{}".to_vec(),
    };
    let metadata = serde_json::to_vec(&msg.metadata).expect("metadata serializes");
    let content = serde_json::to_vec(&msg.content).expect("content serializes");
    let signature = signer.sign([&header, &parent, &metadata, &content]);

    let mut frames = Vec::with_capacity(msg.identities.len() + 6 + msg.buffers.len());
    frames.extend(msg.identities.iter().cloned());
    frames.push(Bytes::from_static(DELIMITER));
    frames.push(Bytes::from(signature.into_bytes()));
    frames.push(Bytes::from(header));
    frames.push(Bytes::from(parent));
    frames.push(Bytes::from(metadata));
    frames.push(Bytes::from(content));
    frames.extend(msg.buffers.iter().cloned());
    frames
}

/// Verifies and parses received frames.
pub fn decode(frames: Vec<Bytes>, signer: &Signer) -> Result<Message, ProtocolError> {
    let delim = frames
        .iter()
        .position(|f| f.as_ref() == DELIMITER)
        .ok_or(ProtocolError::NoDelimiter)?;
    let mut frames = frames;
    let rest = frames.split_off(delim + 1);
    frames.pop(); // the delimiter itself
    let identities = frames;
    if rest.len() < 5 {
        return Err(ProtocolError::TooFewFrames(rest.len()));
    }
    let mut rest = rest.into_iter();
    let signature = rest.next().unwrap_or_default();
    let header = rest.next().unwrap_or_default();
    let parent = rest.next().unwrap_or_default();
    let metadata = rest.next().unwrap_or_default();
    let content = rest.next().unwrap_or_default();
    let buffers: Vec<Bytes> = rest.collect();

    // Verify before parsing: unauthenticated bytes never reach serde.
    signer.verify(&signature, [&header, &parent, &metadata, &content])?;

    let header: Header = serde_json::from_slice(&header).map_err(|source| ProtocolError::Json {
        part: "header",
        source,
    })?;
    let parent: Value = serde_json::from_slice(&parent).map_err(|source| ProtocolError::Json {
        part: "parent_header",
        source,
    })?;
    let parent_header = match parent {
        Value::Object(ref m) if m.is_empty() => None,
        Value::Null => None,
        other => Some(
            serde_json::from_value(other).map_err(|source| ProtocolError::Json {
                part: "parent_header",
                source,
            })?,
        ),
    };
    let metadata =
        match serde_json::from_slice(&metadata).map_err(|source| ProtocolError::Json {
            part: "metadata",
            source,
        })? {
            Value::Object(m) => m,
            // Some kernels send null metadata; treat it as empty rather than reject the output.
            _ => Map::new(),
        };
    let content = serde_json::from_slice(&content).map_err(|source| ProtocolError::Json {
        part: "content",
        source,
    })?;
    Ok(Message {
        identities,
        header,
        parent_header,
        metadata,
        content,
        buffers,
    })
}

/// A new random message or session id, formatted like a UUID v4.
pub fn new_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40; // version 4
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Message {
        let mut m = Message::new("execute_request", json!({"code": "1+1"}), "sess", "u");
        m.identities = vec![Bytes::from_static(b"id1")];
        m.parent_header = Some(Header::new("kernel_info_request", "sess", "u"));
        m.metadata.insert("k".into(), json!(1));
        m.buffers = vec![Bytes::from_static(b"\x00\x01")];
        m
    }

    #[test]
    fn hmac_sha256_matches_the_python_reference() {
        // Reference: hmac.new(b"key", b"".join([b'{"a":1}', b"{}", b"{}", b'{"b":2}']),
        // hashlib.sha256).hexdigest(), the computation jupyter_client's Session.sign does.
        let s = Signer::new("key");
        let sig = s.sign([b"{\"a\":1}", b"{}", b"{}", b"{\"b\":2}"]);
        assert_eq!(
            sig,
            "0206f42f4ae2a48f6054ab91271f90c100f7022f55fb1f23de6377624d533752"
        );
        assert_eq!(sig.len(), 64);
        assert!(s
            .verify(sig.as_bytes(), [b"{\"a\":1}", b"{}", b"{}", b"{\"b\":2}"])
            .is_ok());
    }

    #[test]
    fn round_trip_keeps_every_part() {
        let s = Signer::new("secret");
        let m = sample();
        let frames = encode(&m, &s);
        assert_eq!(frames[0].as_ref(), b"id1");
        assert_eq!(frames[1].as_ref(), DELIMITER);
        let back = decode(frames, &s).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn tampered_content_is_rejected() {
        let s = Signer::new("secret");
        let mut frames = encode(&sample(), &s);
        let content_at = frames.len() - 2;
        frames[content_at] = Bytes::from_static(b"{\"code\":\"evil\"}");
        assert!(matches!(
            decode(frames, &s),
            Err(ProtocolError::BadSignature)
        ));
    }

    #[test]
    fn wrong_key_is_rejected_and_empty_key_skips_signing() {
        let frames = encode(&sample(), &Signer::new("a"));
        assert!(matches!(
            decode(frames.clone(), &Signer::new("b")),
            Err(ProtocolError::BadSignature)
        ));
        let unsigned = encode(&sample(), &Signer::new(""));
        assert!(unsigned[2].is_empty());
        assert!(decode(unsigned, &Signer::new("")).is_ok());
    }

    #[test]
    fn empty_parent_is_none_and_missing_delimiter_is_an_error() {
        let s = Signer::new("k");
        let m = Message::new("status", json!({"execution_state": "idle"}), "s", "u");
        let back = decode(encode(&m, &s), &s).unwrap();
        assert_eq!(back.parent_header, None);
        assert_eq!(back.parent_msg_id(), None);
        assert!(back.identities.is_empty());

        let frames = vec![Bytes::from_static(b"x"), Bytes::from_static(b"y")];
        assert!(matches!(
            decode(frames, &s),
            Err(ProtocolError::NoDelimiter)
        ));
        let short = vec![Bytes::from_static(DELIMITER), Bytes::new()];
        assert!(matches!(
            decode(short, &s),
            Err(ProtocolError::TooFewFrames(1))
        ));
    }

    #[test]
    fn header_has_the_protocol_fields() {
        let h = Header::new("execute_request", "sess", "hutch");
        let v = serde_json::to_value(&h).unwrap();
        for k in [
            "msg_id", "session", "username", "date", "msg_type", "version",
        ] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
        assert_eq!(v["version"], "5.3");
        assert!(h.date.ends_with('Z'));
        assert_eq!(new_id().len(), 36);
        assert_ne!(new_id(), new_id());
    }
}
