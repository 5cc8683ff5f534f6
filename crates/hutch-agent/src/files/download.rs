//! The HTTP side of `GET /files`: content negotiation (gzip), byte ranges, conditional requests,
//! and streaming a file from a blocking thread without holding more than a few chunks in memory.

mod body;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use body::{
    byteranges, content_length, first_read, gzip_body, segments_body, size_is_unreliable, Segment,
};

/// A response body encoding the agent can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// The bytes as they are.
    Identity,
    /// gzip, compressed on the fly.
    Gzip,
}

/// One `Accept-Encoding` entry.
#[derive(Debug, Clone, PartialEq)]
struct Coding {
    name: String,
    quality: f64,
}

fn parse_accept(header: &str) -> Vec<Coding> {
    header
        .split(',')
        .filter_map(|item| {
            let mut fields = item.split(';');
            let name = fields.next()?.trim().to_ascii_lowercase();
            if name.is_empty() {
                return None;
            }
            let mut quality = 1.0;
            for param in fields {
                let param = param.trim();
                if let Some(q) = param
                    .strip_prefix("q=")
                    .or_else(|| param.strip_prefix("Q="))
                {
                    if let Ok(q) = q.trim().parse::<f64>() {
                        quality = q;
                    }
                }
            }
            Some(Coding { name, quality })
        })
        .collect()
}

/// Whether the client refuses the unencoded body (`identity;q=0`, or `*;q=0` without an
/// `identity` entry that allows it), per RFC 9110 §12.5.3.
fn identity_rejected(codings: &[Coding]) -> bool {
    let mut rejected = false;
    let mut explicitly_accepted = false;
    let mut wildcard_rejected = false;
    for c in codings {
        match c.name.as_str() {
            "identity" if c.quality == 0.0 => rejected = true,
            "identity" => explicitly_accepted = true,
            "*" if c.quality == 0.0 => wildcard_rejected = true,
            _ => {}
        }
    }
    rejected || (wildcard_rejected && !explicitly_accepted)
}

/// Whether an unencoded body is acceptable to a client sending `accept` (`Accept-Encoding`).
pub fn identity_acceptable(accept: Option<&str>) -> bool {
    !identity_rejected(&parse_accept(accept.unwrap_or("")))
}

/// Picks the response encoding for `accept` the way envd does: the highest-quality coding the
/// agent supports, identity unless refused; an error when nothing acceptable is left.
pub fn negotiate(accept: Option<&str>) -> Result<Encoding, String> {
    let Some(header) = accept.filter(|h| !h.trim().is_empty()) else {
        return Ok(Encoding::Identity);
    };
    let mut codings = parse_accept(header);
    let identity_refused = identity_rejected(&codings);
    // Stable: among equal qualities the client's order wins.
    codings.sort_by(|a, b| b.quality.total_cmp(&a.quality));
    for c in &codings {
        if c.quality <= 0.0 {
            continue;
        }
        match c.name.as_str() {
            "identity" => return Ok(Encoding::Identity),
            "*" if identity_refused => return Ok(Encoding::Gzip),
            "*" => return Ok(Encoding::Identity),
            "gzip" | "x-gzip" => return Ok(Encoding::Gzip),
            _ => {}
        }
    }
    if identity_refused {
        Err("no acceptable encoding found, supported: [gzip]".into())
    } else {
        Ok(Encoding::Identity)
    }
}

/// A byte range of the file: `len` bytes from `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte.
    pub start: u64,
    /// Number of bytes (at least 1).
    pub len: u64,
}

/// Why a `Range` header cannot be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// The header is not a valid `bytes=` range set.
    #[error("invalid range")]
    Invalid,
    /// No range overlaps the file.
    #[error("invalid range: failed to overlap")]
    NoOverlap,
}

/// Parses a `Range: bytes=...` header against a file of `size` bytes (the rules of Go's
/// `http.ServeContent`, which envd uses). Ranges are returned in the order given.
pub fn parse_range(header: &str, size: u64) -> Result<Vec<ByteRange>, RangeError> {
    let spec = header
        .trim()
        .strip_prefix("bytes=")
        .ok_or(RangeError::Invalid)?;
    let number = |s: &str| -> Result<u64, RangeError> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(RangeError::Invalid);
        }
        s.parse().map_err(|_| RangeError::Invalid)
    };
    let mut ranges = Vec::new();
    let mut no_overlap = false;
    for item in spec.split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let (start, end) = item.split_once('-').ok_or(RangeError::Invalid)?;
        let (start, end) = (start.trim(), end.trim());
        if start.is_empty() {
            // `-N`: the last N bytes.
            let suffix = number(end)?.min(size);
            if suffix == 0 {
                no_overlap = true;
                continue;
            }
            ranges.push(ByteRange {
                start: size - suffix,
                len: suffix,
            });
            continue;
        }
        let first = number(start)?;
        if first >= size {
            no_overlap = true;
            continue;
        }
        let last = if end.is_empty() {
            size - 1
        } else {
            let last = number(end)?;
            if last < first {
                return Err(RangeError::Invalid);
            }
            last.min(size - 1)
        };
        ranges.push(ByteRange {
            start: first,
            len: last - first + 1,
        });
    }
    if ranges.is_empty() && no_overlap {
        return Err(RangeError::NoOverlap);
    }
    Ok(ranges)
}

/// The content type for a file name, by extension; `None` when unknown.
pub fn content_type_by_extension(path: &Path) -> Option<&'static str> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    Some(match ext.as_str() {
        "txt" | "text" | "log" | "md" => "text/plain; charset=utf-8",
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "xml" => "text/xml; charset=utf-8",
        "json" => "application/json",
        "pdf" => "application/pdf",
        "wasm" => "application/wasm",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "tar" => "application/x-tar",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "svg" => "image/svg+xml",
        "ico" => "image/vnd.microsoft.icon",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        _ => return None,
    })
}

/// A content type from the first bytes of a file when its name says nothing: UTF-8 text without
/// control characters is `text/plain`, anything else `application/octet-stream`.
pub fn sniff_content_type(head: &[u8]) -> &'static str {
    let text = match std::str::from_utf8(head) {
        Ok(s) => s,
        // A multi-byte character cut off at the end of the sample is still text.
        Err(e) if e.error_len().is_none() => head
            .get(..e.valid_up_to())
            .and_then(|h| std::str::from_utf8(h).ok())
            .unwrap_or(""),
        Err(_) => return "application/octet-stream",
    };
    let binary = text
        .bytes()
        .any(|b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r' | 0x0c | 0x1b));
    if binary || (text.is_empty() && !head.is_empty()) {
        "application/octet-stream"
    } else {
        "text/plain; charset=utf-8"
    }
}

/// `attachment; filename=...` for a file name, quoted or RFC 2231-encoded as needed (the forms
/// Go's `mime.FormatMediaType` produces). envd says `inline`; hutch says `attachment`, so a
/// browser that follows a signed URL saves the file rather than rendering HTML or SVG from
/// the sandbox on the origin that serves hutch's API (the SDKs read neither).
pub fn content_disposition(name: &str) -> String {
    let needs_encoding = name
        .bytes()
        .any(|b| !(b' '..=b'~').contains(&b) && b != b'\t');
    if needs_encoding {
        let mut out = String::from("attachment; filename*=utf-8''");
        for b in name.bytes() {
            if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        return out;
    }
    let is_token = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if is_token {
        return format!("attachment; filename={name}");
    }
    let mut out = String::from("attachment; filename=\"");
    for c in name.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// A modification time truncated to whole seconds, as HTTP dates carry it.
pub fn http_seconds(t: SystemTime) -> SystemTime {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => UNIX_EPOCH + Duration::from_secs(d.as_secs()),
        Err(_) => UNIX_EPOCH,
    }
}

/// What the conditional headers ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Serve normally.
    Serve,
    /// `304 Not Modified`.
    NotModified,
    /// `412 Precondition Failed`.
    Failed,
}

/// Evaluates `If-Unmodified-Since` and `If-Modified-Since` against `modified` (no ETags: the
/// agent sends none, so `If-None-Match`, when present, disables `If-Modified-Since` as RFC 9110
/// requires and otherwise never matches).
pub fn evaluate_preconditions(
    headers: &axum::http::HeaderMap,
    modified: SystemTime,
) -> Precondition {
    let modified = http_seconds(modified);
    if modified == UNIX_EPOCH {
        return Precondition::Serve;
    }
    let date = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v.trim()).ok())
    };
    if let Some(t) = date("if-unmodified-since") {
        if modified > t {
            return Precondition::Failed;
        }
    }
    if !headers.contains_key("if-none-match") {
        if let Some(t) = date("if-modified-since") {
            if modified <= t {
                return Precondition::NotModified;
            }
        }
    }
    Precondition::Serve
}

/// Whether a `Range` request should be honoured given its `If-Range` (only the date form can
/// match: the agent sends no ETags).
pub fn if_range_matches(headers: &axum::http::HeaderMap, modified: SystemTime) -> bool {
    let Some(value) = headers.get("if-range").and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let value = value.trim();
    if value.starts_with('"') || value.starts_with("W/") {
        return false;
    }
    httpdate::parse_http_date(value).is_ok_and(|t| t == http_seconds(modified))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_like_envd() {
        assert_eq!(negotiate(None), Ok(Encoding::Identity));
        assert_eq!(negotiate(Some("gzip")), Ok(Encoding::Gzip));
        assert_eq!(negotiate(Some("gzip, deflate")), Ok(Encoding::Gzip));
        assert_eq!(negotiate(Some("br, deflate")), Ok(Encoding::Identity));
        assert_eq!(negotiate(Some("gzip;q=0")), Ok(Encoding::Identity));
        assert_eq!(
            negotiate(Some("identity;q=1, gzip;q=0.5")),
            Ok(Encoding::Identity)
        );
        assert_eq!(negotiate(Some("*;q=0, gzip")), Ok(Encoding::Gzip));
        assert_eq!(negotiate(Some("identity;q=0, *")), Ok(Encoding::Gzip));
        assert!(negotiate(Some("identity;q=0, br")).is_err());
        assert!(identity_acceptable(Some("gzip")));
        assert!(!identity_acceptable(Some("*;q=0")));
    }

    #[test]
    fn parses_ranges_like_go() {
        let r = |s, size| parse_range(s, size);
        let br = |start, len| ByteRange { start, len };
        assert_eq!(r("bytes=0-4", 10), Ok(vec![br(0, 5)]));
        assert_eq!(r("bytes=5-", 10), Ok(vec![br(5, 5)]));
        assert_eq!(r("bytes=-3", 10), Ok(vec![br(7, 3)]));
        assert_eq!(r("bytes=-30", 10), Ok(vec![br(0, 10)]));
        assert_eq!(r("bytes=8-100", 10), Ok(vec![br(8, 2)]));
        assert_eq!(r("bytes=0-0, 2-3", 10), Ok(vec![br(0, 1), br(2, 2)]));
        assert_eq!(r("bytes=10-", 10), Err(RangeError::NoOverlap));
        assert_eq!(r("bytes=0-", 0), Err(RangeError::NoOverlap));
        assert_eq!(r("bytes=10-, 0-1", 10), Ok(vec![br(0, 2)]));
        assert_eq!(r("bytes=5-2", 10), Err(RangeError::Invalid));
        assert_eq!(r("items=0-1", 10), Err(RangeError::Invalid));
        assert_eq!(r("bytes=a-b", 10), Err(RangeError::Invalid));
        assert_eq!(r("bytes=--1", 10), Err(RangeError::Invalid));
        assert_eq!(r("bytes=1", 10), Err(RangeError::Invalid));
    }

    #[test]
    fn formats_content_disposition() {
        assert_eq!(content_disposition("a.txt"), "attachment; filename=a.txt");
        assert_eq!(
            content_disposition("a b\"c"),
            "attachment; filename=\"a b\\\"c\""
        );
        assert_eq!(
            content_disposition("é.txt"),
            "attachment; filename*=utf-8''%C3%A9.txt"
        );
    }

    #[test]
    fn sniffs_text() {
        assert_eq!(sniff_content_type(b"hello\n"), "text/plain; charset=utf-8");
        assert_eq!(sniff_content_type(b"\x00\x01"), "application/octet-stream");
        assert_eq!(sniff_content_type(b"caf\xc3"), "text/plain; charset=utf-8");
        assert_eq!(sniff_content_type(b"\xff\xfe"), "application/octet-stream");
    }
}
