//! The server's side of a download the agent hands off as an open file
//! ([`FILE_HANDOFF_HEADER`]): take the descriptor from the agent with `pidfd_getfd(2)` while
//! the agent still holds it, check it is the file announced and a file of the sandbox's own
//! filesystem, then send the bytes from here. One process and one TCP connection fewer
//! carry them than when the agent streams them through the router.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Response, StatusCode};
use bytes::Bytes;
use http_body_util::BodyExt;
use hutch_contracts::agent::{FileHandoff, HandoffSegment};

/// The longest first line of a hand-off body the server reads.
const LINE_LIMIT: usize = 64 << 10;
/// Bytes read per chunk sent.
const CHUNK: usize = 1 << 20;
/// Chunks in flight between the reading thread and the client's connection.
const IN_FLIGHT: usize = 4;

/// Reads the hand-off line of `response` (from the agent of the sandbox whose PID 1 is
/// `init`, host pid and start time) and takes the file it names.
pub async fn take(
    response: Response<hyper::body::Incoming>,
    init: (i32, u64),
) -> Result<(FileHandoff, File), String> {
    let (handoff, body) = read_line::<FileHandoff>(response).await?;
    // The agent keeps the descriptor open until `body` is dropped, after this.
    let file = grab(init, handoff.fd, handoff.dev, handoff.ino)
        .map_err(|e| format!("taking the handed-off file: {e}"))?;
    drop(body);
    Ok((handoff, file))
}

/// The first line of a hand-off answer, and the rest of its body: the agent holds the
/// descriptor the line names until that body is dropped.
pub async fn read_line<T: serde::de::DeserializeOwned>(
    response: Response<hyper::body::Incoming>,
) -> Result<(T, hyper::body::Incoming), String> {
    let mut body = response.into_body();
    let mut line = Vec::new();
    let end = loop {
        if let Some(end) = line.iter().position(|b| *b == b'\n') {
            break end;
        }
        if line.len() > LINE_LIMIT {
            return Err("the agent's hand-off line is too long".into());
        }
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    line.extend_from_slice(&data);
                }
            }
            Some(Err(e)) => return Err(format!("reading the agent's hand-off: {e}")),
            None => return Err("the agent ended its hand-off before the file was taken".into()),
        }
    };
    let value = serde_json::from_slice(line.get(..end).unwrap_or_default())
        .map_err(|e| format!("the agent's hand-off: {e}"))?;
    Ok((value, body))
}

/// Takes descriptor `fd` from the agent of the sandbox whose PID 1 is `init`, checking it is
/// the regular file `dev`/`ino` and lies on the sandbox's own mounts.
pub fn grab(init: (i32, u64), fd: i32, dev: u64, ino: u64) -> io::Result<File> {
    let (pid, start) = init;
    let pidfd = hutch_sys::fd::pidfd(pid)?;
    // The pidfd pins the process; the start time says it is still the sandbox's PID 1.
    if hutch_runtime::proc::start_time(pid) != Some(start) {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "the sandbox is gone",
        ));
    }
    let file = File::from(hutch_sys::fd::take_fd(&pidfd, fd)?);
    let meta = file.metadata()?;
    if !meta.is_file() || meta.dev() != dev || meta.ino() != ino {
        return Err(io::Error::other("the descriptor is not the file announced"));
    }
    // Whatever the agent says, only a file of the sandbox's own mounts is used this way.
    if !hutch_runtime::proc::fd_is_in_mounts_of(&file, pid) {
        return Err(io::Error::other(
            "the file is not on the sandbox's filesystem",
        ));
    }
    Ok(file)
}

/// The response the agent described, its body read from `file` here.
pub fn response(handoff: FileHandoff, file: File) -> Result<Response<Body>, String> {
    let status = StatusCode::from_u16(handoff.status).map_err(|e| e.to_string())?;
    let mut response = Response::new(Body::empty());
    for (name, value) in &handoff.headers {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
        let value = HeaderValue::from_str(value).map_err(|e| e.to_string())?;
        response.headers_mut().append(name, value);
    }
    *response.status_mut() = status;
    *response.body_mut() = body(file, handoff.segments);
    Ok(response)
}

fn body(file: File, segments: Vec<HandoffSegment>) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(IN_FLIGHT);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = produce(&file, segments, &tx) {
            // Ends the response with an error, so the client sees a cut transfer, never a
            // short one that looks complete.
            let _ = tx.blocking_send(Err(e));
        }
    });
    Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        let item = rx.recv().await?;
        Some((item, rx))
    }))
}

fn produce(
    file: &File,
    segments: Vec<HandoffSegment>,
    tx: &tokio::sync::mpsc::Sender<io::Result<Bytes>>,
) -> io::Result<()> {
    let send = |chunk: Bytes| {
        tx.blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    };
    for segment in segments {
        match segment {
            HandoffSegment::Literal(text) => send(Bytes::from(text))?,
            HandoffSegment::File { start, len } => {
                let (mut at, end) = (start, start.saturating_add(len));
                while at < end {
                    let want = usize::try_from(end - at).unwrap_or(CHUNK).min(CHUNK);
                    let chunk = hutch_sys::fd::pread_new(file, want, at)?;
                    if chunk.is_empty() {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("the file ended at byte {at} while being sent"),
                        ));
                    }
                    at += chunk.len() as u64;
                    send(Bytes::from(chunk))?;
                }
            }
        }
    }
    Ok(())
}
