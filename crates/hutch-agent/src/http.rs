//! The agent's HTTP surface: every route in one place, with the access-token layer around them.

use axum::extract::FromRef;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;

use crate::auth;
use crate::files::{self, FilesService};
use crate::filesystem::{rpc as fs_rpc, FilesystemService};
use crate::handin;
use crate::identity::Identity;
use crate::pool::{self, PoolState};
use crate::process::{rpc as process_rpc, ProcessService};

/// Shared state of all handlers.
#[derive(Clone)]
pub struct AppState {
    /// The process service.
    pub process: ProcessService,
    /// The filesystem service.
    pub filesystem: FilesystemService,
    /// The plain-HTTP file endpoints (`/files`, `/envs`).
    pub files: FilesService,
    /// The sandbox's variables and access token.
    pub identity: Identity,
    /// Warming and claiming, for a sandbox in a warm pool.
    pub pool: PoolState,
}

impl FromRef<AppState> for ProcessService {
    fn from_ref(state: &AppState) -> Self {
        state.process.clone()
    }
}

impl FromRef<AppState> for FilesService {
    fn from_ref(state: &AppState) -> Self {
        state.files.clone()
    }
}

impl FromRef<AppState> for FilesystemService {
    fn from_ref(state: &AppState) -> Self {
        state.filesystem.clone()
    }
}

/// Builds the router.
pub fn router(state: AppState) -> Router {
    let identity = state.identity.clone();
    Router::new()
        .route("/health", get(health))
        .route(pool::WARM_PATH, post(pool::warm))
        .route(pool::CLAIM_PATH, post(pool::claim))
        .route(handin::KERNEL_PREPARE_PATH, post(handin::prepare))
        .route(handin::KERNEL_ADOPT_PATH, post(handin::adopt))
        .route("/files", get(files::download).post(files::upload))
        .route("/envs", get(files::envs))
        .route("/process.Process/Start", post(process_rpc::start))
        .route("/process.Process/List", post(process_rpc::list))
        .route(
            "/process.Process/SendSignal",
            post(process_rpc::send_signal),
        )
        .route("/process.Process/Connect", post(process_rpc::connect))
        .route("/process.Process/SendInput", post(process_rpc::send_input))
        .route(
            "/process.Process/StreamInput",
            post(process_rpc::stream_input),
        )
        .route(
            "/process.Process/CloseStdin",
            post(process_rpc::close_stdin),
        )
        .route("/process.Process/Update", post(process_rpc::update))
        // The rest of both services arrives in later steps; answering `unimplemented` (rather
        // than 404) tells SDKs the agent is there but lacks the feature.
        .route(
            "/process.Process/{method}",
            post(process_rpc::unimplemented),
        )
        .route("/filesystem.Filesystem/Stat", post(fs_rpc::stat))
        .route("/filesystem.Filesystem/MakeDir", post(fs_rpc::make_dir))
        .route("/filesystem.Filesystem/Move", post(fs_rpc::move_entry))
        .route("/filesystem.Filesystem/ListDir", post(fs_rpc::list_dir))
        .route("/filesystem.Filesystem/Remove", post(fs_rpc::remove))
        .route("/filesystem.Filesystem/WatchDir", post(fs_rpc::watch_dir))
        .route(
            "/filesystem.Filesystem/CreateWatcher",
            post(fs_rpc::create_watcher),
        )
        .route(
            "/filesystem.Filesystem/GetWatcherEvents",
            post(fs_rpc::get_watcher_events),
        )
        .route(
            "/filesystem.Filesystem/RemoveWatcher",
            post(fs_rpc::remove_watcher),
        )
        .route(
            "/filesystem.Filesystem/{method}",
            post(process_rpc::unimplemented),
        )
        .layer(axum::middleware::from_fn_with_state(
            identity,
            auth::require_access_token,
        ))
        .with_state(state)
}

/// `GET /health`: the agent is up and serving.
async fn health() -> StatusCode {
    StatusCode::NO_CONTENT
}
