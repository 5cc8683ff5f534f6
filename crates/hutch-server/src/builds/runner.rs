//! Drives one build: a sandbox from the parent template, the steps in it, the start and
//! ready commands, then the sandbox's changes saved as the new template's layer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use hutch_contracts::template::BuildStep;

use super::spec::{parent_name, BuildSpec};
use super::steps::Stepper;
use super::{lock, Build, Builds, Status, MAX_DEPTH};
use crate::agent_client::AgentClient;
use crate::service::CreateRequest;
use crate::startup::start_and_wait;
use crate::templates::TemplateRecord;
use crate::tenancy::Scope;

/// The longest one build may take.
const BUILD_TIMEOUT_SECS: u64 = 3600;

/// A failed build: the step it failed in (`base`, `1`, ..., `finalize`) and why.
type Failure = (String, String);

impl Builds {
    /// Runs a started build to its end; the outcome is in its status.
    pub(super) async fn run(
        self: &Arc<Self>,
        build: &Arc<Build>,
        spec: BuildSpec,
        steps: Vec<BuildStep>,
    ) {
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
        let res = self.run_steps(build, &spec, &steps, &mut sandbox).await;
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
        self.sweep_files();
    }

    async fn run_steps(
        self: &Arc<Self>,
        build: &Arc<Build>,
        spec: &BuildSpec,
        steps: &[BuildStep],
        sandbox: &mut Option<String>,
    ) -> Result<(), Failure> {
        let base = |m: String| ("base".to_string(), m);
        let finalize = |m: String| ("finalize".to_string(), m);
        let parent_name = parent_name(spec).map_err(base)?;
        let parent = self
            .templates()
            .resolve(&parent_name, &build.scope())
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
            files_dir: self.files_dir(build.team()),
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
        for (i, step) in steps.iter().enumerate() {
            let name = (i + 1).to_string();
            build.log(
                "info",
                Some(&name),
                format!("[{name}/{}] {step}", steps.len()),
            );
            stepper.run(&name, step).await.map_err(|m| (name, m))?;
        }
        let Stepper {
            user, workdir, env, ..
        } = stepper;

        let mut all_env = pc.as_ref().map(|t| t.env.clone()).unwrap_or_default();
        all_env.extend(env);
        let now = Utc::now();
        let previous = self
            .templates()
            .custom(&build.template_id, &Scope::operator())
            .filter(|t| t.id == build.template_id);
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
            team: Some(build.team().to_string()),
            source_sandbox: None,
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
