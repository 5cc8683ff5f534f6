//! `GET /files`: a file's bytes, streamed, with byte ranges, conditional requests and gzip.

use hutch_sys::errno;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::download::{self, Encoding, Precondition, RangeError};
use super::signature::Operation;
use super::{handoff, paths, FileError, FileParams, FilesService};

/// `GET /files`: the file at `path`, as the user `username` would address it.
pub async fn download(
    State(service): State<FilesService>,
    method: Method,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    match serve_download(&service, &method, &headers, &uri).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

/// What the blocking part of a download found.
struct Opened {
    file: File,
    resolved: std::path::PathBuf,
    meta: std::fs::Metadata,
}

async fn serve_download(
    service: &FilesService,
    method: &Method,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<Response, FileError> {
    let params = FileParams::from_uri(uri)?;
    let username = service.authorize(headers, &params, Operation::Read)?;
    let raw_path = params.path.clone().unwrap_or_default();

    let svc = service.clone();
    let opened = tokio::task::spawn_blocking(move || -> Result<Opened, FileError> {
        let user = svc.lookup(&username)?;
        let _acting = FileError::acting(&user)?;
        let resolved = paths::resolve(&raw_path, &user).map_err(|err| {
            FileError::new(
                StatusCode::BAD_REQUEST,
                format!("error expanding and resolving path '{raw_path}': {err}"),
            )
        })?;
        let meta = std::fs::metadata(&resolved).map_err(|err| {
            if err.kind() == io::ErrorKind::NotFound {
                FileError::new(
                    StatusCode::NOT_FOUND,
                    format!("path '{}' does not exist", resolved.display()),
                )
            } else if err.raw_os_error() == Some(errno::ENOTDIR) {
                // A file used as a directory on the way: nothing there, as far as the caller is
                // concerned.
                FileError::new(
                    StatusCode::NOT_FOUND,
                    format!("path '{}' does not exist", resolved.display()),
                )
            } else if err.kind() == io::ErrorKind::PermissionDenied {
                FileError::new(
                    StatusCode::FORBIDDEN,
                    format!("permission denied: '{}': {err}", resolved.display()),
                )
            } else {
                FileError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!(
                        "error checking if path exists '{}': {err}",
                        resolved.display()
                    ),
                )
            }
        })?;
        if meta.is_dir() {
            return Err(FileError::new(
                StatusCode::BAD_REQUEST,
                format!("path '{}' is a directory", resolved.display()),
            ));
        }
        let file = File::open(&resolved).map_err(|err| {
            let status = if err.kind() == io::ErrorKind::PermissionDenied {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            FileError::new(
                status,
                format!("error opening file '{}': {err}", resolved.display()),
            )
        })?;
        Ok(Opened {
            file,
            resolved,
            meta,
        })
    })
    .await
    .map_err(|err| FileError::new(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()))??;

    let accept = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok());
    let mut encoding = download::negotiate(accept).map_err(|err| {
        FileError::new(
            StatusCode::NOT_ACCEPTABLE,
            format!("error parsing Accept-Encoding: {err}"),
        )
    })?;
    // Ranges and conditional requests are about the stored bytes: answer them unencoded (as
    // envd does), which the client must then accept.
    let ranged_or_conditional = [
        header::RANGE,
        header::IF_MODIFIED_SINCE,
        header::IF_NONE_MATCH,
        header::IF_RANGE,
        header::IF_UNMODIFIED_SINCE,
    ]
    .iter()
    .any(|h| headers.contains_key(h));
    if ranged_or_conditional {
        if !download::identity_acceptable(accept) {
            return Err(FileError::new(
                StatusCode::NOT_ACCEPTABLE,
                "identity encoding not acceptable for Range or conditional request",
            ));
        }
        encoding = Encoding::Identity;
    }

    let Opened {
        file,
        resolved,
        meta,
    } = opened;
    let modified = meta.modified().ok();
    let name = resolved
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut response_headers = HeaderMap::new();
    response_headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    if let Ok(v) = HeaderValue::from_str(&download::content_disposition(&name)) {
        response_headers.insert(header::CONTENT_DISPOSITION, v);
    }
    // A file from the sandbox is never a document of the origin that serves it: no sniffing
    // it into HTML, and, should a browser render it anyway, no scripts, forms or same-origin
    // access (the CSP sandbox gives it an opaque origin).
    response_headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response_headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    if let Some(m) = modified.filter(|m| download::http_seconds(*m) != std::time::UNIX_EPOCH) {
        if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(m)) {
            response_headers.insert(header::LAST_MODIFIED, v);
        }
    }

    // Bodies are streamed after the status line has gone out, so a file that fails on its
    // first read (`/proc/self/mem`, a file on a failing disk) would only show as a cut-off
    // download: find out now, and answer with an error instead.
    if method != Method::HEAD {
        if let Err(e) = download::first_read(&file) {
            return Err(FileError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("error reading file '{}': {e}", resolved.display()),
            ));
        }
    }

    if encoding == Encoding::Gzip {
        let content_type =
            download::content_type_by_extension(&resolved).unwrap_or("application/octet-stream");
        response_headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        response_headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        tracing::debug!(path = %resolved.display(), "serving file gzipped");
        let body = if method == Method::HEAD {
            Body::empty()
        } else {
            download::gzip_body(file)
        };
        return Ok((StatusCode::OK, response_headers, body).into_response());
    }

    if download::size_is_unreliable(&file, &meta) {
        // No length to promise and no ranges to cut: send whatever reading yields.
        let content_type =
            download::content_type_by_extension(&resolved).unwrap_or("application/octet-stream");
        response_headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        let body = if method == Method::HEAD {
            Body::empty()
        } else {
            download::segments_body(file, vec![download::Segment::ToEnd])
        };
        return Ok((StatusCode::OK, response_headers, body).into_response());
    }
    let size = meta.len();
    if let Some(m) = modified {
        match download::evaluate_preconditions(headers, m) {
            Precondition::Serve => {}
            Precondition::NotModified => {
                return Ok((StatusCode::NOT_MODIFIED, response_headers).into_response());
            }
            Precondition::Failed => {
                return Err(FileError::new(
                    StatusCode::PRECONDITION_FAILED,
                    "the file was modified after the If-Unmodified-Since date",
                ));
            }
        }
    }
    let content_type = match download::content_type_by_extension(&resolved) {
        Some(ct) => ct,
        None => {
            let mut head = vec![0u8; 512.min(usize::try_from(size).unwrap_or(512))];
            let n = file.read_at(&mut head, 0).unwrap_or(0);
            download::sniff_content_type(head.get(..n).unwrap_or_default())
        }
    };
    response_headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));

    let range_header = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .filter(|_| match modified {
            Some(m) => download::if_range_matches(headers, m),
            None => true,
        });
    let mut ranges = match range_header {
        None => Vec::new(),
        Some(spec) => match download::parse_range(spec, size) {
            Ok(r) => r,
            Err(err) => {
                let mut resp = FileError::new(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    format!("{err} for a file of {size} bytes"),
                )
                .into_response();
                if err == RangeError::NoOverlap {
                    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                        resp.headers_mut().insert(header::CONTENT_RANGE, v);
                    }
                }
                return Ok(resp);
            }
        },
    };
    // Ranges adding up to more than the file are an attack or a confused client: send it whole.
    if ranges.iter().map(|r| r.len).sum::<u64>() > size {
        ranges.clear();
    }

    let (status, segments) = match ranges.as_slice() {
        [] => {
            response_headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            (
                StatusCode::OK,
                vec![download::Segment::File {
                    start: 0,
                    len: size,
                }],
            )
        }
        [r] => {
            response_headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            if let Ok(v) =
                HeaderValue::from_str(&format!("bytes {}-{}/{size}", r.start, r.start + r.len - 1))
            {
                response_headers.insert(header::CONTENT_RANGE, v);
            }
            (
                StatusCode::PARTIAL_CONTENT,
                vec![download::Segment::File {
                    start: r.start,
                    len: r.len,
                }],
            )
        }
        many => {
            let boundary = multipart_boundary();
            if let Ok(v) =
                HeaderValue::from_str(&format!("multipart/byteranges; boundary={boundary}"))
            {
                response_headers.insert(header::CONTENT_TYPE, v);
            }
            (
                StatusCode::PARTIAL_CONTENT,
                download::byteranges(many, size, content_type, &boundary),
            )
        }
    };
    if let Some(length) = download::content_length(&segments) {
        response_headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    tracing::debug!(path = %resolved.display(), status = status.as_u16(), "serving file");
    let file = if method == Method::GET && handoff::requested(headers) {
        match handoff::respond(status, &response_headers, file, &segments) {
            Ok(handed_off) => return Ok(handed_off),
            Err(file) => file,
        }
    } else {
        file
    };
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        download::segments_body(file, segments)
    };
    Ok((status, response_headers, body).into_response())
}

/// A boundary for `multipart/byteranges` that no file content can be confused with in practice.
fn multipart_boundary() -> String {
    let mut bytes = [0u8; 16];
    // getrandom(2) cannot fail for 16 bytes once the pool is initialised; a clock fallback keeps
    // this total.
    if hutch_sys::fs::random_bytes(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        bytes = nanos.to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
