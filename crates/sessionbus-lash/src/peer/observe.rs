//! What the peer says about its stores: a [`StoreObserver`] turning the store's answers
//! into [`Event`]s, and a `SessionStoreFactory` whose stores are observed.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use lash_core::store::RuntimeCommitResult;
use lash_core::{
    AttachmentId, DurabilityTier, RuntimeCommit, RuntimePersistence, SessionExecutionLease,
    SessionExecutionLeaseClaimOutcome, SessionExecutionLeaseFence, SessionStoreCreateRequest, SessionStoreFactory,
    StoreError,
};

use super::protocol::{Event, commit_event, lease_event};
use crate::executor::capture::{CapturingStore, StoreObserver};

/// Where a peer's events go (the binary writes each as a JSON line on stdout).
pub type EventSink = Arc<dyn Fn(Event) + Send + Sync>;

/// Says every lease claim, refused renewal and commit answer as an [`Event`].
pub struct EventObserver(pub EventSink);

impl StoreObserver for EventObserver {
    fn lease_claimed(&self, session_id: &str, outcome: &Result<SessionExecutionLeaseClaimOutcome, StoreError>) {
        match outcome {
            Ok(outcome) => (self.0)(lease_event(session_id, outcome)),
            Err(err) => (self.0)(Event::Failed {
                session: Some(session_id.to_owned()),
                error: format!("claiming the session's execution lease failed: {err}"),
            }),
        }
    }

    fn lease_renewed(&self, fence: &SessionExecutionLeaseFence, outcome: &Result<SessionExecutionLease, StoreError>) {
        if let Err(err) = outcome {
            (self.0)(Event::LeaseLost {
                session: fence.session_id.clone(),
                fencing_token: fence.fencing_token,
                error: err.to_string(),
            });
        }
    }

    fn committed(&self, commit: &RuntimeCommit, outcome: &Result<RuntimeCommitResult, StoreError>, _: Duration) {
        (self.0)(commit_event(commit, outcome.as_ref().map(|result| result.head_revision)));
    }
}

/// A factory whose stores are `inner`'s, each observed by `observer`.
pub struct ObservedFactory {
    inner: Arc<dyn SessionStoreFactory>,
    observer: Arc<dyn StoreObserver>,
}

impl ObservedFactory {
    /// `inner`'s stores, observed by `observer`.
    pub fn new(inner: Arc<dyn SessionStoreFactory>, observer: Arc<dyn StoreObserver>) -> Self {
        Self { inner, observer }
    }

    fn observe(&self, store: Arc<dyn RuntimePersistence>) -> Arc<dyn RuntimePersistence> {
        CapturingStore::observed(store, Arc::clone(&self.observer))
    }
}

#[async_trait::async_trait]
impl SessionStoreFactory for ObservedFactory {
    fn durability_tier(&self) -> DurabilityTier {
        self.inner.durability_tier()
    }

    async fn create_store(&self, request: &SessionStoreCreateRequest) -> Result<Arc<dyn RuntimePersistence>, String> {
        Ok(self.observe(self.inner.create_store(request).await?))
    }

    async fn open_existing_store(
        &self,
        request: &SessionStoreCreateRequest,
    ) -> Result<Option<Arc<dyn RuntimePersistence>>, String> {
        Ok(self.inner.open_existing_store(request).await?.map(|store| self.observe(store)))
    }

    async fn delete_session(&self, session_id: &str) -> Result<(), String> {
        self.inner.delete_session(session_id).await
    }

    async fn live_attachment_refs(
        &self,
        intent_grace_cutoff_epoch_ms: u64,
    ) -> Result<BTreeSet<AttachmentId>, StoreError> {
        self.inner.live_attachment_refs(intent_grace_cutoff_epoch_ms).await
    }

    async fn has_live_attachment_ref(
        &self,
        attachment_id: &AttachmentId,
        intent_grace_cutoff_epoch_ms: u64,
    ) -> Result<bool, StoreError> {
        self.inner.has_live_attachment_ref(attachment_id, intent_grace_cutoff_epoch_ms).await
    }
}
