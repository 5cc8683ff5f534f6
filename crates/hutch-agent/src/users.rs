//! Looking users up in the sandbox's own `/etc/passwd` and `/etc/group`.
//!
//! The files are read directly instead of through libc's NSS: the agent must not depend on the
//! sandbox image's NSS configuration or on the C library it was linked against, and reading on
//! every lookup picks up users a command created a moment ago (`useradd`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The default user of sandboxes whose template names none.
pub const DEFAULT_USER: &str = "user";

static DEFAULTS: OnceLock<(Option<String>, Option<PathBuf>)> = OnceLock::new();

/// Sets the sandbox's default user and working directory (a custom template's last USER and
/// WORKDIR); once, at start.
pub fn set_defaults(user: Option<String>, workdir: Option<String>) {
    let user = user.filter(|u| !u.is_empty());
    let workdir = workdir.filter(|w| w.starts_with('/')).map(PathBuf::from);
    let _ = DEFAULTS.set((user, workdir));
}

/// The sandbox's default user: what a request without an `Authorization` header runs as.
pub fn default_user() -> &'static str {
    DEFAULTS
        .get()
        .and_then(|d| d.0.as_deref())
        .unwrap_or(DEFAULT_USER)
}

/// The working directory of processes started without one, when the template set it.
pub fn default_workdir() -> Option<&'static Path> {
    DEFAULTS.get().and_then(|d| d.1.as_deref())
}

/// A user a process can run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Login name.
    pub name: String,
    /// Numeric user id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory: the default working directory and `$HOME`.
    pub home: PathBuf,
    /// Primary group plus every group that lists the user as a member (what `initgroups` sets).
    pub groups: Vec<u32>,
}

impl User {
    /// Makes the calling thread act on the filesystem as this user until the guard drops:
    /// what the files and filesystem APIs do for a request, so a user reaches only what its
    /// own permissions allow (a symlink to a root-only file included) and what it creates is
    /// its own.
    pub fn acting(&self) -> std::io::Result<hutch_sys::creds::FsIdentity> {
        hutch_sys::creds::FsIdentity::assume(self.uid, self.gid, &self.groups)
            .map_err(std::io::Error::from)
    }
}

/// Why a user could not be looked up.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// No line of the passwd file names the user.
    #[error("user '{0}' does not exist in the sandbox's passwd database")]
    Unknown(String),
    /// The passwd file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file that failed.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Where user and group entries are read from.
#[derive(Debug, Clone)]
pub struct UserDb {
    passwd: PathBuf,
    group: PathBuf,
}

impl Default for UserDb {
    fn default() -> Self {
        Self::new("/etc/passwd", "/etc/group")
    }
}

impl UserDb {
    /// A database backed by the given passwd and group files.
    pub fn new(passwd: impl Into<PathBuf>, group: impl Into<PathBuf>) -> Self {
        Self {
            passwd: passwd.into(),
            group: group.into(),
        }
    }

    /// Looks `name` up, with its supplementary groups.
    pub fn lookup(&self, name: &str) -> Result<User, UserError> {
        let passwd = read(&self.passwd)?;
        let mut user = passwd
            .lines()
            .filter_map(parse_passwd_line)
            .find(|u| u.name == name)
            .ok_or_else(|| UserError::Unknown(name.to_owned()))?;
        // A missing or unreadable group file only costs supplementary groups; the user can still
        // run commands with their primary group.
        if let Ok(group) = std::fs::read_to_string(&self.group) {
            for gid in group
                .lines()
                .filter_map(|line| member_gid(line, name))
                .filter(|gid| *gid != user.gid)
            {
                if !user.groups.contains(&gid) {
                    user.groups.push(gid);
                }
            }
        }
        Ok(user)
    }
}

fn read(path: &Path) -> Result<String, UserError> {
    std::fs::read_to_string(path).map_err(|source| UserError::Read {
        path: path.to_owned(),
        source,
    })
}

/// `name:passwd:uid:gid:gecos:home:shell`
fn parse_passwd_line(line: &str) -> Option<User> {
    if line.starts_with('#') {
        return None;
    }
    let fields: Vec<&str> = line.split(':').collect();
    if fields.len() < 7 {
        return None;
    }
    let uid = fields[2].parse().ok()?;
    let gid = fields[3].parse().ok()?;
    Some(User {
        name: fields[0].to_owned(),
        uid,
        gid,
        home: PathBuf::from(fields[5]),
        groups: vec![gid],
    })
}

/// The gid of a `name:passwd:gid:member,member` line that lists `user` as a member.
fn member_gid(line: &str, user: &str) -> Option<u32> {
    if line.starts_with('#') {
        return None;
    }
    let fields: Vec<&str> = line.split(':').collect();
    if fields.len() < 4 {
        return None;
    }
    fields[3]
        .split(',')
        .any(|m| m.trim() == user)
        .then(|| fields[2].parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_user_with_supplementary_groups() {
        let dir = std::env::temp_dir().join(format!("hutch-users-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("passwd"),
            "root:x:0:0:root:/root:/bin/bash\nbroken line\nuser:x:1000:1000::/home/user:/bin/bash\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("group"),
            "root:x:0:\nuser:x:1000:\nsudo:x:27:user\nvideo:x:44:other,user\n",
        )
        .unwrap();
        let db = UserDb::new(dir.join("passwd"), dir.join("group"));
        let user = db.lookup("user").unwrap();
        assert_eq!((user.uid, user.gid), (1000, 1000));
        assert_eq!(user.home, PathBuf::from("/home/user"));
        assert_eq!(user.groups, vec![1000, 27, 44]);
        assert!(matches!(db.lookup("nobody"), Err(UserError::Unknown(_))));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
