//! Connect handlers for `filesystem.Filesystem`: decode the request, find the calling user, call
//! [`FilesystemService`], encode the answer or the error.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::Bytes;
use futures_util::stream::{self, Stream, StreamExt};
use tokio::time::Instant;

use super::watch::EventReceiver;
use super::wire::{
    self, CreateWatcherRequest, GetWatcherEventsRequest, ListDirRequest, MakeDirRequest,
    MoveRequest, RemoveRequest, RemoveWatcherRequest, StatRequest, WatchDirRequest,
};
use super::FilesystemService;
use crate::auth;
use crate::connect::{self, Code, Codec, ConnectError, MAX_MESSAGE_BYTES};
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
    connect::unary(&headers, body, |req: StatRequest| async move {
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
    connect::unary(&headers, body, |req: MakeDirRequest| async move {
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
    connect::unary(&headers, body, |req: MoveRequest| async move {
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
    connect::unary(&headers, body, |req: ListDirRequest| async move {
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
    connect::unary(&headers, body, |req: RemoveRequest| async move {
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
    connect::unary(&headers, body, |req: CreateWatcherRequest| async move {
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
    connect::unary(&headers, body, |req: GetWatcherEventsRequest| async move {
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
    connect::unary(&headers, body, |req: RemoveWatcherRequest| async move {
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
        let deadline = connect::timeout(&headers)?.map(|t| Instant::now() + t);
        let body = connect::read_body(body, MAX_MESSAGE_BYTES + 5).await?;
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
            _ = connect::sleep_until(deadline) => {
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
