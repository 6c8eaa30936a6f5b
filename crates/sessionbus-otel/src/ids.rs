//! Deterministic trace and span ids.
//!
//! Every id is a SHA-256 digest of length-prefixed parts under a domain tag, so two
//! processes that see the same record compute the same ids without talking to each other.

use opentelemetry::trace::{SpanId, TraceId};
use sha2::{Digest, Sha256};

const TRACE_TAG: &str = "sessionbus-otel/trace/v1";
const NODE_TAG: &str = "sessionbus-otel/node-span/v1";
const RECORD_TAG: &str = "sessionbus-otel/record-span/v1";

fn digest(parts: &[&str]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hasher.finalize().into()
}

fn trace_id_from(parts: &[&str]) -> TraceId {
    let hash = digest(parts);
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash[..16]);
    if bytes == [0; 16] {
        bytes[15] = 1;
    }
    TraceId::from_bytes(bytes)
}

fn span_id_from(parts: &[&str]) -> SpanId {
    let hash = digest(parts);
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&hash[..8]);
    if bytes == [0; 8] {
        bytes[7] = 1;
    }
    SpanId::from_bytes(bytes)
}

/// The derived trace id of a turn (or, with `turn_id` `None`, of the session's turn-less
/// records): the first 16 bytes of a SHA-256 over session and turn id. Never invalid.
///
/// Used only when the turn's trace id is not known from outside (its `traceparent`).
pub fn derived_trace_id(session_id: &str, turn_id: Option<&str>) -> TraceId {
    match turn_id {
        Some(turn_id) => trace_id_from(&[TRACE_TAG, "turn", session_id, turn_id]),
        None => trace_id_from(&[TRACE_TAG, "session", session_id]),
    }
}

/// The span id of a graph node of a session: 8 bytes of a SHA-256 over session id and
/// graph node id. Never invalid. Long spans (`lash.turn`, `lash.llm`, `lash.tool`) and the
/// `lash.session` span use it, so records emitted by different processes join one span.
pub fn node_span_id(session_id: &str, graph_node_id: &str) -> SpanId {
    span_id_from(&[NODE_TAG, session_id, graph_node_id])
}

/// The span id of an instant span made from one record: 8 bytes of a SHA-256 over session
/// id and record id. Never invalid; a redelivered record yields the same id.
pub fn record_span_id(session_id: &str, record_id: &str) -> SpanId {
    span_id_from(&[RECORD_TAG, session_id, record_id])
}

/// lash's graph node id of a session (`session:<sid>`).
pub(crate) fn session_node_id(session_id: &str) -> String {
    format!("session:{session_id}")
}

/// lash's graph node id of a turn (`turn:<sid>:<tid>`).
pub(crate) fn turn_node_id(session_id: &str, turn_id: &str) -> String {
    format!("turn:{session_id}:{turn_id}")
}

/// lash's graph node id of an LLM call (`llm:<call id>`).
pub(crate) fn llm_node_id(llm_call_id: &str) -> String {
    format!("llm:{llm_call_id}")
}

/// lash's graph node id of a tool call (`tool:<call id>`).
pub(crate) fn tool_node_id(call_id: &str) -> String {
    format!("tool:{call_id}")
}

/// Serde as lowercase hex for [`TraceId`].
pub(crate) mod hex_trace_id {
    use opentelemetry::trace::TraceId;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(crate) fn serialize<S: Serializer>(id: &TraceId, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format!("{id:032x}"))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<TraceId, D::Error> {
        let text = String::deserialize(deserializer)?;
        TraceId::from_hex(&text).map_err(D::Error::custom)
    }
}

/// Serde as lowercase hex for [`SpanId`].
pub(crate) mod hex_span_id {
    use opentelemetry::trace::SpanId;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(crate) fn serialize<S: Serializer>(id: &SpanId, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format!("{id:016x}"))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SpanId, D::Error> {
        let text = String::deserialize(deserializer)?;
        SpanId::from_hex(&text).map_err(D::Error::custom)
    }
}

/// Serde as lowercase hex for `Option<SpanId>` (`null` when absent).
pub(crate) mod hex_span_id_opt {
    use opentelemetry::trace::SpanId;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(crate) fn serialize<S: Serializer>(id: &Option<SpanId>, serializer: S) -> Result<S::Ok, S::Error> {
        match id {
            Some(id) => serializer.serialize_some(&format!("{id:016x}")),
            None => serializer.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<SpanId>, D::Error> {
        Option::<String>::deserialize(deserializer)?
            .map(|text| SpanId::from_hex(&text).map_err(D::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_separated() {
        assert_eq!(derived_trace_id("s", Some("t")), derived_trace_id("s", Some("t")));
        assert_ne!(derived_trace_id("s", Some("t")), derived_trace_id("s", None));
        assert_ne!(derived_trace_id("s", Some("t")), derived_trace_id("s", Some("u")));
        // Length prefixes keep ("ab","c") and ("a","bc") apart.
        assert_ne!(node_span_id("ab", "c"), node_span_id("a", "bc"));
        assert_ne!(node_span_id("s", "x"), record_span_id("s", "x"));
        assert_ne!(node_span_id("s", "x"), SpanId::INVALID);
    }

    #[test]
    fn known_vectors() {
        // Pinned (and reproducible outside Rust: SHA-256 over big-endian u64 length +
        // bytes of each part) so an accidental change of the derivation, which would split
        // traces between exporter versions, fails loudly.
        assert_eq!(format!("{:016x}", node_span_id("dev-fixture-session", "llm:call-1")), "3db1419e8869c311");
        assert_eq!(
            format!("{:032x}", derived_trace_id("dev-fixture-session", Some("turn-dev-1"))),
            "ee4c37c4ed0856a133fb9a4d0f17f9ab"
        );
        assert_eq!(
            format!("{:016x}", record_span_id("dev-fixture-session", "28cecaf2-c098-4bd9-9099-0b11472679e1")),
            "c404d8ea23e8afb2"
        );
    }
}
