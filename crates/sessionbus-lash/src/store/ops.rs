//! The store's operations: [`Op`]s change state and are appended to the log, [`Query`]s
//! only read. Applying either to a [`lash_core::InMemorySessionStore`] (lash's own
//! reference implementation of the contract) gives the store's answer; replaying the
//! log in order rebuilds the same state in any process.

use lash_core::runtime::{QueuedWorkBatchDraft, QueuedWorkClaim, QueuedWorkClaimBoundary};
use lash_core::store::GraphCommitDelta;
use lash_core::{
    AttachmentId, AttachmentIntent, AttachmentManifest as _, AttachmentOwnerKind, CheckpointKind, InMemorySessionStore,
    LeaseOwnerIdentity, PendingTurnInputCancelTarget, PendingTurnInputDraft, QueuedWorkStore as _, RuntimeCommit,
    SessionCommitStore as _, SessionExecutionLeaseCompletion, SessionExecutionLeaseFence,
    SessionExecutionLeaseStore as _, SessionMeta, SessionReadScope, StoreError, StoreMaintenance as _, TurnInputClaim,
    TurnInputStore as _,
};
use serde::{Deserialize, Serialize};

/// An [`AttachmentIntent`] as the log stores it (lash's type has no serde).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct LoggedIntent {
    attachment_id: AttachmentId,
    session_id: String,
    canonical_uri: String,
    intent_at_epoch_ms: u64,
    owner_kind: Option<AttachmentOwnerKind>,
    owner_id: Option<String>,
}

impl From<AttachmentIntent> for LoggedIntent {
    fn from(intent: AttachmentIntent) -> Self {
        Self {
            attachment_id: intent.attachment_id,
            session_id: intent.session_id,
            canonical_uri: intent.canonical_uri,
            intent_at_epoch_ms: intent.intent_at_epoch_ms,
            owner_kind: intent.owner_kind,
            owner_id: intent.owner_id,
        }
    }
}

impl From<LoggedIntent> for AttachmentIntent {
    fn from(intent: LoggedIntent) -> Self {
        Self {
            attachment_id: intent.attachment_id,
            session_id: intent.session_id,
            canonical_uri: intent.canonical_uri,
            intent_at_epoch_ms: intent.intent_at_epoch_ms,
            owner_kind: intent.owner_kind,
            owner_id: intent.owner_id,
        }
    }
}

/// A change to a store, one per log record, with the arguments of the lash call.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Op {
    /// `commit_runtime_state`; the checkpoint's snapshots are stored in `blob`.
    Commit {
        commit: Box<RuntimeCommit>,
        blob: Option<String>,
    },
    SaveSessionMeta {
        meta: SessionMeta,
    },
    /// `save_session_meta` unless the store has meta already (a factory's create).
    SeedSessionMeta {
        meta: SessionMeta,
    },
    EnqueuePendingTurnInput {
        input: PendingTurnInputDraft,
    },
    CancelPendingTurnInputs {
        session_id: String,
        targets: Vec<PendingTurnInputCancelTarget>,
    },
    CancelPendingTurnInputSuffix {
        session_id: String,
        anchor: PendingTurnInputCancelTarget,
    },
    ClaimActiveTurnInputs {
        session_id: String,
        fence: SessionExecutionLeaseFence,
        owner: LeaseOwnerIdentity,
        turn_id: String,
        checkpoint: CheckpointKind,
        max_inputs: usize,
    },
    ClaimNextTurnInputs {
        session_id: String,
        fence: SessionExecutionLeaseFence,
        owner: LeaseOwnerIdentity,
        max_inputs: usize,
    },
    AbandonTurnInputClaim {
        claim: Box<TurnInputClaim>,
    },
    TryClaimLease {
        session_id: String,
        owner: LeaseOwnerIdentity,
        ttl_ms: u64,
    },
    ReclaimLease {
        session_id: String,
        owner: LeaseOwnerIdentity,
        observed: SessionExecutionLeaseFence,
        ttl_ms: u64,
    },
    RenewLease {
        fence: SessionExecutionLeaseFence,
        ttl_ms: u64,
    },
    ReleaseLease {
        completion: SessionExecutionLeaseCompletion,
    },
    EnqueueQueuedWork {
        batch: QueuedWorkBatchDraft,
    },
    ClaimLeadingReadySessionCommand {
        session_id: String,
        fence: SessionExecutionLeaseFence,
        owner: LeaseOwnerIdentity,
    },
    ClaimReadyQueuedWork {
        session_id: String,
        fence: SessionExecutionLeaseFence,
        owner: LeaseOwnerIdentity,
        boundary: QueuedWorkClaimBoundary,
        max_batches: usize,
    },
    ClaimCheckpointWork {
        session_id: String,
        fence: SessionExecutionLeaseFence,
        owner: LeaseOwnerIdentity,
        turn_id: String,
        checkpoint: CheckpointKind,
        max_inputs: usize,
        max_batches: usize,
    },
    ClaimReadyQueuedWorkByBatchIds {
        session_id: String,
        fence: SessionExecutionLeaseFence,
        owner: LeaseOwnerIdentity,
        boundary: QueuedWorkClaimBoundary,
        batch_ids: Vec<String>,
    },
    AbandonQueuedWorkClaim {
        claim: Box<QueuedWorkClaim>,
    },
    CancelQueuedWorkBatch {
        session_id: String,
        batch_id: String,
    },
    TombstoneNodes {
        ids: Vec<String>,
    },
    Vacuum,
    RecordIntent {
        intent: LoggedIntent,
    },
    CommitRefs {
        session_id: String,
        ids: Vec<AttachmentId>,
    },
    ForgetAgedUncommittedIntents {
        cutoff_ms: u64,
    },
    Forget {
        session_id: String,
        id: AttachmentId,
    },
    /// A graph record bus ops wrote (decision 0024): its nodes and leaf, taken in as one
    /// commit where the record is in the stream (never logged: every process reads it
    /// there). For a session created on the bus, `meta` seeds lash's session meta and
    /// `config` (from the bus session's policy) its first commit.
    Import {
        session_id: String,
        nodes: Vec<lash_core::SessionNodeRecord>,
        leaf_node_id: Option<String>,
        meta: Option<SessionMeta>,
        config: Option<lash_core::PersistedSessionConfig>,
    },
}

/// A read of a store (never logged).
#[derive(Clone, Debug)]
pub(crate) enum Query {
    LoadSession(SessionReadScope),
    LoadNode(String),
    LoadSessionMeta,
    ListPendingTurnInputs(String),
    ListTurnInputApplications(String),
    ListQueuedWork(String),
    ListPendingQueuedWork(String),
    ListUncommitted(u64),
    HasLiveRefForId(AttachmentId, u64),
    HoldsRef(String, AttachmentId),
    ListAllRefs,
}

/// What an [`Op`] or a [`Query`] answers, one variant per answer type.
#[derive(Debug)]
pub(crate) enum Output {
    Unit,
    Commit(Box<lash_core::store::RuntimeCommitResult>),
    Session(Option<Box<lash_core::store::PersistedSessionRead>>),
    Node(Option<Box<lash_core::SessionNodeRecord>>),
    Meta(Option<Box<SessionMeta>>),
    PendingInput(Box<lash_core::PendingTurnInput>),
    PendingInputs(Vec<lash_core::PendingTurnInput>),
    Applications(Vec<lash_core::TurnInputApplication>),
    CancelResults(Vec<lash_core::PendingTurnInputCancelResult>),
    SuffixCancel(Box<lash_core::PendingTurnInputSuffixCancelOutcome>),
    InputClaim(Option<Box<TurnInputClaim>>),
    LeaseClaim(Box<lash_core::SessionExecutionLeaseClaimOutcome>),
    Lease(Box<lash_core::SessionExecutionLease>),
    Batch(Box<lash_core::runtime::QueuedWorkBatch>),
    MaybeBatch(Option<Box<lash_core::runtime::QueuedWorkBatch>>),
    Batches(Vec<lash_core::runtime::QueuedWorkBatch>),
    QueueClaim(Option<Box<QueuedWorkClaim>>),
    CheckpointClaims(Option<Box<TurnInputClaim>>, Option<Box<QueuedWorkClaim>>),
    Vacuum(lash_core::VacuumReport),
    Entries(Vec<lash_core::AttachmentManifestEntry>),
    Flag(bool),
    Ids(Vec<AttachmentId>),
}

fn boxed<T>(value: Option<T>) -> Option<Box<T>> {
    value.map(Box::new)
}

impl Op {
    /// Applies this change to `state` (its clock set to the change's time).
    pub(crate) async fn apply(self, state: &InMemorySessionStore) -> Result<Output, StoreError> {
        Ok(match self {
            Op::Commit { commit, .. } => Output::Commit(Box::new(state.commit_runtime_state(*commit).await?)),
            Op::SaveSessionMeta { meta } => {
                state.save_session_meta(meta).await?;
                Output::Unit
            }
            Op::SeedSessionMeta { meta } => {
                if state.load_session_meta().await?.is_none() {
                    state.save_session_meta(meta).await?;
                }
                Output::Unit
            }
            Op::EnqueuePendingTurnInput { input } => {
                Output::PendingInput(Box::new(state.enqueue_pending_turn_input(input).await?))
            }
            Op::CancelPendingTurnInputs { session_id, targets } => {
                Output::CancelResults(state.cancel_pending_turn_inputs(&session_id, &targets).await?)
            }
            Op::CancelPendingTurnInputSuffix { session_id, anchor } => {
                Output::SuffixCancel(Box::new(state.cancel_pending_turn_input_suffix(&session_id, &anchor).await?))
            }
            Op::ClaimActiveTurnInputs { session_id, fence, owner, turn_id, checkpoint, max_inputs } => {
                Output::InputClaim(boxed(
                    state
                        .claim_active_turn_inputs(&session_id, &fence, &owner, &turn_id, checkpoint, max_inputs)
                        .await?,
                ))
            }
            Op::ClaimNextTurnInputs { session_id, fence, owner, max_inputs } => {
                Output::InputClaim(boxed(state.claim_next_turn_inputs(&session_id, &fence, &owner, max_inputs).await?))
            }
            Op::AbandonTurnInputClaim { claim } => {
                state.abandon_turn_input_claim(&claim).await?;
                Output::Unit
            }
            Op::TryClaimLease { session_id, owner, ttl_ms } => Output::LeaseClaim(Box::new(
                state.try_claim_session_execution_lease(&session_id, &owner, ttl_ms).await?,
            )),
            Op::ReclaimLease { session_id, owner, observed, ttl_ms } => Output::LeaseClaim(Box::new(
                state.reclaim_session_execution_lease(&session_id, &owner, &observed, ttl_ms).await?,
            )),
            Op::RenewLease { fence, ttl_ms } => {
                Output::Lease(Box::new(state.renew_session_execution_lease(&fence, ttl_ms).await?))
            }
            Op::ReleaseLease { completion } => {
                state.release_session_execution_lease(&completion).await?;
                Output::Unit
            }
            Op::EnqueueQueuedWork { batch } => Output::Batch(Box::new(state.enqueue_queued_work(batch).await?)),
            Op::ClaimLeadingReadySessionCommand { session_id, fence, owner } => {
                Output::QueueClaim(boxed(state.claim_leading_ready_session_command(&session_id, &fence, &owner).await?))
            }
            Op::ClaimReadyQueuedWork { session_id, fence, owner, boundary, max_batches } => Output::QueueClaim(boxed(
                state.claim_ready_queued_work(&session_id, &fence, &owner, boundary, max_batches).await?,
            )),
            Op::ClaimCheckpointWork { session_id, fence, owner, turn_id, checkpoint, max_inputs, max_batches } => {
                let (inputs, queued) = state
                    .claim_checkpoint_work(&session_id, &fence, &owner, &turn_id, checkpoint, max_inputs, max_batches)
                    .await?;
                Output::CheckpointClaims(boxed(inputs), boxed(queued))
            }
            Op::ClaimReadyQueuedWorkByBatchIds { session_id, fence, owner, boundary, batch_ids } => {
                Output::QueueClaim(boxed(
                    state
                        .claim_ready_queued_work_by_batch_ids(&session_id, &fence, &owner, boundary, &batch_ids)
                        .await?,
                ))
            }
            Op::AbandonQueuedWorkClaim { claim } => {
                state.abandon_queued_work_claim(&claim).await?;
                Output::Unit
            }
            Op::CancelQueuedWorkBatch { session_id, batch_id } => {
                Output::MaybeBatch(boxed(state.cancel_queued_work_batch(&session_id, &batch_id).await?))
            }
            Op::TombstoneNodes { ids } => {
                state.tombstone_nodes(&ids).await?;
                Output::Unit
            }
            Op::Vacuum => Output::Vacuum(state.vacuum().await?),
            Op::RecordIntent { intent } => {
                state.record_intent(intent.into())?;
                Output::Unit
            }
            Op::CommitRefs { session_id, ids } => {
                state.commit_refs(&session_id, &ids)?;
                Output::Unit
            }
            Op::ForgetAgedUncommittedIntents { cutoff_ms } => {
                state.forget_aged_uncommitted_intents(cutoff_ms)?;
                Output::Unit
            }
            Op::Forget { session_id, id } => {
                state.forget(&session_id, &id)?;
                Output::Unit
            }
            Op::Import { session_id, nodes, leaf_node_id, meta, config, .. } => {
                if let Some(meta) = meta
                    && state.load_session_meta().await?.is_none()
                {
                    state.save_session_meta(meta).await?;
                }
                let commit = import_commit(state, session_id, nodes, leaf_node_id, config).await?;
                Output::Commit(Box::new(state.commit_runtime_state(commit).await?))
            }
        })
    }
}

/// The commit that adds `nodes` (written by bus ops) to the session as `state` holds
/// it (under the lash session the store is bound to), keeping everything else lash
/// committed last; a session lash has no commit of yet is `session_id`, with `config`. It restates the whole graph (`ReplaceFull`), which is how a
/// store sets the graph's leaf for every read scope.
async fn import_commit(
    state: &InMemorySessionStore,
    session_id: String,
    nodes: Vec<lash_core::SessionNodeRecord>,
    leaf_node_id: Option<String>,
    config: Option<lash_core::PersistedSessionConfig>,
) -> Result<RuntimeCommit, StoreError> {
    let mut commit = RuntimeCommit {
        session_id,
        expected_head_revision: None,
        session_execution_lease: None,
        release_session_execution_lease: None,
        config: config.unwrap_or_default(),
        agent_frames: Vec::new(),
        current_agent_frame_id: String::new(),
        graph: GraphCommitDelta::Unchanged { leaf_node_id: None },
        checkpoint: Default::default(),
        usage_deltas: Vec::new(),
        turn_commit: None,
        completed_queue_claims: Vec::new(),
        completed_turn_input_claims: Vec::new(),
        enqueued_queue_batches: Vec::new(),
        interrupted_turn_input_turn_id: None,
        committed_attachment_ids: Vec::new(),
    };
    let (mut graph_nodes, leaf) = match state.load_session(SessionReadScope::FullGraph).await? {
        Some(read) => {
            commit.session_id = read.session_id;
            commit.expected_head_revision = Some(read.head_revision);
            commit.config = read.config;
            commit.agent_frames = read.agent_frames;
            commit.current_agent_frame_id = read.current_agent_frame_id;
            commit.checkpoint = read.checkpoint.unwrap_or_default();
            (read.graph.nodes.clone(), read.graph.leaf_node_id.clone())
        }
        None => (Vec::new(), None),
    };
    graph_nodes.extend(nodes);
    commit.graph =
        GraphCommitDelta::ReplaceFull(lash_core::SessionGraph::from_nodes(graph_nodes, leaf_node_id.or(leaf)));
    Ok(commit)
}

impl Query {
    /// Answers this read from `state` (its clock set to now).
    pub(crate) async fn answer(self, state: &InMemorySessionStore) -> Result<Output, StoreError> {
        Ok(match self {
            Query::LoadSession(scope) => Output::Session(boxed(state.load_session(scope).await?)),
            Query::LoadNode(id) => Output::Node(boxed(state.load_node(&id).await?)),
            Query::LoadSessionMeta => Output::Meta(boxed(state.load_session_meta().await?)),
            Query::ListPendingTurnInputs(session_id) => {
                Output::PendingInputs(state.list_pending_turn_inputs(&session_id).await?)
            }
            Query::ListTurnInputApplications(session_id) => {
                Output::Applications(state.list_turn_input_applications(&session_id).await?)
            }
            Query::ListQueuedWork(session_id) => Output::Batches(state.list_queued_work(&session_id).await?),
            Query::ListPendingQueuedWork(session_id) => {
                Output::Batches(state.list_pending_queued_work(&session_id).await?)
            }
            Query::ListUncommitted(older_than) => Output::Entries(state.list_uncommitted(older_than)?),
            Query::HasLiveRefForId(id, cutoff) => Output::Flag(state.has_live_ref_for_id(&id, cutoff)?),
            Query::HoldsRef(session_id, id) => Output::Flag(state.holds_ref(&session_id, &id)?),
            Query::ListAllRefs => Output::Ids(state.list_all_refs()?),
        })
    }
}
