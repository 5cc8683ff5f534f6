//! Who may call the agent, and as whom commands run.
//!
//! Two separate things, both from request headers: the sandbox's access token (`X-Access-Token`),
//! which gates every request but the health check, and the user a call acts as (`Authorization:
//! Basic base64("<user>:")`, no password), which picks the account processes run under.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine as _;
use hutch_contracts::auth::constant_time_eq;

use crate::connect::ConnectError;
use crate::identity::Identity;

/// The header carrying the sandbox's access token.
pub const ACCESS_TOKEN_HEADER: &str = "x-access-token";

/// Middleware: when the sandbox has an access token, rejects requests without it (except
/// `GET /health`, which the host and the SDK's liveness probe call without credentials, and
/// signed `/files` URLs, which their handlers check).
pub async fn require_access_token(
    State(identity): State<Identity>,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = identity.token() else {
        return next.run(request).await;
    };
    if request.method() == Method::GET && request.uri().path() == "/health" {
        return next.run(request).await;
    }
    // Signed download/upload URLs carry no token; the /files handlers verify the signature.
    if crate::files::is_signed_files_request(request.method(), request.uri(), request.headers()) {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(ACCESS_TOKEN_HEADER)
        .map(|v| v.as_bytes());
    if presented.is_some_and(|p| constant_time_eq(p, expected.as_bytes())) {
        return next.run(request).await;
    }
    let why = if presented.is_some() {
        "the X-Access-Token header does not match this sandbox's access token"
    } else {
        "this sandbox requires its access token in the X-Access-Token header"
    };
    // Plain 401 with a Connect JSON body for every path: Connect clients read it as
    // `unauthenticated` for unary and streaming calls alike, and plain HTTP clients see a 401.
    ConnectError::unauthenticated(why).into_unary_response()
}

/// The username of an `Authorization: Basic` header, if the request has a well-formed one.
///
/// Malformed headers count as absent, as in envd: the call then runs as the default user.
pub fn basic_username(headers: &HeaderMap) -> Option<String> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, _password) = decoded.split_once(':')?;
    Some(user.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn reads_username_from_basic_auth() {
        let mut h = HeaderMap::new();
        assert_eq!(basic_username(&h), None);
        h.insert("authorization", HeaderValue::from_static("Basic cm9vdDo="));
        assert_eq!(basic_username(&h).as_deref(), Some("root"));
        h.insert("authorization", HeaderValue::from_static("Basic !!!"));
        assert_eq!(basic_username(&h), None);
        h.insert("authorization", HeaderValue::from_static("Bearer cm9vdDo="));
        assert_eq!(basic_username(&h), None);
    }
}
