//! Connect handlers for `process.Process`: decode the request, call [`ProcessService`], encode the
//! answer or the error.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::{Buf, Bytes, BytesMut};
use futures_util::stream::{self, Stream, StreamExt};

use super::wire::{
    CloseStdinRequest, ConnectRequest, ListRequest, ListResponse, ProcessEvent, SendInputRequest,
    SendSignalRequest, StartRequest, StreamInputEvent, StreamInputRequest, UpdateRequest,
};
use super::{InputTarget, ProcessService, Started};
use crate::auth;
use crate::connect::{self, Code, Codec, ConnectError, MAX_MESSAGE_BYTES};
use crate::users::default_user;
use hutch_contracts::envd::process::{
    CloseStdinResponse, SendInputResponse, SendSignalResponse, StreamInputResponse, UpdateResponse,
};

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
            let frames = event_frames(started, codec, keepalive, Call::Start);
            connect::stream_response(codec, Body::from_stream(frames))
        }
        Err(err) => {
            tracing::info!(error = %err, "Start rejected");
            err.into_stream_response(codec)
        }
    }
}

/// `POST /process.Process/Connect`: a server stream of a running process's events from now on,
/// or just its `end` if it finished recently. `Connect-Timeout-Ms` bounds this stream only; the
/// process keeps running when it expires.
pub async fn connect(
    State(service): State<ProcessService>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let codec = connect::stream_codec(&headers).unwrap_or(Codec::Json);
    match connect_stream(&service, &headers, body).await {
        Ok(started) => {
            let keepalive = keepalive_interval(&headers);
            let frames = event_frames(started, codec, keepalive, Call::Connect);
            connect::stream_response(codec, Body::from_stream(frames))
        }
        Err(err) => {
            tracing::info!(error = %err, "Connect rejected");
            err.into_stream_response(codec)
        }
    }
}

async fn connect_stream(
    service: &ProcessService,
    headers: &HeaderMap,
    body: Body,
) -> Result<Started, ConnectError> {
    connect::check_protocol_version(headers)?;
    let codec = connect::stream_codec(headers)?;
    let timeout = connect::timeout(headers)?;
    let body = connect::read_body(body, MAX_MESSAGE_BYTES + 5).await?;
    let request: ConnectRequest = codec.decode(connect::single_message(&body)?)?;
    let mut started = service.connect(request.process)?;
    started.deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    Ok(started)
}

/// Which call a stream of process events answers; they differ in what their deadline means.
#[derive(Debug, Clone, Copy)]
enum Call {
    /// The deadline is the process's lifetime; the process was killed when it passed.
    Start,
    /// The deadline is the stream's own; the process is not affected.
    Connect,
}

async fn start_stream(
    service: &ProcessService,
    headers: &HeaderMap,
    body: Body,
) -> Result<Started, ConnectError> {
    connect::check_protocol_version(headers)?;
    let codec = connect::stream_codec(headers)?;
    let lifetime = connect::timeout(headers)?;
    let body = connect::read_body(body, MAX_MESSAGE_BYTES + 5).await?;
    let request: StartRequest = codec.decode(connect::single_message(&body)?)?;
    let username = auth::basic_username(headers).unwrap_or_else(|| default_user().to_owned());
    let user = service.user(&username)?;
    service.start(request, user, lifetime).await
}

/// The frames of a `Start` or `Connect` stream: `start`, the process's events (with keepalives in
/// quiet stretches), and the end-of-stream frame once the process's `end` went out.
///
/// When the deadline passes first, the stream ends with `deadline_exceeded` instead of the `end`
/// event, as envd's does (there the limit is the call's deadline); the SDKs turn that into their
/// timeout error. For `Start` the process was killed at that moment.
fn event_frames(
    started: Started,
    codec: Codec,
    keepalive: Option<Duration>,
    call: Call,
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
            _ = connect::sleep_until(deadline) => None,
        };
        let expired = deadline.is_some_and(|d| tokio::time::Instant::now() >= d);
        Some(match next {
            Some(ProcessEvent::End(_)) | None if expired => {
                let message = match call {
                    Call::Start => format!(
                        "process {pid} outlived its timeout (Connect-Timeout-Ms) and was killed"
                    ),
                    Call::Connect => format!(
                        "the stream of process {pid} reached its timeout (Connect-Timeout-Ms); \
                         the process keeps running"
                    ),
                };
                let err = ConnectError::new(Code::DeadlineExceeded, message);
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

/// `POST /process.Process/List`.
pub async fn list(
    State(service): State<ProcessService>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    connect::unary::<ListRequest, _, _>(&headers, body, |_| async move {
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
    connect::unary::<SendSignalRequest, _, _>(&headers, body, |req| async move {
        service
            .send_signal(req.process, req.signal)
            .map(|()| SendSignalResponse {})
    })
    .await
}

/// `POST /process.Process/SendInput`: writes bytes to a process's stdin or terminal.
pub async fn send_input(
    State(service): State<ProcessService>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    connect::unary::<SendInputRequest, _, _>(&headers, body, |req| async move {
        service
            .send_input(req.process, req.input.and_then(|input| input.input))
            .await
            .map(|()| SendInputResponse {})
    })
    .await
}

/// `POST /process.Process/CloseStdin`: closes a process's stdin pipe (it reads end of file).
pub async fn close_stdin(
    State(service): State<ProcessService>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    connect::unary::<CloseStdinRequest, _, _>(&headers, body, |req| async move {
        service
            .close_stdin(req.process)
            .map(|()| CloseStdinResponse {})
    })
    .await
}

/// `POST /process.Process/Update`: resizes a PTY process's terminal.
pub async fn update(
    State(service): State<ProcessService>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    connect::unary::<UpdateRequest, _, _>(&headers, body, |req| async move {
        service
            .update(req.process, req.pty)
            .map(|()| UpdateResponse {})
    })
    .await
}

/// `POST /process.Process/StreamInput`: a client stream of input for one process. The first
/// message names the process (`start`), then `data` messages are written in order as they
/// arrive, with `keepalive`s in between as the client likes. Answered with the empty response
/// once the client ends its stream, or with the first error.
pub async fn stream_input(
    State(service): State<ProcessService>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let codec = connect::stream_codec(&headers).unwrap_or(Codec::Json);
    let result = async {
        connect::check_protocol_version(&headers)?;
        let codec = connect::stream_codec(&headers)?;
        feed_input(&service, codec, body).await
    }
    .await;
    match result {
        Ok(()) => {
            let mut frames = BytesMut::new();
            let response = codec.encode_message(&StreamInputResponse {});
            frames.extend_from_slice(&connect::message_frame(&response));
            frames.extend_from_slice(&connect::end_stream_frame(None));
            connect::stream_response(codec, Body::from(frames.freeze()))
        }
        Err(err) => {
            tracing::info!(error = %err, "StreamInput failed");
            err.into_stream_response(codec)
        }
    }
}

/// Reads the enveloped messages of a `StreamInput` body as they arrive and acts on each.
async fn feed_input(
    service: &ProcessService,
    codec: Codec,
    body: Body,
) -> Result<(), ConnectError> {
    let mut body = body.into_data_stream();
    let mut buf = BytesMut::new();
    let mut target: Option<InputTarget> = None;
    loop {
        while let Some(payload) = next_envelope(&mut buf)? {
            let message: StreamInputRequest = codec.decode(&payload)?;
            match message.event {
                Some(StreamInputEvent::Start(start)) => {
                    target = Some(service.input_target(start.process)?);
                }
                Some(StreamInputEvent::Data(data)) => {
                    let target = target.as_ref().ok_or_else(|| {
                        ConnectError::invalid_argument(
                            "StreamInput sent data before its start event named a process",
                        )
                    })?;
                    let input = data.input.and_then(|input| input.input).ok_or_else(|| {
                        ConnectError::invalid_argument(
                            "a StreamInput data event has no input: set 'stdin' or 'pty'",
                        )
                    })?;
                    target.write(input).await?;
                }
                Some(StreamInputEvent::Keepalive(_)) | None => {}
            }
        }
        match body.next().await {
            Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
            Some(Err(err)) => {
                return Err(ConnectError::new(
                    Code::Unknown,
                    format!("error streaming input: {err}"),
                ))
            }
            None if buf.is_empty() => return Ok(()),
            None => {
                return Err(ConnectError::invalid_argument(format!(
                    "the StreamInput body ended inside a message ({} bytes left over)",
                    buf.len()
                )))
            }
        }
    }
}

/// Takes one whole enveloped message off the front of `buf`, if it holds one.
fn next_envelope(buf: &mut BytesMut) -> Result<Option<Bytes>, ConnectError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let flags = buf[0];
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if flags & 0x01 != 0 {
        return Err(ConnectError::unimplemented(
            "compressed request messages are not supported; send them uncompressed",
        ));
    }
    if flags != 0 {
        return Err(ConnectError::invalid_argument(format!(
            "unexpected envelope flags {flags:#04x} on a request message"
        )));
    }
    if len > MAX_MESSAGE_BYTES {
        return Err(ConnectError::invalid_argument(format!(
            "request message of {len} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit"
        )));
    }
    if buf.len() < 5 + len {
        return Ok(None);
    }
    buf.advance(5);
    Ok(Some(buf.split_to(len).freeze()))
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
