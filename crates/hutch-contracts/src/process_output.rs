//! Reading a command's output as the agent streams it: Connect frames (`flags`, a 4-byte
//! big-endian length, a JSON message) of `process.Process/Start` events, with stdout and
//! stderr as base64, split into lines. The server reads this from agents inside sandboxes
//! (template builds), so every byte is untrusted: frames and lines are bounded, and nothing
//! the stream says can make the reader buffer more than [`MAX_FRAME`] plus one chunk.

use base64::Engine;
use bytes::{Buf, BytesMut};

/// The largest frame read. The agent sends output in chunks of a few KiB; a frame announcing
/// more is a broken (or hostile) agent, and the reader must not buffer what it announces (up
/// to 4 GiB).
pub const MAX_FRAME: usize = 4 << 20;

/// The longest line handed on whole: past it, a line without an end is handed on in pieces of
/// this size, so output that never ends a line (`yes | tr -d '\n'`) cannot grow memory.
pub const MAX_LINE: usize = 64 << 10;

/// Which stream a line of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Splits a stream of text into lines of at most [`MAX_LINE`] bytes.
#[derive(Default)]
pub struct Lines {
    partial: String,
}

impl Lines {
    /// Adds `text` and hands on every line it completes (without its line end), and pieces
    /// of [`MAX_LINE`] bytes of a line too long to wait for.
    pub fn push(&mut self, text: &str, mut emit: impl FnMut(&str)) {
        self.partial.push_str(text);
        loop {
            let (cut, ends_line) = match self.partial.find('\n') {
                Some(n) if n <= MAX_LINE => (n + 1, true),
                _ if self.partial.len() >= MAX_LINE => {
                    let mut cut = MAX_LINE;
                    while !self.partial.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    (cut, false)
                }
                _ => return,
            };
            let line: String = self.partial.drain(..cut).collect();
            if ends_line {
                emit(line.trim_end_matches(['\n', '\r']));
            } else {
                emit(&line);
            }
        }
    }

    /// What is left: the last line, when the stream did not end it.
    pub fn rest(&self) -> Option<&str> {
        (!self.partial.is_empty()).then_some(self.partial.as_str())
    }

    /// Bytes held back, waiting for a line end.
    pub fn pending(&self) -> usize {
        self.partial.len()
    }
}

/// Reads the frames of one command's output stream.
#[derive(Default)]
pub struct OutputReader {
    buf: BytesMut,
    lines: [Lines; 2],
    exit: Option<i32>,
}

impl OutputReader {
    /// Adds bytes of the stream and hands on every line they complete. An error ends the
    /// stream: a frame over [`MAX_FRAME`], or the end frame's error (the command could not
    /// run).
    pub fn push(
        &mut self,
        data: &[u8],
        mut on_line: impl FnMut(Stream, &str),
    ) -> Result<(), String> {
        self.buf.extend_from_slice(data);
        while self.buf.len() >= 5 {
            let len =
                u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
            if len > MAX_FRAME {
                return Err(format!(
                    "the agent sent an output frame of {len} bytes (at most {MAX_FRAME} are read)"
                ));
            }
            if self.buf.len() < 5 + len {
                break;
            }
            let flags = self.buf[0];
            self.buf.advance(5);
            let msg = self.buf.split_to(len);
            let v: serde_json::Value = serde_json::from_slice(&msg).unwrap_or_default();
            if flags & 2 != 0 {
                if let Some(err) = v.get("error") {
                    return Err(format!(
                        "the command failed to run: {}",
                        err.get("message").and_then(|m| m.as_str()).unwrap_or("")
                    ));
                }
                continue;
            }
            let event = &v["event"];
            if let Some(data) = event.get("data") {
                for (i, (key, stream)) in [("stdout", Stream::Stdout), ("stderr", Stream::Stderr)]
                    .into_iter()
                    .enumerate()
                {
                    let Some(b64) = data.get(key).and_then(|d| d.as_str()) else {
                        continue;
                    };
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .unwrap_or_default();
                    self.lines[i].push(&String::from_utf8_lossy(&bytes), |line| {
                        on_line(stream, line);
                    });
                }
            }
            if let Some(end) = event.get("end") {
                let code = end.get("exitCode").and_then(|c| c.as_i64()).unwrap_or(0);
                let exited = end.get("exited").and_then(|c| c.as_bool()).unwrap_or(true);
                self.exit = Some(if exited {
                    i32::try_from(code).unwrap_or(i32::MAX)
                } else {
                    -1
                });
            }
        }
        Ok(())
    }

    /// Bytes held: of a frame not complete yet, and of lines not ended yet.
    pub fn buffered(&self) -> usize {
        self.buf.len() + self.lines.iter().map(Lines::pending).sum::<usize>()
    }

    /// The stream ended: hands on the lines it did not end; the exit status.
    pub fn finish(self, mut on_line: impl FnMut(Stream, &str)) -> Result<i32, String> {
        for (i, stream) in [Stream::Stdout, Stream::Stderr].into_iter().enumerate() {
            if let Some(rest) = self.lines[i].rest() {
                on_line(stream, rest);
            }
        }
        self.exit
            .ok_or_else(|| "the command's stream ended without an exit status".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(pieces: &[&str]) -> (Vec<String>, Option<String>) {
        let mut lines = Lines::default();
        let mut out = Vec::new();
        for piece in pieces {
            lines.push(piece, |l| out.push(l.to_owned()));
        }
        (out, lines.rest().map(str::to_owned))
    }

    #[test]
    fn lines_are_handed_on_whole_across_pieces() {
        let (out, rest) = split(&["a\nb", "c\r\n", "", "d"]);
        assert_eq!(out, ["a", "bc"]);
        assert_eq!(rest.as_deref(), Some("d"));
    }

    #[test]
    fn a_line_that_never_ends_is_handed_on_in_bounded_pieces() {
        let long = "é".repeat(MAX_LINE); // two bytes each: cuts must fall between characters
        let (out, rest) = split(&[&long, &long, "\n"]);
        assert!(
            out.iter().all(|l| l.len() <= MAX_LINE),
            "a piece is too long"
        );
        assert_eq!(out.concat() + rest.as_deref().unwrap_or(""), long.repeat(2));
        // A long line followed by its end within one piece is bounded too.
        let (out, _) = split(&[&format!("{}\nshort\n", "x".repeat(3 * MAX_LINE))]);
        assert_eq!(out.len(), 4);
        assert!(out.iter().all(|l| l.len() <= MAX_LINE));
        assert_eq!(out.last().map(String::as_str), Some("short"));
    }

    fn frame(flags: u8, json: &str) -> Vec<u8> {
        let mut f = vec![flags];
        f.extend_from_slice(&(json.len() as u32).to_be_bytes());
        f.extend_from_slice(json.as_bytes());
        f
    }

    fn read(stream: &[u8], chunk: usize) -> (Vec<(Stream, String)>, Result<i32, String>) {
        let mut r = OutputReader::default();
        let mut out = Vec::new();
        for piece in stream.chunks(chunk.max(1)) {
            if let Err(e) = r.push(piece, |s, l| out.push((s, l.to_owned()))) {
                return (out, Err(e));
            }
        }
        let exit = r.finish(|s, l| out.push((s, l.to_owned())));
        (out, exit)
    }

    #[test]
    fn output_and_exit_status_are_read_however_the_stream_is_cut() {
        let mut stream = frame(0, r#"{"event":{"start":{"pid":7}}}"#);
        stream.extend(frame(0, r#"{"event":{"data":{"stdout":"aGVsbG8Kd28="}}}"#)); // "hello\nwo"
        stream.extend(frame(0, r#"{"event":{"data":{"stderr":"b29wcwo="}}}"#)); // "oops\n"
        stream.extend(frame(0, r#"{"event":{"data":{"stdout":"cmxk"}}}"#)); // "rld"
        stream.extend(frame(
            0,
            r#"{"event":{"end":{"exitCode":3,"exited":true}}}"#,
        ));
        stream.extend(frame(2, "{}"));
        for chunk in [1, 2, 5, 7, 64, stream.len()] {
            let (out, exit) = read(&stream, chunk);
            assert_eq!(exit, Ok(3));
            assert_eq!(
                out,
                [
                    (Stream::Stdout, "hello".to_string()),
                    (Stream::Stderr, "oops".to_string()),
                    (Stream::Stdout, "world".to_string()),
                ]
            );
        }
    }

    #[test]
    fn a_hostile_stream_is_refused_not_buffered() {
        // A frame announcing 4 GiB is refused once its header is in.
        let mut r = OutputReader::default();
        let err = r.push(&[0, 0xff, 0xff, 0xff, 0xff], |_, _| {}).unwrap_err();
        assert!(err.contains("output frame of"), "{err}");
        // The end frame's error is the command's error; no end is an error too.
        let (_, exit) = read(&frame(2, r#"{"error":{"message":"no bash"}}"#), 3);
        assert_eq!(exit, Err("the command failed to run: no bash".to_string()));
        let (_, exit) = read(&frame(0, "not json"), 3);
        assert!(exit.unwrap_err().contains("without an exit status"));
        // A signal: -1; an exit code beyond i32 saturates.
        let (_, exit) = read(
            &frame(0, r#"{"event":{"end":{"exitCode":9,"exited":false}}}"#),
            4,
        );
        assert_eq!(exit, Ok(-1));
        let (_, exit) = read(
            &frame(0, r#"{"event":{"end":{"exitCode":99999999999}}}"#),
            4,
        );
        assert_eq!(exit, Ok(i32::MAX));
    }
}
