//! The template endpoints of E2B's API: build requests, file uploads, build start and
//! status, aliases, listing and deletion. The work is in [`crate::builds`].

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use crate::api::CallerExt;
use crate::api::{ApiError, ApiJson, AppState};
use crate::builds::BuildSpec;
use crate::service::{Missing, ServiceError};
use crate::templates::{TemplateRecord, Templates};
use crate::tenancy::Scope;

type ApiResult<T> = Result<T, ApiError>;

/// `POST /v3/templates`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildRequest {
    name: Option<String>,
    alias: Option<String>,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(rename = "cpuCount")]
    cpu_count: Option<u32>,
    #[serde(rename = "memoryMB")]
    memory_mb: Option<u64>,
}

/// Asks for a build of a template; answers its id and the build's.
pub async fn request_build(
    State(st): State<AppState>,
    axum::Extension(caller): axum::Extension<crate::api::CallerExt>,
    ApiJson(b): ApiJson<BuildRequest>,
) -> ApiResult<Response> {
    let name = b
        .name
        .or(b.alias)
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "the template needs a name"))?;
    let build = st
        .builds
        .request(&name, b.cpu_count, b.memory_mb, caller.0)?;
    let mut tags = b.tags.unwrap_or_default();
    if tags.is_empty() {
        tags.push("default".into());
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({
            "templateID": build.template_id,
            "buildID": build.build_id,
            "public": false,
            "names": [build.name],
            "aliases": [build.name],
            "tags": tags,
        })),
    )
        .into_response())
}

/// Whether the server has a COPY step's files, and where to upload them if not.
pub async fn file_link(
    State(st): State<AppState>,
    axum::Extension(caller): axum::Extension<CallerExt>,
    headers: HeaderMap,
    Path((id, hash)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (present, token) = st.builds.file_status(&id, &hash, &caller.scope())?;
    let mut body = serde_json::json!({ "present": present });
    if !present {
        let host = headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("127.0.0.1:49982");
        let scheme = headers
            .get("x-forwarded-proto")
            .and_then(|h| h.to_str().ok())
            .filter(|p| *p == "https")
            .unwrap_or("http");
        body["url"] =
            format!("{scheme}://{host}/templates/{id}/files/{hash}/upload?token={token}").into();
    }
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// The upload's query.
#[derive(Debug, Deserialize)]
pub struct UploadQuery {
    token: Option<String>,
}

/// Receives a COPY step's archive.
pub async fn upload(
    State(st): State<AppState>,
    Path((id, hash)): Path<(String, String)>,
    Query(q): Query<UploadQuery>,
    body: Body,
) -> ApiResult<StatusCode> {
    st.builds
        .upload(&id, &hash, q.token.as_deref().unwrap_or(""), body)
        .await?;
    Ok(StatusCode::OK)
}

/// Starts a requested build.
pub async fn start_build(
    State(st): State<AppState>,
    axum::Extension(caller): axum::Extension<CallerExt>,
    Path((id, build)): Path<(String, String)>,
    ApiJson(spec): ApiJson<BuildSpec>,
) -> ApiResult<StatusCode> {
    st.builds.start(&id, &build, spec, &caller.scope())?;
    Ok(StatusCode::ACCEPTED)
}

/// The status query.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusQuery {
    logs_offset: Option<usize>,
}

/// A build's status and logs.
pub async fn build_status(
    State(st): State<AppState>,
    axum::Extension(caller): axum::Extension<CallerExt>,
    Path((id, build)): Path<(String, String)>,
    Query(q): Query<StatusQuery>,
) -> ApiResult<Response> {
    let offset = q.logs_offset.unwrap_or(0);
    Ok(Json(st.builds.status(&id, &build, offset, &caller.scope())?).into_response())
}

/// Whether a template has this name (E2B's alias check).
pub async fn alias(
    State(st): State<AppState>,
    axum::Extension(caller): axum::Extension<CallerExt>,
    Path(alias): Path<String>,
) -> ApiResult<Response> {
    let id = if Templates::is_default(&alias) {
        Some(alias.clone())
    } else {
        // The alias check tells a client whether its own team may use a name.
        st.svc
            .templates()
            .custom(&alias, &Scope::team(&caller.scope().team))
            .filter(|t| t.name == alias)
            .map(|t| t.id)
    };
    match id {
        Some(id) => {
            Ok(Json(serde_json::json!({ "templateID": id, "public": true })).into_response())
        }
        None => Err(ServiceError::from(Missing::Template(alias)).into()),
    }
}

fn template_json(st: &AppState, t: &TemplateRecord) -> serde_json::Value {
    let limits = st.svc.limits();
    serde_json::json!({
        "templateID": t.id,
        "buildID": t.build_id,
        "cpuCount": t.cpu_count.unwrap_or(limits.cpus),
        "memoryMB": t.memory_mb.unwrap_or(limits.memory_mb),
        "diskSizeMB": limits.disk_mb,
        "public": false,
        "aliases": [t.name],
        "names": [t.name],
        "createdAt": t.created_at,
        "updatedAt": t.updated_at,
        "createdBy": null,
        "lastSpawnedAt": null,
        "spawnCount": 0,
        "buildCount": t.build_count,
        "envdVersion": env!("CARGO_PKG_VERSION"),
        "buildStatus": "ready",
        "parent": t.parent,
    })
}

/// The templates built on this server.
pub async fn list(
    State(st): State<AppState>,
    axum::Extension(caller): axum::Extension<CallerExt>,
) -> Json<Vec<serde_json::Value>> {
    Json(
        st.svc
            .templates()
            .customs(&caller.scope())
            .iter()
            .map(|t| template_json(&st, t))
            .collect(),
    )
}

/// One template built on this server.
pub async fn get_one(
    State(st): State<AppState>,
    axum::Extension(caller): axum::Extension<CallerExt>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let t = st
        .svc
        .templates()
        .custom(&id, &caller.scope())
        .ok_or_else(|| ServiceError::from(Missing::Template(id.clone())))?;
    let mut v = template_json(&st, &t);
    v["builds"] = serde_json::json!([{
        "buildID": t.build_id,
        "status": "ready",
        "createdAt": t.updated_at,
        "updatedAt": t.updated_at,
        "finishedAt": t.updated_at,
        "cpuCount": v["cpuCount"],
        "memoryMB": v["memoryMB"],
    }]);
    Ok(Json(v).into_response())
}

/// Deletes a template built on this server.
pub async fn delete(
    State(st): State<AppState>,
    axum::Extension(caller): axum::Extension<CallerExt>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let builds = st.builds.clone();
    let scope = caller.scope();
    tokio::task::spawn_blocking(move || builds.delete(&id, &scope))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(StatusCode::NO_CONTENT)
}
