//! Step timings of the create and destroy paths, logged at debug level so that a profile
//! of a live server is one `HUTCH_LOG=hutch_runtime=debug` away.

use std::fmt;
use std::time::Instant;

/// Durations of the consecutive steps of one operation.
#[derive(Debug)]
pub(crate) struct Steps {
    start: Instant,
    last: Instant,
    done: Vec<(String, u64)>,
}

impl Steps {
    /// Starts timing now.
    pub fn start() -> Self {
        let now = Instant::now();
        Steps {
            start: now,
            last: now,
            done: Vec::new(),
        }
    }

    /// Ends the step `name` (it began at the previous mark, or at the start).
    pub fn mark(&mut self, name: &str) {
        let now = Instant::now();
        self.done
            .push((name.to_string(), micros(now.duration_since(self.last))));
        self.last = now;
    }

    /// Adds steps measured elsewhere (the spawn helper's), prefixed with `prefix.`; they
    /// are part of the step that is marked next, and are not subtracted from it.
    pub fn extend(&mut self, prefix: &str, steps: &[(String, u64)]) {
        self.done.extend(
            steps
                .iter()
                .map(|(name, us)| (format!("{prefix}.{name}"), *us)),
        );
    }

    /// The steps so far, in order, in microseconds.
    pub fn steps(&self) -> &[(String, u64)] {
        &self.done
    }

    /// Microseconds since the start.
    pub fn total_us(&self) -> u64 {
        micros(self.start.elapsed())
    }

    /// Logs the steps at debug level.
    pub fn log(&self, op: &'static str, id: &str) {
        tracing::debug!(
            op,
            sandbox = %id,
            total_us = self.total_us(),
            steps = %self,
            "step timings"
        );
    }
}

impl fmt::Display for Steps {
    /// `name=µs` pairs separated by spaces.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, us)) in self.done.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{name}={us}")?;
        }
        Ok(())
    }
}

fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_listed_in_order_with_helper_steps_prefixed() {
        let mut s = Steps::start();
        s.mark("disk");
        s.extend("helper", &[("net".into(), 7)]);
        s.mark("spawn");
        let names: Vec<&str> = s.steps().iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["disk", "helper.net", "spawn"]);
        let text = s.to_string();
        assert!(text.starts_with("disk="), "{text}");
        assert!(text.contains(" helper.net=7 spawn="), "{text}");
    }
}
