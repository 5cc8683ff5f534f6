//! Errors of the HTTP layer in E2B's format (`{"code": N, "message": "..."}`), and the
//! status code each service error is answered with.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::service::ServiceError;

/// An error in E2B's format: `{"code": <status>, "message": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

impl ApiError {
    /// An error with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"code": self.status.as_u16(), "message": self.message});
        (
            self.status,
            [("content-type", "application/json")],
            body.to_string(),
        )
            .into_response()
    }
}

/// The status code E2B answers an error of this kind with.
pub fn status_of(e: &ServiceError) -> StatusCode {
    use crate::templates::TemplateLookupError as Lookup;
    match e {
        ServiceError::NotFound(_) | ServiceError::Template(Lookup::NotFound(_)) => {
            StatusCode::NOT_FOUND
        }
        ServiceError::Invalid(_) => StatusCode::BAD_REQUEST,
        ServiceError::AlreadyPaused { .. }
        | ServiceError::AlreadyRunning { .. }
        | ServiceError::BuildStarted { .. } => StatusCode::CONFLICT,
        ServiceError::NoSlot { .. }
        | ServiceError::Busy { .. }
        | ServiceError::DiskFull { .. }
        | ServiceError::DiskOvercommitted { .. }
        | ServiceError::Runtime {
            source: hutch_runtime::RuntimeError::Exhausted(_),
            ..
        }
        | ServiceError::Template(Lookup::Building(_)) => StatusCode::SERVICE_UNAVAILABLE,
        ServiceError::RateLimited { .. } | ServiceError::TeamRateLimited { .. } => {
            StatusCode::TOO_MANY_REQUESTS
        }
        ServiceError::UploadToken => StatusCode::UNAUTHORIZED,
        ServiceError::Template(Lookup::Failed(_) | Lookup::Broken(..))
        | ServiceError::Runtime { .. }
        | ServiceError::NotReady(_)
        | ServiceError::Store(_)
        | ServiceError::Worker(_)
        | ServiceError::Io { .. }
        | ServiceError::StoreUpload(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        ApiError::new(status_of(&e), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::{Invalid, Missing, RuntimeOp};
    use crate::templates::TemplateLookupError;

    fn answer(e: ServiceError) -> (u16, String) {
        let api = ApiError::from(e);
        (api.status.as_u16(), api.message)
    }

    #[test]
    fn every_kind_of_service_error_has_e2bs_status() {
        let rt = || hutch_runtime::RuntimeError::Helper("boom".into());
        let cases: Vec<(ServiceError, u16, &str)> = vec![
            (
                Missing::Sandbox("s".into()).into(),
                404,
                "sandbox \"s\" doesn't exist or you don't have access to it",
            ),
            (
                Missing::KilledSandbox("s".into()).into(),
                404,
                "sandbox \"s\" not found",
            ),
            (
                TemplateLookupError::NotFound("t".into()).into(),
                404,
                "template 't' not found",
            ),
            (
                TemplateLookupError::Building("rootfs 1/2".into()).into(),
                503,
                "the default templates are still being built (rootfs 1/2); try again shortly",
            ),
            (
                TemplateLookupError::Failed("x".into()).into(),
                500,
                "the default templates failed to build: x",
            ),
            (
                Invalid::CpuCount { asked: 0, max: 2 }.into(),
                400,
                "cpuCount 0 is out of range: this server allows 1 to 2 CPUs for your team's templates",
            ),
            (
                ServiceError::AlreadyPaused { id: "s".into() },
                409,
                "sandbox s is already paused",
            ),
            (
                ServiceError::AlreadyRunning { id: "s".into() },
                409,
                "sandbox s is already running",
            ),
            (
                ServiceError::BuildStarted {
                    build_id: "b".into(),
                },
                409,
                "build 'b' was started already",
            ),
            (
                ServiceError::NoSlot { slots: 4 },
                503,
                "all 4 sandbox slots are in use",
            ),
            (
                ServiceError::Busy {
                    starting: 8,
                    waited_s: 60,
                },
                503,
                "the server is busy starting 8 other sandboxes and this one waited 60s for its \
                 turn; retry in a moment",
            ),
            (
                ServiceError::runtime(
                    RuntimeOp::Create,
                    "s",
                    hutch_runtime::RuntimeError::Exhausted("loop devices".into()),
                ),
                503,
                "creating the sandbox failed: the host is out of loop devices; retry later",
            ),
            (
                ServiceError::UploadToken,
                401,
                "invalid or expired upload token",
            ),
            (
                ServiceError::runtime(RuntimeOp::Create, "s", rt()),
                500,
                "creating the sandbox failed: boom",
            ),
            (
                ServiceError::runtime(RuntimeOp::Kill, "s", rt()),
                500,
                "killing sandbox s: boom",
            ),
            (
                ServiceError::runtime(RuntimeOp::Pause, "s", rt()),
                500,
                "pausing sandbox s: boom",
            ),
            (
                ServiceError::runtime(RuntimeOp::Resume, "s", rt()),
                500,
                "resuming sandbox s: boom",
            ),
            (
                ServiceError::runtime(RuntimeOp::Commit, "s", rt()),
                500,
                "boom",
            ),
            (ServiceError::NotReady("late".into()), 500, "late"),
            (
                ServiceError::io("mkdir", "/x", std::io::Error::other("denied")),
                500,
                "mkdir /x: denied",
            ),
        ];
        for (err, status, message) in cases {
            assert_eq!(answer(err), (status, message.to_string()));
        }
    }

    #[test]
    fn rate_limits_are_429() {
        let (status, message) = answer(ServiceError::RateLimited { max: 3 });
        assert_eq!(status, 429);
        assert_eq!(
            message,
            "Rate limit exceeded: this API key may hold at most 3 sandboxes at once (running and paused); kill one or ask for a key with a higher limit"
        );
    }

    #[tokio::test]
    async fn errors_answer_in_e2bs_json_format() {
        use http_body_util::BodyExt;
        let resp = ApiError::new(StatusCode::NOT_FOUND, "gone").into_response();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert_eq!(resp.headers()["content-type"], "application/json");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v, serde_json::json!({"code": 404, "message": "gone"}));
    }
}
