//! The disk side of `POST /files`, run on a blocking thread: the request body arrives through a
//! bounded channel, is un-gzipped and split into parts as it streams, and each part is written
//! straight to its file. Memory use is a few chunks, whatever the upload's size.

use hutch_sys::errno;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use axum::http::StatusCode;
use bytes::{Buf, Bytes};
use tokio::sync::mpsc;

use hutch_contracts::agent::{upload_disk_full, UploadOpen, WrittenFile};

use super::multipart::{self, Event, Parser};
use super::paths::{self, EnsureDirsError};
use super::{xattr, FileError};
use crate::users::User;

/// Bytes read from the (decoded) body at a time.
const CHUNK: usize = 128 << 10;

/// How the body carries the file(s): raw (`?path=` names the file) or multipart.
pub use hutch_contracts::multipart::UploadBody as BodyKind;

/// Everything the blocking side needs to know about an upload.
#[derive(Debug, Clone)]
pub struct UploadPlan {
    /// Who the files will belong to; relative paths resolve against their home.
    pub user: User,
    /// The `path` query parameter.
    pub path: Option<String>,
    /// Raw or multipart.
    pub kind: BodyKind,
    /// Whether the body is gzip-compressed (`Content-Encoding: gzip`).
    pub gzip: bool,
    /// The metadata every written file gets (replacing what it had).
    pub metadata: BTreeMap<String, String>,
    /// The request's `Content-Length`, for the "disk full" message.
    pub content_length: Option<u64>,
}

/// A `Read` over the request body chunks the async side forwards.
pub struct BodyReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl BodyReader {
    /// Reads what arrives on `rx` until it closes (end of body) or yields an error.
    pub fn new(rx: mpsc::Receiver<io::Result<Bytes>>) -> Self {
        Self {
            rx,
            current: Bytes::new(),
        }
    }
}

impl Read for BodyReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = {
            let chunk = self.fill_buf()?;
            let n = out.len().min(chunk.len());
            out.get_mut(..n)
                .unwrap_or_default()
                .copy_from_slice(chunk.get(..n).unwrap_or_default());
            n
        };
        self.consume(n);
        Ok(n)
    }
}

/// The chunks as they arrived, without copying them into a buffer of the reader's own.
impl BufRead for BodyReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(err)) => return Err(err),
                None => break,
            }
        }
        Ok(&self.current)
    }

    fn consume(&mut self, n: usize) {
        self.current.advance(n.min(self.current.len()));
    }
}

/// Where a read from the body failed: the client's fault, not the disk's.
fn body_error(err: io::Error) -> FileError {
    FileError::new(
        StatusCode::BAD_REQUEST,
        format!("error reading the request body: {err}"),
    )
}

/// Performs the upload. Must run on a blocking thread.
pub fn run(plan: &UploadPlan, body: impl BufRead) -> Result<Vec<WrittenFile>, FileError> {
    let _acting = FileError::acting(&plan.user)?;
    let mut source: Box<dyn BufRead> = if plan.gzip {
        // Multi-member: concatenated gzip streams are one valid body (as Go's reader accepts).
        Box::new(BufReader::with_capacity(
            CHUNK,
            flate2::read::MultiGzDecoder::new(body),
        ))
    } else {
        Box::new(body)
    };
    match &plan.kind {
        BodyKind::Raw => {
            let path = resolve(&target_path(plan, false, None)?, &plan.user)?;
            let mut target = Target::create(&path, &plan.user)?;
            loop {
                let n = match source.fill_buf() {
                    Ok([]) => break,
                    Ok(data) => {
                        target.write(data, plan)?;
                        data.len()
                    }
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                    Err(err) => return Err(body_error(err)),
                };
                source.consume(n);
            }
            Ok(vec![target.finish(plan)?])
        }
        BodyKind::Multipart(boundary) => multipart_upload(plan, boundary, &mut source),
    }
}

fn multipart_upload(
    plan: &UploadPlan,
    boundary: &str,
    source: &mut dyn BufRead,
) -> Result<Vec<WrittenFile>, FileError> {
    let bad_form = |err: multipart::MultipartError| {
        FileError::new(
            StatusCode::BAD_REQUEST,
            format!("error reading form: {err}"),
        )
    };
    let mut parser = Parser::new(boundary).map_err(bad_form)?;
    let mut written: Vec<WrittenFile> = Vec::new();
    // The part being written: `Some(None)` for a part that is not a file (skipped).
    let mut current: Option<Option<Target>> = None;
    loop {
        let n = match source.fill_buf() {
            Ok(data) => {
                if data.is_empty() {
                    parser.finish();
                } else {
                    parser.push(data);
                }
                data.len()
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(body_error(err)),
        };
        source.consume(n);
        while let Some(event) = parser.next_event().map_err(bad_form)? {
            match event {
                Event::PartStart(headers) => {
                    if headers.form_name() != Some("file") {
                        current = Some(None);
                        continue;
                    }
                    let raw = target_path(plan, true, headers.filename.as_deref())?;
                    let path = resolve(&raw, &plan.user)?;
                    check_duplicate(&path, written.iter().map(|w| w.path.as_str()))?;
                    current = Some(Some(Target::create(&path, &plan.user)?));
                }
                Event::Data(data) => {
                    if let Some(Some(target)) = current.as_mut() {
                        target.write(&data, plan)?;
                    }
                }
                Event::PartEnd => {
                    if let Some(Some(target)) = current.take() {
                        written.push(target.finish(plan)?);
                    }
                }
                Event::End => return Ok(written),
            }
        }
        if n == 0 {
            // finish() makes the parser report End or an error; this is unreachable in practice
            // but must not loop forever.
            return Ok(written);
        }
    }
}

/// Opens the file an upload the server reads itself names ([`UploadOpen`]), doing all an
/// upload does except writing the bytes: the metadata is stored now (an upload that fails
/// later leaves it with partial content, as one the agent reads would). Must run on a
/// blocking thread.
pub fn open_for_server(
    plan: &UploadPlan,
    open: &UploadOpen,
) -> Result<(File, WrittenFile), FileError> {
    let _acting = FileError::acting(&plan.user)?;
    let raw = target_path(plan, open.multipart, open.filename.as_deref())?;
    let path = resolve(&raw, &plan.user)?;
    check_duplicate(&path, open.written.iter().map(String::as_str))?;
    let target = Target::create(&path, &plan.user)?;
    let written = target.finish(plan)?;
    Ok((target.file, written))
}

/// The path a file of an upload goes to, as the client gave it: the `path` query parameter,
/// else (for a multipart part) the part's `filename`.
fn target_path(
    plan: &UploadPlan,
    multipart: bool,
    filename: Option<&str>,
) -> Result<String, FileError> {
    match (plan.path.as_deref(), multipart, filename) {
        (Some(path), _, _) => Ok(path.to_owned()),
        (None, true, Some(name)) => Ok(name.to_owned()),
        (None, false, _) => Err(FileError::new(
            StatusCode::BAD_REQUEST,
            "path query parameter is required for raw body upload",
        )),
        (None, true, None) => Err(FileError::new(
            StatusCode::BAD_REQUEST,
            "error getting multipart custom part file name: filename not found in Content-Disposition header",
        )),
    }
}

fn resolve(raw: &str, user: &User) -> Result<PathBuf, FileError> {
    paths::resolve(raw, user).map_err(|err| {
        FileError::new(
            StatusCode::BAD_REQUEST,
            format!("error resolving path: {err}"),
        )
    })
}

fn check_duplicate<'a>(
    path: &Path,
    written: impl Iterator<Item = &'a str> + Clone,
) -> Result<(), FileError> {
    let display = path.to_string_lossy();
    if !written.clone().any(|w| w == display) {
        return Ok(());
    }
    let others: Vec<&str> = written.filter(|p| *p != display).collect();
    let mut message = format!(
        "you cannot upload multiple files to the same path '{display}' in one upload request, only the first specified file was uploaded"
    );
    if !others.is_empty() {
        message.push_str(&format!(
            ", also the following files were uploaded: {}",
            others.join(", ")
        ));
    }
    Err(FileError::new(StatusCode::BAD_REQUEST, message))
}

/// Whether an I/O error means the disk (or the user's quota) is full.
fn is_no_space(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(errno::ENOSPC | errno::EDQUOT))
}

/// A file being written.
struct Target {
    path: PathBuf,
    file: File,
    written: u64,
}

impl Target {
    /// Creates (or truncates) `path` for `user`, making missing parent directories theirs too.
    fn create(path: &Path, user: &User) -> Result<Self, FileError> {
        if let Some(parent) = path.parent() {
            paths::ensure_dirs(parent, user.uid, user.gid).map_err(|err| {
                let status = match &err {
                    EnsureDirsError::NotADirectory(_) => StatusCode::BAD_REQUEST,
                    e if e.os_error().is_some_and(is_no_space) => StatusCode::INSUFFICIENT_STORAGE,
                    e if e
                        .os_error()
                        .is_some_and(|e| e.kind() == io::ErrorKind::PermissionDenied) =>
                    {
                        StatusCode::FORBIDDEN
                    }
                    _ => StatusCode::INTERNAL_SERVER_ERROR,
                };
                FileError::new(status, format!("error ensuring directories: {err}"))
            })?;
        }
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_dir() => {
                return Err(FileError::new(
                    StatusCode::BAD_REQUEST,
                    format!("path is a directory: {}", path.display()),
                ))
            }
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => {
                return Err(FileError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("error getting file info: {err}"),
                ))
            }
        }
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o666)
            .open(path)
            .map_err(|err| {
                if is_no_space(&err) {
                    FileError::new(
                        StatusCode::INSUFFICIENT_STORAGE,
                        format!("not enough inodes available: {err}"),
                    )
                } else if err.kind() == io::ErrorKind::PermissionDenied {
                    FileError::new(
                        StatusCode::FORBIDDEN,
                        format!(
                            "permission denied: user '{}' may not write {}: {err}",
                            user.name,
                            path.display()
                        ),
                    )
                } else {
                    FileError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("error opening file: {err}"),
                    )
                }
            })?;
        // An overwritten file changes hands too (as in envd): the uploader owns what it wrote.
        // The request acts as the user, so that works for what the user owns (and for root);
        // a file the user may write but does not own stays its owner's.
        match std::os::unix::fs::fchown(&file, Some(user.uid), Some(user.gid)) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::PermissionDenied => {}
            Err(err) => {
                return Err(FileError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("error changing file ownership: {err}"),
                ))
            }
        }
        Ok(Self {
            path: path.to_owned(),
            file,
            written: 0,
        })
    }

    fn write(&mut self, data: &[u8], plan: &UploadPlan) -> Result<(), FileError> {
        self.file.write_all(data).map_err(|err| {
            if is_no_space(&err) {
                FileError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    upload_disk_full(plan.content_length),
                )
            } else {
                FileError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("error writing file: {err}"),
                )
            }
        })?;
        self.written += data.len() as u64;
        Ok(())
    }

    /// Stores the metadata and describes the file for the response.
    fn finish(&self, plan: &UploadPlan) -> Result<WrittenFile, FileError> {
        match xattr::replace(self.file.as_fd(), &plan.metadata) {
            Ok(()) => {}
            // /proc, /sys and old tmpfs have no user attributes; the content is written, and the
            // answer below reads attributes back, so it will not claim metadata it lacks.
            Err(err) if xattr::is_unsupported(&err) => {
                if !plan.metadata.is_empty() {
                    tracing::warn!(path = %self.path.display(), error = %err, "filesystem has no xattrs; metadata not stored");
                }
            }
            Err(err) if is_no_space(&err) => {
                return Err(FileError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    format!("not enough space for file metadata: {err}"),
                ))
            }
            Err(err) => {
                return Err(FileError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("error writing file metadata: {err}"),
                ))
            }
        }
        let metadata = match xattr::read_fd(self.file.as_fd()) {
            Ok(m) => m,
            Err(err) => {
                tracing::warn!(path = %self.path.display(), error = %err, "cannot read back file metadata");
                BTreeMap::new()
            }
        };
        tracing::debug!(path = %self.path.display(), bytes = self.written, "file written");
        Ok(WrittenFile {
            name: self
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            path: self.path.to_string_lossy().into_owned(),
            kind: "file".to_owned(),
            metadata: (!metadata.is_empty()).then_some(metadata),
        })
    }
}
