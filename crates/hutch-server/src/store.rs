//! Durable state in SQLite: API keys (hashes only) and sandbox records.
//!
//! Sandbox records are stored as JSON documents keyed by id: the server keeps the live
//! set in memory and writes through, and a restarted server reads them back to find its
//! running sandboxes again.

use std::path::Path;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use rand::RngCore;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::sandbox::SandboxRecord;
use crate::tenancy::DEFAULT_TEAM;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
    /// A stored record could not be decoded.
    #[error("corrupt record {id}: {source}")]
    Corrupt {
        /// The record's id.
        id: String,
        /// Why it did not decode.
        #[source]
        source: serde_json::Error,
    },
    /// No team has this name.
    #[error("no team named {0:?}: create it with `hutch teams create`")]
    NoTeam(String),
    /// A team name that is not allowed.
    #[error("invalid team name {0:?}: use 1 to 64 lowercase letters, digits, '-' and '_'")]
    TeamName(String),
}

impl StoreError {
    /// SQLite found the disk full (`SQLITE_FULL`): worth another try once space returns.
    pub fn is_disk_full(&self) -> bool {
        matches!(
            self,
            StoreError::Sql(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DiskFull
        )
    }
}

/// Result of store operations.
pub type Result<T> = std::result::Result<T, StoreError>;

/// An API key as listed (never the key itself).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiKeyInfo {
    /// Stable id.
    pub id: String,
    /// The key with all but its first and last characters hidden.
    pub mask: String,
    /// Optional label.
    pub name: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
    /// How many sandboxes (running or paused) the key may hold at once; None = no limit.
    pub max_sandboxes: Option<u32>,
    /// The team the key belongs to.
    pub team: String,
    /// Whether the key sees every team's sandboxes and templates.
    pub admin: bool,
    /// Its length in characters (None for keys stored before it was kept).
    #[serde(default)]
    pub key_length: Option<usize>,
}

/// A team: the owner of sandboxes and templates, with the keys that act for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Team {
    /// Its name (also its id).
    pub name: String,
    /// The most CPUs a template of the team may ask for; None = the operator's ceiling.
    pub max_cpu: Option<u32>,
    /// The most memory (MiB) a template of the team may ask for; None = the operator's
    /// ceiling.
    pub max_memory_mb: Option<u64>,
    /// How many sandboxes (running or paused) all its keys together may hold; None = no
    /// limit.
    pub max_sandboxes: Option<u32>,
}

/// The columns [`Team::from_row`] reads, in its order.
const TEAM_COLUMNS: &str = "t.name, t.max_cpu, t.max_memory_mb, t.max_sandboxes";

impl Team {
    /// A team from the [`TEAM_COLUMNS`] of a row, starting at column `first`.
    fn from_row(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Self> {
        Ok(Team {
            name: r.get(first)?,
            max_cpu: r.get(first + 1)?,
            max_memory_mb: r.get(first + 2)?,
            max_sandboxes: r.get(first + 3)?,
        })
    }
}

/// A valid key, as the API sees its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The key's id (`hutch keys list`); sandboxes remember which key made them.
    pub key_id: String,
    /// How many sandboxes the key may hold at once; None = no limit.
    pub max_sandboxes: Option<u32>,
    /// The team it acts for: what it creates belongs to that team.
    pub team: Team,
    /// Sees (and may act on) every team's sandboxes and templates.
    pub admin: bool,
}

impl Caller {
    /// What this caller may see: its team's things, or everything for an admin.
    pub fn scope(&self) -> crate::tenancy::Scope {
        crate::tenancy::Scope {
            team: self.team.name.clone(),
            all: self.admin,
        }
    }
}

/// The SQLite database of one data directory.
pub struct Store {
    conn: Mutex<Connection>,
}

/// 2 added `api_keys.max_sandboxes`; 3 added `templates` (user-built templates); 4 added
/// `teams` and each key's team and admin flag (keys from before belong to the default team);
/// 5 added `api_keys.key_length`.
const SCHEMA_VERSION: i64 = 5;

/// The id of `key`: the start of its hash, stable and safe to show.
pub fn key_id(key: &str) -> String {
    hash_key(key)[..12].to_string()
}

/// Hex SHA-256 of an API key: what is stored and compared.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A new random API key in E2B's format (`e2b_` + 40 hex characters).
pub fn generate_key() -> String {
    let mut b = [0u8; 20];
    rand::thread_rng().fill_bytes(&mut b);
    format!("e2b_{}", hex::encode(b))
}

/// Whether `table` has `column` (databases of older versions lack some).
fn has_column(conn: &Connection, table: &str, column: &str) -> Result<bool> {
    let n: i64 = conn.query_row(
        "SELECT count(*) FROM pragma_table_info(?1) WHERE name = ?2",
        params![table, column],
        |r| r.get(0),
    )?;
    Ok(n > 0)
}

fn mask(key: &str) -> String {
    let n = key.len();
    if n <= 10 {
        return "*".repeat(n);
    }
    format!("{}…{}", &key[..8], &key[n - 4..])
}

impl Store {
    /// Opens (creating if needed) `hutch.db` in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self> {
        let conn = Connection::open(data_dir.join("hutch.db"))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=NORMAL;
             CREATE TABLE IF NOT EXISTS api_keys (
                 id TEXT PRIMARY KEY,
                 hash TEXT NOT NULL UNIQUE,
                 mask TEXT NOT NULL,
                 name TEXT,
                 created_at TEXT NOT NULL,
                 revoked_at TEXT
             );
             CREATE TABLE IF NOT EXISTS sandboxes (
                 id TEXT PRIMARY KEY,
                 record TEXT NOT NULL
             );
             CREATE TABLE IF NOT EXISTS templates (
                 id TEXT PRIMARY KEY,
                 record TEXT NOT NULL
             );
             CREATE TABLE IF NOT EXISTS volumes (
                 id TEXT PRIMARY KEY,
                 record TEXT NOT NULL
             );
             CREATE TABLE IF NOT EXISTS pools (
                 template TEXT PRIMARY KEY,
                 min INTEGER NOT NULL,
                 max INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS teams (
                 name TEXT PRIMARY KEY,
                 created_at TEXT NOT NULL,
                 max_cpu INTEGER,
                 max_memory_mb INTEGER,
                 max_sandboxes INTEGER
             );",
        )?;
        conn.execute(
            "INSERT OR IGNORE INTO teams (name, created_at) VALUES (?1, ?2)",
            params![DEFAULT_TEAM, Utc::now().to_rfc3339()],
        )?;
        // Databases made before version 2 lack the per-key limit: add it (NULL = no limit).
        if !has_column(&conn, "api_keys", "max_sandboxes")? {
            conn.execute_batch("ALTER TABLE api_keys ADD COLUMN max_sandboxes INTEGER")?;
        }
        if !has_column(&conn, "teams", "max_sandboxes")? {
            conn.execute_batch("ALTER TABLE teams ADD COLUMN max_sandboxes INTEGER")?;
        }
        // Before version 4 there was one tenant: its keys join the default team.
        if !has_column(&conn, "api_keys", "team")? {
            conn.execute_batch(
                "ALTER TABLE api_keys ADD COLUMN team TEXT NOT NULL DEFAULT 'default';
                 ALTER TABLE api_keys ADD COLUMN admin INTEGER NOT NULL DEFAULT 0;",
            )?;
        }
        // Version 5 remembers each key's length, for the masks the key API shows.
        if !has_column(&conn, "api_keys", "key_length")? {
            conn.execute_batch("ALTER TABLE api_keys ADD COLUMN key_length INTEGER")?;
        }
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent: keep going.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores a new key's hash, with the most sandboxes it may hold at once, in the default
    /// team; returns its id.
    pub fn add_key(
        &self,
        key: &str,
        name: Option<&str>,
        max_sandboxes: Option<u32>,
    ) -> Result<String> {
        self.add_team_key(key, name, max_sandboxes, DEFAULT_TEAM, false)
    }

    /// Stores a new key's hash for `team` (which must exist), admin or not; returns its id.
    pub fn add_team_key(
        &self,
        key: &str,
        name: Option<&str>,
        max_sandboxes: Option<u32>,
        team: &str,
        admin: bool,
    ) -> Result<String> {
        if self.team(team)?.is_none() {
            return Err(StoreError::NoTeam(team.to_string()));
        }
        let id = key_id(key);
        self.conn().execute(
            "INSERT OR IGNORE INTO api_keys (id, hash, mask, name, created_at, max_sandboxes, team, admin, key_length)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![id, hash_key(key), mask(key), name, Utc::now().to_rfc3339(), max_sandboxes, team, admin, key.len()],
        )?;
        Ok(id)
    }

    /// The caller `key` identifies, if it is a stored, unrevoked key.
    pub fn caller(&self, key: &str) -> Result<Option<Caller>> {
        Ok(self
            .conn()
            .query_row(
                &format!(
                    "SELECT k.id, k.max_sandboxes, k.admin, {TEAM_COLUMNS}
                     FROM api_keys k JOIN teams t ON t.name = k.team
                     WHERE k.hash = ?1 AND k.revoked_at IS NULL"
                ),
                params![hash_key(key)],
                |r| {
                    Ok(Caller {
                        key_id: r.get(0)?,
                        max_sandboxes: r.get(1)?,
                        admin: r.get(2)?,
                        team: Team::from_row(r, 3)?,
                    })
                },
            )
            .optional()?)
    }

    /// Creates a team, or changes the limits of an existing one; returns whether it is new.
    pub fn put_team(&self, team: &Team) -> Result<bool> {
        if !crate::tenancy::valid_team_name(&team.name) {
            return Err(StoreError::TeamName(team.name.clone()));
        }
        let conn = self.conn();
        let new = conn.execute(
            "INSERT OR IGNORE INTO teams (name, created_at) VALUES (?1, ?2)",
            params![team.name, Utc::now().to_rfc3339()],
        )? > 0;
        conn.execute(
            "UPDATE teams SET max_cpu = ?2, max_memory_mb = ?3, max_sandboxes = ?4 WHERE name = ?1",
            params![
                team.name,
                team.max_cpu,
                team.max_memory_mb,
                team.max_sandboxes
            ],
        )?;
        Ok(new)
    }

    /// The team with this name.
    pub fn team(&self, name: &str) -> Result<Option<Team>> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {TEAM_COLUMNS} FROM teams t WHERE t.name = ?1"),
                params![name],
                |r| Team::from_row(r, 0),
            )
            .optional()?)
    }

    /// Every team, by name.
    pub fn teams(&self) -> Result<Vec<Team>> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!(
            "SELECT {TEAM_COLUMNS} FROM teams t ORDER BY t.name"
        ))?;
        let rows = st.query_map([], |r| Team::from_row(r, 0))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Every key, newest first.
    pub fn list_keys(&self) -> Result<Vec<ApiKeyInfo>> {
        self.keys_where("1", [])
    }

    /// The unrevoked keys of `team`, newest first.
    pub fn team_keys(&self, team: &str) -> Result<Vec<ApiKeyInfo>> {
        self.keys_where("team = ?1 AND revoked_at IS NULL", [team])
    }

    /// The key with this id, revoked or not.
    pub fn key(&self, id: &str) -> Result<Option<ApiKeyInfo>> {
        Ok(self.keys_where("id = ?1", [id])?.pop())
    }

    /// The keys matching the SQL condition `filter` over `args`, newest first.
    fn keys_where<const N: usize>(&self, filter: &str, args: [&str; N]) -> Result<Vec<ApiKeyInfo>> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!(
            "SELECT id, mask, name, created_at, revoked_at, max_sandboxes, team, admin, key_length
             FROM api_keys WHERE {filter} ORDER BY created_at DESC"
        ))?;
        let rows = st.query_map(rusqlite::params_from_iter(args), |r| {
            let created: String = r.get(3)?;
            let revoked: Option<String> = r.get(4)?;
            Ok(ApiKeyInfo {
                id: r.get(0)?,
                mask: r.get(1)?,
                name: r.get(2)?,
                created_at: DateTime::parse_from_rfc3339(&created)
                    .map(|d| d.with_timezone(&Utc))
                    .unwrap_or_default(),
                revoked_at: revoked
                    .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
                    .map(|d| d.with_timezone(&Utc)),
                max_sandboxes: r.get(5)?,
                team: r.get(6)?,
                admin: r.get(7)?,
                key_length: r.get(8)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Renames the unrevoked key `id` of `team`; false when it has no such key.
    pub fn rename_key(&self, team: &str, id: &str, name: &str) -> Result<bool> {
        let n = self.conn().execute(
            "UPDATE api_keys SET name = ?3 WHERE id = ?2 AND team = ?1 AND revoked_at IS NULL",
            params![team, id, name],
        )?;
        Ok(n > 0)
    }

    /// Revokes the key `id` of `team`; false when it has no such unrevoked key.
    pub fn revoke_team_key(&self, team: &str, id: &str) -> Result<bool> {
        let n = self.conn().execute(
            "UPDATE api_keys SET revoked_at = ?3 WHERE id = ?2 AND team = ?1 AND revoked_at IS NULL",
            params![team, id, Utc::now().to_rfc3339()],
        )?;
        Ok(n > 0)
    }

    /// Number of unrevoked keys.
    pub fn active_keys(&self) -> Result<i64> {
        Ok(self.conn().query_row(
            "SELECT count(*) FROM api_keys WHERE revoked_at IS NULL",
            [],
            |r| r.get(0),
        )?)
    }

    /// Revokes the key with this id (or this exact key). Returns false if none matched.
    pub fn revoke_key(&self, id_or_key: &str) -> Result<bool> {
        let n = self.conn().execute(
            "UPDATE api_keys SET revoked_at = ?1 WHERE (id = ?2 OR hash = ?3) AND revoked_at IS NULL",
            params![Utc::now().to_rfc3339(), id_or_key, hash_key(id_or_key)],
        )?;
        Ok(n > 0)
    }

    /// Inserts or replaces a sandbox record.
    pub fn put_sandbox(&self, rec: &SandboxRecord) -> Result<()> {
        self.put_record("sandboxes", &rec.id, rec)
    }

    /// Deletes a sandbox record.
    pub fn delete_sandbox(&self, id: &str) -> Result<()> {
        self.delete_record("sandboxes", id)
    }

    /// Inserts or replaces a user-built template.
    pub fn put_template(&self, rec: &crate::templates::TemplateRecord) -> Result<()> {
        self.put_record("templates", &rec.id, rec)
    }

    /// Saves the warm pool sizes of `template` (set through the API).
    pub fn put_pool(&self, template: &str, size: crate::service::pool::PoolSize) -> Result<()> {
        self.conn().execute(
            "INSERT INTO pools (template, min, max) VALUES (?1, ?2, ?3)
             ON CONFLICT(template) DO UPDATE SET min = ?2, max = ?3",
            params![template, size.min, size.max],
        )?;
        Ok(())
    }

    /// Forgets the saved pool sizes of `template`.
    pub fn delete_pool(&self, template: &str) -> Result<()> {
        self.conn()
            .execute("DELETE FROM pools WHERE template = ?1", params![template])?;
        Ok(())
    }

    /// Every saved pool size, by template.
    pub fn pools(
        &self,
    ) -> Result<std::collections::BTreeMap<String, crate::service::pool::PoolSize>> {
        let conn = self.conn();
        let mut st = conn.prepare("SELECT template, min, max FROM pools")?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                crate::service::pool::PoolSize {
                    min: r.get(1)?,
                    max: r.get(2)?,
                },
            ))
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Deletes a user-built template.
    pub fn delete_template(&self, id: &str) -> Result<()> {
        self.delete_record("templates", id)
    }

    /// Stores (or replaces) a volume's record.
    pub fn put_volume(&self, rec: &crate::volumes::VolumeRecord) -> Result<()> {
        self.put_record("volumes", &rec.id, rec)
    }

    /// Forgets a volume.
    pub fn delete_volume(&self, id: &str) -> Result<()> {
        self.delete_record("volumes", id)
    }

    /// The volume `id`, if there is one (and its record decodes).
    pub fn volume(&self, id: &str) -> Result<Option<crate::volumes::VolumeRecord>> {
        let json: Option<String> = self
            .conn()
            .query_row(
                "SELECT record FROM volumes WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()?;
        Ok(json.and_then(|j| match serde_json::from_str(&j) {
            Ok(rec) => Some(rec),
            Err(e) => {
                tracing::warn!(volume = %id, error = %e, "undecodable volume record");
                None
            }
        }))
    }

    /// Every volume; undecodable records are skipped with a warning.
    pub fn volumes(&self) -> Result<Vec<crate::volumes::VolumeRecord>> {
        Ok(self.records("volumes")?.0)
    }

    /// Every user-built template; undecodable records are skipped with a warning.
    pub fn templates(&self) -> Result<Vec<crate::templates::TemplateRecord>> {
        Ok(self.records("templates")?.0)
    }

    /// Every stored sandbox record; undecodable ones are returned as ids to clean up.
    pub fn sandboxes(&self) -> Result<(Vec<SandboxRecord>, Vec<String>)> {
        self.records("sandboxes")
    }

    /// Inserts or replaces `rec`, as JSON, under `id` in the record table `table` (one of
    /// this file's constant names).
    fn put_record<T: Serialize>(&self, table: &str, id: &str, rec: &T) -> Result<()> {
        let json = serde_json::to_string(rec).map_err(|e| StoreError::Corrupt {
            id: id.to_string(),
            source: e,
        })?;
        self.conn().execute(
            &format!(
                "INSERT INTO {table} (id, record) VALUES (?1, ?2) ON CONFLICT(id) DO UPDATE SET record = ?2"
            ),
            params![id, json],
        )?;
        Ok(())
    }

    /// Deletes `id` from the record table `table`.
    fn delete_record(&self, table: &str, id: &str) -> Result<()> {
        self.conn()
            .execute(&format!("DELETE FROM {table} WHERE id = ?1"), params![id])?;
        Ok(())
    }

    /// Every record of the record table `table`, and the ids of those that do not decode
    /// (each logged).
    fn records<T: serde::de::DeserializeOwned>(
        &self,
        table: &str,
    ) -> Result<(Vec<T>, Vec<String>)> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!("SELECT id, record FROM {table}"))?;
        let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for row in rows {
            let (id, json) = row?;
            match serde_json::from_str(&json) {
                Ok(rec) => good.push(rec),
                Err(e) => {
                    tracing::warn!(table, id = %id, error = %e, "undecodable record");
                    bad.push(id)
                }
            }
        }
        Ok((good, bad))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("hutch-store-{}", generate_key()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn a_key_remembers_its_sandbox_limit_and_stops_working_when_revoked() {
        let dir = temp_dir();
        let store = Store::open(&dir).expect("open");
        let limited = generate_key();
        let open = generate_key();
        let id = store.add_key(&limited, Some("ci"), Some(2)).expect("add");
        store.add_key(&open, None, None).expect("add");
        assert_eq!(
            store.caller(&limited).expect("read"),
            Some(Caller {
                key_id: id.clone(),
                max_sandboxes: Some(2),
                team: Team {
                    name: DEFAULT_TEAM.into(),
                    max_cpu: None,
                    max_memory_mb: None,
                    max_sandboxes: None,
                },
                admin: false,
            })
        );
        assert_eq!(
            store
                .caller(&open)
                .expect("read")
                .and_then(|c| c.max_sandboxes),
            None
        );
        assert_eq!(store.caller("e2b_unknown").expect("read"), None);
        assert!(store.revoke_key(&id).expect("revoke"));
        assert_eq!(store.caller(&limited).expect("read"), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_version_1_database_gains_the_limit_column_and_keeps_its_keys() {
        let dir = temp_dir();
        let key = generate_key();
        {
            let conn = Connection::open(dir.join("hutch.db")).expect("db");
            conn.execute_batch(
                "CREATE TABLE api_keys (id TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE, mask TEXT NOT NULL,
                     name TEXT, created_at TEXT NOT NULL, revoked_at TEXT);
                 CREATE TABLE sandboxes (id TEXT PRIMARY KEY, record TEXT NOT NULL);
                 PRAGMA user_version = 1;",
            )
            .expect("old schema");
            conn.execute(
                "INSERT INTO api_keys (id, hash, mask, name, created_at) VALUES (?1, ?2, 'm', NULL, ?3)",
                params![key_id(&key), hash_key(&key), Utc::now().to_rfc3339()],
            )
            .expect("old key");
        }
        let store = Store::open(&dir).expect("migrate");
        let caller = store.caller(&key).expect("read").expect("key kept");
        assert_eq!(caller.max_sandboxes, None);
        assert_eq!(store.list_keys().expect("list").len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn keys_belong_to_teams_and_an_old_database_puts_its_keys_in_the_default_team() {
        let dir = temp_dir();
        let key = generate_key();
        {
            let conn = Connection::open(dir.join("hutch.db")).expect("db");
            conn.execute_batch(
                "CREATE TABLE api_keys (id TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE, mask TEXT NOT NULL,
                     name TEXT, created_at TEXT NOT NULL, revoked_at TEXT, max_sandboxes INTEGER);
                 PRAGMA user_version = 3;",
            )
            .expect("old schema");
            conn.execute(
                "INSERT INTO api_keys (id, hash, mask, name, created_at) VALUES (?1, ?2, 'm', NULL, ?3)",
                params![key_id(&key), hash_key(&key), Utc::now().to_rfc3339()],
            )
            .expect("old key");
        }
        let store = Store::open(&dir).expect("migrate");
        let old = store.caller(&key).expect("read").expect("key kept");
        assert_eq!((old.team.name.as_str(), old.admin), (DEFAULT_TEAM, false));

        let other = generate_key();
        let err = store
            .add_team_key(&other, None, None, "acme", false)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "no team named \"acme\": create it with `hutch teams create`"
        );
        let acme = Team {
            name: "acme".into(),
            max_cpu: Some(2),
            max_memory_mb: Some(2048),
            max_sandboxes: Some(3),
        };
        assert!(store.put_team(&acme).expect("team"));
        assert!(!store.put_team(&acme).expect("same team again"));
        assert!(store
            .put_team(&Team {
                name: "../x".into(),
                max_cpu: None,
                max_memory_mb: None,
                max_sandboxes: None,
            })
            .is_err());
        store
            .add_team_key(&other, Some("ci"), None, "acme", true)
            .expect("key");
        let c = store.caller(&other).expect("read").expect("key");
        assert_eq!(c.team, acme);
        assert!(c.admin && c.scope().all);
        let names: Vec<String> = store
            .teams()
            .expect("list")
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(names, ["acme", DEFAULT_TEAM]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
