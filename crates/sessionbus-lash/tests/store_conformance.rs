//! lash's own conformance suites (lash-core `testing::conformance`, unchanged) against
//! the JetStream store, on one nats-server (R1). Each test is named after the suite.

mod store_support;

use std::sync::Arc;

use lash_core::testing::conformance::{self, ReopenableRuntimePersistence};
use lash_core::{DurabilityTier, RuntimePersistence, SessionStoreFactory};
use sessionbus_lash::store::JetStreamStore;
use store_support::{Deployment, ManualClock};

#[tokio::test]
async fn runtime_persistence_reopenable() {
    let deployment = Deployment::single().await;
    conformance::runtime_persistence_reopenable(|| {
        let key = format!("reopenable-{}", uuid::Uuid::new_v4());
        // `reopen` is another connection (another backend): a process opening the store anew.
        let open = JetStreamStore::open(deployment.backend(), key.clone(), deployment.clock()).expect("open");
        let reopen = JetStreamStore::open(deployment.backend(), key, deployment.clock()).expect("reopen");
        ReopenableRuntimePersistence {
            open: Arc::new(open) as Arc<dyn RuntimePersistence>,
            reopen: Arc::new(reopen) as Arc<dyn RuntimePersistence>,
        }
    })
    .await;
}

#[tokio::test]
async fn session_store_factory() {
    let deployment = Deployment::single().await;
    conformance::session_store_factory(
        || Arc::new(deployment.factory()) as Arc<dyn SessionStoreFactory>,
        DurabilityTier::Durable,
    )
    .await;
}

#[tokio::test]
async fn runtime_persistence_clock_expiry() {
    let deployment = Deployment::single().await;
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let store = JetStreamStore::open(deployment.backend(), "clock-expiry-store", clock.clone()).expect("open");
    conformance::runtime_persistence_clock_expiry(Arc::new(store), |ms| clock.advance(ms)).await;
}
