//! A sandbox's life after creation: end times, pause and resume (freezer), kill, the loop
//! that expires sandboxes, and the recovery of a previous run's sandboxes at start.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;

use super::{
    lock, validate_timeout, Entry, Missing, Result, RuntimeOp, Service, ServiceError,
    METRICS_INTERVAL,
};
use crate::sandbox::{SandboxRecord, SandboxState};

/// How often the lifecycle loop looks at every sandbox.
const TICK: Duration = Duration::from_millis(250);
/// How many times (100 ms apart) a kill retries deleting its record from a full disk.
const KILL_DISK_FULL_TRIES: u32 = 50;

impl Service {
    /// Splits the stored records into alive ones (adopted) and dead ones (cleaned up), then
    /// removes anything on the host that belongs to no adopted sandbox.
    pub(super) fn recover(&self, records: Vec<SandboxRecord>) {
        let mut keep = HashSet::new();
        let mut keep_slots = HashSet::new();
        let mut saved = HashSet::new();
        for rec in records {
            if let (Some(disk), None) = (&rec.saved_disk, &rec.build) {
                // Paused without memory: nothing of it runs; its files wait on disk.
                if disk.is_dir() {
                    tracing::info!(sandbox = %rec.id, "adopted sandbox paused without memory");
                    saved.insert(disk.clone());
                    lock(&self.live).insert(rec.id.clone(), Entry::new(rec));
                } else {
                    tracing::warn!(sandbox = %rec.id, disk = %disk.display(), "the saved filesystem of a paused sandbox is gone; removing the sandbox");
                    let _ = self.store.delete_sandbox(&rec.id);
                }
                continue;
            }
            let alive = self.runtime.is_alive(rec.pid, rec.pid_start);
            if let Some(build) = rec.build.as_deref() {
                // Its build ended with the server that ran it.
                tracing::info!(sandbox = %rec.id, build, "ending the sandbox of an interrupted template build");
            } else if alive {
                tracing::info!(sandbox = %rec.id, pid = rec.pid, state = rec.state.as_str(), "adopted running sandbox");
                self.runtime.reattach_log(&rec.id);
                keep.insert(rec.id.clone());
                keep_slots.insert(rec.slot);
                lock(&self.live).insert(rec.id.clone(), Entry::new(rec));
                continue;
            } else {
                tracing::info!(sandbox = %rec.id, "sandbox died while the server was down; cleaning up");
            }
            let net = self.runtime.net_for(rec.slot);
            let init = Some((rec.pid, rec.pid_start)).filter(|_| alive);
            if let Err(e) = self.runtime.destroy(&rec.id, Some(&net), init) {
                tracing::warn!(sandbox = %rec.id, error = %e, "cleanup failed");
            }
            let _ = self.store.delete_sandbox(&rec.id);
        }
        for id in self.runtime.leftover_ids() {
            if !keep.contains(&id) {
                tracing::info!(sandbox = %id, "removing leftovers of an unknown sandbox");
                if let Err(e) = self.runtime.destroy(&id, None, None) {
                    tracing::warn!(sandbox = %id, error = %e, "cleanup failed");
                }
            }
        }
        for slot in self.runtime.leftover_slots() {
            if !keep_slots.contains(&slot) {
                self.runtime.release_slot(slot);
            }
        }
        // Saved filesystems no sandbox names: a pause or resume the server died in.
        if let Ok(rd) = std::fs::read_dir(self.saved_dir()) {
            for d in rd.flatten().map(|d| d.path()) {
                if !saved.contains(&d) {
                    tracing::info!(disk = %d.display(), "removing a saved filesystem no sandbox names");
                    let _ = std::fs::remove_dir_all(&d);
                }
            }
        }
    }

    /// Where the filesystems of sandboxes paused without memory are kept.
    fn saved_dir(&self) -> std::path::PathBuf {
        self.runtime.state_dir().join("paused")
    }

    /// Kills a sandbox and releases everything it holds. NotFound if it does not exist.
    pub async fn kill(&self, id: &str) -> Result<()> {
        let entry = {
            let mut live = lock(&self.live);
            let entry = live
                .remove(id)
                .ok_or_else(|| Missing::KilledSandbox(id.to_string()))?;
            // The slot (and with it the `hv<slot>` interface name) stays taken until the
            // teardown is over, or a new sandbox could get it and lose its veth to us.
            let rec = lock(&entry.rec);
            if !rec.is_stopped() {
                lock(&self.reserved_slots).insert(rec.slot);
            }
            drop(rec);
            entry
        };
        entry.killed.send_replace(true);
        let _op = entry.op.lock().await;
        let rec = entry.record();
        if let Some(disk) = rec.saved_disk.clone() {
            // Paused without memory: only its saved files are left to remove.
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(disk)).await;
            self.store.delete_sandbox(id)?;
            tracing::info!(sandbox = %id, "sandbox killed");
            return Ok(());
        }
        let slot = rec.slot;
        // A resume that finished while this kill waited gave it a slot of its own.
        lock(&self.reserved_slots).insert(slot);
        let net = self.runtime.net_for(rec.slot);
        let res = self
            .blocking(move |rt| rt.destroy(&rec.id, Some(&net), Some((rec.pid, rec.pid_start))))
            .await;
        lock(&self.reserved_slots).remove(&slot);
        let res = res?;
        // On a full data disk the record's deletion can fail until the sandbox's own disk,
        // which its teardown hands to the trash, is deleted in the background: a kill must
        // still go through there.
        let mut tries = 0;
        loop {
            match self.store.delete_sandbox(id) {
                Err(e) if e.is_disk_full() && tries < KILL_DISK_FULL_TRIES => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => break other?,
            }
        }
        match res {
            Ok(()) => {
                tracing::info!(sandbox = %id, "sandbox killed");
                Ok(())
            }
            Err(e) => {
                tracing::error!(sandbox = %id, error = %e, "releasing the sandbox failed");
                Err(ServiceError::runtime(RuntimeOp::Kill, id, e))
            }
        }
    }

    /// Ends every process of sandbox `id` and copies what it changed to `dest` (see
    /// [`hutch_runtime::Runtime::commit_upper`]); the sandbox is then only good for
    /// [`Service::kill`].
    pub async fn commit_layer(&self, id: &str, dest: std::path::PathBuf) -> Result<()> {
        let e = self.entry(id)?;
        let _op = e.op.lock().await;
        let rec = e.record();
        self.blocking(move |rt| rt.commit_upper(&rec.id, Some((rec.pid, rec.pid_start)), &dest))
            .await?
            .map_err(|e| ServiceError::runtime(RuntimeOp::Commit, id, e))
    }

    /// Copies what sandbox `id` changed to `dest` while it keeps running: a running
    /// sandbox is frozen for the copy (so the layer is one instant of its filesystem) and
    /// thawed after; a paused one stays paused. Returns the sandbox's record as it was.
    pub async fn capture_layer(&self, id: &str, dest: std::path::PathBuf) -> Result<SandboxRecord> {
        let e = self.entry(id)?;
        let _op = e.op.lock().await;
        let rec = e.record();
        if let Some(saved) = rec.saved_disk.clone() {
            // Nothing runs: its saved files are the layer already.
            let copied = tokio::task::spawn_blocking(move || {
                if let Some(parent) = dest.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| hutch_runtime::RuntimeError::io("mkdir", parent, e))?;
                }
                let copied = hutch_runtime::runtime::copy_tree(&saved, &dest);
                if copied.is_err() {
                    let _ = std::fs::remove_dir_all(&dest);
                }
                copied
            })
            .await?;
            copied.map_err(|e| ServiceError::runtime(RuntimeOp::Commit, id, e))?;
            return Ok(rec);
        }
        let freeze = rec.state == SandboxState::Running;
        let sid = rec.id.clone();
        let copied = self
            .blocking(move |rt| {
                if freeze {
                    rt.pause(&sid)?;
                }
                let copied = rt.commit_upper(&sid, None, &dest);
                let thawed = if freeze { rt.resume(&sid) } else { Ok(()) };
                copied.and(thawed)
            })
            .await?;
        copied.map_err(|e| ServiceError::runtime(RuntimeOp::Commit, id, e))?;
        Ok(rec)
    }

    /// Sets the end time to now + `timeout` (may shorten).
    pub async fn set_timeout(&self, id: &str, timeout: Option<u64>) -> Result<()> {
        let timeout = validate_timeout(timeout)?;
        let e = self.entry(id)?;
        let _op = e.op.lock().await;
        let rec = {
            let mut r = lock(&e.rec);
            r.end_at = Utc::now() + chrono::Duration::seconds(timeout as i64);
            r.clone()
        };
        Ok(self.store.put_sandbox(&rec)?)
    }

    /// Extends the end time to at least now + `duration`.
    pub async fn refresh(&self, id: &str, duration: Option<u64>) -> Result<()> {
        let duration = validate_timeout(duration)?;
        let e = self.entry(id)?;
        let _op = e.op.lock().await;
        let rec = {
            let mut r = lock(&e.rec);
            r.end_at = r
                .end_at
                .max(Utc::now() + chrono::Duration::seconds(duration as i64));
            r.clone()
        };
        Ok(self.store.put_sandbox(&rec)?)
    }

    /// Freezes a running sandbox. Conflict if it is already paused.
    pub async fn pause(&self, id: &str) -> Result<()> {
        let e = self.entry(id)?;
        let _op = e.op.lock().await;
        if e.record().state == SandboxState::Paused {
            return Err(ServiceError::AlreadyPaused { id: id.to_string() });
        }
        let sid = id.to_string();
        self.blocking(move |rt| rt.pause(&sid))
            .await?
            .map_err(|e| ServiceError::runtime(RuntimeOp::Pause, id, e))?;
        let rec = {
            let mut r = lock(&e.rec);
            r.state = SandboxState::Paused;
            r.clone()
        };
        tracing::info!(sandbox = %id, "sandbox paused");
        Ok(self.store.put_sandbox(&rec)?)
    }

    /// Pauses sandbox `id` keeping only its filesystem (E2B's `memory: false`): every
    /// process ends, its upper dir is saved as a layer under `<data>/paused`, and its
    /// cgroup, disk, mounts and slot are released. Resuming boots it again on those files.
    /// A sandbox paused with memory is stopped the same way. Conflict if it is stopped.
    pub async fn pause_filesystem(&self, id: &str) -> Result<()> {
        let e = self.entry(id)?;
        let _op = e.op.lock().await;
        self.stop_keeping_files(&e).await
    }

    /// [`Service::pause_filesystem`] with the entry's op lock held.
    async fn stop_keeping_files(&self, e: &Entry) -> Result<()> {
        let rec = e.record();
        let id = rec.id.as_str();
        if rec.is_stopped() {
            return Err(ServiceError::AlreadyPaused { id: id.to_string() });
        }
        let dest = self
            .saved_dir()
            .join(format!("{id}-{}", crate::sandbox::random_hex(4)));
        let frozen = rec.state == SandboxState::Paused;
        let init = (rec.pid, rec.pid_start);
        let (sid, to) = (id.to_string(), dest.clone());
        self.blocking(move |rt| {
            // Frozen processes cannot die (cgroup v1's freezer): thawed, then ended.
            if frozen {
                rt.resume(&sid)?;
            }
            rt.commit_upper(&sid, Some(init), &to)
        })
        .await?
        .map_err(|err| ServiceError::runtime(RuntimeOp::Pause, id, err))?;
        // The slot stays taken until the teardown is over (see `kill`).
        lock(&self.reserved_slots).insert(rec.slot);
        let stopped = {
            let mut r = lock(&e.rec);
            r.state = SandboxState::Paused;
            r.saved_disk = Some(dest);
            r.clone()
        };
        let net = self.runtime.net_for(rec.slot);
        let sid = id.to_string();
        let destroyed = self
            .blocking(move |rt| rt.destroy(&sid, Some(&net), Some(init)))
            .await
            .and_then(|r| r.map_err(|e| ServiceError::runtime(RuntimeOp::Kill, id, e)));
        lock(&self.reserved_slots).remove(&rec.slot);
        // What is left goes at the next start (no sandbox of this id runs).
        if let Err(err) = destroyed {
            tracing::warn!(sandbox = %id, error = %err, "releasing the paused sandbox failed");
        }
        self.store.put_sandbox(&stopped)?;
        tracing::info!(sandbox = %id, "sandbox paused without memory");
        Ok(())
    }

    /// Boots a sandbox paused without memory again on its saved files, with its id, access
    /// token, variables and settings; its end time becomes now + `timeout`. The caller
    /// holds its op lock.
    async fn boot_saved(&self, e: &Entry, timeout: u64) -> Result<SandboxRecord> {
        let rec = e.record();
        let Some(saved) = rec.saved_disk.clone() else {
            return Ok(rec);
        };
        let started = Instant::now();
        let scope = crate::tenancy::Scope::operator();
        let custom = self
            .templates
            .custom(&rec.template_id, &scope)
            .filter(|t| t.id == rec.template_id);
        let layers = if rec.layers.is_empty() {
            self.templates.resolve(&rec.template_id, &scope)?.layers
        } else {
            rec.layers.clone()
        };
        let tpl = crate::templates::ResolvedTemplate {
            template_id: rec.template_id.clone(),
            alias: rec.alias.clone(),
            layers,
            custom,
        };
        let mut env_vars = super::create::sandbox_env(&tpl);
        env_vars.extend(rec.env_vars.clone());
        let volumes: Vec<(std::path::PathBuf, String)> = self
            .volume_sources(&rec.volume_mounts)
            .await?
            .into_iter()
            .map(|(m, source)| (source, m.path))
            .collect();
        // Its saved files hold the egress CA already, if its rules needed it.
        let plan = super::network::EgressPlan::of(rec.allow_internet_access, rec.network.as_ref());
        let launched = self
            .launch(super::create::Launch {
                tpl: &tpl,
                env_vars: &env_vars,
                token: rec.envd_access_token.as_deref(),
                allow_internet: plan.internet,
                egress: plan.policy.clone(),
                build: false,
                pooled: false,
                own_kernel: true,
                id: Some(&rec.id),
                seed_upper: Some(&saved),
                volumes: &volumes,
            })
            .await?;
        let booted = {
            let mut r = lock(&e.rec);
            r.pid = launched.spawned.pid;
            r.pid_start = launched.spawned.start_time;
            r.slot = launched.slot;
            r.state = SandboxState::Running;
            r.saved_disk = None;
            r.end_at = Utc::now() + chrono::Duration::seconds(timeout as i64);
            r.clone()
        };
        lock(&self.reserved_slots).remove(&launched.slot);
        self.store.put_sandbox(&booted)?;
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(saved)).await;
        tracing::info!(sandbox = %rec.id, ms = started.elapsed().as_millis() as u64, "sandbox booted again on its saved filesystem");
        Ok(booted)
    }

    /// Connects: resumes a paused sandbox (returns true) and extends the end time to at
    /// least now + `timeout`.
    pub async fn connect(&self, id: &str, timeout: Option<u64>) -> Result<(SandboxRecord, bool)> {
        self.connect_with(id, timeout, true).await
    }

    /// [`Service::connect`]; without `memory` (E2B's `on_resume="reboot"`) a sandbox paused
    /// with memory boots afresh on its files instead of being thawed.
    pub async fn connect_with(
        &self,
        id: &str,
        timeout: Option<u64>,
        memory: bool,
    ) -> Result<(SandboxRecord, bool)> {
        let timeout = validate_timeout(timeout)?;
        let e = self.entry(id)?;
        let _op = e.op.lock().await;
        let rec = e.record();
        let resumed = rec.state == SandboxState::Paused;
        if resumed && !memory && !rec.is_stopped() {
            self.stop_keeping_files(&e).await?;
        }
        if e.record().is_stopped() {
            return Ok((self.boot_saved(&e, timeout).await?, true));
        }
        if resumed {
            self.thaw(id).await?;
        }
        let rec = {
            let mut r = lock(&e.rec);
            let want = Utc::now() + chrono::Duration::seconds(timeout as i64);
            if resumed {
                r.state = SandboxState::Running;
                r.end_at = want;
            } else {
                r.end_at = r.end_at.max(want);
            }
            r.clone()
        };
        self.store.put_sandbox(&rec)?;
        Ok((rec, resumed))
    }

    /// The old resume call: Conflict if the sandbox is running.
    pub async fn resume(&self, id: &str, timeout: Option<u64>) -> Result<SandboxRecord> {
        let timeout = validate_timeout(timeout)?;
        let e = self.entry(id)?;
        let _op = e.op.lock().await;
        if e.record().state == SandboxState::Running {
            return Err(ServiceError::AlreadyRunning { id: id.to_string() });
        }
        if e.record().is_stopped() {
            return self.boot_saved(&e, timeout).await;
        }
        self.thaw(id).await?;
        let rec = {
            let mut r = lock(&e.rec);
            r.state = SandboxState::Running;
            r.end_at = Utc::now() + chrono::Duration::seconds(timeout as i64);
            r.clone()
        };
        self.store.put_sandbox(&rec)?;
        Ok(rec)
    }

    async fn thaw(&self, id: &str) -> Result<()> {
        let sid = id.to_string();
        self.blocking(move |rt| rt.resume(&sid))
            .await?
            .map_err(|e| ServiceError::runtime(RuntimeOp::Resume, id, e))?;
        tracing::info!(sandbox = %id, "sandbox resumed");
        Ok(())
    }

    /// Runs forever: expires sandboxes at their end time, notices sandboxes whose init died,
    /// and samples metrics.
    pub async fn lifecycle_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_sample = Instant::now();
        loop {
            tick.tick().await;
            let sample = last_sample.elapsed() >= METRICS_INTERVAL;
            if sample {
                last_sample = Instant::now();
            }
            self.check_all(sample).await;
        }
    }

    /// One round of the lifecycle loop: releases sandboxes whose init exited, pauses or
    /// kills the ones past their end time, and samples the rest when `sample` is set.
    pub(crate) async fn check_all(&self, sample: bool) {
        let entries: Vec<Arc<Entry>> = lock(&self.live).values().cloned().collect();
        let now = Utc::now();
        for e in entries {
            // An operation under way (a pause ending every process, a resume) decides the
            // sandbox's state; the next round looks again.
            let Ok(op) = e.op.try_lock() else {
                continue;
            };
            let rec = e.record();
            if rec.is_stopped() {
                continue;
            }
            self.runtime.reap(rec.pid);
            let alive = self.runtime.is_alive(rec.pid, rec.pid_start);
            drop(op);
            if !alive {
                tracing::warn!(sandbox = %rec.id, "sandbox init exited; releasing the sandbox");
                let _ = self.kill(&rec.id).await;
                continue;
            }
            if rec.state == SandboxState::Running && rec.end_at <= now {
                if rec.auto_pause && rec.auto_pause_filesystem {
                    tracing::info!(sandbox = %rec.id, "end time reached; pausing without memory");
                    if let Err(err) = self.pause_filesystem(&rec.id).await {
                        tracing::warn!(sandbox = %rec.id, error = %err, "pausing without memory failed; killing");
                        let _ = self.kill(&rec.id).await;
                    }
                } else if rec.auto_pause {
                    tracing::info!(sandbox = %rec.id, "end time reached; pausing");
                    let _ = self.pause(&rec.id).await;
                } else {
                    tracing::info!(sandbox = %rec.id, "end time reached; killing");
                    let _ = self.kill(&rec.id).await;
                }
                continue;
            }
            if sample && rec.state == SandboxState::Running {
                self.sample(&e);
            }
        }
    }
}
