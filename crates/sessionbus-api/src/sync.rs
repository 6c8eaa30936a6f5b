//! The workspace's one lock helper and one backoff.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// Locks `mutex`, taking over a lock poisoned by a panic elsewhere: every mutex in
/// sessionbus guards data that each critical section leaves valid at every step (maps,
/// counters, caches), so a panic in one caller never leaves it half-written.
pub fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The one backoff of the workspace: `first`, doubling with each retry, at most `max`.
///
/// ```
/// use std::time::Duration;
/// use sessionbus_api::sync::Backoff;
///
/// let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
/// let pauses: Vec<u128> = (1..=6).map(|retry| backoff.pause(retry).as_millis()).collect();
/// assert_eq!(pauses, [100, 200, 400, 800, 1000, 1000]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
}

impl Backoff {
    /// Pauses of `first`, `2 * first`, ... up to `max`.
    pub const fn new(first: Duration, max: Duration) -> Self {
        Self { first, max }
    }

    /// The pause before retry `retry` (1 for the first retry).
    pub fn pause(&self, retry: u32) -> Duration {
        let doublings = retry.saturating_sub(1).min(31);
        self.first.saturating_mul(1u32 << doublings).min(self.max)
    }
}
