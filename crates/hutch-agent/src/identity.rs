//! What a sandbox is told at create time: its environment variables and access token.
//!
//! A cold sandbox knows both from its start-up configuration. A sandbox waiting in a warm
//! pool starts with its template's variables and a one-off pool token, and learns the rest
//! when a create claims it (`POST /hutch/claim`); from then on every service sees the new
//! values, as if they had been there from the start.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// The environment variables every process gets (by name).
pub type Env = BTreeMap<String, String>;

#[derive(Debug, Default)]
struct Values {
    env: Arc<Env>,
    token: Option<Arc<str>>,
}

/// The sandbox's current variables and token, shared by every service; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Identity(Arc<RwLock<Values>>);

impl Identity {
    /// An identity with `env` and, when the sandbox has one, its access `token`.
    pub fn new(env: Env, token: Option<&str>) -> Self {
        Identity(Arc::new(RwLock::new(Values {
            env: Arc::new(env),
            token: token.map(Arc::from),
        })))
    }

    /// The sandbox-wide environment variables.
    pub fn env(&self) -> Arc<Env> {
        Arc::clone(&self.read().env)
    }

    /// The access token every request but `GET /health` must carry, if any.
    pub fn token(&self) -> Option<Arc<str>> {
        self.read().token.clone()
    }

    /// Replaces both: what a claim does.
    pub fn set(&self, env: Env, token: Option<&str>) {
        let mut values = self.0.write().unwrap_or_else(|p| p.into_inner());
        values.env = Arc::new(env);
        values.token = token.map(Arc::from);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Values> {
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_is_seen_by_every_clone() {
        let identity = Identity::new(Env::from([("A".into(), "1".into())]), Some("pool"));
        let seen_by_a_service = identity.clone();
        identity.set(Env::from([("B".into(), "2".into())]), None);
        assert_eq!(
            seen_by_a_service.env().get("B").map(String::as_str),
            Some("2")
        );
        assert!(!seen_by_a_service.env().contains_key("A"));
        assert!(seen_by_a_service.token().is_none());
    }
}
