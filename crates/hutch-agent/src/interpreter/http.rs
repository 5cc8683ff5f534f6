//! The interpreter's HTTP surface (port 49999), as E2B's code-interpreter server answers it:
//! JSON in, NDJSON or JSON out, plain-text errors.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::identity::Identity;

use super::{execution, language, InterpreterError, InterpreterService};

/// After this long without a line, the stream carries `{"type":"keepalive"}`: proxies keep
/// the connection open, and a write to a client that vanished fails, so the kernel is
/// interrupted.
const KEEPALIVE_AFTER: Duration = Duration::from_secs(5);

/// The NDJSON media type of `/execute` responses.
const NDJSON: &str = "application/x-ndjson";

#[derive(Clone)]
struct AppState {
    service: InterpreterService,
    identity: Identity,
}

/// Builds the interpreter's router. The sandbox's access token, when it has one, is required
/// on `/execute` (the only route the SDKs send it on).
pub fn router(service: InterpreterService, identity: Identity) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/execute", post(execute))
        .route("/contexts", post(create_context).get(list_contexts))
        .route("/contexts/{id}", axum::routing::delete(remove_context))
        .route("/contexts/{id}/restart", post(restart_context))
        .with_state(AppState { service, identity })
}

/// `GET /health`.
async fn health() -> Json<&'static str> {
    Json("OK")
}

/// The body of `POST /execute`.
#[derive(Debug, Deserialize)]
struct ExecuteBody {
    code: String,
    #[serde(default)]
    context_id: Option<String>,
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    env_vars: Option<BTreeMap<String, String>>,
}

/// The body of `POST /contexts`.
#[derive(Debug, Default, Deserialize)]
struct CreateContextBody {
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    cwd: Option<String>,
}

/// `POST /execute`: runs code, answering with a stream of NDJSON lines.
async fn execute(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(expected) = state.identity.token() {
        let presented = headers
            .get(crate::auth::ACCESS_TOKEN_HEADER)
            .map(|v| v.as_bytes());
        if !presented
            .is_some_and(|p| hutch_contracts::auth::constant_time_eq(p, expected.as_bytes()))
        {
            return text(StatusCode::UNAUTHORIZED, "Unauthorized".into());
        }
    }
    let request: ExecuteBody = match parse(&body) {
        Ok(request) => request,
        Err(response) => return *response,
    };
    let language = request.language.as_deref().filter(|l| !l.is_empty());
    let context_id = request.context_id.as_deref().filter(|c| !c.is_empty());
    let context = match (context_id, language) {
        (Some(_), Some(_)) => {
            return text(
                StatusCode::BAD_REQUEST,
                "Only one of context_id or language can be provided".into(),
            )
        }
        (Some(id), None) => state.service.get(id),
        (None, language) => {
            state
                .service
                .default_context(&language::normalize(language))
                .await
        }
    };
    let context = match context {
        Ok(context) => context,
        Err(err) => return error(err),
    };
    let lines = execution::start(
        state.service.clone(),
        context,
        request.code,
        request.env_vars.unwrap_or_default(),
    );
    Response::builder()
        .header(header::CONTENT_TYPE, NDJSON)
        .body(Body::from_stream(with_keepalives(lines)))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// `lines`, with a keepalive line whenever none came for [`KEEPALIVE_AFTER`].
fn with_keepalives(
    lines: mpsc::Receiver<Bytes>,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> {
    futures_util::stream::unfold(lines, |mut lines| async move {
        match tokio::time::timeout(KEEPALIVE_AFTER, lines.recv()).await {
            Ok(Some(line)) => Some((Ok(line), lines)),
            Ok(None) => None,
            Err(_) => Some((Ok(Bytes::from_static(b"{\"type\":\"keepalive\"}\n")), lines)),
        }
    })
}

/// `POST /contexts`: creates a context and starts its kernel.
async fn create_context(State(state): State<AppState>, body: Bytes) -> Response {
    let request: CreateContextBody = if body.iter().all(u8::is_ascii_whitespace) {
        CreateContextBody::default()
    } else {
        match parse(&body) {
            Ok(request) => request,
            Err(response) => return *response,
        }
    };
    let service = state.service.clone();
    let created = detached(async move {
        service
            .create(request.language.as_deref(), request.cwd.as_deref())
            .await
    })
    .await;
    match created {
        Ok(context) => Json(context.to_json()).into_response(),
        Err(err) => error(err),
    }
}

/// `GET /contexts`: every context, oldest first.
async fn list_contexts(State(state): State<AppState>) -> Response {
    let list: Vec<serde_json::Value> = state
        .service
        .list()
        .await
        .iter()
        .map(|c| c.to_json())
        .collect();
    Json(list).into_response()
}

/// `POST /contexts/{id}/restart`.
async fn restart_context(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let service = state.service.clone();
    match detached(async move { service.restart(&id).await }).await {
        Ok(()) => Json(serde_json::Value::Null).into_response(),
        Err(err) => error(err),
    }
}

/// `DELETE /contexts/{id}`.
async fn remove_context(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let service = state.service.clone();
    match detached(async move { service.remove(&id).await }).await {
        Ok(()) => Json(serde_json::Value::Null).into_response(),
        Err(err) => error(err),
    }
}

/// Runs `work` on a task of its own, so a client that hangs up mid-way cannot cancel it
/// halfway through starting or stopping a kernel (which would leave the process orphaned).
async fn detached<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T, InterpreterError>> + Send + 'static,
) -> Result<T, InterpreterError> {
    match tokio::spawn(work).await {
        Ok(result) => result,
        Err(err) => Err(InterpreterError::Task(err.to_string())),
    }
}

/// Parses a JSON body; the error is the 422 E2B's server answers for a body it cannot read.
fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Box<Response>> {
    serde_json::from_slice(body).map_err(|err| {
        Box::new(text(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("invalid request body: {err}"),
        ))
    })
}

fn error(err: InterpreterError) -> Response {
    let status = match &err {
        InterpreterError::ContextNotFound(_) | InterpreterError::NoKernel { .. } => {
            StatusCode::NOT_FOUND
        }
        InterpreterError::User(_) | InterpreterError::Start(_) | InterpreterError::Task(_) => {
            tracing::warn!(error = %err, "interpreter request failed");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    text(status, err.to_string())
}

fn text(status: StatusCode, message: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message,
    )
        .into_response()
}
