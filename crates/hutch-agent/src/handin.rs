//! The server hands the sandbox its default Python kernel, forked from its template's
//! zygote: [`KERNEL_PREPARE_PATH`] returns the plan the zygote carries out inside the
//! sandbox, [`KERNEL_ADOPT_PATH`] makes the resulting process the kernel. Both routes sit
//! behind the access-token layer, like the pool's.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hutch_contracts::agent::KernelAdopt;

pub use hutch_contracts::agent::{KERNEL_ADOPT_PATH, KERNEL_PREPARE_PATH};

use crate::http::AppState;
use crate::interpreter::{HandInError, InterpreterError};

/// `POST /hutch/kernel/prepare`: 200 with the [`KernelPlan`](hutch_contracts::agent::KernelPlan);
/// 409 when the default Python context has a kernel or a plan is pending, 404 when the
/// sandbox has no Python kernel.
pub async fn prepare(State(state): State<AppState>) -> Response {
    let Some(interpreter) = state.pool.interpreter() else {
        return no_interpreter();
    };
    match interpreter.prepare_kernel().await {
        Ok(plan) => Json(plan).into_response(),
        Err(err) => failed(err, "cannot prepare a kernel plan"),
    }
}

/// `POST /hutch/kernel/adopt` with a [`KernelAdopt`]: 204 once the process is the default
/// Python context's kernel and has run a first silent execution; 400 for a bad body, 404
/// for a plan that is not pending, 500 when the kernel failed (it has been killed).
pub async fn adopt(State(state): State<AppState>, body: Bytes) -> Response {
    let adopt: KernelAdopt = match serde_json::from_slice(&body) {
        Ok(adopt) => adopt,
        Err(err) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("bad kernel adoption: {err}"),
            )
                .into_response();
        }
    };
    let Some(interpreter) = state.pool.interpreter() else {
        return no_interpreter();
    };
    match interpreter.adopt_kernel(&adopt).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(err) => failed(err, "cannot adopt the kernel"),
    }
}

fn no_interpreter() -> Response {
    (
        StatusCode::NOT_FOUND,
        "this sandbox runs no code interpreter, so it has no Python kernel",
    )
        .into_response()
}

fn failed(err: HandInError, what: &'static str) -> Response {
    let status = match &err {
        HandInError::HasKernel | HandInError::Pending(_) => StatusCode::CONFLICT,
        HandInError::UnknownPlan(_)
        | HandInError::Interpreter(InterpreterError::NoKernel { .. }) => StatusCode::NOT_FOUND,
        HandInError::BadPid(_) => StatusCode::BAD_REQUEST,
        HandInError::Superseded(_) | HandInError::Interpreter(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    if status.is_server_error() {
        tracing::warn!(error = %err, "{what}");
    } else {
        tracing::info!(error = %err, "{what}");
    }
    (status, err.to_string()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_has_the_status_the_contract_names() {
        let no_kernel = InterpreterError::NoKernel {
            language: "python".into(),
            installed: "none".into(),
            searched: "/k".into(),
        };
        let cases = [
            (HandInError::HasKernel, StatusCode::CONFLICT),
            (HandInError::Pending("p".into()), StatusCode::CONFLICT),
            (HandInError::UnknownPlan("p".into()), StatusCode::NOT_FOUND),
            (HandInError::Interpreter(no_kernel), StatusCode::NOT_FOUND),
            (HandInError::BadPid(0), StatusCode::BAD_REQUEST),
            (
                HandInError::Superseded("was removed"),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
            (
                HandInError::Interpreter(InterpreterError::Task("boom".into())),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
        ];
        for (err, status) in cases {
            let text = err.to_string();
            assert_eq!(failed(err, "testing").status(), status, "{text}");
        }
    }
}
