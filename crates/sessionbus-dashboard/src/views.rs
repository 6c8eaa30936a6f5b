//! What the page is sent: small projections of the bus's records and events (pure).
//!
//! The page never sees a stored record whole. Each view keeps the fields a page draws
//! (ids, counts, states, a node's text) and nothing else, so whatever a record may carry
//! (policies, bindings, tool arguments) stays on the server. Text from models and tools
//! is sent as plain JSON strings; the page puts it into the DOM with `textContent`.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sessionbus_api::{SessionGraph, SessionNode, SessionNodeBody, TokenUsage, ToolState, TurnSummary, member_names};
use sessionbus_nats::wire::GraphPage;
use sessionbus_nats::{EventKind, LiveOutput, SessionEvent};

/// The most characters of a node's text the page is sent.
pub const NODE_TEXT_LIMIT: usize = 240;

/// The most characters of one live event's text (a delta, an error) the page is sent.
pub const LIVE_TEXT_LIMIT: usize = 4096;

/// One graph node as the page draws it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NodeView {
    /// The node's id.
    pub id: String,
    /// The node it follows.
    pub parent: Option<String>,
    /// What it is: the plugin type, or the history event's tag (`Conversation`, ...).
    pub kind: String,
    /// Its first text, cut at [`NODE_TEXT_LIMIT`] characters.
    pub text: String,
}

/// The view of one node.
pub fn node_view(node: &SessionNode) -> NodeView {
    let (kind, text) = match &node.body {
        SessionNodeBody::Plugin { plugin_type, body } => (plugin_type.clone(), first_text(body)),
        SessionNodeBody::Event { event } => {
            let tag = event.as_object().and_then(|o| o.keys().next().cloned()).unwrap_or_else(|| "event".into());
            (tag, first_text(event))
        }
    };
    NodeView {
        id: node.node_id.clone(),
        parent: node.parent_node_id.clone(),
        kind,
        text: text.map(|t| t.chars().take(NODE_TEXT_LIMIT).collect()).unwrap_or_default(),
    }
}

/// The fields of a snapshot reply the session page uses, read in one pass: the policy,
/// agent frames and every other field are skipped unread (`SessionSnapshot` would keep
/// them, and buffer the whole reply, graph included, to do so).
#[derive(Debug, Deserialize)]
pub struct SnapshotHead {
    /// The session's id.
    pub session_id: String,
    /// The graph's first page and the leaf.
    pub session_graph: SessionGraph,
    /// Turns committed so far.
    pub turn_index: u64,
    /// Token usage summed over committed turns.
    pub token_usage: TokenUsage,
    /// The tool state revision the snapshot was taken at.
    #[serde(default)]
    pub tool_state_generation: Option<u64>,
    /// Where the next graph page starts (`wire::GRAPH_NEXT_SEQ`); `None` when the first
    /// page is the whole graph.
    #[serde(default)]
    pub graph_next_seq: Option<u64>,
    /// The node count of the graph the first page was cut from (`wire::GRAPH_AS_OF`).
    #[serde(default)]
    pub graph_as_of: Option<u64>,
}

/// What the session page is sent: counters, leaf, graph size, and the graph's first
/// page as node views; the rest is read from `next` up to `as_of` (both null when the
/// first page is the whole graph).
#[derive(Debug, Serialize)]
pub struct SessionView {
    /// The session's id.
    pub session_id: String,
    /// Turns committed so far.
    pub turn_index: u64,
    /// Input and output tokens, summed.
    pub tokens: u64,
    /// The leaf node's id.
    pub leaf: Option<String>,
    /// How many nodes the graph has.
    pub graph_size: u64,
    /// The tool state revision.
    pub tool_state_generation: Option<u64>,
    /// The first page of the graph.
    pub nodes: Vec<NodeView>,
    /// Where the next page starts.
    pub next: Option<u64>,
    /// The node count the pages stop at.
    pub as_of: Option<u64>,
}

/// The view of a snapshot's head.
pub fn session_view(head: SnapshotHead) -> SessionView {
    let nodes: Vec<NodeView> = head.session_graph.nodes.iter().map(node_view).collect();
    SessionView {
        session_id: head.session_id,
        turn_index: head.turn_index,
        tokens: head.token_usage.input_tokens + head.token_usage.output_tokens,
        leaf: head.session_graph.leaf_node_id,
        graph_size: head.graph_as_of.unwrap_or(nodes.len() as u64),
        tool_state_generation: head.tool_state_generation,
        nodes,
        next: head.graph_next_seq,
        as_of: head.graph_as_of,
    }
}

/// One graph page as the page draws it: node views, and where the next page starts.
#[derive(Debug, Serialize)]
pub struct GraphPageView {
    /// The nodes.
    pub nodes: Vec<NodeView>,
    /// The `after` of the next page; `None` for the last.
    pub next: Option<u64>,
}

/// The view of a graph page.
pub fn graph_page_view(page: &GraphPage) -> GraphPageView {
    GraphPageView { nodes: page.nodes.iter().map(node_view).collect(), next: page.next_seq }
}

/// Object keys whose text is shown before any other's.
const TEXT_KEYS: [&str; 3] = ["text", "content", "message"];
/// Object keys whose strings are labels, not text.
const LABEL_KEYS: [&str; 4] = ["id", "kind", "type", "role"];

/// The first string in `value`, depth first, trying [`TEXT_KEYS`] before other keys
/// and skipping ids and labels ([`LABEL_KEYS`], `*_id`); object keys are not text.
fn first_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => items.iter().find_map(first_text),
        Value::Object(map) => TEXT_KEYS
            .iter()
            .filter_map(|key| map.get(*key))
            .chain(
                map.iter()
                    .filter(|(key, _)| !LABEL_KEYS.contains(&key.as_str()) && !key.ends_with("_id"))
                    .map(|(_, value)| value),
            )
            .find_map(first_text),
        _ => None,
    }
}

/// The trace id of a W3C `traceparent` (`00-<trace id>-<span id>-<flags>`); `None` when
/// it is not one.
pub fn trace_id(traceparent: &str) -> Option<String> {
    let mut parts = traceparent.split('-');
    let (_version, id) = (parts.next()?, parts.next()?);
    let valid = id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && id.bytes().any(|b| b != b'0');
    valid.then(|| id.to_ascii_lowercase())
}

/// A session's row from a meta record (an event's payload), shaped as the registry's
/// `SessionSummary` is (without `last_activity` and `turn_running`, which the page keeps).
pub fn meta_view(session_id: &str, meta: &Value) -> Value {
    let usage = &meta["token_usage"];
    let tokens = usage["input_tokens"].as_u64().unwrap_or(0) + usage["output_tokens"].as_u64().unwrap_or(0);
    let closed = meta["closed"].as_bool().unwrap_or(false);
    json!({
        "session_id": session_id,
        "parent_session_id": meta["handle"]["parent_session_id"].as_str(),
        "status": if closed { "closed" } else { "open" },
        "turn_index": meta["turn_index"].as_u64().unwrap_or(0),
        "tokens": tokens,
        "created_at": meta["created_at"].as_str(),
    })
}

/// A lease record's view: `free`, `closed`, or `held` with the holder, the turn, and
/// when it was taken or renewed by the record's own clock (`expires_at_ms - ttl_ms`, the
/// holder's clock; `null` for records of older workers, which have no `ttl_ms`). The
/// same shape as the `lease` of the `turns` op's first page (`TurnLease`).
pub fn lease_view(lease: &Value) -> Value {
    let ttl_ms = lease["ttl_ms"].as_u64().filter(|ttl| *ttl > 0);
    let renewed_at_ms = lease["expires_at_ms"].as_u64().zip(ttl_ms).and_then(|(expires, ttl)| expires.checked_sub(ttl));
    json!({
        "state": lease["state"].as_str().unwrap_or("free"),
        "holder": lease["holder"].as_str(),
        "turn_id": lease["turn_id"].as_str(),
        "ttl_ms": ttl_ms,
        "renewed_at_ms": renewed_at_ms,
    })
}

/// A turn ledger record's view: status, and for a completed turn its outcome and tokens.
pub fn turn_view(turn_id: &str, ledger: &Value) -> Value {
    let result = &ledger["result"];
    let usage = &result["token_usage"];
    let outcome = match &result["outcome"] {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.keys().next().cloned(),
        _ => None,
    };
    json!({
        "turn_id": turn_id,
        "status": ledger["status"].as_str().unwrap_or("unknown"),
        "outcome": outcome,
        "tokens": usage["input_tokens"].as_u64().unwrap_or(0) + usage["output_tokens"].as_u64().unwrap_or(0),
        "output": first_text(&result["assistant_output"]).map(|t| t.chars().take(NODE_TEXT_LIMIT).collect::<String>()),
        "error": ledger["error"]["message"].as_str().or_else(|| ledger["error"].as_str()),
        "trace_id": ledger["traceparent"].as_str().and_then(trace_id),
        "worker": ledger["worker"].as_str(),
        "duration_ms": result["execution"]["duration_ms"].as_u64(),
    })
}

/// A turn of the session's history (the bus's `turns` op) as the page draws it: the
/// fields of [`turn_view`], with when it started.
pub fn history_turn_view(turn: &TurnSummary) -> Value {
    json!({
        "turn_id": turn.turn_id,
        "status": turn.status,
        "outcome": turn.outcome,
        "tokens": turn.tokens(),
        "error": turn.error,
        "trace_id": turn.trace_id,
        "worker": turn.worker,
        "duration_ms": turn.duration_ms,
        "started_at": turn.started_at,
    })
}

/// What the page is pushed for one event; `None` for events it does not draw (trace
/// records) and for payloads that are not the record their subject names.
pub fn event_view(event: &SessionEvent) -> Option<Value> {
    let payload: Value =
        if event.payload.is_empty() { Value::Null } else { serde_json::from_slice(&event.payload).ok()? };
    let (kind, view) = match &event.kind {
        EventKind::Meta => ("meta", meta_view(&event.session_id, &payload)),
        EventKind::Lease => ("lease", lease_view(&payload)),
        EventKind::Turn { turn_id } => ("turn", turn_view(turn_id, &payload)),
        EventKind::Graph => {
            let nodes: Vec<SessionNode> = serde_json::from_value(payload["nodes"].clone()).ok()?;
            let nodes: Vec<NodeView> = nodes.iter().map(node_view).collect();
            ("graph", json!({ "nodes": nodes, "leaf": payload["leaf"].as_str() }))
        }
        EventKind::Tools => {
            let state: ToolState =
                if payload.is_null() { ToolState::default() } else { serde_json::from_value(payload).ok()? };
            ("tools", json!({ "generation": event.sequence, "members": member_names(&state) }))
        }
        // The turn's ledger shows the cancelled outcome when it commits.
        EventKind::Trace | EventKind::Cancel { .. } => return None,
    };
    Some(json!({ "session_id": event.session_id, "kind": kind, "sequence": event.sequence, "view": view }))
}

/// What the page is pushed for one live event of a running turn (decision 0018): a text
/// delta (`assistant_prose_delta`, or a plain `text_delta`), a tool's start or end (its
/// name, and the end's duration), or an executor error; `None` for every other event
/// (reasoning, usage, a model request starting, ...), which the page does not draw.
/// Tool arguments and outputs are not sent.
pub fn live_view(session_id: &str, output: &LiveOutput) -> Option<Value> {
    let event = &output.live.event;
    let cut = |text: &str| text.chars().take(LIVE_TEXT_LIMIT).collect::<String>();
    let view = match event["type"].as_str()? {
        "assistant_prose_delta" | "text_delta" => json!({ "type": "text", "text": cut(event["text"].as_str()?) }),
        "tool_call_started" => json!({ "type": "tool_start", "name": cut(event["name"].as_str()?) }),
        "tool_call_completed" => json!({
            "type": "tool_end", "name": cut(event["name"].as_str()?), "duration_ms": event["duration_ms"].as_u64(),
        }),
        "error" => json!({ "type": "error", "text": cut(event["message"].as_str()?) }),
        _ => return None,
    };
    Some(json!({
        "session_id": session_id, "kind": "live", "turn_id": output.turn_id, "seq": output.live.seq, "view": view,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(body: Value) -> SessionNode {
        let mut value = json!({ "node_id": "n2", "parent_node_id": "n1", "timestamp": "2026-01-01T00:00:00Z" });
        value.as_object_mut().unwrap().extend(body.as_object().unwrap().clone());
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_node_is_sent_as_its_kind_and_first_text_only() {
        let table = [
            (
                json!({"kind": "event", "event": {"Conversation": {"role": "user", "content": "<script>x()</script>"}}}),
                "Conversation",
                "<script>x()</script>",
            ),
            (json!({"kind": "plugin", "plugin_type": "note", "body": {"a": "first", "text": "hi"}}), "note", "hi"),
            (json!({"kind": "plugin", "plugin_type": "note", "body": {"n": 1}}), "note", ""),
            (
                json!({"kind": "event", "event": {"Conversation": {"id": "m1", "parts": [{"kind": "text", "value": "hello"}], "tool_call_id": "c"}}}),
                "Conversation",
                "hello",
            ),
        ];
        for (body, kind, text) in table {
            let view = node_view(&node(body));
            assert_eq!((view.kind.as_str(), view.text.as_str()), (kind, text));
            assert_eq!(view.parent.as_deref(), Some("n1"));
        }
    }

    #[test]
    fn a_snapshot_head_is_sent_without_policy_frames_or_unknown_fields() {
        let node =
            json!({"node_id": "n1", "timestamp": "t", "kind": "plugin", "plugin_type": "note", "body": {"text": "hi"}});
        let mut reply = json!({
            "session_id": "s", "policy": {"api_key": "sk-x"}, "agent_frames": [{"secret": "frame"}],
            "session_graph": {"nodes": [node], "leaf_node_id": "n1"}, "turn_index": 2,
            "token_usage": {"input_tokens": 1, "output_tokens": 2}, "tool_state_generation": 4,
            "protocol_turn_options": {"binding": "b"}, "checkpoint": {"state": "private"},
        });
        reply[sessionbus_nats::wire::GRAPH_NEXT_SEQ] = json!(1);
        reply[sessionbus_nats::wire::GRAPH_AS_OF] = json!(3);
        let head: SnapshotHead = serde_json::from_value(reply).unwrap();
        let sent = serde_json::to_value(session_view(head)).unwrap();
        assert_eq!(
            sent,
            json!({"session_id": "s", "turn_index": 2, "tokens": 3, "leaf": "n1", "graph_size": 3,
                   "tool_state_generation": 4, "next": 1, "as_of": 3,
                   "nodes": [{"id": "n1", "parent": null, "kind": "note", "text": "hi"}]})
        );
    }

    #[test]
    fn node_text_is_cut_at_the_limit() {
        let long = "é".repeat(NODE_TEXT_LIMIT + 10);
        let view = node_view(&node(json!({"kind": "plugin", "plugin_type": "t", "body": long})));
        assert_eq!(view.text.chars().count(), NODE_TEXT_LIMIT);
    }

    #[test]
    fn trace_ids_come_only_from_valid_traceparents() {
        let table = [
            ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", Some("4bf92f3577b34da6a3ce929d0e0e4736")),
            ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", None),
            ("00-xyz-00f067aa0ba902b7-01", None),
            ("garbage", None),
            ("", None),
        ];
        for (input, expected) in table {
            assert_eq!(trace_id(input).as_deref(), expected, "{input}");
        }
    }

    #[test]
    fn a_completed_turn_shows_outcome_tokens_and_trace() {
        let ledger = json!({
            "status": "completed",
            "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "input": {"secret": "not sent"},
            "result": {"outcome": {"finished": {}}, "token_usage": {"input_tokens": 3, "output_tokens": 4},
                       "assistant_output": {"text": "done"}, "state": {"policy": {"api_key": "sk-x"}}}
        });
        let view = turn_view("t1", &ledger);
        assert_eq!(view["status"], "completed");
        assert_eq!(view["outcome"], "finished");
        assert_eq!(view["tokens"], 7);
        assert_eq!(view["output"], "done");
        assert_eq!(view["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        let sent = view.to_string();
        assert!(!sent.contains("sk-x") && !sent.contains("not sent"), "{sent}");
    }

    #[test]
    fn a_turn_from_the_history_has_the_live_views_fields() {
        let ledger = json!({
            "status": "completed", "worker": "w1",
            "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "result": {"outcome": {"finished": {}}, "token_usage": {"input_tokens": 3, "output_tokens": 4},
                       "execution": {"duration_ms": 12}}
        });
        let live = turn_view("t1", &ledger);
        let summary = TurnSummary {
            status: sessionbus_api::TurnStatus::Completed,
            outcome: Some("finished".into()),
            duration_ms: Some(12),
            token_usage: TokenUsage { input_tokens: 3, output_tokens: 4, ..TokenUsage::default() },
            worker: Some("w1".into()),
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
            ..TurnSummary::running("t1", Some("2026-01-01T00:00:00.000000+00:00".into()))
        };
        let history = history_turn_view(&summary);
        for key in ["turn_id", "status", "outcome", "tokens", "trace_id", "worker", "duration_ms"] {
            assert_eq!(history[key], live[key], "{key}");
        }
        assert_eq!(history["started_at"], "2026-01-01T00:00:00.000000+00:00");
    }

    #[test]
    fn live_output_is_sent_as_deltas_and_tool_lines_without_arguments_or_outputs() {
        let long = "x".repeat(LIVE_TEXT_LIMIT + 10);
        let table = [
            (
                json!({"id": "a", "correlation_id": "c", "type": "assistant_prose_delta", "text": "<b>hi</b>"}),
                Some(json!({"type": "text", "text": "<b>hi</b>"})),
            ),
            (
                json!({"type": "text_delta", "text": long}),
                Some(json!({"type": "text", "text": "x".repeat(LIVE_TEXT_LIMIT)})),
            ),
            (
                json!({"type": "tool_call_started", "name": "search", "args": {"secret": "k"}}),
                Some(json!({"type": "tool_start", "name": "search"})),
            ),
            (
                json!({"type": "tool_call_completed", "name": "search", "args": {}, "output": "o", "duration_ms": 7}),
                Some(json!({"type": "tool_end", "name": "search", "duration_ms": 7})),
            ),
            (json!({"type": "error", "message": "boom"}), Some(json!({"type": "error", "text": "boom"}))),
            (json!({"type": "reasoning_delta", "text": "thinking"}), None),
            (json!({"type": "assistant_prose_delta", "text": 3}), None),
            (json!({"waiting_ms": 10}), None),
        ];
        for (event, expected) in table {
            let output =
                LiveOutput { turn_id: "t1".into(), live: sessionbus_nats::LiveEvent { seq: 4, event: event.clone() } };
            let view = live_view("s1", &output);
            let expected = expected
                .map(|view| json!({"session_id": "s1", "kind": "live", "turn_id": "t1", "seq": 4, "view": view}));
            assert_eq!(view, expected, "{event}");
        }
    }

    #[test]
    fn leases_and_metas_keep_only_what_is_drawn() {
        let held = json!({"state": "held", "holder": "w1", "turn_id": "t", "run_id": "r",
                          "expires_at_ms": 1_000_030_000u64, "ttl_ms": 30000});
        assert_eq!(
            lease_view(&held),
            json!({"state": "held", "holder": "w1", "turn_id": "t", "ttl_ms": 30000, "renewed_at_ms": 1_000_000_000u64})
        );
        let older = json!({"state": "held", "holder": "w1", "turn_id": "t", "run_id": "r", "expires_at_ms": 5});
        assert_eq!(lease_view(&older)["renewed_at_ms"], Value::Null, "no ttl_ms: no time");
        assert_eq!(lease_view(&json!({"state": "free"}))["holder"], Value::Null);
        let meta = json!({"handle": {"session_id": "s", "parent_session_id": "p", "policy": {"api_key": "sk"}},
                          "closed": false, "turn_index": 2, "created_at": "t0",
                          "token_usage": {"input_tokens": 1, "output_tokens": 2}});
        let view = meta_view("s", &meta);
        assert_eq!(view["tokens"], 3);
        assert_eq!(view["parent_session_id"], "p");
        assert!(!view.to_string().contains("sk"));
    }
}
