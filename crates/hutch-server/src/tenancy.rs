//! Teams and what they see. Every sandbox, user-built template, build and uploaded build
//! file belongs to one team; an API key acts for one team and sees only that team's things
//! (everything else answers 404, as E2B does for another team's sandbox). An admin key sees
//! every team's. The default templates belong to nobody and every team may start them.
//!
//! Records from before teams existed carry no team: they belong to [`DEFAULT_TEAM`], as do
//! the keys of such a server.

/// The team of keys and records that name none.
pub const DEFAULT_TEAM: &str = "default";

/// What a caller sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The caller's own team: what it creates belongs to it, and names resolve in it first.
    pub team: String,
    /// Sees every team's things (an admin key, or the server's own `--api-key`).
    pub all: bool,
}

impl Scope {
    /// Everything, names resolving in the default team first: the server's own work
    /// (warm pools, restarts) and the operator's `--api-key`.
    pub fn operator() -> Self {
        Scope {
            team: DEFAULT_TEAM.to_string(),
            all: true,
        }
    }

    /// Only `team`'s things.
    pub fn team(team: &str) -> Self {
        Scope {
            team: team.to_string(),
            all: false,
        }
    }

    /// The scope of a request's caller (None: the server's own `--api-key`).
    pub fn of(caller: Option<&crate::store::Caller>) -> Self {
        caller.map_or_else(Self::operator, crate::store::Caller::scope)
    }

    /// Whether a thing owned by `owner` (None: the default team) is visible.
    pub fn sees(&self, owner: Option<&str>) -> bool {
        self.all || self.owns(owner)
    }

    /// Whether a thing owned by `owner` (None: the default team) is the caller's own team's.
    pub fn owns(&self, owner: Option<&str>) -> bool {
        owner.unwrap_or(DEFAULT_TEAM) == self.team
    }
}

/// Team names: 1 to 64 of `[a-z0-9_-]`, so they are safe as directory names and in logs.
pub fn valid_team_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_team_sees_its_own_things_and_an_admin_sees_all() {
        let a = Scope::team("a");
        assert!(a.sees(Some("a")));
        assert!(!a.sees(Some("b")));
        assert!(!a.sees(None));
        let d = Scope::team(DEFAULT_TEAM);
        assert!(
            d.sees(None),
            "records without a team are the default team's"
        );
        let admin = Scope {
            team: "a".into(),
            all: true,
        };
        assert!(admin.sees(Some("b")) && admin.sees(None));
        assert!(admin.owns(Some("a")) && !admin.owns(Some("b")));
    }

    #[test]
    fn team_names_are_safe_path_components() {
        for good in ["default", "acme", "team-2", "a_b"] {
            assert!(valid_team_name(good), "{good}");
        }
        for bad in ["", "..", "a/b", "Acme", "a b", &"x".repeat(65)] {
            assert!(!valid_team_name(bad), "{bad}");
        }
    }
}
