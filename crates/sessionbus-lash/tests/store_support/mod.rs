//! What the store tests share: a deployment (nats-server with the bus's and the store's
//! layout), store backends on it, and a clock the test moves.

#![allow(dead_code)]

pub mod suites;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lash_core::Clock;
use sessionbus_lash::store::{JetStreamStoreFactory, StoreBackend, StoreBackendConfig, ensure_store_layout};
use sessionbus_nats::Subjects;
use sessionbus_testkit::{NatsCluster, NatsServer};

/// A nats-server (or a 3-node cluster) with the store's layout.
pub struct Deployment {
    url: String,
    _server: Option<NatsServer>,
    _cluster: Option<NatsCluster>,
}

impl Deployment {
    /// One server, streams with one replica (R1).
    pub async fn single() -> Self {
        let server = NatsServer::start().expect("start nats-server");
        let url = server.url();
        let deployment = Self { url, _server: Some(server), _cluster: None };
        deployment.ensure_layout(1).await;
        deployment
    }

    /// A 3-node cluster, streams with three replicas (R3).
    pub async fn cluster() -> Self {
        let cluster = NatsCluster::start().await.expect("start a 3-node cluster");
        let url = cluster.nats_url();
        let deployment = Self { url, _server: None, _cluster: Some(cluster) };
        deployment.ensure_layout(3).await;
        deployment
    }

    async fn ensure_layout(&self, replicas: usize) {
        let client =
            async_nats::connect(sessionbus_lash::store::server_addrs(&self.url).expect("urls")).await.expect("connect");
        let context = async_nats::jetstream::new(client);
        let subjects = Subjects::default();
        let layout = sessionbus_nats::jetstream::LayoutConfig::default().with_replicas(replicas);
        sessionbus_nats::jetstream::ensure_layout(&context, &subjects, &layout).await.expect("the bus's layout");
        ensure_store_layout(&context, &subjects, replicas).await.expect("the store's layout");
    }

    /// The server URL(s).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// A new backend (its own connection and runtime): what a new process opens.
    pub fn backend(&self) -> Arc<StoreBackend> {
        StoreBackend::connect(StoreBackendConfig::new(self.url.clone())).expect("connect a store backend")
    }

    /// A bus host (what a worker serves bus ops with) on the deployment.
    pub async fn bus_host(&self) -> sessionbus_nats::JetStreamHost {
        let client =
            async_nats::connect(sessionbus_lash::store::server_addrs(&self.url).expect("urls")).await.expect("connect");
        let executor = Arc::new(sessionbus_api::EchoExecutor) as Arc<dyn sessionbus_api::TurnExecutor>;
        sessionbus_nats::JetStreamHost::connect(client, executor, sessionbus_nats::JetStreamHostConfig::default())
            .await
            .expect("a bus host")
    }

    /// The system clock, as lash's runtime injects it by default.
    pub fn clock(&self) -> Arc<dyn Clock> {
        Arc::new(lash_core::SystemClock)
    }

    /// A fresh, empty factory (its own namespace) on a new backend.
    pub fn factory(&self) -> JetStreamStoreFactory {
        JetStreamStoreFactory::new(self.backend(), self.clock())
            .with_namespace(format!("{}-", uuid::Uuid::new_v4().simple()))
    }
}

/// A wall clock the test sets (lash's conformance clock, as lash-sqlite-store's test
/// builds it).
#[derive(Debug)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock at `timestamp_ms`.
    pub fn new(timestamp_ms: u64) -> Self {
        Self(AtomicU64::new(timestamp_ms))
    }

    /// Moves the clock on by `ms`.
    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl Clock for ManualClock {
    fn now(&self) -> std::time::Instant {
        std::time::Instant::now()
    }

    fn timestamp_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    fn timestamp_rfc3339(&self) -> String {
        self.timestamp_datetime().to_rfc3339()
    }

    fn timestamp_datetime(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from(std::time::UNIX_EPOCH + Duration::from_millis(self.timestamp_ms()))
    }

    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }

    async fn sleep_until(&self, deadline: std::time::Instant) {
        tokio::time::sleep_until(deadline.into()).await;
    }
}
