//! [`JetStreamStore`]: lash's `RuntimePersistence` on a JetStream log.

use std::sync::Arc;

use lash_core::{
    AttachmentId, AttachmentIntent, AttachmentManifest, AttachmentManifestEntry, CheckpointKind, Clock, DurabilityTier,
    GcReport, LeaseOwnerIdentity, PendingTurnInput, PendingTurnInputCancelResult, PendingTurnInputCancelTarget,
    PendingTurnInputDraft, PendingTurnInputSuffixCancelOutcome, QueuedWorkStore, RuntimeCommit, SessionCommitStore,
    SessionExecutionLease, SessionExecutionLeaseClaimOutcome, SessionExecutionLeaseCompletion,
    SessionExecutionLeaseFence, SessionExecutionLeaseStore, SessionMeta, SessionNodeRecord, SessionReadScope,
    StoreError, StoreMaintenance, TurnInputApplication, TurnInputClaim, TurnInputStore, VacuumReport,
};

use lash_core::runtime::{QueuedWorkBatch, QueuedWorkBatchDraft, QueuedWorkClaim, QueuedWorkClaimBoundary};
use lash_core::store::{PersistedSessionRead, RuntimeCommitResult};

use super::backend::{StoreBackend, backend};
use super::blobs;
use super::engine::Engine;
use super::ops::{Op, Output, Query};

/// lash's session store on JetStream (Durable tier): every change is a conditioned
/// append to the store's log, so any number of processes may open the same store
/// (by key) and see one order of changes. Cheap to clone.
#[derive(Clone)]
pub struct JetStreamStore {
    engine: Arc<Engine>,
}

impl std::fmt::Debug for JetStreamStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamStore").field("key", &self.engine.key).finish_non_exhaustive()
    }
}

fn unexpected(output: &Output) -> StoreError {
    backend(format!("the lash store answered a call with the wrong kind of result ({output:?}); this is a bug"))
}

/// Takes the expected variant out of an [`Output`].
macro_rules! expect {
    ($output:expr, $pattern:pat => $value:expr) => {
        match $output {
            $pattern => Ok($value),
            other => Err(unexpected(&other)),
        }
    };
}

impl JetStreamStore {
    /// Opens the store keyed `key` (a session id, or any id naming one store) on
    /// `backend`; its writes are stamped with `clock` (lash's injected clock, which
    /// decides lease and claim expiry).
    pub fn open(backend: Arc<StoreBackend>, key: impl Into<String>, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        Ok(Self { engine: Arc::new(Engine::new(backend, key.into(), clock)?) })
    }

    /// The key this store was opened with.
    pub fn key(&self) -> &str {
        &self.engine.key
    }

    /// True when anything was ever written to this store, or the session it is keyed
    /// by exists on the bus.
    pub async fn exists(&self) -> Result<bool, StoreError> {
        let engine = Arc::clone(&self.engine);
        self.engine.backend.run(async move { engine.exists().await }).await
    }

    async fn execute(&self, op: Op) -> Result<Output, StoreError> {
        let engine = Arc::clone(&self.engine);
        self.engine.backend.run(async move { engine.execute(op).await }).await
    }

    async fn query(&self, query: Query) -> Result<Output, StoreError> {
        let engine = Arc::clone(&self.engine);
        self.engine.backend.run(async move { engine.query(query).await }).await
    }

    fn execute_blocking(&self, op: Op) -> Result<Output, StoreError> {
        let engine = Arc::clone(&self.engine);
        self.engine.backend.run_blocking(async move { engine.execute(op).await })
    }

    fn query_blocking(&self, query: Query) -> Result<Output, StoreError> {
        let engine = Arc::clone(&self.engine);
        self.engine.backend.run_blocking(async move { engine.query(query).await })
    }

    /// Seeds the session meta unless the store has one (a factory's create).
    pub(crate) async fn seed_session_meta(&self, meta: SessionMeta) -> Result<(), StoreError> {
        expect!(self.execute(Op::SeedSessionMeta { meta }).await?, Output::Unit => ())
    }
}

impl AttachmentManifest for JetStreamStore {
    fn record_intent(&self, intent: AttachmentIntent) -> Result<(), StoreError> {
        expect!(self.execute_blocking(Op::RecordIntent { intent: intent.into() })?, Output::Unit => ())
    }

    fn commit_refs(&self, session_id: &str, attachment_ids: &[AttachmentId]) -> Result<(), StoreError> {
        let op = Op::CommitRefs { session_id: session_id.to_owned(), ids: attachment_ids.to_vec() };
        expect!(self.execute_blocking(op)?, Output::Unit => ())
    }

    fn list_uncommitted(&self, older_than_epoch_ms: u64) -> Result<Vec<AttachmentManifestEntry>, StoreError> {
        expect!(self.query_blocking(Query::ListUncommitted(older_than_epoch_ms))?, Output::Entries(entries) => entries)
    }

    fn forget_aged_uncommitted_intents(&self, intent_grace_cutoff_epoch_ms: u64) -> Result<(), StoreError> {
        let op = Op::ForgetAgedUncommittedIntents { cutoff_ms: intent_grace_cutoff_epoch_ms };
        expect!(self.execute_blocking(op)?, Output::Unit => ())
    }

    fn has_live_ref_for_id(
        &self,
        attachment_id: &AttachmentId,
        intent_grace_cutoff_epoch_ms: u64,
    ) -> Result<bool, StoreError> {
        let query = Query::HasLiveRefForId(attachment_id.clone(), intent_grace_cutoff_epoch_ms);
        expect!(self.query_blocking(query)?, Output::Flag(flag) => flag)
    }

    fn forget(&self, session_id: &str, attachment_id: &AttachmentId) -> Result<(), StoreError> {
        let op = Op::Forget { session_id: session_id.to_owned(), id: attachment_id.clone() };
        expect!(self.execute_blocking(op)?, Output::Unit => ())
    }

    fn holds_ref(&self, session_id: &str, attachment_id: &AttachmentId) -> Result<bool, StoreError> {
        let query = Query::HoldsRef(session_id.to_owned(), attachment_id.clone());
        expect!(self.query_blocking(query)?, Output::Flag(flag) => flag)
    }

    fn list_all_refs(&self) -> Result<Vec<AttachmentId>, StoreError> {
        expect!(self.query_blocking(Query::ListAllRefs)?, Output::Ids(ids) => ids)
    }
}

#[async_trait::async_trait]
impl SessionCommitStore for JetStreamStore {
    fn durability_tier(&self) -> DurabilityTier {
        DurabilityTier::Durable
    }

    async fn load_session(&self, scope: SessionReadScope) -> Result<Option<PersistedSessionRead>, StoreError> {
        expect!(self.query(Query::LoadSession(scope)).await?, Output::Session(read) => read.map(|read| *read))
    }

    async fn load_node(&self, node_id: &str) -> Result<Option<SessionNodeRecord>, StoreError> {
        expect!(self.query(Query::LoadNode(node_id.to_owned())).await?, Output::Node(node) => node.map(|node| *node))
    }

    async fn commit_runtime_state(&self, commit: RuntimeCommit) -> Result<RuntimeCommitResult, StoreError> {
        let op = Op::Commit { commit: Box::new(commit), blob: None };
        expect!(self.execute(op).await?, Output::Commit(result) => *result)
    }

    async fn save_session_meta(&self, meta: SessionMeta) -> Result<(), StoreError> {
        expect!(self.execute(Op::SaveSessionMeta { meta }).await?, Output::Unit => ())
    }

    async fn load_session_meta(&self) -> Result<Option<SessionMeta>, StoreError> {
        expect!(self.query(Query::LoadSessionMeta).await?, Output::Meta(meta) => meta.map(|meta| *meta))
    }
}

#[async_trait::async_trait]
impl TurnInputStore for JetStreamStore {
    async fn enqueue_pending_turn_input(&self, input: PendingTurnInputDraft) -> Result<PendingTurnInput, StoreError> {
        expect!(self.execute(Op::EnqueuePendingTurnInput { input }).await?, Output::PendingInput(input) => *input)
    }

    async fn list_pending_turn_inputs(&self, session_id: &str) -> Result<Vec<PendingTurnInput>, StoreError> {
        let query = Query::ListPendingTurnInputs(session_id.to_owned());
        expect!(self.query(query).await?, Output::PendingInputs(inputs) => inputs)
    }

    async fn list_turn_input_applications(&self, session_id: &str) -> Result<Vec<TurnInputApplication>, StoreError> {
        let query = Query::ListTurnInputApplications(session_id.to_owned());
        expect!(self.query(query).await?, Output::Applications(applications) => applications)
    }

    async fn cancel_pending_turn_inputs(
        &self,
        session_id: &str,
        targets: &[PendingTurnInputCancelTarget],
    ) -> Result<Vec<PendingTurnInputCancelResult>, StoreError> {
        let op = Op::CancelPendingTurnInputs { session_id: session_id.to_owned(), targets: targets.to_vec() };
        expect!(self.execute(op).await?, Output::CancelResults(results) => results)
    }

    async fn cancel_pending_turn_input_suffix(
        &self,
        session_id: &str,
        anchor: &PendingTurnInputCancelTarget,
    ) -> Result<PendingTurnInputSuffixCancelOutcome, StoreError> {
        let op = Op::CancelPendingTurnInputSuffix { session_id: session_id.to_owned(), anchor: anchor.clone() };
        expect!(self.execute(op).await?, Output::SuffixCancel(outcome) => *outcome)
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
        let op = Op::ClaimActiveTurnInputs {
            session_id: session_id.to_owned(),
            fence: session_execution_lease.clone(),
            owner: owner.clone(),
            turn_id: turn_id.to_owned(),
            checkpoint,
            max_inputs,
        };
        expect!(self.execute(op).await?, Output::InputClaim(claim) => claim.map(|claim| *claim))
    }

    async fn claim_next_turn_inputs(
        &self,
        session_id: &str,
        session_execution_lease: &SessionExecutionLeaseFence,
        owner: &LeaseOwnerIdentity,
        max_inputs: usize,
    ) -> Result<Option<TurnInputClaim>, StoreError> {
        let op = Op::ClaimNextTurnInputs {
            session_id: session_id.to_owned(),
            fence: session_execution_lease.clone(),
            owner: owner.clone(),
            max_inputs,
        };
        expect!(self.execute(op).await?, Output::InputClaim(claim) => claim.map(|claim| *claim))
    }

    async fn abandon_turn_input_claim(&self, claim: &TurnInputClaim) -> Result<(), StoreError> {
        let op = Op::AbandonTurnInputClaim { claim: Box::new(claim.clone()) };
        expect!(self.execute(op).await?, Output::Unit => ())
    }
}

#[async_trait::async_trait]
impl SessionExecutionLeaseStore for JetStreamStore {
    async fn try_claim_session_execution_lease(
        &self,
        session_id: &str,
        owner: &LeaseOwnerIdentity,
        lease_ttl_ms: u64,
    ) -> Result<SessionExecutionLeaseClaimOutcome, StoreError> {
        let op = Op::TryClaimLease { session_id: session_id.to_owned(), owner: owner.clone(), ttl_ms: lease_ttl_ms };
        expect!(self.execute(op).await?, Output::LeaseClaim(outcome) => *outcome)
    }

    async fn reclaim_session_execution_lease(
        &self,
        session_id: &str,
        owner: &LeaseOwnerIdentity,
        observed_holder: &SessionExecutionLeaseFence,
        lease_ttl_ms: u64,
    ) -> Result<SessionExecutionLeaseClaimOutcome, StoreError> {
        let op = Op::ReclaimLease {
            session_id: session_id.to_owned(),
            owner: owner.clone(),
            observed: observed_holder.clone(),
            ttl_ms: lease_ttl_ms,
        };
        expect!(self.execute(op).await?, Output::LeaseClaim(outcome) => *outcome)
    }

    async fn renew_session_execution_lease(
        &self,
        fence: &SessionExecutionLeaseFence,
        lease_ttl_ms: u64,
    ) -> Result<SessionExecutionLease, StoreError> {
        let op = Op::RenewLease { fence: fence.clone(), ttl_ms: lease_ttl_ms };
        expect!(self.execute(op).await?, Output::Lease(lease) => *lease)
    }

    async fn release_session_execution_lease(
        &self,
        completion: &SessionExecutionLeaseCompletion,
    ) -> Result<(), StoreError> {
        let op = Op::ReleaseLease { completion: completion.clone() };
        expect!(self.execute(op).await?, Output::Unit => ())
    }
}

#[async_trait::async_trait]
impl QueuedWorkStore for JetStreamStore {
    async fn enqueue_queued_work(&self, batch: QueuedWorkBatchDraft) -> Result<QueuedWorkBatch, StoreError> {
        expect!(self.execute(Op::EnqueueQueuedWork { batch }).await?, Output::Batch(batch) => *batch)
    }

    async fn claim_leading_ready_session_command(
        &self,
        session_id: &str,
        session_execution_lease: &SessionExecutionLeaseFence,
        owner: &LeaseOwnerIdentity,
    ) -> Result<Option<QueuedWorkClaim>, StoreError> {
        let op = Op::ClaimLeadingReadySessionCommand {
            session_id: session_id.to_owned(),
            fence: session_execution_lease.clone(),
            owner: owner.clone(),
        };
        expect!(self.execute(op).await?, Output::QueueClaim(claim) => claim.map(|claim| *claim))
    }

    async fn claim_ready_queued_work(
        &self,
        session_id: &str,
        session_execution_lease: &SessionExecutionLeaseFence,
        owner: &LeaseOwnerIdentity,
        boundary: QueuedWorkClaimBoundary,
        max_batches: usize,
    ) -> Result<Option<QueuedWorkClaim>, StoreError> {
        let op = Op::ClaimReadyQueuedWork {
            session_id: session_id.to_owned(),
            fence: session_execution_lease.clone(),
            owner: owner.clone(),
            boundary,
            max_batches,
        };
        expect!(self.execute(op).await?, Output::QueueClaim(claim) => claim.map(|claim| *claim))
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
        let op = Op::ClaimCheckpointWork {
            session_id: session_id.to_owned(),
            fence: session_execution_lease.clone(),
            owner: owner.clone(),
            turn_id: turn_id.to_owned(),
            checkpoint,
            max_inputs,
            max_batches,
        };
        expect!(
            self.execute(op).await?,
            Output::CheckpointClaims(inputs, queued) => (inputs.map(|claim| *claim), queued.map(|claim| *claim))
        )
    }

    async fn claim_ready_queued_work_by_batch_ids(
        &self,
        session_id: &str,
        session_execution_lease: &SessionExecutionLeaseFence,
        owner: &LeaseOwnerIdentity,
        boundary: QueuedWorkClaimBoundary,
        batch_ids: &[String],
    ) -> Result<Option<QueuedWorkClaim>, StoreError> {
        let op = Op::ClaimReadyQueuedWorkByBatchIds {
            session_id: session_id.to_owned(),
            fence: session_execution_lease.clone(),
            owner: owner.clone(),
            boundary,
            batch_ids: batch_ids.to_vec(),
        };
        expect!(self.execute(op).await?, Output::QueueClaim(claim) => claim.map(|claim| *claim))
    }

    async fn abandon_queued_work_claim(&self, claim: &QueuedWorkClaim) -> Result<(), StoreError> {
        let op = Op::AbandonQueuedWorkClaim { claim: Box::new(claim.clone()) };
        expect!(self.execute(op).await?, Output::Unit => ())
    }

    async fn cancel_queued_work_batch(
        &self,
        session_id: &str,
        batch_id: &str,
    ) -> Result<Option<QueuedWorkBatch>, StoreError> {
        let op = Op::CancelQueuedWorkBatch { session_id: session_id.to_owned(), batch_id: batch_id.to_owned() };
        expect!(self.execute(op).await?, Output::MaybeBatch(batch) => batch.map(|batch| *batch))
    }

    async fn list_queued_work(&self, session_id: &str) -> Result<Vec<QueuedWorkBatch>, StoreError> {
        expect!(self.query(Query::ListQueuedWork(session_id.to_owned())).await?, Output::Batches(batches) => batches)
    }

    async fn list_pending_queued_work(&self, session_id: &str) -> Result<Vec<QueuedWorkBatch>, StoreError> {
        let query = Query::ListPendingQueuedWork(session_id.to_owned());
        expect!(self.query(query).await?, Output::Batches(batches) => batches)
    }
}

#[async_trait::async_trait]
impl StoreMaintenance for JetStreamStore {
    async fn tombstone_nodes(&self, ids: &[String]) -> Result<(), StoreError> {
        expect!(self.execute(Op::TombstoneNodes { ids: ids.to_vec() }).await?, Output::Unit => ())
    }

    async fn vacuum(&self) -> Result<VacuumReport, StoreError> {
        expect!(self.execute(Op::Vacuum).await?, Output::Vacuum(report) => report)
    }

    async fn gc_unreachable(&self) -> Result<GcReport, StoreError> {
        let engine = Arc::clone(&self.engine);
        self.engine
            .backend
            .run(async move {
                let live = engine.live_blob().await?;
                blobs::collect(&engine.backend, &engine.key, live.as_deref()).await
            })
            .await
    }
}
