//! Wall-clock timestamps in the RFC 3339 form lash writes (`2025-06-14T09:21:07.412318+00:00`).

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds added to this process's wall clock (see [`set_skew_ms`]).
static SKEW_MS: AtomicI64 = AtomicI64::new(0);

/// Shifts this process's wall clock by `skew_ms` (for tests: a machine whose clock runs
/// ahead or behind). Wall-clock time only stamps records; no decision of the bus
/// compares two machines' clocks, and the tests prove it with skewed workers.
pub fn set_skew_ms(skew_ms: i64) {
    SKEW_MS.store(skew_ms, Ordering::Relaxed);
}

fn since_epoch() -> Duration {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let skew = SKEW_MS.load(Ordering::Relaxed);
    match skew >= 0 {
        true => now.saturating_add(Duration::from_millis(skew.unsigned_abs())),
        false => now.saturating_sub(Duration::from_millis(skew.unsigned_abs())),
    }
}

/// Now, as RFC 3339 UTC with microseconds.
pub fn now_rfc3339() -> String {
    let since_epoch = since_epoch();
    format_rfc3339(since_epoch.as_secs(), since_epoch.subsec_micros())
}

/// Milliseconds since the Unix epoch.
pub fn now_unix_ms() -> u64 {
    u64::try_from(since_epoch().as_millis()).unwrap_or(u64::MAX)
}

/// A time in nanoseconds since the Unix epoch as RFC 3339 UTC with microseconds (times
/// before the epoch read as the epoch).
pub fn rfc3339_from_unix_nanos(nanos: i128) -> String {
    let micros = u128::try_from(nanos / 1000).unwrap_or(0);
    format_rfc3339(u64::try_from(micros / 1_000_000).unwrap_or(u64::MAX), (micros % 1_000_000) as u32)
}

fn format_rfc3339(secs: u64, micros: u32) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}+00:00", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Now, in the ISO 8601 basic form with milliseconds (`20261130T212603.123Z`): sortable
/// and safe in file names (report and bench history files).
pub fn now_basic_utc() -> String {
    format_basic(since_epoch())
}

fn format_basic(since_epoch: Duration) -> String {
    let (secs, millis) = (since_epoch.as_secs(), since_epoch.subsec_millis());
    let (year, month, day) = civil_from_days(secs / 86_400);
    let rem = secs % 86_400;
    format!("{year:04}{month:02}{day:02}T{:02}{:02}{:02}.{millis:03}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Howard Hinnant's days-to-civil algorithm, for days since 1970-01-01.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::{format_basic, format_rfc3339, rfc3339_from_unix_nanos};

    #[test]
    fn formats_server_timestamps() {
        assert_eq!(rfc3339_from_unix_nanos(1_749_892_867_412_318_999), "2025-06-14T09:21:07.412318+00:00");
        assert_eq!(rfc3339_from_unix_nanos(-5), "1970-01-01T00:00:00.000000+00:00");
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_rfc3339(0, 0), "1970-01-01T00:00:00.000000+00:00");
        assert_eq!(format_rfc3339(1_749_892_867, 412_318), "2025-06-14T09:21:07.412318+00:00");
        assert_eq!(format_rfc3339(951_782_400, 1), "2000-02-29T00:00:00.000001+00:00");
    }

    #[test]
    fn basic_form_sorts_and_fits_file_names() {
        let at = |secs: u64, millis: u64| format_basic(std::time::Duration::from_millis(secs * 1000 + millis));
        assert_eq!(at(1_749_892_867, 412), "20250614T092107.412Z");
        assert_eq!(at(0, 0), "19700101T000000.000Z");
        assert!(at(951_782_400, 1) < at(951_782_400, 2));
    }
}
