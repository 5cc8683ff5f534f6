//! The `multipart/form-data` parser behind `POST /files`: arbitrary bodies, fed in arbitrary
//! chunk sizes, must never panic, must stay within the parser's memory bound, and must give the
//! same parts and errors however the body is split.
#![no_main]

use hutch_contracts::multipart::{self, Event, Parser, PartHeaders};
use libfuzzer_sys::fuzz_target;

const BOUNDARIES: &[&str] = &[
    "b",
    "XyZ",
    "----WebKitFormBoundary7MA4YWxkTrZu0gW",
    "d41d8cd98f00b204e9800998ecf8427e",
    "a'()+_,-./:=? z",
];

type Parts = Vec<(PartHeaders, Vec<u8>)>;

/// Parses `body` pushing `chunk` bytes at a time (as `Bytes` when `shared`), checking the
/// memory bound after every drain.
fn incremental(
    boundary: &str,
    body: &[u8],
    chunk: usize,
    shared: bool,
) -> Result<Parts, multipart::MultipartError> {
    let mut parser = Parser::new(boundary)?;
    let mut parts: Parts = Vec::new();
    let mut pieces = body.chunks(chunk);
    loop {
        let more = match pieces.next() {
            Some(piece) => {
                if shared {
                    parser.push_bytes(bytes::Bytes::copy_from_slice(piece));
                } else {
                    parser.push(piece);
                }
                true
            }
            None => {
                parser.finish();
                false
            }
        };
        while let Some(event) = parser.next_event()? {
            match event {
                Event::PartStart(h) => parts.push((h, Vec::new())),
                Event::Data(d) => {
                    assert!(!d.is_empty(), "empty Data event");
                    parts
                        .last_mut()
                        .expect("Data before PartStart")
                        .1
                        .extend_from_slice(&d);
                }
                Event::PartEnd => {}
                Event::End => return Ok(parts),
            }
        }
        assert!(
            parser.buffered() <= parser.retained_bound(),
            "parser retains {} bytes, bound {}",
            parser.buffered(),
            parser.retained_bound()
        );
        if !more {
            // After finish() the parser reports End or an error; never loop on it.
            return Ok(parts);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let boundary = BOUNDARIES[usize::from(data[0]) % BOUNDARIES.len()];
    let chunk = usize::from(data[1]) % 97 + 1;
    let body = &data[2..];

    let whole = multipart::parse_all(boundary, body);
    let split = incremental(boundary, body, chunk, false);
    assert_eq!(whole, split, "result depends on how the body is split");
    // Shared chunks: large ones take the path that does not copy content.
    let shared = incremental(boundary, body, chunk * 64, true);
    assert_eq!(whole, shared, "result depends on whether chunks are shared");

    // The content-type and header-parameter parsers get the raw bytes too.
    if let Ok(text) = std::str::from_utf8(body) {
        let _ = multipart::boundary_from_content_type(text);
        let _ = multipart::parse_media_type(text);
    }
});
