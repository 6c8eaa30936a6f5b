//! The conformance suite, unchanged, against every NATS-backed stack, each on its own
//! testkit server: (a) JetStreamHost directly, (b) BusClient -> Worker ->
//! JetStreamHost, (c) BusClient -> Worker -> InMemoryHost, (d) stack (b) with two
//! workers in the queue group.

mod common;

use std::sync::Arc;

use sessionbus_api::TurnExecutor;
use sessionbus_api::conformance::{ConformanceHost, HostFactory};

struct Direct;

#[async_trait::async_trait]
impl HostFactory for Direct {
    async fn host(&self, executor: Arc<dyn TurnExecutor>) -> Arc<dyn ConformanceHost> {
        let server = common::server();
        let host = common::jetstream_host_on(&server, executor).await;
        Arc::new(common::Kept { host, keep: Arc::new(server) })
    }
}

struct BusJetStream(usize);

#[async_trait::async_trait]
impl HostFactory for BusJetStream {
    async fn host(&self, executor: Arc<dyn TurnExecutor>) -> Arc<dyn ConformanceHost> {
        Arc::new(common::bus_over_jetstream(executor, self.0).await)
    }
}

struct BusMemory;

#[async_trait::async_trait]
impl HostFactory for BusMemory {
    async fn host(&self, executor: Arc<dyn TurnExecutor>) -> Arc<dyn ConformanceHost> {
        Arc::new(common::bus_over_memory(executor).await)
    }
}

mod jetstream_direct {
    sessionbus_api::conformance_tests!(super::Direct);
}

mod bus_jetstream {
    sessionbus_api::conformance_tests!(super::BusJetStream(1));
}

mod bus_memory {
    sessionbus_api::conformance_tests!(super::BusMemory);
}

mod bus_two_workers {
    sessionbus_api::conformance_tests!(super::BusJetStream(2));
}
