//! Connect handlers for `filesystem.Filesystem`: decode the request, find the calling user, call
//! [`FilesystemService`], encode the answer or the error.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::stream::{self, Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::Instant;

use super::watch::EventReceiver;
use super::wire::{
    self, CreateWatcherRequest, GetWatcherEventsRequest, ListDirRequest, MakeDirRequest,
    MoveRequest, RemoveRequest, RemoveWatcherRequest, StatRequest, WatchDirRequest,
};
use super::FilesystemService;
use crate::auth;
use crate::connect::{self, Code, Codec, ConnectError, MAX_MESSAGE_BYTES};
use crate::process::rpc::read_body;
use crate::users::{default_user, User};

/// envd's keepalive interval when the client asks for none.
const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(90);

/// The calling user: `Authorization: Basic` names them, the default user otherwise.
fn caller(service: &FilesystemService, headers: &HeaderMap) -> Result<User, ConnectError> {
    let username = auth::basic_username(headers).unwrap_or_else(|| default_user().to_owned());
    service.user(&username)
}

/// `POST /filesystem.Filesystem/Stat`.
pub async fn stat(
    State(service): State<FilesystemService>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (service, headers_ref) = (&service, &headers);
    unary(&headers, body, |req: StatRequest| async move {
        service.stat(&caller(service, headers_ref)?, req).await
    })
    .await
}

/// `POST /filesystem.Filesystem/MakeDir`.
pub async fn make_dir(
    State(service): State<FilesystemService>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (service, headers_ref) = (&service, &headers);
    unary(&headers, body, |req: MakeDirRequest| async move {
        service.make_dir(&caller(service, headers_ref)?, req).await
    })
    .await
}

/// `POST /filesystem.Filesystem/Move`.
pub async fn move_entry(
    State(service): State<FilesystemService>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (service, headers_ref) = (&service, &headers);
    unary(&headers, body, |req: MoveRequest| async move {
        service
            .move_entry(&caller(service, headers_ref)?, req)
            .await
    })
    .await
}

/// `POST /filesystem.Filesystem/ListDir`.
pub async fn list_dir(
    State(service): State<FilesystemService>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (service, headers_ref) = (&service, &headers);
    unary(&headers, body, |req: ListDirRequest| async move {
        service.list_dir(&caller(service, headers_ref)?, req).await
    })
    .await
}

/// `POST /filesystem.Filesystem/Remove`.
pub async fn remove(
    State(service): State<FilesystemService>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (service, headers_ref) = (&service, &headers);
    unary(&headers, body, |req: RemoveRequest| async move {
        service.remove(&caller(service, headers_ref)?, req).await
    })
    .await
}

/// `POST /filesystem.Filesystem/CreateWatcher`.
pub async fn create_watcher(
    State(service): State<FilesystemService>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (service, headers_ref) = (&service, &headers);
    unary(&headers, body, |req: CreateWatcherRequest| async move {
        service
            .create_watcher(&caller(service, headers_ref)?, req)
            .await
    })
    .await
}

/// `POST /filesystem.Filesystem/GetWatcherEvents`.
pub async fn get_watcher_events(
    State(service): State<FilesystemService>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (service, headers_ref) = (&service, &headers);
    unary(&headers, body, |req: GetWatcherEventsRequest| async move {
        caller(service, headers_ref)?;
        service.get_watcher_events(req)
    })
    .await
}

/// `POST /filesystem.Filesystem/RemoveWatcher`.
pub async fn remove_watcher(
    State(service): State<FilesystemService>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (service, headers_ref) = (&service, &headers);
    unary(&headers, body, |req: RemoveWatcherRequest| async move {
        caller(service, headers_ref)?;
        service.remove_watcher(req)
    })
    .await
}

/// `POST /filesystem.Filesystem/WatchDir`: a server stream of `start`, then filesystem events
/// and keepalives until the client goes away, the deadline passes or the watch fails.
pub async fn watch_dir(
    State(service): State<FilesystemService>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // An unreadable content type still gets a readable answer: the error frame is JSON anyway.
    let codec = connect::stream_codec(&headers).unwrap_or(Codec::Json);
    let opened = async {
        connect::check_protocol_version(&headers)?;
        let codec = connect::stream_codec(&headers)?;
        let deadline = deadline(&headers)?;
        let body = read_body(body, MAX_MESSAGE_BYTES + 5).await?;
        let request: WatchDirRequest = codec.decode(connect::single_message(&body)?)?;
        let user = caller(&service, &headers)?;
        let events = service.watch_dir(&user, request).await?;
        Ok::<_, ConnectError>((events, deadline))
    }
    .await;
    match opened {
        Ok((events, deadline)) => {
            let frames = watch_frames(events, codec, keepalive_interval(&headers), deadline);
            connect::stream_response(codec, Body::from_stream(frames))
        }
        Err(err) => {
            tracing::info!(error = %err, "WatchDir rejected");
            err.into_stream_response(codec)
        }
    }
}

/// The frames of a `WatchDir` stream. Dropping the stream (the client disconnected) drops the
/// receiver, which stops the watch.
fn watch_frames(
    events: EventReceiver,
    codec: Codec,
    keepalive: Duration,
    deadline: Option<Instant>,
) -> impl Stream<Item = Result<Bytes, Infallible>> {
    let first = connect::message_frame(&codec.encode_message(&wire::watch_started()));
    let rest = stream::unfold(Some(events), move |events| async move {
        let mut events = events?;
        let next = tokio::select! {
            next = tokio::time::timeout(keepalive, events.recv()) => next,
            _ = sleep_until(deadline) => {
                let err = ConnectError::new(
                    Code::DeadlineExceeded,
                    "the watch reached its deadline (Connect-Timeout-Ms)",
                );
                return Some((connect::end_stream_frame(Some(&err)), None));
            }
        };
        Some(match next {
            Err(_quiet) => (
                connect::message_frame(&codec.encode_message(&wire::watch_keepalive())),
                Some(events),
            ),
            Ok(Some(Ok(event))) => (
                connect::message_frame(&codec.encode_message(&wire::watch_event(event))),
                Some(events),
            ),
            Ok(Some(Err(err))) => (connect::end_stream_frame(Some(&err)), None),
            Ok(None) => (connect::end_stream_frame(None), None),
        })
    });
    stream::once(async move { first }).chain(rest).map(Ok)
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// `Connect-Timeout-Ms`: when the stream must end. Absent or 0 means never.
fn deadline(headers: &HeaderMap) -> Result<Option<Instant>, ConnectError> {
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
    Ok((ms > 0).then(|| Instant::now() + Duration::from_millis(ms)))
}

/// `Keepalive-Ping-Interval: <seconds>`; envd falls back to 90 s when it is absent or bad.
fn keepalive_interval(headers: &HeaderMap) -> Duration {
    headers
        .get("keepalive-ping-interval")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|secs| *secs > 0)
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_KEEPALIVE)
}

/// Runs one unary call: validates and decodes the request, awaits `call`, encodes its result.
async fn unary<Req, Res, F, Fut>(headers: &HeaderMap, body: Body, call: F) -> Response
where
    Req: DeserializeOwned + prost::Message + Default,
    Res: Serialize + prost::Message,
    F: FnOnce(Req) -> Fut,
    Fut: Future<Output = Result<Res, ConnectError>>,
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
            tracing::debug!(error = %err, "filesystem call failed");
            err.into_unary_response()
        }
    }
}
