//! Two processes sharing one store: each test opens the same store through two backends
//! (two connections, two replayed states), so only the order of the store's log decides
//! between their writes.

mod store_support;

use std::sync::Arc;

use lash_core::{
    LeaseOwnerIdentity, RuntimeCommit, RuntimeSessionState, SessionCommitStore as _, SessionExecutionLeaseClaimOutcome,
    SessionExecutionLeaseStore as _, SessionReadScope, StoreError,
};
use sessionbus_lash::store::JetStreamStore;
use store_support::Deployment;

const ROUNDS: usize = 20;

fn two_processes(deployment: &Deployment, key: &str) -> (Arc<JetStreamStore>, Arc<JetStreamStore>) {
    let open = |key: &str| Arc::new(JetStreamStore::open(deployment.backend(), key, deployment.clock()).expect("open"));
    (open(key), open(key))
}

fn commit(session_id: &str, expected_head_revision: Option<u64>, turn_index: usize) -> RuntimeCommit {
    let state = RuntimeSessionState {
        session_id: session_id.to_owned(),
        head_revision: expected_head_revision,
        turn_index,
        ..RuntimeSessionState::default()
    };
    RuntimeCommit::persisted_state(&state, &[])
}

#[tokio::test]
async fn two_processes_racing_for_a_session_lease_get_one_holder_per_generation() {
    let deployment = Deployment::single().await;
    let (a, b) = two_processes(&deployment, "lease-race");
    let mut last_token = 0;
    for round in 0..ROUNDS {
        let session = format!("session-{round}");
        let (owner_a, owner_b) = (
            LeaseOwnerIdentity::opaque("a", format!("a-{round}")),
            LeaseOwnerIdentity::opaque("b", format!("b-{round}")),
        );
        let (left, right) = tokio::join!(
            a.try_claim_session_execution_lease(&session, &owner_a, 60_000),
            b.try_claim_session_execution_lease(&session, &owner_b, 60_000),
        );
        let outcomes = [left.expect("claim a"), right.expect("claim b")];
        let acquired: Vec<_> = outcomes
            .iter()
            .filter_map(|outcome| match outcome {
                SessionExecutionLeaseClaimOutcome::Acquired(lease) => Some(lease.clone()),
                SessionExecutionLeaseClaimOutcome::Busy { .. } => None,
            })
            .collect();
        assert_eq!(acquired.len(), 1, "round {round}: exactly one process holds the lease, got {outcomes:?}");
        let holder = &acquired[0];
        // Both processes see the same holder (the loser's Busy names it).
        for outcome in &outcomes {
            if let SessionExecutionLeaseClaimOutcome::Busy { holder: seen } = outcome {
                assert_eq!(seen, holder, "round {round}: the loser sees the winner's lease");
            }
        }
        // The loser cannot renew the winner's fence under its own identity.
        let loser_fence = lash_core::SessionExecutionLeaseFence {
            owner: if holder.owner == owner_a { owner_b.clone() } else { owner_a.clone() },
            ..holder.fence()
        };
        let loser = if holder.owner == owner_a { &b } else { &a };
        assert!(matches!(
            loser.renew_session_execution_lease(&loser_fence, 60_000).await,
            Err(StoreError::SessionExecutionLeaseExpired { .. })
        ));
        last_token = last_token.max(holder.fencing_token);
    }
    assert!(last_token >= 1);
}

#[tokio::test]
async fn concurrent_commits_from_two_processes_apply_exactly_once_per_head_revision() {
    let deployment = Deployment::single().await;
    let (a, b) = two_processes(&deployment, "commit-race");
    let session = "commit-race";
    let mut head = None;
    for round in 0..ROUNDS {
        let (left, right) = tokio::join!(
            a.commit_runtime_state(commit(session, head, round)),
            b.commit_runtime_state(commit(session, head, round + 1000))
        );
        let (left, right) = (left, right);
        let winners: Vec<_> = [&left, &right].into_iter().filter_map(|result| result.as_ref().ok()).collect();
        assert_eq!(winners.len(), 1, "round {round}: one commit per head revision, got {left:?} / {right:?}");
        let loser = if left.is_ok() { &right } else { &left };
        assert!(
            matches!(loser, Err(StoreError::HeadRevisionConflict { .. })),
            "round {round}: the other is refused by the head revision, got {loser:?}"
        );
        let next = winners[0].head_revision;
        assert_eq!(next, head.unwrap_or(0) + 1, "round {round}: the head moves by one");
        head = Some(next);
    }
    // Both processes (and a third that opens the store anew) read the same session.
    let third = JetStreamStore::open(deployment.backend(), "commit-race", deployment.clock()).expect("open");
    let mut reads = Vec::new();
    for store in [&*a, &*b, &third] {
        let read = store.load_session(SessionReadScope::FullGraph).await.expect("load").expect("a session");
        let turn_index = read.checkpoint.map(|checkpoint| checkpoint.turn_state.turn_index);
        reads.push((read.head_revision, turn_index));
    }
    assert_eq!(reads[0].0, ROUNDS as u64);
    assert!(reads.iter().all(|read| *read == reads[0]), "every process reads one state: {reads:?}");
}

#[tokio::test]
async fn a_process_opening_a_long_store_replays_every_record() {
    const COMMITS: usize = 200;
    let deployment = Deployment::single().await;
    let (writer, _) = two_processes(&deployment, "long-store");
    let mut head = None;
    for turn in 0..COMMITS {
        head = Some(writer.commit_runtime_state(commit("long-store", head, turn)).await.expect("commit").head_revision);
    }
    // A new process catches up with 200 records at once (through a consumer).
    let reader = JetStreamStore::open(deployment.backend(), "long-store", deployment.clock()).expect("open");
    let read = reader.load_session(SessionReadScope::FullGraph).await.expect("load").expect("a session");
    assert_eq!(read.head_revision, COMMITS as u64);
    assert_eq!(read.checkpoint.map(|checkpoint| checkpoint.turn_state.turn_index), Some(COMMITS - 1));
}
