//! What the tests of lash turns on the bus share: a real nats-server, workers whose
//! executors run lash turns with the scripted provider and the demo tools, a client,
//! and the scripts in `tests/scripts`.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use sessionbus_api::{SessionCreateRequest, SessionLifecycleService as _};
use sessionbus_lash::executor::{DEFAULT_TOOL_TIMEOUT, LashExecutor, LashExecutorConfig};
use sessionbus_lash::provider::scripted::{Script, ScriptedProvider};
use sessionbus_nats::{BusClient, BusClientConfig, JetStreamHost, JetStreamHostConfig, Worker, WorkerConfig};
use sessionbus_testkit::NatsServer;

/// The script `tests/scripts/<name>`.
pub fn script(name: &str) -> Script {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts").join(name);
    Script::load(path.to_str().expect("a UTF-8 path")).expect("the script")
}

/// A server, lash workers and a client.
pub struct LashBus {
    pub client: BusClient,
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
    let server = NatsServer::start().expect("start nats-server");
    let setup = server.client().await.expect("connect");
    sessionbus_nats::jetstream::ensure_layout(
        &async_nats::jetstream::new(setup),
        &sessionbus_nats::Subjects::default(),
        &sessionbus_nats::jetstream::LayoutConfig::default(),
    )
    .await
    .expect("the layout");
    let mut workers = Vec::new();
    for holder in holders {
        let config = LashExecutorConfig::new(Box::new(provider.clone()), "scripted-model")
            .expect("config")
            .with_tool_timeout(tool_timeout);
        let host_config = JetStreamHostConfig::default().with_lease_holder((*holder).to_owned());
        let connection = server.client().await.expect("connect");
        let host =
            JetStreamHost::connect(connection, Arc::new(LashExecutor::new(config)), host_config).await.expect("host");
        let worker = Worker::start(server.client().await.expect("connect"), Arc::new(host), WorkerConfig::default())
            .await
            .expect("worker");
        workers.push(worker);
    }
    let client = BusClient::new(server.client().await.expect("connect"), BusClientConfig::default());
    LashBus { client, workers, server }
}

/// A new root session.
pub async fn new_session(client: &BusClient) -> String {
    let session_id = uuid::Uuid::new_v4().to_string();
    client.create_session(SessionCreateRequest::root(Some(session_id.clone()))).await.expect("create");
    session_id
}
