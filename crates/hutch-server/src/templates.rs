//! The templates this server can start sandboxes from, and the build of the defaults.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hutch_template::{BuiltTemplate, Progress};
use serde::Serialize;

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

/// A template that can be started.
#[derive(Debug, Clone)]
pub struct ResolvedTemplate {
    /// The id returned to clients.
    pub template_id: String,
    /// Its alias.
    pub alias: Option<String>,
    /// The read-only rootfs.
    pub rootfs: PathBuf,
}

/// Template registry: name → built rootfs, plus the build's status.
#[derive(Debug)]
pub struct Templates {
    inner: Mutex<(HashMap<String, PathBuf>, BuildStatus)>,
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
}

impl Default for Templates {
    fn default() -> Self {
        Templates {
            inner: Mutex::new((HashMap::new(), BuildStatus::Building { progress: None })),
        }
    }
}

impl Templates {
    fn lock(&self) -> std::sync::MutexGuard<'_, (HashMap<String, PathBuf>, BuildStatus)> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True when template `name` can be started.
    pub fn ready(&self, name: &str) -> bool {
        self.lock().0.contains_key(name)
    }

    /// Names of the templates that can be started, sorted.
    pub fn ready_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.lock().0.keys().cloned().collect();
        v.sort();
        v
    }

    /// The build's status.
    pub fn status(&self) -> BuildStatus {
        self.lock().1.clone()
    }

    /// Resolves a template name as E2B clients send it (`base`, `code-interpreter-v1`,
    /// optionally with a `:tag`).
    pub fn resolve(&self, name: &str) -> Result<ResolvedTemplate, TemplateLookupError> {
        let base = name.split(':').next().unwrap_or(name);
        let g = self.lock();
        if let Some(rootfs) = g.0.get(base) {
            return Ok(ResolvedTemplate {
                template_id: base.to_string(),
                alias: Some(base.to_string()),
                rootfs: rootfs.clone(),
            });
        }
        let known = hutch_template::default_recipes()
            .iter()
            .any(|r| r.name == base);
        match (&g.1, known) {
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
        self.lock().1 = BuildStatus::Building { progress: Some(p) };
    }

    fn add(&self, t: BuiltTemplate) {
        self.lock().0.insert(t.name, t.rootfs);
    }

    /// Builds (or finds in the cache) every default template, drawing a progress bar on a
    /// terminal and logging progress otherwise. Blocking.
    pub fn build_defaults(self: &Arc<Self>, cache_dir: &Path) {
        let tty = std::io::stderr().is_terminal();
        let mut last_logged = (String::new(), u64::MAX);
        for recipe in hutch_template::default_recipes() {
            let this = Arc::clone(self);
            let mut bar: Option<indicatif::ProgressBar> = None;
            let name = recipe.name.clone();
            let res = hutch_template::ensure_built(cache_dir, &recipe, &mut |p: Progress| {
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
                    self.lock().1 = BuildStatus::Failed {
                        error: e.to_string(),
                    };
                    return;
                }
            }
        }
        self.lock().1 = BuildStatus::Ready;
    }

    /// Registers a recipe's already-built rootfs (tests, and templates found in the cache).
    pub fn insert(&self, name: &str, rootfs: PathBuf) {
        self.lock().0.insert(name.to_string(), rootfs);
    }

    /// Marks the build finished.
    pub fn mark_ready(&self) {
        self.lock().1 = BuildStatus::Ready;
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n).collect::<String>() + "…"
    }
}
