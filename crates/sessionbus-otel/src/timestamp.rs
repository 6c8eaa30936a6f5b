//! RFC 3339 record timestamps to `SystemTime` and the nanosecond form kept in open spans.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Parses an RFC 3339 timestamp with any offset and up to nanosecond precision.
pub(crate) fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    OffsetDateTime::parse(text, &Rfc3339).ok().map(SystemTime::from)
}

/// Nanoseconds since the Unix epoch (0 before it, saturating far after it).
pub(crate) fn to_unix_nanos(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)).unwrap_or(0)
}

/// The instant `nanos` after the Unix epoch.
pub(crate) fn from_unix_nanos(nanos: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lash_timestamps() {
        let at = parse_rfc3339("2026-11-23T22:03:32.202615612+00:00").unwrap();
        assert_eq!(to_unix_nanos(at) % 1_000_000_000, 202_615_612);
        assert_eq!(parse_rfc3339("2026-11-23T23:03:32.202615612+01:00"), Some(at));
        assert_eq!(parse_rfc3339("2026-11-23T22:03:32.202615612Z"), Some(at));
        assert_eq!(from_unix_nanos(to_unix_nanos(at)), at);
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
