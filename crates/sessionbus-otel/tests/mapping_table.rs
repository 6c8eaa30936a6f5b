//! One row per span shape; together the rows feed every `TraceEvent` kind and check span
//! name, kind, parent, key attributes, status and events.

mod common;

use std::collections::BTreeSet;

use common::*;
use opentelemetry::trace::{SpanId, SpanKind, Status};
use serde_json::{Value as Json, json};
use sessionbus_api::{TraceEvent, TraceRecord};
use sessionbus_otel::{SpanAssembler, TraceParent};

/// Every kind, named through an exhaustive match: a new `TraceEvent` variant fails to
/// compile here until the table covers it.
fn kind_name(event: &TraceEvent) -> &str {
    match event {
        TraceEvent::SessionStarted { .. } => "session_started",
        TraceEvent::TurnStarted { .. } => "turn_started",
        TraceEvent::PromptBuilt { .. } => "prompt_built",
        TraceEvent::LlmCallStarted { .. } => "llm_call_started",
        TraceEvent::LlmCallCompleted { .. } => "llm_call_completed",
        TraceEvent::LlmCallFailed { .. } => "llm_call_failed",
        TraceEvent::LlmProviderEvent { .. } => "llm_provider_event",
        TraceEvent::LlmStreamEvent { .. } => "llm_stream_event",
        TraceEvent::ProviderRequest { .. } => "provider_request",
        TraceEvent::ProviderStreamEvent { .. } => "provider_stream_event",
        TraceEvent::RuntimeStreamEvent { .. } => "runtime_stream_event",
        TraceEvent::EffectEnvelopeDiff { .. } => "effect_envelope_diff",
        TraceEvent::LashlangExecution { .. } => "lashlang_execution",
        TraceEvent::Other(_) => "(another kind)",
        TraceEvent::ToolCallStarted { .. } => "tool_call_started",
        TraceEvent::ToolCallCompleted { .. } => "tool_call_completed",
        TraceEvent::ProtocolStep { .. } => "protocol_step",
        TraceEvent::TokenUsage { .. } => "token_usage",
        TraceEvent::TurnCompleted { .. } => "turn_completed",
        TraceEvent::Custom { .. } => "custom",
    }
}

const ALL_KINDS: [&str; 20] = [
    "session_started",
    "turn_started",
    "prompt_built",
    "llm_call_started",
    "llm_call_completed",
    "llm_call_failed",
    "llm_provider_event",
    "llm_stream_event",
    "provider_request",
    "provider_stream_event",
    "runtime_stream_event",
    "effect_envelope_diff",
    "lashlang_execution",
    "(another kind)",
    "tool_call_started",
    "tool_call_completed",
    "protocol_step",
    "token_usage",
    "turn_completed",
    "custom",
];

const ORIGIN: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[derive(Debug)]
enum Parent {
    Root,
    Node(&'static str),
    Remote(&'static str),
}

struct Case {
    title: &'static str,
    records: Vec<TraceRecord>,
    origin: Option<&'static str>,
    name: &'static str,
    kind: SpanKind,
    parent: Parent,
    attrs: Vec<(&'static str, Json)>,
    error: Option<&'static str>,
    events: Vec<&'static str>,
}

fn llm_ctx(call: &str) -> Json {
    let mut context = turn_ctx(&format!("llm:{call}"), Some(TURN_NODE));
    context["llm_call_id"] = json!(call);
    context
}

fn tool_ctx(call: &str) -> Json {
    turn_ctx(&format!("tool:{call}"), Some(TURN_NODE))
}

fn llm_started(id: &str, ms: u64, call: &str) -> TraceRecord {
    record(
        id,
        ms,
        llm_ctx(call),
        json!({"type": "llm_call_started", "request": {"model": "anthropic/claude-sonnet-4.6", "stream": true}}),
    )
}

fn tool_completed(id: &str, ms: u64, call: &str, status: &str) -> TraceRecord {
    record(
        id,
        ms,
        tool_ctx(call),
        json!({"type": "tool_call_completed", "call_id": call, "name": "web_search", "args": {"q": "x"},
               "output": {"outcome": {"status": status}}, "duration_ms": 7}),
    )
}

fn cases() -> Vec<Case> {
    let turn_started = || record("ts", 0, turn_ctx(TURN_NODE, Some("session:s1")), json!({"type": "turn_started"}));
    let tool_started = |call: &str| {
        record(
            "tcs",
            10,
            tool_ctx(call),
            json!({"type": "tool_call_started", "call_id": call, "name": "web_search", "args": {"q": "x"}}),
        )
    };
    vec![
        Case {
            title: "session_started is an instant root span",
            records: vec![record(
                "ss",
                0,
                json!({"session_id": SESSION, "graph_node_id": "session:s1"}),
                json!({"type": "session_started", "agent": "main"}),
            )],
            origin: None,
            name: "lash.session",
            kind: SpanKind::Internal,
            parent: Parent::Root,
            attrs: vec![
                ("lash.context.session_id", json!(SESSION)),
                ("lash.context.graph_node_id", json!("session:s1")),
                ("lash.session.agent", json!("main")),
                ("lash.record.type", json!("session_started")),
            ],
            error: None,
            events: vec![],
        },
        Case {
            title: "turn_started..turn_completed(completed) is an ok lash.turn",
            records: vec![
                turn_started(),
                record(
                    "tc",
                    50,
                    turn_ctx(TURN_NODE, Some("session:s1")),
                    json!({"type": "turn_completed", "status": "completed", "done_reason": "finished"}),
                ),
            ],
            origin: None,
            name: "lash.turn",
            kind: SpanKind::Internal,
            parent: Parent::Root,
            attrs: vec![
                ("lash.context.turn_id", json!(TURN)),
                ("lash.context.turn_index", json!(0)),
                ("lash.turn.status", json!("completed")),
                ("lash.turn.done_reason", json!("finished")),
            ],
            error: None,
            events: vec![],
        },
        Case {
            title: "a failed turn is an error; with a traceparent the turn hangs under its remote parent",
            records: vec![
                turn_started(),
                record(
                    "tc",
                    50,
                    turn_ctx(TURN_NODE, Some("session:s1")),
                    json!({"type": "turn_completed", "status": "failed", "done_reason": "tool_error"}),
                ),
            ],
            origin: Some(ORIGIN),
            name: "lash.turn",
            kind: SpanKind::Internal,
            parent: Parent::Remote("00f067aa0ba902b7"),
            attrs: vec![
                ("lash.turn.status", json!("failed")),
                ("lash.turn.done_reason", json!("tool_error")),
                ("error.type", json!("turn_failed")),
            ],
            error: Some("turn ended with status failed"),
            events: vec![],
        },
        Case {
            title: "prompt_built is an instant span under its turn",
            records: vec![record(
                "pb",
                5,
                turn_ctx(TURN_NODE, None),
                json!({"type": "prompt_built", "prompt_hash": "abc", "prompt_chars": 512}),
            )],
            origin: None,
            name: "lash.prompt",
            kind: SpanKind::Internal,
            parent: Parent::Node(TURN_NODE),
            attrs: vec![
                ("lash.prompt.hash", json!("abc")),
                ("lash.prompt.chars", json!(512)),
                ("lash.record.id", json!("pb")),
                ("lash.record.type", json!("prompt_built")),
            ],
            error: None,
            events: vec![],
        },
        Case {
            title: "llm_call_started..llm_call_completed is a client lash.llm with gen_ai attributes",
            records: vec![
                llm_started("ls", 10, "c1"),
                record(
                    "lc",
                    40,
                    llm_ctx("c1"),
                    json!({"type": "llm_call_completed",
                           "response": {"text": "hi", "duration_ms": 30, "terminal_reason": "tool_use"},
                           "usage": {"input_tokens": 120, "output_tokens": 30, "cache_read_input_tokens": 4}}),
                ),
            ],
            origin: None,
            name: "lash.llm",
            kind: SpanKind::Client,
            parent: Parent::Node(TURN_NODE),
            attrs: vec![
                ("lash.context.llm_call_id", json!("c1")),
                ("gen_ai.operation.name", json!("chat")),
                ("gen_ai.request.model", json!("anthropic/claude-sonnet-4.6")),
                ("gen_ai.system", json!("anthropic")),
                ("gen_ai.usage.input_tokens", json!(120)),
                ("gen_ai.usage.output_tokens", json!(30)),
                ("gen_ai.response.finish_reasons", json!(["tool_use"])),
                ("lash.usage.cache_read_input_tokens", json!(4)),
                ("lash.llm.duration_ms", json!(30)),
            ],
            error: None,
            events: vec![],
        },
        Case {
            title: "llm_call_failed ends lash.llm with error status",
            records: vec![
                llm_started("ls", 10, "c2"),
                record(
                    "lf",
                    40,
                    llm_ctx("c2"),
                    json!({"type": "llm_call_failed", "error": {"message": "upstream timeout", "retryable": true, "code": "504"}}),
                ),
            ],
            origin: None,
            name: "lash.llm",
            kind: SpanKind::Client,
            parent: Parent::Node(TURN_NODE),
            attrs: vec![
                ("gen_ai.request.model", json!("anthropic/claude-sonnet-4.6")),
                ("error.type", json!("504")),
                ("lash.llm.error.message", json!("upstream timeout")),
                ("lash.llm.error.retryable", json!(true)),
            ],
            error: Some("upstream timeout"),
            events: vec![],
        },
        Case {
            title: "provider and stream events are span events on the open llm span",
            records: vec![
                llm_started("ls", 10, "c3"),
                record("pe", 12, llm_ctx("c3"), json!({"type": "llm_provider_event", "event": "retry", "attempt": 2})),
                record("se", 14, llm_ctx("c3"), json!({"type": "llm_stream_event", "event": "delta", "chars": 5})),
                record("lc", 20, llm_ctx("c3"), json!({"type": "llm_call_completed"})),
            ],
            origin: None,
            name: "lash.llm",
            kind: SpanKind::Client,
            parent: Parent::Node(TURN_NODE),
            attrs: vec![("gen_ai.system", json!("anthropic"))],
            error: None,
            events: vec!["lash.llm.provider_event", "lash.llm.stream_event"],
        },
        Case {
            title: "lash's provider requests and provider and runtime stream events are span events on the open llm span",
            records: vec![
                llm_started("ls", 10, "c4"),
                record(
                    "pr",
                    11,
                    llm_ctx("c4"),
                    json!({"type": "provider_request",
                    "event": {"provider": "openai", "sequence": 1, "elapsed_ms": 1, "endpoint": "/v1/chat/completions",
                              "body_len": 2, "body_sha256": "ab"}}),
                ),
                record(
                    "ps",
                    12,
                    llm_ctx("c4"),
                    json!({"type": "provider_stream_event",
                    "event": {"provider": "openai", "sequence": 2, "elapsed_ms": 2, "event_name": "delta",
                              "raw_len": 1, "raw_sha256": "cd"}}),
                ),
                record(
                    "rs",
                    13,
                    llm_ctx("c4"),
                    json!({"type": "runtime_stream_event",
                    "event": {"sequence": 3, "elapsed_ms": 3, "event_name": "text_delta"}}),
                ),
                record("lc", 20, llm_ctx("c4"), json!({"type": "llm_call_completed"})),
            ],
            origin: None,
            name: "lash.llm",
            kind: SpanKind::Client,
            parent: Parent::Node(TURN_NODE),
            attrs: vec![("gen_ai.system", json!("anthropic"))],
            error: None,
            events: vec!["lash.provider_request", "lash.provider_stream_event", "lash.runtime_stream_event"],
        },
        Case {
            title: "effect_envelope_diff is an instant span",
            records: vec![record(
                "ed",
                9,
                turn_ctx(TURN_NODE, None),
                json!({"type": "effect_envelope_diff", "event": {"recorded_envelope_hash": "h1",
                       "reconstructed_envelope_hash": "h2", "divergent_paths": []}}),
            )],
            origin: None,
            name: "lash.effect_envelope_diff",
            kind: SpanKind::Internal,
            parent: Parent::Node(TURN_NODE),
            attrs: vec![
                ("lash.event.recorded_envelope_hash", json!("h1")),
                ("lash.record.type", json!("effect_envelope_diff")),
            ],
            error: None,
            events: vec![],
        },
        Case {
            title: "lashlang_execution is an instant span",
            records: vec![record(
                "le",
                9,
                turn_ctx(TURN_NODE, None),
                json!({"type": "lashlang_execution", "event": {"kind": "node_started", "node_id": "n1"}}),
            )],
            origin: None,
            name: "lash.lashlang_execution",
            kind: SpanKind::Internal,
            parent: Parent::Node(TURN_NODE),
            attrs: vec![("lash.event.kind", json!("node_started")), ("lash.record.type", json!("lashlang_execution"))],
            error: None,
            events: vec![],
        },
        Case {
            title: "a kind sessionbus does not name is carried: an instant lash.event span with its type",
            records: vec![record("fk", 9, turn_ctx(TURN_NODE, None), json!({"type": "future_kind", "level": 3}))],
            origin: None,
            name: "lash.event",
            kind: SpanKind::Internal,
            parent: Parent::Node(TURN_NODE),
            attrs: vec![("lash.event.level", json!(3)), ("lash.record.type", json!("future_kind"))],
            error: None,
            events: vec![],
        },
        Case {
            title: "tool_call_started..tool_call_completed(success) is an ok lash.tool",
            records: vec![tool_started("tc1"), tool_completed("tce", 17, "tc1", "success")],
            origin: None,
            name: "lash.tool",
            kind: SpanKind::Internal,
            parent: Parent::Node(TURN_NODE),
            attrs: vec![
                ("lash.tool.name", json!("web_search")),
                ("lash.tool.call_id", json!("tc1")),
                ("lash.tool.duration_ms", json!(7)),
                ("lash.tool.status", json!("success")),
                ("gen_ai.tool.name", json!("web_search")),
            ],
            error: None,
            events: vec![],
        },
        Case {
            title: "a tool whose outcome is not success is an error",
            records: vec![tool_started("tc2"), tool_completed("tce", 17, "tc2", "failure")],
            origin: None,
            name: "lash.tool",
            kind: SpanKind::Internal,
            parent: Parent::Node(TURN_NODE),
            attrs: vec![("lash.tool.status", json!("failure")), ("error.type", json!("tool_failure"))],
            error: Some("tool web_search ended with status failure"),
            events: vec![],
        },
        Case {
            title: "protocol_step is an instant span",
            records: vec![record(
                "ps",
                8,
                turn_ctx(TURN_NODE, None),
                json!({"type": "protocol_step", "step": "plan", "index": 1}),
            )],
            origin: None,
            name: "lash.protocol_step",
            kind: SpanKind::Internal,
            parent: Parent::Node(TURN_NODE),
            attrs: vec![("lash.protocol_step.step", json!("plan")), ("lash.protocol_step.index", json!(1))],
            error: None,
            events: vec![],
        },
        Case {
            title: "token_usage is an instant span with gen_ai usage",
            records: vec![record(
                "tu",
                45,
                turn_ctx(TURN_NODE, None),
                json!({"type": "token_usage", "usage": {"input_tokens": 120, "output_tokens": 30},
                       "cumulative": {"input_tokens": 300, "output_tokens": 90}}),
            )],
            origin: None,
            name: "lash.token_usage",
            kind: SpanKind::Internal,
            parent: Parent::Node(TURN_NODE),
            attrs: vec![
                ("gen_ai.usage.input_tokens", json!(120)),
                ("gen_ai.usage.output_tokens", json!(30)),
                ("lash.usage.cumulative.input_tokens", json!(300)),
                ("lash.usage.cumulative.output_tokens", json!(90)),
            ],
            error: None,
            events: vec![],
        },
        Case {
            title: "custom is an instant span with its name and payload",
            records: vec![record(
                "cu",
                46,
                turn_ctx(TURN_NODE, None),
                json!({"type": "custom", "name": "note", "payload": {"k": "v"}}),
            )],
            origin: Some(ORIGIN),
            name: "lash.custom",
            kind: SpanKind::Internal,
            parent: Parent::Node(TURN_NODE),
            attrs: vec![("lash.custom.name", json!("note")), ("lash.custom.payload", json!(r#"{"k":"v"}"#))],
            error: None,
            events: vec![],
        },
    ]
}

#[test]
fn table_covers_every_trace_event_kind() {
    let cases = cases();
    let covered: BTreeSet<&str> = cases.iter().flat_map(|c| c.records.iter().map(|r| kind_name(&r.event))).collect();
    let all: BTreeSet<&str> = ALL_KINDS.into_iter().collect();
    assert_eq!(covered, all);
}

#[test]
fn every_kind_maps_to_the_lash_span() {
    for case in cases() {
        let title = case.title;
        let origin = case.origin.map(|o| TraceParent::parse(o).unwrap());
        let mut assembler = SpanAssembler::new();
        for record in &case.records {
            assembler.push(record, origin.as_ref()).unwrap_or_else(|e| panic!("{title}: {e}"));
        }
        let spans = assembler.take_finished();
        assert_eq!(spans.len(), 1, "{title}: {spans:?}");
        assert_eq!(assembler.open_spans().count(), 0, "{title}: spans left open");
        let span = &spans[0];
        assert_eq!(span.name, case.name, "{title}");
        assert_eq!(span.span_kind, case.kind, "{title}");
        let (parent, remote) = match case.parent {
            Parent::Root => (SpanId::INVALID, false),
            Parent::Node(n) => (node(n), false),
            Parent::Remote(hex) => (SpanId::from_hex(hex).unwrap(), true),
        };
        assert_eq!(span.parent_span_id, parent, "{title}: parent {:?}", case.parent);
        assert_eq!(span.parent_span_is_remote, remote, "{title}");
        if let Some(origin) = origin {
            assert_eq!(span.span_context.trace_id(), origin.trace_id, "{title}: trace from traceparent");
        }
        assert!(span.span_context.is_sampled(), "{title}");
        assert_eq!(attr_json(span, "lash.context.session_id"), Some(json!(SESSION)), "{title}");
        for (key, expected) in &case.attrs {
            assert_eq!(attr_json(span, key).as_ref(), Some(expected), "{title}: attribute {key}");
        }
        match case.error {
            Some(description) => assert_eq!(span.status, Status::error(description), "{title}"),
            None => assert_eq!(span.status, Status::Unset, "{title}"),
        }
        let events: Vec<&str> = span.events.iter().map(|e| e.name.as_ref()).collect();
        assert_eq!(events, case.events, "{title}");
        let first = case.records.first().unwrap();
        let last = case.records.last().unwrap();
        assert_eq!(span.start_time, at(ms_of(first)), "{title}: start at the first record");
        assert_eq!(span.end_time, at(ms_of(last)), "{title}: end at the last record");
    }
}

#[test]
fn llm_events_carry_their_fields_and_times() {
    let mut assembler = SpanAssembler::new();
    for record in [
        llm_started("ls", 10, "c3"),
        record("pe", 12, llm_ctx("c3"), json!({"type": "llm_provider_event", "event": "retry", "attempt": 2})),
        record("lc", 20, llm_ctx("c3"), json!({"type": "llm_call_completed"})),
    ] {
        assembler.push(&record, None).unwrap();
    }
    let spans = assembler.take_finished();
    let event = &spans[0].events[0];
    assert_eq!(event.timestamp, at(12));
    assert_eq!(attr(&event.attributes, "lash.event.event").map(value_json), Some(json!("retry")));
    assert_eq!(attr(&event.attributes, "lash.event.attempt").map(value_json), Some(json!(2)));
    assert_eq!(attr(&event.attributes, "lash.record.id").map(value_json), Some(json!("pe")));
    assert!(attr(&event.attributes, "lash.context.session_id").is_none(), "context stays on the span");
}

fn ms_of(record: &TraceRecord) -> u64 {
    let (secs, rest) = record.timestamp["2026-01-01T00:00:".len()..].split_once('.').unwrap();
    secs.parse::<u64>().unwrap() * 1000 + rest[..3].parse::<u64>().unwrap()
}
