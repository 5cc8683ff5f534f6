//! `hutch run`: runs code in a sandbox's code interpreter through a hutch (or any
//! E2B-compatible) server, streaming its output and saving image results to files.

use hutch_contracts::agent::CODE_INTERPRETER_PORT;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use crate::client::Api;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};

/// What to run and where.
#[derive(clap::Args)]
pub struct RunArgs {
    /// Code to run (or `-` to read it from stdin); use --file for a file.
    code: Option<String>,
    /// Read the code from this file.
    #[arg(long, short)]
    file: Option<PathBuf>,
    /// Language of the code (python, javascript, typescript, r, java, bash).
    #[arg(long, short, default_value = "python")]
    language: String,
    /// Run in this existing sandbox instead of a new one (it is left running).
    #[arg(long)]
    sandbox: Option<String>,
    /// Template of a new sandbox.
    #[arg(long, default_value = "code-interpreter-v1")]
    template: String,
    /// Keep the new sandbox running afterwards (its id is printed).
    #[arg(long)]
    keep: bool,
    /// Where image results (png, jpeg, svg, pdf) are saved.
    #[arg(long, default_value = ".")]
    out_dir: PathBuf,
    /// The server (E2B_API_URL also works).
    #[arg(long, env = "HUTCH_API_URL", default_value = "http://127.0.0.1:49982")]
    url: String,
    /// API key (E2B_API_KEY also works).
    #[arg(long, env = "HUTCH_API_KEY")]
    api_key: Option<String>,
}

/// Runs `hutch run`; returns the process exit code (1 when the code raised an error).
pub async fn run(a: RunArgs) -> Result<i32> {
    let code = match (&a.code, &a.file) {
        (_, Some(f)) => {
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
        }
        (Some(c), None) if c == "-" => {
            std::io::read_to_string(std::io::stdin()).context("reading stdin")?
        }
        (Some(c), None) => c.clone(),
        (None, None) => bail!("give the code as an argument, `-` for stdin, or --file PATH"),
    };
    let api = Api::new(&a.url, a.api_key.clone())?;

    let (id, token, created) = match &a.sandbox {
        Some(id) => {
            let (_, sbx) = api
                .call(
                    Method::POST,
                    &format!("/sandboxes/{id}/connect"),
                    serde_json::json!({}),
                )
                .await?;
            (
                id.clone(),
                sbx.get("envdAccessToken")
                    .and_then(|t| t.as_str())
                    .map(str::to_string),
                false,
            )
        }
        None => {
            let (_, sbx) = api
                .call(
                    Method::POST,
                    "/v2/sandboxes",
                    serde_json::json!({"templateID": a.template}),
                )
                .await?;
            let id = sbx["sandboxID"]
                .as_str()
                .ok_or_else(|| anyhow!("create answered without a sandboxID"))?
                .to_string();
            (
                id,
                sbx.get("envdAccessToken")
                    .and_then(|t| t.as_str())
                    .map(str::to_string),
                true,
            )
        }
    };
    let result = execute(&api, &id, token.as_deref(), &code, &a.language, &a.out_dir).await;
    if created {
        if a.keep {
            eprintln!("sandbox {id} keeps running");
        } else {
            let _ = api
                .call(
                    Method::DELETE,
                    &format!("/sandboxes/{id}"),
                    serde_json::Value::Null,
                )
                .await;
        }
    }
    result
}

async fn execute(
    api: &Api,
    id: &str,
    token: Option<&str>,
    code: &str,
    language: &str,
    out_dir: &Path,
) -> Result<i32> {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(format!("{}/execute", api.base))
        .header("e2b-sandbox-id", id)
        .header("e2b-sandbox-port", CODE_INTERPRETER_PORT)
        .header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("x-access-token", t);
    }
    let req = req.body(Full::new(Bytes::from(
        serde_json::json!({"code": code, "language": language}).to_string(),
    )))?;
    let resp = api.client.request(req).await.context("calling /execute")?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        bail!(
            "/execute: HTTP {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::new();
    let mut failed = false;
    let mut images = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.context("reading the output stream")?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        buf.extend_from_slice(data);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            if line.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            let ev: serde_json::Value =
                serde_json::from_slice(&line).context("decoding an output line")?;
            failed |= show(&ev, out_dir, &mut images)?;
        }
    }
    Ok(if failed { 1 } else { 0 })
}

/// Prints one event; saves images. Returns true for an error event.
fn show(ev: &serde_json::Value, out_dir: &Path, images: &mut usize) -> Result<bool> {
    use std::io::Write;
    let text = |k: &str| ev.get(k).and_then(|v| v.as_str()).unwrap_or("");
    match text("type") {
        "stdout" => {
            print!("{}", text("text"));
            std::io::stdout().flush()?;
        }
        "stderr" => eprint!("{}", text("text")),
        "result" => {
            for (field, ext) in [
                ("png", "png"),
                ("jpeg", "jpg"),
                ("svg", "svg"),
                ("pdf", "pdf"),
            ] {
                if let Some(data) = ev.get(field).and_then(|v| v.as_str()) {
                    *images += 1;
                    let path = out_dir.join(format!("result-{}.{ext}", *images));
                    let bytes = if field == "svg" {
                        data.as_bytes().to_vec()
                    } else {
                        base64::engine::general_purpose::STANDARD
                            .decode(data)
                            .context("decoding an image result")?
                    };
                    std::fs::create_dir_all(out_dir)
                        .with_context(|| format!("creating {}", out_dir.display()))?;
                    std::fs::write(&path, bytes)
                        .with_context(|| format!("writing {}", path.display()))?;
                    eprintln!("[saved {}]", path.display());
                }
            }
            if ev
                .get("is_main_result")
                .and_then(|v| v.as_bool())
                .unwrap_or(false)
                && !text("text").is_empty()
            {
                println!("{}", text("text"));
            }
        }
        "error" => {
            eprintln!(
                "{}",
                if text("traceback").is_empty() {
                    format!("{}: {}", text("name"), text("value"))
                } else {
                    text("traceback").to_string()
                }
            );
            return Ok(true);
        }
        _ => {}
    }
    Ok(false)
}
