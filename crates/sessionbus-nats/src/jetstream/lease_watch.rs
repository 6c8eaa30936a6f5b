//! Is a held lease alive? Judged by this process's own monotonic clock, never by
//! comparing the holder's wall clock with ours.
//!
//! A holder renews its lease every `ttl / 6`; each renewal is a new message, so the
//! lease's stream sequence moves. A lease is presumed alive until this process has
//! seen the same lease sequence, unchanged, for a full TTL (the holder's TTL, written
//! in the record). A worker whose clock runs a minute ahead therefore takes over no
//! live turn and closes no session under one; a dead holder's lease is taken over one
//! TTL after a worker first saw it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What this process has seen of each session's held lease: its sequence and when that
/// sequence was first seen. Bounded: the oldest observation is forgotten when full (a
/// forgotten lease is presumed alive again for one TTL: later, never earlier).
pub(crate) struct LeaseWatch {
    seen: Mutex<HashMap<String, (u64, Instant)>>,
    capacity: usize,
}

impl LeaseWatch {
    pub(crate) fn new(capacity: usize) -> Self {
        Self { seen: Mutex::new(HashMap::new()), capacity: capacity.max(1) }
    }

    /// True while the lease of session `token` at sequence `seq` may still be held:
    /// until this process has seen that same sequence for `ttl`.
    pub(crate) fn alive(&self, token: &str, seq: u64, ttl: Duration) -> bool {
        let mut seen = crate::lock(&self.seen);
        observe(&mut seen, self.capacity, token, seq, Instant::now(), ttl)
    }
}

/// The decision, over an explicit `now`.
fn observe(
    seen: &mut HashMap<String, (u64, Instant)>,
    capacity: usize,
    token: &str,
    seq: u64,
    now: Instant,
    ttl: Duration,
) -> bool {
    match seen.get(token) {
        Some(&(known, since)) if known == seq => now.duration_since(since) < ttl,
        _ => {
            if seen.len() >= capacity && !seen.contains_key(token) {
                let oldest = seen.iter().min_by_key(|(_, (_, since))| *since).map(|(key, _)| key.clone());
                if let Some(oldest) = oldest {
                    seen.remove(&oldest);
                }
            }
            seen.insert(token.to_owned(), (seq, now));
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(30);

    #[test]
    fn a_lease_is_alive_until_seen_unchanged_for_a_full_ttl() {
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let mut seen = HashMap::new();
        // (seconds since start, lease sequence seen, alive?)
        let table = [
            (0, 10, true),   // first sight: presumed alive, whatever its record says
            (29, 10, true),  // unchanged, less than a TTL
            (30, 10, false), // unchanged for a full TTL: the holder is gone
            (31, 11, true),  // renewed (or taken over): a new sequence starts a new watch
            (60, 11, true),
            (61, 11, false),
            (61, 12, true),
        ];
        for (secs, seq, alive) in table {
            assert_eq!(observe(&mut seen, 8, "s", seq, at(secs), TTL), alive, "t={secs}s seq={seq}");
        }
    }

    #[test]
    fn a_forgotten_observation_starts_over_and_sessions_are_watched_apart() {
        let start = Instant::now();
        let mut seen = HashMap::new();
        assert!(observe(&mut seen, 2, "a", 1, start, TTL));
        assert!(observe(&mut seen, 2, "b", 1, start + Duration::from_secs(1), TTL));
        // A third session evicts the oldest observation ("a").
        assert!(observe(&mut seen, 2, "c", 1, start + Duration::from_secs(2), TTL));
        assert_eq!(seen.len(), 2);
        assert!(!observe(&mut seen, 2, "b", 1, start + Duration::from_secs(40), TTL), "b was watched a TTL");
        assert!(observe(&mut seen, 2, "a", 1, start + Duration::from_secs(40), TTL), "a is watched anew");
    }
}
