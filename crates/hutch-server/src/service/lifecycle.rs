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
        for rec in records {
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
            lock(&self.reserved_slots).insert(lock(&entry.rec).slot);
            entry
        };
        entry.killed.send_replace(true);
        let _op = entry.op.lock().await;
        let rec = entry.record();
        let slot = rec.slot;
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

    /// Connects: resumes a paused sandbox (returns true) and extends the end time to at
    /// least now + `timeout`.
    pub async fn connect(&self, id: &str, timeout: Option<u64>) -> Result<(SandboxRecord, bool)> {
        let timeout = validate_timeout(timeout)?;
        let e = self.entry(id)?;
        let _op = e.op.lock().await;
        let resumed = e.record().state == SandboxState::Paused;
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
            let rec = e.record();
            self.runtime.reap(rec.pid);
            if !self.runtime.is_alive(rec.pid, rec.pid_start) {
                tracing::warn!(sandbox = %rec.id, "sandbox init exited; releasing the sandbox");
                let _ = self.kill(&rec.id).await;
                continue;
            }
            if rec.state == SandboxState::Running && rec.end_at <= now {
                if rec.auto_pause {
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
