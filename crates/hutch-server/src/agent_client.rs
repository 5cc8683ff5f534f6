//! The server's own calls to a sandbox's agent: run a command to its end with its output
//! streamed line by line, and upload a file. Template builds drive their build sandbox with
//! these, over the same wire protocol (Connect JSON, `POST /files`) the SDKs speak.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

use axum::body::Body;
use axum::http::Request;
use base64::Engine;
use bytes::{Buf, BytesMut};
use http_body_util::BodyExt;

use crate::agent_http::HttpClient;
use hutch_contracts::agent::AGENT_PORT;

/// The largest Connect frame read from a command's output stream. The agent sends output
/// in chunks of a few KiB; a frame announcing more is a broken (or hostile) agent, and the
/// server must not buffer whatever it announces (up to 4 GiB).
const MAX_FRAME: usize = 4 << 20;

/// The longest line of command output handed on whole: past it, a line without an end is
/// handed on in pieces of this size, so output that never ends a line (`yes | tr -d '\n'`)
/// cannot grow the server's memory.
const MAX_LINE: usize = 64 << 10;

/// Splits a stream of text into lines of at most [`MAX_LINE`] bytes.
#[derive(Default)]
struct Lines {
    partial: String,
}

impl Lines {
    /// Adds `text` and hands on every line it completes (without its line end), and pieces
    /// of [`MAX_LINE`] bytes of a line too long to wait for.
    fn push(&mut self, text: &str, mut emit: impl FnMut(&str)) {
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
    fn rest(&self) -> Option<&str> {
        (!self.partial.is_empty()).then_some(self.partial.as_str())
    }
}

/// Which stream a line of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// How a command is run.
#[derive(Debug, Clone, Copy)]
pub struct Command<'a> {
    /// The shell script, run as `/bin/bash -l -c script`.
    pub script: &'a str,
    /// The user it runs as.
    pub user: &'a str,
    /// Its working directory (`None` = the user's home).
    pub cwd: Option<&'a str>,
    /// Extra environment variables.
    pub envs: &'a BTreeMap<String, String>,
}

/// A client for one sandbox's agent.
pub struct AgentClient<'a> {
    http: &'a HttpClient,
    base: String,
    token: Option<&'a str>,
}

fn basic(user: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:"))
    )
}

impl<'a> AgentClient<'a> {
    /// A client for the agent at `ip`, sending `token` when the sandbox has one.
    pub fn new(http: &'a HttpClient, ip: Ipv4Addr, token: Option<&'a str>) -> Self {
        AgentClient {
            http,
            base: format!("http://{ip}:{AGENT_PORT}"),
            token,
        }
    }

    fn request(&self, method: &str, path: &str, user: &str) -> axum::http::request::Builder {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("authorization", basic(user));
        if let Some(t) = self.token {
            b = b.header("x-access-token", t);
        }
        b
    }

    async fn send(
        &self,
        req: Request<Body>,
    ) -> Result<axum::http::Response<hyper::body::Incoming>, String> {
        self.http
            .request(req)
            .await
            .map_err(|e| format!("cannot reach the sandbox's agent: {e}"))
    }

    /// Runs `cmd` to its end, handing each line of its output to `on_line`; returns its exit
    /// code (-1 when it was killed by a signal).
    pub async fn run(
        &self,
        cmd: &Command<'_>,
        mut on_line: impl FnMut(Stream, &str),
    ) -> Result<i32, String> {
        let mut process = serde_json::json!({
            "cmd": "/bin/bash",
            "args": ["-l", "-c", cmd.script],
            "envs": cmd.envs,
        });
        if let Some(cwd) = cmd.cwd {
            process["cwd"] = cwd.into();
        }
        let payload = serde_json::to_vec(&serde_json::json!({ "process": process }))
            .map_err(|e| e.to_string())?;
        let mut body = Vec::with_capacity(payload.len() + 5);
        body.push(0u8);
        body.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        body.extend_from_slice(&payload);
        let req = self
            .request("POST", "/process.Process/Start", cmd.user)
            .header("content-type", "application/connect+json")
            .header("connect-protocol-version", "1")
            .body(Body::from(body))
            .map_err(|e| e.to_string())?;
        let resp = self.send(req).await?;
        if !resp.status().is_success() {
            return Err(format!(
                "the agent refused the command: {}",
                body_text(resp).await
            ));
        }
        let mut body = resp.into_body();
        let mut buf = BytesMut::new();
        let mut lines = [Lines::default(), Lines::default()];
        let mut exit = None;
        loop {
            while buf.len() >= 5 {
                let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
                if len > MAX_FRAME {
                    return Err(format!(
                        "the agent sent an output frame of {len} bytes (at most {MAX_FRAME} are read)"
                    ));
                }
                if buf.len() < 5 + len {
                    break;
                }
                let flags = buf[0];
                buf.advance(5);
                let msg = buf.split_to(len);
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
                    for (i, (key, stream)) in
                        [("stdout", Stream::Stdout), ("stderr", Stream::Stderr)]
                            .into_iter()
                            .enumerate()
                    {
                        let Some(b64) = data.get(key).and_then(|d| d.as_str()) else {
                            continue;
                        };
                        let bytes = base64::engine::general_purpose::STANDARD
                            .decode(b64)
                            .unwrap_or_default();
                        lines[i].push(&String::from_utf8_lossy(&bytes), |line| {
                            on_line(stream, line);
                        });
                    }
                }
                if let Some(end) = event.get("end") {
                    let code = end.get("exitCode").and_then(|c| c.as_i64()).unwrap_or(0);
                    let exited = end.get("exited").and_then(|c| c.as_bool()).unwrap_or(true);
                    exit = Some(if exited { code as i32 } else { -1 });
                }
            }
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        buf.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => return Err(format!("the command's output stream broke: {e}")),
                None => break,
            }
        }
        for (i, stream) in [Stream::Stdout, Stream::Stderr].into_iter().enumerate() {
            if let Some(rest) = lines[i].rest() {
                on_line(stream, rest);
            }
        }
        exit.ok_or_else(|| "the command's stream ended without an exit status".to_string())
    }

    /// `POST`s the JSON `body` to the agent's `path` and expects a 2xx within `limit`.
    pub async fn post_json(
        &self,
        path: &str,
        body: Vec<u8>,
        limit: std::time::Duration,
    ) -> Result<(), String> {
        self.post_for_body(path, body, limit).await.map(drop)
    }

    /// [`Self::post_json`], returning the answer's body.
    pub async fn post_for_body(
        &self,
        path: &str,
        body: Vec<u8>,
        limit: std::time::Duration,
    ) -> Result<Vec<u8>, String> {
        let req = self
            .request("POST", path, "root")
            .header("content-type", "application/json")
            .body(Body::from(body))
            .map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(limit, self.send(req))
            .await
            .map_err(|_| format!("the agent did not answer {path} within {limit:?}"))??;
        if resp.status().is_success() {
            let body = tokio::time::timeout(limit, resp.into_body().collect())
                .await
                .map_err(|_| {
                    format!("the agent's answer to {path} did not arrive within {limit:?}")
                })?
                .map_err(|e| e.to_string())?;
            return Ok(body.to_bytes().to_vec());
        }
        let status = resp.status();
        Err(format!(
            "{path} failed ({status}): {}",
            body_text(resp).await
        ))
    }

    /// Uploads the host file `src` to `dest` in the sandbox, as `user`.
    pub async fn upload(&self, src: &Path, dest: &str, user: &str) -> Result<(), String> {
        let file = tokio::fs::File::open(src)
            .await
            .map_err(|e| format!("cannot open {}: {e}", src.display()))?;
        let stream = futures_util::stream::unfold(file, |mut f| async move {
            use tokio::io::AsyncReadExt;
            let mut chunk = vec![0u8; 256 * 1024];
            match f.read(&mut chunk).await {
                Ok(0) => None,
                Ok(n) => {
                    chunk.truncate(n);
                    Some((Ok::<_, std::io::Error>(bytes::Bytes::from(chunk)), f))
                }
                Err(e) => Some((Err(e), f)),
            }
        });
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("path", dest)
            .append_pair("username", user)
            .finish();
        let req = self
            .request("POST", &format!("/files?{query}"), user)
            .header("content-type", "application/octet-stream")
            .body(Body::from_stream(stream))
            .map_err(|e| e.to_string())?;
        let resp = self.send(req).await?;
        if resp.status().is_success() {
            return Ok(());
        }
        let status = resp.status();
        Err(format!(
            "uploading to {dest} failed ({status}): {}",
            body_text(resp).await
        ))
    }
}

/// An answer's body as text, for an error message.
async fn body_text(resp: axum::http::Response<hyper::body::Incoming>) -> String {
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod lines_tests {
    use super::{Lines, MAX_LINE};

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
}
