//! [`CapturingStore`]: a lash session store that keeps every `RuntimeCommit` a turn makes
//! (the executor hands them to the bus, decision 0009) and tells a [`StoreObserver`] what
//! the store answered to each lease claim and commit (the `lash-on-nats` binary prints
//! them as what lash acknowledged).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lash_core::{
    AttachmentId, AttachmentIntent, AttachmentManifest, AttachmentManifestEntry, CheckpointKind, DurabilityTier,
    GcReport, InMemorySessionStore, LeaseOwnerIdentity, PendingTurnInput, PendingTurnInputCancelResult,
    PendingTurnInputCancelTarget, PendingTurnInputDraft, PendingTurnInputSuffixCancelOutcome, QueuedWorkStore,
    RuntimeCommit, RuntimePersistence, SessionCommitStore, SessionExecutionLease, SessionExecutionLeaseClaimOutcome,
    SessionExecutionLeaseCompletion, SessionExecutionLeaseFence, SessionExecutionLeaseStore, SessionMeta,
    SessionNodeRecord, SessionReadScope, StoreError, StoreMaintenance, TurnInputApplication, TurnInputClaim,
    TurnInputStore, VacuumReport,
};

use lash_core::runtime::{QueuedWorkBatch, QueuedWorkBatchDraft, QueuedWorkClaim, QueuedWorkClaimBoundary};
use lash_core::store::{PersistedSessionRead, RuntimeCommitResult};

/// Told what the store answered, right after it answered and before lash sees it.
pub trait StoreObserver: Send + Sync {
    /// A claim (or a reclaim) of the session's execution lease was answered.
    fn lease_claimed(&self, session_id: &str, outcome: &Result<SessionExecutionLeaseClaimOutcome, StoreError>);

    /// A renewal of the session's execution lease was answered.
    fn lease_renewed(&self, fence: &SessionExecutionLeaseFence, outcome: &Result<SessionExecutionLease, StoreError>);

    /// A commit was answered: stored (`Ok`) or refused, `elapsed` after it was handed to
    /// the store.
    fn committed(&self, commit: &RuntimeCommit, outcome: &Result<RuntimeCommitResult, StoreError>, elapsed: Duration);
}

/// A lash session store `S`: lash's in-memory store keeping a copy of every commit lash
/// makes through it ([`CapturingStore::new`]), or any store telling a [`StoreObserver`]
/// what it answered ([`CapturingStore::observed`]). Every call is `S`'s answer; nothing
/// here decides.
pub struct CapturingStore<S: ?Sized = InMemorySessionStore> {
    inner: Arc<S>,
    /// `None` for an observed store, which keeps no copies.
    commits: Option<Mutex<Vec<RuntimeCommit>>>,
    observer: Option<Arc<dyn StoreObserver>>,
}

impl CapturingStore {
    /// An empty in-memory store, shared by the session lash opens for one turn and the
    /// executor.
    pub fn new() -> Arc<Self> {
        Arc::new(Self { inner: Arc::new(InMemorySessionStore::new()), commits: Some(Mutex::default()), observer: None })
    }

    /// The commits lash made so far, in order, taken out of the store.
    pub fn take_commits(&self) -> Vec<RuntimeCommit> {
        match self.commits.as_ref().map(Mutex::lock) {
            Some(Ok(mut commits)) => std::mem::take(&mut *commits),
            Some(Err(poisoned)) => std::mem::take(&mut *poisoned.into_inner()),
            None => Vec::new(),
        }
    }
}

impl<S: RuntimePersistence + ?Sized> CapturingStore<S> {
    /// `inner`, with what it answers told to `observer` (keeping no copies of commits).
    pub fn observed(inner: Arc<S>, observer: Arc<dyn StoreObserver>) -> Arc<Self> {
        Arc::new(Self { inner, commits: None, observer: Some(observer) })
    }

    fn claimed(
        &self,
        session_id: &str,
        outcome: Result<SessionExecutionLeaseClaimOutcome, StoreError>,
    ) -> Result<SessionExecutionLeaseClaimOutcome, StoreError> {
        if let Some(observer) = &self.observer {
            observer.lease_claimed(session_id, &outcome);
        }
        outcome
    }
}

impl<S: RuntimePersistence + ?Sized> AttachmentManifest for CapturingStore<S> {
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
impl<S: RuntimePersistence + ?Sized> SessionCommitStore for CapturingStore<S> {
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
        let sent = commit.clone();
        let started = Instant::now();
        let result = self.inner.commit_runtime_state(sent).await;
        if let Some(observer) = &self.observer {
            observer.committed(&commit, &result, started.elapsed());
        }
        let result = result?;
        match self.commits.as_ref().map(Mutex::lock) {
            Some(Ok(mut commits)) => commits.push(commit),
            Some(Err(poisoned)) => poisoned.into_inner().push(commit),
            None => {}
        }
        Ok(result)
    }

    async fn save_session_meta(&self, meta: SessionMeta) -> Result<(), StoreError> {
        self.inner.save_session_meta(meta).await
    }

    async fn load_session_meta(&self) -> Result<Option<SessionMeta>, StoreError> {
        self.inner.load_session_meta().await
    }
}

#[async_trait::async_trait]
impl<S: RuntimePersistence + ?Sized> TurnInputStore for CapturingStore<S> {
    async fn enqueue_pending_turn_input(&self, input: PendingTurnInputDraft) -> Result<PendingTurnInput, StoreError> {
        self.inner.enqueue_pending_turn_input(input).await
    }

    async fn list_pending_turn_inputs(&self, session_id: &str) -> Result<Vec<PendingTurnInput>, StoreError> {
        self.inner.list_pending_turn_inputs(session_id).await
    }

    async fn list_turn_input_applications(&self, session_id: &str) -> Result<Vec<TurnInputApplication>, StoreError> {
        self.inner.list_turn_input_applications(session_id).await
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
}

#[async_trait::async_trait]
impl<S: RuntimePersistence + ?Sized> SessionExecutionLeaseStore for CapturingStore<S> {
    async fn try_claim_session_execution_lease(
        &self,
        session_id: &str,
        owner: &LeaseOwnerIdentity,
        lease_ttl_ms: u64,
    ) -> Result<SessionExecutionLeaseClaimOutcome, StoreError> {
        let outcome = self.inner.try_claim_session_execution_lease(session_id, owner, lease_ttl_ms).await;
        self.claimed(session_id, outcome)
    }

    async fn reclaim_session_execution_lease(
        &self,
        session_id: &str,
        owner: &LeaseOwnerIdentity,
        observed_holder: &SessionExecutionLeaseFence,
        lease_ttl_ms: u64,
    ) -> Result<SessionExecutionLeaseClaimOutcome, StoreError> {
        let outcome =
            self.inner.reclaim_session_execution_lease(session_id, owner, observed_holder, lease_ttl_ms).await;
        self.claimed(session_id, outcome)
    }

    async fn renew_session_execution_lease(
        &self,
        fence: &SessionExecutionLeaseFence,
        lease_ttl_ms: u64,
    ) -> Result<SessionExecutionLease, StoreError> {
        let outcome = self.inner.renew_session_execution_lease(fence, lease_ttl_ms).await;
        if let Some(observer) = &self.observer {
            observer.lease_renewed(fence, &outcome);
        }
        outcome
    }

    async fn release_session_execution_lease(
        &self,
        completion: &SessionExecutionLeaseCompletion,
    ) -> Result<(), StoreError> {
        self.inner.release_session_execution_lease(completion).await
    }
}

#[async_trait::async_trait]
impl<S: RuntimePersistence + ?Sized> QueuedWorkStore for CapturingStore<S> {
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
impl<S: RuntimePersistence + ?Sized> StoreMaintenance for CapturingStore<S> {
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
