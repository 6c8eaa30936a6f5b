//! [`Backoff`]: the pause between two attempts of anything retried or polled.
//!
//! One type serves the bus's retry policies (a resend after a lost answer, a
//! compare-and-set lost to a concurrent writer, an export that failed) and the waits of
//! the launcher and the tests (a server not accepting clients yet, a worker not ready
//! yet). Each use states its policy in one line: how the pause grows, whether it is
//! jittered, and the deadline it never runs past.

use std::hash::BuildHasher as _;
use std::time::Duration;

use tokio::time::Instant;

/// How the pause grows from one attempt to the next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Growth {
    /// Always the first pause.
    Fixed,
    /// Doubles each time, up to the maximum.
    Doubling,
    /// Grows by the first pause each time, up to the maximum.
    Linear,
}

/// Pauses between attempts: fixed, doubling or growing linearly up to a maximum,
/// optionally jittered, optionally bounded by a deadline.
///
/// With a deadline, no pause runs past it: the pause that would is cut short so the
/// caller's last attempt happens at the deadline, and once the deadline has passed there
/// is no further pause ([`Backoff::next_pause`] is `None`, [`Backoff::wait`] is `false`).
///
/// ```
/// use std::time::Duration;
///
/// use sessionbus_sync::Backoff;
///
/// # async fn ready() -> bool { true }
/// # async fn example() -> Result<(), String> {
/// // Poll every 20 ms for at most 5 s.
/// let mut backoff = Backoff::fixed(Duration::from_millis(20)).within(Duration::from_secs(5));
/// loop {
///     if ready().await {
///         return Ok(());
///     }
///     if !backoff.wait().await {
///         return Err("not ready within 5 s".into());
///     }
/// }
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Backoff {
    growth: Growth,
    first: Duration,
    max: Duration,
    jitter: bool,
    deadline: Option<Instant>,
    pauses: u32,
}

impl Backoff {
    /// Always `pause`.
    pub fn fixed(pause: Duration) -> Self {
        Self::new(Growth::Fixed, pause, pause)
    }

    /// `first`, then twice the previous pause, never more than `max`.
    pub fn exponential(first: Duration, max: Duration) -> Self {
        Self::new(Growth::Doubling, first, max)
    }

    /// `step`, `2 * step`, `3 * step`, ..., never more than `max`.
    pub fn linear(step: Duration, max: Duration) -> Self {
        Self::new(Growth::Linear, step, max)
    }

    fn new(growth: Growth, first: Duration, max: Duration) -> Self {
        Self { growth, first, max: max.max(first), jitter: false, deadline: None, pauses: 0 }
    }

    /// Each pause is drawn uniformly from zero up to the pause it would otherwise be
    /// ("full jitter"), so competing clients retrying the same thing spread out.
    #[must_use]
    pub fn jittered(mut self) -> Self {
        self.jitter = true;
        self
    }

    /// No pause runs past `deadline`.
    #[must_use]
    pub fn deadline(mut self, deadline: impl Into<Instant>) -> Self {
        self.deadline = Some(deadline.into());
        self
    }

    /// No pause runs past `limit` from now.
    #[must_use]
    pub fn within(self, limit: Duration) -> Self {
        self.deadline(Instant::now() + limit)
    }

    /// The pauses handed out so far.
    pub fn pauses(&self) -> u32 {
        self.pauses
    }

    /// True once the deadline (if any) has passed.
    pub fn expired(&self) -> bool {
        self.deadline.is_some_and(|deadline| Instant::now() >= deadline)
    }

    /// The next pause, or `None` when the deadline has passed. A pause that would run
    /// past the deadline is cut short to end at it.
    pub fn next_pause(&mut self) -> Option<Duration> {
        let mut pause = self.ceiling();
        if self.jitter {
            pause = random_below(pause);
        }
        if let Some(deadline) = self.deadline {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return None;
            }
            pause = pause.min(remaining);
        }
        self.pauses = self.pauses.saturating_add(1);
        Some(pause)
    }

    /// Sleeps the next pause; `false` (at once) when the deadline has passed.
    pub async fn wait(&mut self) -> bool {
        match self.next_pause() {
            Some(pause) => {
                tokio::time::sleep(pause).await;
                true
            }
            None => false,
        }
    }

    /// Like [`Backoff::wait`], blocking the thread (for code outside an async runtime).
    pub fn wait_blocking(&mut self) -> bool {
        match self.next_pause() {
            Some(pause) => {
                std::thread::sleep(pause);
                true
            }
            None => false,
        }
    }

    /// The un-jittered pause number `self.pauses` (from 0).
    fn ceiling(&self) -> Duration {
        let pause = match self.growth {
            Growth::Fixed => self.first,
            Growth::Doubling => self.first.saturating_mul(2u32.saturating_pow(self.pauses)),
            Growth::Linear => self.first.saturating_mul(self.pauses.saturating_add(1)),
        };
        pause.min(self.max)
    }
}

/// A duration drawn uniformly from `[0, ceiling)` (zero for a zero ceiling).
fn random_below(ceiling: Duration) -> Duration {
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return Duration::ZERO;
    }
    // A fresh RandomState has fresh keys: its hash of anything is a new random number.
    let random = std::collections::hash_map::RandomState::new().hash_one(nanos);
    Duration::from_nanos(random % nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().copied().map(Duration::from_millis).collect()
    }

    fn take(backoff: &mut Backoff, count: usize) -> Vec<Duration> {
        (0..count).map_while(|_| backoff.next_pause()).collect()
    }

    #[test]
    fn each_growth_follows_its_rule_up_to_the_maximum() {
        let ms_ = Duration::from_millis;
        assert_eq!(take(&mut Backoff::fixed(ms_(20)), 3), ms(&[20, 20, 20]));
        assert_eq!(take(&mut Backoff::exponential(ms_(20), ms_(100)), 5), ms(&[20, 40, 80, 100, 100]));
        assert_eq!(take(&mut Backoff::linear(ms_(5), ms_(12)), 4), ms(&[5, 10, 12, 12]));
        // A maximum below the first pause is the first pause.
        assert_eq!(take(&mut Backoff::exponential(ms_(30), ms_(1)), 2), ms(&[30, 30]));
        // Doubling never overflows.
        let mut long = Backoff::exponential(Duration::from_secs(1), Duration::MAX);
        assert_eq!(take(&mut long, 200).len(), 200);
        assert_eq!(long.pauses(), 200);
    }

    #[test]
    fn a_jittered_pause_stays_below_its_ceiling_and_varies() {
        let mut backoff = Backoff::linear(Duration::from_micros(250), Duration::from_millis(20)).jittered();
        let pauses = take(&mut backoff, 200);
        for (index, pause) in pauses.iter().enumerate() {
            let ceiling = Duration::from_micros(250 * (index as u64 + 1)).min(Duration::from_millis(20));
            assert!(*pause < ceiling, "pause {index}: {pause:?} >= {ceiling:?}");
        }
        let distinct: std::collections::BTreeSet<_> = pauses.iter().collect();
        assert!(distinct.len() > 150, "jitter draws new values: {} distinct of 200", distinct.len());
        assert_eq!(random_below(Duration::ZERO), Duration::ZERO);
    }

    #[tokio::test]
    async fn no_pause_runs_past_the_deadline() {
        let mut long = Backoff::fixed(Duration::from_secs(10)).within(Duration::from_millis(100));
        let pause = long.next_pause().expect("a pause before the deadline");
        assert!(pause <= Duration::from_millis(100), "cut short at the deadline: {pause:?}");

        let started = Instant::now();
        let mut backoff = Backoff::fixed(Duration::from_millis(40)).within(Duration::from_millis(100));
        while backoff.wait().await {}
        assert!(started.elapsed() >= Duration::from_millis(100), "waited until the deadline: {:?}", started.elapsed());
        assert!(backoff.expired());
        assert_eq!(backoff.next_pause(), None);
        assert!(!Backoff::fixed(Duration::from_millis(1)).expired(), "no deadline, never expired");
    }

    #[test]
    fn a_past_deadline_gives_no_pause_to_a_blocking_waiter() {
        let mut backoff = Backoff::fixed(Duration::from_millis(5)).within(Duration::ZERO);
        assert!(!backoff.wait_blocking());
        let mut open = Backoff::fixed(Duration::from_millis(1)).within(Duration::from_secs(5));
        assert!(open.wait_blocking());
        assert_eq!(open.pauses(), 1);
    }
}
