//! The Connect protocol (connectrpc.com) as the E2B SDKs speak it to envd: error codes, the
//! 5-byte message envelope of streaming RPCs, and how errors travel for unary and streaming calls.
//!
//! Only what the agent needs as a *server* lives here; the services decide what their messages
//! mean, this module only frames them.

use std::future::Future;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::Instant;

/// Largest message the agent accepts in a request, after the envelope (16 MiB).
///
/// Requests are small JSON documents; the cap exists so a hostile or broken client cannot make
/// PID 1 buffer an unbounded body.
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// Length of the envelope prefix: one flag byte and a 4-byte big-endian length.
const ENVELOPE_PREFIX: usize = 5;
/// Envelope flag: the message is compressed with the negotiated `Connect-Content-Encoding`.
const FLAG_COMPRESSED: u8 = 0x01;
/// Envelope flag: the final end-of-stream message (server to client only).
const FLAG_END_STREAM: u8 = 0x02;

/// Content type of streaming RPCs with the JSON codec.
pub const STREAM_JSON: &str = "application/connect+json";
/// Content type of unary RPCs (requests and error bodies) with the JSON codec.
pub const UNARY_JSON: &str = "application/json";

/// A Connect error code, serialised by its snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// The operation was cancelled, typically by the caller.
    Canceled,
    /// An error with no better code.
    Unknown,
    /// The request is malformed or names something invalid.
    InvalidArgument,
    /// The deadline expired before the operation completed.
    DeadlineExceeded,
    /// The requested entity does not exist.
    NotFound,
    /// The entity the request wanted to create already exists.
    AlreadyExists,
    /// The caller may not do this.
    PermissionDenied,
    /// A quota or limit was hit.
    ResourceExhausted,
    /// The system is not in a state the operation needs.
    FailedPrecondition,
    /// The operation was aborted, e.g. by a concurrency conflict.
    Aborted,
    /// The operation went past a valid range.
    OutOfRange,
    /// The RPC or the requested feature is not implemented.
    Unimplemented,
    /// An invariant of the agent itself broke.
    Internal,
    /// The service is temporarily unavailable.
    Unavailable,
    /// Unrecoverable data loss.
    DataLoss,
    /// The request lacks valid credentials.
    Unauthenticated,
}

impl Code {
    /// The code's name on the wire, e.g. `invalid_argument`.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Canceled => "canceled",
            Code::Unknown => "unknown",
            Code::InvalidArgument => "invalid_argument",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::NotFound => "not_found",
            Code::AlreadyExists => "already_exists",
            Code::PermissionDenied => "permission_denied",
            Code::ResourceExhausted => "resource_exhausted",
            Code::FailedPrecondition => "failed_precondition",
            Code::Aborted => "aborted",
            Code::OutOfRange => "out_of_range",
            Code::Unimplemented => "unimplemented",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
            Code::DataLoss => "data_loss",
            Code::Unauthenticated => "unauthenticated",
        }
    }

    /// The HTTP status a unary error with this code is sent with (the Connect spec's table).
    pub fn http_status(self) -> StatusCode {
        match self {
            // 499 is nginx's "client closed request", which the Connect spec adopted.
            Code::Canceled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
                StatusCode::BAD_REQUEST
            }
            Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// An error as a Connect client receives it: a code and a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ConnectError {
    /// What kind of failure this is; clients branch on it.
    pub code: Code,
    /// What failed, with which input, and what to do about it.
    pub message: String,
}

impl ConnectError {
    /// An error with the given code and message.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// `invalid_argument`: the request itself is wrong.
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }

    /// `not_found`: the request names something that does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, message)
    }

    /// `unauthenticated`: missing or wrong credentials, or an unknown user.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(Code::Unauthenticated, message)
    }

    /// `unimplemented`: the RPC or feature is not available in this agent.
    pub fn unimplemented(message: impl Into<String>) -> Self {
        Self::new(Code::Unimplemented, message)
    }

    /// `internal`: the agent failed in a way the caller cannot fix.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Code::Internal, message)
    }

    /// The error as a unary response: its HTTP status and a JSON body `{"code","message"}`.
    pub fn into_unary_response(self) -> Response {
        let body = serde_json::to_vec(&self).unwrap_or_default();
        (
            self.code.http_status(),
            [(header::CONTENT_TYPE, HeaderValue::from_static(UNARY_JSON))],
            body,
        )
            .into_response()
    }

    /// The error as a whole streaming response: HTTP 200 whose only frame is the end-of-stream
    /// frame carrying the error, which is how Connect servers report a stream that failed before
    /// its first message. (The end-of-stream frame is JSON whatever the codec.)
    pub fn into_stream_response(self, codec: Codec) -> Response {
        stream_response(codec, axum::body::Body::from(end_stream_frame(Some(&self))))
    }
}

/// A 200 streaming response in `codec` around `body`.
pub fn stream_response(codec: Codec, body: axum::body::Body) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(codec.stream_content_type()),
        )],
        body,
    )
        .into_response()
}

/// One envelope around a message payload (flags 0).
pub fn message_frame(payload: &[u8]) -> Bytes {
    frame(0, payload)
}

/// The end-of-stream envelope: `{}` on success, `{"error":{...}}` on failure.
pub fn end_stream_frame(error: Option<&ConnectError>) -> Bytes {
    #[derive(Serialize)]
    struct EndStream<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<&'a ConnectError>,
    }
    let payload = serde_json::to_vec(&EndStream { error }).unwrap_or_else(|_| b"{}".to_vec());
    frame(FLAG_END_STREAM, &payload)
}

fn frame(flags: u8, payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(ENVELOPE_PREFIX + payload.len());
    buf.put_u8(flags);
    // Payloads are bounded by what the agent produces (32 KiB output chunks, small JSON), far
    // below 4 GiB; saturating keeps this total rather than panicking.
    buf.put_u32(u32::try_from(payload.len()).unwrap_or(u32::MAX));
    buf.put_slice(payload);
    buf.freeze()
}

/// Unwraps the single enveloped message a server-streaming request body must consist of.
pub fn single_message(body: &[u8]) -> Result<&[u8], ConnectError> {
    if body.len() < ENVELOPE_PREFIX {
        return Err(ConnectError::invalid_argument(format!(
            "request body of {} bytes is shorter than the 5-byte Connect envelope prefix",
            body.len()
        )));
    }
    let flags = body[0];
    let declared = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    if flags & FLAG_COMPRESSED != 0 {
        // Connect's answer to an unsupported compression is `unimplemented`.
        return Err(ConnectError::unimplemented(
            "compressed request messages are not supported; send them uncompressed",
        ));
    }
    if flags != 0 {
        return Err(ConnectError::invalid_argument(format!(
            "unexpected envelope flags {flags:#04x} on a request message"
        )));
    }
    if declared > MAX_MESSAGE_BYTES {
        return Err(message_too_large(declared));
    }
    let rest = &body[ENVELOPE_PREFIX..];
    if rest.len() < declared {
        return Err(ConnectError::invalid_argument(format!(
            "envelope declares {declared} bytes but the body holds only {}",
            rest.len()
        )));
    }
    if rest.len() > declared {
        return Err(ConnectError::invalid_argument(
            "a server-streaming request must carry exactly one message",
        ));
    }
    Ok(rest)
}

/// The error for a message above [`MAX_MESSAGE_BYTES`].
fn message_too_large(len: usize) -> ConnectError {
    ConnectError::invalid_argument(format!(
        "request message of {len} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit"
    ))
}

/// The message codecs the agent speaks, chosen by the request's `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// proto3's canonical JSON mapping (what the Python and JS SDKs send).
    Json,
    /// The protobuf binary format.
    Proto,
}

impl Codec {
    /// The content type of a streaming response in this codec.
    pub fn stream_content_type(self) -> &'static str {
        match self {
            Codec::Json => STREAM_JSON,
            Codec::Proto => "application/connect+proto",
        }
    }

    /// The content type of a successful unary response in this codec.
    pub fn unary_content_type(self) -> &'static str {
        match self {
            Codec::Json => UNARY_JSON,
            Codec::Proto => "application/proto",
        }
    }

    /// Decodes a request message.
    pub fn decode<T>(self, bytes: &[u8]) -> Result<T, ConnectError>
    where
        T: serde::de::DeserializeOwned + prost::Message + Default,
    {
        match self {
            Codec::Json => hutch_contracts::envd::from_json(bytes).map_err(|err| {
                ConnectError::invalid_argument(format!("invalid JSON request message: {err}"))
            }),
            Codec::Proto => T::decode(bytes).map_err(|err| {
                ConnectError::invalid_argument(format!("invalid protobuf request message: {err}"))
            }),
        }
    }

    /// Encodes a response message.
    pub fn encode<T>(self, message: &T) -> Result<Vec<u8>, ConnectError>
    where
        T: Serialize + prost::Message,
    {
        match self {
            Codec::Json => serde_json::to_vec(message).map_err(|err| {
                ConnectError::internal(format!("encoding the response failed: {err}"))
            }),
            Codec::Proto => Ok(message.encode_to_vec()),
        }
    }

    /// Encodes a message of a stream, where an error has no answer of its own to go in: the
    /// generated serialisers fail only on values these messages cannot hold, and `{}` is a
    /// message clients ignore.
    pub fn encode_message<T>(self, message: &T) -> Vec<u8>
    where
        T: Serialize + prost::Message,
    {
        self.encode(message).unwrap_or_else(|_| b"{}".to_vec())
    }
}

/// The codec of a streaming request, from `application/connect+<codec>`.
pub fn stream_codec(headers: &HeaderMap) -> Result<Codec, ConnectError> {
    codec_from(headers, "application/connect+")
}

/// The codec of a unary request, from `application/<codec>`.
pub fn unary_codec(headers: &HeaderMap) -> Result<Codec, ConnectError> {
    codec_from(headers, "application/")
}

fn codec_from(headers: &HeaderMap, prefix: &str) -> Result<Codec, ConnectError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        // Lenient on purpose: a hand-written curl call without a content type still means JSON.
        return Ok(Codec::Json);
    };
    let raw = value.to_str().unwrap_or("");
    let essence = raw
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.strip_prefix(prefix) {
        Some("json") => Ok(Codec::Json),
        Some("proto") => Ok(Codec::Proto),
        _ => Err(ConnectError::invalid_argument(format!(
            "unsupported content type '{raw}'; expected '{prefix}json' or '{prefix}proto'"
        ))),
    }
}

/// Checks `Connect-Protocol-Version` when a client sends it; absent is fine (as in connect-go).
pub fn check_protocol_version(headers: &HeaderMap) -> Result<(), ConnectError> {
    match headers.get("connect-protocol-version") {
        None => Ok(()),
        Some(v) if v.as_bytes() == b"1" => Ok(()),
        Some(v) => Err(ConnectError::invalid_argument(format!(
            "connect-protocol-version must be '1', got '{}'",
            String::from_utf8_lossy(v.as_bytes())
        ))),
    }
}

/// Runs one unary call: validates and decodes the request, awaits `call`, encodes its result.
pub async fn unary<Req, Res, Fut>(
    headers: &HeaderMap,
    body: Body,
    call: impl FnOnce(Req) -> Fut,
) -> Response
where
    Req: DeserializeOwned + prost::Message + Default,
    Res: Serialize + prost::Message,
    Fut: Future<Output = Result<Res, ConnectError>>,
{
    let result = async {
        check_protocol_version(headers)?;
        let codec = unary_codec(headers)?;
        let body = read_body(body, MAX_MESSAGE_BYTES).await?;
        // An empty body is the empty message in both codecs; for JSON that is `{}`.
        let request = match (codec, body.is_empty()) {
            (Codec::Json, true) => codec.decode(b"{}")?,
            _ => codec.decode(&body)?,
        };
        let response = codec.encode(&call(request).await?)?;
        Ok::<_, ConnectError>((codec, response))
    }
    .await;
    match result {
        Ok((codec, body)) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(codec.unary_content_type()),
            )],
            body,
        )
            .into_response(),
        Err(err) => {
            tracing::debug!(error = %err, "unary call failed");
            err.into_unary_response()
        }
    }
}

/// Buffers a request body of at most `limit` bytes.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, ConnectError> {
    axum::body::to_bytes(body, limit).await.map_err(|err| {
        // `to_bytes` reports the limit through a wrapped LengthLimitError; anything else is the
        // connection failing mid-body.
        let limit_hit = std::error::Error::source(&err)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if limit_hit {
            ConnectError::invalid_argument(format!(
                "request body exceeds the {limit}-byte limit ({MAX_MESSAGE_BYTES} per message)"
            ))
        } else {
            ConnectError::invalid_argument(format!("reading the request body failed: {err}"))
        }
    })
}

/// `Connect-Timeout-Ms`: how long the call may take (what that bounds is the service's to
/// say). Absent or 0 means no limit.
pub fn timeout(headers: &HeaderMap) -> Result<Option<Duration>, ConnectError> {
    let Some(value) = headers.get("connect-timeout-ms") else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(value.as_bytes());
    // The Connect spec caps the header at 10 digits.
    let ms: u64 = (text.len() <= 10)
        .then(|| text.trim().parse().ok())
        .flatten()
        .ok_or_else(|| {
            ConnectError::invalid_argument(format!(
                "invalid Connect-Timeout-Ms '{text}': expected at most 10 decimal digits"
            ))
        })?;
    Ok((ms > 0).then(|| Duration::from_millis(ms)))
}

/// Waits until `deadline`; without one, forever.
pub async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_message_round_trips_a_frame() {
        let framed = message_frame(b"{\"a\":1}");
        assert_eq!(single_message(&framed).unwrap(), b"{\"a\":1}");
    }

    #[test]
    fn single_message_rejects_truncated_extra_and_compressed_bodies() {
        let framed = message_frame(b"{}");
        assert!(single_message(&framed[..3]).is_err());
        assert!(single_message(&framed[..framed.len() - 1]).is_err());
        let mut doubled = framed.to_vec();
        doubled.extend_from_slice(&framed);
        assert!(single_message(&doubled).is_err());
        let mut compressed = framed.to_vec();
        compressed[0] = FLAG_COMPRESSED;
        assert!(single_message(&compressed).is_err());
    }

    #[test]
    fn single_message_rejects_oversized_length_without_allocating() {
        let mut body = vec![0u8, 0xff, 0xff, 0xff, 0xff];
        body.extend_from_slice(b"{}");
        let err = single_message(&body).unwrap_err();
        assert_eq!(err.code, Code::InvalidArgument);
    }

    #[test]
    fn end_stream_frame_carries_error_json() {
        let err = ConnectError::not_found("gone");
        let frame = end_stream_frame(Some(&err));
        assert_eq!(frame[0], FLAG_END_STREAM);
        let v: serde_json::Value = serde_json::from_slice(&frame[5..]).unwrap();
        assert_eq!(v["error"]["code"], "not_found");
        assert_eq!(v["error"]["message"], "gone");
        assert_eq!(&end_stream_frame(None)[5..], b"{}");
    }
}
