//! CPU time of the processes the bench started (the worker, the nats-servers), read from
//! `/proc`: what each call costs them, which holds still on a noisy machine where
//! latencies do not.

use std::time::Duration;

/// The CPU time of a set of processes.
#[derive(Clone, Debug, Default)]
pub struct CpuMeter {
    pids: Vec<u32>,
}

impl CpuMeter {
    /// A meter of the processes `pids` (all threads of each).
    pub fn new(pids: impl IntoIterator<Item = u32>) -> Self {
        Self { pids: pids.into_iter().collect() }
    }

    /// The CPU time the processes have used so far: the sum over their threads of the
    /// time on CPU in `/proc/<pid>/task/<tid>/schedstat` (nanoseconds). `None` where
    /// `/proc` cannot tell (not Linux, a process gone).
    pub fn read(&self) -> Option<Duration> {
        let mut nanos = 0u64;
        for pid in &self.pids {
            let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
            for task in tasks.flatten() {
                // A thread that ended between the listing and the read used no more.
                let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) else { continue };
                nanos += on_cpu_nanos(&text)?;
            }
        }
        Some(Duration::from_nanos(nanos))
    }

    /// Runs `phase` and returns its result with the CPU time the processes used meanwhile.
    pub async fn around<T>(&self, phase: impl Future<Output = T>) -> (T, Option<Duration>) {
        let before = self.read();
        let value = phase.await;
        let used = before.zip(self.read()).map(|(before, after)| after.saturating_sub(before));
        (value, used)
    }
}

/// The first field of a `schedstat` line: time spent on CPU, in nanoseconds.
fn on_cpu_nanos(schedstat: &str) -> Option<u64> {
    schedstat.split_whitespace().next()?.parse().ok()
}

/// CPU microseconds per call, when the CPU time is known.
pub fn micros_per_call(used: Option<Duration>, calls: usize) -> Option<f64> {
    used.map(|used| used.as_secs_f64() * 1e6 / calls.max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedstat_first_field_is_the_time_on_cpu() {
        assert_eq!(on_cpu_nanos("52962210 3529290 150\n"), Some(52_962_210));
        assert_eq!(on_cpu_nanos(""), None);
        assert_eq!(on_cpu_nanos("x 1 2"), None);
    }

    #[test]
    fn the_meter_sees_this_process_spend_cpu() {
        // Spins until the meter has seen 10 ms of CPU: on a loaded machine that takes
        // longer than 10 ms of wall time, and a meter that sees nothing never gets there.
        let meter = CpuMeter::new([std::process::id()]);
        let before = meter.read().expect("/proc is readable on Linux");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut x = 0u64;
        let mut used = Duration::ZERO;
        while used < Duration::from_millis(10) {
            assert!(std::time::Instant::now() < deadline, "10 s of spinning showed only {used:?} of CPU");
            for _ in 0..100_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            std::hint::black_box(x);
            used = meter.read().expect("/proc is readable on Linux").saturating_sub(before);
        }
    }

    #[test]
    fn micros_per_call_divides_by_the_calls() {
        assert_eq!(micros_per_call(Some(Duration::from_millis(3)), 1000), Some(3.0));
        assert_eq!(micros_per_call(None, 1000), None);
    }
}
