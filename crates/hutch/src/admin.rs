//! `hutch keys` and `hutch teams`: the API keys and teams of a data directory, managed
//! straight in its database (the server need not run; a running one sees changes at once).

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use hutch_server::store::{Store, Team};
use hutch_server::tenancy::DEFAULT_TEAM;

/// The data directory whose database `hutch keys` and `hutch teams` manage.
#[derive(clap::Args)]
pub struct DataDir {
    /// Data directory holding the database.
    #[arg(
        long,
        env = "HUTCH_DATA_DIR",
        default_value = "/var/lib/hutch",
        global = true
    )]
    pub data_dir: std::path::PathBuf,
}

#[derive(Subcommand)]
pub enum KeysAction {
    /// Create a key and print it (it is shown only this once).
    Create {
        /// A label for the key.
        #[arg(long)]
        name: Option<String>,
        /// The most sandboxes (running and paused) the key may hold at once; creating one
        /// more is refused with 429. Without it, no limit.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        max_sandboxes: Option<u32>,
        /// The team the key acts for (`hutch teams create` makes one): it sees that team's
        /// sandboxes and templates only, and what it creates belongs to the team.
        #[arg(long, default_value = DEFAULT_TEAM)]
        team: String,
        /// The key sees and manages every team's sandboxes and templates, and the warm
        /// pools.
        #[arg(long)]
        admin: bool,
    },
    /// List keys (masked).
    List,
    /// Revoke a key by its id (from `list`) or by the key itself.
    Revoke {
        /// Key id or key.
        key: String,
    },
}

#[derive(Subcommand)]
pub enum TeamsAction {
    /// Create a team, or change an existing team's limits.
    Create {
        /// Its name: lowercase letters, digits, '-' and '_'.
        name: String,
        /// The most CPUs its templates may give their sandboxes (at most the server's
        /// `--max-template-cpus`).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        max_cpu: Option<u32>,
        /// The most memory (MiB) its templates may give their sandboxes (at most the
        /// server's `--max-template-memory-mb`).
        #[arg(long, value_parser = clap::value_parser!(u64).range(128..))]
        max_memory_mb: Option<u64>,
        /// The most sandboxes (running and paused) all its keys together may hold at once;
        /// one more is refused with 429.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        max_sandboxes: Option<u32>,
    },
    /// List teams and their limits.
    List,
}

fn open(data_dir: &std::path::Path) -> Result<Store> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    Ok(Store::open(data_dir)?)
}

fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// Runs `hutch keys ...`.
pub fn keys(action: KeysAction, data_dir: &std::path::Path) -> Result<()> {
    let store = open(data_dir)?;
    match action {
        KeysAction::Create {
            name,
            max_sandboxes,
            team,
            admin,
        } => {
            let key = hutch_server::store::generate_key();
            let id = store.add_team_key(&key, name.as_deref(), max_sandboxes, &team, admin)?;
            let role = if admin { "admin key" } else { "key" };
            eprintln!("created {role} {id} for team {team} (shown only now):");
            println!("{key}");
        }
        KeysAction::List => {
            println!(
                "{:<14} {:<18} {:<26} {:<10} {:<6} {:<16} {:<6} NAME",
                "ID", "KEY", "CREATED", "STATE", "MAX", "TEAM", "ADMIN"
            );
            for k in store.list_keys()? {
                let state = if k.revoked_at.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                println!(
                    "{:<14} {:<18} {:<26} {:<10} {:<6} {:<16} {:<6} {}",
                    k.id,
                    k.mask,
                    k.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
                    state,
                    or_dash(k.max_sandboxes),
                    k.team,
                    if k.admin { "yes" } else { "no" },
                    k.name.unwrap_or_default()
                );
            }
        }
        KeysAction::Revoke { key } => {
            if !store.revoke_key(&key)? {
                bail!("no active key with id or value {key:?} (see `hutch keys list`)");
            }
            println!("revoked");
        }
    }
    Ok(())
}

/// Runs `hutch teams ...`.
pub fn teams(action: TeamsAction, data_dir: &std::path::Path) -> Result<()> {
    let store = open(data_dir)?;
    match action {
        TeamsAction::Create {
            name,
            max_cpu,
            max_memory_mb,
            max_sandboxes,
        } => {
            let new = store.put_team(&Team {
                name: name.clone(),
                max_cpu,
                max_memory_mb,
                max_sandboxes,
            })?;
            let what = if new { "created" } else { "updated" };
            println!("{what} team {name}; give it keys with `hutch keys create --team {name}`");
        }
        TeamsAction::List => {
            println!(
                "{:<24} {:<8} {:<14} MAX SANDBOXES",
                "TEAM", "MAX CPU", "MAX MEMORY MB"
            );
            for t in store.teams()? {
                println!(
                    "{:<24} {:<8} {:<14} {}",
                    t.name,
                    or_dash(t.max_cpu),
                    or_dash(t.max_memory_mb),
                    or_dash(t.max_sandboxes)
                );
            }
        }
    }
    Ok(())
}
