//! E2B's volume endpoints: `/volumes` (create, list, info, destroy; API key) and the
//! volume content API `/volumecontent/{id}/{dir,path,file}` (the volume's own token as
//! `Authorization: Bearer`, no sandbox needed). The work is in [`crate::volumes`].

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures_util::StreamExt;
use serde::Deserialize;

use crate::api::{ApiError, ApiJson, AppState, CallerExt};
use crate::tenancy::DEFAULT_TEAM;
use crate::volumes::{VolumeError, VolumeRecord, Volumes};

type ApiResult<T> = Result<T, ApiError>;

impl From<VolumeError> for ApiError {
    fn from(e: VolumeError) -> Self {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        ApiError::new(status, e.to_string())
    }
}

/// Runs blocking volume work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, VolumeError> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(ApiError::from)
}

fn and_token(rec: &VolumeRecord, domain: Option<&str>) -> serde_json::Value {
    let mut v = serde_json::json!({
        "volumeID": rec.id,
        "name": rec.name,
        "token": rec.token,
    });
    if let Some(d) = domain {
        v["domain"] = serde_json::json!(d);
    }
    v
}

/// `POST /volumes` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewVolume {
    name: String,
}

/// Creates a volume of the caller's team.
pub async fn create(
    State(st): State<AppState>,
    Extension(caller): Extension<CallerExt>,
    ApiJson(b): ApiJson<NewVolume>,
) -> ApiResult<Response> {
    let team = caller
        .0
        .as_ref()
        .map_or(DEFAULT_TEAM, |c| c.team.name.as_str())
        .to_string();
    let v = Arc::clone(&st.volumes);
    let rec = blocking(move || v.create(&b.name, &team)).await?;
    Ok((
        StatusCode::CREATED,
        Json(and_token(&rec, st.domain.as_deref())),
    )
        .into_response())
}

/// Lists the caller's volumes.
pub async fn list(
    State(st): State<AppState>,
    Extension(caller): Extension<CallerExt>,
) -> ApiResult<Response> {
    let v = Arc::clone(&st.volumes);
    let scope = caller.scope();
    let recs = blocking(move || v.list(&scope)).await?;
    let body: Vec<serde_json::Value> = recs
        .iter()
        .map(|r| serde_json::json!({ "volumeID": r.id, "name": r.name }))
        .collect();
    Ok(Json(body).into_response())
}

/// One volume, with its content token.
pub async fn get_one(
    State(st): State<AppState>,
    Extension(caller): Extension<CallerExt>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let v = Arc::clone(&st.volumes);
    let scope = caller.scope();
    let rec = blocking(move || v.get(&id, &scope)).await?;
    Ok(Json(and_token(&rec, st.domain.as_deref())).into_response())
}

/// Destroys a volume and its files.
pub async fn destroy(
    State(st): State<AppState>,
    Extension(caller): Extension<CallerExt>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let v = Arc::clone(&st.volumes);
    let scope = caller.scope();
    let rec = {
        let (v, id, scope) = (Arc::clone(&v), id.clone(), scope.clone());
        blocking(move || v.get(&id, &scope)).await?
    };
    let users = st.svc.volume_users(&rec.id);
    if !users.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "volume '{}' is mounted in sandboxes {}; kill them first",
                rec.name,
                users.join(", ")
            ),
        ));
    }
    blocking(move || v.destroy(&id, &scope)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The volume a content request names, if its bearer token is the volume's.
async fn authorized(st: &AppState, id: String, headers: &HeaderMap) -> ApiResult<VolumeRecord> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::to_string);
    let v = Arc::clone(&st.volumes);
    blocking(move || v.authorize(&id, token.as_deref())).await
}

/// The query of the content calls.
#[derive(Debug, Default, Deserialize)]
pub struct ContentQuery {
    path: Option<String>,
    depth: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
    mode: Option<u32>,
    force: Option<bool>,
}

impl ContentQuery {
    fn path(&self) -> ApiResult<String> {
        self.path
            .clone()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "path is required"))
    }

    fn owner(&self) -> (Option<u32>, Option<u32>, Option<u32>) {
        (self.uid, self.gid, self.mode)
    }
}

type ContentQueryResult = Result<Query<ContentQuery>, axum::extract::rejection::QueryRejection>;

fn query(q: ContentQueryResult) -> ApiResult<ContentQuery> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))
}

/// `GET /volumecontent/{id}/dir`.
pub async fn list_dir(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    q: ContentQueryResult,
) -> ApiResult<Response> {
    let q = query(q)?;
    let rec = authorized(&st, id, &headers).await?;
    let (path, depth) = (q.path()?, q.depth.unwrap_or(1));
    if !(1..=32).contains(&depth) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "depth must be 1 to 32",
        ));
    }
    let v = Arc::clone(&st.volumes);
    let entries = blocking(move || v.list_dir(&rec, &path, depth)).await?;
    Ok(Json(entries).into_response())
}

/// `POST /volumecontent/{id}/dir`.
pub async fn make_dir(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    q: ContentQueryResult,
) -> ApiResult<Response> {
    let q = query(q)?;
    let rec = authorized(&st, id, &headers).await?;
    let (path, owner, parents) = (q.path()?, q.owner(), q.force.unwrap_or(false));
    let v = Arc::clone(&st.volumes);
    let e = blocking(move || v.make_dir(&rec, &path, owner, parents)).await?;
    Ok((StatusCode::CREATED, Json(e)).into_response())
}

/// `GET /volumecontent/{id}/path`.
pub async fn stat(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    q: ContentQueryResult,
) -> ApiResult<Response> {
    let q = query(q)?;
    let rec = authorized(&st, id, &headers).await?;
    let path = q.path()?;
    let v = Arc::clone(&st.volumes);
    Ok(Json(blocking(move || v.stat(&rec, &path)).await?).into_response())
}

/// `PATCH /volumecontent/{id}/path` body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataBody {
    uid: Option<u32>,
    gid: Option<u32>,
    mode: Option<u32>,
}

/// `PATCH /volumecontent/{id}/path`.
pub async fn set_metadata(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    q: ContentQueryResult,
    ApiJson(b): ApiJson<MetadataBody>,
) -> ApiResult<Response> {
    let q = query(q)?;
    let rec = authorized(&st, id, &headers).await?;
    let path = q.path()?;
    let v = Arc::clone(&st.volumes);
    let e = blocking(move || v.set_metadata(&rec, &path, (b.uid, b.gid, b.mode))).await?;
    Ok(Json(e).into_response())
}

/// `DELETE /volumecontent/{id}/path`.
pub async fn remove(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    q: ContentQueryResult,
) -> ApiResult<StatusCode> {
    let q = query(q)?;
    let rec = authorized(&st, id, &headers).await?;
    let path = q.path()?;
    let v = Arc::clone(&st.volumes);
    blocking(move || v.remove(&rec, &path)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /volumecontent/{id}/file`: the file's bytes, streamed.
pub async fn read_file(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    q: ContentQueryResult,
) -> ApiResult<Response> {
    let q = query(q)?;
    let rec = authorized(&st, id, &headers).await?;
    let path = q.path()?;
    let v = Arc::clone(&st.volumes);
    let file = blocking(move || v.open_file(&rec, &path)).await?;
    let len = file.metadata().map(|m| m.len()).ok();
    let stream = futures_util::stream::unfold(tokio::fs::File::from_std(file), |mut f| async {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 256 << 10];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(axum::body::Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    });
    let mut res = Response::new(Body::from_stream(stream));
    res.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/octet-stream"),
    );
    if let Some(n) = len {
        res.headers_mut()
            .insert(axum::http::header::CONTENT_LENGTH, n.into());
    }
    Ok(res)
}

/// Writes `body` into `file` (the volume's `path`).
async fn write_body(
    file: std::fs::File,
    body: Body,
    rec: &VolumeRecord,
    path: &str,
) -> ApiResult<()> {
    use tokio::io::AsyncWriteExt;
    let mut file = tokio::fs::File::from_std(file);
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, format!("reading the body: {e}"))
        })?;
        file.write_all(&chunk)
            .await
            .map_err(|e| ApiError::from(Volumes::write_error(rec, path, &e)))?;
    }
    file.flush()
        .await
        .map_err(|e| ApiError::from(Volumes::write_error(rec, path, &e)))
}

/// `PUT /volumecontent/{id}/file`: the body becomes the file (created, or replaced unless
/// `force=false`).
pub async fn write_file(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    q: ContentQueryResult,
    body: Body,
) -> ApiResult<Response> {
    let q = query(q)?;
    let rec = authorized(&st, id, &headers).await?;
    let (path, owner, replace) = (q.path()?, q.owner(), q.force != Some(false));
    let v = Arc::clone(&st.volumes);
    let r = rec.clone();
    let (path, file) = blocking(move || v.create_file(&r, &path, owner, replace)).await?;
    if let Err(e) = write_body(file, body, &rec, &path).await {
        // The rest of the body is not read: the connection cannot carry another request.
        let mut res = e.into_response();
        res.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
        return Ok(res);
    }
    let v = Arc::clone(&st.volumes);
    let e = blocking(move || v.stat(&rec, &path)).await?;
    Ok((StatusCode::CREATED, Json(e)).into_response())
}
