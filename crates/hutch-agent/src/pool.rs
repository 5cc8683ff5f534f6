//! A sandbox waiting in a warm pool: the server warms it once ([`WARM_PATH`]) and a create
//! claims it once ([`CLAIM_PATH`]), giving it its variables and access token. Both routes
//! sit behind the access-token layer, and a pooled sandbox's token is the pool's own, so
//! nothing but the server reaches them before the claim.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hutch_contracts::agent::Claim;

pub use hutch_contracts::agent::{CLAIM_PATH, WARM_PATH};

use crate::http::AppState;
use crate::identity::Identity;
use crate::interpreter::InterpreterService;

/// The pool side of one sandbox: whether it may still be claimed, and what a claim changes.
#[derive(Clone)]
pub struct PoolState {
    claimable: Arc<AtomicBool>,
    identity: Identity,
    interpreter: Option<InterpreterService>,
}

impl PoolState {
    /// `pooled`: the sandbox starts in a pool and may be claimed once.
    pub fn new(pooled: bool, identity: Identity, interpreter: Option<InterpreterService>) -> Self {
        PoolState {
            claimable: Arc::new(AtomicBool::new(pooled)),
            identity,
            interpreter,
        }
    }

    /// The code interpreter, when the sandbox runs one.
    pub fn interpreter(&self) -> Option<&InterpreterService> {
        self.interpreter.as_ref()
    }
}

/// `POST /hutch/warm`: returns once the default Python kernel has started and run a first
/// execution (at once when the sandbox runs no interpreter).
pub async fn warm(State(state): State<AppState>) -> Response {
    let Some(interpreter) = &state.pool.interpreter else {
        return StatusCode::NO_CONTENT.into_response();
    };
    match interpreter.warm().await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(err) => {
            tracing::warn!(error = %err, "cannot warm the default kernel");
            (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response()
        }
    }
}

/// `POST /hutch/claim`: hands the sandbox to its user. The running kernels get the new
/// variables first; the token changes last, so a claim that fails half-way can be retried.
pub async fn claim(State(state): State<AppState>, body: Bytes) -> Response {
    let claim: Claim = match serde_json::from_slice(&body) {
        Ok(claim) => claim,
        Err(err) => {
            return (StatusCode::BAD_REQUEST, format!("bad claim: {err}")).into_response();
        }
    };
    if let Some(bad) = claim
        .env_vars
        .keys()
        .find(|k| !hutch_contracts::template::valid_env_name(k))
    {
        return (
            StatusCode::BAD_REQUEST,
            format!("invalid environment variable name {bad:?}"),
        )
            .into_response();
    }
    let pool = &state.pool;
    if pool
        .claimable
        .compare_exchange(true, false, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        return (StatusCode::CONFLICT, "this sandbox is not in a pool").into_response();
    }
    let old = pool.identity.env();
    if let Some(interpreter) = &pool.interpreter {
        interpreter.apply_env(&old, &claim.env_vars).await;
    }
    let token = claim.access_token.as_deref().filter(|t| !t.is_empty());
    pool.identity.set(claim.env_vars, token);
    tracing::info!(token = token.is_some(), "claimed from the pool");
    StatusCode::NO_CONTENT.into_response()
}
