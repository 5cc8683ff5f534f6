//! Watching directories with inotify, with envd's event semantics (it uses a recursive fork of
//! fsnotify).
//!
//! One inotify instance per watch. A reader task waits for the descriptor to become readable,
//! hands each batch of raw events to the blocking pool (turning them into protocol events can
//! stat files and walk new directories) and forwards the results on a bounded channel. The task
//! ends, and the descriptor closes, when the receiving side goes away: the `WatchDir` response
//! stream being dropped, or a polling watcher being removed.
//!
//! Mapping (fsnotify's): `IN_CREATE`/`IN_MOVED_TO` → CREATE, `IN_MOVED_FROM`/`IN_MOVE_SELF` →
//! RENAME, `IN_ATTRIB` → CHMOD, `IN_MODIFY` → WRITE, `IN_DELETE`/`IN_DELETE_SELF` → REMOVE; one
//! raw event can yield several, in that order. Recursive watches add every directory that
//! appears under the root and report what was already inside it as CREATE events (a
//! `mkdir -p a/b/c` is over before the agent can watch `a`).

mod polling;

use hutch_sys::errno;
use hutch_sys::inotify::mask::{
    IN_ATTRIB, IN_CREATE, IN_DELETE, IN_DELETE_SELF, IN_DONT_FOLLOW, IN_IGNORED, IN_ISDIR,
    IN_MODIFY, IN_MOVED_FROM, IN_MOVED_TO, IN_MOVE_SELF, IN_ONLYDIR, IN_Q_OVERFLOW, IN_UNMOUNT,
};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use super::acting;
use super::entry::{entry_info, relative_name, Names};
use super::wire::{carries_entry, EventType, FilesystemEvent};
use crate::connect::{Code, ConnectError};
use crate::users::User;
pub use polling::{PollingWatcher, MAX_BUFFERED_EVENTS};

/// What a watch delivers: events, or one terminal error after which nothing follows.
pub type EventItem = Result<FilesystemEvent, ConnectError>;

/// The receiving end of a watch; dropping it stops the watch.
pub type EventReceiver = mpsc::Receiver<EventItem>;

/// Events in flight between the reader task and its consumer. When the consumer (a slow
/// stream client) falls this far behind, the reader stops reading and the kernel queues the
/// rest, up to `fs.inotify.max_queued_events`.
const CHANNEL_CAPACITY: usize = 1024;

/// Size of one read from the inotify descriptor; room for hundreds of events with names.
const READ_BUFFER: usize = 64 * 1024;

/// Size of `struct inotify_event` without its name.
const EVENT_HEADER: usize = 16;

/// The changes every watch subscribes to (fsnotify's default set).
const WATCH_MASK: u32 = IN_CREATE
    | IN_MODIFY
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVED_TO
    | IN_MOVED_FROM
    | IN_MOVE_SELF
    | IN_ATTRIB;

/// Filesystem magic numbers (linux/magic.h) of network and FUSE filesystems, which envd refuses
/// to watch unless asked: inotify does not see changes made by other machines.
const NETWORK_MAGICS: [i64; 5] = [
    0x6969,      // NFS
    0xFF53_4D42, // CIFS
    0x517B,      // SMB
    0xFE53_4D42, // SMB2
    0x6573_5546, // FUSE
];

/// What to watch, resolved and checked.
#[derive(Debug, Clone)]
pub struct WatchSpec {
    /// The watched directory (absolute, lexically clean; may be a symlink to a directory).
    pub root: PathBuf,
    /// Watch the whole tree under it.
    pub recursive: bool,
    /// Attach `EntryInfo` to events that describe an existing entry.
    pub include_entry: bool,
    /// Where owner names come from, for `EntryInfo`.
    pub passwd: PathBuf,
    /// Where group names come from.
    pub group: PathBuf,
    /// Whose request it is: directories are read and watched with that user's permissions
    /// (inotify checks read access with the caller's filesystem ids), so a watch never
    /// reaches what the user could not list.
    pub user: User,
}

/// Checks that `root` is a directory that may be watched (envd's errors).
pub fn check_watchable(root: &Path, allow_network_mounts: bool) -> Result<(), ConnectError> {
    let meta = std::fs::metadata(root).map_err(|err| {
        if matches!(
            err.raw_os_error(),
            Some(errno::ENOENT) | Some(errno::ENOTDIR)
        ) {
            ConnectError::not_found(format!("path {} not found", root.display()))
        } else {
            ConnectError::internal(format!("error statting path {}: {err}", root.display()))
        }
    })?;
    if !meta.is_dir() {
        return Err(ConnectError::invalid_argument(format!(
            "path {} not a directory",
            root.display()
        )));
    }
    if !allow_network_mounts && is_network_mount(root)? {
        return Err(ConnectError::invalid_argument(format!(
            "cannot watch path on network filesystem: {}",
            root.display()
        )));
    }
    Ok(())
}

fn is_network_mount(path: &Path) -> Result<bool, ConnectError> {
    let magic = hutch_sys::fs::fs_magic(path).map_err(|err| {
        ConnectError::internal(format!(
            "error checking mount status: failed to statfs {}: {}",
            path.display(),
            io::Error::from(err)
        ))
    })?;
    Ok(NETWORK_MAGICS.contains(&i64::from(magic)))
}

/// A fresh id for a polling watcher: `w` and 16 random hex digits (envd's ids also start with
/// `w`; clients treat them as opaque).
pub fn new_watcher_id() -> String {
    static FALLBACK: AtomicU64 = AtomicU64::new(1);
    let mut bytes = [0u8; 8];
    let value = if hutch_sys::fs::random_bytes(&mut bytes).is_ok() {
        u64::from_ne_bytes(bytes)
    } else {
        // Without randomness ids only need to be unique within this agent.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        nanos ^ FALLBACK.fetch_add(1, Ordering::Relaxed).rotate_left(40)
    };
    format!("w{value:016x}")
}

/// Sets up the watch and starts its reader task.
pub async fn start(spec: WatchSpec) -> Result<EventReceiver, ConnectError> {
    let state = tokio::task::spawn_blocking(move || {
        let _acting = acting(&spec.user)?;
        State::new(spec)
    })
    .await
    .map_err(|err| ConnectError::internal(format!("watch setup failed: {err}")))??;
    let fd = state.fd.clone();
    // SAFETY: the Arc inside the AsyncFd keeps the descriptor open, with the same number, for
    // as long as the AsyncFd exists; nothing closes an `OwnedFd` behind its owners' backs.
    let async_fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|err| ConnectError::internal(format!("error creating watcher: {err}")))?;
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    tokio::spawn(run(async_fd, Arc::new(Mutex::new(state)), tx));
    Ok(rx)
}

/// The reader task: runs until the receiver is dropped or the watch fails.
async fn run(fd: AsyncFd<Arc<OwnedFd>>, state: Arc<Mutex<State>>, tx: mpsc::Sender<EventItem>) {
    let mut buf = vec![0u8; READ_BUFFER];
    loop {
        let read = tokio::select! {
            _ = tx.closed() => return,
            read = read_events(&fd, &mut buf) => read,
        };
        let batch = match read {
            Ok(n) => buf[..n].to_vec(),
            Err(err) => {
                let _ = tx
                    .send(Err(ConnectError::internal(format!("watcher error: {err}"))))
                    .await;
                return;
            }
        };
        let state = state.clone();
        let items = match tokio::task::spawn_blocking(move || {
            let mut state = lock(&state);
            // New directories are read and watched as the watch's user too.
            match acting(&state.spec.user) {
                Ok(_acting) => state.process(&batch),
                Err(err) => vec![Err(err)],
            }
        })
        .await
        {
            Ok(items) => items,
            Err(err) => vec![Err(ConnectError::internal(format!("watcher error: {err}")))],
        };
        for item in items {
            let terminal = item.is_err();
            if tx.send(item).await.is_err() || terminal {
                return;
            }
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // Only the reader task's blocking step locks it; a panic there would have ended the task.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// One read's worth of raw events.
async fn read_events(fd: &AsyncFd<Arc<OwnedFd>>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        let mut guard = fd.readable().await?;
        let result = guard.try_io(|inner| {
            // The descriptor is kept open by the Arc inside the AsyncFd.
            hutch_sys::fd::read(inner.get_ref(), buf).map_err(io::Error::from)
        });
        match result {
            Ok(Err(err)) if err.kind() == io::ErrorKind::Interrupted => continue,
            Ok(Ok(0)) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "inotify descriptor returned end of file",
                ))
            }
            Ok(result) => return result,
            // Spurious readiness: try_io cleared it; wait again.
            Err(_would_block) => continue,
        }
    }
}

/// A watch's inotify descriptor and the directories it watches.
struct State {
    fd: Arc<OwnedFd>,
    spec: WatchSpec,
    by_wd: HashMap<i32, PathBuf>,
    by_path: HashMap<PathBuf, i32>,
}

impl State {
    /// Opens the descriptor and watches the root (and, if recursive, every directory under
    /// it, without following symlinks).
    fn new(spec: WatchSpec) -> Result<Self, ConnectError> {
        let fd = hutch_sys::inotify::init().map_err(|err| {
            let err = io::Error::from(err);
            match err.raw_os_error() {
                Some(errno::EMFILE) | Some(errno::ENFILE) => ConnectError::new(
                    Code::ResourceExhausted,
                    format!(
                        "error creating watcher: {err}; too many watchers are open \
                         (fs.inotify.max_user_instances), remove ones you no longer need"
                    ),
                ),
                _ => ConnectError::internal(format!("error creating watcher: {err}")),
            }
        })?;
        let fd = Arc::new(fd);
        let mut state = State {
            fd,
            spec,
            by_wd: HashMap::new(),
            by_path: HashMap::new(),
        };
        let root = state.spec.root.clone();
        state
            .add_watch(&root, true)
            .map_err(|err| add_error(&root, &err))?;
        if state.spec.recursive {
            state
                .watch_subtree(&root, &mut |_, _| {})
                .map_err(|(path, err)| add_error(&path, &err))?;
        }
        Ok(state)
    }

    /// Adds an inotify watch on the directory `path`. Only the root may be reached through a
    /// symlink; anything below is watched as what it is, never followed.
    fn add_watch(&mut self, path: &Path, is_root: bool) -> io::Result<()> {
        let mut mask = WATCH_MASK | IN_ONLYDIR;
        if !is_root {
            mask |= IN_DONT_FOLLOW;
        }
        // Only a directory the watch's user may list: Linux's inotify_add_watch asks for
        // read permission, but gVisor's does not, so the agent opens it as that user first
        // (EACCES for a directory closed to them, on either kernel).
        may_list(path, is_root)?;
        let wd = hutch_sys::inotify::add_watch(&*self.fd, path, mask)?;
        // The kernel hands out one wd per inode: a directory known under another path (a bind
        // mount, or a move the agent missed) now goes by this one.
        if let Some(old) = self.by_wd.insert(wd, path.to_owned()) {
            if old != path {
                self.by_path.remove(&old);
            }
        }
        self.by_path.insert(path.to_owned(), wd);
        Ok(())
    }

    /// Watches every directory below `dir` (pre-order, names in byte order), calling `found`
    /// for each entry found on the way. Entries that vanish meanwhile are skipped; running out
    /// of watches is an error.
    fn watch_subtree(
        &mut self,
        dir: &Path,
        found: &mut dyn FnMut(&Path, bool),
    ) -> Result<(), (PathBuf, io::Error)> {
        let mut stack = vec![dir.to_owned()];
        while let Some(dir) = stack.pop() {
            let Ok(read) = std::fs::read_dir(&dir) else {
                // Gone, or unreadable: nothing to watch in it.
                continue;
            };
            let mut kids: Vec<(PathBuf, bool)> = read
                .filter_map(Result::ok)
                .map(|e| {
                    // d_type: a symlink to a directory is not a directory here.
                    let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
                    (e.path(), is_dir)
                })
                .collect();
            kids.sort_by(|a, b| a.0.as_os_str().as_bytes().cmp(b.0.as_os_str().as_bytes()));
            let mut subdirs = Vec::new();
            for (path, is_dir) in kids {
                found(&path, is_dir);
                if !is_dir {
                    continue;
                }
                match self.add_watch(&path, false) {
                    Ok(()) => subdirs.push(path),
                    // Gone, or closed to the watch's user (as unreadable ones are skipped).
                    Err(err) if is_vanished(&err) || is_denied(&err) => {}
                    Err(err) => return Err((path, err)),
                }
            }
            // Reversed so the stack pops them in name order.
            stack.extend(subdirs.into_iter().rev());
        }
        Ok(())
    }

    /// Forgets `wd` (the kernel dropped it, or is about to).
    fn forget(&mut self, wd: i32) {
        if let Some(path) = self.by_wd.remove(&wd) {
            if self.by_path.get(&path) == Some(&wd) {
                self.by_path.remove(&path);
            }
        }
    }

    /// Stops watching `path` and everything under it (it moved out of the watched tree, or
    /// away within it: the destination gets fresh watches when its `IN_MOVED_TO` arrives).
    fn unwatch_tree(&mut self, path: &Path) {
        let doomed: Vec<i32> = self
            .by_path
            .iter()
            .filter(|(p, _)| p.starts_with(path))
            .map(|(_, wd)| *wd)
            .collect();
        for wd in doomed {
            // A wd the kernel already dropped just fails, which is fine.
            let _ = hutch_sys::inotify::remove_watch(&*self.fd, wd);
            self.forget(wd);
        }
    }

    /// Turns a batch of raw events into protocol events.
    fn process(&mut self, buf: &[u8]) -> Vec<EventItem> {
        let mut out = Vec::new();
        let mut names = None;
        let mut offset = 0;
        while buf.len() - offset >= EVENT_HEADER {
            let field = |i: usize| {
                let at = offset + 4 * i;
                [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]
            };
            let wd = i32::from_ne_bytes(field(0));
            let mask = u32::from_ne_bytes(field(1));
            let len = u32::from_ne_bytes(field(3)) as usize;
            let name_start = offset + EVENT_HEADER;
            let Some(raw_name) = buf.get(name_start..name_start + len) else {
                // The kernel never splits an event across reads; a short one is a bug.
                out.push(Err(ConnectError::internal(
                    "watcher error: truncated inotify event",
                )));
                return out;
            };
            offset = name_start + len;
            // The name is NUL-padded to an alignment boundary.
            let name = raw_name.split(|b| *b == 0).next().unwrap_or(&[]);
            if !self.handle(wd, mask, OsStr::from_bytes(name), &mut out, &mut names) {
                return out;
            }
        }
        out
    }

    /// Handles one raw event; false once the watch has failed.
    fn handle(
        &mut self,
        wd: i32,
        mask: u32,
        name: &OsStr,
        out: &mut Vec<EventItem>,
        names: &mut Option<Names>,
    ) -> bool {
        if mask & IN_Q_OVERFLOW != 0 {
            out.push(Err(ConnectError::internal(
                "watcher error: the inotify event queue overflowed and events were lost; \
                 watch again",
            )));
            return false;
        }
        let Some(dir) = self.by_wd.get(&wd).cloned() else {
            // A watch already forgotten (removed while its events were queued).
            return true;
        };
        let path = if name.is_empty() {
            dir.clone()
        } else {
            dir.join(name)
        };
        if mask & (IN_IGNORED | IN_UNMOUNT) != 0 {
            self.forget(wd);
            return true;
        }
        if mask & IN_DELETE_SELF != 0 {
            self.forget(wd);
            // The watched parent reports the deletion already.
            if dir.parent().is_some_and(|p| self.by_path.contains_key(p)) {
                return true;
            }
        }
        if mask & IN_MOVE_SELF != 0 {
            if self.spec.recursive {
                // The parent's IN_MOVED_FROM/IN_MOVED_TO describe the move.
                return true;
            }
            // The directory is elsewhere now; its events would carry a stale path.
            self.unwatch_tree(&dir);
        }

        let mut types = Vec::with_capacity(2);
        if mask & (IN_CREATE | IN_MOVED_TO) != 0 {
            types.push(EventType::Create);
        }
        if mask & (IN_MOVED_FROM | IN_MOVE_SELF) != 0 {
            types.push(EventType::Rename);
        }
        if mask & IN_ATTRIB != 0 {
            types.push(EventType::Chmod);
        }
        if mask & IN_MODIFY != 0 {
            types.push(EventType::Write);
        }
        if mask & (IN_DELETE | IN_DELETE_SELF) != 0 {
            types.push(EventType::Remove);
        }
        for event_type in types {
            let event = self.event(&path, event_type, names);
            out.push(Ok(event));
        }

        if self.spec.recursive && mask & IN_ISDIR != 0 {
            if mask & IN_MOVED_FROM != 0 {
                self.unwatch_tree(&path);
            }
            if mask & (IN_CREATE | IN_MOVED_TO) != 0 {
                return self.watch_new_dir(&path, out, names);
            }
        }
        true
    }

    /// A directory appeared under a recursive watch: watch it and its subdirectories, and
    /// report what is already in it as created.
    fn watch_new_dir(
        &mut self,
        path: &Path,
        out: &mut Vec<EventItem>,
        names: &mut Option<Names>,
    ) -> bool {
        match self.add_watch(path, false) {
            Ok(()) => {}
            // Already gone again (or replaced by a file), or closed to the watch's user:
            // nothing to watch.
            Err(err) if is_vanished(&err) || is_denied(&err) => return true,
            Err(err) => {
                out.push(Err(add_error(path, &err)));
                return false;
            }
        }
        let mut found = Vec::new();
        let result = self.watch_subtree(path, &mut |p, _| found.push(p.to_owned()));
        for p in found {
            let event = self.event(&p, EventType::Create, names);
            out.push(Ok(event));
        }
        match result {
            Ok(()) => true,
            Err((p, err)) => {
                out.push(Err(add_error(&p, &err)));
                false
            }
        }
    }

    fn event(
        &self,
        path: &Path,
        event_type: EventType,
        names: &mut Option<Names>,
    ) -> FilesystemEvent {
        let entry = (self.spec.include_entry && carries_entry(event_type))
            .then(|| {
                let names =
                    names.get_or_insert_with(|| Names::load(&self.spec.passwd, &self.spec.group));
                // Best effort: the entry may be gone again by now.
                entry_info(path, names).ok()
            })
            .flatten();
        FilesystemEvent {
            name: relative_name(&self.spec.root, path),
            r#type: event_type as i32,
            entry,
        }
    }
}

/// Opens the directory `path` for reading with the thread's (acting) identity and closes it
/// again: fails as the kernel's permission check does. A symlink is followed only for the
/// root, as the watch does.
fn may_list(path: &Path, follow: bool) -> io::Result<()> {
    hutch_sys::fs::open_dir(path, follow)
        .map(drop)
        .map_err(io::Error::from)
}

/// The path disappeared or stopped being a directory between being seen and being watched.
fn is_vanished(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(errno::ENOENT) | Some(errno::ENOTDIR) | Some(errno::ELOOP)
    )
}

fn is_denied(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(errno::EACCES) | Some(errno::EPERM))
}

fn add_error(path: &Path, err: &io::Error) -> ConnectError {
    match err.raw_os_error() {
        Some(errno::ENOSPC) => ConnectError::new(
            Code::ResourceExhausted,
            format!(
                "error adding path {} to watcher: the inotify watch limit \
                 (fs.inotify.max_user_watches) is reached",
                path.display()
            ),
        ),
        Some(errno::EACCES) | Some(errno::EPERM) => ConnectError::new(
            Code::PermissionDenied,
            format!("error adding path {} to watcher: {err}", path.display()),
        ),
        Some(errno::ENOENT) => {
            ConnectError::not_found(format!("path {} not found", path.display()))
        }
        _ => ConnectError::internal(format!(
            "error adding path {} to watcher: {err}",
            path.display()
        )),
    }
}
