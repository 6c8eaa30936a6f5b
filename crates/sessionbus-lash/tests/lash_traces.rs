//! A lash turn's trace records, run by the `LashExecutor` on a worker, come out of the
//! bus's trace exporter as OTLP spans in the turn's trace: `lash.turn` with its
//! `lash.llm` and `lash.tool` children (an OTLP receiver the test starts).

#[path = "../../sessionbus-nats/tests/common/otlp.rs"]
mod otlp;

mod lash_bus;

use std::time::Duration;

use lash_bus::{lash_bus, new_session, script};
use sessionbus_api::{SessionLifecycleService as _, SessionTurnRequest, TurnInput};
use sessionbus_lash::provider::scripted::ScriptedProvider;
use sessionbus_nats::jetstream::{TraceExporterConfig, run_trace_exporter};
use sessionbus_otel::export::otlp_exporter;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lash_turn_s_trace_records_are_exported_as_spans_of_the_turn() {
    let receiver = otlp::Receiver::start(0).await;
    let bus = lash_bus(&ScriptedProvider::new(script("add_then_answer.json")), &["worker-a"]).await;
    let exporter = otlp_exporter("sessionbus-exporter", Some(&receiver.url())).expect("otlp exporter");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let exporter_client = bus.server.client().await.expect("connect");
    let exporter = tokio::spawn(async move {
        let config = TraceExporterConfig::default().with_ack_wait(Duration::from_secs(3));
        run_trace_exporter(exporter_client, exporter, config, async {
            let _ = stopped.await;
        })
        .await
        .expect("exporter");
    });

    let session_id = new_session(&bus.client).await;
    let turn = SessionTurnRequest::for_turn(&session_id, "t1", TurnInput::text("What is 2 + 3?")).expect("turn");
    bus.client.start_turn(turn).await.expect("the lash turn");

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
    let _ = stop.send(());
    let _ = exporter.await;
}
