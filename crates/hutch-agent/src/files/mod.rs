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
//! `get` and `post` are the two `/files` handlers; [`multipart`] is the body parser (pure and
//! fuzzed), [`download`] and [`upload`] the two directions' mechanics, [`signature`] the URL
//! signing, [`paths`] path resolution, [`xattr`] file metadata.

pub mod download;
mod get;
mod handoff;
pub use hutch_contracts::multipart;
pub mod paths;
mod post;
pub mod signature;
pub mod upload;
pub mod xattr;

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::auth::{self, ACCESS_TOKEN_HEADER};
use crate::identity::Identity;
use crate::users::{default_user, User, UserDb, UserError};
pub use get::download;
pub use post::upload;
use signature::{Operation, SignatureError};

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
    /// Makes the calling (blocking) thread act on the filesystem as `user` until the guard
    /// drops ([`User::acting`]); a 500 if it cannot.
    pub fn acting(user: &User) -> Result<hutch_sys::creds::FsIdentity, FileError> {
        user.acting().map_err(|err| {
            FileError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot act as user '{}': {err}", user.name),
            )
        })
    }

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
    identity: Identity,
}

impl FilesService {
    /// A service that resolves users in `users`, reports the sandbox's variables on `/envs` and
    /// checks signatures against its access token (no token: no checks, as in envd).
    pub fn new(users: UserDb, identity: Identity) -> Self {
        Self {
            inner: Arc::new(Inner { users, identity }),
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
        let token = self.inner.identity.token();
        let signed = match token.as_deref() {
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

/// `GET /envs`: the sandbox's environment variables as a JSON object.
pub async fn envs(State(service): State<FilesService>) -> Response {
    let body =
        serde_json::to_vec(&*service.inner.identity.env()).unwrap_or_else(|_| b"{}".to_vec());
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
