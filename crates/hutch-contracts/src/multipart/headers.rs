//! The header side of multipart parsing: a part's header block, `Content-Disposition` and media
//! type parameters (RFC 6266 / RFC 2231 / RFC 5987), and boundary validation.

use super::{MultipartError, PartHeaders, MAX_BOUNDARY_LEN};

pub(super) fn parse_headers(block: &[u8]) -> Result<PartHeaders, MultipartError> {
    let text = std::str::from_utf8(block)
        .map_err(|_| MultipartError::BadHeaders("part headers are not valid UTF-8".into()))?;
    // Unfold continuation lines (obsolete but legal) into their header.
    let mut lines: Vec<String> = Vec::new();
    for line in text.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            match lines.last_mut() {
                Some(last) => {
                    last.push(' ');
                    last.push_str(line.trim());
                }
                None => {
                    return Err(MultipartError::BadHeaders(
                        "a continuation line precedes the first header".into(),
                    ))
                }
            }
        } else {
            lines.push(line.to_owned());
        }
    }
    let mut headers = PartHeaders::default();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(MultipartError::BadHeaders(format!(
                "header line '{}' has no ':'",
                truncate(&line)
            )));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-disposition") {
            let (kind, params) = parse_disposition(value)?;
            headers.disposition = Some(kind);
            for (key, val) in params {
                match key.as_str() {
                    "name" => headers.name = Some(val),
                    "filename" => headers.filename = Some(val),
                    _ => {}
                }
            }
        } else if name.eq_ignore_ascii_case("content-type") {
            headers.content_type = Some(value.to_owned());
        }
    }
    Ok(headers)
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Whether `b` may appear in an RFC 7230 token.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Parses `type; key=value; key="quoted"; key*=utf-8''pct` (RFC 6266 / RFC 2231) into the
/// lowercased type and the parameters, `key*` forms decoded and taking precedence over plain ones.
pub(super) fn parse_disposition(
    value: &str,
) -> Result<(String, Vec<(String, String)>), MultipartError> {
    let bad = |why: &str| {
        MultipartError::BadHeaders(format!("Content-Disposition '{}': {why}", truncate(value)))
    };
    let bytes = value.as_bytes();
    let mut i = 0;
    let token = |i: &mut usize| {
        let start = *i;
        while *i < bytes.len() && is_token_byte(bytes[*i]) {
            *i += 1;
        }
        value.get(start..*i).unwrap_or_default().to_owned()
    };
    let skip_ws = |i: &mut usize| {
        while *i < bytes.len() && (bytes[*i] == b' ' || bytes[*i] == b'\t') {
            *i += 1;
        }
    };
    let kind = token(&mut i).to_ascii_lowercase();
    if kind.is_empty() {
        return Err(bad("no disposition type"));
    }
    let mut plain: Vec<(String, String)> = Vec::new();
    let mut extended: Vec<(String, String)> = Vec::new();
    loop {
        skip_ws(&mut i);
        if i >= bytes.len() {
            break;
        }
        if bytes[i] != b';' {
            return Err(bad("expected ';' between parameters"));
        }
        i += 1;
        skip_ws(&mut i);
        if i >= bytes.len() {
            // A trailing ';' is common enough to accept.
            break;
        }
        let key = token(&mut i).to_ascii_lowercase();
        if key.is_empty() {
            return Err(bad("empty parameter name"));
        }
        skip_ws(&mut i);
        if bytes.get(i) != Some(&b'=') {
            return Err(bad("parameter without '='"));
        }
        i += 1;
        skip_ws(&mut i);
        let val = if bytes.get(i) == Some(&b'"') {
            i += 1;
            let mut out = Vec::new();
            loop {
                match bytes.get(i) {
                    None => return Err(bad("unterminated quoted string")),
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') => {
                        let Some(&escaped) = bytes.get(i + 1) else {
                            return Err(bad("unterminated quoted string"));
                        };
                        out.push(escaped);
                        i += 2;
                    }
                    Some(&b) => {
                        out.push(b);
                        i += 1;
                    }
                }
            }
            // Input was a &str and only whole bytes between ASCII quotes were copied.
            String::from_utf8(out).map_err(|_| bad("quoted string is not UTF-8"))?
        } else {
            let v = token(&mut i);
            if v.is_empty() {
                return Err(bad("empty parameter value"));
            }
            v
        };
        if let Some(base) = key.strip_suffix('*') {
            let decoded = decode_ext_value(&val).ok_or_else(|| bad("invalid RFC 2231 value"))?;
            if extended.iter().any(|(k, _)| k == base) {
                return Err(bad("duplicate parameter"));
            }
            extended.push((base.to_owned(), decoded));
        } else {
            if plain.iter().any(|(k, _)| *k == key) {
                return Err(bad("duplicate parameter"));
            }
            plain.push((key, val));
        }
    }
    for (key, val) in extended {
        match plain.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = val,
            None => plain.push((key, val)),
        }
    }
    Ok((kind, plain))
}

/// Decodes an RFC 5987 `charset'language'percent-encoded` value (UTF-8 or US-ASCII only).
fn decode_ext_value(value: &str) -> Option<String> {
    let mut fields = value.splitn(3, '\'');
    let charset = fields.next()?.to_ascii_lowercase();
    let _language = fields.next()?;
    let encoded = fields.next()?;
    if charset != "utf-8" && charset != "us-ascii" {
        return None;
    }
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = encoded.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let s = String::from_utf8(out).ok()?;
    (charset == "utf-8" || s.is_ascii()).then_some(s)
}

pub(super) fn validate_boundary(boundary: &str) -> Result<(), MultipartError> {
    if boundary.is_empty() || boundary.len() > MAX_BOUNDARY_LEN {
        return Err(MultipartError::BadBoundary(format!(
            "boundary must be 1 to {MAX_BOUNDARY_LEN} characters long"
        )));
    }
    // RFC 2046 bchars, plus anything printable: being lenient costs nothing, CR/LF would break
    // the framing.
    if !boundary.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(MultipartError::BadBoundary(
            "boundary must be printable ASCII".into(),
        ));
    }
    Ok(())
}

/// The `boundary` parameter of a `multipart/...` content type.
pub fn boundary_from_content_type(content_type: &str) -> Result<String, MultipartError> {
    let bad = || MultipartError::BadBoundary(truncate(content_type));
    let (_essence, params) = parse_media_type(content_type).map_err(|_| bad())?;
    let boundary = params
        .into_iter()
        .find(|(k, _)| k == "boundary")
        .map(|(_, v)| v)
        .ok_or_else(bad)?;
    validate_boundary(&boundary)?;
    Ok(boundary)
}

/// Splits a media type `type/subtype; params` into its lowercased essence and parameters.
pub fn parse_media_type(value: &str) -> Result<(String, Vec<(String, String)>), MultipartError> {
    let value = value.trim();
    let (essence, rest) = match value.find(';') {
        Some(i) => value.split_at(i),
        None => (value, ""),
    };
    let essence = essence.trim().to_ascii_lowercase();
    // The parameter grammar is the same as Content-Disposition's; give it a placeholder type.
    let (_, params) = parse_disposition(&format!("x{rest}"))?;
    Ok((essence, params))
}
