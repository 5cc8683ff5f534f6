//! Per-sandbox metrics: samples of CPU, memory and disk use, kept for an hour.

use std::time::Instant;

use chrono::Utc;

use super::{lock, Entry, Result, Service};
use crate::sandbox::Metric;

/// Samples kept per sandbox (one hour at the sampling interval).
const METRICS_KEPT: usize = 1800;

/// CPU use in percent of the sandbox's CPUs between two readings of its CPU time.
fn cpu_percent(last: Option<(Instant, u64)>, now: Instant, cpu_ns: u64, cpus: u32) -> f64 {
    let Some((t, ns)) = last else {
        return 0.0;
    };
    let wall = now.duration_since(t).as_nanos() as f64 * f64::from(cpus.max(1));
    if wall > 0.0 {
        (cpu_ns.saturating_sub(ns) as f64 / wall * 100.0).clamp(0.0, 100.0)
    } else {
        0.0
    }
}

impl Service {
    /// Metrics samples between `start` and `end` (unix seconds, inclusive).
    pub fn metrics(&self, id: &str, start: Option<i64>, end: Option<i64>) -> Result<Vec<Metric>> {
        let e = self.entry(id)?;
        if lock(&e.metrics).is_empty() {
            self.sample(&e);
        }
        let m = lock(&e.metrics);
        Ok(m.iter()
            .filter(|s| {
                start.is_none_or(|t| s.timestamp_unix >= t)
                    && end.is_none_or(|t| s.timestamp_unix <= t)
            })
            .cloned()
            .collect())
    }

    /// Takes one metrics sample of a sandbox.
    pub(super) fn sample(&self, e: &Entry) {
        let rec = e.record();
        let Ok(u) = self.runtime.usage(&rec.id) else {
            return;
        };
        let now = Instant::now();
        let pct = {
            let mut last = lock(&e.last_cpu);
            let pct = cpu_percent(*last, now, u.cgroup.cpu_usage_ns, rec.cpu_count);
            *last = Some((now, u.cgroup.cpu_usage_ns));
            pct
        };
        let ts = Utc::now();
        let mut m = lock(&e.metrics);
        m.push_back(Metric {
            timestamp: ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            timestamp_unix: ts.timestamp(),
            cpu_count: rec.cpu_count,
            cpu_used_pct: (pct * 100.0).round() / 100.0,
            mem_used: u.cgroup.mem_used,
            mem_total: rec.memory_mb * 1024 * 1024,
            mem_cache: u.cgroup.mem_cache,
            disk_used: u.disk_used,
            disk_total: u.disk_total,
        });
        while m.len() > METRICS_KEPT {
            m.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn first_reading_has_no_cpu_use() {
        assert_eq!(cpu_percent(None, Instant::now(), 5_000, 2), 0.0);
    }

    #[test]
    fn cpu_use_is_shared_over_the_sandboxs_cpus_and_capped() {
        let t = Instant::now();
        let later = t + Duration::from_secs(1);
        // One CPU-second over one wall second on two CPUs: half the sandbox's capacity.
        assert_eq!(cpu_percent(Some((t, 0)), later, 1_000_000_000, 2), 50.0);
        assert_eq!(cpu_percent(Some((t, 0)), later, 9_000_000_000, 1), 100.0);
        // A counter that went backwards (a new cgroup) reads as idle, not negative.
        assert_eq!(cpu_percent(Some((t, 10)), later, 5, 1), 0.0);
    }
}
