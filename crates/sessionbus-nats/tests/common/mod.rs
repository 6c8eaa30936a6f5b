//! Shared test setup: a real nats-server per test and the stacks under test.

#![allow(dead_code)]

use std::sync::Arc;

use sessionbus_api::TurnExecutor;
use sessionbus_nats::{JetStreamHost, JetStreamHostConfig};
use sessionbus_testkit::NatsServer;

/// A server and a JetStream host on it.
pub struct JetStreamStack {
    pub server: NatsServer,
    pub host: JetStreamHost,
}

pub async fn jetstream_host(executor: Arc<dyn TurnExecutor>) -> JetStreamStack {
    let server = NatsServer::start().expect("start nats-server");
    let client = server.client().await.expect("connect");
    let host = JetStreamHost::connect(client, executor, JetStreamHostConfig::default()).await.expect("host");
    JetStreamStack { server, host }
}
