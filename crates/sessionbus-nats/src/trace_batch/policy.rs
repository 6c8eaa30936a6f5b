//! When a lane of trace records is sent, and how many go in one batch: a pure decision
//! on the records waiting, so it is table-tested without a clock or a server.

use std::time::Duration;

/// The bounds of one batch and how long the first record of a batch may wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    /// How long the oldest waiting record may wait for others to join it (zero: a batch
    /// is sent as soon as the one before it is stored).
    pub(crate) window: Duration,
    /// Records per batch, at most.
    pub(crate) max_records: usize,
    /// Bytes of records per batch, at most (a single larger record still goes alone).
    pub(crate) max_bytes: usize,
}

/// What the lane's sender does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Nothing waits: the lane is closed.
    Idle,
    /// Wait this long for more records, then decide again.
    Wait(Duration),
    /// Send the first `n` waiting records as one batch.
    Send(usize),
}

/// Decides for the records waiting in one lane, in order: `sizes` are their encoded
/// sizes, `oldest_age` how long the first of them has waited.
///
/// A batch is sent when the window has passed for the oldest record, or when the
/// waiting records fill a batch (by count or bytes); it takes records from the front
/// while they fit, and always at least one.
pub(crate) fn decide(sizes: impl IntoIterator<Item = usize>, oldest_age: Duration, limits: &Limits) -> Decision {
    let max_records = limits.max_records.max(1);
    let (mut count, mut bytes, mut full) = (0usize, 0usize, false);
    for size in sizes {
        if count == max_records || (count > 0 && bytes + size > limits.max_bytes) {
            full = true;
            break;
        }
        count += 1;
        bytes += size;
    }
    if count == 0 {
        return Decision::Idle;
    }
    let full = full || count == max_records || bytes >= limits.max_bytes;
    match limits.window.checked_sub(oldest_age) {
        Some(rest) if !full && !rest.is_zero() => Decision::Wait(rest),
        _ => Decision::Send(count),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn limits(window: Duration, max_records: usize, max_bytes: usize) -> Limits {
        Limits { window, max_records, max_bytes }
    }

    #[test]
    fn decides_when_to_send_and_how_much() {
        let zero = Duration::ZERO;
        #[rustfmt::skip]
        let table: &[(&str, &[usize], Duration, Limits, Decision)] = &[
            ("nothing waits", &[], zero, limits(zero, 8, 100), Decision::Idle),
            ("no window: one record goes at once", &[10], zero, limits(zero, 8, 100), Decision::Send(1)),
            ("no window: all that wait go together", &[10, 10, 10], zero, limits(zero, 8, 100), Decision::Send(3)),
            ("count cap splits", &[1, 1, 1, 1, 1], zero, limits(zero, 2, 100), Decision::Send(2)),
            ("byte cap splits", &[40, 40, 40], zero, limits(zero, 8, 100), Decision::Send(2)),
            ("exactly the byte cap", &[50, 50, 1], zero, limits(zero, 8, 100), Decision::Send(2)),
            ("an oversized record goes alone", &[500, 10], zero, limits(zero, 8, 100), Decision::Send(1)),
            ("oversized after others waits its turn", &[10, 500], zero, limits(zero, 8, 100), Decision::Send(1)),
            ("window open: wait the rest", &[10], MS, limits(5 * MS, 8, 100), Decision::Wait(4 * MS)),
            ("window passed: send", &[10, 10], 5 * MS, limits(5 * MS, 8, 100), Decision::Send(2)),
            ("window long passed: send", &[10], 50 * MS, limits(5 * MS, 8, 100), Decision::Send(1)),
            ("window open but count full: send", &[1, 1], zero, limits(5 * MS, 2, 100), Decision::Send(2)),
            ("window open but bytes full: send", &[60, 60], zero, limits(5 * MS, 8, 100), Decision::Send(1)),
            ("a zero count cap acts as one", &[1, 1], zero, limits(zero, 0, 100), Decision::Send(1)),
        ];
        for (name, sizes, age, limits, expected) in table {
            assert_eq!(decide(sizes.iter().copied(), *age, limits), *expected, "{name}");
        }
    }
}
