//! Traces end to end: client call span -> worker span -> `lash.turn` with its children,
//! exported over OTLP/HTTP to a receiver the test starts; a collector outage; an
//! exporter restart.

mod common;

#[path = "common/otlp.rs"]
mod otlp;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use sessionbus_api::{
    EchoExecutor, SessionGraphService, SessionLifecycleService, SessionTurnRequest, TraceContext, TraceEvent, TurnInput,
};
use sessionbus_nats::jetstream::{TraceExporterConfig, run_trace_exporter};
use sessionbus_otel::Telemetry;
use sessionbus_otel::export::otlp_exporter;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn exporter_config() -> TraceExporterConfig {
    TraceExporterConfig::default()
        .with_max_retry_pause(Duration::from_millis(300))
        .with_ack_wait(Duration::from_secs(3))
}

async fn start_exporter(
    server: &sessionbus_testkit::NatsServer,
    url: &str,
    name: &str,
) -> (tokio::task::JoinHandle<()>, tokio::sync::oneshot::Sender<()>) {
    let client = server.client().await.expect("connect");
    let exporter = otlp_exporter(name, Some(url)).expect("otlp exporter");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        run_trace_exporter(client, exporter, exporter_config(), async {
            let _ = stopped.await;
        })
        .await
        .expect("exporter");
    });
    (task, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_from_the_client_call_to_the_turn_and_its_children() {
    let receiver = otlp::Receiver::start(0).await;
    let telemetry = Telemetry::to_endpoint("sessionbus-test", Some(&receiver.url())).expect("telemetry");
    let server = common::server();
    let _worker = common::serve_jetstream(&server, Arc::new(EchoExecutor)).await;
    let client = common::client_on(&server).await;
    let (exporter, stop) = start_exporter(&server, &receiver.url(), "sessionbus-exporter").await;

    let session = common::create_root(&client).await;
    let turn = SessionTurnRequest::for_turn(&session, "t1", TurnInput::text("trace me")).expect("turn");
    client.start_turn(turn).await.expect("turn");
    // A tool call of the same turn, reported by another process through the bus.
    let tool = |kind: &str| {
        let context = TraceContext {
            session_id: Some(session.clone()),
            turn_id: Some("t1".into()),
            graph_node_id: Some("tool:call-1".into()),
            parent_graph_node_id: Some(format!("turn:{session}:t1")),
            ..TraceContext::default()
        };
        let event = match kind {
            "start" => TraceEvent::ToolCallStarted {
                call_id: Some("call-1".into()),
                name: "bash".into(),
                args: json!({}),
                extra: Default::default(),
            },
            _ => TraceEvent::ToolCallCompleted {
                call_id: Some("call-1".into()),
                name: "bash".into(),
                args: json!({}),
                output: json!({"outcome": {"status": "success"}}),
                duration_ms: Some(3),
                extra: Default::default(),
            },
        };
        (context, event)
    };
    for kind in ["start", "end"] {
        let (context, event) = tool(kind);
        client.emit_trace_event(context, event).await.expect("emit");
    }

    let spans = receiver
        .wait_for(Duration::from_secs(30), |spans| {
            ["lash.turn", "lash.tool"].iter().all(|name| spans.iter().any(|s| s.span.name == *name))
                && spans.iter().any(|s| s.span.name.ends_with(".start_turn") && s.span.name.starts_with("send"))
                && spans.iter().any(|s| s.span.name.ends_with(".start_turn") && s.span.name.starts_with("process"))
        })
        .await;
    let service_of =
        |name: &str| spans.iter().find(|s| s.span.name == name).map(|s| s.service.clone()).unwrap_or_default();
    assert!(service_of("lash.turn").contains("sessionbus-exporter"), "turn spans come from the exporter");
    assert!(service_of("send sessionbus.v1.session.{session_id}.start_turn").contains("sessionbus-test"));
    let by_name = |name: &str| {
        spans.iter().find(|s| s.span.name == name).map(|s| s.span.clone()).unwrap_or_else(|| panic!("no {name}"))
    };
    let client_span = by_name("send sessionbus.v1.session.{session_id}.start_turn");
    let worker_span = by_name("process sessionbus.v1.session.{session_id}.start_turn");
    let turn_span = by_name("lash.turn");
    let tool_span = by_name("lash.tool");
    let trace = hex(&client_span.trace_id);
    for span in [&worker_span, &turn_span, &tool_span] {
        assert_eq!(hex(&span.trace_id), trace, "{} is not in the client's trace", span.name);
    }
    assert!(client_span.parent_span_id.is_empty(), "the client call is the root");
    assert_eq!(worker_span.parent_span_id, client_span.span_id, "worker span under the client span");
    assert_eq!(turn_span.parent_span_id, worker_span.span_id, "lash.turn under the worker span");
    assert_eq!(tool_span.parent_span_id, turn_span.span_id, "lash.tool under lash.turn");
    let messaging: HashMap<String, String> = worker_span
        .attributes
        .iter()
        .map(|kv| (kv.key.clone(), format!("{:?}", kv.value.as_ref().and_then(|v| v.value.clone()))))
        .collect();
    assert!(messaging["messaging.system"].contains("nats"));
    assert!(messaging["messaging.destination.template"].contains("{session_id}"));
    assert!(
        spans.iter().any(|s| s.span.name.starts_with("jetstream ") && hex(&s.span.trace_id) == trace),
        "JetStream child spans"
    );
    let ids: Vec<String> = spans.iter().map(|s| hex(&s.span.span_id)).collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "a span arrived twice");
    println!("exported trace {trace}:");
    for span in spans.iter().filter(|s| hex(&s.span.trace_id) == trace) {
        println!("  {} span={} parent={}", span.span.name, hex(&span.span.span_id), hex(&span.span.parent_span_id));
    }
    let _ = stop.send(());
    let _ = exporter.await;
    telemetry.shutdown().await;
}

async fn emit_customs(client: &sessionbus_nats::BusClient, session: &str, range: std::ops::Range<usize>) {
    let sends = range.map(|i| {
        let context = TraceContext { session_id: Some(session.to_owned()), ..TraceContext::default() };
        let event = TraceEvent::Custom { name: "load".into(), payload: json!({"i": i}), extra: Default::default() };
        client.emit_trace_event(context, event)
    });
    for result in futures::future::join_all(sends).await {
        result.expect("emit");
    }
}

/// A collector that is down: it accepts connections on its port and closes each one at
/// once, without an answer, and counts them (each one is an export that failed).
struct DownCollector {
    port: u16,
    failed_exports: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DownCollector {
    fn start() -> Self {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let (failed_exports, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        let thread = std::thread::spawn({
            let (failed_exports, stop) = (Arc::clone(&failed_exports), Arc::clone(&stop));
            move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((connection, _)) => {
                            drop(connection);
                            failed_exports.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            }
        });
        Self { port, failed_exports, stop, thread: Some(thread) }
    }

    /// Waits, within `limit`, until `n` exports have failed against it.
    async fn wait_failed(&self, n: usize, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.failed_exports.load(Ordering::SeqCst) < n {
            assert!(tokio::time::Instant::now() < deadline, "no {n} failed exports within {limit:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops accepting and frees the port; returns how many exports failed.
    fn shut_down(mut self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("collector thread");
        }
        self.failed_exports.load(Ordering::SeqCst)
    }
}

/// The exporter's durable consumer: records delivered and not yet acknowledged, and not
/// yet delivered.
async fn exporter_backlog(nats: &async_nats::Client) -> (u64, u64) {
    let info = nats
        .request("$JS.API.CONSUMER.INFO.SESSIONBUS_TRACE.sessionbus-exporter", "".into())
        .await
        .expect("consumer info");
    let info: serde_json::Value = serde_json::from_slice(&info.payload).expect("json");
    (info["num_ack_pending"].as_u64().unwrap_or(u64::MAX), info["num_pending"].as_u64().unwrap_or(u64::MAX))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_outage_delays_spans_and_loses_none() {
    let server = common::server();
    let _worker = common::serve_jetstream(&server, Arc::new(EchoExecutor)).await;
    let client = common::client_on(&server).await;
    let down = DownCollector::start();
    let port = down.port;
    let url = format!("http://127.0.0.1:{port}");
    let (exporter, stop) = start_exporter(&server, &url, "sessionbus-exporter").await;
    let session = common::create_root(&client).await;
    emit_customs(&client, &session, 0..1000).await;
    // The outage is real: exports were tried and failed (a first one and a retry).
    down.wait_failed(2, Duration::from_secs(30)).await;
    assert!(!exporter.is_finished(), "the exporter must survive the outage");
    let failed_exports = down.shut_down();
    let receiver = otlp::Receiver::start(port).await;
    receiver
        .wait_for(Duration::from_secs(60), |spans| {
            spans.iter().filter(|s| s.span.name == "lash.custom").count() >= 1000
        })
        .await;
    // Every record is acknowledged (none left to redeliver): what arrived is final.
    let nats = server.client().await.expect("connect");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let backlog = exporter_backlog(&nats).await;
        if backlog == (0, 0) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the exporter still holds records: {backlog:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let spans = receiver.received();
    let ids: Vec<String> = spans.iter().map(|s| hex(&s.span.span_id)).collect();
    let unique: HashSet<&String> = ids.iter().collect();
    println!("collector outage: {failed_exports} exports failed while it was down; {} spans after", ids.len());
    assert_eq!(unique.len(), 1000, "every span arrived");
    assert_eq!(ids.len(), 1000, "no span arrived twice");
    let _ = stop.send(());
    let _ = exporter.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exporter_restart_resumes_and_loses_nothing() {
    let server = common::server();
    let _worker = common::serve_jetstream(&server, Arc::new(EchoExecutor)).await;
    let client = common::client_on(&server).await;
    let receiver = otlp::Receiver::start(0).await;
    let session = common::create_root(&client).await;
    let (first, _stop_first) = start_exporter(&server, &receiver.url(), "sessionbus-exporter").await;
    emit_customs(&client, &session, 0..300).await;
    receiver.wait_for(Duration::from_secs(30), |spans| spans.len() >= 100).await;
    // Killed mid-stream: no graceful stop, unacked records stay in the stream.
    first.abort();
    let _ = first.await;
    emit_customs(&client, &session, 300..600).await;
    let (second, stop) = start_exporter(&server, &receiver.url(), "sessionbus-exporter").await;
    let spans = receiver
        .wait_for(Duration::from_secs(60), |spans| {
            spans.iter().map(|s| hex(&s.span.span_id)).collect::<HashSet<_>>().len() >= 600
        })
        .await;
    let unique: HashSet<String> = spans.iter().map(|s| hex(&s.span.span_id)).collect();
    assert_eq!(unique.len(), 600, "every span arrived at least once");
    println!(
        "exporter restart: {} spans received for 600 records, {} duplicates",
        spans.len(),
        spans.len() - unique.len()
    );
    let _ = stop.send(());
    let _ = second.await;
}
