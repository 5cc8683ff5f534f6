//! Connect handlers for `process.Process`: decode the request, call [`ProcessService`], encode the
//! answer or the error.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::Bytes;
use futures_util::stream::{self, Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::wire::{ListResponse, ProcessEvent, SendSignalRequest, StartRequest};
use super::{ProcessService, Started};
use crate::auth;
use crate::connect::{self, Code, Codec, ConnectError, MAX_MESSAGE_BYTES};
use crate::proto::{FromProto, ToProto};
use crate::users::DEFAULT_USER;

/// `POST /process.Process/Start`: a server stream of the new process's events.
pub async fn start(
    State(service): State<ProcessService>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // An unreadable content type still gets a readable answer: the error frame is JSON anyway.
    let codec = connect::stream_codec(&headers).unwrap_or(Codec::Json);
    match start_stream(&service, &headers, body).await {
        Ok(started) => {
            let keepalive = keepalive_interval(&headers);
            let frames = event_frames(started, codec, keepalive);
            connect::stream_response(codec, Body::from_stream(frames))
        }
        Err(err) => {
            tracing::info!(error = %err, "Start rejected");
            err.into_stream_response(codec)
        }
    }
}

async fn start_stream(
    service: &ProcessService,
    headers: &HeaderMap,
    body: Body,
) -> Result<Started, ConnectError> {
    connect::check_protocol_version(headers)?;
    let codec = connect::stream_codec(headers)?;
    let lifetime = process_lifetime(headers)?;
    let body = read_body(body, MAX_MESSAGE_BYTES + 5).await?;
    let request: StartRequest = codec.decode(connect::single_message(&body)?)?;
    let username = auth::basic_username(headers).unwrap_or_else(|| DEFAULT_USER.to_owned());
    let user = service.user(&username)?;
    service.start(request, user, lifetime).await
}

/// The frames of a `Start` stream: `start`, the process's events (with keepalives in quiet
/// stretches), and the end-of-stream frame once the process's `end` went out.
///
/// When the process had a lifetime and outlived it, the stream ends with `deadline_exceeded`
/// instead of the `end` event, as envd's does (there the limit is also the call's deadline); the
/// SDKs turn that into their timeout error.
fn event_frames(
    started: Started,
    codec: Codec,
    keepalive: Option<Duration>,
) -> impl Stream<Item = Result<Bytes, Infallible>> {
    let Started {
        pid,
        events,
        deadline,
    } = started;
    let first = connect::message_frame(&ProcessEvent::Start { pid }.encode(codec));
    let rest = stream::unfold(Some(events), move |events| async move {
        let mut events = events?;
        let next = tokio::select! {
            event = next_event(&mut events, keepalive) => event,
            _ = sleep_until_deadline(deadline) => None,
        };
        let expired = deadline.is_some_and(|d| tokio::time::Instant::now() >= d);
        Some(match next {
            Some(ProcessEvent::End(_)) | None if expired => {
                let err = ConnectError::new(
                    Code::DeadlineExceeded,
                    format!(
                        "process {pid} outlived its timeout (Connect-Timeout-Ms) and was killed"
                    ),
                );
                (connect::end_stream_frame(Some(&err)), None)
            }
            Some(event) => (connect::message_frame(&event.encode(codec)), Some(events)),
            None => (connect::end_stream_frame(None), None),
        })
    });
    stream::once(async move { first }).chain(rest).map(Ok)
}

/// The next event, or a keepalive after `keepalive` of silence.
async fn next_event(
    events: &mut tokio::sync::mpsc::Receiver<ProcessEvent>,
    keepalive: Option<Duration>,
) -> Option<ProcessEvent> {
    match keepalive {
        Some(interval) => tokio::time::timeout(interval, events.recv())
            .await
            .unwrap_or(Some(ProcessEvent::Keepalive)),
        None => events.recv().await,
    }
}

async fn sleep_until_deadline(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// `Connect-Timeout-Ms` on `Start`: how long the process may live (envd's meaning), which is
/// also the stream's deadline. Absent or 0 means no limit.
fn process_lifetime(headers: &HeaderMap) -> Result<Option<Duration>, ConnectError> {
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

/// `Keepalive-Ping-Interval: <seconds>`: send a keepalive after this much silence.
fn keepalive_interval(headers: &HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get("keepalive-ping-interval")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (secs > 0).then(|| Duration::from_secs(secs))
}

/// `ListRequest` has no fields; anything else in it is ignored.
#[derive(Default, Deserialize)]
struct ListRequest {}

impl FromProto for ListRequest {
    fn merge_proto(&mut self, buf: &[u8]) -> Result<(), crate::proto::ProtoError> {
        // Still walk the fields so garbage is rejected like in any other message.
        let mut reader = crate::proto::Reader::new(buf);
        while reader.next_field()?.is_some() {}
        Ok(())
    }
}

/// `SendSignalResponse` (and other empty responses).
#[derive(Serialize)]
struct Empty {}

impl ToProto for Empty {
    fn to_proto(&self) -> Vec<u8> {
        Vec::new()
    }
}

/// `POST /process.Process/List`.
pub async fn list(
    State(service): State<ProcessService>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    unary::<ListRequest, _>(&headers, body, |_| {
        Ok(ListResponse {
            processes: service.list(),
        })
    })
    .await
}

/// `POST /process.Process/SendSignal`.
pub async fn send_signal(
    State(service): State<ProcessService>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    unary::<SendSignalRequest, _>(&headers, body, |req| {
        service
            .send_signal(req.process, req.signal)
            .map(|()| Empty {})
    })
    .await
}

/// Runs one unary call: validates and decodes the request, applies `call`, encodes its result.
async fn unary<Req, Res>(
    headers: &HeaderMap,
    body: Body,
    call: impl FnOnce(Req) -> Result<Res, ConnectError>,
) -> Response
where
    Req: DeserializeOwned + FromProto,
    Res: Serialize + ToProto,
{
    let result = async {
        connect::check_protocol_version(headers)?;
        let codec = connect::unary_codec(headers)?;
        let body = read_body(body, MAX_MESSAGE_BYTES).await?;
        // An empty body is the empty message in both codecs; for JSON that is `{}`.
        let request = match (codec, body.is_empty()) {
            (Codec::Json, true) => codec.decode(b"{}")?,
            _ => codec.decode(&body)?,
        };
        let response = codec.encode(&call(request)?)?;
        Ok::<_, ConnectError>((codec, response))
    }
    .await;
    match result {
        Ok((codec, body)) => axum::response::IntoResponse::into_response((
            [(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static(codec.unary_content_type()),
            )],
            body,
        )),
        Err(err) => err.into_unary_response(),
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

/// Any RPC this agent does not implement (yet): `unimplemented`, shaped for the caller's kind of
/// call (a stream end for streaming content types, a JSON error for unary ones).
pub async fn unimplemented(uri: axum::http::Uri, headers: HeaderMap) -> Response {
    let err =
        ConnectError::unimplemented(format!("{} is not implemented by this agent", uri.path()));
    let streaming = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/connect+"));
    if streaming {
        let codec = connect::stream_codec(&headers).unwrap_or(Codec::Json);
        err.into_stream_response(codec)
    } else {
        err.into_unary_response()
    }
}
