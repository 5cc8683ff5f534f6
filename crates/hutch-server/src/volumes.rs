//! Volumes: persistent storage a team's sandboxes share, with a size quota, usable
//! without a running sandbox through E2B's volume content API.
//!
//! A volume is a sparse ext4 image, `<data>/volumes/<id>/disk.img`, of `--volume-size-mb`
//! (its quota: a write past it fails with 507), loop-mounted on `<data>/volumes/<id>/mnt`
//! (no set-id programs, no devices) the first time it is used, and stays mounted until the
//! volume is destroyed or `hutch cleanup` runs (sandboxes outlive restarts of the server,
//! and one image must never be mounted twice). Its files are owned in the template id range, so that a
//! sandbox of any slot sees them as the same users through an idmapped mount, as it sees
//! template layers; the content API speaks of the ids sandboxes see (`user` is 1000).
//! Every path the content API is given is resolved inside the volume only
//! ([`hutch_sys::rooted`]): what sandboxes left in a volume (links to host paths, `..`)
//! cannot lead it out. `docs/volumes.md` has the semantics.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use hutch_sys::rooted::{Entry, Kind, Owner, Rooted};
use hutch_sys::Errno;
use serde::{Deserialize, Serialize};

use crate::service::lock;
use crate::store::Store;
use crate::tenancy::{Scope, DEFAULT_TEAM};

/// The id sandboxes' default user has inside (`user`): what content the API writes
/// without an owner belongs to, and the owner of a new volume's root.
pub const DEFAULT_ID: u32 = 1000;

/// A volume, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeRecord {
    /// Its id (`volumeID`).
    pub id: String,
    /// Its name, unique in its team: what `volume_mounts` name.
    pub name: String,
    /// The team that owns it (None: the default team).
    #[serde(default)]
    pub team: Option<String>,
    /// Authorises the content API (`Authorization: Bearer`).
    pub token: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// Its size (quota), MiB.
    pub size_mb: u64,
}

/// Why a volume operation failed; each maps onto one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// No such volume (or another team's): 404.
    #[error("volume '{0}' not found")]
    NotFound(String),
    /// No such path in the volume: 404.
    #[error("path '{0}' not found in the volume")]
    PathNotFound(String),
    /// Bad input: 400.
    #[error("{0}")]
    Invalid(String),
    /// A name or path that exists already: 409.
    #[error("{0}")]
    Conflict(String),
    /// The volume is full: 507.
    #[error("the volume is full (its quota is {0} MiB)")]
    Full(u64),
    /// No or a wrong volume token: 401.
    #[error("invalid volume token")]
    Token,
    /// The host failed: 500.
    #[error("{0}")]
    Host(String),
}

impl VolumeError {
    /// The HTTP status it is answered with.
    pub fn status(&self) -> u16 {
        match self {
            VolumeError::NotFound(_) | VolumeError::PathNotFound(_) => 404,
            VolumeError::Invalid(_) => 400,
            VolumeError::Conflict(_) => 409,
            VolumeError::Full(_) => 507,
            VolumeError::Token => 401,
            VolumeError::Host(_) => 500,
        }
    }
}

type Result<T> = std::result::Result<T, VolumeError>;

/// Volume names: 1 to 128 of letters, digits, `-`, `_` and `.`, starting with a letter or
/// digit.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric()
}

/// A path's entry as the content API returns it (`VolumeEntryStat`).
#[derive(Debug, Clone, Serialize)]
pub struct EntryStat {
    /// The last component (`/` for the root).
    pub name: String,
    /// `file`, `directory`, `symlink` or `unknown`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The path in the volume, absolute.
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Owner as sandboxes see it.
    pub uid: u32,
    /// Group as sandboxes see it.
    pub gid: u32,
    /// RFC 3339.
    pub atime: String,
    /// RFC 3339.
    pub mtime: String,
    /// RFC 3339.
    pub ctime: String,
    /// A symbolic link's target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// Every volume of this server.
pub struct Volumes {
    dir: PathBuf,
    store: Arc<Store>,
    size_mb: u64,
    /// The first host id of the template range and how many ids it has.
    ids: (u32, u32),
    /// The volumes mounted now (held while one is mounted or unmounted).
    mounted: Mutex<HashMap<String, PathBuf>>,
    /// Held while a volume is created, so two of one name cannot both pass the check.
    creating: Mutex<()>,
}

/// The normalised absolute form of a content-API path (`/` for the root); `None` when it
/// is empty or climbs with `..` (which the volume's root would stop anyway).
fn clean_path(path: &str) -> Option<String> {
    if path.is_empty() || path.contains('\0') {
        return None;
    }
    let parts: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if parts.contains(&"..") {
        return None;
    }
    Some(format!("/{}", parts.join("/")))
}

fn time(t: (i64, u32)) -> String {
    DateTime::<Utc>::from_timestamp(t.0, t.1)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

impl Volumes {
    /// The volumes under `<data>/volumes`, each `size_mb` large, owned in the id range
    /// starting at `id_base` (`id_count` ids).
    pub fn new(
        data_dir: &Path,
        store: Arc<Store>,
        size_mb: u64,
        id_base: u32,
        id_count: u32,
    ) -> Self {
        Volumes {
            dir: data_dir.join("volumes"),
            store,
            size_mb,
            ids: (id_base, id_count),
            mounted: Mutex::new(HashMap::new()),
            creating: Mutex::new(()),
        }
    }

    fn records(&self) -> Result<Vec<VolumeRecord>> {
        self.store
            .volumes()
            .map_err(|e| VolumeError::Host(e.to_string()))
    }

    /// The volumes `scope` sees, oldest first.
    pub fn list(&self, scope: &Scope) -> Result<Vec<VolumeRecord>> {
        let mut v: Vec<VolumeRecord> = self
            .records()?
            .into_iter()
            .filter(|r| scope.sees(r.team.as_deref()))
            .collect();
        v.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(v)
    }

    /// The volume `scope` sees with this id.
    pub fn get(&self, id: &str, scope: &Scope) -> Result<VolumeRecord> {
        self.by_id(id)?
            .filter(|r| scope.sees(r.team.as_deref()))
            .ok_or_else(|| VolumeError::NotFound(id.to_string()))
    }

    fn by_id(&self, id: &str) -> Result<Option<VolumeRecord>> {
        self.store
            .volume(id)
            .map_err(|e| VolumeError::Host(e.to_string()))
    }

    /// The volume named `name` in `team`.
    pub fn by_name(&self, name: &str, team: &str) -> Result<VolumeRecord> {
        self.records()?
            .into_iter()
            .find(|r| r.name == name && r.team.as_deref().unwrap_or(DEFAULT_TEAM) == team)
            .ok_or_else(|| VolumeError::NotFound(name.to_string()))
    }

    /// `POST /volumes`: a new, empty volume named `name` in `team`.
    pub fn create(&self, name: &str, team: &str) -> Result<VolumeRecord> {
        if !valid_name(name) {
            return Err(VolumeError::Invalid(format!(
                "invalid volume name {name:?}: use 1 to 128 letters, digits, '-', '_' and '.', \
                 starting with a letter or digit"
            )));
        }
        let _one = lock(&self.creating);
        if self.by_name(name, team).is_ok() {
            return Err(VolumeError::Conflict(format!(
                "a volume named '{name}' exists already"
            )));
        }
        let rec = VolumeRecord {
            id: crate::sandbox::new_id(),
            name: name.to_string(),
            team: Some(team.to_string()),
            token: crate::sandbox::random_hex(24),
            created_at: Utc::now(),
            size_mb: self.size_mb,
        };
        let dir = self.dir.join(&rec.id);
        std::fs::create_dir_all(&dir)
            .map_err(|e| VolumeError::Host(format!("mkdir {}: {e}", dir.display())))?;
        let owner = self.ids.0 + DEFAULT_ID;
        if let Err(e) = hutch_runtime::disk::volume_image(&dir.join("disk.img"), rec.size_mb) {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(VolumeError::Host(format!("making the volume's disk: {e}")));
        }
        // The root belongs to the sandboxes' default user, who may write at its top.
        let root = self.mount_point(&rec).and_then(|mnt| {
            std::os::unix::fs::chown(&mnt, Some(owner), Some(owner))
                .map_err(|e| VolumeError::Host(format!("chown {}: {e}", mnt.display())))
        });
        if let Err(e) = root.and_then(|()| {
            self.store
                .put_volume(&rec)
                .map_err(|e| VolumeError::Host(e.to_string()))
        }) {
            if let Some(mnt) = lock(&self.mounted).remove(&rec.id) {
                let _ = hutch_sys::mount::detach(&mnt);
            }
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        tracing::info!(volume = %rec.id, name = %rec.name, team, "volume created");
        Ok(rec)
    }

    /// `DELETE /volumes/{id}`: unmounts the volume and removes it with its files.
    pub fn destroy(&self, id: &str, scope: &Scope) -> Result<()> {
        let rec = self.get(id, scope)?;
        let mut mounted = lock(&self.mounted);
        if let Some(mnt) = mounted.remove(&rec.id) {
            let _ = hutch_sys::mount::detach(&mnt);
        }
        let mnt = self.dir.join(&rec.id).join("mnt");
        // Mounted by an earlier run of the server.
        if is_mount_point(&mnt) {
            let _ = hutch_sys::mount::detach(&mnt);
        }
        self.store
            .delete_volume(&rec.id)
            .map_err(|e| VolumeError::Host(e.to_string()))?;
        drop(mounted);
        let _ = std::fs::remove_dir_all(self.dir.join(&rec.id));
        tracing::info!(volume = %rec.id, name = %rec.name, "volume destroyed");
        Ok(())
    }

    /// Where volume `rec` is mounted, mounting it first if it is not.
    pub fn mount_point(&self, rec: &VolumeRecord) -> Result<PathBuf> {
        let mut mounted = lock(&self.mounted);
        if let Some(m) = mounted.get(&rec.id) {
            return Ok(m.clone());
        }
        let dir = self.dir.join(&rec.id);
        let mnt = dir.join("mnt");
        std::fs::create_dir_all(&mnt)
            .map_err(|e| VolumeError::Host(format!("mkdir {}: {e}", mnt.display())))?;
        if !is_mount_point(&mnt) {
            hutch_runtime::disk::mount_volume(&dir.join("disk.img"), &mnt)
                .map_err(|e| VolumeError::Host(format!("mounting the volume: {e}")))?;
            // mkfs leaves one; it is nobody's content.
            let _ = std::fs::remove_dir(mnt.join("lost+found"));
        }
        mounted.insert(rec.id.clone(), mnt.clone());
        Ok(mnt)
    }

    /// The volume `id` if `token` is its content token.
    pub fn authorize(&self, id: &str, token: Option<&str>) -> Result<VolumeRecord> {
        let rec = self.by_id(id)?.ok_or(VolumeError::Token)?;
        match token {
            Some(t)
                if hutch_contracts::auth::constant_time_eq(t.as_bytes(), rec.token.as_bytes()) =>
            {
                Ok(rec)
            }
            _ => Err(VolumeError::Token),
        }
    }

    fn rooted(&self, rec: &VolumeRecord) -> Result<Rooted> {
        let mnt = self.mount_point(rec)?;
        Rooted::open(&mnt).map_err(|e| VolumeError::Host(format!("opening the volume: {e}")))
    }

    /// An id sandboxes see, as the host stores it.
    fn host_id(&self, id: Option<u32>) -> Result<u32> {
        let id = id.unwrap_or(DEFAULT_ID);
        if id >= self.ids.1 {
            return Err(VolumeError::Invalid(format!(
                "uid/gid {id} is out of range: sandboxes have ids 0 to {}",
                self.ids.1 - 1
            )));
        }
        Ok(self.ids.0 + id)
    }

    /// A host id as sandboxes see it (the overflow id for one they do not map).
    fn inside_id(&self, id: u32) -> u32 {
        if (self.ids.0..self.ids.0 + self.ids.1).contains(&id) {
            id - self.ids.0
        } else {
            65_534
        }
    }

    fn mode(mode: Option<u32>, default: u32) -> Result<u32> {
        match mode {
            None => Ok(default),
            Some(m) if m <= 0o7777 => Ok(m),
            Some(m) => Err(VolumeError::Invalid(format!(
                "mode {m:#o} is out of range (0 to 0o7777)"
            ))),
        }
    }

    fn stat_json(&self, path: &str, e: &Entry) -> EntryStat {
        let name = path
            .rsplit('/')
            .next()
            .filter(|n| !n.is_empty())
            .unwrap_or("/");
        EntryStat {
            name: name.to_string(),
            kind: match e.kind {
                Kind::File => "file",
                Kind::Directory => "directory",
                Kind::Symlink => "symlink",
                Kind::Other => "unknown",
            },
            path: path.to_string(),
            size: e.size,
            mode: e.mode,
            uid: self.inside_id(e.uid),
            gid: self.inside_id(e.gid),
            atime: time(e.atime),
            mtime: time(e.mtime),
            ctime: time(e.ctime),
            target: e.target.clone(),
        }
    }

    /// Maps a failed file operation on `path` of `rec` onto the error its caller gets.
    fn io_error(rec: &VolumeRecord, path: &str, e: Errno) -> VolumeError {
        match e {
            Errno::NOENT => VolumeError::PathNotFound(path.to_string()),
            Errno::EXIST => VolumeError::Conflict(format!("'{path}' exists already")),
            Errno::NOSPC | Errno::DQUOT => VolumeError::Full(rec.size_mb),
            Errno::ISDIR => VolumeError::Invalid(format!("'{path}' is a directory")),
            Errno::NOTDIR => {
                VolumeError::Invalid(format!("a component of '{path}' is not a directory"))
            }
            Errno::LOOP => VolumeError::Invalid(format!("'{path}' is a symbolic link")),
            Errno::BUSY => VolumeError::Invalid("the volume's root cannot be removed".into()),
            Errno::NAMETOOLONG => VolumeError::Invalid(format!("'{path}' is too long")),
            Errno::INVAL | Errno::ACCESS | Errno::NXIO => {
                VolumeError::Invalid(format!("'{path}' cannot be used this way"))
            }
            other => VolumeError::Host(format!("'{path}': {other}")),
        }
    }

    fn checked_path(path: &str) -> Result<String> {
        clean_path(path).ok_or_else(|| VolumeError::Invalid(format!("invalid path {path:?}")))
    }

    /// `GET /volumecontent/{id}/path`.
    pub fn stat(&self, rec: &VolumeRecord, path: &str) -> Result<EntryStat> {
        let path = Self::checked_path(path)?;
        let e = self
            .rooted(rec)?
            .stat(&path)
            .map_err(|e| Self::io_error(rec, &path, e))?;
        Ok(self.stat_json(&path, &e))
    }

    /// `GET /volumecontent/{id}/dir`: the entries below `path`, `depth` levels down.
    pub fn list_dir(&self, rec: &VolumeRecord, path: &str, depth: u32) -> Result<Vec<EntryStat>> {
        let path = Self::checked_path(path)?;
        let entries = self
            .rooted(rec)?
            .list(&path, depth)
            .map_err(|e| Self::io_error(rec, &path, e))?;
        let base = path.trim_end_matches('/');
        Ok(entries
            .iter()
            .map(|(rel, e)| self.stat_json(&format!("{base}/{rel}"), e))
            .collect())
    }

    /// `POST /volumecontent/{id}/dir`.
    pub fn make_dir(
        &self,
        rec: &VolumeRecord,
        path: &str,
        owner: (Option<u32>, Option<u32>, Option<u32>),
        parents: bool,
    ) -> Result<EntryStat> {
        let path = Self::checked_path(path)?;
        let o = Owner {
            uid: self.host_id(owner.0)?,
            gid: self.host_id(owner.1)?,
            mode: Self::mode(owner.2, 0o755)?,
        };
        let r = self.rooted(rec)?;
        r.mkdir(&path, parents, o)
            .map_err(|e| Self::io_error(rec, &path, e))?;
        let e = r.stat(&path).map_err(|e| Self::io_error(rec, &path, e))?;
        Ok(self.stat_json(&path, &e))
    }

    /// Opens `path` for a `PUT /volumecontent/{id}/file`; `replace: false` refuses an
    /// existing file. The caller writes the body, then asks for [`Volumes::stat`].
    pub fn create_file(
        &self,
        rec: &VolumeRecord,
        path: &str,
        owner: (Option<u32>, Option<u32>, Option<u32>),
        replace: bool,
    ) -> Result<(String, std::fs::File)> {
        let path = Self::checked_path(path)?;
        let o = Owner {
            uid: self.host_id(owner.0)?,
            gid: self.host_id(owner.1)?,
            mode: Self::mode(owner.2, 0o644)?,
        };
        let f = self
            .rooted(rec)?
            .create(&path, replace, o)
            .map_err(|e| Self::io_error(rec, &path, e))?;
        Ok((path, f))
    }

    /// Opens `path` for a `GET /volumecontent/{id}/file`.
    pub fn open_file(&self, rec: &VolumeRecord, path: &str) -> Result<std::fs::File> {
        let path = Self::checked_path(path)?;
        self.rooted(rec)?
            .read(&path)
            .map_err(|e| Self::io_error(rec, &path, e))
    }

    /// `PATCH /volumecontent/{id}/path`.
    pub fn set_metadata(
        &self,
        rec: &VolumeRecord,
        path: &str,
        owner: (Option<u32>, Option<u32>, Option<u32>),
    ) -> Result<EntryStat> {
        let path = Self::checked_path(path)?;
        let uid = owner.0.map(|u| self.host_id(Some(u))).transpose()?;
        let gid = owner.1.map(|g| self.host_id(Some(g))).transpose()?;
        let mode = owner.2.map(|m| Self::mode(Some(m), 0)).transpose()?;
        let e = self
            .rooted(rec)?
            .set_owner(&path, uid, gid, mode)
            .map_err(|e| Self::io_error(rec, &path, e))?;
        Ok(self.stat_json(&path, &e))
    }

    /// `DELETE /volumecontent/{id}/path`.
    pub fn remove(&self, rec: &VolumeRecord, path: &str) -> Result<()> {
        let path = Self::checked_path(path)?;
        self.rooted(rec)?
            .remove(&path)
            .map_err(|e| Self::io_error(rec, &path, e))
    }

    /// The error a failed write of `rec`'s file ends with.
    pub fn write_error(rec: &VolumeRecord, path: &str, e: &std::io::Error) -> VolumeError {
        match e.raw_os_error().map(Errno::from_raw_os_error) {
            Some(errno) => Self::io_error(rec, path, errno),
            None => VolumeError::Host(format!("writing '{path}': {e}")),
        }
    }
}

/// Unmounts every volume of the data directory `data_dir` (`hutch cleanup`: no sandbox
/// uses them any more). A running server keeps its volumes mounted, also across its own
/// restarts: sandboxes it adopts still use them, and a second mount of one image would
/// corrupt it.
pub fn unmount_leftovers(data_dir: &Path) {
    let Ok(rd) = std::fs::read_dir(data_dir.join("volumes")) else {
        return;
    };
    for d in rd.flatten() {
        let mnt = d.path().join("mnt");
        if is_mount_point(&mnt) {
            if let Err(e) = hutch_sys::mount::detach(&mnt) {
                tracing::warn!(mount = %mnt.display(), error = %e, "cannot unmount a volume");
            }
        }
    }
}

/// True when `path` is the root of a mount (its device differs from its parent's).
fn is_mount_point(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (
        std::fs::metadata(path),
        path.parent().map(std::fs::metadata),
    ) {
        (Ok(m), Some(Ok(p))) => m.dev() != p.dev(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised_and_never_climb() {
        assert_eq!(clean_path("/").as_deref(), Some("/"));
        assert_eq!(clean_path("a//b/./c/").as_deref(), Some("/a/b/c"));
        assert_eq!(clean_path("/a/../b"), None);
        assert_eq!(clean_path(""), None);
        assert_eq!(clean_path("a\0b"), None);
    }

    #[test]
    fn volume_names_follow_e2b() {
        for good in ["data", "My-Volume_2", "v.1"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in ["", "-x", "a/b", "a b", "..", &"x".repeat(129)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
