//! E2B's volume endpoints: `/volumes` (create, list, info, destroy; API key) and the
//! volume content API `/volumecontent/{id}/{dir,path,file}` (the volume's own token as
//! `Authorization: Bearer`, no sandbox needed). The work is in [`crate::volumes`].

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
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
    fn owner(&self) -> (Option<u32>, Option<u32>, Option<u32>) {
        (self.uid, self.gid, self.mode)
    }
}

/// A content request whose bearer token is its volume's: the volume, the path the query
/// names, and the rest of the query.
pub struct Content {
    volumes: Arc<Volumes>,
    rec: VolumeRecord,
    path: String,
    q: ContentQuery,
}

impl FromRequestParts<AppState> for Content {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> ApiResult<Self> {
        let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, m);
        let Path(id) = Path::<String>::from_request_parts(parts, st)
            .await
            .map_err(|e| bad(e.body_text()))?;
        let Query(q) = Query::<ContentQuery>::from_request_parts(parts, st)
            .await
            .map_err(|e| bad(e.body_text()))?;
        let token = parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::to_string);
        let v = Arc::clone(&st.volumes);
        let rec = blocking(move || v.authorize(&id, token.as_deref())).await?;
        let path = q
            .path
            .clone()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| bad("path is required".into()))?;
        Ok(Content {
            volumes: Arc::clone(&st.volumes),
            rec,
            path,
            q,
        })
    }
}

impl Content {
    /// Runs `f` on the volume and the path, off the async threads.
    async fn run<T: Send + 'static>(
        self,
        f: impl FnOnce(&Volumes, &VolumeRecord, &str) -> Result<T, VolumeError> + Send + 'static,
    ) -> ApiResult<T> {
        blocking(move || f(&self.volumes, &self.rec, &self.path)).await
    }
}

/// `GET /volumecontent/{id}/dir`.
pub async fn list_dir(c: Content) -> ApiResult<Response> {
    let depth = c.q.depth.unwrap_or(1);
    if !(1..=32).contains(&depth) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "depth must be 1 to 32",
        ));
    }
    let entries = c
        .run(move |v, rec, path| v.list_dir(rec, path, depth))
        .await?;
    Ok(Json(entries).into_response())
}

/// `POST /volumecontent/{id}/dir`.
pub async fn make_dir(c: Content) -> ApiResult<Response> {
    let (owner, parents) = (c.q.owner(), c.q.force.unwrap_or(false));
    let e = c
        .run(move |v, rec, path| v.make_dir(rec, path, owner, parents))
        .await?;
    Ok((StatusCode::CREATED, Json(e)).into_response())
}

/// `GET /volumecontent/{id}/path`.
pub async fn stat(c: Content) -> ApiResult<Response> {
    Ok(Json(c.run(|v, rec, path| v.stat(rec, path)).await?).into_response())
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
pub async fn set_metadata(c: Content, ApiJson(b): ApiJson<MetadataBody>) -> ApiResult<Response> {
    let e = c
        .run(move |v, rec, path| v.set_metadata(rec, path, (b.uid, b.gid, b.mode)))
        .await?;
    Ok(Json(e).into_response())
}

/// `DELETE /volumecontent/{id}/path`.
pub async fn remove(c: Content) -> ApiResult<StatusCode> {
    c.run(|v, rec, path| v.remove(rec, path)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /volumecontent/{id}/file`: the file's bytes, streamed.
pub async fn read_file(c: Content) -> ApiResult<Response> {
    let file = c.run(|v, rec, path| v.open_file(rec, path)).await?;
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
pub async fn write_file(c: Content, body: Body) -> ApiResult<Response> {
    let (owner, replace) = (c.q.owner(), c.q.force != Some(false));
    let (rec, volumes) = (c.rec.clone(), Arc::clone(&c.volumes));
    let (path, file) = c
        .run(move |v, rec, path| v.create_file(rec, path, owner, replace))
        .await?;
    if let Err(e) = write_body(file, body, &rec, &path).await {
        // The rest of the body is not read: the connection cannot carry another request.
        let mut res = e.into_response();
        res.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
        return Ok(res);
    }
    let e = blocking(move || volumes.stat(&rec, &path)).await?;
    Ok((StatusCode::CREATED, Json(e)).into_response())
}
