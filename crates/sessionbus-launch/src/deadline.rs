//! [`Deadline`]: how long the launcher waits for a process, checking at a fixed pace.

use std::time::Duration;

use tokio::time::Instant;

/// The moment a wait gives up. A pause is cut short to end at the deadline, so the last
/// check happens at it; after it there is no pause.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline(Instant);

impl Deadline {
    /// `limit` from now.
    pub(crate) fn after(limit: Duration) -> Self {
        Self(Instant::now() + limit)
    }

    /// The time left, `None` once the deadline has passed.
    fn remaining(self) -> Option<Duration> {
        Some(self.0.saturating_duration_since(Instant::now())).filter(|left| !left.is_zero())
    }

    /// Sleeps `pause` (at most until the deadline), blocking the thread; `false` at once
    /// when the deadline has passed.
    pub(crate) fn pause_blocking(self, pause: Duration) -> bool {
        self.remaining().map(|left| std::thread::sleep(pause.min(left))).is_some()
    }

    /// Sleeps `pause` (at most until the deadline); `false` at once when the deadline
    /// has passed.
    pub(crate) async fn pause(self, pause: Duration) -> bool {
        match self.remaining() {
            Some(left) => {
                tokio::time::sleep(pause.min(left)).await;
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn no_pause_runs_past_the_deadline() {
        let started = Instant::now();
        let deadline = Deadline::after(Duration::from_millis(60));
        let mut pauses = 0;
        while deadline.pause(Duration::from_secs(10)).await {
            pauses += 1;
        }
        assert_eq!(pauses, 1, "one pause, cut short at the deadline");
        assert!(started.elapsed() >= Duration::from_millis(60));
        assert!(started.elapsed() < Duration::from_secs(5), "the 10 s pause was cut short");
        assert!(!deadline.pause_blocking(Duration::from_millis(1)), "no pause after the deadline");
    }
}
