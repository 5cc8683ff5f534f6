//! Managing a team's API keys over HTTP, as E2B's `/api-keys` and
//! `/admin/teams/{teamID}/api-keys` do: list (masked, never the key), create (the key is
//! shown once), rename and delete (revoke). `hutch keys` does the same on the host.
//!
//! Only admin keys (and the server's own `--api-key`) may: an ordinary key acts for its
//! team's sandboxes and templates, and minting or revoking keys is the operator's business,
//! as in E2B, where API keys cannot manage keys either. An admin key manages its own team's
//! keys, or another team's named by `X-Team-ID` or in the path.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::api::{ApiJson, AppState, CallerExt};
use crate::api_error::ApiError;
use crate::store::ApiKeyInfo;

/// The body of a create or a rename.
#[derive(Debug, Deserialize)]
pub struct KeyName {
    name: String,
}

/// How a key is shown without its value (E2B's `IdentifierMaskingDetails`).
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Mask {
    prefix: String,
    value_length: usize,
    masked_value_prefix: String,
    masked_value_suffix: String,
}

/// A key as listed (E2B's `TeamAPIKey`), or just created (`CreatedTeamAPIKey`, with `key`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TeamKey {
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    name: String,
    mask: Mask,
    created_at: DateTime<Utc>,
    /// hutch has no users: always null.
    created_by: Option<()>,
    /// Not tracked (it would cost a database write per request): always null.
    last_used: Option<DateTime<Utc>>,
}

/// The prefix of keys in E2B's format.
const KEY_PREFIX: &str = "e2b_";

/// The length of keys hutch generates (`e2b_` and 40 hex digits): what keys stored before
/// lengths were kept are taken to have.
const GENERATED_LENGTH: usize = 44;

/// E2B's masking details from the stored mask (`e2b_1234…cdef`, or stars for short keys).
fn mask_of(info: &ApiKeyInfo) -> Mask {
    let length = info.key_length.unwrap_or(GENERATED_LENGTH);
    let prefix = if info.mask.starts_with(KEY_PREFIX) {
        KEY_PREFIX
    } else {
        ""
    };
    let rest = &info.mask[prefix.len()..];
    let (head, tail) = rest.split_once('…').unwrap_or(("", ""));
    Mask {
        prefix: prefix.to_string(),
        value_length: length.saturating_sub(prefix.len()),
        masked_value_prefix: head.to_string(),
        masked_value_suffix: tail.to_string(),
    }
}

fn shown(info: &ApiKeyInfo, key: Option<String>) -> TeamKey {
    TeamKey {
        id: info.id.clone(),
        key,
        name: info.name.clone().unwrap_or_default(),
        mask: mask_of(info),
        created_at: info.created_at,
        created_by: None,
        last_used: None,
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "API key store failed");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "reading or writing API keys failed",
    )
}

/// The team a call acts on: `named` (from the path or `X-Team-ID`) or the caller's own; it
/// must exist.
fn team_for(
    st: &AppState,
    caller: &CallerExt,
    headers: &HeaderMap,
    named: Option<String>,
) -> Result<String, ApiError> {
    let named = named.or_else(|| {
        headers
            .get("x-team-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    });
    let team = named.unwrap_or_else(|| caller.scope().team);
    match st.store.team(&team) {
        Ok(Some(_)) => Ok(team),
        Ok(None) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("team '{team}' not found"),
        )),
        Err(e) => Err(internal(e)),
    }
}

/// A key's name: 1 to 256 characters, none of them a control character.
fn checked_name(name: &str) -> Result<&str, ApiError> {
    if name.is_empty() || name.chars().count() > 256 || name.chars().any(char::is_control) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "name must be 1 to 256 characters, without control characters",
        ));
    }
    Ok(name)
}

fn create_for(st: &AppState, team: &str, name: &str) -> Result<Response, ApiError> {
    let name = checked_name(name)?;
    let key = crate::store::generate_key();
    let id = st
        .store
        .add_team_key(&key, Some(name), None, team, false)
        .map_err(internal)?;
    let info = st
        .store
        .key(&id)
        .map_err(internal)?
        .ok_or_else(|| internal("the new key is not stored"))?;
    tracing::info!(team, key_id = %id, "API key created over the API");
    Ok((StatusCode::CREATED, Json(shown(&info, Some(key)))).into_response())
}

fn delete_for(st: &AppState, team: &str, id: &str) -> Result<StatusCode, ApiError> {
    if st.store.revoke_team_key(team, id).map_err(internal)? {
        tracing::info!(team, key_id = %id, "API key revoked over the API");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found(id))
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("API key '{id}' not found"))
}

/// `GET /api-keys`: the team's keys, masked.
pub async fn list(
    State(st): State<AppState>,
    Extension(caller): Extension<CallerExt>,
    headers: HeaderMap,
) -> Result<Json<Vec<TeamKey>>, ApiError> {
    let team = team_for(&st, &caller, &headers, None)?;
    let keys = st.store.team_keys(&team).map_err(internal)?;
    Ok(Json(keys.iter().map(|k| shown(k, None)).collect()))
}

/// `POST /api-keys`: a new key of the team, shown once.
pub async fn create(
    State(st): State<AppState>,
    Extension(caller): Extension<CallerExt>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<KeyName>,
) -> Result<Response, ApiError> {
    let team = team_for(&st, &caller, &headers, None)?;
    create_for(&st, &team, &body.name)
}

/// `PATCH /api-keys/{apiKeyID}`: renames a key of the team.
pub async fn rename(
    State(st): State<AppState>,
    Extension(caller): Extension<CallerExt>,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<KeyName>,
) -> Result<StatusCode, ApiError> {
    let team = team_for(&st, &caller, &headers, None)?;
    let name = checked_name(&body.name)?;
    if st.store.rename_key(&team, &id, name).map_err(internal)? {
        Ok(StatusCode::OK)
    } else {
        Err(not_found(&id))
    }
}

/// `DELETE /api-keys/{apiKeyID}`: revokes a key of the team (requests with it then get 401).
pub async fn delete(
    State(st): State<AppState>,
    Extension(caller): Extension<CallerExt>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let team = team_for(&st, &caller, &headers, None)?;
    delete_for(&st, &team, &id)
}

/// `POST /admin/teams/{teamID}/api-keys`.
pub async fn admin_create(
    State(st): State<AppState>,
    Extension(caller): Extension<CallerExt>,
    headers: HeaderMap,
    Path(team): Path<String>,
    ApiJson(body): ApiJson<KeyName>,
) -> Result<Response, ApiError> {
    let team = team_for(&st, &caller, &headers, Some(team))?;
    create_for(&st, &team, &body.name)
}

/// `DELETE /admin/teams/{teamID}/api-keys/{apiKeyID}`.
pub async fn admin_delete(
    State(st): State<AppState>,
    Extension(caller): Extension<CallerExt>,
    headers: HeaderMap,
    Path((team, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let team = team_for(&st, &caller, &headers, Some(team))?;
    delete_for(&st, &team, &id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(mask: &str, key_length: Option<usize>) -> ApiKeyInfo {
        ApiKeyInfo {
            id: "abc".into(),
            mask: mask.into(),
            name: None,
            created_at: Utc::now(),
            revoked_at: None,
            max_sandboxes: None,
            team: "default".into(),
            admin: false,
            key_length,
        }
    }

    #[test]
    fn masks_are_e2bs_masking_details() {
        assert_eq!(
            mask_of(&info("e2b_1234…cdef", Some(44))),
            Mask {
                prefix: "e2b_".into(),
                value_length: 40,
                masked_value_prefix: "1234".into(),
                masked_value_suffix: "cdef".into(),
            }
        );
        // Keys from before lengths were kept, and keys not in E2B's format.
        assert_eq!(mask_of(&info("e2b_1234…cdef", None)).value_length, 40);
        let other = mask_of(&info("mykey-12…wxyz", Some(20)));
        assert_eq!((other.prefix.as_str(), other.value_length), ("", 20));
        assert_eq!(other.masked_value_prefix, "mykey-12");
        let short = mask_of(&info("*****", Some(5)));
        assert_eq!(short.masked_value_prefix, "");
        assert_eq!(short.value_length, 5);
    }

    #[test]
    fn names_are_bounded_and_printable() {
        assert_eq!(checked_name(" ci key").unwrap(), " ci key");
        assert!(checked_name(&"x".repeat(256)).is_ok());
        for bad in ["", "a\nb", "a\u{85}", &"x".repeat(257)] {
            assert!(checked_name(bad).is_err(), "{bad:?}");
        }
    }
}
