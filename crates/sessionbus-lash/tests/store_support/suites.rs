//! lash's suites, called as lash-postgres-store and lash-sqlite-store call them, on a
//! [`Deployment`].

use std::sync::Arc;

use lash_core::testing::conformance::{
    self, ReopenableAttachmentStore, ReopenableProcessExecutionEnvStore, ReopenableRuntimePersistence,
};
use lash_core::{
    AttachmentStore, AttachmentStorePersistence, DurabilityTier, ProcessExecutionEnvStore, RuntimePersistence,
    SessionStoreFactory,
};
use sessionbus_lash::store::{JetStreamAttachmentStore, JetStreamProcessEnvStore, JetStreamStore};

use super::{Deployment, ManualClock};

/// `runtime_persistence_reopenable`: `reopen` is another backend (its own connection
/// and runtime), as a process opening the store anew.
pub async fn runtime_persistence_reopenable(deployment: &Deployment) {
    conformance::runtime_persistence_reopenable(|| {
        let key = format!("reopenable-{}", uuid::Uuid::new_v4());
        let open = JetStreamStore::open(deployment.backend(), key.clone(), deployment.clock()).expect("open");
        let reopen = JetStreamStore::open(deployment.backend(), key, deployment.clock()).expect("reopen");
        ReopenableRuntimePersistence {
            open: Arc::new(open) as Arc<dyn RuntimePersistence>,
            reopen: Arc::new(reopen) as Arc<dyn RuntimePersistence>,
        }
    })
    .await;
}

/// `session_store_factory(.., DurabilityTier::Durable)`, a fresh factory namespace per call.
pub async fn session_store_factory(deployment: &Deployment) {
    conformance::session_store_factory(
        || Arc::new(deployment.factory()) as Arc<dyn SessionStoreFactory>,
        DurabilityTier::Durable,
    )
    .await;
}

/// `runtime_persistence_clock_expiry` with lash's injected clock moved by the suite.
pub async fn runtime_persistence_clock_expiry(deployment: &Deployment) {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let store = JetStreamStore::open(deployment.backend(), "clock-expiry-store", clock.clone()).expect("open");
    conformance::runtime_persistence_clock_expiry(Arc::new(store), |ms| clock.advance(ms)).await;
}

/// `attachment_store_reopenable(.., Durable)`, a fresh namespace per call.
pub async fn attachment_store_reopenable(deployment: &Deployment) {
    conformance::attachment_store_reopenable(
        || {
            let namespace = format!("{}-", uuid::Uuid::new_v4().simple());
            let open = JetStreamAttachmentStore::new(deployment.backend()).with_namespace(namespace.clone());
            let reopen = JetStreamAttachmentStore::new(deployment.backend()).with_namespace(namespace);
            ReopenableAttachmentStore {
                open: Arc::new(open) as Arc<dyn AttachmentStore>,
                reopen: Arc::new(reopen) as Arc<dyn AttachmentStore>,
            }
        },
        AttachmentStorePersistence::Durable,
    )
    .await;
}

/// `process_execution_env_store_reopenable`, a fresh namespace per call.
pub async fn process_execution_env_store_reopenable(deployment: &Deployment) {
    conformance::process_execution_env_store_reopenable(|| {
        let namespace = uuid::Uuid::new_v4().simple().to_string();
        let open = JetStreamProcessEnvStore::new(deployment.backend()).with_namespace(namespace.clone());
        let reopen = JetStreamProcessEnvStore::new(deployment.backend()).with_namespace(namespace);
        ReopenableProcessExecutionEnvStore {
            open: Arc::new(open) as Arc<dyn ProcessExecutionEnvStore>,
            reopen: Arc::new(reopen) as Arc<dyn ProcessExecutionEnvStore>,
        }
    })
    .await;
}
