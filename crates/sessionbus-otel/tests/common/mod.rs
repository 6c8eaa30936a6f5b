//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanId, Status};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::trace::SpanData;
use serde_json::{Value as Json, json};
use sessionbus_api::TraceRecord;
use sessionbus_otel::node_span_id;

pub const SESSION: &str = "s1";
pub const TURN: &str = "t1";
pub const TURN_NODE: &str = "turn:s1:t1";

/// The instant `ms` milliseconds after 2026-01-01T00:00:00Z.
pub fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_767_225_600) + Duration::from_millis(ms)
}

/// RFC 3339 for `at(ms)` (ms below one minute).
pub fn stamp(ms: u64) -> String {
    assert!(ms < 60_000);
    format!("2026-01-01T00:00:{:02}.{:03}000+00:00", ms / 1000, ms % 1000)
}

/// A record of `event` (a JSON object with `type` and fields) at `ms`, with `context`.
pub fn record(id: &str, ms: u64, context: Json, event: Json) -> TraceRecord {
    let mut value = json!({ "schema_version": 2, "id": id, "timestamp": stamp(ms), "context": context });
    for (k, v) in event.as_object().expect("event object") {
        value[k] = v.clone();
    }
    serde_json::from_value(value).expect("valid trace record")
}

/// The context of a record in turn t1 of session s1 describing `node` under `parent`.
pub fn turn_ctx(node: &str, parent: Option<&str>) -> Json {
    let mut context = json!({ "session_id": SESSION, "turn_id": TURN, "turn_index": 0, "graph_node_id": node });
    if let Some(parent) = parent {
        context["parent_graph_node_id"] = json!(parent);
    }
    context
}

/// The span id of a node of session s1.
pub fn node(node: &str) -> SpanId {
    node_span_id(SESSION, node)
}

/// The fixture lash wrote.
pub fn fixture_records() -> Vec<TraceRecord> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../sessionbus-api/tests/fixtures/lash/trace_records.jsonl");
    std::fs::read_to_string(path)
        .expect("fixture")
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).expect("fixture record"))
        .collect()
}

/// The attribute `key` of `attributes`.
pub fn attr<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| &kv.value)
}

/// The attribute `key` of `span` as JSON (strings, numbers, bools, string arrays).
pub fn attr_json(span: &SpanData, key: &str) -> Option<Json> {
    attr(&span.attributes, key).map(value_json)
}

/// An attribute value as JSON.
pub fn value_json(value: &Value) -> Json {
    match value {
        Value::Bool(b) => json!(b),
        Value::I64(i) => json!(i),
        Value::F64(f) => json!(f),
        Value::String(s) => json!(s.as_str()),
        Value::Array(opentelemetry::Array::String(list)) => {
            Json::Array(list.iter().map(|s| json!(s.as_str())).collect())
        }
        other => json!(other.to_string()),
    }
}

/// The only span named `name`.
pub fn only<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    let found: Vec<_> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "expected one {name} span, got {}", found.len());
    found[0]
}

/// Whether `status` is an error.
pub fn is_error(status: &Status) -> bool {
    matches!(status, Status::Error { .. })
}
