//! What the tests of lash turns on the bus share: a real nats-server, workers whose
//! executors run lash turns with the scripted provider and the demo tools, a client,
//! and the scripts in `tests/scripts`.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sessionbus_api::{EchoExecutor, SessionCreateRequest, SessionLifecycleService as _, TraceRecord, TurnExecutor};
use sessionbus_lash::executor::{DEFAULT_TOOL_TIMEOUT, LashExecutor, LashExecutorConfig};
use sessionbus_lash::peer::protocol::{Command, Event};
use sessionbus_lash::peer::{Peer, PeerConfig};
use sessionbus_lash::provider::scripted::{Script, ScriptedProvider};
use sessionbus_lash::store::ensure_store_layout;
use sessionbus_nats::{BusClient, BusClientConfig, JetStreamHost, JetStreamHostConfig, Subjects, Worker, WorkerConfig};
use sessionbus_testkit::NatsServer;

/// The script `tests/scripts/<name>`.
pub fn script(name: &str) -> Script {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts").join(name);
    Script::load(path.to_str().expect("a UTF-8 path")).expect("the script")
}

/// lash's own in-memory runtime (the reference a turn on the bus is compared with):
/// `provider`, the executor's model spec and the demo tools, in-memory stores and an
/// inline effect host; the caller adds a trace sink if it wants one, and builds.
pub fn in_memory_lash(provider: ScriptedProvider) -> lash::LashCoreBuilder {
    let model = lash_core::ModelSpec::from_token_limits(
        "scripted-model",
        Default::default(),
        sessionbus_lash::executor::DEFAULT_CONTEXT_TOKENS,
        None,
    )
    .expect("a model");
    lash::LashCore::standard_builder()
        .provider(lash_core::ProviderHandle::new(lash_core::ProviderComponents::new(Box::new(provider))))
        .model(model)
        .tools(sessionbus_lash::executor::tools::demo_tools())
        .effect_host(Arc::new(lash_core::InlineEffectHost::default()))
        .attachment_store(Arc::new(lash_core::InMemoryAttachmentStore::new()))
        .process_env_store(Arc::new(lash_core::InMemoryProcessExecutionEnvStore::default()))
}

/// `session_id` opened in `core` on a fresh in-memory session store.
pub async fn open_in_memory(core: &lash::LashCore, session_id: &str) -> lash::LashSession {
    core.session(session_id).store(Arc::new(lash_core::InMemorySessionStore::new())).open().await.expect("open in lash")
}

/// A server, workers and a client (and a plain connection for raw reads).
pub struct LashBus {
    pub client: BusClient,
    pub raw: async_nats::Client,
    pub workers: Vec<Worker>,
    pub server: NatsServer,
}

/// One lash worker per name in `holders` (its lease holder name), each with a clone of
/// `provider` (so `provider.requests()` sees every model call) and the demo tools.
pub async fn lash_bus(provider: &ScriptedProvider, holders: &[&str]) -> LashBus {
    lash_bus_with(provider, holders, DEFAULT_TOOL_TIMEOUT, JetStreamHostConfig::default()).await
}

/// [`lash_bus`] with each tool call limited to `tool_timeout`, the workers' hosts
/// configured as `host` says (each with its own lease holder).
pub async fn lash_bus_with(
    provider: &ScriptedProvider,
    holders: &[&str],
    tool_timeout: Duration,
    host: JetStreamHostConfig,
) -> LashBus {
    let executors = holders
        .iter()
        .map(|holder| {
            let config = LashExecutorConfig::new(Box::new(provider.clone()), "scripted-model")
                .expect("config")
                .with_tool_timeout(tool_timeout);
            (*holder, Arc::new(LashExecutor::new(config)) as Arc<dyn TurnExecutor>)
        })
        .collect();
    bus_of_with(executors, host).await
}

/// A worker per `(lease holder, executor)`, on a fresh server with the layout
/// `sessionbus setup` makes; workers learn tool generations from JetStream events.
pub async fn bus_of(executors: Vec<(&str, Arc<dyn TurnExecutor>)>) -> LashBus {
    bus_of_with(executors, JetStreamHostConfig::default()).await
}

/// [`bus_of`] with the hosts configured as `host` says (each with its own lease holder).
pub async fn bus_of_with(executors: Vec<(&str, Arc<dyn TurnExecutor>)>, host: JetStreamHostConfig) -> LashBus {
    let server = NatsServer::start().expect("start nats-server");
    let setup = server.client().await.expect("connect");
    sessionbus_nats::jetstream::ensure_layout(
        &async_nats::jetstream::new(setup),
        &Subjects::default(),
        &sessionbus_nats::jetstream::LayoutConfig::default(),
    )
    .await
    .expect("the layout `sessionbus setup` makes");
    let mut workers = Vec::new();
    for (holder, executor) in executors {
        let host_config = host.clone().with_lease_holder(holder.to_owned());
        let connection = server.client().await.expect("connect");
        let host = JetStreamHost::connect(connection, executor, host_config).await.expect("host");
        let worker_connection = server.client().await.expect("connect");
        let worker = Worker::start(worker_connection, Arc::new(host), WorkerConfig::default().with_tool_events(true))
            .await
            .expect("worker");
        workers.push(worker);
    }
    let client = BusClient::new(server.client().await.expect("connect"), BusClientConfig::default());
    let raw = server.client().await.expect("connect");
    LashBus { client, raw, workers, server }
}

/// The bus's trace exporter on `bus`'s server, sending spans to the OTLP receiver at
/// `otlp_url`, until the returned sender is used or dropped.
pub async fn start_exporter(
    bus: &LashBus,
    otlp_url: &str,
) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let exporter = sessionbus_otel::export::otlp_exporter("sessionbus-exporter", Some(otlp_url)).expect("exporter");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let client = bus.server.client().await.expect("connect");
    let task = tokio::spawn(async move {
        let config = sessionbus_nats::jetstream::TraceExporterConfig::default().with_ack_wait(Duration::from_secs(3));
        sessionbus_nats::jetstream::run_trace_exporter(client, exporter, config, async {
            let _ = stopped.await;
        })
        .await
        .expect("exporter");
    });
    (stop, task)
}

/// A bus (server, one echo worker, a client) with the lash store's buckets too.
pub async fn bus_with_store() -> LashBus {
    let bus = bus_of(vec![("bus-worker", Arc::new(EchoExecutor) as Arc<dyn TurnExecutor>)]).await;
    let context = async_nats::jetstream::new(bus.raw.clone());
    ensure_store_layout(&context, &Subjects::default(), 1).await.expect("the store's buckets");
    bus
}

/// A lash runtime (the `lash-on-nats` peer, in process) on the JetStream store at
/// `url`, on the deployment's own sessions (no namespace), with every event it says
/// collected.
pub async fn lash_runtime(url: &str) -> (Peer, Arc<Mutex<Vec<Event>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    let config = PeerConfig {
        label: "lash".to_owned(),
        url: url.to_owned(),
        namespace: String::new(),
        script: script("two_processes.json"),
        lease_timings: lash_core::LeaseTimings::default(),
    };
    let peer =
        Peer::start(config, Arc::new(move |event| sink.lock().expect("events").push(event))).await.expect("peer");
    (peer, events)
}

/// Runs one turn on `session` with `text` as the user's input.
pub async fn turn(peer: &Peer, events: &Mutex<Vec<Event>>, session: &str, text: &str) {
    let input_id = uuid::Uuid::new_v4().to_string();
    peer.run(Command::Enqueue { session: session.to_owned(), input_id, text: text.to_owned() }).await;
    peer.run(Command::Drain { session: session.to_owned(), deadline_ms: 20_000 }).await;
    let events = events.lock().expect("events");
    let failed: Vec<_> = events.iter().filter(|event| matches!(event, Event::Failed { .. })).collect();
    assert!(failed.is_empty(), "the lash runtime failed: {failed:?}");
    assert!(events.iter().any(|event| matches!(event, Event::TurnDone { .. })), "no turn finished: {events:?}");
}

/// Every trace record stored for `session_id`, read from `SESSIONBUS_TRACE`.
pub async fn stored_trace_records(raw: &async_nats::Client, session_id: &str) -> Vec<TraceRecord> {
    let stream = async_nats::jetstream::new(raw.clone())
        .get_stream(sessionbus_nats::TRACE_STREAM)
        .await
        .expect("the trace stream");
    let subject = Subjects::default().trace(&sessionbus_nats::subjects::session_token(session_id).expect("token"));
    let mut records = Vec::new();
    let mut next = 1;
    while let Ok(message) = stream.direct_get_next_for_subject(&subject, Some(next)).await {
        records.push(serde_json::from_slice(&message.payload).expect("a stored record"));
        next = message.sequence + 1;
    }
    records
}

/// A new root session.
pub async fn new_session(client: &BusClient) -> String {
    let session_id = uuid::Uuid::new_v4().to_string();
    client.create_session(SessionCreateRequest::root(Some(session_id.clone()))).await.expect("create");
    session_id
}
