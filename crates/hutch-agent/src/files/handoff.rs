//! Files handed to the server open ([`FILE_HANDOFF_HEADER`]). For a download the agent does
//! everything it needs (authorisation, the user's path, ranges, preconditions, headers)
//! and, instead of copying the bytes into a socket, keeps the file open for the server to
//! take and send; for an upload the server reads ([`UploadOpen`]) it opens the file as an
//! upload would and the server writes the bytes.
//!
//! [`UploadOpen`]: hutch_contracts::agent::UploadOpen

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use hutch_contracts::agent::{
    FileHandoff, HandoffSegment, UploadHandoff, WrittenFile, FILE_HANDOFF_HEADER, FILE_HANDOFF_MIN,
};

use super::download::{self, Segment};
use super::FileError;

/// Filesystems whose reads only wait on this host's disks: ext4, overlayfs, tmpfs, XFS,
/// Btrfs. A file anywhere else (FUSE, a network filesystem) could make the server's reading
/// thread wait on whatever serves it, so its bytes stay in the agent.
const LOCAL_FILESYSTEMS: [u32; 5] = [0xef53, 0x794c_7630, 0x0102_1994, 0x5846_5342, 0x9123_683e];

/// Whether the request asks for a hand-off.
pub fn requested(headers: &HeaderMap) -> bool {
    headers
        .get(FILE_HANDOFF_HEADER)
        .is_some_and(|v| v.as_bytes() == b"1")
}

/// The hand-off answer for a download of `file` that would have been `status`, `headers`
/// and `segments`; the file back when this download is not one to hand off (too short, not
/// a regular file on a local filesystem, a header that is not text).
pub fn respond(
    status: StatusCode,
    headers: &HeaderMap,
    file: File,
    segments: &[Segment],
) -> Result<Response, File> {
    let Some(handoff) = describe(status, headers, &file, segments) else {
        return Err(file);
    };
    let line = match serde_json::to_vec(&handoff) {
        Ok(line) => line,
        Err(_) => return Err(file),
    };
    tracing::debug!(fd = handoff.fd, "handing a download's file to the server");
    Ok(hold_open(line, file))
}

/// The answer to an [`UploadOpen`](hutch_contracts::agent::UploadOpen): `file`, open for
/// writing, handed over with what the upload will answer for it.
pub fn hand_over_upload(file: File, written: WrittenFile) -> Result<Response, FileError> {
    let meta = file.metadata().map_err(|e| {
        FileError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("error getting file info: {e}"),
        )
    })?;
    let handoff = UploadHandoff {
        fd: file.as_raw_fd(),
        dev: meta.dev(),
        ino: meta.ino(),
        file: written,
    };
    let line = serde_json::to_vec(&handoff)
        .map_err(|e| FileError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    tracing::debug!(fd = handoff.fd, "handing an upload's file to the server");
    Ok(hold_open(line, file))
}

/// A hand-off answer: `line` and a line end, then a body that stays open (and `file` with
/// it) until the server, having taken the descriptor, drops the connection.
fn hold_open(mut line: Vec<u8>, file: File) -> Response {
    line.push(b'\n');
    let hold = async move {
        let _open = file;
        std::future::pending::<io::Result<Bytes>>().await
    };
    let body = futures_util::stream::once(async move { Ok(Bytes::from(line)) })
        .chain(futures_util::stream::once(hold));
    let mut response = Body::from_stream(body).into_response();
    let h = response.headers_mut();
    h.insert(FILE_HANDOFF_HEADER, HeaderValue::from_static("1"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn describe(
    status: StatusCode,
    headers: &HeaderMap,
    file: &File,
    segments: &[Segment],
) -> Option<FileHandoff> {
    if download::content_length(segments)? < FILE_HANDOFF_MIN {
        return None;
    }
    let meta = file.metadata().ok()?;
    let magic = hutch_sys::fs::fd_fs_magic(file).ok()?;
    if !meta.is_file() || !LOCAL_FILESYSTEMS.contains(&magic) {
        return None;
    }
    let headers = headers
        .iter()
        .map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect::<Option<Vec<_>>>()?;
    let segments = segments
        .iter()
        .map(|s| match s {
            Segment::File { start, len } => Some(HandoffSegment::File {
                start: *start,
                len: *len,
            }),
            Segment::Literal(bytes) => Some(HandoffSegment::Literal(
                String::from_utf8(bytes.to_vec()).ok()?,
            )),
            Segment::ToEnd => None,
        })
        .collect::<Option<Vec<_>>>()?;
    Some(FileHandoff {
        status: status.as_u16(),
        headers,
        fd: file.as_raw_fd(),
        dev: meta.dev(),
        ino: meta.ino(),
        segments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_of(len: u64) -> File {
        let path = std::env::temp_dir().join(format!("hutch-handoff-{}-{len}", std::process::id()));
        let f = File::create(&path).unwrap();
        f.set_len(len).unwrap();
        let f = File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        f
    }

    fn whole(len: u64) -> Vec<Segment> {
        vec![Segment::File { start: 0, len }]
    }

    #[test]
    fn short_downloads_keep_their_bytes() {
        let f = file_of(FILE_HANDOFF_MIN - 1);
        assert!(describe(
            StatusCode::OK,
            &HeaderMap::new(),
            &f,
            &whole(FILE_HANDOFF_MIN - 1)
        )
        .is_none());
    }

    #[test]
    fn describes_status_headers_file_and_segments() {
        let len = FILE_HANDOFF_MIN * 2;
        let f = file_of(len);
        let local = hutch_sys::fs::fd_fs_magic(&f).is_ok_and(|m| LOCAL_FILESYSTEMS.contains(&m));
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        let segments = vec![
            Segment::Literal(Bytes::from_static(b"--b\r\n")),
            Segment::File { start: 5, len },
        ];
        let Some(h) = describe(StatusCode::PARTIAL_CONTENT, &headers, &f, &segments) else {
            assert!(!local, "a file on a local filesystem is handed off");
            return;
        };
        assert_eq!(h.status, 206);
        assert_eq!(
            h.headers,
            vec![("content-length".to_owned(), len.to_string())]
        );
        assert_eq!(h.fd, f.as_raw_fd());
        assert_eq!(h.ino, f.metadata().unwrap().ino());
        assert_eq!(
            h.segments,
            vec![
                HandoffSegment::Literal("--b\r\n".to_owned()),
                HandoffSegment::File { start: 5, len }
            ]
        );
    }

    #[test]
    fn streams_to_end_of_file_are_not_handed_off() {
        let f = file_of(FILE_HANDOFF_MIN * 2);
        assert!(describe(StatusCode::OK, &HeaderMap::new(), &f, &[Segment::ToEnd]).is_none());
    }

    #[test]
    fn only_the_exact_value_asks() {
        let mut h = HeaderMap::new();
        assert!(!requested(&h));
        h.insert(FILE_HANDOFF_HEADER, HeaderValue::from_static("yes"));
        assert!(!requested(&h));
        h.insert(FILE_HANDOFF_HEADER, HeaderValue::from_static("1"));
        assert!(requested(&h));
    }
}
