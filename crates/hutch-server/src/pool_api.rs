//! hutch's own endpoints for warm pools (E2B has none): `GET /pools`, `GET /pools/{template}`
//! and `PUT /pools/{template}` with `{"min": N, "max": M}` or `{"size": N}` (min = max = N).
//! Sizes set here are kept across restarts and win over `hutch serve --pool`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use crate::api::{ApiJson, AppState};
use crate::api_error::ApiError;
use crate::service::pool::PoolInfo;

/// The body of `PUT /pools/{template}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolBody {
    min: Option<u32>,
    max: Option<u32>,
    size: Option<u32>,
}

impl PoolBody {
    /// (min, max): `size` alone, or `min` and/or `max` (a missing one takes the other's
    /// value when that keeps min ≤ max, else 0 for min).
    fn sizes(&self) -> Result<(u32, u32), ApiError> {
        let bad = |m: &str| ApiError::new(StatusCode::BAD_REQUEST, m);
        match (self.size, self.min, self.max) {
            (Some(n), None, None) => Ok((n, n)),
            (Some(_), _, _) => Err(bad("give either size, or min and max")),
            (None, Some(min), Some(max)) => Ok((min, max)),
            (None, Some(min), None) => Ok((min, min)),
            (None, None, Some(max)) => Ok((0, max)),
            (None, None, None) => Err(bad("give size, or min and max")),
        }
    }
}

/// `GET /pools`: every configured pool.
pub async fn list(State(st): State<AppState>) -> Json<Vec<PoolInfo>> {
    Json(st.svc.pools_info())
}

/// `GET /pools/{template}`: one template's pool (sizes 0 when it has none).
pub async fn get_one(
    State(st): State<AppState>,
    Path(template): Path<String>,
) -> Result<Json<PoolInfo>, ApiError> {
    Ok(Json(st.svc.pool_info(&template)?))
}

/// `PUT /pools/{template}`: sets its sizes; the pool fills or shrinks in the background.
pub async fn put(
    State(st): State<AppState>,
    Path(template): Path<String>,
    ApiJson(body): ApiJson<PoolBody>,
) -> Result<Json<PoolInfo>, ApiError> {
    let (min, max) = body.sizes()?;
    Ok(Json(st.svc.set_pool(&template, min, max)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(min: Option<u32>, max: Option<u32>, size: Option<u32>) -> PoolBody {
        PoolBody { min, max, size }
    }

    #[test]
    fn sizes_from_the_body() {
        assert_eq!(body(None, None, Some(4)).sizes().ok(), Some((4, 4)));
        assert_eq!(body(Some(1), Some(8), None).sizes().ok(), Some((1, 8)));
        assert_eq!(body(Some(2), None, None).sizes().ok(), Some((2, 2)));
        assert_eq!(body(None, Some(3), None).sizes().ok(), Some((0, 3)));
        assert!(body(None, None, None).sizes().is_err());
        assert!(body(Some(1), None, Some(2)).sizes().is_err());
    }
}
