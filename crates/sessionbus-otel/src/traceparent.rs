//! The W3C `traceparent` value a turn's trace comes from.

use std::fmt;
use std::str::FromStr;

use opentelemetry::trace::{SpanId, TraceId};

use crate::error::TraceParentError;

/// A parsed W3C `traceparent` (version `00`): the trace a turn belongs to and the span
/// (the worker's span of the `start_turn` call) its `lash.turn` span is a child of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TraceParent {
    /// The trace id; never [`TraceId::INVALID`].
    pub trace_id: TraceId,
    /// The parent span id; never [`SpanId::INVALID`].
    pub parent_span_id: SpanId,
    /// The `sampled` flag.
    pub sampled: bool,
}

impl TraceParent {
    /// A traceparent with the `sampled` flag set. Fails on an invalid (all-zero) id.
    pub fn new(trace_id: TraceId, parent_span_id: SpanId) -> Result<Self, TraceParentError> {
        if trace_id == TraceId::INVALID {
            return Err(TraceParentError::ZeroTraceId);
        }
        if parent_span_id == SpanId::INVALID {
            return Err(TraceParentError::ZeroParentId);
        }
        Ok(Self { trace_id, parent_span_id, sampled: true })
    }

    /// Parses a header value as the W3C Trace Context spec says: lowercase hex,
    /// version `00` exactly four fields, later versions at least four (extra fields
    /// ignored), version `ff` rejected, all-zero ids rejected.
    pub fn parse(value: &str) -> Result<Self, TraceParentError> {
        let value = value.trim();
        let malformed = || TraceParentError::Malformed(value.to_owned());
        let fields: Vec<&str> = value.split('-').collect();
        if fields.len() < 4 {
            return Err(malformed());
        }
        let [version, trace, parent, flags] = [fields[0], fields[1], fields[2], fields[3]];
        let lower_hex = |text: &str, len: usize| {
            text.len() == len && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if !lower_hex(version, 2) || !lower_hex(trace, 32) || !lower_hex(parent, 16) || !lower_hex(flags, 2) {
            return Err(malformed());
        }
        if version == "ff" {
            return Err(TraceParentError::UnsupportedVersion(version.to_owned()));
        }
        if version == "00" && fields.len() != 4 {
            return Err(malformed());
        }
        let trace_id = TraceId::from_hex(trace).map_err(|_| malformed())?;
        let parent_span_id = SpanId::from_hex(parent).map_err(|_| malformed())?;
        let flags = u8::from_str_radix(flags, 16).map_err(|_| malformed())?;
        let mut parsed = Self::new(trace_id, parent_span_id)?;
        parsed.sampled = flags & 0x01 == 0x01;
        Ok(parsed)
    }

    /// The header value (`00-<trace id>-<parent id>-<flags>`), which [`parse`](Self::parse)
    /// reads back unchanged.
    pub fn header_value(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{:032x}-{:016x}-{:02x}", self.trace_id, self.parent_span_id, u8::from(self.sampled))
    }
}

impl FromStr for TraceParent {
    type Err = TraceParentError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Self::parse(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_and_round_trips() {
        let parsed = TraceParent::parse(SAMPLE).unwrap();
        assert_eq!(parsed.trace_id, TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap());
        assert_eq!(parsed.parent_span_id, SpanId::from_hex("00f067aa0ba902b7").unwrap());
        assert!(parsed.sampled);
        assert_eq!(parsed.header_value(), SAMPLE);
        assert_eq!(SAMPLE.parse::<TraceParent>().unwrap(), parsed);
        let unsampled = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert!(!unsampled.sampled);
    }

    #[test]
    fn accepts_future_versions_with_extra_fields() {
        let parsed = TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra").unwrap();
        assert_eq!(parsed.header_value(), SAMPLE);
    }

    #[test]
    fn rejects_invalid_values() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(matches!(TraceParent::parse(bad), Err(TraceParentError::Malformed(_))), "{bad}");
        }
        assert_eq!(
            TraceParent::parse("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Err(TraceParentError::UnsupportedVersion("ff".into()))
        );
        assert_eq!(
            TraceParent::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            Err(TraceParentError::ZeroTraceId)
        );
        assert_eq!(
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"),
            Err(TraceParentError::ZeroParentId)
        );
    }
}
