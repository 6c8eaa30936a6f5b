//! Identity across instances, lost and repeated records, restore after restart, export.

mod common;

use std::time::Duration;

use common::*;
use opentelemetry::trace::Status;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData, SpanExporter};
use serde_json::json;
use sessionbus_api::TraceRecord;
use sessionbus_otel::{
    Applied, AssembleError, AssemblerConfig, INCOMPLETE_ATTRIBUTE, OpenSpan, SpanAssembler, SpanKey, TraceParent,
    derived_trace_id,
};

fn ids(spans: &[SpanData]) -> Vec<(String, String, String, String)> {
    let mut ids: Vec<_> = spans
        .iter()
        .map(|s| {
            (
                s.name.to_string(),
                format!("{:032x}", s.span_context.trace_id()),
                format!("{:016x}", s.span_context.span_id()),
                format!("{:016x}", s.parent_span_id),
            )
        })
        .collect();
    ids.sort();
    ids
}

fn feed(assembler: &mut SpanAssembler, records: &[TraceRecord]) -> Vec<SpanData> {
    for record in records {
        assembler.push(record, None).unwrap();
    }
    assembler.take_finished()
}

#[test]
fn two_instances_derive_the_same_ids() {
    let records = fixture_records();
    let reference = feed(&mut SpanAssembler::new(), &records);
    assert_eq!(ids(&feed(&mut SpanAssembler::new(), &records)), ids(&reference));

    // Records of one turn split between two processes (every other record each): each
    // emits what it can, and together they name the same spans and parents.
    let (mut a, mut b) = (SpanAssembler::new(), SpanAssembler::new());
    let mut split = Vec::new();
    for (i, record) in records.iter().enumerate() {
        let instance = if i % 2 == 0 { &mut a } else { &mut b };
        instance.push(record, None).unwrap();
    }
    split.extend(a.take_finished());
    split.extend(b.take_finished());
    // Ends seen by one instance were started in the other: those spans are emitted by the
    // end's instance; the starts stay open where they were seen.
    let emitted: std::collections::BTreeSet<_> = ids(&split).into_iter().collect();
    for id in &emitted {
        assert!(ids(&reference).contains(id), "{id:?} is one of the reference spans");
    }
    assert_eq!(emitted.len(), ids(&reference).len(), "every span was emitted by one of the two");
    assert_eq!(split.len(), reference.len(), "and none twice");
}

#[test]
fn restored_open_spans_resume_in_another_instance() {
    let records = fixture_records();
    let reference = feed(&mut SpanAssembler::new(), &records);

    // Instance A sees the first half, persists its open spans as JSON, and stops.
    let mut a = SpanAssembler::new();
    let mut emitted = feed(&mut a, &records[..6]);
    let persisted: Vec<(String, String)> =
        a.open_spans().map(|(key, span)| (key.kv_key(), serde_json::to_string(span).unwrap())).collect();
    assert_eq!(persisted.len(), 2, "turn and tool span open: {persisted:?}");
    drop(a);

    // Instance B restores them and sees the rest.
    let mut b = SpanAssembler::new();
    for (kv_key, json) in &persisted {
        let span: OpenSpan = serde_json::from_str(json).unwrap();
        assert_eq!(&span.key().kv_key(), kv_key);
        b.restore(span);
    }
    emitted.extend(feed(&mut b, &records[6..]));
    assert_eq!(b.open_spans().count(), 0);

    let mut expected = reference.clone();
    let mut emitted_sorted = emitted.clone();
    let key = |s: &SpanData| s.span_context.span_id().to_bytes();
    expected.sort_by_key(key);
    emitted_sorted.sort_by_key(key);
    assert_eq!(emitted_sorted, expected, "identical spans, start times and attributes included");
}

#[test]
fn turn_trace_comes_from_the_traceparent_and_is_remembered() {
    let origin = TraceParent::parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").unwrap();
    let mut assembler = SpanAssembler::new();
    let started = record("ts", 0, turn_ctx(TURN_NODE, None), json!({"type": "turn_started"}));
    assembler.push(&started, Some(&origin)).unwrap();
    // The turn's later records come without it (as from a process that did not read the ledger).
    let tool = [
        record(
            "a",
            1,
            turn_ctx("tool:x", Some(TURN_NODE)),
            json!({"type": "tool_call_started", "call_id": "x", "name": "n"}),
        ),
        record(
            "b",
            2,
            turn_ctx("tool:x", Some(TURN_NODE)),
            json!({"type": "tool_call_completed", "call_id": "x", "name": "n", "output": {"outcome": {"status": "success"}}}),
        ),
        record("c", 3, turn_ctx(TURN_NODE, None), json!({"type": "turn_completed", "status": "finished"})),
    ];
    let spans = feed(&mut assembler, &tool);
    assert_eq!(spans.len(), 2);
    for span in &spans {
        assert_eq!(span.span_context.trace_id(), origin.trace_id, "{}", span.name);
    }
    let turn = only(&spans, "lash.turn");
    assert_eq!((turn.parent_span_id, turn.parent_span_is_remote), (origin.parent_span_id, true));
    assert_eq!(only(&spans, "lash.tool").parent_span_id, turn.span_context.span_id());

    // A restored open turn span brings its traceparent back too.
    let mut first = SpanAssembler::new();
    first.push(&started, Some(&origin)).unwrap();
    let open = first.open_spans().next().unwrap().1.clone();
    let mut second = SpanAssembler::new();
    second.restore(open);
    let spans = feed(&mut second, &tool);
    assert!(spans.iter().all(|s| s.span_context.trace_id() == origin.trace_id));
}

#[test]
fn end_without_start_still_makes_a_span() {
    let mut assembler = SpanAssembler::new();
    let records = [
        record(
            "tc",
            30,
            turn_ctx(TURN_NODE, Some("session:s1")),
            json!({"type": "turn_completed", "status": "cancelled"}),
        ),
        record(
            "te",
            20,
            turn_ctx("tool:x", Some(TURN_NODE)),
            json!({"type": "tool_call_completed", "call_id": "x", "name": "n", "output": {"outcome": {"status": "success"}}, "duration_ms": 7}),
        ),
        record(
            "le",
            25,
            json!({"session_id": SESSION, "turn_id": TURN, "llm_call_id": "c9"}),
            json!({"type": "llm_call_failed", "error": "boom"}),
        ),
    ];
    let mut applied = Vec::new();
    for record in &records {
        applied.push(assembler.push(record, None).unwrap());
    }
    assert!(applied.iter().all(|a| matches!(a, Applied::Finished { closed: None, .. })), "{applied:?}");
    let spans = assembler.take_finished();

    let turn = only(&spans, "lash.turn");
    assert_eq!(turn.start_time, turn.end_time, "no start known: the span starts at its end");
    assert_eq!(turn.end_time, at(30));
    assert_eq!(turn.status, Status::error("turn ended with status cancelled"));
    assert_eq!(turn.span_context.span_id(), node(TURN_NODE));
    assert_eq!(turn.span_context.trace_id(), derived_trace_id(SESSION, Some(TURN)));

    let tool = only(&spans, "lash.tool");
    assert_eq!(tool.start_time, at(13), "start placed by the reported duration");
    assert_eq!(tool.parent_span_id, node(TURN_NODE));

    // An LLM record without a graph node is placed by lash's convention (`llm:<id>`) and,
    // without a parent node, under its turn.
    let llm = only(&spans, "lash.llm");
    assert_eq!(llm.span_context.span_id(), node("llm:c9"));
    assert_eq!(llm.parent_span_id, node(TURN_NODE));
    assert_eq!(llm.status, Status::error("boom"));
}

#[test]
fn events_before_the_start_open_the_llm_span() {
    let ctx = || {
        let mut c = turn_ctx("llm:c1", Some(TURN_NODE));
        c["llm_call_id"] = json!("c1");
        c
    };
    let mut assembler = SpanAssembler::new();
    let key = SpanKey::new(SESSION, "llm:c1");
    assert_eq!(
        assembler.push(&record("e1", 12, ctx(), json!({"type": "llm_stream_event", "n": 1})), None).unwrap(),
        Applied::Opened(key.clone())
    );
    assert_eq!(assembler.open_span(&key).unwrap().start_time(), at(12));
    assert_eq!(
        assembler
            .push(&record("s", 10, ctx(), json!({"type": "llm_call_started", "request": {"model": "m"}})), None)
            .unwrap(),
        Applied::Updated(key.clone())
    );
    assert_eq!(
        assembler.push(&record("s", 10, ctx(), json!({"type": "llm_call_started"})), None).unwrap(),
        Applied::Skipped(key.span_id()),
        "a repeated start changes nothing"
    );
    assert_eq!(
        assembler.push(&record("e1", 12, ctx(), json!({"type": "llm_stream_event", "n": 1})), None).unwrap(),
        Applied::Skipped(key.span_id()),
        "a repeated event is not added twice"
    );
    let end = record("c", 20, ctx(), json!({"type": "llm_call_completed"}));
    assert_eq!(
        assembler.push(&end, None).unwrap(),
        Applied::Finished { span_id: key.span_id(), closed: Some(key.clone()) }
    );
    let spans = assembler.take_finished();
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].start_time, at(10));
    assert_eq!(spans[0].events.len(), 1);
    assert_eq!(attr_json(&spans[0], "gen_ai.request.model"), Some(json!("m")));

    // Late records of the finished span are skipped.
    for late in [
        end,
        record("e2", 21, ctx(), json!({"type": "llm_stream_event"})),
        record("s2", 9, ctx(), json!({"type": "llm_call_started"})),
    ] {
        assert_eq!(assembler.push(&late, None).unwrap(), Applied::Skipped(key.span_id()));
    }
    assert!(assembler.take_finished().is_empty());
    assert_eq!(assembler.open_spans().count(), 0);
}

#[test]
fn duplicates_are_filtered_within_the_recent_window_only() {
    let config = AssemblerConfig { recent_capacity: 2, ..AssemblerConfig::default() };
    let mut assembler = SpanAssembler::with_config(config);
    let usage = |id: &str| record(id, 1, turn_ctx(TURN_NODE, None), json!({"type": "token_usage"}));
    let first = usage("u1");
    let Applied::Finished { span_id, .. } = assembler.push(&first, None).unwrap() else { panic!() };
    assert_eq!(assembler.push(&first, None).unwrap(), Applied::Skipped(span_id));
    assembler.push(&usage("u2"), None).unwrap();
    assembler.push(&usage("u3"), None).unwrap();
    assert_eq!(assembler.recently_finished().count(), 2);
    assert!(!assembler.recently_finished().any(|id| id == span_id), "the oldest id was evicted");
    assert!(matches!(assembler.push(&first, None).unwrap(), Applied::Finished { .. }), "outside the window");
    assert_eq!(assembler.take_finished().len(), 4);

    // A restored filter (e.g. persisted by the exporter) skips spans another instance finished.
    let mut other = SpanAssembler::new();
    other.remember_finished(span_id);
    assert_eq!(other.push(&first, None).unwrap(), Applied::Skipped(span_id));
}

#[test]
fn stale_open_spans_are_closed_as_incomplete() {
    let mut assembler = SpanAssembler::new();
    let started = record("ts", 5, turn_ctx(TURN_NODE, None), json!({"type": "turn_started"}));
    assembler.push(&started, None).unwrap();
    assert!(assembler.finish_stale(at(5)).is_empty(), "not older than the cutoff");
    assert_eq!(assembler.finish_stale(at(6)), vec![SpanKey::new(SESSION, TURN_NODE)]);
    let spans = assembler.take_finished();
    assert_eq!(spans.len(), 1);
    assert_eq!((spans[0].start_time, spans[0].end_time), (at(5), at(5)));
    assert_eq!(attr_json(&spans[0], INCOMPLETE_ATTRIBUTE), Some(json!(true)));
    assert_eq!(spans[0].status, Status::Unset);
    // Its end arriving later is a duplicate of what was emitted.
    let completed =
        record("tc", 9, turn_ctx(TURN_NODE, None), json!({"type": "turn_completed", "status": "completed"}));
    assert!(matches!(assembler.push(&completed, None).unwrap(), Applied::Skipped(_)));
}

#[test]
fn open_span_json_round_trips() {
    let mut assembler = SpanAssembler::new();
    let mut ctx = turn_ctx("llm:c1", Some(TURN_NODE));
    ctx["llm_call_id"] = json!("c1");
    assembler
        .push(
            &record(
                "s",
                1,
                ctx.clone(),
                json!({"type": "llm_call_started", "request": {"model": "a/b", "stream": false}}),
            ),
            None,
        )
        .unwrap();
    assembler.push(&record("e", 2, ctx, json!({"type": "llm_provider_event", "ratio": 0.5, "n": 3})), None).unwrap();
    let (_, open) = assembler.open_spans().next().unwrap();
    let json = serde_json::to_value(open).unwrap();
    assert_eq!(json["kind"], "llm");
    assert_eq!(json["span_id"], format!("{:016x}", node("llm:c1")));
    assert_eq!(json["parent_span_id"], format!("{:016x}", node(TURN_NODE)));
    let back: OpenSpan = serde_json::from_value(json).unwrap();
    assert_eq!(&back, open);
}

#[test]
fn bad_records_are_rejected_without_changing_state() {
    let mut assembler = SpanAssembler::new();
    let mut no_session = record("a", 1, json!({}), json!({"type": "custom", "name": "x"}));
    assert_eq!(assembler.push(&no_session, None), Err(AssembleError::MissingSessionId { record_id: "a".into() }));
    no_session.context.session_id = Some(SESSION.into());
    no_session.timestamp = "not a time".into();
    assert!(matches!(assembler.push(&no_session, None), Err(AssembleError::InvalidTimestamp { .. })));
    no_session.schema_version = 1;
    assert!(matches!(assembler.push(&no_session, None), Err(AssembleError::UnsupportedSchema { found: 1, .. })));
    let nowhere = record("b", 1, json!({"session_id": SESSION}), json!({"type": "llm_stream_event"}));
    assert_eq!(
        assembler.push(&nowhere, None),
        Err(AssembleError::MissingGraphNode { record_id: "b".into(), kind: "llm_stream_event".into() })
    );
    assert_eq!(assembler.open_spans().count(), 0);
    assert_eq!(assembler.finished_len(), 0);
}

#[tokio::test]
async fn finished_spans_export_through_the_sdk() {
    let exporter = InMemorySpanExporter::default();
    let mut assembler = SpanAssembler::new();
    let spans = feed(&mut assembler, &fixture_records());
    exporter.export(spans.clone()).await.unwrap();
    let exported = exporter.get_finished_spans().unwrap();
    assert_eq!(exported, spans);
    assert!(exported.iter().all(|s| s.instrumentation_scope.name() == sessionbus_otel::SCOPE_NAME));
    assert!(exported.iter().all(|s| s.end_time >= s.start_time));
    let turn = only(&exported, "lash.turn");
    assert!(turn.end_time.duration_since(turn.start_time).unwrap() < Duration::from_secs(1));
}
