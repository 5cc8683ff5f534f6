//! Signed file URLs (`sandbox.download_url()` / `upload_url()`): a request that carries a valid
//! signature needs no `X-Access-Token`.
//!
//! The SDK signs `"<path>:<read|write>:<username or empty>:<access token>[:<expiration>]"` with
//! SHA-256 and sends `"v1_" + base64(digest)` without padding, plus the expiration (unix seconds)
//! when it set one. `path` and `username` are the query parameters exactly as sent: an empty
//! username means "the default user", and a signature for one user is not valid for another.

use base64::Engine as _;
use hutch_contracts::auth::constant_time_eq;
use sha2::{Digest, Sha256};

/// Which way a signed URL may move a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `GET /files`.
    Read,
    /// `POST /files`.
    Write,
}

impl Operation {
    /// The operation's name inside the signed string.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::Write => "write",
        }
    }
}

/// Why a request was not authorised; the messages are envd's, which clients may match on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The request has neither an access token nor a signature.
    #[error("missing signature query parameter")]
    Missing,
    /// The signature does not match.
    #[error("invalid signature")]
    Invalid,
    /// The signature matches but its expiration has passed.
    #[error("signature is already expired")]
    Expired,
    /// An `X-Access-Token` header was sent but is wrong.
    #[error("access token present in header but does not match")]
    WrongToken,
}

/// The signature the SDK computes for these inputs (`v1_` + unpadded base64 of SHA-256).
pub fn sign(
    path: &str,
    operation: Operation,
    username: &str,
    access_token: &str,
    expiration: Option<i64>,
) -> String {
    let mut hasher = Sha256::new();
    hasher.update(path.as_bytes());
    hasher.update(b":");
    hasher.update(operation.as_str().as_bytes());
    hasher.update(b":");
    hasher.update(username.as_bytes());
    hasher.update(b":");
    hasher.update(access_token.as_bytes());
    if let Some(expiration) = expiration {
        hasher.update(b":");
        hasher.update(expiration.to_string().as_bytes());
    }
    let digest = hasher.finalize();
    format!(
        "v1_{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    )
}

/// Checks a signed request. `now` is the current unix time in seconds.
///
/// The signature is compared before the expiration, so a forged URL learns nothing from the
/// "expired" answer.
pub fn verify(
    signature: Option<&str>,
    path: &str,
    operation: Operation,
    username: &str,
    access_token: &str,
    expiration: Option<i64>,
    now: i64,
) -> Result<(), SignatureError> {
    let presented = signature.ok_or(SignatureError::Missing)?;
    let expected = sign(path, operation, username, access_token, expiration);
    if !constant_time_eq(presented.as_bytes(), expected.as_bytes()) {
        return Err(SignatureError::Invalid);
    }
    match expiration {
        Some(at) if at < now => Err(SignatureError::Expired),
        _ => Ok(()),
    }
}

/// The current unix time in seconds (0 if the clock is before 1970).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_sdk() {
        // python3 -c 'from e2b.sandbox.signature import get_signature as g;
        //   print(g("/home/user/a.txt","read","user","tok",None))'
        let s = sign("/home/user/a.txt", Operation::Read, "user", "tok", None);
        let mut h = Sha256::new();
        h.update(b"/home/user/a.txt:read:user:tok");
        let want = format!(
            "v1_{}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(h.finalize())
        );
        assert_eq!(s, want);
        assert!(!s.ends_with('='));
    }

    #[test]
    fn verifies_and_expires() {
        let sig = sign("a", Operation::Write, "", "t", Some(100));
        assert_eq!(
            verify(Some(&sig), "a", Operation::Write, "", "t", Some(100), 50),
            Ok(())
        );
        assert_eq!(
            verify(Some(&sig), "a", Operation::Write, "", "t", Some(100), 101),
            Err(SignatureError::Expired)
        );
        assert_eq!(
            verify(Some(&sig), "a", Operation::Read, "", "t", Some(100), 50),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            verify(
                Some(&sig),
                "a",
                Operation::Write,
                "root",
                "t",
                Some(100),
                50
            ),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            verify(None, "a", Operation::Write, "", "t", None, 50),
            Err(SignatureError::Missing)
        );
    }
}
