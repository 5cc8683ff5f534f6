//! The templates this server can start sandboxes from, and the build of the defaults.

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use hutch_template::{BuiltTemplate, Progress};

use crate::tenancy::{Scope, DEFAULT_TEAM};
use serde::{Deserialize, Serialize};

/// What `/health` reports about the template build.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum BuildStatus {
    /// The default templates are being built.
    Building {
        /// Latest progress report.
        progress: Option<Progress>,
    },
    /// Every default template is ready.
    Ready,
    /// The build failed; sandboxes cannot be created.
    Failed {
        /// Why.
        error: String,
    },
}

/// A template built by users (`POST /v3/templates` + a build): its own layer on top of its
/// parent's layers, plus the defaults its build steps set.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateRecord {
    /// Its id (`templateID`).
    pub id: String,
    /// Its name (E2B's alias): what `Sandbox(template=...)` is given.
    pub name: String,
    /// The build that made the current layer.
    pub build_id: String,
    /// The template it was built from.
    pub parent: String,
    /// Read-only layers, its own first and the base rootfs last.
    pub layers: Vec<PathBuf>,
    /// Environment variables every process in its sandboxes gets (ENV steps).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The default user of its sandboxes (the last USER step).
    #[serde(default)]
    pub user: Option<String>,
    /// The default working directory of its sandboxes (the last WORKDIR step).
    #[serde(default)]
    pub workdir: Option<String>,
    /// Started in every new sandbox; the sandbox is ready once `ready_cmd` succeeds.
    #[serde(default)]
    pub start_cmd: Option<String>,
    /// Checks that `start_cmd` is ready (exit code 0 = ready).
    #[serde(default)]
    pub ready_cmd: Option<String>,
    /// CPUs of its sandboxes (`None` = the server's default).
    #[serde(default)]
    pub cpu_count: Option<u32>,
    /// Memory of its sandboxes in MiB (`None` = the server's default).
    #[serde(default)]
    pub memory_mb: Option<u64>,
    /// When it was first built.
    pub created_at: DateTime<Utc>,
    /// When it was last built.
    pub updated_at: DateTime<Utc>,
    /// How many builds it had.
    pub build_count: u32,
    /// The team that owns it (None: the default team, and records from before teams).
    #[serde(default)]
    pub team: Option<String>,
    /// Set for a snapshot: the sandbox whose filesystem it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_sandbox: Option<String>,
}

impl TemplateRecord {
    /// Its full name as E2B writes it: `<team>/<name>:default`.
    pub fn full_name(&self) -> String {
        format!(
            "{}/{}:default",
            self.team.as_deref().unwrap_or(DEFAULT_TEAM),
            self.name
        )
    }
}

/// A template that can be started.
#[derive(Debug, Clone)]
pub struct ResolvedTemplate {
    /// The id returned to clients.
    pub template_id: String,
    /// Its alias.
    pub alias: Option<String>,
    /// Read-only layers, topmost first.
    pub layers: Vec<PathBuf>,
    /// The user-built template's settings; `None` for the default templates.
    pub custom: Option<TemplateRecord>,
}

#[derive(Debug)]
struct Inner {
    defaults: HashMap<String, PathBuf>,
    custom: HashMap<String, TemplateRecord>,
    status: BuildStatus,
}

impl Inner {
    /// The user-built template `scope` sees with this id, else with this name (several
    /// teams may use one name: the caller's own team's wins, then the oldest).
    fn find_custom(&self, id_or_name: &str, scope: &Scope) -> Option<&TemplateRecord> {
        // `<team>/<name>`: a name in that team only.
        if let Some((team, name)) = id_or_name.split_once('/') {
            return self.custom.values().find(|t| {
                t.name == name
                    && t.team.as_deref().unwrap_or(DEFAULT_TEAM) == team
                    && scope.sees(t.team.as_deref())
            });
        }
        if let Some(t) = self
            .custom
            .get(id_or_name)
            .filter(|t| scope.sees(t.team.as_deref()))
        {
            return Some(t);
        }
        self.custom
            .values()
            .filter(|t| t.name == id_or_name && scope.sees(t.team.as_deref()))
            .min_by_key(|t| (!scope.owns(t.team.as_deref()), t.created_at, t.id.clone()))
    }
}

/// Template registry: the default templates (name → built rootfs) and the ones users built,
/// plus the status of the defaults' build.
#[derive(Debug)]
pub struct Templates {
    inner: Mutex<Inner>,
}

/// Why a template cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TemplateLookupError {
    /// No template has this name.
    #[error("template '{0}' not found")]
    NotFound(String),
    /// The default templates are still building.
    #[error("the default templates are still being built ({0}); try again shortly")]
    Building(String),
    /// The build failed.
    #[error("the default templates failed to build: {0}")]
    Failed(String),
    /// A layer of a user-built template is missing on disk.
    #[error("template '{0}' cannot be started: its layer {1} is missing; build it again")]
    Broken(String, String),
}

impl Default for Templates {
    fn default() -> Self {
        Templates {
            inner: Mutex::new(Inner {
                defaults: HashMap::new(),
                custom: HashMap::new(),
                status: BuildStatus::Building { progress: None },
            }),
        }
    }
}

impl Templates {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True when default template `name` can be started.
    pub fn ready(&self, name: &str) -> bool {
        self.lock().defaults.contains_key(name)
    }

    /// Names of the default templates that can be started, sorted (the user-built ones are
    /// their teams' business).
    pub fn ready_names(&self) -> Vec<String> {
        let g = self.lock();
        let mut v: Vec<String> = g.defaults.keys().cloned().collect();
        v.sort();
        v
    }

    /// The defaults' build status.
    pub fn status(&self) -> BuildStatus {
        self.lock().status.clone()
    }

    /// True when `name` is one of the default templates (built or not).
    pub fn is_default(name: &str) -> bool {
        hutch_template::default_recipes()
            .iter()
            .any(|r| r.name == name)
    }

    /// The user-built template `scope` sees with this id or name.
    pub fn custom(&self, id_or_name: &str, scope: &Scope) -> Option<TemplateRecord> {
        let base = id_or_name.split(':').next().unwrap_or(id_or_name);
        self.lock().find_custom(base, scope).cloned()
    }

    /// Every user-built template `scope` sees, oldest first.
    pub fn customs(&self, scope: &Scope) -> Vec<TemplateRecord> {
        let mut v: Vec<TemplateRecord> = self
            .lock()
            .custom
            .values()
            .filter(|t| scope.sees(t.team.as_deref()))
            .cloned()
            .collect();
        v.sort_by_key(|t| t.created_at);
        v
    }

    /// Registers (or replaces) a user-built template.
    pub fn put_custom(&self, t: TemplateRecord) {
        self.lock().custom.insert(t.id.clone(), t);
    }

    /// Forgets a user-built template; returns it.
    pub fn remove_custom(&self, id: &str) -> Option<TemplateRecord> {
        self.lock().custom.remove(id)
    }

    /// Resolves a template name as E2B clients send it (`base`, `code-interpreter-v1`,
    /// optionally with a `:tag`): a default template, or a user-built one `scope` sees.
    pub fn resolve(
        &self,
        name: &str,
        scope: &Scope,
    ) -> Result<ResolvedTemplate, TemplateLookupError> {
        let base = name.split(':').next().unwrap_or(name);
        let g = self.lock();
        if let Some(rootfs) = g.defaults.get(base) {
            return Ok(ResolvedTemplate {
                template_id: base.to_string(),
                alias: Some(base.to_string()),
                layers: vec![rootfs.clone()],
                custom: None,
            });
        }
        if let Some(t) = g.find_custom(base, scope) {
            if let Some(missing) = t.layers.iter().find(|l| !l.is_dir()) {
                return Err(TemplateLookupError::Broken(
                    t.name.clone(),
                    missing.display().to_string(),
                ));
            }
            return Ok(ResolvedTemplate {
                template_id: t.id.clone(),
                alias: Some(t.name.clone()),
                layers: t.layers.clone(),
                custom: Some(t.clone()),
            });
        }
        match (&g.status, Self::is_default(base)) {
            (BuildStatus::Building { progress }, true) => Err(TemplateLookupError::Building(
                progress
                    .as_ref()
                    .map(|p| format!("{} {}/{}", p.phase, p.done, p.total))
                    .unwrap_or_else(|| "starting".into()),
            )),
            (BuildStatus::Failed { error }, true) => {
                Err(TemplateLookupError::Failed(error.clone()))
            }
            _ => Err(TemplateLookupError::NotFound(name.to_string())),
        }
    }

    fn set_progress(&self, p: Progress) {
        self.lock().status = BuildStatus::Building { progress: Some(p) };
    }

    fn add(&self, t: BuiltTemplate) {
        self.lock().defaults.insert(t.name, t.rootfs);
    }

    /// Builds (or finds in the cache) every default template, drawing a progress bar on a
    /// terminal and logging progress otherwise. Blocking.
    pub fn build_defaults(self: &Arc<Self>, cache_dir: &Path, jail: &hutch_template::JailHelper) {
        let tty = std::io::stderr().is_terminal();
        let mut last_logged = (String::new(), u64::MAX);
        for recipe in hutch_template::default_recipes() {
            let this = Arc::clone(self);
            let mut bar: Option<indicatif::ProgressBar> = None;
            let name = recipe.name.clone();
            let res = hutch_template::ensure_built(cache_dir, &recipe, jail, &mut |p: Progress| {
                if tty {
                    let b = bar.get_or_insert_with(|| {
                        let b = indicatif::ProgressBar::new(p.total.max(1));
                        b.set_style(
                            indicatif::ProgressStyle::with_template(
                                "{prefix:>22} [{bar:40.cyan/blue}] {pos}/{len} {msg}",
                            )
                            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                            .progress_chars("=> "),
                        );
                        b.set_prefix(format!("template {}", p.template));
                        b
                    });
                    b.set_length(p.total.max(1));
                    b.set_position(p.done.min(p.total));
                    b.set_message(format!("{}: {}", p.phase, truncate(&p.message, 40)));
                } else {
                    let pct = (p.done * 100).checked_div(p.total).unwrap_or(0);
                    if last_logged.0 != p.phase || last_logged.1 / 10 != pct / 10 {
                        tracing::info!(template = %p.template, phase = %p.phase, done = p.done, total = p.total, "building template ({pct}%)");
                        last_logged = (p.phase.clone(), pct);
                    }
                }
                this.set_progress(p);
            });
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            match res {
                Ok(t) => {
                    tracing::info!(template = %name, rootfs = %t.rootfs.display(), "template ready");
                    self.add(t);
                }
                Err(e) => {
                    tracing::error!(template = %name, error = %e, "template build failed");
                    self.lock().status = BuildStatus::Failed {
                        error: e.to_string(),
                    };
                    return;
                }
            }
        }
        self.lock().status = BuildStatus::Ready;
    }

    /// Registers a recipe's already-built rootfs (tests, and templates found in the cache).
    pub fn insert(&self, name: &str, rootfs: PathBuf) {
        self.lock().defaults.insert(name.to_string(), rootfs);
    }

    /// Marks the build finished.
    pub fn mark_ready(&self) {
        self.lock().status = BuildStatus::Ready;
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n).collect::<String>() + "…"
    }
}
