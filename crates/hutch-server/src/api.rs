//! The E2B-compatible control plane over HTTP, and the front door that splits sandbox
//! traffic (routed to sandboxes) from control-plane calls. Handlers parse, call one
//! service function and map its error.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};
use axum::Extension;
use axum::Router;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use tower::ServiceExt;

pub use crate::api_error::{status_of, ApiError};
use crate::sandbox::{valid_id, SandboxState};
use crate::service::{CreateRequest, ListQuery, Missing, Service, ServiceError};
use crate::store::{Caller, Store};
use crate::tenancy::Scope;

/// Shared state of the HTTP layer.
#[derive(Clone)]
pub struct AppState {
    /// The sandbox service.
    pub svc: Arc<Service>,
    /// For API-key checks.
    pub store: Arc<Store>,
    /// A key accepted in addition to the stored ones (`--api-key`).
    pub extra_key: Option<Arc<str>>,
    /// The domain sandbox hosts live under (`--domain`), returned to clients.
    pub domain: Option<Arc<str>>,
    /// Template builds.
    pub builds: Arc<crate::builds::Builds>,
    /// Volumes.
    pub volumes: Arc<crate::volumes::Volumes>,
}

/// JSON body extractor whose rejections are E2B-style 400s. An empty body reads as `{}`.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                // 413 for a body over the limit, 400 for one that could not be read.
                let status = match e.status() {
                    StatusCode::PAYLOAD_TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
                    _ => StatusCode::BAD_REQUEST,
                };
                ApiError::new(status, format!("reading the request body: {e}"))
            })?;
        let slice: &[u8] = if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            b"{}"
        } else {
            &bytes
        };
        // Every body of this API is an object: serde would also read a struct from an
        // array of its fields (`[null, null]`), which no client means.
        if slice.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid request body: expected a JSON object",
            ));
        }
        serde_json::from_slice(slice).map(ApiJson).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("invalid request body: {e}"),
            )
        })
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

/// Builds the whole HTTP application.
pub fn app(state: AppState) -> Router {
    let control = control_plane(state.clone());
    Router::new()
        .fallback(move |State(st): State<AppState>, req: Request| {
            let control = control.clone();
            async move {
                if let Some((id, port)) = crate::proxy::target(req.headers()) {
                    return crate::proxy::forward(&st.svc, &id, port, req).await;
                }
                // Signed URLs carry no routing header: the signature names the sandbox.
                if let Some(id) =
                    crate::proxy::signed_files_target(&st.svc, req.method(), req.uri())
                {
                    return crate::proxy::forward(
                        &st.svc,
                        &id,
                        hutch_contracts::agent::AGENT_PORT,
                        req,
                    )
                    .await;
                }
                // A signed /files URL that no live sandbox signed: refuse it as envd would.
                if req.uri().path() == "/files"
                    && req.uri().query().is_some_and(|q| q.contains("signature="))
                {
                    return ApiError::new(StatusCode::UNAUTHORIZED, "invalid signature")
                        .into_response();
                }
                match control.oneshot(req).await {
                    Ok(r) => r,
                    Err(never) => match never {},
                }
            }
        })
        .with_state(state)
}

fn control_plane(state: AppState) -> Router {
    let authed = Router::new()
        .route("/sandboxes", post(create_v1).get(list_v1))
        .route("/v2/sandboxes", post(create_v2).get(list_v2))
        .route("/sandboxes/{id}", get(info).delete(kill))
        .route("/sandboxes/{id}/connect", post(connect))
        .route("/v2/sandboxes/{id}/connect", post(connect))
        .route("/sandboxes/{id}/timeout", post(set_timeout))
        .route("/sandboxes/{id}/refreshes", post(refresh))
        .route("/sandboxes/{id}/pause", post(pause))
        .route("/sandboxes/{id}/resume", post(resume))
        .route("/sandboxes/{id}/metrics", get(metrics))
        .route(
            "/sandboxes/{id}/network",
            axum::routing::put(crate::network_api::update_network),
        )
        .route(
            "/sandboxes/{id}/snapshots",
            post(crate::snapshot_api::create),
        )
        .route("/snapshots", get(crate::snapshot_api::list))
        .route("/sandboxes/{id}/fork", post(crate::snapshot_api::fork))
        .route(
            "/volumes",
            post(crate::volume_api::create).get(crate::volume_api::list),
        )
        .route(
            "/volumes/{id}",
            get(crate::volume_api::get_one).delete(crate::volume_api::destroy),
        )
        .merge(
            // Warm pools are the operator's: they serve every team.
            Router::new()
                .route("/pools", get(crate::pool_api::list))
                .route(
                    "/pools/{template}",
                    get(crate::pool_api::get_one).put(crate::pool_api::put),
                )
                .route_layer(middleware::from_fn(require_admin)),
        )
        .merge(
            // Minting and revoking keys is the operator's (E2B's API keys cannot either).
            Router::new()
                .route(
                    "/api-keys",
                    get(crate::keys_api::list).post(crate::keys_api::create),
                )
                .route(
                    "/api-keys/{id}",
                    patch(crate::keys_api::rename).delete(crate::keys_api::delete),
                )
                .route(
                    "/admin/teams/{team}/api-keys",
                    post(crate::keys_api::admin_create),
                )
                .route(
                    "/admin/teams/{team}/api-keys/{id}",
                    delete(crate::keys_api::admin_delete),
                )
                .route_layer(middleware::from_fn(require_admin)),
        )
        .route("/v3/templates", post(crate::template_api::request_build))
        .route("/templates", get(crate::template_api::list))
        .route(
            "/templates/{id}",
            get(crate::template_api::get_one).delete(crate::template_api::delete),
        )
        .route(
            "/templates/aliases/{alias}",
            get(crate::template_api::alias),
        )
        .route(
            "/templates/{id}/files/{hash}",
            get(crate::template_api::file_link),
        )
        .route(
            "/v2/templates/{id}/builds/{build}",
            post(crate::template_api::start_build),
        )
        .route(
            "/templates/{id}/builds/{build}/status",
            get(crate::template_api::build_status),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_api_key,
        ));
    Router::new()
        .route("/health", get(health))
        .route("/openapi.json", get(openapi))
        // The volume content API carries the volume's own token instead of the API key.
        .route(
            "/volumecontent/{id}/dir",
            get(crate::volume_api::list_dir).post(crate::volume_api::make_dir),
        )
        .route(
            "/volumecontent/{id}/path",
            get(crate::volume_api::stat)
                .patch(crate::volume_api::set_metadata)
                .delete(crate::volume_api::remove),
        )
        .route(
            "/volumecontent/{id}/file",
            get(crate::volume_api::read_file).put(crate::volume_api::write_file),
        )
        // Uploads carry a per-build token instead of the API key, as E2B's presigned URLs do.
        .route(
            "/templates/{id}/files/{hash}/upload",
            axum::routing::put(crate::template_api::upload),
        )
        .merge(authed)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such API endpoint") })
        .layer(middleware::map_response(json_errors))
        .with_state(state)
}

/// Turns the errors the framework answers by itself (a method the path does not have, a
/// malformed path or query, a body over the limit) into E2B's JSON error format, as the
/// handlers' own errors are. Headers such as `Allow` are kept.
async fn json_errors(res: Response) -> Response {
    let status = res.status();
    let is_json = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_lowercase()
    } else {
        text
    };
    let fresh = ApiError::new(status, message).into_response();
    parts.headers.remove("content-length");
    parts
        .headers
        .insert("content-type", HeaderValue::from_static("application/json"));
    Response::from_parts(parts, fresh.into_body())
}

async fn openapi() -> Response {
    (
        [("content-type", "application/json")],
        crate::openapi::document_text(),
    )
        .into_response()
}

async fn require_api_key(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let key = req
        .headers()
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| {
            req.headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_string)
        });
    let Some(key) = key else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing API key: send it in the X-API-KEY header",
        )
        .into_response();
    };
    // The key given on the command line has no limit; stored keys may have one.
    let caller = if st.extra_key.as_deref() == Some(key.as_str()) {
        None
    } else {
        match st.store.caller(&key) {
            Ok(Some(caller)) => Some(caller),
            Ok(None) => {
                return ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "Invalid API key: create one with `hutch keys create`",
                )
                .into_response()
            }
            Err(e) => {
                tracing::error!(error = %e, "reading API keys failed");
                return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "reading API keys failed")
                    .into_response();
            }
        }
    };
    let mut req = req;
    req.extensions_mut().insert(CallerExt(caller));
    next.run(req).await
}

/// Lets only admin keys (and the server's own `--api-key`) through.
async fn require_admin(req: Request, next: Next) -> Response {
    let admin = req
        .extensions()
        .get::<CallerExt>()
        .is_some_and(|c| c.scope().all);
    if !admin {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "this endpoint needs an admin key (`hutch keys create --admin`)",
        )
        .into_response();
    }
    next.run(req).await
}

async fn health(State(st): State<AppState>) -> Response {
    // Sandboxes can be created as soon as the default template (`base`) is built; the
    // larger templates after it keep building and report their progress here.
    let templates = st.svc.templates();
    let status = templates.status();
    let code = if templates.ready("base") {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = serde_json::to_value(&status).unwrap_or_default();
    if let Some(m) = body.as_object_mut() {
        m.insert("sandboxes".into(), st.svc.count().into());
        m.insert(
            "templates".into(),
            serde_json::json!(templates.ready_names()),
        );
    }
    (
        code,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct NewSandbox {
    #[serde(rename = "templateID")]
    template_id: String,
    timeout: Option<i64>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    env_vars: Option<BTreeMap<String, String>>,
    #[serde(rename = "allow_internet_access")]
    allow_internet_access: Option<bool>,
    // `secure` is read by no one: every sandbox's agent requires its access token, as API
    // v2 always does, so an id alone never reaches it.
    auto_pause: Option<bool>,
    network: Option<crate::network_api::NetworkConfig>,
    /// `{"enabled": true}`: a paused sandbox resumes when traffic reaches it.
    auto_resume: Option<AutoResume>,
    /// False: the pause at the end time keeps only the filesystem.
    auto_pause_memory: Option<bool>,
    /// Volumes of the caller's team to mount: `[{"name", "path"}]`.
    volume_mounts: Option<Vec<VolumeMountBody>>,
    // Asked for by newer SDKs; refused with a clear 400 until hutch has them (never taken
    // silently): see `unsupported`.
    mcp: Option<serde_json::Value>,
    iam: Option<serde_json::Value>,
}

/// One of a create's `volumeMounts`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VolumeMountBody {
    name: String,
    path: String,
}

/// Checks a create's volume mounts and finds the volumes (the caller's team's, by name).
fn volume_mounts(
    st: &AppState,
    caller: Option<&Caller>,
    mounts: &[VolumeMountBody],
) -> ApiResult<Vec<crate::sandbox::VolumeMount>> {
    let team = caller.map_or(crate::tenancy::DEFAULT_TEAM, |c| c.team.name.as_str());
    let mut out: Vec<crate::sandbox::VolumeMount> = Vec::new();
    for m in mounts {
        let bad = |why: &str| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("volume mount path {:?} {why}", m.path),
            )
        };
        if !m.path.starts_with('/') {
            return Err(bad("must be absolute"));
        }
        let parts: Vec<&str> = m.path.split('/').filter(|c| !c.is_empty()).collect();
        if parts.is_empty() || parts.iter().any(|c| *c == "." || *c == "..") {
            return Err(bad("must name a directory below / without '.' or '..'"));
        }
        if ["proc", "sys", "dev", "run"].contains(&parts[0]) {
            return Err(bad("is in a directory the sandbox's system owns"));
        }
        let path = format!("/{}", parts.join("/"));
        if out.iter().any(|o| o.path == path) {
            return Err(bad("is named twice"));
        }
        let rec = st.volumes.by_name(&m.name, team).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("volume '{}' not found", m.name),
            )
        })?;
        out.push(crate::sandbox::VolumeMount {
            id: rec.id,
            name: rec.name,
            path,
        });
    }
    Ok(out)
}

/// `autoResume` of a create.
#[derive(Deserialize)]
struct AutoResume {
    enabled: Option<bool>,
}

/// A create option hutch cannot honour yet: a 400 that names it, rather than a sandbox
/// that silently lacks it. Empty values (null, false, empty list or object) are not asks.
fn unsupported(b: &NewSandbox) -> ApiResult<()> {
    fn asked(v: &Option<serde_json::Value>) -> bool {
        match v {
            None | Some(serde_json::Value::Null) | Some(serde_json::Value::Bool(false)) => false,
            Some(serde_json::Value::Array(a)) => !a.is_empty(),
            Some(serde_json::Value::Object(o)) => !o.is_empty(),
            Some(serde_json::Value::String(s)) => !s.is_empty(),
            Some(_) => true,
        }
    }
    let options: Vec<(&str, &Option<serde_json::Value>)> = vec![("mcp", &b.mcp), ("iam", &b.iam)];
    match options.into_iter().find(|(_, v)| asked(v)) {
        Some((name, _)) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("{name} is not supported by this hutch server; create the sandbox without it"),
        )),
        None => Ok(()),
    }
}

pub(crate) fn timeout_arg(t: Option<i64>) -> ApiResult<Option<u64>> {
    match t {
        Some(t) if t < 0 => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("timeout must not be negative (got {t})"),
        )),
        Some(t) => Ok(Some(t as u64)),
        None => Ok(None),
    }
}

/// The authenticated caller of a control-plane request (None: the server's own `--api-key`).
#[derive(Debug, Clone)]
pub struct CallerExt(pub Option<Caller>);

impl CallerExt {
    /// What the caller sees.
    pub fn scope(&self) -> Scope {
        Scope::of(self.0.as_ref())
    }
}

async fn create(st: &AppState, caller: Option<Caller>, b: NewSandbox) -> ApiResult<Response> {
    if b.template_id.trim().is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "templateID is required",
        ));
    }
    unsupported(&b)?;
    let (allow_public_traffic, network) = match b.network {
        Some(n) => (n.allow_public_traffic, n.settings(b.allow_internet_access)?),
        None => (None, None),
    };
    let mounts = volume_mounts(
        st,
        caller.as_ref(),
        b.volume_mounts.as_deref().unwrap_or_default(),
    )?;
    let volume_mounts = st.svc.volume_sources(&mounts).await?;
    let rec = st
        .svc
        .create(CreateRequest {
            template_id: b.template_id,
            timeout: timeout_arg(b.timeout)?,
            metadata: b.metadata.unwrap_or_default(),
            env_vars: b.env_vars.unwrap_or_default(),
            allow_internet_access: b.allow_internet_access,
            allow_public_traffic,
            auto_pause: b.auto_pause.unwrap_or(false),
            auto_pause_filesystem: b.auto_pause_memory == Some(false),
            auto_resume: b
                .auto_resume
                .as_ref()
                .and_then(|a| a.enabled)
                .unwrap_or(false),
            caller,
            build: None,
            template: None,
            volume_mounts,
            network,
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(rec.to_sandbox_json(st.domain.as_deref())),
    )
        .into_response())
}

async fn create_v1(
    State(st): State<AppState>,
    Extension(CallerExt(caller)): Extension<CallerExt>,
    ApiJson(b): ApiJson<NewSandbox>,
) -> ApiResult<Response> {
    create(&st, caller, b).await
}

async fn create_v2(
    State(st): State<AppState>,
    Extension(CallerExt(caller)): Extension<CallerExt>,
    ApiJson(b): ApiJson<NewSandbox>,
) -> ApiResult<Response> {
    create(&st, caller, b).await
}

/// Refuses ids that cannot be a sandbox's with E2B's 404.
fn id_format(id: &str) -> ApiResult<()> {
    if valid_id(id) {
        Ok(())
    } else {
        Err(ServiceError::from(Missing::Sandbox(id.to_string())).into())
    }
}

/// Refuses ids that cannot be a sandbox's, and sandboxes of another team, with E2B's 404
/// (a sandbox another team owns is indistinguishable from one that does not exist).
pub(crate) fn check_id(st: &AppState, caller: &CallerExt, id: &str) -> ApiResult<()> {
    id_format(id)?;
    if st.svc.visible(id, &caller.scope()) {
        Ok(())
    } else {
        Err(ServiceError::from(Missing::Sandbox(id.to_string())).into())
    }
}

async fn info(
    State(st): State<AppState>,
    Extension(caller): Extension<CallerExt>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    check_id(&st, &caller, &id)?;
    Ok(axum::Json(st.svc.get(&id)?.to_detail_json(st.domain.as_deref())).into_response())
}

async fn kill(
    State(st): State<AppState>,
    Extension(caller): Extension<CallerExt>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    check_id(&st, &caller, &id)?;
    st.svc.kill(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default)]
struct TimeoutBody {
    timeout: Option<i64>,
}

/// The body of a connect: newer SDKs add `memory: false` (`on_resume="reboot"`).
#[derive(Deserialize, Default)]
struct ConnectBody {
    timeout: Option<i64>,
    memory: Option<bool>,
}

#[derive(Deserialize, Default)]
struct RefreshBody {
    duration: Option<i64>,
}

async fn connect(
    State(st): State<AppState>,
    Extension(caller): Extension<CallerExt>,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<ConnectBody>,
) -> ApiResult<Response> {
    check_id(&st, &caller, &id)?;
    let (rec, resumed) = st
        .svc
        .connect_with(&id, timeout_arg(b.timeout)?, b.memory != Some(false))
        .await?;
    let status = if resumed {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        axum::Json(rec.to_sandbox_json(st.domain.as_deref())),
    )
        .into_response())
}

async fn set_timeout(
    State(st): State<AppState>,
    Extension(caller): Extension<CallerExt>,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<TimeoutBody>,
) -> ApiResult<StatusCode> {
    check_id(&st, &caller, &id)?;
    if b.timeout.is_none() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "timeout is required",
        ));
    }
    st.svc.set_timeout(&id, timeout_arg(b.timeout)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn refresh(
    State(st): State<AppState>,
    Extension(caller): Extension<CallerExt>,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<RefreshBody>,
) -> ApiResult<StatusCode> {
    check_id(&st, &caller, &id)?;
    st.svc.refresh(&id, timeout_arg(b.duration)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The body of a pause (newer SDKs send one; older ones none).
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct PauseBody {
    /// False: pause keeping only the filesystem (`mode="filesystem"`).
    memory: Option<bool>,
}

async fn pause(
    State(st): State<AppState>,
    Extension(caller): Extension<CallerExt>,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<PauseBody>,
) -> ApiResult<StatusCode> {
    check_id(&st, &caller, &id)?;
    if b.memory == Some(false) {
        st.svc.pause_filesystem(&id).await?;
    } else {
        st.svc.pause(&id).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn resume(
    State(st): State<AppState>,
    Extension(caller): Extension<CallerExt>,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<TimeoutBody>,
) -> ApiResult<Response> {
    check_id(&st, &caller, &id)?;
    let rec = st.svc.resume(&id, timeout_arg(b.timeout)?).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(rec.to_sandbox_json(st.domain.as_deref())),
    )
        .into_response())
}

#[derive(Deserialize, Default)]
struct MetricsQuery {
    start: Option<i64>,
    end: Option<i64>,
}

async fn metrics(
    State(st): State<AppState>,
    Extension(caller): Extension<CallerExt>,
    Path(id): Path<String>,
    q: Result<Query<MetricsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    check_id(&st, &caller, &id)?;
    let Query(q) = q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    Ok(axum::Json(st.svc.metrics(&id, q.start, q.end)?).into_response())
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ListParams {
    metadata: Option<String>,
    state: Option<String>,
    order: Option<String>,
    started_after: Option<String>,
    template: Option<String>,
    next_token: Option<String>,
    limit: Option<String>,
}

/// Decodes E2B's metadata filter: `k=v&k2=v2` with each part percent-quoted (the outer
/// query encoding is already undone by the query extractor).
fn parse_metadata_filter(s: &str) -> Vec<(String, String)> {
    let unquote = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    url::form_urlencoded::parse(s.as_bytes())
        .map(|(k, v)| (unquote(&k), unquote(&v)))
        .collect()
}

fn parse_list(p: ListParams, v2: bool) -> ApiResult<ListQuery> {
    let mut q = ListQuery {
        metadata: p
            .metadata
            .as_deref()
            .map(parse_metadata_filter)
            .unwrap_or_default(),
        ..Default::default()
    };
    if let Some(states) = p.state {
        for s in states.split(',') {
            q.states.push(match s.trim() {
                "running" => SandboxState::Running,
                "paused" => SandboxState::Paused,
                other => {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!("invalid state {other:?}: expected running or paused"),
                    ))
                }
            });
        }
    } else if !v2 {
        q.states.push(SandboxState::Running);
    }
    q.ascending = match p.order.as_deref() {
        None | Some("desc") => false,
        Some("asc") => true,
        Some(o) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("invalid order {o:?}: expected asc or desc"),
            ))
        }
    };
    if let Some(t) = p.started_after {
        let t = DateTime::parse_from_rfc3339(&t).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("invalid startedAfter {t:?}: {e}"),
            )
        })?;
        q.started_after = Some(t.with_timezone(&Utc));
    }
    q.template = p.template.filter(|s| !s.is_empty());
    q.next_token = p.next_token.filter(|s| !s.is_empty());
    if let Some(l) = p.limit {
        let n: usize = l
            .parse()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("invalid limit {l:?}: expected 1 to 1000"),
                )
            })?;
        q.limit = Some(n);
    }
    Ok(q)
}

async fn list(
    st: &AppState,
    caller: &CallerExt,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
    v2: bool,
) -> ApiResult<Response> {
    let Query(p) = params.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let mut q = parse_list(p, v2)?;
    q.scope = Some(caller.scope());
    let (recs, next) = st.svc.list(&q)?;
    let body: Vec<serde_json::Value> = recs.iter().map(|r| r.to_listed_json()).collect();
    let mut headers = HeaderMap::new();
    if let Some(n) = next.and_then(|n| HeaderValue::from_str(&n).ok()) {
        headers.insert("x-next-token", n);
    }
    Ok((StatusCode::OK, headers, axum::Json(body)).into_response())
}

async fn list_v1(
    State(st): State<AppState>,
    Extension(caller): Extension<CallerExt>,
    p: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    list(&st, &caller, p, false).await
}

async fn list_v2(
    State(st): State<AppState>,
    Extension(caller): Extension<CallerExt>,
    p: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    list(&st, &caller, p, true).await
}

#[cfg(test)]
mod tests;
