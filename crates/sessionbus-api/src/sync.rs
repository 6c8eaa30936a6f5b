//! The one lock helper of the workspace.

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, taking over a lock poisoned by a panic elsewhere: every mutex in
/// sessionbus guards data that each critical section leaves valid at every step (maps,
/// counters, caches), so a panic in one caller never leaves it half-written.
pub fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
