//! Helpers for the filesystem service's tests: its unary calls and file modes.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::Value;

use super::Agent;

/// The agent configuration the filesystem tests use.
pub const CONFIG: &str = r#"{"sandboxId":"test","envVars":{}}"#;

/// A unary `Filesystem/<method>` call with default headers; returns status and body.
pub async fn call(agent: &Agent, method: &str, body: Value) -> (u16, Value) {
    call_as(agent, method, body, &[]).await
}

/// A unary `Filesystem/<method>` call with `headers`; returns status and body.
pub async fn call_as(
    agent: &Agent,
    method: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let (status, body) = agent
        .unary(&format!("/filesystem.Filesystem/{method}"), &body, headers)
        .await;
    (status.as_u16(), body)
}

/// Sets the permission bits of `path`.
pub fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}
