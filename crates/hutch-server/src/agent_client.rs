//! The server's own calls to a sandbox's agent: run a command to its end with its output
//! streamed line by line, and upload a file. Template builds drive their build sandbox with
//! these, over the same wire protocol (Connect JSON, `POST /files`) the SDKs speak.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

use axum::body::Body;
use axum::http::Request;
use base64::Engine;
use http_body_util::BodyExt;

use crate::agent_http::HttpClient;
use hutch_contracts::agent::AGENT_PORT;
use hutch_contracts::process_output::OutputReader;

pub use hutch_contracts::process_output::Stream;

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
        let mut reader = OutputReader::default();
        loop {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        reader.push(&data, &mut on_line)?;
                    }
                }
                Some(Err(e)) => return Err(format!("the command's output stream broke: {e}")),
                None => break,
            }
        }
        reader.finish(on_line)
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
