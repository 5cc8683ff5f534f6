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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::agent_client::{AgentClient, Command, Stream};
use crate::service::{CreateRequest, Service, ServiceError};
use crate::templates::{TemplateRecord, Templates};

/// The deepest chain of user-built templates (each adds a layer to the overlay mount, whose
/// options must fit in a page).
pub const MAX_DEPTH: usize = 24;
/// The longest one build may take.
const BUILD_TIMEOUT_SECS: u64 = 3600;
/// How long a start command may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a finished (or never started) build's status stays readable.
const BUILDS_KEPT: Duration = Duration::from_secs(3600);
/// The status call's page size (E2B's).
const LOGS_PAGE: usize = 100;
/// The largest archive of one COPY step.
const MAX_UPLOAD_BYTES: u64 = 4 << 30;
/// Where a build's sandbox receives the archive of a COPY step.
const COPY_ARCHIVE_DIR: &str = "/tmp";

type Result<T> = std::result::Result<T, ServiceError>;

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
    /// Who asked: the build sandbox counts against that key's limit.
    caller: Option<crate::store::Caller>,
    /// Authorises the file uploads of this build (they carry no API key).
    pub upload_token: String,
    /// When it was requested.
    requested: Instant,
    state: Mutex<BuildState>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Build {
    fn log(&self, level: &'static str, step: Option<&str>, message: impl Into<String>) {
        let message = message.into();
        tracing::debug!(build = %self.build_id, step, "{message}");
        lock(&self.state).logs.push(LogEntry {
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

/// What `POST /v2/templates/{id}/builds/{build}` carries.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildSpec {
    /// A Docker image to start from; only E2B's own images are known (see [`image_template`]).
    #[serde(default)]
    pub from_image: Option<String>,
    /// A template to start from.
    #[serde(default)]
    pub from_template: Option<String>,
    /// A private registry image (not supported).
    #[serde(default)]
    pub from_image_registry: Option<serde_json::Value>,
    /// The steps.
    #[serde(default)]
    pub steps: Option<Vec<Step>>,
    /// Started in every sandbox of the template.
    #[serde(default)]
    pub start_cmd: Option<String>,
    /// Says when the start command is ready.
    #[serde(default)]
    pub ready_cmd: Option<String>,
}

/// One build step.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// RUN, COPY, ENV, WORKDIR or USER.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Option<Vec<String>>,
    /// For COPY: the hash of the uploaded archive.
    #[serde(default)]
    pub files_hash: Option<String>,
}

/// The template an E2B image name stands for: hutch builds no Docker images, but E2B's own
/// images have hutch twins.
pub fn image_template(image: &str) -> Option<&'static str> {
    let name = image.strip_prefix("docker.io/").unwrap_or(image);
    let repo = name.split([':', '@']).next().unwrap_or(name);
    match repo {
        "e2bdev/code-interpreter" | "e2bdev/code-interpreter-v1" => Some("code-interpreter-v1"),
        "e2bdev/base" => Some("base"),
        _ => None,
    }
}

/// The template a build starts from: `fromTemplate`, else the hutch twin of `fromImage`,
/// else `base` (the twin of the SDK's default image).
fn parent_name(spec: &BuildSpec) -> std::result::Result<String, String> {
    if spec.from_image_registry.is_some() {
        return Err("hutch does not pull images from registries: build FROM a template (base, code-interpreter-v1 or one built here)".into());
    }
    match (&spec.from_template, &spec.from_image) {
        (Some(t), _) => Ok(t.clone()),
        (None, Some(image)) => image_template(image).map(str::to_string).ok_or_else(|| {
            format!(
                "hutch does not pull Docker images ('{image}'): build FROM a template (base, code-interpreter-v1 or one built here), or from e2bdev/base or e2bdev/code-interpreter"
            )
        }),
        (None, None) => Ok("base".to_string()),
    }
}

/// A template name as E2B accepts it: lowercase letters, digits, `-`, `_` and `.`.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric()
}

fn valid_hash(hash: &str) -> bool {
    !hash.is_empty() && hash.len() <= 128 && hash.bytes().all(|b| b.is_ascii_hexdigit())
}

fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut b = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

fn new_build_id() -> String {
    let h = random_hex(16);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Quotes `s` for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Every template build of this server, and the files uploaded for them.
pub struct Builds {
    svc: Arc<Service>,
    builds: Mutex<HashMap<String, Arc<Build>>>,
    dir: PathBuf,
}

impl Builds {
    /// The builds of `svc`, keeping files and layers under `<data>/templates`.
    pub fn new(svc: Arc<Service>) -> Arc<Self> {
        let dir = svc.state_dir().join("templates");
        Arc::new(Builds {
            svc,
            builds: Mutex::new(HashMap::new()),
            dir,
        })
    }

    fn templates(&self) -> &Arc<Templates> {
        self.svc.templates()
    }

    fn files_dir(&self) -> PathBuf {
        self.dir.join("files")
    }

    fn layers_dir(&self) -> PathBuf {
        self.dir.join("layers")
    }

    /// Loads the stored templates into the registry and removes layers nothing uses.
    pub fn load(&self) -> Result<()> {
        for t in self.svc.store().templates()? {
            self.templates().put_custom(t);
        }
        self.sweep();
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
        if !valid_name(name) {
            return Err(ServiceError::BadRequest(format!(
                "invalid template name {name:?}: use lowercase letters, digits, '-', '_' and '.'"
            )));
        }
        if Templates::is_default(name) {
            return Err(ServiceError::BadRequest(format!(
                "'{name}' is a built-in template; choose another name"
            )));
        }
        if let Some(c) = cpu_count {
            if !(1..=64).contains(&c) {
                return Err(ServiceError::BadRequest(format!(
                    "cpuCount {c} is out of range 1..=64"
                )));
            }
        }
        if let Some(m) = memory_mb {
            if !(128..=262_144).contains(&m) {
                return Err(ServiceError::BadRequest(format!(
                    "memoryMB {m} is out of range 128..=262144"
                )));
            }
        }
        let mut builds = lock(&self.builds);
        // Finished builds stay readable for an hour, as do requests never started.
        builds.retain(|_, b| {
            lock(&b.state).status == Status::Building || b.requested.elapsed() < BUILDS_KEPT
        });
        let template_id = self
            .templates()
            .custom(name)
            .map(|t| t.id)
            .or_else(|| {
                builds
                    .values()
                    .find(|b| b.name == name)
                    .map(|b| b.template_id.clone())
            })
            .unwrap_or_else(crate::sandbox::new_id);
        let build = Arc::new(Build {
            template_id,
            build_id: new_build_id(),
            name: name.to_string(),
            cpu_count,
            memory_mb,
            caller,
            upload_token: random_hex(24),
            requested: Instant::now(),
            state: Mutex::new(BuildState {
                status: Status::Waiting,
                logs: Vec::new(),
                reason: None,
            }),
        });
        builds.insert(build.build_id.clone(), Arc::clone(&build));
        Ok(build)
    }

    fn build_of(&self, template_id: &str, build_id: &str) -> Result<Arc<Build>> {
        lock(&self.builds)
            .get(build_id)
            .filter(|b| b.template_id == template_id)
            .cloned()
            .ok_or_else(|| {
                ServiceError::NotFound(format!(
                    "build '{build_id}' of template '{template_id}' not found"
                ))
            })
    }

    fn knows_template(&self, template_id: &str) -> bool {
        self.templates().custom(template_id).is_some()
            || lock(&self.builds)
                .values()
                .any(|b| b.template_id == template_id)
    }

    /// The upload tokens of the template's builds still waiting for their files.
    fn waiting_tokens(&self, template_id: &str) -> Vec<String> {
        lock(&self.builds)
            .values()
            .filter(|b| b.template_id == template_id && lock(&b.state).status == Status::Waiting)
            .map(|b| b.upload_token.clone())
            .collect()
    }

    /// `GET /templates/{id}/files/{hash}`: whether the archive is here already, and the
    /// token its upload URL needs.
    pub fn file_status(&self, template_id: &str, hash: &str) -> Result<(bool, String)> {
        if !valid_hash(hash) {
            return Err(ServiceError::BadRequest(format!(
                "invalid files hash {hash:?}"
            )));
        }
        let Some(token) = self.waiting_tokens(template_id).into_iter().next() else {
            return Err(ServiceError::NotFound(
                if self.knows_template(template_id) {
                    format!("template '{template_id}' has no build waiting for files")
                } else {
                    format!("template '{template_id}' not found")
                },
            ));
        };
        Ok((self.files_dir().join(hash).is_file(), token))
    }

    /// The upload of one archive (`PUT` to the URL [`Builds::file_status`] gave), streamed to
    /// disk; checks the token.
    pub async fn upload(
        &self,
        template_id: &str,
        hash: &str,
        token: &str,
        body: axum::body::Body,
    ) -> Result<()> {
        if !valid_hash(hash) {
            return Err(ServiceError::BadRequest(format!(
                "invalid files hash {hash:?}"
            )));
        }
        let allowed = self
            .waiting_tokens(template_id)
            .iter()
            .any(|t| hutch_contracts::auth::constant_time_eq(t.as_bytes(), token.as_bytes()));
        if !allowed {
            return Err(ServiceError::Unauthorized(
                "invalid or expired upload token".into(),
            ));
        }
        let dir = self.files_dir();
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| ServiceError::Internal(format!("mkdir {}: {e}", dir.display())))?;
        let tmp = dir.join(format!(".{hash}.{}", random_hex(6)));
        let res = write_body(&tmp, body).await;
        match res {
            Ok(()) => tokio::fs::rename(&tmp, dir.join(hash))
                .await
                .map_err(|e| ServiceError::Internal(format!("storing the upload: {e}"))),
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(e)
            }
        }
    }

    /// `POST /v2/templates/{id}/builds/{build}`: checks the steps and starts the build.
    pub fn start(
        self: &Arc<Self>,
        template_id: &str,
        build_id: &str,
        spec: BuildSpec,
    ) -> Result<()> {
        let build = self.build_of(template_id, build_id)?;
        let steps = spec.steps.as_deref().unwrap_or_default();
        for (i, step) in steps.iter().enumerate() {
            let args = step.args.as_deref().unwrap_or_default();
            let n = i + 1;
            let ok = match step.kind.as_str() {
                "RUN" => !args.is_empty() && !args[0].trim().is_empty(),
                "ENV" => args.len() % 2 == 0 && args.chunks(2).all(|kv| valid_env_name(&kv[0])),
                "WORKDIR" | "USER" => args.len() == 1 && !args[0].is_empty(),
                "COPY" => {
                    if args.len() < 2 || args[0].is_empty() || args[1].is_empty() {
                        false
                    } else {
                        let hash = step.files_hash.as_deref().unwrap_or("");
                        if !valid_hash(hash) || !self.files_dir().join(hash).is_file() {
                            return Err(ServiceError::BadRequest(format!(
                                "step {n} (COPY {}): its files (hash {hash:?}) were not uploaded",
                                args[0]
                            )));
                        }
                        true
                    }
                }
                other => {
                    return Err(ServiceError::BadRequest(format!(
                        "step {n}: unknown step type {other:?} (RUN, COPY, ENV, WORKDIR and USER are known)"
                    )))
                }
            };
            if !ok {
                return Err(ServiceError::BadRequest(format!(
                    "step {n} ({}): malformed arguments {args:?}",
                    step.kind
                )));
            }
        }
        {
            let mut s = lock(&build.state);
            if s.status != Status::Waiting {
                return Err(ServiceError::Conflict(format!(
                    "build '{build_id}' was started already"
                )));
            }
            s.status = Status::Building;
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            this.run(&build, spec).await;
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
    ) -> Result<serde_json::Value> {
        let build = self.build_of(template_id, build_id)?;
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
    pub fn delete(&self, id_or_name: &str) -> Result<()> {
        if Templates::is_default(id_or_name) {
            return Err(ServiceError::BadRequest(format!(
                "'{id_or_name}' is a built-in template and cannot be deleted"
            )));
        }
        let t = self
            .templates()
            .custom(id_or_name)
            .ok_or_else(|| ServiceError::NotFound(format!("template '{id_or_name}' not found")))?;
        self.svc.store().delete_template(&t.id)?;
        self.templates().remove_custom(&t.id);
        tracing::info!(template = %t.id, name = %t.name, "template deleted");
        self.sweep();
        Ok(())
    }

    /// Removes layer directories that no template and no live sandbox uses, and the
    /// directories of builds that never finished.
    pub fn sweep(&self) {
        let mut used: HashSet<PathBuf> = self.svc.layers_in_use();
        used.extend(
            self.templates()
                .customs()
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

    /// Runs a started build to its end; the outcome is in its status.
    async fn run(self: &Arc<Self>, build: &Arc<Build>, spec: BuildSpec) {
        let started = Instant::now();
        build.log(
            "info",
            None,
            format!(
                "Building template '{}' ({}), build {}",
                build.name, build.template_id, build.build_id
            ),
        );
        let mut sandbox = None;
        let res = self.run_steps(build, spec, &mut sandbox).await;
        if let Some(id) = sandbox {
            if let Err(e) = self.svc.kill(&id).await {
                tracing::warn!(sandbox = %id, error = %e, "cannot remove the build sandbox");
            }
        }
        match res {
            Ok(()) => {
                build.log(
                    "info",
                    Some("finalize"),
                    format!(
                        "Template '{}' is ready ({:.1} s)",
                        build.name,
                        started.elapsed().as_secs_f64()
                    ),
                );
                lock(&build.state).status = Status::Ready;
                tracing::info!(template = %build.template_id, name = %build.name, build = %build.build_id, "template built");
            }
            Err((step, message)) => {
                tracing::warn!(template = %build.template_id, build = %build.build_id, step, error = %message, "template build failed");
                build.fail(&step, message);
            }
        }
        self.sweep();
    }

    async fn run_steps(
        self: &Arc<Self>,
        build: &Arc<Build>,
        spec: BuildSpec,
        sandbox: &mut Option<String>,
    ) -> std::result::Result<(), (String, String)> {
        let base = |m: String| ("base".to_string(), m);
        let finalize = |m: String| ("finalize".to_string(), m);
        let parent_name = parent_name(&spec).map_err(base)?;
        let parent = self
            .templates()
            .resolve(&parent_name)
            .map_err(|e| base(e.to_string()))?;
        if parent.template_id == build.template_id {
            return Err(base("a template cannot be built from itself".into()));
        }
        if parent.layers.len() > MAX_DEPTH {
            return Err(base(format!(
                "'{parent_name}' is already {} layers deep; hutch stacks at most {MAX_DEPTH}",
                parent.layers.len()
            )));
        }
        let pc = parent.custom.clone();
        build.log(
            "info",
            Some("base"),
            format!("FROM {parent_name} ({})", parent.template_id),
        );
        let rec = self
            .svc
            .create(CreateRequest {
                template_id: parent.template_id.clone(),
                timeout: Some(BUILD_TIMEOUT_SECS),
                metadata: BTreeMap::from([("hutch.build".to_string(), build.build_id.clone())]),
                build: Some(build.build_id.clone()),
                caller: build.caller.clone(),
                ..CreateRequest::default()
            })
            .await
            .map_err(|e| base(format!("cannot start the build sandbox: {e}")))?;
        *sandbox = Some(rec.id.clone());
        let ip = self
            .svc
            .net(&rec.id)
            .map(|n| n.sandbox_ip)
            .ok_or_else(|| base("the build sandbox vanished".into()))?;
        let agent = AgentClient::new(self.svc.http(), ip, rec.envd_access_token.as_deref());

        // Steps run as the parent's default user in its default workdir unless USER and
        // WORKDIR say otherwise, as in E2B.
        let mut stepper = Stepper {
            build,
            agent: &agent,
            files_dir: self.files_dir(),
            user: pc
                .as_ref()
                .and_then(|t| t.user.clone())
                .unwrap_or_else(|| "user".into()),
            workdir: pc
                .as_ref()
                .and_then(|t| t.workdir.clone())
                .unwrap_or_else(|| "/home/user".into()),
            env: BTreeMap::new(),
        };
        let steps = spec.steps.clone().unwrap_or_default();
        for (i, step) in steps.iter().enumerate() {
            let name = (i + 1).to_string();
            build.log(
                "info",
                Some(&name),
                format!(
                    "[{name}/{}] {} {}",
                    steps.len(),
                    step.kind,
                    step.args.as_deref().unwrap_or_default().join(" ")
                ),
            );
            stepper.run(&name, step).await.map_err(|m| (name, m))?;
        }
        let Stepper {
            user, workdir, env, ..
        } = stepper;

        let mut all_env = pc.as_ref().map(|t| t.env.clone()).unwrap_or_default();
        all_env.extend(env);
        let now = Utc::now();
        let previous = self.templates().custom(&build.template_id);
        let layer = self
            .layers_dir()
            .join(&build.template_id)
            .join(&build.build_id);
        let mut layers = vec![layer.clone()];
        layers.extend(parent.layers.iter().cloned());
        let record = TemplateRecord {
            id: build.template_id.clone(),
            name: build.name.clone(),
            build_id: build.build_id.clone(),
            parent: parent.template_id.clone(),
            layers,
            env: all_env,
            user: Some(user),
            workdir: Some(workdir),
            start_cmd: spec.start_cmd.clone().filter(|c| !c.trim().is_empty()),
            ready_cmd: spec.ready_cmd.clone().filter(|c| !c.trim().is_empty()),
            cpu_count: build.cpu_count.or(pc.as_ref().and_then(|t| t.cpu_count)),
            memory_mb: build.memory_mb.or(pc.as_ref().and_then(|t| t.memory_mb)),
            created_at: previous.as_ref().map(|p| p.created_at).unwrap_or(now),
            updated_at: now,
            build_count: previous.as_ref().map(|p| p.build_count).unwrap_or(0) + 1,
        };
        if let Some(start) = record.start_cmd.as_deref() {
            build.log("info", Some("finalize"), format!("Starting: {start}"));
        }
        start_and_wait(&agent, &record, true, |line| {
            build.log("info", Some("finalize"), line)
        })
        .await
        .map_err(finalize)?;
        build.log("info", Some("finalize"), "Saving the template's layer");
        self.svc
            .commit_layer(&rec.id, layer.clone())
            .await
            .map_err(|e| finalize(format!("saving the layer failed: {e}")))?;
        if let Err(e) = self.svc.store().put_template(&record) {
            let _ = std::fs::remove_dir_all(&layer);
            return Err(finalize(format!("registering the template failed: {e}")));
        }
        self.templates().put_custom(record);
        Ok(())
    }
}

/// Runs a build's steps in its sandbox, tracking the USER, WORKDIR and ENV they set.
struct Stepper<'a> {
    build: &'a Build,
    agent: &'a AgentClient<'a>,
    files_dir: PathBuf,
    user: String,
    workdir: String,
    env: BTreeMap<String, String>,
}

impl Stepper<'_> {
    /// Runs step `name`; the error is the failure's message.
    async fn run(&mut self, name: &str, step: &Step) -> std::result::Result<(), String> {
        let args = step.args.clone().unwrap_or_default();
        match step.kind.as_str() {
            "ENV" => {
                for kv in args.chunks(2) {
                    self.env.insert(kv[0].clone(), kv[1].clone());
                }
            }
            "USER" => {
                let u = args[0].clone();
                let script = format!("id -u -- {}", shell_quote(&u));
                if self.exec(name, &script, "root", "/", &self.env).await? != 0 {
                    return Err(format!("USER {u}: no such user in the template"));
                }
                self.user = u;
            }
            "WORKDIR" => {
                let dir = absolute(&self.workdir, &args[0]);
                let script = format!(
                    "[ -d {d} ] || {{ mkdir -p -- {d} && chown -- {u}: {d}; }}",
                    d = shell_quote(&dir),
                    u = shell_quote(&self.user)
                );
                let code = self.exec(name, &script, "root", "/", &self.env).await?;
                if code != 0 {
                    return Err(format!(
                        "WORKDIR {dir}: cannot create it (exit code {code})"
                    ));
                }
                self.workdir = dir;
            }
            "RUN" => {
                let run_as = args.get(1).filter(|u| !u.is_empty()).unwrap_or(&self.user);
                let code = self
                    .exec(name, &args[0], run_as, &self.workdir, &self.env)
                    .await?;
                if code != 0 {
                    return Err(format!(
                        "RUN {}: the command exited with code {code}",
                        args[0]
                    ));
                }
            }
            "COPY" => {
                let hash = step.files_hash.clone().unwrap_or_default();
                let archive = format!("{COPY_ARCHIVE_DIR}/.hutch-copy-{hash}");
                self.agent
                    .upload(&self.files_dir.join(&hash), &archive, "root")
                    .await?;
                let owner = args.get(2).filter(|o| !o.is_empty()).unwrap_or(&self.user);
                let mut vars = self.env.clone();
                vars.extend([
                    ("HUTCH_TAR".to_string(), archive),
                    ("HUTCH_SRC".to_string(), args[0].clone()),
                    ("HUTCH_DEST".to_string(), absolute(&self.workdir, &args[1])),
                    ("HUTCH_OWNER".to_string(), owner.clone()),
                    (
                        "HUTCH_MODE".to_string(),
                        args.get(3).cloned().unwrap_or_default(),
                    ),
                ]);
                let code = self.exec(name, COPY_SCRIPT, "root", "/", &vars).await?;
                if code != 0 {
                    return Err(format!(
                        "COPY {} {}: failed (exit code {code})",
                        args[0], args[1]
                    ));
                }
            }
            other => return Err(format!("unknown step type {other}")),
        }
        Ok(())
    }

    /// Runs one command of step `name` in the sandbox, logging its output.
    async fn exec(
        &self,
        name: &str,
        script: &str,
        user: &str,
        cwd: &str,
        envs: &BTreeMap<String, String>,
    ) -> std::result::Result<i32, String> {
        self.agent
            .run(
                &Command {
                    script,
                    user,
                    cwd: Some(cwd),
                    envs,
                },
                |stream, line| {
                    let level = if stream == Stream::Stderr {
                        "warn"
                    } else {
                        "info"
                    };
                    self.build.log(level, Some(name), line);
                },
            )
            .await
    }
}

/// Starts a template's start command in the background in a sandbox, then runs its ready
/// command until it succeeds (at most two minutes). A ready command that only waits (`sleep
/// N`, what E2B's `wait_for_timeout` gives) is honoured at build time only, since a new
/// sandbox need not wait for a fixed time.
pub async fn start_and_wait(
    agent: &AgentClient<'_>,
    t: &TemplateRecord,
    at_build: bool,
    mut on_log: impl FnMut(String),
) -> std::result::Result<(), String> {
    let Some(start) = t.start_cmd.as_deref() else {
        return Ok(());
    };
    let user = t.user.as_deref().unwrap_or("user");
    // The sandbox's agent gives every process the template's ENV already.
    let no_env = BTreeMap::new();
    let cmd = |script| Command {
        script,
        user,
        cwd: t.workdir.as_deref(),
        envs: &no_env,
    };
    let launch = format!(
        "setsid nohup /bin/bash -l -c {} >/tmp/.hutch-start.log 2>&1 </dev/null &",
        shell_quote(start)
    );
    let code = agent
        .run(&cmd(&launch), |_, l| on_log(l.to_string()))
        .await?;
    if code != 0 {
        return Err(format!(
            "the start command could not be launched (exit code {code})"
        ));
    }
    let Some(ready) = t.ready_cmd.as_deref() else {
        return Ok(());
    };
    if !at_build && is_fixed_wait(ready) {
        return Ok(());
    }
    let deadline = Instant::now() + READY_TIMEOUT;
    while agent.run(&cmd(ready), |_, _| {}).await? != 0 {
        if Instant::now() > deadline {
            return Err(format!(
                "the ready command `{ready}` did not succeed within {} s of the start command `{start}`",
                READY_TIMEOUT.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// True for a ready command that only waits a fixed time (`sleep N`).
fn is_fixed_wait(cmd: &str) -> bool {
    let mut words = cmd.split_whitespace();
    words.next() == Some("sleep")
        && words.next().is_some_and(|n| n.parse::<f64>().is_ok())
        && words.next().is_none()
}

/// True when `name` can be an environment variable's name.
fn valid_env_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('=') && !name.contains('\0')
}

/// `path` taken from `cwd` when relative.
fn absolute(cwd: &str, path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else {
        let p = Path::new(cwd).join(path);
        p.to_string_lossy().into_owned()
    }
}

async fn write_body(path: &Path, body: axum::body::Body) -> Result<()> {
    use http_body_util::BodyExt;
    use tokio::io::AsyncWriteExt;
    let mut f = tokio::fs::File::create(path)
        .await
        .map_err(|e| ServiceError::Internal(format!("create {}: {e}", path.display())))?;
    let mut body = body;
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ServiceError::BadRequest(format!("upload broke off: {e}")))?;
        if let Ok(data) = frame.into_data() {
            total += data.len() as u64;
            if total > MAX_UPLOAD_BYTES {
                return Err(ServiceError::BadRequest(format!(
                    "the upload exceeds {} GiB",
                    MAX_UPLOAD_BYTES >> 30
                )));
            }
            f.write_all(&data)
                .await
                .map_err(|e| ServiceError::Internal(format!("write {}: {e}", path.display())))?;
        }
    }
    f.flush()
        .await
        .map_err(|e| ServiceError::Internal(format!("write {}: {e}", path.display())))
}

/// Unpacks a COPY step's archive and puts what `HUTCH_SRC` matches at `HUTCH_DEST`, as
/// Docker's COPY does: a directory's contents go into the destination; a single file goes
/// to the destination path unless that ends in `/` or is a directory. Runs as root inside
/// the build sandbox, so a symlink made by an earlier step cannot lead outside it.
const COPY_SCRIPT: &str = r#"set -euo pipefail
tmp=$(mktemp -d /tmp/.hutch-copy.XXXXXX)
trap 'rm -rf -- "$tmp" "$HUTCH_TAR"' EXIT
tar -xf "$HUTCH_TAR" -C "$tmp" --no-same-owner
cd "$tmp"
shopt -s nullglob dotglob
src=${HUTCH_SRC%/}
src=${src#./}
[ -n "$src" ] || src=.
IFS=
matches=( $src )
if [ ${#matches[@]} -eq 0 ] || ! [ -e "${matches[0]}" -o -L "${matches[0]}" ]; then
    echo "no file matches '$HUTCH_SRC'" >&2
    exit 1
fi
owner=$HUTCH_OWNER
case "$owner" in *:*) ;; *) owner="$owner:" ;; esac
chown -R -h -- "$owner" "${matches[@]}"
if [ -n "$HUTCH_MODE" ]; then chmod -R -- "$HUTCH_MODE" "${matches[@]}"; fi
dest=$HUTCH_DEST
if [ ${#matches[@]} -eq 1 ] && [ ! -d "${matches[0]}" ] && [ "${dest%/}" = "$dest" ] && [ ! -d "$dest" ]; then
    mkdir -p -- "$(dirname -- "$dest")"
    cp -a -- "${matches[0]}" "$dest"
else
    mkdir -p -- "$dest"
    for m in "${matches[@]}"; do
        if [ -d "$m" ]; then cp -a -- "$m/." "$dest/"; else cp -a -- "$m" "$dest/"; fi
    done
fi
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_hashes() {
        assert!(valid_name("my-custom-template"));
        assert!(valid_name("a1.b_c"));
        assert!(!valid_name("My"));
        assert!(!valid_name("-x"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name(""));
        assert!(valid_hash("abcdef0123"));
        assert!(!valid_hash("../x"));
        assert!(!valid_hash(""));
    }

    #[test]
    fn e2b_images_map_to_templates() {
        assert_eq!(
            image_template("e2bdev/code-interpreter:latest"),
            Some("code-interpreter-v1")
        );
        assert_eq!(image_template("docker.io/e2bdev/base"), Some("base"));
        assert_eq!(image_template("python:3.12"), None);
    }

    #[test]
    fn paths_and_quotes() {
        assert_eq!(absolute("/home/user", "app"), "/home/user/app");
        assert_eq!(absolute("/home/user", "/app"), "/app");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert!(is_fixed_wait("sleep 20"));
        assert!(!is_fixed_wait("sleep 20 && curl x"));
        let id = new_build_id();
        assert_eq!(id.len(), 36);
        assert_eq!(id.matches('-').count(), 4);
    }
}
