//! The filesystem service (`filesystem.Filesystem`): stat, list, create, move and remove paths,
//! and watch directories for changes.
//!
//! [`FilesystemService`] holds the policy and knows nothing of HTTP; [`rpc`] adapts it to
//! Connect. As in envd, the agent does the work itself (it is root in the sandbox) on behalf of
//! the calling user: paths resolve against that user's home and what the agent creates is
//! chowned to them. Filesystem calls block, so they run on tokio's blocking pool.

pub mod entry;
pub mod rpc;
pub mod watch;
pub mod wire;

use hutch_sys::errno;
use std::collections::HashMap;
use std::fmt::Display;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::connect::{Code, ConnectError};
use crate::users::{User, UserDb, UserError};
use entry::{clean, entry_info, lossy, Names};
use wire::{
    CreateWatcherRequest, CreateWatcherResponse, EntryInfo, FileType, GetWatcherEventsRequest,
    GetWatcherEventsResponse, ListDirRequest, ListDirResponse, MakeDirRequest, MakeDirResponse,
    MoveRequest, MoveResponse, RemoveRequest, RemoveResponse, RemoveWatcherRequest,
    RemoveWatcherResponse, StatRequest, StatResponse, WatchDirRequest,
};

/// The filesystem service.
#[derive(Clone)]
pub struct FilesystemService {
    inner: Arc<Inner>,
}

struct Inner {
    users: UserDb,
    passwd: PathBuf,
    group: PathBuf,
    /// Watchers of the polling API (`CreateWatcher`), by id.
    watchers: Mutex<HashMap<String, Arc<watch::PollingWatcher>>>,
}

impl FilesystemService {
    /// A service that resolves users, owners and groups in the given passwd and group files.
    pub fn new(passwd: impl Into<PathBuf>, group: impl Into<PathBuf>) -> Self {
        let (passwd, group) = (passwd.into(), group.into());
        Self {
            inner: Arc::new(Inner {
                users: UserDb::new(&passwd, &group),
                passwd,
                group,
                watchers: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn watchers(&self) -> MutexGuard<'_, HashMap<String, Arc<watch::PollingWatcher>>> {
        // Every critical section is a single map operation, so a poisoned map is still valid.
        self.inner
            .watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Resolves the calling user's name to an account.
    pub fn user(&self, username: &str) -> Result<User, ConnectError> {
        self.inner.users.lookup(username).map_err(|err| match err {
            UserError::Unknown(_) => {
                ConnectError::unauthenticated(format!("invalid username: '{username}'"))
            }
            UserError::Read { .. } => ConnectError::internal(err.to_string()),
        })
    }

    fn name_files(&self) -> (PathBuf, PathBuf) {
        (self.inner.passwd.clone(), self.inner.group.clone())
    }

    /// `Stat`: the entry at a path (a symlink is described, not followed).
    pub async fn stat(&self, user: &User, req: StatRequest) -> Result<StatResponse, ConnectError> {
        let path = resolve_path(&req.path, user)?;
        let (passwd, group) = self.name_files();
        blocking(user, move || {
            let names = Names::load(&passwd, &group);
            Ok(StatResponse {
                entry: Some(stat_entry(&path, &names)?),
            })
        })
        .await
    }

    /// `MakeDir`: creates a directory and any missing parents, owned by `user`.
    pub async fn make_dir(
        &self,
        user: &User,
        req: MakeDirRequest,
    ) -> Result<MakeDirResponse, ConnectError> {
        let dir = resolve_path(&req.path, user)?;
        let (uid, gid) = (user.uid, user.gid);
        let (passwd, group) = self.name_files();
        blocking(user, move || {
            match std::fs::metadata(&dir) {
                Ok(meta) if meta.is_dir() => {
                    return Err(ConnectError::new(
                        Code::AlreadyExists,
                        format!("directory already exists: {}", dir.display()),
                    ))
                }
                Ok(_) => {
                    return Err(ConnectError::invalid_argument(format!(
                        "path already exists but it is not a directory: {}",
                        dir.display()
                    )))
                }
                Err(err) if is_missing(&err) => {}
                Err(err) => return Err(fs_error(&err, "error getting file info")),
            }
            ensure_dirs(&dir, uid, gid)?;
            let names = Names::load(&passwd, &group);
            Ok(MakeDirResponse {
                entry: Some(stat_entry(&dir, &names)?),
            })
        })
        .await
    }

    /// `Move`: renames a path, creating the destination's missing parents (owned by `user`).
    /// The moved entry keeps its owner.
    pub async fn move_entry(
        &self,
        user: &User,
        req: MoveRequest,
    ) -> Result<MoveResponse, ConnectError> {
        let source = resolve_path(&req.source, user)?;
        let destination = resolve_path(&req.destination, user)?;
        let (uid, gid) = (user.uid, user.gid);
        let (passwd, group) = self.name_files();
        blocking(user, move || {
            let not_found = |err: &io::Error| {
                ConnectError::not_found(format!(
                    "source file not found: rename {} {}: {}",
                    source.display(),
                    destination.display(),
                    describe(err)
                ))
            };
            // Checked first so a missing source does not leave the destination's parents behind.
            if let Err(err) = std::fs::symlink_metadata(&source) {
                return Err(if is_missing(&err) {
                    not_found(&err)
                } else {
                    fs_error(&err, "error renaming")
                });
            }
            if let Some(parent) = destination.parent() {
                ensure_dirs(parent, uid, gid)?;
            }
            std::fs::rename(&source, &destination).map_err(|err| {
                if err.raw_os_error() == Some(errno::ENOENT) {
                    not_found(&err)
                } else {
                    fs_error(
                        &err,
                        format!(
                            "error renaming {} to {}",
                            source.display(),
                            destination.display()
                        ),
                    )
                }
            })?;
            let names = Names::load(&passwd, &group);
            Ok(MoveResponse {
                entry: Some(stat_entry(&destination, &names)?),
            })
        })
        .await
    }

    /// `ListDir`: the entries under a directory, `depth` levels deep (0 means 1), depth-first
    /// in name order. The directory itself may be a symlink; nothing below it is followed.
    pub async fn list_dir(
        &self,
        user: &User,
        req: ListDirRequest,
    ) -> Result<ListDirResponse, ConnectError> {
        let requested = resolve_path(&req.path, user)?;
        let depth = req.depth.max(1);
        let (passwd, group) = self.name_files();
        blocking(user, move || {
            let resolved =
                std::fs::canonicalize(&requested).map_err(|err| match err.raw_os_error() {
                    Some(errno::ENOENT) | Some(errno::ENOTDIR) => ConnectError::not_found(format!(
                        "path not found: {}: {}",
                        requested.display(),
                        describe(&err)
                    )),
                    Some(errno::ELOOP) => ConnectError::new(
                        Code::FailedPrecondition,
                        format!(
                            "cyclic symlink or chain >255 links at \"{}\"",
                            requested.display()
                        ),
                    ),
                    _ => fs_error(&err, "error resolving symlink"),
                })?;
            let meta = std::fs::metadata(&resolved).map_err(|err| {
                if is_missing(&err) {
                    ConnectError::not_found(format!(
                        "directory not found: {}: {}",
                        resolved.display(),
                        describe(&err)
                    ))
                } else {
                    fs_error(&err, "error getting file info")
                }
            })?;
            if !meta.is_dir() {
                return Err(ConnectError::invalid_argument(format!(
                    "path is not a directory: {}",
                    resolved.display()
                )));
            }
            let names = Names::load(&passwd, &group);
            Ok(ListDirResponse {
                entries: walk(&requested, &resolved, depth, &names)?,
            })
        })
        .await
    }

    /// `Remove`: deletes a file, symlink or whole directory tree. A path that does not exist
    /// is not an error (envd's `os.RemoveAll`; the SDK's `files.remove` tests rely on it).
    pub async fn remove(
        &self,
        user: &User,
        req: RemoveRequest,
    ) -> Result<RemoveResponse, ConnectError> {
        let path = resolve_path(&req.path, user)?;
        blocking(user, move || {
            remove_all(&path).map_err(|err| fs_error(&err, "error removing file or directory"))?;
            Ok(RemoveResponse {})
        })
        .await
    }

    /// `WatchDir`: starts watching; the receiver yields events until a terminal error.
    pub async fn watch_dir(
        &self,
        user: &User,
        req: WatchDirRequest,
    ) -> Result<watch::EventReceiver, ConnectError> {
        let spec = self.watch_spec(user, &req).await?;
        watch::start(spec).await
    }

    /// `CreateWatcher`: starts a watcher whose events are buffered until fetched.
    pub async fn create_watcher(
        &self,
        user: &User,
        req: CreateWatcherRequest,
    ) -> Result<CreateWatcherResponse, ConnectError> {
        let spec = self.watch_spec(user, &wire::watch_request(req)).await?;
        let events = watch::start(spec).await?;
        let id = watch::new_watcher_id();
        let watcher = watch::PollingWatcher::new(events);
        self.watchers().insert(id.clone(), Arc::new(watcher));
        Ok(CreateWatcherResponse { watcher_id: id })
    }

    /// `GetWatcherEvents`: every event buffered since the previous call; a watcher that
    /// failed reports its error from then on.
    pub fn get_watcher_events(
        &self,
        req: GetWatcherEventsRequest,
    ) -> Result<GetWatcherEventsResponse, ConnectError> {
        let watcher = self
            .watchers()
            .get(&req.watcher_id)
            .cloned()
            .ok_or_else(|| watcher_not_found(&req.watcher_id))?;
        Ok(GetWatcherEventsResponse {
            events: watcher.take_events()?,
        })
    }

    /// `RemoveWatcher`: stops a watcher and forgets its events.
    pub fn remove_watcher(
        &self,
        req: RemoveWatcherRequest,
    ) -> Result<RemoveWatcherResponse, ConnectError> {
        // Dropping the last reference stops the watcher and closes its inotify descriptor.
        self.watchers()
            .remove(&req.watcher_id)
            .map(|_| RemoveWatcherResponse {})
            .ok_or_else(|| watcher_not_found(&req.watcher_id))
    }

    async fn watch_spec(
        &self,
        user: &User,
        req: &WatchDirRequest,
    ) -> Result<watch::WatchSpec, ConnectError> {
        let root = resolve_path(&req.path, user)?;
        let allow_network_mounts = req.allow_network_mounts;
        let checked = root.clone();
        blocking(user, move || {
            watch::check_watchable(&checked, allow_network_mounts)
        })
        .await?;
        let (passwd, group) = self.name_files();
        Ok(watch::WatchSpec {
            root,
            recursive: req.recursive,
            include_entry: req.include_entry,
            passwd,
            group,
            user: user.clone(),
        })
    }
}

fn watcher_not_found(id: &str) -> ConnectError {
    ConnectError::not_found(format!("watcher with id {id} not found"))
}

/// Runs blocking filesystem work off the async workers, acting as `user` (the request's).
async fn blocking<T: Send + 'static>(
    user: &User,
    work: impl FnOnce() -> Result<T, ConnectError> + Send + 'static,
) -> Result<T, ConnectError> {
    let user = user.clone();
    tokio::task::spawn_blocking(move || {
        let _acting = acting(&user)?;
        work()
    })
    .await
    .map_err(|err| ConnectError::internal(format!("filesystem task failed: {err}")))?
}

/// Takes on `user`'s filesystem identity on this thread until the guard drops.
pub(super) fn acting(user: &User) -> Result<hutch_sys::creds::FsIdentity, ConnectError> {
    user.acting()
        .map_err(|err| ConnectError::internal(format!("cannot act as user '{}': {err}", user.name)))
}

/// Resolves a request path for `user`: `~` and `~/...` are their home, relative paths are
/// relative to it, and the result is cleaned lexically (`..` and `.` folded).
pub fn resolve_path(path: &str, user: &User) -> Result<PathBuf, ConnectError> {
    if path.contains('\0') {
        return Err(ConnectError::invalid_argument(format!(
            "path '{}' contains a NUL byte",
            path.escape_debug()
        )));
    }
    let expanded = match path.strip_prefix('~') {
        // `~user` would need another account's home; envd refuses it too.
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => {
            return Err(ConnectError::invalid_argument(format!(
                "failed to expand path '{path}' for user '{}': cannot expand user-specific home dir",
                user.name
            )))
        }
        Some(rest) => user.home.join(rest.trim_start_matches('/')),
        None if path.starts_with('/') => PathBuf::from(path),
        None => user.home.join(path),
    };
    Ok(clean(&expanded))
}

/// `entry_info` with envd's errors.
fn stat_entry(path: &Path, names: &Names) -> Result<EntryInfo, ConnectError> {
    entry_info(path, names).map_err(|err| {
        if is_missing(&err) {
            ConnectError::not_found(format!(
                "file not found: lstat {}: {}",
                path.display(),
                describe(&err)
            ))
        } else {
            fs_error(&err, "error getting file info")
        }
    })
}

/// Walks `resolved` (the real directory) up to `depth` levels, reporting paths under
/// `requested` (what the caller named, possibly through a symlink). Pre-order, children in
/// byte order of their names, like Go's `filepath.WalkDir`; symlinks are listed, not entered.
fn walk(
    requested: &Path,
    resolved: &Path,
    depth: u32,
    names: &Names,
) -> Result<Vec<EntryInfo>, ConnectError> {
    let mut entries = Vec::new();
    // An explicit stack (of relative paths and their level) instead of recursion: directory
    // trees can be deeper than a thread's stack is comfortable with.
    let mut stack: Vec<(PathBuf, u32)> = children(resolved, Path::new(""))?
        .into_iter()
        .rev()
        .map(|rel| (rel, 1))
        .collect();
    while let Some((rel, level)) = stack.pop() {
        let real = resolved.join(&rel);
        let mut entry = match entry_info(&real, names) {
            Ok(entry) => entry,
            // Removed since the directory was read.
            Err(err) if is_missing(&err) => continue,
            Err(err) => {
                return Err(fs_error(
                    &err,
                    format!("error reading directory {}", resolved.display()),
                ))
            }
        };
        entry.path = lossy(&requested.join(&rel));
        // `lstat` said directory (not a symlink to one): only those are descended into.
        let descend = level < depth && entry.r#type() == FileType::Directory && !entry.is_symlink;
        entries.push(entry);
        if descend {
            match children(resolved, &rel) {
                Ok(kids) => stack.extend(kids.into_iter().rev().map(|k| (k, level + 1))),
                Err(err) if err.code == Code::NotFound => {}
                Err(err) => return Err(err),
            }
        }
    }
    Ok(entries)
}

/// The entries of `root/rel` as paths relative to `root`, sorted by name bytes.
fn children(root: &Path, rel: &Path) -> Result<Vec<PathBuf>, ConnectError> {
    let dir = root.join(rel);
    let read_error = |err: &io::Error| {
        let what = format!("error reading directory {}", dir.display());
        if is_missing(err) {
            ConnectError::not_found(format!("{what}: {}", describe(err)))
        } else {
            fs_error(err, what)
        }
    };
    let mut names = Vec::new();
    for item in std::fs::read_dir(&dir).map_err(|e| read_error(&e))? {
        names.push(item.map_err(|e| read_error(&e))?.file_name());
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names.into_iter().map(|n| rel.join(n)).collect())
}

/// Creates every missing directory on the way to `path` (mode 0755, owned by `uid:gid`).
fn ensure_dirs(path: &Path, uid: u32, gid: u32) -> Result<(), ConnectError> {
    let mut prefixes: Vec<&Path> = path.ancestors().collect();
    prefixes.reverse();
    for dir in prefixes {
        if dir.as_os_str().is_empty() || dir == Path::new("/") {
            continue;
        }
        match std::fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => continue,
            Ok(_) => {
                return Err(ConnectError::internal(format!(
                    "path is a file: {}",
                    dir.display()
                )))
            }
            Err(err) if err.raw_os_error() == Some(errno::ENOENT) => {}
            Err(err) => return Err(fs_error(&err, "failed to stat directory")),
        }
        match std::fs::DirBuilder::new().mode(0o755).create(dir) {
            Ok(()) => {
                // The agent's umask must not decide what users get; envd's result is 0755. Only
                // fixed when needed: every chmod is one more CHMOD event for watchers.
                let mode = std::fs::symlink_metadata(dir).map(|m| m.mode() & 0o7777);
                if mode.ok() != Some(0o755) {
                    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
                        .map_err(|err| fs_error(&err, "failed to set directory permissions"))?;
                }
                std::os::unix::fs::lchown(dir, Some(uid), Some(gid))
                    .map_err(|err| fs_error(&err, "failed to chown directory"))?;
            }
            // Someone else created it meanwhile; it is theirs to chown.
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(fs_error(&err, "failed to create directory")),
        }
    }
    Ok(())
}

/// Removes `path` and everything under it without following symlinks; absent is success.
fn remove_all(path: &Path) -> io::Result<()> {
    let result = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(err) => Err(err),
    };
    match result {
        Err(err) if is_missing(&err) => Ok(()),
        other => other,
    }
}

/// ENOENT, or ENOTDIR (a path component is a file): either way nothing is at the path.
fn is_missing(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(errno::ENOENT) | Some(errno::ENOTDIR)
    )
}

/// The OS error text without Rust's " (os error N)" suffix, lowercased like Go's messages.
fn describe(err: &io::Error) -> String {
    let text = err.to_string();
    let text = match text.rfind(" (os error ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

/// Maps an I/O error to the Connect code a caller can act on, with `what` as context.
fn fs_error(err: &io::Error, what: impl Display) -> ConnectError {
    let code = match err.raw_os_error() {
        Some(errno::ENOENT) | Some(errno::ENOTDIR) => Code::NotFound,
        Some(errno::EACCES) | Some(errno::EPERM) | Some(errno::EROFS) => Code::PermissionDenied,
        Some(errno::EEXIST) | Some(errno::ENOTEMPTY) => Code::AlreadyExists,
        Some(errno::EISDIR) | Some(errno::EINVAL) | Some(errno::ENAMETOOLONG) => {
            Code::InvalidArgument
        }
        Some(errno::ELOOP) => Code::FailedPrecondition,
        Some(errno::ENOSPC) | Some(errno::EDQUOT) => Code::ResourceExhausted,
        _ => Code::Internal,
    };
    ConnectError::new(code, format!("{what}: {}", describe(err)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(home: &str) -> User {
        User {
            name: "user".into(),
            uid: 1000,
            gid: 1000,
            home: PathBuf::from(home),
            groups: vec![1000],
        }
    }

    #[test]
    fn paths_resolve_against_the_home() {
        let u = user("/home/user");
        let r = |p: &str| resolve_path(p, &u).map(|p| p.display().to_string());
        assert_eq!(r("").unwrap(), "/home/user");
        assert_eq!(r("~").unwrap(), "/home/user");
        assert_eq!(r("~/a/../b").unwrap(), "/home/user/b");
        assert_eq!(r("x/y").unwrap(), "/home/user/x/y");
        assert_eq!(r("../../..").unwrap(), "/");
        assert_eq!(r("/tmp/./x/").unwrap(), "/tmp/x");
        assert_eq!(r("~root").unwrap_err().code, Code::InvalidArgument);
        assert_eq!(r("a\0b").unwrap_err().code, Code::InvalidArgument);
    }

    #[test]
    fn errors_map_to_connect_codes() {
        let e = |n| fs_error(&io::Error::from_raw_os_error(n), "x").code;
        assert_eq!(e(errno::ENOENT), Code::NotFound);
        assert_eq!(e(errno::EACCES), Code::PermissionDenied);
        assert_eq!(e(errno::ENOTEMPTY), Code::AlreadyExists);
        assert_eq!(e(errno::EIO), Code::Internal);
        assert_eq!(
            describe(&io::Error::from_raw_os_error(errno::ENOENT)),
            "no such file or directory"
        );
    }
}
