//! The turn protocol's decisions, as pure functions over what a worker knows of a
//! session (its view, or records read from the stream leader) and the turn's ledger.
//! `turns.rs` reads, asks, and carries the decision out; every case is a row of the
//! table tests below.

use sessionbus_api::{AssembledTurn, TurnInput, TurnOutcome};

use super::records::{LeaseRecord, LedgerRecord};

/// What `start_turn` read about a session and one of its turns.
pub(super) struct Observed<'a> {
    /// Whether the session's meta exists.
    pub(super) session_exists: bool,
    /// The session's lease and its sequence.
    pub(super) lease: Option<(u64, &'a LeaseRecord)>,
    /// Whether a held lease is alive, as this observer judges it (its sequence seen
    /// changing within a TTL on this observer's monotonic clock).
    pub(super) lease_alive: bool,
    /// The turn's ledger record and its sequence.
    pub(super) ledger: Option<(u64, &'a LedgerRecord)>,
}

/// What a `start_turn` call does next.
#[derive(Debug, PartialEq)]
pub(super) enum StartDecision<'a> {
    /// No such session.
    UnknownSession,
    /// The turn id was started with another input.
    OtherInput,
    /// The turn completed: answer with its stored result.
    ReturnStored { result: &'a AssembledTurn, graph_request_id: &'a str },
    /// The session is closed.
    SessionClosed,
    /// Another turn of the session runs under a live lease.
    AnotherTurnRuns,
    /// This turn runs (or is being started) under a live lease: wait for its ledger.
    Wait,
    /// Take the lease (conditioned on `lease_seq`) and record the turn running
    /// (conditioned on `ledger_seq`); 0 means never written.
    Take { lease_seq: u64, ledger_seq: u64 },
}

/// Decides a `start_turn` of `turn_id` with `input`.
pub(super) fn decide_start<'a>(observed: &Observed<'a>, turn_id: &str, input: &TurnInput) -> StartDecision<'a> {
    if !observed.session_exists {
        return StartDecision::UnknownSession;
    }
    let ledger_seq = observed.ledger.map_or(0, |(seq, _)| seq);
    let live_holder = match observed.lease {
        Some((_, LeaseRecord::Held { turn_id, run_id, .. })) if observed.lease_alive => {
            Some((turn_id.as_str(), run_id.as_str()))
        }
        _ => None,
    };
    match observed.ledger {
        Some((_, record)) if record.input() != input => return StartDecision::OtherInput,
        Some((_, LedgerRecord::Completed { result, graph_request_id, .. })) => {
            return StartDecision::ReturnStored { result, graph_request_id };
        }
        Some((_, LedgerRecord::Running { run_id, .. })) if live_holder.is_some_and(|(_, held)| held == run_id) => {
            return StartDecision::Wait;
        }
        _ => {}
    }
    match (observed.lease, live_holder) {
        (Some((_, LeaseRecord::Closed)), _) => StartDecision::SessionClosed,
        // The lease is taken for this turn, its ledger not yet written: another caller
        // is starting it.
        (_, Some((running, _))) if running == turn_id => StartDecision::Wait,
        (_, Some(_)) => StartDecision::AnotherTurnRuns,
        (Some((lease_seq, _)), None) => StartDecision::Take { lease_seq, ledger_seq },
        (None, None) => StartDecision::Take { lease_seq: 0, ledger_seq },
    }
}

/// What a `cancel_turn` does.
#[derive(Debug, PartialEq)]
pub(super) enum CancelDecision<'a> {
    /// No such session.
    UnknownSession,
    /// The session never started this turn id.
    UnknownTurn,
    /// The turn committed: answer with its outcome.
    Finished(&'a TurnOutcome),
    /// The turn's last run failed and nothing runs.
    NotRunning,
    /// Store the cancel request: the worker running the turn (`holder`, when one holds
    /// its lease) stops it, and a rerun of it commits it cancelled.
    Request { holder: Option<&'a str> },
}

/// Decides a `cancel_turn` of `turn_id` from what `start_turn` reads.
pub(super) fn decide_cancel<'a>(observed: &Observed<'a>, turn_id: &str) -> CancelDecision<'a> {
    if !observed.session_exists {
        return CancelDecision::UnknownSession;
    }
    // A live lease of this turn: a run holds it (its ledger may not be written yet).
    let live_holder = match observed.lease {
        Some((_, LeaseRecord::Held { turn_id: held_turn, holder, .. }))
            if observed.lease_alive && held_turn == turn_id =>
        {
            Some(holder.as_str())
        }
        _ => None,
    };
    match (observed.ledger, live_holder) {
        (Some((_, LedgerRecord::Completed { result, .. })), _) => CancelDecision::Finished(&result.outcome),
        (Some((_, LedgerRecord::Running { .. })), holder) | (_, holder @ Some(_)) => CancelDecision::Request { holder },
        (Some((_, LedgerRecord::Failed { .. })), None) => CancelDecision::NotRunning,
        (None, None) => CancelDecision::UnknownTurn,
    }
}

/// Why a commit's batch was refused, as far as the protocol cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CommitRefusal {
    /// A condition failed (or a concurrent write was in flight).
    Condition,
    /// A leader election or a timeout: the batch may or may not have been applied.
    Transient,
    /// Anything else.
    Permanent,
}

/// What a run does after its commit batch was refused.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum AfterFailedCommit {
    /// The ledger shows this run's commit: it was applied after all.
    Committed,
    /// Another run took the turn over; this commit cannot have been applied.
    Fenced,
    /// The graph or meta moved under the turn (or an election): re-read and retry.
    Retry,
    /// Give up with the refusal's error.
    Fail,
}

/// Decides after run `run_id`, holding the lease at `held_lease_seq`, had its commit
/// refused, from the turn's ledger and the session's lease sequence read afterwards.
pub(super) fn decide_after_failed_commit(
    ledger: Option<&LedgerRecord>,
    lease_seq: Option<u64>,
    run_id: &str,
    held_lease_seq: u64,
    refusal: CommitRefusal,
) -> AfterFailedCommit {
    if let Some(LedgerRecord::Completed { graph_request_id, .. }) = ledger {
        return if graph_request_id == run_id { AfterFailedCommit::Committed } else { AfterFailedCommit::Fenced };
    }
    match refusal {
        CommitRefusal::Condition if lease_seq != Some(held_lease_seq) => AfterFailedCommit::Fenced,
        CommitRefusal::Condition | CommitRefusal::Transient => AfterFailedCommit::Retry,
        CommitRefusal::Permanent => AfterFailedCommit::Fail,
    }
}

#[cfg(test)]
mod tests {
    use sessionbus_api::{
        AssembledTurn, PluginError, SessionSnapshot, TokenUsage, TurnFinish, TurnInput, TurnOutcome, TurnOutput,
    };

    use super::*;

    const ME: &str = "t1";
    const OTHER: &str = "t2";

    fn input(text: &str) -> TurnInput {
        TurnInput::text(text)
    }

    fn result() -> AssembledTurn {
        TurnOutput {
            nodes: Vec::new(),
            outcome: TurnOutcome::Finished(TurnFinish::AssistantMessage { text: "done".into() }),
            token_usage: TokenUsage::default(),
            assistant_output: Default::default(),
            llm_calls: Vec::new(),
            tool_calls: Vec::new(),
            errors: Vec::new(),
            changes: Default::default(),
        }
        .assemble(SessionSnapshot::new("s", serde_json::Value::Null), 0, 0)
    }

    fn held(turn_id: &str, run_id: &str) -> LeaseRecord {
        LeaseRecord::Held {
            turn_id: turn_id.into(),
            holder: "w".into(),
            run_id: run_id.into(),
            expires_at_ms: 0,
            ttl_ms: 1000,
        }
    }

    /// The ledger records of the asking turn, by name.
    fn ledgers(mine: &TurnInput, stored: &AssembledTurn) -> Vec<(&'static str, Option<LedgerRecord>)> {
        let other = input("other");
        vec![
            ("none", None),
            (
                "running r1",
                Some(LedgerRecord::Running {
                    input: mine.clone(),
                    run_id: "r1".into(),
                    traceparent: None,
                    worker: None,
                }),
            ),
            (
                "running r9",
                Some(LedgerRecord::Running {
                    input: mine.clone(),
                    run_id: "r9".into(),
                    traceparent: None,
                    worker: None,
                }),
            ),
            (
                "completed",
                Some(LedgerRecord::Completed {
                    input: mine.clone(),
                    result: Box::new(stored.clone()),
                    graph_request_id: "r1".into(),
                    traceparent: None,
                    turn_commit_hash: None,
                    worker: None,
                }),
            ),
            (
                "failed",
                Some(LedgerRecord::Failed {
                    input: mine.clone(),
                    error: PluginError::Session("boom".into()),
                    worker: None,
                }),
            ),
            (
                "running, other input",
                Some(LedgerRecord::Running { input: other, run_id: "r1".into(), traceparent: None, worker: None }),
            ),
        ]
    }

    /// The leases, by name, with whether they are alive.
    fn leases() -> Vec<(&'static str, Option<LeaseRecord>, bool)> {
        vec![
            ("none", None, false),
            ("free", Some(LeaseRecord::Free), false),
            ("closed", Some(LeaseRecord::Closed), false),
            ("mine r1 alive", Some(held(ME, "r1")), true),
            ("mine r1 dead", Some(held(ME, "r1")), false),
            ("other alive", Some(held(OTHER, "r5")), true),
            ("other dead", Some(held(OTHER, "r5")), false),
        ]
    }

    /// The expected decision for every (ledger x lease) pair a caller of `ME` can read.
    fn expected(ledger: &str, lease: &str) -> &'static str {
        match (ledger, lease) {
            ("running, other input", _) => "other input",
            ("completed", _) => "return stored",
            ("running r1", "mine r1 alive") => "wait",
            (_, "closed") => "closed",
            (_, "mine r1 alive") => "wait",
            (_, "other alive") => "another turn runs",
            _ => "take",
        }
    }

    fn name(decision: &StartDecision<'_>) -> &'static str {
        match decision {
            StartDecision::UnknownSession => "unknown session",
            StartDecision::OtherInput => "other input",
            StartDecision::ReturnStored { .. } => "return stored",
            StartDecision::SessionClosed => "closed",
            StartDecision::AnotherTurnRuns => "another turn runs",
            StartDecision::Wait => "wait",
            StartDecision::Take { .. } => "take",
        }
    }

    /// Calls `check` with every (ledger x lease) pair a caller of `ME` (input `hello`)
    /// can read, by name; returns how many.
    fn for_every_state(mut check: impl FnMut(&str, &str, &Observed<'_>)) -> usize {
        let stored = result();
        let mut rows = 0;
        for (ledger_name, ledger) in ledgers(&input("hello"), &stored) {
            for (lease_name, lease, alive) in leases() {
                let observed = Observed {
                    session_exists: true,
                    lease: lease.as_ref().map(|l| (7, l)),
                    lease_alive: alive,
                    ledger: ledger.as_ref().map(|l| (3, l)),
                };
                check(ledger_name, lease_name, &observed);
                rows += 1;
            }
        }
        rows
    }

    #[test]
    fn every_ledger_and_lease_state_decides_as_the_table_says() {
        let mine = input("hello");
        let rows = for_every_state(|ledger_name, lease_name, observed| {
            let decision = decide_start(observed, ME, &mine);
            assert_eq!(
                name(&decision),
                expected(ledger_name, lease_name),
                "ledger {ledger_name}, lease {lease_name}: {decision:?}"
            );
            if let StartDecision::Take { lease_seq, ledger_seq } = decision {
                assert_eq!(lease_seq, if observed.lease.is_some() { 7 } else { 0 }, "conditioned on the lease read");
                assert_eq!(ledger_seq, if observed.ledger.is_some() { 3 } else { 0 }, "conditioned on the ledger read");
            }
        });
        assert_eq!(rows, 42);
    }

    #[test]
    fn a_missing_session_is_unknown_whatever_else_is_stored() {
        let mine = input("hello");
        for (_, lease, alive) in leases() {
            let observed = Observed {
                session_exists: false,
                lease: lease.as_ref().map(|l| (1, l)),
                lease_alive: alive,
                ledger: None,
            };
            assert_eq!(decide_start(&observed, ME, &mine), StartDecision::UnknownSession);
        }
    }

    #[test]
    fn a_completed_turn_returns_its_stored_result() {
        let mine = input("hello");
        let stored = result();
        let ledger = LedgerRecord::Completed {
            input: mine.clone(),
            result: Box::new(stored.clone()),
            graph_request_id: "r1".into(),
            traceparent: None,
            turn_commit_hash: None,
            worker: None,
        };
        let observed = Observed { session_exists: true, lease: None, lease_alive: false, ledger: Some((3, &ledger)) };
        assert_eq!(
            decide_start(&observed, ME, &mine),
            StartDecision::ReturnStored { result: &stored, graph_request_id: "r1" }
        );
    }

    fn cancel_name(decision: &CancelDecision<'_>) -> &'static str {
        match decision {
            CancelDecision::UnknownSession => "unknown session",
            CancelDecision::UnknownTurn => "unknown turn",
            CancelDecision::Finished(_) => "finished",
            CancelDecision::NotRunning => "not running",
            CancelDecision::Request { holder: Some(_) } => "request, held",
            CancelDecision::Request { holder: None } => "request, no holder",
        }
    }

    /// The expected cancel of `ME` for every (ledger x lease) pair.
    fn expected_cancel(ledger: &str, lease: &str) -> &'static str {
        match (ledger, lease) {
            ("completed", _) => "finished",
            (_, "mine r1 alive") => "request, held",
            ("running r1" | "running r9" | "running, other input", _) => "request, no holder",
            ("failed", _) => "not running",
            _ => "unknown turn",
        }
    }

    #[test]
    fn every_ledger_and_lease_state_cancels_as_the_table_says() {
        let rows = for_every_state(|ledger_name, lease_name, observed| {
            let decision = decide_cancel(observed, ME);
            assert_eq!(
                cancel_name(&decision),
                expected_cancel(ledger_name, lease_name),
                "ledger {ledger_name}, lease {lease_name}: {decision:?}"
            );
            if let CancelDecision::Request { holder: Some(holder) } = decision {
                assert_eq!(holder, "w", "the lease's holder is named");
            }
        });
        assert_eq!(rows, 42);
        let nothing = Observed { session_exists: false, lease: None, lease_alive: false, ledger: None };
        assert_eq!(decide_cancel(&nothing, ME), CancelDecision::UnknownSession);
    }

    #[test]
    fn a_failed_commit_decides_from_the_ledger_then_the_lease() {
        use AfterFailedCommit::*;
        use CommitRefusal::*;
        let completed_by = |run: &str| LedgerRecord::Completed {
            input: input("x"),
            result: Box::new(result()),
            graph_request_id: run.into(),
            traceparent: None,
            turn_commit_hash: None,
            worker: None,
        };
        let running = LedgerRecord::Running { input: input("x"), run_id: "r1".into(), traceparent: None, worker: None };
        let (mine, theirs) = (completed_by("r1"), completed_by("r2"));
        let rows: [(Option<&LedgerRecord>, Option<u64>, CommitRefusal, AfterFailedCommit); 10] = [
            (Some(&mine), Some(9), Condition, Committed),
            (Some(&mine), Some(5), Transient, Committed),
            (Some(&mine), None, Permanent, Committed),
            (Some(&theirs), Some(5), Condition, Fenced),
            (Some(&theirs), Some(5), Transient, Fenced),
            (Some(&running), Some(5), Condition, Retry),
            (Some(&running), Some(6), Condition, Fenced),
            (Some(&running), None, Condition, Fenced),
            (Some(&running), Some(6), Transient, Retry),
            (None, Some(5), Permanent, Fail),
        ];
        for (ledger, lease_seq, refusal, expected) in rows {
            assert_eq!(
                decide_after_failed_commit(ledger, lease_seq, "r1", 5, refusal),
                expected,
                "{ledger:?} lease {lease_seq:?} {refusal:?}"
            );
        }
    }
}
