//! The list call: filters by state, metadata, template and start time; pages by a cursor.

use chrono::{DateTime, Utc};

use super::{lock, Invalid, Result, Service};
use crate::sandbox::{SandboxRecord, SandboxState};

/// Filters of the list call.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Every pair must match.
    pub metadata: Vec<(String, String)>,
    /// Allowed states (empty = all).
    pub states: Vec<SandboxState>,
    /// Template name or id.
    pub template: Option<String>,
    /// Only sandboxes started after this time.
    pub started_after: Option<DateTime<Utc>>,
    /// Oldest first instead of newest first.
    pub ascending: bool,
    /// Page size (None = everything).
    pub limit: Option<usize>,
    /// Cursor from the previous page.
    pub next_token: Option<String>,
    /// Only sandboxes this caller sees (None = every sandbox).
    pub scope: Option<crate::tenancy::Scope>,
}

impl ListQuery {
    /// True when `r` passes every filter.
    fn matches(&self, r: &SandboxRecord) -> bool {
        self.scope
            .as_ref()
            .is_none_or(|s| s.sees(r.team.as_deref()))
            && (self.states.is_empty() || self.states.contains(&r.state))
            && self
                .metadata
                .iter()
                .all(|(k, v)| r.metadata.get(k) == Some(v))
            && self.template.as_ref().is_none_or(|t| {
                let t = t.split(':').next().unwrap_or(t);
                r.template_id == t || r.alias.as_deref() == Some(t)
            })
            && self.started_after.is_none_or(|t| r.started_at > t)
    }
}

/// A record's place in the total order the cursor walks.
fn order_key(r: &SandboxRecord) -> (i64, String) {
    (
        r.started_at.timestamp_nanos_opt().unwrap_or(0),
        r.id.clone(),
    )
}

/// One page of `recs` (already filtered) and the token of the next, if any.
pub fn page(
    mut recs: Vec<SandboxRecord>,
    q: &ListQuery,
) -> Result<(Vec<SandboxRecord>, Option<String>)> {
    // Newest first by default; ties broken by id so the order (and the cursor) is total.
    recs.sort_by(|a, b| {
        b.started_at
            .cmp(&a.started_at)
            .then_with(|| b.id.cmp(&a.id))
    });
    if q.ascending {
        recs.reverse();
    }
    if let Some(tok) = &q.next_token {
        let after = decode_token(tok).ok_or_else(|| Invalid::NextToken(tok.clone()))?;
        recs.retain(|r| {
            if q.ascending {
                order_key(r) > after
            } else {
                order_key(r) < after
            }
        });
    }
    let mut next = None;
    if let Some(limit) = q.limit {
        if recs.len() > limit {
            recs.truncate(limit);
            next = recs.last().map(|r| {
                let (ts, id) = order_key(r);
                encode_token(ts, &id)
            });
        }
    }
    Ok((recs, next))
}

impl Service {
    /// Lists sandboxes; returns one page and the token of the next (if any).
    pub fn list(&self, q: &ListQuery) -> Result<(Vec<SandboxRecord>, Option<String>)> {
        let recs: Vec<SandboxRecord> = lock(&self.live)
            .values()
            .map(|e| e.record())
            .filter(|r| q.matches(r))
            .collect();
        page(recs, q)
    }
}

fn encode_token(ts: i64, id: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{ts}.{id}"))
}

fn decode_token(tok: &str) -> Option<(i64, String)> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(tok)
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (ts, id) = s.split_once('.')?;
    Some((ts.parse().ok()?, id.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trips() {
        let t = encode_token(1_700_000_000_123_456_789, "abc123");
        assert_eq!(
            decode_token(&t),
            Some((1_700_000_000_123_456_789, "abc123".to_string()))
        );
        assert_eq!(decode_token("!!"), None);
    }

    #[test]
    fn garbage_token_is_a_bad_request() {
        let q = ListQuery {
            next_token: Some("!!".into()),
            ..ListQuery::default()
        };
        let err = page(Vec::new(), &q).unwrap_err();
        assert_eq!(err.to_string(), "invalid nextToken \"!!\"");
    }
}
