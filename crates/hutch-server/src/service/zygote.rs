//! The service's side of zygotes ([`crate::zygote`]): which new sandbox gets its kernel
//! from one, starting zygotes on first use, the hand-in itself, and ending them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use hutch_contracts::agent::KernelAdopt;

use super::create::{sandbox_env, Launched, SANDBOX_PATH};
use super::Service;
use crate::templates::ResolvedTemplate;
use crate::zygote::{startup_env, Confinement, Lookup, Zygote};

impl Service {
    /// Turns zygotes on: new sandboxes of templates with an ipykernel get their default
    /// kernel forked from their template's zygote.
    pub fn enable_zygotes(&self, confinement: Confinement) {
        self.zygotes.enable(&confinement);
    }

    /// The zygote a new sandbox of `tpl` with the variables `env_vars` gets its kernel
    /// from, when there is one to use now. Starts one in the background when the template
    /// has none yet.
    pub(super) fn zygote_for(
        &self,
        tpl: &ResolvedTemplate,
        env_vars: &BTreeMap<String, String>,
    ) -> Option<Arc<Zygote>> {
        // A snapshot's sandboxes start their own kernels: a zygote per snapshot would keep
        // a Python process per snapshot ever used.
        if !self.zygotes.enabled()
            || tpl
                .custom
                .as_ref()
                .is_some_and(|t| t.source_sandbox.is_some())
        {
            return None;
        }
        self.end_retired_zygotes();
        // A zygote runs with its template's variables; a sandbox whose own change how
        // Python starts gets a kernel of its own.
        let mut base_env = sandbox_env(tpl);
        if startup_env(env_vars) != startup_env(&base_env) {
            return None;
        }
        base_env.insert("PATH".into(), SANDBOX_PATH.into());
        match self.zygotes.get(&tpl.template_id, &tpl.layers, &base_env) {
            Lookup::Running(z) => Some(z),
            Lookup::None => None,
            Lookup::Start(spec) => {
                let runtime = Arc::clone(&self.runtime);
                let zygotes = Arc::clone(&self.zygotes);
                let template = tpl.template_id.clone();
                tokio::spawn(async move {
                    let started = Instant::now();
                    let spec_ = spec.clone();
                    let rt = Arc::clone(&runtime);
                    let z = tokio::task::spawn_blocking(move || rt.start_zygote(&spec_))
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|r| r.map_err(|e| e.to_string()));
                    if let Some(z) = zygotes.started(&template, &spec, z).await {
                        tracing::info!(
                            template,
                            ms = started.elapsed().as_millis() as u64,
                            "zygote started"
                        );
                        // Whenever it goes, its processes are the server's to reap at once:
                        // a zombie would outlive it.
                        z.gone().await;
                        let processes = z.processes();
                        let _ = tokio::task::spawn_blocking(move || {
                            for p in processes {
                                runtime.end_process(p.pid, p.start_time);
                            }
                        })
                        .await;
                    }
                });
                None
            }
        }
    }

    /// Gives the sandbox just launched its default kernel, forked from `zygote`. On
    /// failure the sandbox has no kernel yet and its agent starts one the usual way when
    /// asked (a pool's warm-up does at once).
    pub(super) async fn hand_in_kernel(
        &self,
        launched: &Launched,
        token: Option<&str>,
        zygote: &Zygote,
    ) -> Result<(), String> {
        let started = Instant::now();
        let ip = launched.spawned.net.sandbox_ip;
        let confinement = self
            .zygotes
            .confinement()
            .ok_or("zygotes are not configured")?;
        let plan = self.readiness.prepare_kernel(ip, token).await?;
        let runtime = Arc::clone(&self.runtime);
        let id = launched.id.clone();
        let pid = zygote
            .fork_kernel(
                &plan,
                launched.spawned.pid,
                &confinement,
                |host_pid| async move {
                    tokio::task::spawn_blocking(move || runtime.join_cgroup(&id, host_pid))
                        .await
                        .map_err(|e| e.to_string())?
                        .map_err(|e| e.to_string())
                },
            )
            .await?;
        self.readiness
            .adopt_kernel(
                ip,
                token,
                &KernelAdopt {
                    id: plan.id.clone(),
                    pid,
                },
            )
            .await?;
        tracing::info!(sandbox = %launched.id, pid, us = started.elapsed().as_micros() as u64, "kernel forked from the zygote");
        Ok(())
    }

    /// Ends the zygotes that were replaced or exited.
    fn end_retired_zygotes(&self) {
        let retired = self.zygotes.take_retired();
        if retired.is_empty() {
            return;
        }
        let runtime = Arc::clone(&self.runtime);
        tokio::task::spawn_blocking(move || {
            for z in retired {
                runtime.end_process(z.pid, z.start_time);
            }
        });
    }

    /// Ends every zygote (at shutdown).
    pub async fn stop_zygotes(&self) {
        let all = self.zygotes.take_all();
        let runtime = Arc::clone(&self.runtime);
        let _ = tokio::task::spawn_blocking(move || {
            for z in all {
                runtime.end_process(z.pid, z.start_time);
            }
        })
        .await;
    }
}
