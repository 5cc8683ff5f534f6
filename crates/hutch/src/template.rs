//! `hutch template`: build a template from an `e2b.Dockerfile` (as `e2b template build`
//! does), list and delete templates, through the server's E2B-compatible template API.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use hyper::Method;
use sha2::{Digest, Sha256};

use hutch_contracts::template::{BuildStep, WireStep};

use crate::client::Api;
use crate::dockerfile::{self, Step};

/// Server and key, shared by the subcommands.
#[derive(clap::Args)]
pub struct ServerArgs {
    /// The server (E2B_API_URL also works).
    #[arg(
        long,
        env = "HUTCH_API_URL",
        default_value = "http://127.0.0.1:49982",
        global = true
    )]
    url: String,
    /// API key (E2B_API_KEY also works).
    #[arg(long, env = "HUTCH_API_KEY", global = true)]
    api_key: Option<String>,
}

/// `hutch template ...`.
#[derive(clap::Subcommand)]
pub enum TemplateAction {
    /// Build (or rebuild) a template from a Dockerfile: FROM one of hutch's templates (or
    /// e2bdev/base, e2bdev/code-interpreter), then RUN, COPY, ENV, WORKDIR, USER; CMD or
    /// ENTRYPOINT become the start command.
    Build(BuildArgs),
    /// List the templates built on the server.
    List,
    /// Delete a built template (by name or id).
    Delete {
        /// Name or id.
        template: String,
    },
}

/// `hutch template build`.
#[derive(clap::Args)]
pub struct BuildArgs {
    /// The template's name (what `Sandbox(template=...)` is given).
    #[arg(long, short = 'n')]
    name: Option<String>,
    /// Name, as a positional argument (same as --name).
    #[arg(conflicts_with = "name")]
    template: Option<String>,
    /// Root of the build context: COPY sources are relative to it.
    #[arg(long, short = 'p', default_value = ".")]
    path: PathBuf,
    /// The Dockerfile (default: e2b.Dockerfile, else Dockerfile, in --path).
    #[arg(long, short = 'd')]
    dockerfile: Option<PathBuf>,
    /// Command started in every sandbox of the template (overrides CMD / ENTRYPOINT).
    #[arg(long, short = 'c')]
    cmd: Option<String>,
    /// Command that succeeds once the start command is ready (default: wait 20 s, as E2B).
    #[arg(long)]
    ready_cmd: Option<String>,
    /// CPUs of the template's sandboxes.
    #[arg(long)]
    cpu_count: Option<u32>,
    /// Memory of the template's sandboxes, MiB.
    #[arg(long)]
    memory_mb: Option<u64>,
    /// ARG values (KEY=VALUE), repeatable.
    #[arg(long = "build-arg")]
    build_args: Vec<String>,
}

/// Runs `hutch template ACTION`; returns the exit code.
pub async fn run(server: ServerArgs, action: TemplateAction) -> Result<i32> {
    let api = Api::new(&server.url, server.api_key)?;
    match action {
        TemplateAction::Build(b) => build(&api, b).await,
        TemplateAction::List => {
            let (_, list) = api
                .call(Method::GET, "/templates", serde_json::Value::Null)
                .await?;
            println!(
                "{:<24} {:<22} {:<22} {:>6}  UPDATED",
                "NAME", "ID", "FROM", "BUILDS"
            );
            for t in list.as_array().cloned().unwrap_or_default() {
                let s = |k: &str| t.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
                let name = t["names"][0].as_str().unwrap_or("").to_string();
                println!(
                    "{:<24} {:<22} {:<22} {:>6}  {}",
                    name,
                    s("templateID"),
                    s("parent"),
                    t["buildCount"].as_u64().unwrap_or(0),
                    s("updatedAt")
                );
            }
            Ok(0)
        }
        TemplateAction::Delete { template } => {
            api.call(
                Method::DELETE,
                &format!("/templates/{template}"),
                serde_json::Value::Null,
            )
            .await?;
            println!("deleted template {template}");
            Ok(0)
        }
    }
}

/// A relative path inside the context, without `..`.
fn check_source(src: &str) -> Result<()> {
    let p = Path::new(src);
    if p.is_absolute() || p.components().any(|c| matches!(c, Component::ParentDir)) {
        bail!("COPY {src}: sources must be relative paths inside the build context");
    }
    Ok(())
}

/// Tars what `src` (a path or glob) matches in `context`.
fn archive(context: &Path, src: &str) -> Result<Vec<u8>> {
    check_source(src)?;
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(
            r#"cd -- "$1" || exit 2
shopt -s nullglob dotglob
IFS=
src=${2%/}
m=( $src )
if [ ${#m[@]} -eq 0 ] || ! [ -e "${m[0]}" -o -L "${m[0]}" ]; then echo "no file matches '$2' in $1" >&2; exit 3; fi
exec tar --sort=name --numeric-owner -cf - -- "${m[@]}""#,
        )
        .arg("hutch-copy")
        .arg(context)
        .arg(src)
        .output()
        .context("running bash and tar to pack a COPY source")?;
    if !out.status.success() {
        bail!(
            "COPY {src}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

async fn build(api: &Api, b: BuildArgs) -> Result<i32> {
    let name = b
        .name
        .or(b.template)
        .ok_or_else(|| anyhow!("name the template: hutch template build --name NAME"))?;
    let dockerfile = match &b.dockerfile {
        Some(d) => d.clone(),
        None => ["e2b.Dockerfile", "Dockerfile"]
            .iter()
            .map(|f| b.path.join(f))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                anyhow!(
                    "no e2b.Dockerfile or Dockerfile in {}; pass --dockerfile",
                    b.path.display()
                )
            })?,
    };
    let text = std::fs::read_to_string(&dockerfile)
        .with_context(|| format!("reading {}", dockerfile.display()))?;
    let mut args = BTreeMap::new();
    for kv in &b.build_args {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow!("--build-arg {kv}: expected KEY=VALUE"))?;
        args.insert(k.to_string(), v.to_string());
    }
    let parsed =
        dockerfile::parse(&text, &args).with_context(|| format!("in {}", dockerfile.display()))?;
    for w in &parsed.warnings {
        eprintln!("warning: {w}");
    }

    // Pack the COPY sources first, so a missing file fails before the server does anything.
    let mut steps = Vec::new();
    let mut uploads = Vec::new();
    for step in &parsed.steps {
        let typed = match step {
            Step::Run(cmd) => BuildStep::Run {
                command: cmd.clone(),
                user: None,
            },
            Step::Env(pairs) => BuildStep::Env(pairs.clone()),
            Step::Workdir(d) => BuildStep::Workdir(d.clone()),
            Step::User(u) => BuildStep::User(u.clone()),
            Step::Copy {
                src,
                dest,
                owner,
                mode,
            } => {
                let tar = archive(&b.path, src)?;
                let mut h = Sha256::new();
                h.update(src.as_bytes());
                h.update([0]);
                h.update(dest.as_bytes());
                h.update([0]);
                h.update(&tar);
                let hash = hex::encode(h.finalize());
                uploads.push((src.clone(), hash.clone(), tar));
                BuildStep::Copy {
                    src: src.clone(),
                    dest: dest.clone(),
                    owner: owner.clone(),
                    mode: mode.clone(),
                    files_hash: Some(hash),
                }
            }
        };
        steps.push(WireStep::from(&typed));
    }
    let mut body = serde_json::json!({ "name": name });
    if let Some(c) = b.cpu_count {
        body["cpuCount"] = c.into();
    }
    if let Some(m) = b.memory_mb {
        body["memoryMB"] = m.into();
    }
    let (_, created) = api.call(Method::POST, "/v3/templates", body).await?;
    let template_id = created["templateID"]
        .as_str()
        .ok_or_else(|| anyhow!("the server answered without a templateID"))?
        .to_string();
    let build_id = created["buildID"]
        .as_str()
        .ok_or_else(|| anyhow!("the server answered without a buildID"))?
        .to_string();
    eprintln!("Building template '{name}' ({template_id}), build {build_id}");
    for (src, hash, tar) in uploads {
        let (_, link) = api
            .call(
                Method::GET,
                &format!("/templates/{template_id}/files/{hash}"),
                serde_json::Value::Null,
            )
            .await?;
        if link["present"].as_bool() == Some(true) {
            eprintln!("  {src}: already on the server");
            continue;
        }
        let url = link["url"]
            .as_str()
            .ok_or_else(|| anyhow!("the server gave no upload URL for {src}"))?;
        eprintln!("  uploading {src} ({} KiB)", tar.len().div_ceil(1024));
        api.put(url, tar).await?;
    }
    let start_cmd = b.cmd.or(parsed.start_cmd);
    let ready_cmd = b
        .ready_cmd
        .or_else(|| start_cmd.as_ref().map(|_| "sleep 20".to_string()));
    let from = &parsed.from;
    let mut spec = serde_json::json!({ "steps": steps, "force": false });
    if from.contains('/') {
        spec["fromImage"] = from.clone().into();
    } else {
        spec["fromTemplate"] = from.clone().into();
    }
    if let Some(s) = &start_cmd {
        spec["startCmd"] = s.clone().into();
    }
    if let Some(r) = &ready_cmd {
        spec["readyCmd"] = r.clone().into();
    }
    api.call(
        Method::POST,
        &format!("/v2/templates/{template_id}/builds/{build_id}"),
        spec,
    )
    .await?;

    let mut offset = 0;
    loop {
        let (_, st) = api
            .call(
                Method::GET,
                &format!("/templates/{template_id}/builds/{build_id}/status?logsOffset={offset}"),
                serde_json::Value::Null,
            )
            .await?;
        let entries = st["logEntries"].as_array().cloned().unwrap_or_default();
        offset += entries.len();
        for e in &entries {
            let level = e["level"].as_str().unwrap_or("info");
            let msg = e["message"].as_str().unwrap_or("");
            if level == "error" {
                eprintln!("  error: {msg}");
            } else {
                eprintln!("  {msg}");
            }
        }
        match st["status"].as_str() {
            Some("ready") if entries.is_empty() => {
                println!("Template '{name}' is ready: {template_id}");
                println!("Use it: Sandbox(template=\"{name}\")");
                return Ok(0);
            }
            Some("error") if entries.is_empty() => {
                let reason = st["reason"]["message"]
                    .as_str()
                    .unwrap_or("the build failed");
                eprintln!("Build failed: {reason}");
                return Ok(1);
            }
            Some("ready") | Some("error") => continue,
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_stay_in_the_context() {
        assert!(check_source("app.py").is_ok());
        assert!(check_source("src/*.py").is_ok());
        assert!(check_source("/etc/passwd").is_err());
        assert!(check_source("../secret").is_err());
        assert!(check_source("a/../../b").is_err());
    }
}
