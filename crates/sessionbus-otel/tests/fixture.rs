//! The records lash wrote (`trace_records.jsonl`) become the expected span tree.

mod common;

use std::collections::HashSet;

use common::*;
use opentelemetry::trace::{SpanId, Status};
use opentelemetry_sdk::trace::SpanData;
use serde_json::json;
use sessionbus_otel::{Applied, SpanAssembler, TraceParent, derived_trace_id, node_span_id};

const SESSION: &str = "dev-fixture-session";
const TURN_NODE: &str = "turn:dev-fixture-session:turn-dev-1";

fn assemble(origin: Option<&TraceParent>) -> Vec<SpanData> {
    let mut assembler = SpanAssembler::new();
    for record in fixture_records() {
        assembler.push(&record, origin).unwrap();
    }
    assert_eq!(assembler.open_spans().count(), 0, "every long span of the fixture ends");
    assembler.take_finished()
}

fn llm_span<'a>(spans: &'a [SpanData], call: &str) -> &'a SpanData {
    spans
        .iter()
        .find(|s| s.name == "lash.llm" && attr_json(s, "lash.context.llm_call_id") == Some(json!(call)))
        .unwrap()
}

#[test]
fn fixture_becomes_the_lash_span_tree() {
    let spans = assemble(None);
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_ref()).collect();
    assert_eq!(
        names,
        [
            "lash.session",
            "lash.prompt",
            "lash.llm",
            "lash.tool",
            "lash.llm",
            "lash.token_usage",
            "lash.custom",
            "lash.turn"
        ],
        "spans come out in the order they finish"
    );
    let ids: HashSet<SpanId> = spans.iter().map(|s| s.span_context.span_id()).collect();
    assert_eq!(ids.len(), spans.len(), "span ids are unique");

    let session = only(&spans, "lash.session");
    let turn = only(&spans, "lash.turn");
    let turn_id = turn.span_context.span_id();
    let turn_trace = derived_trace_id(SESSION, Some("turn-dev-1"));

    assert_eq!(session.span_context.trace_id(), derived_trace_id(SESSION, None));
    assert_eq!(session.span_context.span_id(), node_span_id(SESSION, "session:dev-fixture-session"));
    assert_eq!(session.parent_span_id, SpanId::INVALID);

    assert_eq!(turn.span_context.trace_id(), turn_trace);
    assert_eq!(turn_id, node_span_id(SESSION, TURN_NODE));
    assert_eq!(turn.parent_span_id, SpanId::INVALID, "without a traceparent the turn is its trace's root");
    assert_eq!(turn.links.len(), 1, "the turn links to its session span");
    assert_eq!(turn.links[0].span_context, session.span_context);
    assert_eq!(turn.status, Status::Unset);
    assert_eq!(attr_json(turn, "lash.turn.status"), Some(json!("completed")));
    assert_eq!(attr_json(turn, "lash.turn.done_reason"), Some(json!("finished")));
    assert!(turn.start_time < turn.end_time);

    for span in spans.iter().filter(|s| s.name != "lash.session" && s.name != "lash.turn") {
        assert_eq!(span.span_context.trace_id(), turn_trace, "{} in the turn's trace", span.name);
        assert_eq!(span.parent_span_id, turn_id, "{} is a child of the turn", span.name);
        assert!(turn.start_time <= span.start_time && span.end_time <= turn.end_time, "{} inside the turn", span.name);
    }

    let ok_call = llm_span(&spans, "call-1");
    assert_eq!(ok_call.status, Status::Unset);
    assert_eq!(attr_json(ok_call, "gen_ai.request.model"), Some(json!("anthropic/claude-sonnet-4.6")));
    assert_eq!(attr_json(ok_call, "gen_ai.system"), Some(json!("anthropic")));
    assert_eq!(attr_json(ok_call, "gen_ai.usage.input_tokens"), Some(json!(120)));
    assert_eq!(attr_json(ok_call, "gen_ai.usage.output_tokens"), Some(json!(30)));
    assert!(ok_call.start_time < ok_call.end_time);

    let failed_call = llm_span(&spans, "call-2");
    assert_eq!(failed_call.status, Status::error("upstream timeout"));
    assert_eq!(attr_json(failed_call, "error.type"), Some(json!("504")));

    let tool = only(&spans, "lash.tool");
    assert_eq!(tool.status, Status::Unset);
    assert_eq!(attr_json(tool, "lash.tool.name"), Some(json!("web_search")));
    assert_eq!(attr_json(tool, "lash.tool.call_id"), Some(json!("tc-1")));
    assert_eq!(attr_json(tool, "lash.tool.status"), Some(json!("success")));
    assert_eq!(attr_json(tool, "lash.tool.duration_ms"), Some(json!(3)));

    let usage = only(&spans, "lash.token_usage");
    assert_eq!(usage.start_time, usage.end_time, "instant");
    assert_eq!(attr_json(usage, "gen_ai.usage.input_tokens"), Some(json!(120)));
    assert_eq!(attr_json(usage, "lash.usage.cumulative.output_tokens"), Some(json!(30)));

    assert_eq!(attr_json(only(&spans, "lash.prompt"), "lash.prompt.chars"), Some(json!(512)));
    assert_eq!(attr_json(only(&spans, "lash.custom"), "lash.custom.name"), Some(json!("note")));
}

#[test]
fn fixture_with_a_traceparent_joins_the_callers_trace() {
    let origin = TraceParent::parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").unwrap();
    let spans = assemble(Some(&origin));
    let turn = only(&spans, "lash.turn");
    assert_eq!(turn.parent_span_id, origin.parent_span_id);
    assert!(turn.parent_span_is_remote);
    for span in spans.iter().filter(|s| s.name != "lash.session") {
        assert_eq!(span.span_context.trace_id(), origin.trace_id, "{}", span.name);
    }
    // The session span has no turn: it keeps the session's derived trace.
    assert_eq!(only(&spans, "lash.session").span_context.trace_id(), derived_trace_id(SESSION, None));
    // Span ids do not depend on the trace.
    let plain = assemble(None);
    let ids = |spans: &[SpanData]| spans.iter().map(|s| (s.span_context.span_id(), s.name.clone())).collect::<Vec<_>>();
    assert_eq!(ids(&spans), ids(&plain));
}

#[test]
fn redelivered_fixture_produces_no_second_span() {
    let mut assembler = SpanAssembler::new();
    let records = fixture_records();
    for record in &records {
        assembler.push(record, None).unwrap();
    }
    let first = assembler.take_finished();
    for record in &records {
        assert!(matches!(assembler.push(record, None).unwrap(), Applied::Skipped(_)), "{}", record.event.kind());
    }
    assert!(assembler.take_finished().is_empty());
    assert_eq!(first.len(), 8);
}
