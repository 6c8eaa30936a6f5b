//! What the tests of lash turns on the bus share: a real nats-server, workers whose
//! executors run lash turns with the scripted provider and the demo tools, a client,
//! and the scripts in `tests/scripts`.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use sessionbus_api::{SessionCreateRequest, SessionLifecycleService as _, TraceRecord, TurnExecutor};
use sessionbus_lash::executor::{DEFAULT_TOOL_TIMEOUT, LashExecutor, LashExecutorConfig};
use sessionbus_lash::provider::scripted::{Script, ScriptedProvider};
use sessionbus_nats::{BusClient, BusClientConfig, JetStreamHost, JetStreamHostConfig, Subjects, Worker, WorkerConfig};
use sessionbus_testkit::NatsServer;

/// The script `tests/scripts/<name>`.
pub fn script(name: &str) -> Script {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts").join(name);
    Script::load(path.to_str().expect("a UTF-8 path")).expect("the script")
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
    lash_bus_with(provider, holders, DEFAULT_TOOL_TIMEOUT).await
}

/// [`lash_bus`] with each tool call limited to `tool_timeout`.
pub async fn lash_bus_with(provider: &ScriptedProvider, holders: &[&str], tool_timeout: Duration) -> LashBus {
    let executors = holders
        .iter()
        .map(|holder| {
            let config = LashExecutorConfig::new(Box::new(provider.clone()), "scripted-model")
                .expect("config")
                .with_tool_timeout(tool_timeout);
            (*holder, Arc::new(LashExecutor::new(config)) as Arc<dyn TurnExecutor>)
        })
        .collect();
    bus_of(executors).await
}

/// A worker per `(lease holder, executor)`, on a fresh server with the layout
/// `sessionbus setup` makes; workers learn tool generations from JetStream events.
pub async fn bus_of(executors: Vec<(&str, Arc<dyn TurnExecutor>)>) -> LashBus {
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
        let host_config = JetStreamHostConfig::default().with_lease_holder(holder.to_owned());
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
