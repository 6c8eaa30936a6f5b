//! The conformance suite, unchanged, against every NATS-backed stack, each on its own
//! testkit server: (a) JetStreamHost directly, (b) BusClient -> Worker ->
//! JetStreamHost, (c) BusClient -> Worker -> InMemoryHost, (d) stack (b) with two
//! workers in the queue group. For (d), one more test runs every check in turn on
//! two-worker stacks and asserts, from each worker's `$SRV.STATS`, that both workers
//! served calls (a queue group that sent everything to one worker would fail it).

mod common;

use std::sync::{Arc, Mutex};

use futures::StreamExt as _;

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

/// Two-worker stacks whose workers' served requests are counted (from `$SRV.STATS`)
/// before the stack is dropped.
#[derive(Default)]
struct CountedTwoWorkers {
    /// Stacks not yet counted.
    stacks: Mutex<Vec<Arc<common::BusParts>>>,
    /// Requests served by the first and the second worker of each stack, per stack.
    served: Mutex<Vec<[u64; 2]>>,
}

impl CountedTwoWorkers {
    /// Counts, then drops, the stacks of the checks that are over (each check builds one
    /// stack, so when the next one asks for a stack the previous ones are done).
    async fn count_finished(&self) {
        let stacks: Vec<_> = std::mem::take(&mut *self.stacks.lock().unwrap());
        for stack in stacks {
            let nats = stack.server.client().await.expect("connect");
            // Every instance of the service answers `$SRV.INFO` (with its worker id in its
            // metadata): wait for both (bounded), then ask each for its stats.
            let inbox = nats.new_inbox();
            let mut replies = nats.subscribe(inbox.clone()).await.expect("subscribe");
            nats.publish_with_reply("$SRV.INFO.sessionbus", inbox, "".into()).await.expect("publish");
            let mut served = [0u64; 2];
            for _ in 0..2 {
                let reply = tokio::time::timeout(std::time::Duration::from_secs(10), replies.next())
                    .await
                    .expect("both workers answer $SRV.INFO")
                    .expect("a reply");
                let info: serde_json::Value = serde_json::from_slice(&reply.payload).expect("info json");
                let worker_id = info["metadata"]["worker_id"].as_str().expect("the worker id in the metadata");
                let position = stack.workers.iter().position(|w| w.id() == worker_id).expect("a worker of this stack");
                let service_id = info["id"].as_str().expect("the service instance id");
                let reply =
                    nats.request(format!("$SRV.STATS.sessionbus.{service_id}"), "".into()).await.expect("$SRV.STATS");
                let stats: serde_json::Value = serde_json::from_slice(&reply.payload).expect("stats json");
                served[position] = stats["endpoints"]
                    .as_array()
                    .expect("endpoints")
                    .iter()
                    .map(|e| e["num_requests"].as_u64().unwrap_or(0))
                    .sum();
            }
            self.served.lock().unwrap().push(served);
        }
    }
}

#[async_trait::async_trait]
impl HostFactory for &CountedTwoWorkers {
    async fn host(&self, executor: Arc<dyn TurnExecutor>) -> Arc<dyn ConformanceHost> {
        self.count_finished().await;
        let stack = common::bus_over_jetstream(executor, 2).await;
        let parts = Arc::clone(&stack.keep).downcast::<common::BusParts>().expect("the stack's parts");
        self.stacks.lock().unwrap().push(parts);
        Arc::new(stack)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_workers_of_the_two_worker_stack_serve_the_conformance_checks() {
    let counted = CountedTwoWorkers::default();
    sessionbus_api::conformance_tests!(sequentially & counted).await;
    counted.count_finished().await;
    let served = counted.served.lock().unwrap().clone();
    let first: u64 = served.iter().map(|s| s[0]).sum();
    let second: u64 = served.iter().map(|s| s[1]).sum();
    let both = served.iter().filter(|s| s[0] > 0 && s[1] > 0).count();
    println!(
        "two-worker stacks: {} checks; requests served by the first worker {first}, by the second {second}; \
         {both} checks served by both",
        served.len()
    );
    assert_eq!(served.len(), sessionbus_api::conformance_tests!(count), "every check ran on its own two-worker stack");
    assert!(first > 0 && second > 0, "one worker served nothing: first {first}, second {second}");
    assert!(both > 0, "no check was served by both workers: {served:?}");
}
