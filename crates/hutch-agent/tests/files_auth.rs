//! Access to the plain-HTTP endpoints (`/files`, `/envs`) against the real agent binary: the
//! access token, and signed URLs in its place.

mod common;

use std::os::unix::fs::MetadataExt;

use common::files::*;
use common::*;
use hutch_agent::files::signature::{self, Operation};
use hyper::StatusCode;
use serde_json::json;

#[tokio::test]
async fn envs_returns_the_sandbox_env_vars_with_a_token_only() {
    let agent = Agent::start(&config()).await;
    let r = call(&agent, "GET", "/envs", &[], vec![]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), json!({"GREETING": "hi", "EMPTY": ""}));
    let r = call(&agent, "GET", "/envs", &[("no-token", "")], vec![]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn signed_urls_replace_the_token() {
    let agent = Agent::start(&config()).await;
    write_fixture(&agent, "signed.txt", b"signed content");
    let sig =
        |path: &str, op, user: &str, exp: Option<i64>| signature::sign(path, op, user, TOKEN, exp);
    let q = |path: &str, user: Option<&str>, s: &str, exp: Option<i64>| {
        let mut uri = format!("/files?path={}", enc(path));
        if let Some(u) = user {
            uri.push_str(&format!("&username={u}"));
        }
        uri.push_str(&format!("&signature={}", enc(s)));
        if let Some(e) = exp {
            uri.push_str(&format!("&signature_expiration={e}"));
        }
        uri
    };
    let no_token = [("no-token", "")];

    // Read, with and without a username, with a future expiration.
    let s = sig("signed.txt", Operation::Read, "user", None);
    let r = call(
        &agent,
        "GET",
        &q("signed.txt", Some("user"), &s, None),
        &no_token,
        vec![],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, b"signed content");
    let exp = signature::unix_now() + 120;
    let s = sig("signed.txt", Operation::Read, "", Some(exp));
    let r = call(
        &agent,
        "GET",
        &q("signed.txt", None, &s, Some(exp)),
        &no_token,
        vec![],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);

    // Expired: envd's exact answer.
    let exp = signature::unix_now() - 120;
    let s = sig("signed.txt", Operation::Read, "user", Some(exp));
    let r = call(
        &agent,
        "GET",
        &q("signed.txt", Some("user"), &s, Some(exp)),
        &no_token,
        vec![],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.json(),
        json!({"code": 401, "message": "signature is already expired"})
    );

    // Wrong path, user, operation or signature.
    let s = sig("signed.txt", Operation::Read, "user", None);
    for uri in [
        q("other.txt", Some("user"), &s, None),
        q("signed.txt", Some("root"), &s, None),
        q("signed.txt", Some("user"), &format!("{s}x"), None),
    ] {
        let r = call(&agent, "GET", &uri, &no_token, vec![]).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{uri}");
        assert_eq!(
            r.json(),
            json!({"code": 401, "message": "invalid signature"})
        );
    }
    let r = call(
        &agent,
        "POST",
        &q("signed.txt", Some("user"), &s, None),
        &[
            ("no-token", ""),
            ("content-type", "application/octet-stream"),
        ],
        b"no".to_vec(),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        std::fs::read(agent.home.join("signed.txt")).unwrap(),
        b"signed content"
    );

    // A signed upload; Basic auth cannot turn a default-user signature into root.
    let s = sig("up/signed.txt", Operation::Write, "", None);
    let r = call(
        &agent,
        "POST",
        &q("up/signed.txt", None, &s, None),
        &[
            ("no-token", ""),
            ("content-type", "application/octet-stream"),
            ("authorization", &basic("root")),
        ],
        b"uploaded".to_vec(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
    let written = agent.home.join("up/signed.txt");
    assert_eq!(r.json()[0]["path"], written.display().to_string());
    assert_eq!(std::fs::read(&written).unwrap(), b"uploaded");
    if is_root() {
        assert_eq!(std::fs::metadata(&written).unwrap().uid(), TEST_UID);
    }

    // A signature does not open other endpoints.
    let r = call(
        &agent,
        "GET",
        &format!("/envs?signature={}", enc(&s)),
        &no_token,
        vec![],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn without_a_token_signatures_are_ignored() {
    let agent = Agent::start(r#"{"sandboxId":"open","envVars":{}}"#).await;
    write_fixture(&agent, "open.txt", b"open");
    let r = call(
        &agent,
        "GET",
        "/files?path=open.txt&signature=v1_whatever",
        &[("no-token", "")],
        vec![],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, b"open");
}
