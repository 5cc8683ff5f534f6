//! The agent's plain-HTTP file endpoints (envd's `/files` and `/envs`):
//!
//! - `GET /files?path=&username=`: a file's bytes, streamed, with byte ranges and on-the-fly gzip;
//! - `POST /files`: one file as `application/octet-stream` with `?path=`, or several as
//!   `multipart/form-data` (part `file`, filename = target path), optionally gzip-compressed,
//!   created with missing parent directories and owned by the calling user;
//! - signed URLs: `?signature=` (and `signature_expiration=`) stand in for `X-Access-Token`;
//! - `GET /envs`: the sandbox's environment variables.
//!
//! Errors are JSON `{"code": <HTTP status>, "message": "..."}`, which the SDK maps by status
//! (400 invalid argument, 401 authentication, 404 not found, 507 not enough space).
//!
//! [`multipart`] is the body parser (pure and fuzzed), [`download`] and [`upload`] the two
//! directions, [`signature`] the URL signing, [`paths`] path resolution, [`xattr`] file metadata.

pub mod download;
pub mod multipart;
pub mod paths;
pub mod signature;
pub mod upload;
pub mod xattr;

use hutch_sys::errno;
use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::auth::{self, ACCESS_TOKEN_HEADER};
use crate::users::{default_user, User, UserDb, UserError};
use download::{Encoding, Precondition, RangeError};
use signature::{Operation, SignatureError};
use upload::{BodyKind, UploadPlan};

/// How much of a request body is read and discarded after an upload failed, so the client gets
/// to read the error instead of a connection reset while it is still sending. Past this the
/// connection is dropped.
const DRAIN_LIMIT: u64 = 1 << 30;

/// Request body chunks buffered between the connection and the writing thread.
const UPLOAD_IN_FLIGHT: usize = 8;

/// An error answer of the file endpoints: an HTTP status and a message, sent as
/// `{"code": <status>, "message": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct FileError {
    /// The HTTP status (and the body's `code`).
    pub status: StatusCode,
    /// What went wrong, for people.
    pub message: String,
}

impl FileError {
    /// An error with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for FileError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body<'a> {
            code: u16,
            message: &'a str,
        }
        let body = serde_json::to_vec(&Body {
            code: self.status.as_u16(),
            message: &self.message,
        })
        .unwrap_or_default();
        if self.status.is_server_error() {
            tracing::warn!(status = self.status.as_u16(), error = %self.message, "file request failed");
        } else {
            tracing::info!(status = self.status.as_u16(), error = %self.message, "file request rejected");
        }
        (
            self.status,
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json; charset=utf-8"),
                ),
                (
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ),
            ],
            body,
        )
            .into_response()
    }
}

/// The file endpoints' state: who the users are, the sandbox's env vars and access token.
#[derive(Clone)]
pub struct FilesService {
    inner: Arc<Inner>,
}

struct Inner {
    users: UserDb,
    env_vars: BTreeMap<String, String>,
    access_token: Option<Arc<str>>,
}

impl FilesService {
    /// A service that resolves users in `users`, reports `env_vars` on `/envs` and checks
    /// signatures against `access_token` (no token: no checks, as in envd).
    pub fn new(
        users: UserDb,
        env_vars: BTreeMap<String, String>,
        access_token: Option<Arc<str>>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                users,
                env_vars,
                access_token,
            }),
        }
    }

    /// Authorises a `/files` request and picks the user it acts as.
    ///
    /// With an access token set, the request needs the right `X-Access-Token` or a valid
    /// signature. A signed request acts as the user it was signed for (`username`, or the default
    /// user); `Authorization: Basic` is ignored then, or a URL signed for `user` could be replayed
    /// as root.
    fn authorize(
        &self,
        headers: &HeaderMap,
        params: &FileParams,
        operation: Operation,
    ) -> Result<String, FileError> {
        let unauthorized =
            |err: SignatureError| FileError::new(StatusCode::UNAUTHORIZED, err.to_string());
        let expiration = params.expiration()?;
        let signed = match self.inner.access_token.as_deref() {
            None => false,
            Some(token) => match headers.get(ACCESS_TOKEN_HEADER) {
                Some(presented) => {
                    if !hutch_contracts::auth::constant_time_eq(
                        presented.as_bytes(),
                        token.as_bytes(),
                    ) {
                        return Err(unauthorized(SignatureError::WrongToken));
                    }
                    false
                }
                None => {
                    signature::verify(
                        params.signature.as_deref(),
                        params.path.as_deref().unwrap_or(""),
                        operation,
                        params.username.as_deref().unwrap_or(""),
                        token,
                        expiration,
                        signature::unix_now(),
                    )
                    .map_err(unauthorized)?;
                    true
                }
            },
        };
        Ok(match &params.username {
            Some(name) => name.clone(),
            None if signed => default_user().to_owned(),
            None => auth::basic_username(headers).unwrap_or_else(|| default_user().to_owned()),
        })
    }

    fn lookup(&self, username: &str) -> Result<User, FileError> {
        self.inner.users.lookup(username).map_err(|err| match err {
            UserError::Unknown(_) => FileError::new(
                StatusCode::UNAUTHORIZED,
                format!("error looking up user '{username}': {err}"),
            ),
            UserError::Read { .. } => FileError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("error looking up user '{username}': {err}"),
            ),
        })
    }
}

/// Whether a request is a signed `/files` request without an access token: the auth layer lets
/// those through, and the handlers verify the signature ([`FilesService`]'s `authorize`).
pub fn is_signed_files_request(method: &Method, uri: &Uri, headers: &HeaderMap) -> bool {
    (method == Method::GET || method == Method::HEAD || method == Method::POST)
        && uri.path() == "/files"
        && !headers.contains_key(ACCESS_TOKEN_HEADER)
        && uri.query().is_some_and(|q| {
            q.split('&')
                .any(|pair| pair.split('=').next() == Some("signature"))
        })
}

/// The query parameters of `/files`.
#[derive(Debug, Default, Deserialize)]
struct FileParams {
    path: Option<String>,
    username: Option<String>,
    signature: Option<String>,
    signature_expiration: Option<String>,
}

impl FileParams {
    fn from_uri(uri: &Uri) -> Result<Self, FileError> {
        Query::<FileParams>::try_from_uri(uri)
            .map(|Query(p)| p)
            .map_err(|err| {
                FileError::new(
                    StatusCode::BAD_REQUEST,
                    format!("invalid query parameters: {}", err.body_text()),
                )
            })
    }

    fn expiration(&self) -> Result<Option<i64>, FileError> {
        self.signature_expiration
            .as_deref()
            .map(|s| {
                s.trim().parse::<i64>().map_err(|_| {
                    FileError::new(
                        StatusCode::BAD_REQUEST,
                        format!("Invalid format for parameter signature_expiration: '{s}' is not an integer"),
                    )
                })
            })
            .transpose()
    }
}

/// `GET /files`: the file at `path`, as the user `username` would address it.
pub async fn download(
    State(service): State<FilesService>,
    method: Method,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    match serve_download(&service, &method, &headers, &uri).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

/// What the blocking part of a download found.
struct Opened {
    file: File,
    resolved: std::path::PathBuf,
    meta: std::fs::Metadata,
}

async fn serve_download(
    service: &FilesService,
    method: &Method,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<Response, FileError> {
    let params = FileParams::from_uri(uri)?;
    let username = service.authorize(headers, &params, Operation::Read)?;
    let raw_path = params.path.clone().unwrap_or_default();

    let svc = service.clone();
    let opened = tokio::task::spawn_blocking(move || -> Result<Opened, FileError> {
        let user = svc.lookup(&username)?;
        let resolved = paths::resolve(&raw_path, &user).map_err(|err| {
            FileError::new(
                StatusCode::BAD_REQUEST,
                format!("error expanding and resolving path '{raw_path}': {err}"),
            )
        })?;
        let meta = std::fs::metadata(&resolved).map_err(|err| {
            if err.kind() == io::ErrorKind::NotFound {
                FileError::new(
                    StatusCode::NOT_FOUND,
                    format!("path '{}' does not exist", resolved.display()),
                )
            } else if err.raw_os_error() == Some(errno::ENOTDIR) {
                // A file used as a directory on the way: nothing there, as far as the caller is
                // concerned.
                FileError::new(
                    StatusCode::NOT_FOUND,
                    format!("path '{}' does not exist", resolved.display()),
                )
            } else {
                FileError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!(
                        "error checking if path exists '{}': {err}",
                        resolved.display()
                    ),
                )
            }
        })?;
        if meta.is_dir() {
            return Err(FileError::new(
                StatusCode::BAD_REQUEST,
                format!("path '{}' is a directory", resolved.display()),
            ));
        }
        let file = File::open(&resolved).map_err(|err| {
            FileError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("error opening file '{}': {err}", resolved.display()),
            )
        })?;
        Ok(Opened {
            file,
            resolved,
            meta,
        })
    })
    .await
    .map_err(|err| FileError::new(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()))??;

    let accept = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok());
    let mut encoding = download::negotiate(accept).map_err(|err| {
        FileError::new(
            StatusCode::NOT_ACCEPTABLE,
            format!("error parsing Accept-Encoding: {err}"),
        )
    })?;
    // Ranges and conditional requests are about the stored bytes: answer them unencoded (as
    // envd does), which the client must then accept.
    let ranged_or_conditional = [
        header::RANGE,
        header::IF_MODIFIED_SINCE,
        header::IF_NONE_MATCH,
        header::IF_RANGE,
        header::IF_UNMODIFIED_SINCE,
    ]
    .iter()
    .any(|h| headers.contains_key(h));
    if ranged_or_conditional {
        if !download::identity_acceptable(accept) {
            return Err(FileError::new(
                StatusCode::NOT_ACCEPTABLE,
                "identity encoding not acceptable for Range or conditional request",
            ));
        }
        encoding = Encoding::Identity;
    }

    let Opened {
        file,
        resolved,
        meta,
    } = opened;
    let modified = meta.modified().ok();
    let name = resolved
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut response_headers = HeaderMap::new();
    response_headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    if let Ok(v) = HeaderValue::from_str(&download::content_disposition(&name)) {
        response_headers.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Some(m) = modified.filter(|m| download::http_seconds(*m) != std::time::UNIX_EPOCH) {
        if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(m)) {
            response_headers.insert(header::LAST_MODIFIED, v);
        }
    }

    // Bodies are streamed after the status line has gone out, so a file that fails on its
    // first read (`/proc/self/mem`, a file on a failing disk) would only show as a cut-off
    // download: find out now, and answer with an error instead.
    if method != Method::HEAD {
        if let Err(e) = download::first_read(&file) {
            return Err(FileError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("error reading file '{}': {e}", resolved.display()),
            ));
        }
    }

    if encoding == Encoding::Gzip {
        let content_type =
            download::content_type_by_extension(&resolved).unwrap_or("application/octet-stream");
        response_headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        response_headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        tracing::debug!(path = %resolved.display(), "serving file gzipped");
        let body = if method == Method::HEAD {
            Body::empty()
        } else {
            download::gzip_body(file)
        };
        return Ok((StatusCode::OK, response_headers, body).into_response());
    }

    if download::size_is_unreliable(&file, &meta) {
        // No length to promise and no ranges to cut: send whatever reading yields.
        let content_type =
            download::content_type_by_extension(&resolved).unwrap_or("application/octet-stream");
        response_headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        let body = if method == Method::HEAD {
            Body::empty()
        } else {
            download::segments_body(file, vec![download::Segment::ToEnd])
        };
        return Ok((StatusCode::OK, response_headers, body).into_response());
    }
    let size = meta.len();
    if let Some(m) = modified {
        match download::evaluate_preconditions(headers, m) {
            Precondition::Serve => {}
            Precondition::NotModified => {
                return Ok((StatusCode::NOT_MODIFIED, response_headers).into_response());
            }
            Precondition::Failed => {
                return Err(FileError::new(
                    StatusCode::PRECONDITION_FAILED,
                    "the file was modified after the If-Unmodified-Since date",
                ));
            }
        }
    }
    let content_type = match download::content_type_by_extension(&resolved) {
        Some(ct) => ct,
        None => {
            let mut head = vec![0u8; 512.min(usize::try_from(size).unwrap_or(512))];
            let n = file.read_at(&mut head, 0).unwrap_or(0);
            download::sniff_content_type(head.get(..n).unwrap_or_default())
        }
    };
    response_headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));

    let range_header = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .filter(|_| match modified {
            Some(m) => download::if_range_matches(headers, m),
            None => true,
        });
    let mut ranges = match range_header {
        None => Vec::new(),
        Some(spec) => match download::parse_range(spec, size) {
            Ok(r) => r,
            Err(err) => {
                let mut resp = FileError::new(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    format!("{err} for a file of {size} bytes"),
                )
                .into_response();
                if err == RangeError::NoOverlap {
                    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                        resp.headers_mut().insert(header::CONTENT_RANGE, v);
                    }
                }
                return Ok(resp);
            }
        },
    };
    // Ranges adding up to more than the file are an attack or a confused client: send it whole.
    if ranges.iter().map(|r| r.len).sum::<u64>() > size {
        ranges.clear();
    }

    let (status, segments) = match ranges.as_slice() {
        [] => {
            response_headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            (
                StatusCode::OK,
                vec![download::Segment::File {
                    start: 0,
                    len: size,
                }],
            )
        }
        [r] => {
            response_headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            if let Ok(v) =
                HeaderValue::from_str(&format!("bytes {}-{}/{size}", r.start, r.start + r.len - 1))
            {
                response_headers.insert(header::CONTENT_RANGE, v);
            }
            (
                StatusCode::PARTIAL_CONTENT,
                vec![download::Segment::File {
                    start: r.start,
                    len: r.len,
                }],
            )
        }
        many => {
            let boundary = multipart_boundary();
            if let Ok(v) =
                HeaderValue::from_str(&format!("multipart/byteranges; boundary={boundary}"))
            {
                response_headers.insert(header::CONTENT_TYPE, v);
            }
            (
                StatusCode::PARTIAL_CONTENT,
                download::byteranges(many, size, content_type, &boundary),
            )
        }
    };
    if let Some(length) = download::content_length(&segments) {
        response_headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    tracing::debug!(path = %resolved.display(), status = status.as_u16(), "serving file");
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        download::segments_body(file, segments)
    };
    Ok((status, response_headers, body).into_response())
}

/// A boundary for `multipart/byteranges` that no file content can be confused with in practice.
fn multipart_boundary() -> String {
    let mut bytes = [0u8; 16];
    // getrandom(2) cannot fail for 16 bytes once the pool is initialised; a clock fallback keeps
    // this total.
    if hutch_sys::fs::random_bytes(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        bytes = nanos.to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `POST /files`: writes the uploaded file(s) and answers `[{"name","path","type","metadata"?}]`.
pub async fn upload(
    State(service): State<FilesService>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Response {
    let plan = match plan_upload(&service, &headers, &uri) {
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

/// Everything about an upload that can be decided from its headers. The error side says whether
/// the client was authorised (to decide whether its body is worth draining).
fn plan_upload(
    service: &FilesService,
    headers: &HeaderMap,
    uri: &Uri,
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
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let kind = if essence == "application/octet-stream" {
        BodyKind::Raw
    } else if essence.starts_with("multipart/") {
        let boundary = multipart::boundary_from_content_type(content_type).map_err(|err| {
            fail(FileError::new(
                StatusCode::BAD_REQUEST,
                format!("error parsing multipart form: {err}"),
            ))
        })?;
        BodyKind::Multipart(boundary)
    } else {
        return Err(fail(FileError::new(
            StatusCode::BAD_REQUEST,
            format!("unsupported content type: {content_type}, expected multipart/form-data or application/octet-stream"),
        )));
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

/// `GET /envs`: the sandbox's environment variables as a JSON object.
pub async fn envs(State(service): State<FilesService>) -> Response {
    let body = serde_json::to_vec(&service.inner.env_vars).unwrap_or_else(|_| b"{}".to_vec());
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}
