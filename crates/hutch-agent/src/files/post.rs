//! `POST /files`: one raw file or a multipart body of files, streamed to disk on a blocking
//! thread.

use std::collections::BTreeMap;
use std::io;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::signature::Operation;
use super::upload::{self, BodyKind, UploadPlan};
use hutch_contracts::agent::{
    UploadOpen, FILE_HANDOFF_HEADER, UPLOAD_REFUSED, UPLOAD_REFUSED_UNAUTHORISED,
};

use super::{handoff, xattr, FileError, FileParams, FilesService};

/// How much of a request body is read and discarded after an upload failed, so the client gets
/// to read the error instead of a connection reset while it is still sending. Past this the
/// connection is dropped.
const DRAIN_LIMIT: u64 = 1 << 30;

/// Request body chunks buffered between the connection and the writing thread.
const UPLOAD_IN_FLIGHT: usize = 8;

/// `POST /files`: writes the uploaded file(s) and answers `[{"name","path","type","metadata"?}]`.
pub async fn upload(
    State(service): State<FilesService>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Response {
    if handoff::requested(&headers) {
        return open_for_server(service, headers, uri, body).await;
    }
    let plan = match plan_upload(&service, &headers, &uri, None) {
        Ok(plan) => plan,
        Err((err, authorized)) => {
            // An unauthenticated client gets no courtesy drain: it could make the agent read
            // gigabytes for nothing.
            if authorized {
                drain(body, DRAIN_LIMIT).await;
            }
            return err.into_response();
        }
    };
    let (tx, rx) = mpsc::channel::<io::Result<bytes::Bytes>>(UPLOAD_IN_FLIGHT);
    let worker = {
        let plan = plan.clone();
        tokio::task::spawn_blocking(move || upload::run(&plan, upload::BodyReader::new(rx)))
    };
    let mut stream = body.into_data_stream();
    let mut sender = Some(tx);
    let mut discarded: u64 = 0;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => match &sender {
                Some(tx) => {
                    if tx.send(Ok(bytes)).await.is_err() {
                        // The writer stopped (an error, or the multipart body ended): read the
                        // rest so the client sees the answer.
                        sender = None;
                    }
                }
                None => {
                    discarded += bytes.len() as u64;
                    if discarded > DRAIN_LIMIT {
                        break;
                    }
                }
            },
            Err(err) => {
                if let Some(tx) = &sender {
                    let _ = tx
                        .send(Err(io::Error::new(io::ErrorKind::ConnectionAborted, err)))
                        .await;
                }
                break;
            }
        }
    }
    drop(sender);
    let result = worker
        .await
        .map_err(|err| FileError::new(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()))
        .and_then(|r| r);
    match result {
        Ok(written) => {
            tracing::debug!(files = written.len(), user = %plan.user.name, "upload complete");
            let body = serde_json::to_vec(&written).unwrap_or_else(|_| b"[]".to_vec());
            (
                StatusCode::OK,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                body,
            )
                .into_response()
        }
        Err(err) => err.into_response(),
    }
}

/// The longest [`UploadOpen`] body read.
const OPEN_LIMIT: usize = 1 << 20;

/// `POST /files` from the server, for an upload whose body it reads itself ([`UploadOpen`]):
/// opens the file and hands it over.
async fn open_for_server(
    service: FilesService,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Response {
    let open: UploadOpen = match axum::body::to_bytes(body, OPEN_LIMIT)
        .await
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(open) => open,
        Err(e) => {
            let err = FileError::new(StatusCode::BAD_REQUEST, format!("bad upload hand-off: {e}"));
            return refused(err, true);
        }
    };
    let plan = match plan_upload(&service, &headers, &uri, Some(open.multipart)) {
        Ok(plan) => plan,
        Err((err, authorized)) => return refused(err, authorized),
    };
    let opened = tokio::task::spawn_blocking(move || upload::open_for_server(&plan, &open))
        .await
        .map_err(|err| FileError::new(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()))
        .and_then(|r| r)
        .and_then(|(file, written)| handoff::hand_over_upload(file, written));
    opened.unwrap_or_else(|err| refused(err, true))
}

/// The answer to an [`UploadOpen`] the agent refuses: the upload's error, marked so the
/// server knows this agent understood the request and whether to read the client's body.
fn refused(err: FileError, authorized: bool) -> Response {
    let mut response = err.into_response();
    let mark = if authorized {
        UPLOAD_REFUSED
    } else {
        UPLOAD_REFUSED_UNAUTHORISED
    };
    response
        .headers_mut()
        .insert(FILE_HANDOFF_HEADER, HeaderValue::from_static(mark));
    response
}

/// Everything about an upload that can be decided from its headers (`multipart`: what the
/// server says the body it reads is, instead of the headers). The error side says whether
/// the client was authorised (to decide whether its body is worth draining).
fn plan_upload(
    service: &FilesService,
    headers: &HeaderMap,
    uri: &Uri,
    multipart: Option<bool>,
) -> Result<UploadPlan, (FileError, bool)> {
    let params = FileParams::from_uri(uri).map_err(|e| (e, false))?;
    let username = service
        .authorize(headers, &params, Operation::Write)
        .map_err(|e| (e, false))?;
    let fail = |e: FileError| (e, true);

    let gzip = match headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("").trim().to_ascii_lowercase())
    {
        None => false,
        Some(v) if v.is_empty() || v == "identity" => false,
        Some(v) if v == "gzip" || v == "x-gzip" => true,
        Some(v) => {
            return Err(fail(FileError::new(
                StatusCode::BAD_REQUEST,
                format!("error decompressing request body: unsupported Content-Encoding: {v}, supported: [gzip]"),
            )))
        }
    };
    // The passwd lookup is a small file read; doing it here keeps errors ahead of the body.
    let user = service.lookup(&username).map_err(|e| (e, true))?;
    let metadata = metadata_headers(headers);
    xattr::validate(&metadata).map_err(|why| {
        fail(FileError::new(
            StatusCode::BAD_REQUEST,
            format!("invalid metadata: {why}"),
        ))
    })?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let kind = match (multipart, BodyKind::from_content_type(content_type)) {
        // The boundary is the server's business; the agent only needs to know which it is.
        (Some(true), _) => BodyKind::Multipart(String::new()),
        (Some(false), _) => BodyKind::Raw,
        (None, Some(Ok(kind))) => kind,
        (None, Some(Err(err))) => {
            return Err(fail(FileError::new(
                StatusCode::BAD_REQUEST,
                format!("error parsing multipart form: {err}"),
            )))
        }
        (None, None) => return Err(fail(FileError::new(
            StatusCode::BAD_REQUEST,
            format!("unsupported content type: {content_type}, expected multipart/form-data or application/octet-stream"),
        ))),
    };
    let content_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    Ok(UploadPlan {
        user,
        path: params.path,
        kind,
        gzip,
        metadata,
        content_length,
    })
}

/// `X-Metadata-<Key>: <value>` headers as metadata (keys lowercased, first value wins).
fn metadata_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for name in headers.keys() {
        // Header names are lowercase in `http`.
        let Some(key) = name.as_str().strip_prefix("x-metadata-") else {
            continue;
        };
        if key.is_empty() || out.contains_key(key) {
            continue;
        }
        if let Some(value) = headers.get(name) {
            // Non-ASCII bytes are kept (lossily) so validation can reject them with a message.
            out.insert(
                key.to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            );
        }
    }
    out
}

/// Reads and discards up to `limit` bytes of `body`.
async fn drain(body: Body, limit: u64) {
    let mut stream = body.into_data_stream();
    let mut seen: u64 = 0;
    while let Some(Ok(chunk)) = stream.next().await {
        seen += chunk.len() as u64;
        if seen > limit {
            break;
        }
    }
}
