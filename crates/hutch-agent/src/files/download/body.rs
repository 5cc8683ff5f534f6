//! Response bodies of `GET /files`: the segments a body is made of (whole file, ranges, the
//! `multipart/byteranges` framing) and streaming them, plain or gzipped, from a blocking thread
//! without holding more than a few chunks in memory.

use hutch_sys::errno;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;

use axum::body::Body;
use bytes::Bytes;
use futures_util::stream;
use tokio::sync::mpsc;

use super::ByteRange;

/// Bytes read from disk per chunk sent.
const CHUNK: usize = 128 << 10;
/// Chunks in flight between the reading thread and the connection.
const IN_FLIGHT: usize = 4;

/// A piece of a response body: literal bytes (multipart framing) or a span of the file.
#[derive(Debug, Clone)]
pub enum Segment {
    /// Bytes sent as they are.
    Literal(Bytes),
    /// `len` bytes of the file from `start`.
    File {
        /// First byte.
        start: u64,
        /// Number of bytes.
        len: u64,
    },
    /// Everything the file yields until end of file, however long that is.
    ToEnd,
}

impl Segment {
    fn len(&self) -> Option<u64> {
        match self {
            Segment::Literal(b) => Some(b.len() as u64),
            Segment::File { len, .. } => Some(*len),
            Segment::ToEnd => None,
        }
    }
}

/// The total length of `segments` (the response's `Content-Length`), `None` when a segment
/// runs to end of file.
pub fn content_length(segments: &[Segment]) -> Option<u64> {
    segments.iter().map(Segment::len).sum()
}

/// Whether `stat`'s size says nothing about how many bytes reading `file` yields: device files,
/// FIFOs, empty-looking files (procfs reports 0) and kernel pseudo filesystems (sysfs reports
/// 4096 for a two-byte value). Those are streamed to end of file, without ranges or a length.
pub fn size_is_unreliable(file: &File, meta: &std::fs::Metadata) -> bool {
    if !meta.is_file() || meta.len() == 0 {
        return true;
    }
    // proc, sysfs, cgroup v1/v2, debugfs, tracefs, securityfs, configfs, bpf.
    const PSEUDO: [i64; 9] = [
        0x9fa0,
        0x6265_6572,
        0x0027_e0eb,
        0x6367_7270,
        0x6462_6720,
        0x7472_6163,
        0x7363_6673,
        0x6265_6570,
        0xcafe_4a11,
    ];
    hutch_sys::fs::fd_fs_magic(file).is_ok_and(|magic| PSEUDO.contains(&i64::from(magic)))
}

/// The segments of a `multipart/byteranges` body for `ranges` (the framing Go's `ServeContent`
/// produces: parts separated by `--boundary`, each with its `Content-Range`).
pub fn byteranges(
    ranges: &[ByteRange],
    size: u64,
    content_type: &str,
    boundary: &str,
) -> Vec<Segment> {
    let mut segments = Vec::with_capacity(ranges.len() * 2 + 1);
    for (i, r) in ranges.iter().enumerate() {
        let lead = if i == 0 { "" } else { "\r\n" };
        let head = format!(
            "{lead}--{boundary}\r\nContent-Range: bytes {}-{}/{size}\r\nContent-Type: {content_type}\r\n\r\n",
            r.start,
            r.start + r.len - 1
        );
        segments.push(Segment::Literal(Bytes::from(head)));
        segments.push(Segment::File {
            start: r.start,
            len: r.len,
        });
    }
    segments.push(Segment::Literal(Bytes::from(format!(
        "\r\n--{boundary}--\r\n"
    ))));
    segments
}

/// Reads the file's first byte, so that a file that cannot be read at all is told apart
/// before any of the response is sent. Files without offsets (pipes) count as readable.
pub fn first_read(file: &File) -> io::Result<()> {
    let mut probe = [0u8; 1];
    match read_at_retrying(file, &mut probe, 0) {
        Err(e) if e.raw_os_error() == Some(errno::ESPIPE) => Ok(()),
        Err(e) => Err(e),
        Ok(_) => Ok(()),
    }
}

/// A body that streams `segments` of `file` from a blocking thread.
pub fn segments_body(file: File, segments: Vec<Segment>) -> Body {
    spawn_body(move |tx| send_segments(&file, &segments, tx))
}

/// A body that streams `file` from its start to its end, gzip-compressed on the fly.
pub fn gzip_body(file: File) -> Body {
    spawn_body(move |tx| send_gzip(file, tx))
}

type Sender = mpsc::Sender<io::Result<Bytes>>;

/// Runs `produce` on a blocking thread, forwarding what it sends as the body. A producer error
/// ends the body with an error, which makes the server abort the response instead of sending a
/// silently truncated file.
fn spawn_body(produce: impl FnOnce(&Sender) -> io::Result<()> + Send + 'static) -> Body {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(IN_FLIGHT);
    tokio::task::spawn_blocking(move || {
        if let Err(err) = produce(&tx) {
            if err.kind() != io::ErrorKind::BrokenPipe {
                tracing::warn!(error = %err, "file download failed mid-stream");
            }
            let _ = tx.blocking_send(Err(err));
        }
    });
    let chunks = stream::unfold(rx, |mut rx| async move {
        let item = rx.recv().await?;
        Some((item, rx))
    });
    Body::from_stream(chunks)
}

/// Hands a chunk to the connection; `BrokenPipe` once the client has gone.
fn send(tx: &Sender, chunk: Bytes) -> io::Result<()> {
    tx.blocking_send(Ok(chunk))
        .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
}

fn send_segments(file: &File, segments: &[Segment], tx: &Sender) -> io::Result<()> {
    for segment in segments {
        match segment {
            Segment::Literal(bytes) => send(tx, bytes.clone())?,
            Segment::File { start, len } => {
                let (mut offset, end) = (*start, start.saturating_add(*len));
                while offset < end {
                    let want = usize::try_from(end - offset).unwrap_or(CHUNK).min(CHUNK);
                    let mut buf = vec![0u8; want];
                    let n = read_at_retrying(file, &mut buf, offset)?;
                    if n == 0 {
                        // The file shrank after its size was announced.
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("the file ended at byte {offset} while being sent"),
                        ));
                    }
                    buf.truncate(n);
                    offset += n as u64;
                    send(tx, Bytes::from(buf))?;
                }
            }
            Segment::ToEnd => {
                let mut reader = file;
                loop {
                    let mut buf = vec![0u8; CHUNK];
                    let n = match reader.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                        Err(err) => return Err(err),
                    };
                    buf.truncate(n);
                    send(tx, Bytes::from(buf))?;
                }
            }
        }
    }
    Ok(())
}

fn read_at_retrying(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    loop {
        match file.read_at(buf, offset) {
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

fn send_gzip(mut file: File, tx: &Sender) -> io::Result<()> {
    // Level 1: for multi-gigabyte files throughput matters more than the last few percent of
    // ratio, and the sandbox's CPU is the user's.
    let mut encoder =
        flate2::write::GzEncoder::new(Vec::with_capacity(CHUNK), flate2::Compression::fast());
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        encoder.write_all(buf.get(..n).unwrap_or_default())?;
        if encoder.get_ref().len() >= CHUNK {
            let out = std::mem::replace(encoder.get_mut(), Vec::with_capacity(CHUNK));
            send(tx, Bytes::from(out))?;
        }
    }
    let rest = encoder.finish()?;
    if !rest.is_empty() {
        send(tx, Bytes::from(rest))?;
    }
    Ok(())
}
