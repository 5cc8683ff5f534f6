//! Template builds: E2B's build API and the builder behind it.
//!
//! A client asks for a build (`POST /v3/templates`), uploads the files its COPY steps need
//! (`GET /templates/{id}/files/{hash}` says whether the server has them and where to PUT
//! them), starts the build (`POST /v2/templates/{id}/builds/{build}`) and polls its status
//! and logs. The builder starts a sandbox from the parent template, runs the steps in it
//! through its agent (RUN, COPY, ENV, WORKDIR, USER), checks the start and ready commands,
//! then keeps what the steps changed (the sandbox's overlay upper dir) as a read-only
//! layer under `<data>/templates/layers/<template>/<build>`. Sandboxes of the new template
//! stack that layer on its parent's layers. docs/templates.md has the design.
//!
//! Builds use the [`Service`] (to run their sandbox); the service knows nothing of builds.
//! [`spec`] checks requests and types their steps, [`upload`] takes COPY files, `runner`
//! drives a build and `steps` interprets its steps.

mod runner;
pub mod snapshot;
pub mod spec;
mod steps;
pub mod upload;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use serde::Serialize;

use crate::service::{lock, Invalid, Missing, Result, Service, ServiceError};
use crate::templates::Templates;
use crate::tenancy::{Scope, DEFAULT_TEAM};

pub use spec::BuildSpec;

/// The deepest chain of user-built templates (each adds a layer to the overlay mount, whose
/// options must fit in a page).
pub const MAX_DEPTH: usize = 24;
/// How long a finished (or never started) build's status stays readable.
const BUILDS_KEPT: Duration = Duration::from_secs(3600);
/// The status call's page size (E2B's).
const LOGS_PAGE: usize = 100;
/// The most log entries a build keeps (its errors excepted): a step's output is the
/// sandbox's to choose, and must not grow the server's memory without bound.
const MAX_LOG_ENTRIES: usize = 20_000;
/// The most bytes of log messages a build keeps (its errors excepted).
const MAX_LOG_BYTES: usize = 8 << 20;

/// One line of a build's log, as E2B's status call returns it.
#[derive(Debug, Clone, Serialize)]
pub struct LogEntry {
    /// RFC 3339.
    pub timestamp: String,
    /// `info`, `warn` or `error`.
    pub level: &'static str,
    /// The text.
    pub message: String,
    /// The step it belongs to (`base`, `1`, `2`, ..., `finalize`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Waiting,
    Building,
    Ready,
    Error,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Waiting => "waiting",
            Status::Building => "building",
            Status::Ready => "ready",
            Status::Error => "error",
        }
    }
}

#[derive(Debug)]
struct BuildState {
    status: Status,
    logs: Vec<LogEntry>,
    /// Bytes of the messages in `logs`.
    log_bytes: usize,
    /// Whether output was dropped for [`MAX_LOG_ENTRIES`] or [`MAX_LOG_BYTES`].
    truncated: bool,
    /// Why it failed, and in which step.
    reason: Option<(String, Option<String>)>,
}

/// One requested build.
#[derive(Debug)]
pub struct Build {
    /// The template it builds.
    pub template_id: String,
    /// Its id.
    pub build_id: String,
    /// The template's name.
    pub name: String,
    cpu_count: Option<u32>,
    memory_mb: Option<u64>,
    /// Who asked: the build sandbox counts against that key's limit, and the template
    /// belongs to its team.
    caller: Option<crate::store::Caller>,
    /// Authorises the file uploads of this build (they carry no API key), for the hashes
    /// in `files_asked` only.
    pub upload_token: String,
    /// The COPY archives this build asked about (`GET /templates/{id}/files/{hash}`): the
    /// only ones its token may upload.
    files_asked: Mutex<HashSet<String>>,
    /// When it was requested.
    requested: Instant,
    state: Mutex<BuildState>,
}

impl Build {
    /// The team the template belongs to.
    pub fn team(&self) -> &str {
        self.caller.as_ref().map_or(DEFAULT_TEAM, |c| &c.team.name)
    }

    /// What the build may see: its caller's templates (FROM) and files.
    fn scope(&self) -> Scope {
        Scope::of(self.caller.as_ref())
    }

    fn log(&self, level: &'static str, step: Option<&str>, message: impl Into<String>) {
        let message = message.into();
        tracing::debug!(build = %self.build_id, step, "{message}");
        let mut s = lock(&self.state);
        let full = s.logs.len() >= MAX_LOG_ENTRIES || s.log_bytes + message.len() > MAX_LOG_BYTES;
        // Entries are only ever appended (clients page through them by offset); past the
        // limits one line says so, and only errors are kept after it.
        let (level, message) = match (full, level) {
            (false, _) | (true, "error") => (level, message),
            (true, _) if s.truncated => return,
            (true, _) => {
                s.truncated = true;
                let note = format!(
                    "the build's output past {MAX_LOG_ENTRIES} lines or {} MiB is not kept",
                    MAX_LOG_BYTES >> 20
                );
                ("warn", note)
            }
        };
        s.log_bytes += message.len();
        s.logs.push(LogEntry {
            timestamp: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            level,
            message,
            step: step.map(str::to_string),
        });
    }

    fn fail(&self, step: &str, message: String) {
        self.log("error", Some(step), message.clone());
        let mut s = lock(&self.state);
        s.status = Status::Error;
        s.reason = Some((message, Some(step.to_string())));
    }
}

/// Checks the resources a build request asks for against the most the operator allows
/// (`ceiling`) and the caller's team's own limits.
fn check_resources(
    cpu_count: Option<u32>,
    memory_mb: Option<u64>,
    ceiling: (u32, u64),
    team: Option<&crate::store::Team>,
) -> Result<()> {
    let max_cpu = team
        .and_then(|t| t.max_cpu)
        .map_or(ceiling.0, |t| t.min(ceiling.0));
    let max_memory = team
        .and_then(|t| t.max_memory_mb)
        .map_or(ceiling.1, |t| t.min(ceiling.1));
    if let Some(c) = cpu_count.filter(|c| !(1..=max_cpu).contains(c)) {
        return Err(Invalid::CpuCount {
            asked: c,
            max: max_cpu,
        }
        .into());
    }
    if let Some(m) = memory_mb.filter(|m| !(128..=max_memory).contains(m)) {
        return Err(Invalid::MemoryMb {
            asked: m,
            max: max_memory,
        }
        .into());
    }
    Ok(())
}

/// Every template build of this server, and the files uploaded for them.
pub struct Builds {
    svc: Arc<Service>,
    builds: Mutex<HashMap<String, Arc<Build>>>,
    dir: PathBuf,
    /// Layers being made for snapshots and forks, which the sweep must leave alone.
    pending: Mutex<HashSet<PathBuf>>,
    /// Held while a named snapshot is taken, so two of one name make one template.
    snapshot_names: tokio::sync::Mutex<()>,
}

impl Builds {
    /// The builds of `svc`, keeping files and layers under `<data>/templates`.
    pub fn new(svc: Arc<Service>) -> Arc<Self> {
        let dir = svc.state_dir().join("templates");
        Arc::new(Builds {
            svc,
            builds: Mutex::new(HashMap::new()),
            dir,
            pending: Mutex::new(HashSet::new()),
            snapshot_names: tokio::sync::Mutex::new(()),
        })
    }

    fn templates(&self) -> &Arc<Templates> {
        self.svc.templates()
    }

    /// Where `team`'s COPY archives are kept: each team has its own, so no team's
    /// upload can stand in for another's files.
    fn files_dir(&self, team: &str) -> PathBuf {
        self.dir.join("files").join(team)
    }

    fn layers_dir(&self) -> PathBuf {
        self.dir.join("layers")
    }

    /// Loads the stored templates into the registry and removes layers nothing uses.
    pub fn load(&self) -> Result<()> {
        for t in self.svc.store().templates()? {
            self.templates().put_custom(t);
        }
        self.adopt_old_files();
        self.sweep();
        self.sweep_files();
        Ok(())
    }

    /// `POST /v3/templates`: registers a build of template `name` (a new template, or a new
    /// build of an existing one).
    pub fn request(
        &self,
        name: &str,
        cpu_count: Option<u32>,
        memory_mb: Option<u64>,
        caller: Option<crate::store::Caller>,
    ) -> Result<Arc<Build>> {
        let name = name.split(':').next().unwrap_or(name);
        if !spec::valid_name(name) {
            return Err(Invalid::TemplateName(name.to_string()).into());
        }
        if Templates::is_default(name) {
            return Err(Invalid::BuiltinName(name.to_string()).into());
        }
        check_resources(
            cpu_count,
            memory_mb,
            self.svc.ceiling(),
            caller.as_ref().map(|c| &c.team),
        )?;
        // A name is looked up in the caller's own team only: another team's template of the
        // same name is a different template.
        let team = caller
            .as_ref()
            .map_or(DEFAULT_TEAM, |c| &c.team.name)
            .to_string();
        let own = Scope::team(&team);
        let mut builds = lock(&self.builds);
        // Finished builds stay readable for an hour, as do requests never started.
        builds.retain(|_, b| {
            lock(&b.state).status == Status::Building || b.requested.elapsed() < BUILDS_KEPT
        });
        let template_id = self
            .templates()
            .custom(name, &own)
            .filter(|t| t.name == name || t.id == name)
            .map(|t| t.id)
            .or_else(|| {
                builds
                    .values()
                    .find(|b| b.name == name && b.team() == team)
                    .map(|b| b.template_id.clone())
            })
            .unwrap_or_else(crate::sandbox::new_id);
        let build = Arc::new(Build {
            template_id,
            build_id: spec::new_build_id(),
            name: name.to_string(),
            cpu_count,
            memory_mb,
            caller,
            upload_token: crate::sandbox::random_hex(24),
            files_asked: Mutex::new(HashSet::new()),
            requested: Instant::now(),
            state: Mutex::new(BuildState {
                status: Status::Waiting,
                logs: Vec::new(),
                log_bytes: 0,
                truncated: false,
                reason: None,
            }),
        });
        builds.insert(build.build_id.clone(), Arc::clone(&build));
        Ok(build)
    }

    fn build_of(&self, template_id: &str, build_id: &str, scope: &Scope) -> Result<Arc<Build>> {
        lock(&self.builds)
            .get(build_id)
            .filter(|b| b.template_id == template_id && scope.sees(Some(b.team())))
            .cloned()
            .ok_or_else(|| {
                Missing::Build {
                    template_id: template_id.to_string(),
                    build_id: build_id.to_string(),
                }
                .into()
            })
    }

    fn knows_template(&self, template_id: &str, scope: &Scope) -> bool {
        self.templates()
            .custom(template_id, scope)
            .is_some_and(|t| t.id == template_id)
            || lock(&self.builds)
                .values()
                .any(|b| b.template_id == template_id && scope.sees(Some(b.team())))
    }

    /// The template's builds `scope` sees that still wait for their files, newest first.
    fn waiting_builds(&self, template_id: &str, scope: &Scope) -> Vec<Arc<Build>> {
        let mut v: Vec<Arc<Build>> = lock(&self.builds)
            .values()
            .filter(|b| {
                b.template_id == template_id
                    && scope.sees(Some(b.team()))
                    && lock(&b.state).status == Status::Waiting
            })
            .cloned()
            .collect();
        v.sort_by_key(|b| std::cmp::Reverse(b.requested));
        v
    }

    /// `POST /v2/templates/{id}/builds/{build}`: checks the steps and starts the build.
    pub fn start(
        self: &Arc<Self>,
        template_id: &str,
        build_id: &str,
        spec: BuildSpec,
        scope: &Scope,
    ) -> Result<()> {
        let build = self.build_of(template_id, build_id, scope)?;
        let files = self.files_dir(build.team());
        let mut used = Vec::new();
        let steps = spec::parse_steps(spec.steps.as_deref().unwrap_or_default(), |hash| {
            used.push(hash.to_string());
            files.join(hash).is_file()
        })?;
        self.touch_files(build.team(), &used);
        {
            let mut s = lock(&build.state);
            if s.status != Status::Waiting {
                return Err(ServiceError::BuildStarted {
                    build_id: build_id.to_string(),
                });
            }
            s.status = Status::Building;
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            this.run(&build, spec, steps).await;
        });
        Ok(())
    }

    /// `GET /templates/{id}/builds/{build}/status`: the status and the log entries from
    /// `offset` on (at most 100).
    pub fn status(
        &self,
        template_id: &str,
        build_id: &str,
        offset: usize,
        scope: &Scope,
    ) -> Result<serde_json::Value> {
        let build = self.build_of(template_id, build_id, scope)?;
        let s = lock(&build.state);
        let entries: Vec<&LogEntry> = s.logs.iter().skip(offset).take(LOGS_PAGE).collect();
        let mut v = serde_json::json!({
            "templateID": build.template_id,
            "buildID": build.build_id,
            "status": s.status.as_str(),
            "logs": entries.iter().map(|e| format!("[{}] {}", e.timestamp, e.message)).collect::<Vec<_>>(),
            "logEntries": entries,
        });
        if let Some((message, step)) = &s.reason {
            v["reason"] = serde_json::json!({ "message": message, "step": step });
        }
        Ok(v)
    }

    /// `DELETE /templates/{id}`: forgets a user-built template. Its layer goes once no
    /// sandbox and no template built on it uses it.
    pub fn delete(&self, id_or_name: &str, scope: &Scope) -> Result<()> {
        if Templates::is_default(id_or_name) {
            return Err(Invalid::BuiltinDelete(id_or_name.to_string()).into());
        }
        let t = self
            .templates()
            .custom(id_or_name, scope)
            .ok_or_else(|| Missing::Template(id_or_name.to_string()))?;
        self.svc.store().delete_template(&t.id)?;
        self.templates().remove_custom(&t.id);
        tracing::info!(template = %t.id, name = %t.name, "template deleted");
        self.sweep();
        Ok(())
    }

    /// Removes layer directories that no template and no live sandbox uses (forks' among
    /// them), and the directories of builds that never finished.
    pub fn sweep(&self) {
        let mut used: HashSet<PathBuf> = self.svc.layers_in_use();
        used.extend(lock(&self.pending).iter().cloned());
        used.extend(
            self.templates()
                .customs(&Scope::operator())
                .into_iter()
                .flat_map(|t| t.layers),
        );
        let busy: HashSet<String> = lock(&self.builds)
            .values()
            .filter(|b| lock(&b.state).status == Status::Building)
            .map(|b| b.build_id.clone())
            .collect();
        let Ok(templates) = std::fs::read_dir(self.layers_dir()) else {
            return;
        };
        for t in templates.flatten() {
            let Ok(builds) = std::fs::read_dir(t.path()) else {
                continue;
            };
            let mut left = 0;
            for b in builds.flatten() {
                let path = b.path();
                let name = b.file_name().to_string_lossy().into_owned();
                if used.contains(&path) || busy.contains(&name) {
                    left += 1;
                    continue;
                }
                tracing::info!(layer = %path.display(), "removing an unused template layer");
                if let Err(e) = std::fs::remove_dir_all(&path) {
                    tracing::warn!(layer = %path.display(), error = %e, "cannot remove layer");
                    left += 1;
                }
            }
            if left == 0 {
                let _ = std::fs::remove_dir(t.path());
            }
        }
    }
}

#[cfg(test)]
mod tests;
