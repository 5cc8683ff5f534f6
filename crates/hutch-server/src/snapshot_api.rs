//! E2B's snapshot and fork endpoints: `POST /sandboxes/{id}/snapshots`, `GET /snapshots`
//! and `POST /sandboxes/{id}/fork`. A snapshot is deleted as the template it is
//! (`DELETE /templates/{id}`). The work is in [`crate::builds::snapshot`].

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;

use crate::api::{check_id, timeout_arg, ApiError, ApiJson, AppState, CallerExt};
use crate::builds::snapshot::{fork_error, snapshot_id};
use crate::service::{Invalid, ServiceError};
use crate::templates::TemplateRecord;

type ApiResult<T> = Result<T, ApiError>;

/// The most snapshots one page lists (and the default).
const PAGE: usize = 100;

/// `POST /sandboxes/{id}/snapshots`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SnapshotBody {
    /// The snapshot template's name.
    name: Option<String>,
    /// True: a memory snapshot, which hutch cannot take.
    memory: Option<bool>,
}

fn snapshot_json(t: &TemplateRecord) -> serde_json::Value {
    serde_json::json!({
        "snapshotID": snapshot_id(t),
        "names": [t.full_name()],
    })
}

/// Takes a snapshot of a sandbox's filesystem.
pub async fn create(
    State(st): State<AppState>,
    Extension(caller): Extension<CallerExt>,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<SnapshotBody>,
) -> ApiResult<Response> {
    check_id(&st, &caller, &id)?;
    if b.memory == Some(true) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "hutch snapshots keep the filesystem only (mode=\"filesystem\"): sandboxes started \
             from one boot from its disk; memory snapshots (mode=\"full\") are not supported",
        ));
    }
    let t = st.builds.snapshot(&id, b.name.as_deref(), caller.0).await?;
    Ok((StatusCode::CREATED, Json(snapshot_json(&t))).into_response())
}

/// `GET /snapshots` query.
#[derive(Debug, Default, Deserialize)]
pub struct ListParams {
    #[serde(rename = "sandboxID")]
    sandbox_id: Option<String>,
    name: Option<String>,
    limit: Option<String>,
    #[serde(rename = "nextToken")]
    next_token: Option<String>,
}

/// Lists the caller's snapshots, oldest first, a page at a time (`x-next-token`).
pub async fn list(
    State(st): State<AppState>,
    Extension(caller): Extension<CallerExt>,
    q: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(p) = q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let limit = match p.limit.as_deref() {
        None => PAGE,
        Some(l) => l
            .parse()
            .ok()
            .filter(|n| (1..=PAGE).contains(n))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("invalid limit {l:?}: expected 1 to {PAGE}"),
                )
            })?,
    };
    let from = match p.next_token.as_deref().filter(|t| !t.is_empty()) {
        None => 0,
        Some(t) => t
            .parse::<usize>()
            .map_err(|_| ServiceError::from(Invalid::NextToken(t.to_string())))?,
    };
    let all = st.builds.snapshots(
        &caller.scope(),
        p.sandbox_id.as_deref().filter(|s| !s.is_empty()),
        p.name.as_deref().filter(|s| !s.is_empty()),
    );
    let page: Vec<serde_json::Value> = all
        .iter()
        .skip(from)
        .take(limit)
        .map(snapshot_json)
        .collect();
    let mut headers = HeaderMap::new();
    if from + page.len() < all.len() {
        if let Ok(v) = HeaderValue::from_str(&(from + page.len()).to_string()) {
            headers.insert("x-next-token", v);
        }
    }
    Ok((StatusCode::OK, headers, Json(page)).into_response())
}

/// `POST /sandboxes/{id}/fork`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForkBody {
    /// Lifetime of the forks, in seconds.
    timeout: Option<i64>,
    /// How many.
    count: Option<i64>,
}

/// Starts `count` sandboxes from a copy of a sandbox's filesystem; one entry per fork.
pub async fn fork(
    State(st): State<AppState>,
    Extension(caller): Extension<CallerExt>,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<ForkBody>,
) -> ApiResult<Response> {
    check_id(&st, &caller, &id)?;
    let timeout = timeout_arg(b.timeout)?;
    let results = st.builds.fork(&id, b.count, timeout, caller.0).await?;
    let body: Vec<serde_json::Value> = results
        .iter()
        .map(|r| match r {
            Ok(rec) => serde_json::json!({ "sandbox": rec.to_sandbox_json(st.domain.as_deref()) }),
            Err(e) => {
                let (code, message) = fork_error(e);
                serde_json::json!({ "error": { "code": code, "message": message } })
            }
        })
        .collect();
    Ok((StatusCode::CREATED, Json(body)).into_response())
}
