//! An incremental `multipart/form-data` parser (RFC 7578 / RFC 2046 §5.1) with bounded memory.
//!
//! Uploads can be gigabytes, so the parser never holds a whole part: the caller [`push`]es the
//! body as it arrives and drains [`Event`]s with [`next_event`] until it returns `None`, then
//! pushes more. Between pushes the parser keeps at most [`MAX_HEADER_BYTES`] (while reading a
//! part's headers) or a delimiter's length plus a little padding (while reading content), so
//! memory is bounded by the size of the chunks the caller pushes plus a constant.
//!
//! It is a pure function of its input (no I/O, no allocation beyond the above) and must never
//! panic, whatever bytes it is fed: the `fuzz/` folder at the top of the repository drives it
//! with arbitrary input.
//!
//! [`push`]: Parser::push
//! [`next_event`]: Parser::next_event

mod headers;

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};

pub use headers::{boundary_from_content_type, parse_media_type};
use headers::{parse_headers, validate_boundary};

/// Largest header block a part may have (all its header lines together).
pub const MAX_HEADER_BYTES: usize = 16 << 10;

/// Longest boundary accepted. RFC 2046 allows 70 characters; some clients use a little more.
pub const MAX_BOUNDARY_LEN: usize = 200;

/// Most whitespace ("transport padding") allowed between a delimiter and its line end.
const MAX_PADDING: usize = 256;

/// Chunks shorter than this given to [`Parser::push_bytes`] are copied like any other: the
/// checks that avoid the copy cost more than it.
const SHARE_MIN: usize = 4 << 10;

/// Why a multipart body could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MultipartError {
    /// The `Content-Type` has no usable `boundary` parameter.
    #[error("the multipart content type has no valid boundary parameter: {0}")]
    BadBoundary(String),
    /// The body ended before the first boundary.
    #[error("the multipart body ended before its first boundary line")]
    NoBoundary,
    /// The body ended inside a part (no closing delimiter).
    #[error("the multipart body ended before its closing boundary")]
    UnexpectedEnd,
    /// A part's header block is larger than [`MAX_HEADER_BYTES`].
    #[error("a multipart part's headers exceed {MAX_HEADER_BYTES} bytes")]
    HeadersTooLarge,
    /// A part's headers are malformed.
    #[error("malformed multipart part headers: {0}")]
    BadHeaders(String),
}

/// How the body of a `POST /files` carries its file(s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadBody {
    /// `application/octet-stream`: the body is the file.
    Raw,
    /// `multipart/*` with this boundary: one file per `file` part.
    Multipart(String),
}

impl UploadBody {
    /// The body a `Content-Type` value announces: `None` when it is neither raw nor
    /// multipart, an error for multipart without a usable boundary.
    pub fn from_content_type(content_type: &str) -> Option<Result<Self, MultipartError>> {
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if essence == "application/octet-stream" {
            Some(Ok(Self::Raw))
        } else if essence.starts_with("multipart/") {
            Some(boundary_from_content_type(content_type).map(Self::Multipart))
        } else {
            None
        }
    }
}

/// The headers of one part that an upload cares about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartHeaders {
    /// The disposition type of `Content-Disposition` (lowercased), e.g. `form-data`.
    pub disposition: Option<String>,
    /// The `name` parameter of `Content-Disposition`: the form field.
    pub name: Option<String>,
    /// The `filename` (or RFC 2231 `filename*`) parameter, exactly as sent: not reduced to its
    /// last path component, because E2B clients put the full target path there.
    pub filename: Option<String>,
    /// The part's `Content-Type`, if it has one.
    pub content_type: Option<String>,
}

impl PartHeaders {
    /// The form field name, when this is a `form-data` part (what Go's `Part.FormName` returns).
    pub fn form_name(&self) -> Option<&str> {
        match self.disposition.as_deref() {
            Some("form-data") => self.name.as_deref(),
            _ => None,
        }
    }
}

/// What the parser found next in the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A part begins; its content follows as [`Event::Data`] until [`Event::PartEnd`].
    PartStart(PartHeaders),
    /// A piece of the current part's content.
    Data(Bytes),
    /// The current part is complete.
    PartEnd,
    /// The closing delimiter was seen; anything after it (the epilogue) is ignored.
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the first delimiter; bytes here are discarded.
    Preamble,
    /// After a delimiter line: the next part's headers.
    Headers,
    /// Inside a part's content.
    Body,
    /// The closing delimiter was seen and `End` not yet reported.
    Closing,
    /// `End` was reported.
    Done,
}

/// Where the next delimiter is, as far as the buffered bytes tell.
enum Scan {
    /// A complete delimiter line starts at `at`; the next part (or the end) begins at `next`.
    Found { at: usize, next: usize, close: bool },
    /// Bytes before `safe` cannot be part of a delimiter; the rest needs more input to decide.
    Undecided { safe: usize },
}

/// The incremental parser; see the module docs for the push/drain protocol.
#[derive(Debug, Clone)]
pub struct Parser {
    /// `"\r\n--" + boundary`: what separates parts.
    delimiter: Vec<u8>,
    buf: BytesMut,
    /// Content to report before anything in `buf` (pieces of chunks given as `Bytes`).
    queued: VecDeque<Bytes>,
    state: State,
    eof: bool,
}

impl Parser {
    /// A parser for parts separated by `boundary` (the `boundary` parameter of the content type).
    pub fn new(boundary: &str) -> Result<Self, MultipartError> {
        validate_boundary(boundary)?;
        let mut delimiter = Vec::with_capacity(boundary.len() + 4);
        delimiter.extend_from_slice(b"\r\n--");
        delimiter.extend_from_slice(boundary.as_bytes());
        let mut buf = BytesMut::new();
        // The first delimiter may start the body without a preceding line break; a virtual one
        // lets a single search pattern find every delimiter.
        buf.extend_from_slice(b"\r\n");
        Ok(Self {
            delimiter,
            buf,
            queued: VecDeque::new(),
            state: State::Preamble,
            eof: false,
        })
    }

    /// A parser for the boundary of a `multipart/...` `Content-Type` value.
    pub fn from_content_type(content_type: &str) -> Result<Self, MultipartError> {
        Self::new(&boundary_from_content_type(content_type)?)
    }

    /// Appends the next piece of the body. Drain [`Parser::next_event`] before pushing again, or
    /// memory grows with everything pushed.
    pub fn push(&mut self, data: &[u8]) {
        if self.state == State::Done || self.state == State::Closing {
            // The epilogue is ignored; do not buffer it.
            return;
        }
        self.buf.extend_from_slice(data);
    }

    /// Appends the next piece of the body, as [`Parser::push`] does, for a chunk the caller
    /// holds as `Bytes`: inside a part, the content it can tell is content at once (all of the
    /// chunk but a delimiter and what follows it, or a tail that may begin one) is reported
    /// as slices of `data` instead of being copied.
    pub fn push_bytes(&mut self, data: Bytes) {
        if self.state != State::Body || self.eof || data.len() < SHARE_MIN {
            return self.push(&data);
        }
        let d = &self.delimiter[..];
        let carried = self.buf.len();
        // A delimiter that starts in the bytes carried from the last chunk: the usual way.
        if carried > 0 {
            let head = data.get(..d.len()).unwrap_or(&data[..]);
            let mut junction = Vec::with_capacity(carried + head.len());
            junction.extend_from_slice(&self.buf);
            junction.extend_from_slice(head);
            if find(&junction, d).is_some_and(|at| at < carried) {
                return self.push(&data);
            }
        }
        // Everything before the first delimiter in `data` is content; with none, all but a
        // tail that could start one.
        let content = match find(&data, d) {
            Some(at) => at,
            None => data.len() - partial_suffix(&data, d),
        };
        if carried > 0 {
            self.queued.push_back(Bytes::copy_from_slice(&self.buf));
            self.buf.clear();
        }
        if content > 0 {
            self.queued.push_back(data.slice(..content));
        }
        self.buf
            .extend_from_slice(data.get(content..).unwrap_or_default());
    }

    /// Marks the end of the body: from now on, incomplete input is an error.
    pub fn finish(&mut self) {
        self.eof = true;
    }

    /// How many bytes the parser currently holds (for tests and the fuzzer's memory bound).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The most bytes the parser may still hold after `next_event` returned `Ok(None)`.
    pub fn retained_bound(&self) -> usize {
        MAX_HEADER_BYTES.max(self.delimiter.len() + MAX_PADDING + 4)
    }

    /// Whether the closing delimiter has been reported.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The next event, `Ok(None)` when more input is needed (or after [`Event::End`]).
    pub fn next_event(&mut self) -> Result<Option<Event>, MultipartError> {
        loop {
            match self.state {
                State::Done => return Ok(None),
                State::Closing => {
                    self.state = State::Done;
                    self.buf.clear();
                    return Ok(Some(Event::End));
                }
                State::Preamble => match self.scan() {
                    Scan::Found { next, close, .. } => {
                        self.buf.advance(next);
                        self.state = if close {
                            State::Closing
                        } else {
                            State::Headers
                        };
                    }
                    Scan::Undecided { safe } => {
                        self.buf.advance(safe);
                        if self.eof {
                            return Err(MultipartError::NoBoundary);
                        }
                        return Ok(None);
                    }
                },
                State::Headers => {
                    let Some((block_len, consumed)) = header_block(&self.buf) else {
                        if self.buf.len() > MAX_HEADER_BYTES {
                            return Err(MultipartError::HeadersTooLarge);
                        }
                        if self.eof {
                            return Err(MultipartError::UnexpectedEnd);
                        }
                        return Ok(None);
                    };
                    if block_len > MAX_HEADER_BYTES {
                        return Err(MultipartError::HeadersTooLarge);
                    }
                    let headers = parse_headers(&self.buf[..block_len])?;
                    self.buf.advance(consumed);
                    self.state = State::Body;
                    return Ok(Some(Event::PartStart(headers)));
                }
                State::Body if !self.queued.is_empty() => {
                    if let Some(content) = self.queued.pop_front() {
                        return Ok(Some(Event::Data(content)));
                    }
                }
                State::Body => match self.scan() {
                    Scan::Found { at: 0, next, close } => {
                        self.buf.advance(next);
                        self.state = if close {
                            State::Closing
                        } else {
                            State::Headers
                        };
                        return Ok(Some(Event::PartEnd));
                    }
                    Scan::Found { at, .. } => {
                        return Ok(Some(Event::Data(self.buf.split_to(at).freeze())));
                    }
                    Scan::Undecided { safe } => {
                        if safe > 0 {
                            return Ok(Some(Event::Data(self.buf.split_to(safe).freeze())));
                        }
                        if self.eof {
                            return Err(MultipartError::UnexpectedEnd);
                        }
                        return Ok(None);
                    }
                },
            }
        }
    }

    /// Looks for the next complete delimiter line in the buffer.
    fn scan(&self) -> Scan {
        let buf = &self.buf[..];
        let d = &self.delimiter[..];
        let mut from = 0;
        while let Some(rel) = find(buf.get(from..).unwrap_or_default(), d) {
            let at = from + rel;
            let after_start = at + d.len();
            let after = buf.get(after_start..).unwrap_or_default();
            match classify_after_delimiter(after, self.eof) {
                After::Close => {
                    return Scan::Found {
                        at,
                        next: after_start + 2,
                        close: true,
                    }
                }
                After::Open(n) => {
                    return Scan::Found {
                        at,
                        next: after_start + n,
                        close: false,
                    }
                }
                After::NeedMore => return Scan::Undecided { safe: at },
                // Looked like a delimiter but is not followed by a line end: it is content
                // (e.g. a longer boundary that merely starts with ours). Keep searching.
                After::Invalid => from = at + 1,
            }
        }
        // No delimiter: everything is content except a tail that could be the start of one.
        let keep = if self.eof { 0 } else { partial_suffix(buf, d) };
        Scan::Undecided {
            safe: buf.len() - keep,
        }
    }
}

/// What follows the bytes of a delimiter.
enum After {
    /// `--`: the closing delimiter.
    Close,
    /// Optional padding and CRLF, `n` bytes in all: a part follows.
    Open(usize),
    /// Not enough bytes yet to tell.
    NeedMore,
    /// Anything else: not a delimiter.
    Invalid,
}

fn classify_after_delimiter(after: &[u8], eof: bool) -> After {
    let need_more = if eof { After::Invalid } else { After::NeedMore };
    match after {
        [] | [b'-'] => return need_more,
        [b'-', b'-', ..] => return After::Close,
        _ => {}
    }
    let padding = after
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    if padding > MAX_PADDING {
        return After::Invalid;
    }
    match after.get(padding..).unwrap_or_default() {
        [] | [b'\r'] => need_more,
        [b'\r', b'\n', ..] => After::Open(padding + 2),
        _ => After::Invalid,
    }
}

/// Length of the longest suffix of `buf` that is a proper prefix of `pattern`.
fn partial_suffix(buf: &[u8], pattern: &[u8]) -> usize {
    let max = pattern.len().saturating_sub(1).min(buf.len());
    (1..=max)
        .rev()
        .find(|&n| {
            buf.get(buf.len() - n..)
                .is_some_and(|tail| pattern.starts_with(tail))
        })
        .unwrap_or(0)
}

/// Position of the first occurrence of `needle` in `haystack` (vectorised: an upload's every
/// byte goes through this search).
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

/// The header block at the start of `buf`: `(block length, bytes to consume)`, or `None` when its
/// end has not arrived yet.
fn header_block(buf: &[u8]) -> Option<(usize, usize)> {
    if buf.starts_with(b"\r\n") {
        return Some((0, 2));
    }
    find(buf, b"\r\n\r\n").map(|i| (i, i + 4))
}

/// Parses a whole in-memory body (tests and the fuzzer): every part's headers and content.
pub fn parse_all(
    boundary: &str,
    body: &[u8],
) -> Result<Vec<(PartHeaders, Vec<u8>)>, MultipartError> {
    let mut parser = Parser::new(boundary)?;
    parser.push(body);
    parser.finish();
    let mut parts: Vec<(PartHeaders, Vec<u8>)> = Vec::new();
    while let Some(event) = parser.next_event()? {
        match event {
            Event::PartStart(h) => parts.push((h, Vec::new())),
            Event::Data(d) => {
                if let Some((_, content)) = parts.last_mut() {
                    content.extend_from_slice(&d);
                }
            }
            Event::PartEnd => {}
            Event::End => break,
        }
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::headers::parse_disposition;
    use super::*;

    const BODY: &[u8] = b"preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"/home/user/a.txt\"\r\nContent-Type: text/plain\r\n\r\nhello\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"b/c.bin\"\r\n\r\n\r\n--XyZx\r\n\r\n--XyZ--\r\nepilogue";

    #[test]
    fn parses_parts_whole() {
        let parts = parse_all("XyZ", BODY).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].0.form_name(), Some("file"));
        assert_eq!(parts[0].0.filename.as_deref(), Some("/home/user/a.txt"));
        assert_eq!(parts[0].0.content_type.as_deref(), Some("text/plain"));
        assert_eq!(parts[0].1, b"hello");
        assert_eq!(parts[1].0.filename.as_deref(), Some("b/c.bin"));
        // A longer boundary that starts with ours is content.
        assert_eq!(parts[1].1, b"\r\n--XyZx\r\n");
    }

    #[test]
    fn parses_parts_byte_by_byte() {
        let mut p = Parser::new("XyZ").unwrap();
        let mut data = Vec::new();
        let mut starts = 0;
        let mut ended = false;
        for b in BODY {
            p.push(&[*b]);
            while let Some(ev) = p.next_event().unwrap() {
                match ev {
                    Event::PartStart(_) => starts += 1,
                    Event::Data(d) => data.extend_from_slice(&d),
                    Event::PartEnd => data.push(b'|'),
                    Event::End => ended = true,
                }
            }
            assert!(p.buffered() <= p.retained_bound());
        }
        p.finish();
        assert_eq!(p.next_event().unwrap(), None);
        assert!(ended);
        assert_eq!(starts, 2);
        assert_eq!(data, b"hello|\r\n--XyZx\r\n|");
    }

    /// A body of large parts whose content is full of near-delimiters, for the sharing path.
    fn large_body() -> Vec<u8> {
        let mut body = b"pre\r\n".to_vec();
        let mut x: u32 = 7;
        for part in 0..3 {
            body.extend_from_slice(
                b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f",
            );
            body.extend_from_slice(part.to_string().as_bytes());
            body.extend_from_slice(b"\"\r\n\r\n");
            for i in 0..40_000 {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                match (x >> 16) % 500 {
                    0 => body.extend_from_slice(b"\r\n--XyZx"),
                    1 => body.extend_from_slice(b"\r\n--Xy"),
                    2 => body.extend_from_slice(b"\r\n--XyZ  \tz"),
                    _ => body.push((i % 251) as u8),
                }
            }
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"--XyZ--\r\nepilogue");
        body
    }

    #[test]
    fn shared_chunks_give_the_same_parts_as_copied_ones() {
        let body = large_body();
        let whole = parse_all("XyZ", &body).unwrap();
        assert_eq!(whole.len(), 3);
        for chunk in [4096, 5000, 8191, 65_536, 100_003, body.len()] {
            for offset in [0, 1, 7, 19] {
                let mut p = Parser::new("XyZ").unwrap();
                let mut parts: Vec<(PartHeaders, Vec<u8>)> = Vec::new();
                let body = Bytes::from(body.clone());
                let mut pieces = vec![body.slice(..offset)];
                let mut at = offset;
                while at < body.len() {
                    let end = (at + chunk).min(body.len());
                    pieces.push(body.slice(at..end));
                    at = end;
                }
                let mut ended = false;
                for piece in pieces {
                    p.push_bytes(piece);
                    while let Some(ev) = p.next_event().unwrap() {
                        match ev {
                            Event::PartStart(h) => parts.push((h, Vec::new())),
                            Event::Data(d) => {
                                assert!(!d.is_empty());
                                parts.last_mut().unwrap().1.extend_from_slice(&d);
                            }
                            Event::PartEnd => {}
                            Event::End => ended = true,
                        }
                    }
                    assert!(p.buffered() <= p.retained_bound() || chunk > 65_536);
                }
                assert!(ended, "chunk {chunk} offset {offset}");
                assert_eq!(parts, whole, "chunk {chunk} offset {offset}");
            }
        }
    }

    #[test]
    fn rejects_truncated_bodies() {
        assert_eq!(parse_all("b", b""), Err(MultipartError::NoBoundary));
        assert_eq!(
            parse_all(
                "b",
                b"--b\r\nContent-Disposition: form-data; name=x\r\n\r\nabc"
            ),
            Err(MultipartError::UnexpectedEnd)
        );
        assert_eq!(
            parse_all("b", b"--b\r\nContent-Disp"),
            Err(MultipartError::UnexpectedEnd)
        );
    }

    #[test]
    fn parses_disposition_forms() {
        let (kind, params) = parse_disposition(
            r#"form-data; name=file; filename="a\"b\\c"; filename*=UTF-8''%C3%A9.txt"#,
        )
        .unwrap();
        assert_eq!(kind, "form-data");
        assert_eq!(params[0], ("name".into(), "file".into()));
        assert_eq!(params[1], ("filename".into(), "é.txt".into()));
        assert!(parse_disposition("form-data; name").is_err());
        assert!(parse_disposition("form-data; name=\"x").is_err());
        assert!(parse_disposition("form-data; name=a; name=b").is_err());
        assert!(parse_disposition("").is_err());
    }

    #[test]
    fn reads_boundary_from_content_type() {
        assert_eq!(
            boundary_from_content_type("multipart/form-data; boundary=abc123").unwrap(),
            "abc123"
        );
        assert_eq!(
            boundary_from_content_type("multipart/form-data; charset=utf-8; boundary=\"a b\"")
                .unwrap(),
            "a b"
        );
        assert!(boundary_from_content_type("multipart/form-data").is_err());
        assert!(boundary_from_content_type("multipart/form-data; boundary=").is_err());
    }

    #[test]
    fn header_block_size_is_bounded() {
        let mut p = Parser::new("b").unwrap();
        p.push(b"--b\r\n");
        let big = vec![b'a'; MAX_HEADER_BYTES + 10];
        p.push(&big);
        assert_eq!(p.next_event(), Err(MultipartError::HeadersTooLarge));
    }
}
