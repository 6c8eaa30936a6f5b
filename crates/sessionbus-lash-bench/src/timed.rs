//! [`TimedFactory`]: any lash `SessionStoreFactory`, with the latency of every
//! `commit_runtime_state` of its stores recorded. Every other call is passed through
//! unchanged, so each store behaves as it does without the bench.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lash_core::runtime::{QueuedWorkBatch, QueuedWorkBatchDraft, QueuedWorkClaim, QueuedWorkClaimBoundary};
use lash_core::store::{PersistedSessionRead, RuntimeCommitResult};
use lash_core::{
    AttachmentId, AttachmentIntent, AttachmentManifest, AttachmentManifestEntry, CheckpointKind, DurabilityTier,
    GcReport, LeaseOwnerIdentity, PendingTurnInput, PendingTurnInputCancelOutcome, PendingTurnInputCancelResult,
    PendingTurnInputCancelTarget, PendingTurnInputDraft, PendingTurnInputSuffixCancelOutcome, QueuedWorkStore,
    RuntimeCommit, RuntimePersistence, SessionCommitStore, SessionExecutionLease, SessionExecutionLeaseClaimOutcome,
    SessionExecutionLeaseCompletion, SessionExecutionLeaseFence, SessionExecutionLeaseStore, SessionMeta,
    SessionNodeRecord, SessionReadScope, SessionStoreCreateRequest, SessionStoreFactory, StoreError, StoreMaintenance,
    TurnInputApplication, TurnInputClaim, TurnInputStore, VacuumReport,
};
use sessionbus_api::sync::lock;

/// The commit latencies recorded by one [`TimedFactory`] (shared by its stores).
#[derive(Clone, Debug, Default)]
pub struct CommitLatencies(Arc<Mutex<Vec<Duration>>>);

impl CommitLatencies {
    fn record(&self, latency: Duration) {
        lock(&self.0).push(latency);
    }

    /// Every latency recorded so far, and forgets them.
    pub fn take(&self) -> Vec<Duration> {
        std::mem::take(&mut *lock(&self.0))
    }
}

/// A factory whose stores time their commits into [`TimedFactory::latencies`].
pub struct TimedFactory {
    inner: Arc<dyn SessionStoreFactory>,
    latencies: CommitLatencies,
}

impl TimedFactory {
    /// `inner`, timed.
    pub fn new(inner: Arc<dyn SessionStoreFactory>) -> Self {
        Self { inner, latencies: CommitLatencies::default() }
    }

    /// The latencies its stores record.
    pub fn latencies(&self) -> CommitLatencies {
        self.latencies.clone()
    }

    fn timed(&self, store: Arc<dyn RuntimePersistence>) -> Arc<dyn RuntimePersistence> {
        Arc::new(TimedStore { inner: store, latencies: self.latencies.clone() })
    }
}

#[async_trait::async_trait]
impl SessionStoreFactory for TimedFactory {
    fn durability_tier(&self) -> DurabilityTier {
        self.inner.durability_tier()
    }

    async fn create_store(&self, request: &SessionStoreCreateRequest) -> Result<Arc<dyn RuntimePersistence>, String> {
        self.inner.create_store(request).await.map(|store| self.timed(store))
    }

    async fn open_existing_store(
        &self,
        request: &SessionStoreCreateRequest,
    ) -> Result<Option<Arc<dyn RuntimePersistence>>, String> {
        Ok(self.inner.open_existing_store(request).await?.map(|store| self.timed(store)))
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

/// One store of a [`TimedFactory`]: its commits timed, everything else passed through.
struct TimedStore {
    inner: Arc<dyn RuntimePersistence>,
    latencies: CommitLatencies,
}

impl AttachmentManifest for TimedStore {
    fn record_intent(&self, intent: AttachmentIntent) -> Result<(), StoreError> {
        self.inner.record_intent(intent)
    }

    fn commit_refs(&self, session_id: &str, attachment_ids: &[AttachmentId]) -> Result<(), StoreError> {
        self.inner.commit_refs(session_id, attachment_ids)
    }

    fn list_uncommitted(&self, older_than_epoch_ms: u64) -> Result<Vec<AttachmentManifestEntry>, StoreError> {
        self.inner.list_uncommitted(older_than_epoch_ms)
    }

    fn forget_aged_uncommitted_intents(&self, intent_grace_cutoff_epoch_ms: u64) -> Result<(), StoreError> {
        self.inner.forget_aged_uncommitted_intents(intent_grace_cutoff_epoch_ms)
    }

    fn has_live_ref_for_id(
        &self,
        attachment_id: &AttachmentId,
        intent_grace_cutoff_epoch_ms: u64,
    ) -> Result<bool, StoreError> {
        self.inner.has_live_ref_for_id(attachment_id, intent_grace_cutoff_epoch_ms)
    }

    fn forget(&self, session_id: &str, attachment_id: &AttachmentId) -> Result<(), StoreError> {
        self.inner.forget(session_id, attachment_id)
    }

    fn holds_ref(&self, session_id: &str, attachment_id: &AttachmentId) -> Result<bool, StoreError> {
        self.inner.holds_ref(session_id, attachment_id)
    }

    fn list_all_refs(&self) -> Result<Vec<AttachmentId>, StoreError> {
        self.inner.list_all_refs()
    }
}

#[async_trait::async_trait]
impl SessionCommitStore for TimedStore {
    fn durability_tier(&self) -> DurabilityTier {
        self.inner.durability_tier()
    }

    async fn load_session(&self, scope: SessionReadScope) -> Result<Option<PersistedSessionRead>, StoreError> {
        self.inner.load_session(scope).await
    }

    async fn load_node(&self, node_id: &str) -> Result<Option<SessionNodeRecord>, StoreError> {
        self.inner.load_node(node_id).await
    }

    async fn commit_runtime_state(&self, commit: RuntimeCommit) -> Result<RuntimeCommitResult, StoreError> {
        let started = Instant::now();
        let result = self.inner.commit_runtime_state(commit).await;
        if result.is_ok() {
            self.latencies.record(started.elapsed());
        }
        result
    }

    async fn save_session_meta(&self, meta: SessionMeta) -> Result<(), StoreError> {
        self.inner.save_session_meta(meta).await
    }

    async fn load_session_meta(&self) -> Result<Option<SessionMeta>, StoreError> {
        self.inner.load_session_meta().await
    }
}

#[async_trait::async_trait]
impl TurnInputStore for TimedStore {
    async fn enqueue_pending_turn_input(&self, input: PendingTurnInputDraft) -> Result<PendingTurnInput, StoreError> {
        self.inner.enqueue_pending_turn_input(input).await
    }

    async fn list_pending_turn_inputs(&self, session_id: &str) -> Result<Vec<PendingTurnInput>, StoreError> {
        self.inner.list_pending_turn_inputs(session_id).await
    }

    async fn list_turn_input_applications(&self, session_id: &str) -> Result<Vec<TurnInputApplication>, StoreError> {
        self.inner.list_turn_input_applications(session_id).await
    }

    async fn cancel_pending_turn_input(
        &self,
        session_id: &str,
        input_id: &str,
    ) -> Result<PendingTurnInputCancelOutcome, StoreError> {
        self.inner.cancel_pending_turn_input(session_id, input_id).await
    }

    async fn cancel_pending_turn_inputs(
        &self,
        session_id: &str,
        targets: &[PendingTurnInputCancelTarget],
    ) -> Result<Vec<PendingTurnInputCancelResult>, StoreError> {
        self.inner.cancel_pending_turn_inputs(session_id, targets).await
    }

    async fn cancel_pending_turn_input_suffix(
        &self,
        session_id: &str,
        anchor: &PendingTurnInputCancelTarget,
    ) -> Result<PendingTurnInputSuffixCancelOutcome, StoreError> {
        self.inner.cancel_pending_turn_input_suffix(session_id, anchor).await
    }

    async fn claim_active_turn_inputs(
        &self,
        session_id: &str,
        session_execution_lease: &SessionExecutionLeaseFence,
        owner: &LeaseOwnerIdentity,
        turn_id: &str,
        checkpoint: CheckpointKind,
        max_inputs: usize,
    ) -> Result<Option<TurnInputClaim>, StoreError> {
        self.inner
            .claim_active_turn_inputs(session_id, session_execution_lease, owner, turn_id, checkpoint, max_inputs)
            .await
    }

    async fn claim_next_turn_inputs(
        &self,
        session_id: &str,
        session_execution_lease: &SessionExecutionLeaseFence,
        owner: &LeaseOwnerIdentity,
        max_inputs: usize,
    ) -> Result<Option<TurnInputClaim>, StoreError> {
        self.inner.claim_next_turn_inputs(session_id, session_execution_lease, owner, max_inputs).await
    }

    async fn abandon_turn_input_claim(&self, claim: &TurnInputClaim) -> Result<(), StoreError> {
        self.inner.abandon_turn_input_claim(claim).await
    }

    async fn abandon_turn_input_claims(&self, claims: &[TurnInputClaim]) -> Result<(), StoreError> {
        self.inner.abandon_turn_input_claims(claims).await
    }
}

#[async_trait::async_trait]
impl SessionExecutionLeaseStore for TimedStore {
    async fn try_claim_session_execution_lease(
        &self,
        session_id: &str,
        owner: &LeaseOwnerIdentity,
        lease_ttl_ms: u64,
    ) -> Result<SessionExecutionLeaseClaimOutcome, StoreError> {
        self.inner.try_claim_session_execution_lease(session_id, owner, lease_ttl_ms).await
    }

    async fn reclaim_session_execution_lease(
        &self,
        session_id: &str,
        owner: &LeaseOwnerIdentity,
        observed_holder: &SessionExecutionLeaseFence,
        lease_ttl_ms: u64,
    ) -> Result<SessionExecutionLeaseClaimOutcome, StoreError> {
        self.inner.reclaim_session_execution_lease(session_id, owner, observed_holder, lease_ttl_ms).await
    }

    async fn renew_session_execution_lease(
        &self,
        fence: &SessionExecutionLeaseFence,
        lease_ttl_ms: u64,
    ) -> Result<SessionExecutionLease, StoreError> {
        self.inner.renew_session_execution_lease(fence, lease_ttl_ms).await
    }

    async fn release_session_execution_lease(
        &self,
        completion: &SessionExecutionLeaseCompletion,
    ) -> Result<(), StoreError> {
        self.inner.release_session_execution_lease(completion).await
    }
}

#[async_trait::async_trait]
impl QueuedWorkStore for TimedStore {
    async fn enqueue_queued_work(&self, batch: QueuedWorkBatchDraft) -> Result<QueuedWorkBatch, StoreError> {
        self.inner.enqueue_queued_work(batch).await
    }

    async fn claim_leading_ready_session_command(
        &self,
        session_id: &str,
        session_execution_lease: &SessionExecutionLeaseFence,
        owner: &LeaseOwnerIdentity,
    ) -> Result<Option<QueuedWorkClaim>, StoreError> {
        self.inner.claim_leading_ready_session_command(session_id, session_execution_lease, owner).await
    }

    async fn claim_ready_queued_work(
        &self,
        session_id: &str,
        session_execution_lease: &SessionExecutionLeaseFence,
        owner: &LeaseOwnerIdentity,
        boundary: QueuedWorkClaimBoundary,
        max_batches: usize,
    ) -> Result<Option<QueuedWorkClaim>, StoreError> {
        self.inner.claim_ready_queued_work(session_id, session_execution_lease, owner, boundary, max_batches).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn claim_checkpoint_work(
        &self,
        session_id: &str,
        session_execution_lease: &SessionExecutionLeaseFence,
        owner: &LeaseOwnerIdentity,
        turn_id: &str,
        checkpoint: CheckpointKind,
        max_inputs: usize,
        max_batches: usize,
    ) -> Result<(Option<TurnInputClaim>, Option<QueuedWorkClaim>), StoreError> {
        self.inner
            .claim_checkpoint_work(
                session_id,
                session_execution_lease,
                owner,
                turn_id,
                checkpoint,
                max_inputs,
                max_batches,
            )
            .await
    }

    async fn claim_ready_queued_work_by_batch_ids(
        &self,
        session_id: &str,
        session_execution_lease: &SessionExecutionLeaseFence,
        owner: &LeaseOwnerIdentity,
        boundary: QueuedWorkClaimBoundary,
        batch_ids: &[String],
    ) -> Result<Option<QueuedWorkClaim>, StoreError> {
        self.inner
            .claim_ready_queued_work_by_batch_ids(session_id, session_execution_lease, owner, boundary, batch_ids)
            .await
    }

    async fn abandon_queued_work_claim(&self, claim: &QueuedWorkClaim) -> Result<(), StoreError> {
        self.inner.abandon_queued_work_claim(claim).await
    }

    async fn abandon_queued_work_claims(&self, claims: &[QueuedWorkClaim]) -> Result<(), StoreError> {
        self.inner.abandon_queued_work_claims(claims).await
    }

    async fn cancel_queued_work_batch(
        &self,
        session_id: &str,
        batch_id: &str,
    ) -> Result<Option<QueuedWorkBatch>, StoreError> {
        self.inner.cancel_queued_work_batch(session_id, batch_id).await
    }

    async fn list_queued_work(&self, session_id: &str) -> Result<Vec<QueuedWorkBatch>, StoreError> {
        self.inner.list_queued_work(session_id).await
    }

    async fn list_pending_queued_work(&self, session_id: &str) -> Result<Vec<QueuedWorkBatch>, StoreError> {
        self.inner.list_pending_queued_work(session_id).await
    }
}

#[async_trait::async_trait]
impl StoreMaintenance for TimedStore {
    async fn tombstone_nodes(&self, ids: &[String]) -> Result<(), StoreError> {
        self.inner.tombstone_nodes(ids).await
    }

    async fn vacuum(&self) -> Result<VacuumReport, StoreError> {
        self.inner.vacuum().await
    }

    async fn gc_unreachable(&self) -> Result<GcReport, StoreError> {
        self.inner.gc_unreachable().await
    }
}
