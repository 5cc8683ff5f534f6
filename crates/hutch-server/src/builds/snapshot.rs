//! Snapshots and forks: a sandbox's filesystem, copied while the sandbox is frozen for an
//! instant, kept as a read-only layer on top of the layers it was started from.
//!
//! A snapshot is a template, as on E2B: it belongs to the caller's team, is listed by
//! `GET /snapshots`, starts sandboxes under its id or its `<team>/<name>`, and is deleted
//! with `DELETE /templates/{id}`. A second snapshot under the same name is a new build of
//! the same template. A fork copies the filesystem the same way and starts `count`
//! sandboxes on it at once with the source's template, variables and metadata; its layer
//! belongs to no template and goes once the last fork has.
//!
//! Neither carries processes or memory (hutch has no checkpoint/restore): the new sandboxes
//! boot from the copied disk, running their template's start command and starting fresh
//! kernels. `docs/snapshots.md` has the semantics.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use chrono::Utc;

use super::{lock, spec, Builds, MAX_DEPTH};
use crate::sandbox::{new_id, SandboxRecord};
use crate::service::{
    validate_timeout, CreateRequest, Invalid, Missing, Result, RuntimeOp, ServiceError,
};
use crate::store::Caller;
use crate::templates::{ResolvedTemplate, TemplateRecord, Templates};
use crate::tenancy::{Scope, DEFAULT_TEAM};

/// The most sandboxes one fork request may start.
pub const MAX_FORKS: u32 = 100;
/// The lifetime of forks when the request names none (E2B's default), in seconds.
pub const FORK_TIMEOUT: u64 = 15;
/// The name of the directory (under the layers') that holds forks' layers.
const FORKS_DIR: &str = "forks";

/// A layer directory being made or about to be used: the sweep leaves it alone while this
/// lives.
pub(super) struct Pending<'a> {
    set: &'a std::sync::Mutex<HashSet<PathBuf>>,
    path: PathBuf,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        lock(self.set).remove(&self.path);
    }
}

/// The outcome of one fork: the new sandbox, or why it did not start.
pub type ForkResult = Result<SandboxRecord>;

impl Builds {
    pub(super) fn hold(&self, path: &Path) -> Pending<'_> {
        lock(&self.pending).insert(path.to_path_buf());
        Pending {
            set: &self.pending,
            path: path.to_path_buf(),
        }
    }

    /// Copies sandbox `id`'s filesystem to `dest` (see [`crate::service::Service::capture_layer`])
    /// after checking that `scope` sees it and that one more layer fits; returns its record.
    async fn capture(
        &self,
        id: &str,
        scope: &Scope,
        dest: PathBuf,
    ) -> Result<(SandboxRecord, Vec<PathBuf>)> {
        if !self.svc.visible(id, scope) {
            return Err(Missing::Sandbox(id.to_string()).into());
        }
        let rec = self.svc.get(id)?;
        if rec.build.is_some() {
            return Err(Invalid::Snapshot(format!(
                "sandbox {id} is building a template and cannot be snapshotted or forked"
            ))
            .into());
        }
        let started = std::time::Instant::now();
        let rec = self.svc.capture_layer(id, dest.clone()).await?;
        tracing::info!(sandbox = %id, layer = %dest.display(), ms = started.elapsed().as_millis() as u64, "sandbox filesystem captured");
        let lowers = self.squash_if_deep(&rec, &dest).await?;
        Ok((rec, lowers))
    }

    /// The layers the captured layer `dest` of `rec` stacks on: `rec`'s. When that stack
    /// would be deeper than [`MAX_DEPTH`] (a snapshot of a snapshot's sandbox, many times
    /// over), the layers this server made (builds, snapshots, forks) are squashed into
    /// `dest` with it, and only the default template's remain below.
    async fn squash_if_deep(&self, rec: &SandboxRecord, dest: &Path) -> Result<Vec<PathBuf>> {
        if rec.layers.len() < MAX_DEPTH {
            return Ok(rec.layers.clone());
        }
        let ours = self.layers_dir();
        let made = rec
            .layers
            .iter()
            .take_while(|l| l.starts_with(&ours))
            .count();
        if made == 0 {
            return Err(Invalid::Snapshot(format!(
                "sandbox {} runs on {} layers; hutch stacks at most {MAX_DEPTH}",
                rec.id,
                rec.layers.len()
            ))
            .into());
        }
        // Bottom first: the oldest of ours, up to the new one.
        let mut stack: Vec<PathBuf> = rec.layers[..made].iter().rev().cloned().collect();
        stack.push(dest.to_path_buf());
        let squashed = dest.with_extension("squash");
        let started = std::time::Instant::now();
        let (target, count) = (dest.to_path_buf(), stack.len());
        let done = tokio::task::spawn_blocking(move || {
            let _ = std::fs::remove_dir_all(&squashed);
            hutch_runtime::squash::squash(&stack, &squashed)
                .and_then(|()| {
                    std::fs::remove_dir_all(&target)
                        .and_then(|()| std::fs::rename(&squashed, &target))
                        .map_err(|e| hutch_runtime::RuntimeError::io("replace", &target, e))
                })
                .inspect_err(|_| {
                    let _ = std::fs::remove_dir_all(&squashed);
                })
        })
        .await?;
        done.map_err(|e| ServiceError::runtime(RuntimeOp::Commit, &rec.id, e))?;
        tracing::info!(sandbox = %rec.id, layers = count, ms = started.elapsed().as_millis() as u64, "deep layer chain squashed into one layer");
        Ok(rec.layers[made..].to_vec())
    }

    /// The settings (ENV, user, workdir, start command, resources) of the template sandbox
    /// `rec` was started from, when it is a user-built one that still exists.
    fn source_settings(&self, rec: &SandboxRecord) -> Option<TemplateRecord> {
        self.templates()
            .custom(&rec.template_id, &Scope::operator())
            .filter(|t| t.id == rec.template_id)
    }

    /// `POST /sandboxes/{id}/snapshots`: keeps sandbox `id`'s filesystem as a snapshot
    /// template named `name` (a new build of it when the caller's team has one already),
    /// or under its own id.
    pub async fn snapshot(
        &self,
        id: &str,
        name: Option<&str>,
        caller: Option<Caller>,
    ) -> Result<TemplateRecord> {
        let scope = Scope::of(caller.as_ref());
        let team = caller
            .as_ref()
            .map_or(DEFAULT_TEAM, |c| c.team.name.as_str())
            .to_string();
        // A tag (`name:v2`) is accepted and dropped: each template has the one, `default`.
        let name = name
            .map(|n| n.split(':').next().unwrap_or(n))
            .filter(|n| !n.is_empty());
        if let Some(n) = name {
            if !spec::valid_name(n) {
                return Err(Invalid::TemplateName(n.to_string()).into());
            }
            if Templates::is_default(n) {
                return Err(Invalid::BuiltinName(n.to_string()).into());
            }
        }
        // One named snapshot at a time, so two of one name make one template.
        let _named = match name {
            Some(_) => Some(self.snapshot_names.lock().await),
            None => None,
        };
        let previous = name.and_then(|n| {
            self.templates()
                .custom(n, &Scope::team(&team))
                .filter(|t| t.name == n)
        });
        if let Some(p) = previous.as_ref().filter(|p| p.source_sandbox.is_none()) {
            return Err(Invalid::Snapshot(format!(
                "'{}' is the name of a template that is not a snapshot; choose another name",
                p.name
            ))
            .into());
        }
        let template_id = previous.as_ref().map_or_else(new_id, |p| p.id.clone());
        let build_id = spec::new_build_id();
        let layer = self.layers_dir().join(&template_id).join(&build_id);
        let _pending = self.hold(&layer);
        let (rec, lowers) = self.capture(id, &scope, layer.clone()).await?;
        let source = self.source_settings(&rec);
        let mut env = source.as_ref().map(|t| t.env.clone()).unwrap_or_default();
        env.extend(rec.env_vars.clone());
        let mut layers = vec![layer.clone()];
        layers.extend(lowers);
        let now = Utc::now();
        let record = TemplateRecord {
            id: template_id.clone(),
            name: name.map_or_else(|| template_id.clone(), str::to_string),
            build_id,
            parent: rec.template_id.clone(),
            layers,
            env,
            user: source.as_ref().and_then(|t| t.user.clone()),
            workdir: source.as_ref().and_then(|t| t.workdir.clone()),
            start_cmd: source.as_ref().and_then(|t| t.start_cmd.clone()),
            ready_cmd: source.as_ref().and_then(|t| t.ready_cmd.clone()),
            cpu_count: Some(rec.cpu_count),
            memory_mb: Some(rec.memory_mb),
            created_at: previous.as_ref().map_or(now, |p| p.created_at),
            updated_at: now,
            build_count: previous.as_ref().map_or(0, |p| p.build_count) + 1,
            team: Some(team),
            source_sandbox: Some(rec.id.clone()),
        };
        if let Err(e) = self.svc.store().put_template(&record) {
            let _ = std::fs::remove_dir_all(&layer);
            return Err(e.into());
        }
        self.templates().put_custom(record.clone());
        tracing::info!(sandbox = %rec.id, snapshot = %record.id, name = %record.name, "snapshot taken");
        Ok(record)
    }

    /// `GET /snapshots`: the snapshots `scope` sees, oldest first, optionally only those of
    /// sandbox `sandbox_id` or with name `name` (plain, or `<team>/<name>[:tag]`).
    pub fn snapshots(
        &self,
        scope: &Scope,
        sandbox_id: Option<&str>,
        name: Option<&str>,
    ) -> Vec<TemplateRecord> {
        let name = name.map(|n| n.split(':').next().unwrap_or(n));
        self.templates()
            .customs(scope)
            .into_iter()
            .filter(|t| match &t.source_sandbox {
                Some(s) => sandbox_id.is_none_or(|want| want == s),
                None => false,
            })
            .filter(|t| {
                name.is_none_or(|n| match n.split_once('/') {
                    Some((team, n)) => {
                        t.name == n && t.team.as_deref().unwrap_or(DEFAULT_TEAM) == team
                    }
                    None => t.name == n,
                })
            })
            .collect()
    }

    /// `POST /sandboxes/{id}/fork`: copies sandbox `id`'s filesystem once and starts
    /// `count` (default 1) sandboxes on it, each living `timeout` seconds (default 15).
    /// Each succeeds or fails on its own; the request fails as a whole only when the
    /// source cannot be copied.
    pub async fn fork(
        &self,
        id: &str,
        count: Option<i64>,
        timeout: Option<u64>,
        caller: Option<Caller>,
    ) -> Result<Vec<ForkResult>> {
        let count = match count {
            None => 1,
            Some(c) if (1..=i64::from(MAX_FORKS)).contains(&c) => c as u32,
            Some(c) => {
                return Err(Invalid::ForkCount {
                    asked: c,
                    max: MAX_FORKS,
                }
                .into())
            }
        };
        let timeout = validate_timeout(Some(timeout.unwrap_or(FORK_TIMEOUT)))?;
        let scope = Scope::of(caller.as_ref());
        let layer = self.layers_dir().join(FORKS_DIR).join(spec::new_build_id());
        let pending = self.hold(&layer);
        let (rec, lowers) = self.capture(id, &scope, layer.clone()).await?;
        let mut layers = vec![layer.clone()];
        layers.extend(lowers);
        // Forks mount the source's volumes too (the same team's, shared as they are).
        let volume_mounts = self.svc.volume_sources(&rec.volume_mounts).await?;
        let req = CreateRequest {
            template_id: rec.template_id.clone(),
            timeout: Some(timeout),
            metadata: rec.metadata.clone(),
            env_vars: rec.env_vars.clone(),
            allow_internet_access: rec.allow_internet_access,
            allow_public_traffic: rec.traffic_access_token.as_ref().map(|_| false),
            auto_pause: rec.auto_pause,
            auto_pause_filesystem: rec.auto_pause_filesystem,
            auto_resume: rec.auto_resume,
            caller,
            build: None,
            volume_mounts,
            network: rec.network.clone(),
            template: Some(ResolvedTemplate {
                template_id: rec.template_id.clone(),
                alias: rec.alias.clone(),
                layers,
                custom: self.source_settings(&rec),
            }),
        };
        let results: Vec<ForkResult> =
            futures_util::future::join_all((0..count).map(|_| self.svc.create(req.clone()))).await;
        drop(pending);
        let started = results.iter().filter(|r| r.is_ok()).count();
        if started == 0 {
            let _ = std::fs::remove_dir_all(&layer);
        }
        tracing::info!(sandbox = %id, asked = count, started, "sandbox forked");
        Ok(results)
    }
}

/// The snapshot id E2B's SDKs get back: `<team>/<name>:default` for a named snapshot,
/// else `<id>:default`.
pub fn snapshot_id(t: &TemplateRecord) -> String {
    if t.name == t.id {
        format!("{}:default", t.id)
    } else {
        t.full_name()
    }
}

/// The error of a fork that did not start, as its entry in the response carries it.
pub fn fork_error(e: &ServiceError) -> (u16, String) {
    (crate::api_error::status_of(e).as_u16(), e.to_string())
}
