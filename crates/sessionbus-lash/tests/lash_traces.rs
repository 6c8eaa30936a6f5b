//! A lash turn's trace records come out of the bus's trace exporter as OTLP spans in the
//! turn's trace: `lash.turn` with its `lash.llm` and `lash.tool` children (an OTLP
//! receiver the test starts), for a turn the `LashExecutor` runs on a worker and for one
//! a lash runtime on the JetStream store runs (its `RuntimeTraces` sink).

#[path = "../../sessionbus-nats/tests/common/otlp.rs"]
mod otlp;

mod lash_bus;

use std::time::Duration;

use lash_bus::{lash_bus, new_session, script};
use sessionbus_api::{SessionLifecycleService as _, SessionTurnRequest, TurnInput};
use sessionbus_lash::provider::scripted::ScriptedProvider;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Waits for one tool turn's spans at `receiver`: `lash.turn` sent by the exporter, with
/// its two `lash.llm` and one `lash.tool` children in its trace.
async fn a_tool_turn_s_spans_arrive(receiver: &otlp::Receiver) {
    let spans = receiver
        .wait_for(Duration::from_secs(30), |spans| {
            let count = |name: &str| spans.iter().filter(|s| s.span.name == name).count();
            count("lash.turn") == 1 && count("lash.llm") == 2 && count("lash.tool") == 1
        })
        .await;
    let turn = spans.iter().find(|s| s.span.name == "lash.turn").expect("lash.turn");
    assert!(turn.service.contains("sessionbus-exporter"), "the exporter sends the turn's spans: {}", turn.service);
    let turn = turn.span.clone();
    for child in spans.iter().filter(|s| s.span.name == "lash.llm" || s.span.name == "lash.tool") {
        assert_eq!(hex(&child.span.trace_id), hex(&turn.trace_id), "{} is not in the turn's trace", child.span.name);
        assert_eq!(child.span.parent_span_id, turn.span_id, "{} hangs under lash.turn", child.span.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lash_turn_s_trace_records_are_exported_as_spans_of_the_turn() {
    let receiver = otlp::Receiver::start(0).await;
    let bus = lash_bus(&ScriptedProvider::new(script("add_then_answer.json")), &["worker-a"]).await;
    let (stop, exporter) = lash_bus::start_exporter(&bus, &receiver.url()).await;

    let session_id = new_session(&bus.client).await;
    let turn = SessionTurnRequest::for_turn(&session_id, "t1", TurnInput::text("What is 2 + 3?")).expect("turn");
    bus.client.start_turn(turn).await.expect("the lash turn");

    a_tool_turn_s_spans_arrive(&receiver).await;
    let _ = stop.send(());
    let _ = exporter.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lash_runtime_s_trace_records_come_out_of_the_bus_s_trace_exporter() {
    let receiver = otlp::Receiver::start(0).await;
    let bus = lash_bus::bus_with_store().await;
    let (stop, exporter) = lash_bus::start_exporter(&bus, &receiver.url()).await;
    let session = uuid::Uuid::new_v4().to_string();
    let (peer, said) = lash_bus::lash_runtime(&bus.server.url()).await;

    lash_bus::turn(&peer, &said, &session, "Add 2 and 3").await;

    let records = lash_bus::stored_trace_records(&bus.raw, &session).await;
    assert!(!records.is_empty(), "the runtime's records are stored on the session's trace subject");
    a_tool_turn_s_spans_arrive(&receiver).await;
    let _ = stop.send(());
    let _ = exporter.await;
}
