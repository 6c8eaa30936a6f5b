//! The durable peers of the JetStream session store: lash's attachment-store and
//! process-env-store suites (unchanged) against the object store and the KV bucket, and
//! a `LashCore` with all three passing `build()`'s Durable peer-coherence check.

mod store_support;

use std::sync::Arc;

use lash_core::{AttachmentStore, DurabilityTier, SessionStoreFactory};
use sessionbus_lash::store::{JetStreamAttachmentStore, JetStreamProcessEnvStore};
use store_support::{Deployment, suites};

#[tokio::test]
async fn attachment_store_reopenable() {
    suites::attachment_store_reopenable(&Deployment::single().await).await;
}

#[tokio::test]
async fn process_execution_env_store_reopenable() {
    suites::process_execution_env_store_reopenable(&Deployment::single().await).await;
}

#[tokio::test]
async fn a_lash_core_with_the_jetstream_stores_builds_at_the_durable_tier() {
    let deployment = Deployment::single().await;
    let backend = deployment.backend();
    let factory: Arc<dyn SessionStoreFactory> = Arc::new(deployment.factory());
    assert_eq!(factory.durability_tier(), DurabilityTier::Durable);
    let model =
        lash_core::ModelSpec::from_token_limits("scripted", Default::default(), 200_000, None).expect("a model spec");
    let builder = |attachments: Arc<dyn AttachmentStore>| {
        lash::LashCore::standard_builder()
            .model(model.clone())
            .store_factory(Arc::clone(&factory))
            .attachment_store(attachments)
            .process_env_store(Arc::new(JetStreamProcessEnvStore::new(backend.clone())))
            .effect_host(Arc::new(lash_core::InlineEffectHost::default()))
    };
    if let Err(err) = builder(Arc::new(JetStreamAttachmentStore::new(backend.clone()))).build() {
        panic!("a LashCore on the JetStream stores must build at the Durable tier: {err}");
    }
    // The same build with lash's in-memory attachment store is refused: the check ran.
    match builder(Arc::new(lash_core::InMemoryAttachmentStore::new())).build() {
        Err(lash::EmbedError::DurableStorePeerRequired { facet: "attachment store" }) => {}
        Err(err) => panic!("expected the attachment store to be refused as an inline peer, got: {err}"),
        Ok(_) => panic!("a Durable session store with an in-memory attachment store must not build"),
    }
}
