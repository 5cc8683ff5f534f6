//! Uploads the server reads itself. For a large `POST /files` to the agent the server reads
//! the body here (the raw file, or `multipart/form-data` it parses), asks the agent to open
//! each file the body names ([`UploadOpen`]: the agent authorises, resolves the path for the
//! user, creates the file, gives it to the user and stores its metadata as for any upload),
//! takes the descriptor with `pidfd_getfd(2)` and writes the bytes into it from a thread of
//! its own. The bytes skip the TCP hop into the sandbox, the agent's copies and its thread
//! switches.
//!
//! Until the agent has opened a first file every chunk read is kept, so an agent that does not
//! know the request (one older than this), or a body with no file in it (which the agent must
//! still authorise), goes to the agent the usual way, body and all, and its answer is the
//! client's.

use std::fs::File;
use std::io::{self, Write};

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use bytes::Bytes;
use futures_util::StreamExt;
use http::request::Parts;
use http_body_util::BodyExt;
use hutch_contracts::agent::{
    upload_disk_full, UploadHandoff, UploadOpen, WrittenFile, FILE_HANDOFF_HEADER,
    FILE_HANDOFF_MIN, UPLOAD_REFUSED, UPLOAD_REFUSED_UNAUTHORISED,
};
use hutch_contracts::multipart::{self, Event, Parser};
use tokio::sync::mpsc;

use super::handoff;
use crate::agent_http::HttpClient;

/// The most body bytes kept, before the agent opens a first file, to send again should it
/// not; past this the upload goes to the agent the usual way.
const REPLAY_LIMIT: usize = 16 << 20;
/// How much of a body is read and discarded after an upload failed, so the client gets to
/// read the answer instead of a reset while it is still sending (as the agent does).
const DRAIN_LIMIT: u64 = 1 << 30;
/// Batches queued for the writing thread.
const IN_FLIGHT: usize = 8;
/// Bytes of body chunks gathered before they go to the writing thread in one batch (one
/// wake-up and one `writev` for several chunks).
const BATCH: usize = 512 << 10;
/// The longest error answer of the agent passed on.
const ANSWER_LIMIT: usize = 64 << 10;

/// How the body carries the file(s).
pub use hutch_contracts::multipart::UploadBody as Kind;

/// Whether the server reads this `POST /files` itself: a body that is not compressed, of
/// [`FILE_HANDOFF_MIN`] bytes or more (or of a length not announced), raw or multipart with
/// a usable boundary. Anything else the agent reads, as it always did.
pub fn eligible(headers: &HeaderMap) -> Option<Kind> {
    if let Some(encoding) = headers.get(header::CONTENT_ENCODING) {
        let encoding = encoding.to_str().ok()?.trim();
        if !(encoding.is_empty() || encoding.eq_ignore_ascii_case("identity")) {
            return None;
        }
    }
    if let Some(len) = headers.get(header::CONTENT_LENGTH) {
        let len: u64 = len.to_str().ok()?.trim().parse().ok()?;
        if len < FILE_HANDOFF_MIN {
            return None;
        }
    }
    let content_type = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let kind = Kind::from_content_type(content_type)?.ok()?;
    if let Kind::Multipart(boundary) = &kind {
        Parser::new(boundary).ok()?;
    }
    Some(kind)
}

/// What became of an upload.
pub enum Outcome {
    /// The server wrote it (or failed to): this is the answer.
    Answered(Response<Body>),
    /// The agent read it the usual way: its answer.
    Proxied(Response<hyper::body::Incoming>),
}

/// Carries out the upload `parts` (already addressed to the agent) with `body`, for the
/// sandbox whose PID 1 is `init`. An error is an agent that could not be reached.
pub async fn run(
    http: &HttpClient,
    init: (i32, u64),
    parts: Parts,
    body: Body,
    kind: Kind,
) -> Result<Outcome, String> {
    let mut upload = Upload {
        http,
        init,
        open_headers: open_headers(&parts.headers),
        content_length: parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok()),
        parts,
        stream: body.into_data_stream(),
        kept: Some(Vec::new()),
        kept_len: 0,
        writer: None,
        batch: Vec::new(),
        batch_len: 0,
        written: Vec::new(),
    };
    let step = match kind {
        Kind::Raw => upload.raw().await,
        Kind::Multipart(boundary) => upload.multipart(&boundary).await,
    };
    match step {
        Step::Done => upload.finish().await,
        Step::Fail(status, message) => {
            upload.fail(status, &message).await;
            Ok(Outcome::Answered(
                upload.drain_then(error(status, &message)).await,
            ))
        }
        Step::Refused(answer, drain) => {
            upload
                .fail(answer.status(), "the agent refused a file")
                .await;
            if !drain {
                return Ok(Outcome::Answered(answer));
            }
            Ok(Outcome::Answered(upload.drain_then(answer).await))
        }
        Step::Agent => upload.the_usual_way().await,
    }
}

/// Where reading the body stopped.
enum Step {
    /// The body ended (or its multipart end was seen) with every file handed to the writer.
    Done,
    /// The upload failed with this status and message.
    Fail(StatusCode, String),
    /// The agent refused a file: its answer, and whether the client's body is to be read to
    /// its end first.
    Refused(Response<Body>, bool),
    /// The agent is to read the upload (the body is all kept).
    Agent,
}

/// What the agent answered to an [`UploadOpen`].
enum Opened {
    File(File, WrittenFile),
    /// No hand-off: the agent's answer.
    Not(Response<hyper::body::Incoming>),
}

struct Upload<'a> {
    http: &'a HttpClient,
    init: (i32, u64),
    /// The client's request, addressed to the agent, without its body.
    parts: Parts,
    /// The headers of an [`UploadOpen`] request.
    open_headers: HeaderMap,
    content_length: Option<u64>,
    stream: axum::body::BodyDataStream,
    /// Every chunk read so far, until the agent opens a first file.
    kept: Option<Vec<Bytes>>,
    kept_len: usize,
    writer: Option<Writer>,
    /// Chunks of the current file not yet given to the writer.
    batch: Vec<Bytes>,
    batch_len: usize,
    written: Vec<WrittenFile>,
}

impl Upload<'_> {
    /// The next chunk of the body (`Ok(None)` at its end), kept while it may be sent again.
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, Step> {
        match self.stream.next().await {
            None => Ok(None),
            Some(Err(e)) => Err(Step::Fail(
                StatusCode::BAD_REQUEST,
                format!("error reading the request body: {e}"),
            )),
            Some(Ok(chunk)) => {
                if let Some(kept) = self.kept.as_mut() {
                    self.kept_len += chunk.len();
                    kept.push(chunk.clone());
                    if self.kept_len > REPLAY_LIMIT {
                        return Err(Step::Agent);
                    }
                }
                Ok(Some(chunk))
            }
        }
    }

    async fn raw(&mut self) -> Step {
        let open = UploadOpen {
            multipart: false,
            ..UploadOpen::default()
        };
        if let Err(step) = self.open_file(&open).await {
            return step;
        }
        loop {
            match self.next_chunk().await {
                Ok(Some(chunk)) => {
                    if !self.write(chunk).await {
                        return Step::Done;
                    }
                }
                Ok(None) => return Step::Done,
                Err(step) => return step,
            }
        }
    }

    async fn multipart(&mut self, boundary: &str) -> Step {
        let Ok(mut parser) = Parser::new(boundary) else {
            return Step::Agent;
        };
        // Whether the part being read is a file being written.
        let mut in_file = false;
        loop {
            let more = match self.next_chunk().await {
                Ok(Some(chunk)) => {
                    parser.push_bytes(chunk);
                    true
                }
                Ok(None) => {
                    parser.finish();
                    false
                }
                Err(step) => return step,
            };
            loop {
                let event = match parser.next_event() {
                    Ok(Some(event)) => event,
                    Ok(None) => break,
                    Err(e) => return self.form_error(e),
                };
                match event {
                    Event::PartStart(headers) => {
                        in_file = headers.form_name() == Some("file");
                        if in_file {
                            let open = UploadOpen {
                                multipart: true,
                                filename: headers.filename,
                                written: self.written.iter().map(|w| w.path.clone()).collect(),
                            };
                            if let Err(step) = self.open_file(&open).await {
                                return step;
                            }
                        }
                    }
                    Event::Data(data) => {
                        if in_file && !self.write(data).await {
                            return Step::Done;
                        }
                    }
                    Event::PartEnd => in_file = false,
                    // A body without a file in it: the agent answers it (it authorises).
                    Event::End if self.kept.is_some() => return Step::Agent,
                    Event::End => return Step::Done,
                }
            }
            if !more {
                // `finish` makes the parser end with `End` or an error; never loop.
                return self.form_error(multipart::MultipartError::UnexpectedEnd);
            }
        }
    }

    /// A body that is not a valid form: the agent has the last word while it has opened
    /// nothing (it may refuse the client first); after, the client's error.
    fn form_error(&self, e: multipart::MultipartError) -> Step {
        if self.kept.is_some() {
            return Step::Agent;
        }
        Step::Fail(StatusCode::BAD_REQUEST, format!("error reading form: {e}"))
    }

    /// Asks the agent to open the next file and hands it to the writer.
    async fn open_file(&mut self, open: &UploadOpen) -> Result<(), Step> {
        let first = self.kept.is_some();
        match self.ask_open(open).await {
            Ok(Opened::File(file, entry)) => {
                self.kept = None;
                self.kept_len = 0;
                self.written.push(entry);
                // A writer that stopped has its error waiting; the next write reports it.
                if self.flush().await {
                    let writer = self.writer.get_or_insert_with(Writer::spawn);
                    let _ = writer.tx.send(Chunk::File(file)).await;
                }
                Ok(())
            }
            Ok(Opened::Not(answer)) => {
                let mark = answer.headers().get(FILE_HANDOFF_HEADER);
                let drain = match mark.map(HeaderValue::as_bytes) {
                    Some(m) if m == UPLOAD_REFUSED.as_bytes() => true,
                    Some(m) if m == UPLOAD_REFUSED_UNAUTHORISED.as_bytes() => false,
                    // Refused by the agent's access check, before any handler: the same answer
                    // an upload with these headers gets from any agent.
                    None if matches!(
                        answer.status(),
                        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
                    ) =>
                    {
                        false
                    }
                    // An agent that does not know the request: it reads the upload itself.
                    _ if first => return Err(Step::Agent),
                    _ => true,
                };
                Err(Step::Refused(small_answer(answer).await, drain))
            }
            Err(_) if first => Err(Step::Agent),
            Err(e) => {
                tracing::warn!(error = %e, "upload hand-off failed");
                Err(Step::Fail(
                    StatusCode::BAD_GATEWAY,
                    "the sandbox's agent answered an upload badly".to_owned(),
                ))
            }
        }
    }

    /// Sends the agent `open` (the request is built before any await: an `Upload` holds the
    /// client's body, which is not `Sync`).
    fn ask_open(
        &self,
        open: &UploadOpen,
    ) -> impl std::future::Future<Output = Result<Opened, String>> + Send + 'static {
        let body = serde_json::to_vec(open).map_err(|e| e.to_string());
        let (http, init) = (self.http.clone(), self.init);
        let (uri, headers) = (self.parts.uri.clone(), self.open_headers.clone());
        async move {
            let mut request = Request::new(Body::from(body?));
            *request.method_mut() = http::Method::POST;
            *request.uri_mut() = uri;
            *request.headers_mut() = headers;
            request_open(&http, init, request).await
        }
    }
    /// Queues `data` for the file being written; false when the writer has stopped (on an
    /// error, which [`Upload::finish`] reports).
    async fn write(&mut self, data: Bytes) -> bool {
        self.batch_len += data.len();
        self.batch.push(data);
        if self.batch_len < BATCH {
            return true;
        }
        self.flush().await
    }

    /// Gives the writer the chunks gathered; false when it has stopped.
    async fn flush(&mut self) -> bool {
        if self.batch.is_empty() {
            return true;
        }
        let batch = std::mem::take(&mut self.batch);
        self.batch_len = 0;
        match &self.writer {
            Some(writer) => writer.tx.send(Chunk::Data(batch)).await.is_ok(),
            None => false,
        }
    }

    /// Waits for the writer and answers what the agent would have.
    async fn finish(mut self) -> Result<Outcome, String> {
        self.flush().await;
        let result = match self.writer.take() {
            Some(writer) => writer.finish().await,
            None => Ok(()),
        };
        if let Err(e) = result {
            let (status, message) = self.write_error(&e);
            let answer = error(status, &message);
            return Ok(Outcome::Answered(self.drain_then(answer).await));
        }
        let body = serde_json::to_vec(&self.written).map_err(|e| e.to_string())?;
        // The rest of the body (a multipart epilogue) is read, as the agent reads it.
        let answer = Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .map_err(|e| e.to_string())?;
        Ok(Outcome::Answered(self.drain_then(answer).await))
    }

    /// Stops the writer after a failure (logging what it says).
    async fn fail(&mut self, status: StatusCode, message: &str) {
        if let Some(writer) = self.writer.take() {
            if let Err(e) = writer.finish().await {
                tracing::debug!(error = %e, "upload writer stopped");
            }
        }
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %message, "upload failed");
        }
    }

    /// The status and message the agent gives a failed write.
    fn write_error(&self, e: &io::Error) -> (StatusCode, String) {
        if matches!(
            e.raw_os_error(),
            Some(hutch_sys::errno::ENOSPC | hutch_sys::errno::EDQUOT)
        ) {
            return (
                StatusCode::INSUFFICIENT_STORAGE,
                upload_disk_full(self.content_length),
            );
        }
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("error writing file: {e}"),
        )
    }

    /// Reads the rest of the body (up to [`DRAIN_LIMIT`]), then gives `answer`.
    async fn drain_then(&mut self, answer: Response<Body>) -> Response<Body> {
        let mut seen: u64 = 0;
        while let Some(Ok(chunk)) = self.stream.next().await {
            seen += chunk.len() as u64;
            if seen > DRAIN_LIMIT {
                break;
            }
        }
        answer
    }

    /// Sends the request to the agent as it came, the body read so far first.
    async fn the_usual_way(self) -> Result<Outcome, String> {
        let kept = self.kept.unwrap_or_default();
        let body = futures_util::stream::iter(kept.into_iter().map(Ok::<_, axum::Error>))
            .chain(self.stream);
        let request = Request::from_parts(self.parts, Body::from_stream(body));
        let answer = self
            .http
            .request(request)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Outcome::Proxied(answer))
    }
}

/// Asks the agent to open a file ([`UploadOpen`]) and takes it.
async fn request_open(
    http: &HttpClient,
    init: (i32, u64),
    request: Request<Body>,
) -> Result<Opened, String> {
    let answer = http.request(request).await.map_err(|e| e.to_string())?;
    if answer.status() != StatusCode::OK || !answer.headers().contains_key(FILE_HANDOFF_HEADER) {
        return Ok(Opened::Not(answer));
    }
    let (handoff, rest) = handoff::read_line::<UploadHandoff>(answer).await?;
    let file = handoff::grab(init, handoff.fd, handoff.dev, handoff.ino)
        .map_err(|e| format!("taking the upload's file: {e}"))?;
    // The agent closes its descriptor when this connection ends.
    drop(rest);
    Ok(Opened::File(file, handoff.file))
}

/// The client's headers for an [`UploadOpen`]: everything that authorises and describes
/// the upload, without what describes its body.
fn open_headers(client: &HeaderMap) -> HeaderMap {
    let mut headers = client.clone();
    for name in [
        header::CONTENT_TYPE,
        header::CONTENT_LENGTH,
        header::CONTENT_ENCODING,
        header::EXPECT,
        header::TRANSFER_ENCODING,
    ] {
        headers.remove(name);
    }
    headers.insert(
        HeaderName::from_static(FILE_HANDOFF_HEADER),
        HeaderValue::from_static("1"),
    );
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers
}

/// An agent's (short) answer, read whole so the client's body can be drained before it.
async fn small_answer(answer: Response<hyper::body::Incoming>) -> Response<Body> {
    let (parts, body) = answer.into_parts();
    let bytes = match http_body_util::Limited::new(body, ANSWER_LIMIT)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let mut out = Response::new(Body::from(bytes));
    *out.status_mut() = parts.status;
    for name in [header::CONTENT_TYPE, header::X_CONTENT_TYPE_OPTIONS] {
        if let Some(value) = parts.headers.get(&name) {
            out.headers_mut().insert(name, value.clone());
        }
    }
    out
}

/// An error in the agent's form for file requests.
fn error(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({"code": status.as_u16(), "message": message}).to_string();
    let mut out = Response::new(Body::from(body));
    *out.status_mut() = status;
    out.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    out
}

/// What the writing thread is given, in order.
enum Chunk {
    /// The next file: what follows goes into it.
    File(File),
    /// Chunks of it, in order.
    Data(Vec<Bytes>),
}

/// The thread that writes an upload's bytes into its files (writes to a disk can wait on
/// writeback, which must not hold up the server's async workers).
struct Writer {
    tx: mpsc::Sender<Chunk>,
    done: tokio::task::JoinHandle<io::Result<()>>,
}

impl Writer {
    fn spawn() -> Self {
        let (tx, mut rx) = mpsc::channel::<Chunk>(IN_FLIGHT);
        let done = tokio::task::spawn_blocking(move || {
            let mut file: Option<File> = None;
            while let Some(chunk) = rx.blocking_recv() {
                match chunk {
                    Chunk::File(next) => file = Some(next),
                    Chunk::Data(batch) => {
                        if let Some(file) = file.as_mut() {
                            write_all_vectored(file, &batch)?;
                        }
                    }
                }
            }
            Ok(())
        });
        Self { tx, done }
    }

    /// Waits until everything queued is written.
    async fn finish(self) -> io::Result<()> {
        drop(self.tx);
        self.done.await.map_err(io::Error::other)?
    }
}

/// Writes every byte of `chunks`, in order, with as few `writev` calls as the file takes.
fn write_all_vectored(file: &mut File, chunks: &[Bytes]) -> io::Result<()> {
    let mut slices: Vec<io::IoSlice<'_>> = chunks.iter().map(|c| io::IoSlice::new(c)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        match file.write_vectored(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => io::IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn vectored_writes_keep_every_byte_in_order() {
        let path = std::env::temp_dir().join(format!("hutch-upload-{}", std::process::id()));
        let mut file = File::create(&path).unwrap();
        let chunks: Vec<Bytes> = (0u8..40)
            .map(|i| Bytes::from(vec![i; 1000 + usize::from(i) * 3000]))
            .collect();
        write_all_vectored(&mut file, &chunks).unwrap();
        let back = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(back, chunks.concat());
    }

    #[test]
    fn large_raw_and_multipart_bodies_are_read_here() {
        let big = FILE_HANDOFF_MIN.to_string();
        assert_eq!(
            eligible(&headers(&[
                ("content-type", "application/octet-stream"),
                ("content-length", &big)
            ])),
            Some(Kind::Raw)
        );
        assert_eq!(
            eligible(&headers(&[(
                "content-type",
                "multipart/form-data; boundary=XyZ"
            )])),
            Some(Kind::Multipart("XyZ".to_owned()))
        );
    }

    #[test]
    fn small_compressed_or_odd_bodies_stay_with_the_agent() {
        let small = (FILE_HANDOFF_MIN - 1).to_string();
        let big = FILE_HANDOFF_MIN.to_string();
        for h in [
            headers(&[
                ("content-type", "application/octet-stream"),
                ("content-length", &small),
            ]),
            headers(&[
                ("content-type", "application/octet-stream"),
                ("content-encoding", "gzip"),
            ]),
            headers(&[("content-type", "text/plain"), ("content-length", &big)]),
            headers(&[("content-type", "multipart/form-data")]),
            headers(&[("content-length", &big)]),
        ] {
            assert_eq!(eligible(&h), None, "{h:?}");
        }
    }

    #[test]
    fn open_requests_carry_authorisation_not_the_body_description() {
        let h = open_headers(&headers(&[
            ("content-type", "multipart/form-data; boundary=b"),
            ("content-length", "5000000"),
            ("expect", "100-continue"),
            ("x-access-token", "t"),
            ("x-metadata-k", "v"),
        ]));
        assert_eq!(h.get("content-type").unwrap(), "application/json");
        assert!(h.get("content-length").is_none() && h.get("expect").is_none());
        assert_eq!(h.get("x-access-token").unwrap(), "t");
        assert_eq!(h.get("x-metadata-k").unwrap(), "v");
        assert_eq!(h.get(FILE_HANDOFF_HEADER).unwrap(), "1");
    }
}
