//! The agent's HTTP surface: every route in one place, with the access-token layer around them.

use std::sync::Arc;

use axum::extract::FromRef;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;

use crate::auth;
use crate::process::{rpc as process_rpc, ProcessService};

/// Shared state of all handlers.
#[derive(Clone)]
pub struct AppState {
    /// The process service.
    pub process: ProcessService,
    /// The sandbox's access token, when it has one.
    pub access_token: Option<Arc<str>>,
}

impl FromRef<AppState> for ProcessService {
    fn from_ref(state: &AppState) -> Self {
        state.process.clone()
    }
}

/// Builds the router.
pub fn router(state: AppState) -> Router {
    let token = state.access_token.clone();
    Router::new()
        .route("/health", get(health))
        .route("/process.Process/Start", post(process_rpc::start))
        .route("/process.Process/List", post(process_rpc::list))
        .route(
            "/process.Process/SendSignal",
            post(process_rpc::send_signal),
        )
        // The rest of both services arrives in later steps; answering `unimplemented` (rather
        // than 404) tells SDKs the agent is there but lacks the feature.
        .route(
            "/process.Process/{method}",
            post(process_rpc::unimplemented),
        )
        .route(
            "/filesystem.Filesystem/{method}",
            post(process_rpc::unimplemented),
        )
        .layer(axum::middleware::from_fn_with_state(
            token,
            auth::require_access_token,
        ))
        .with_state(state)
}

/// `GET /health`: the agent is up and serving.
async fn health() -> StatusCode {
    StatusCode::NO_CONTENT
}
