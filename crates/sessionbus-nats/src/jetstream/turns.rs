//! Turns: at most one running turn per session across the cluster, through the lease.
//!
//! - start: decided on the worker's view of the session (its meta and lease) and the
//!   turn's ledger read from the leader. The lease is written conditioned on the lease
//!   sequence the decision saw, then the ledger's `running` record on the ledger
//!   sequence read: a stale view makes the lease write fail and the view be read again.
//!   A refusal (unknown, closed, another turn runs) writes nothing, so it is answered
//!   only on a view the leader confirms current. The turn's snapshot comes from the
//!   view when the leader shows that the session's next two writes after the view's
//!   sequence were this turn's lease and ledger (decision 0027);
//! - while the executor runs, the lease is renewed, conditioned on its own last
//!   sequence; a renewal that fails means another worker took the turn over: the run
//!   stops, uncommitted;
//! - commit: one atomic batch releases the lease (conditioned on the sequence held),
//!   appends the turn's graph record (conditioned on the graph), writes the ledger's
//!   `completed` record and the new meta (conditioned on the meta it was computed from:
//!   the view's, current under the lease). All visible or none; a fenced worker's commit
//!   is refused as a whole, and no other write to the meta (a racing commit, a close) is
//!   ever overwritten. The view is current at the batch afterwards.
//! - a retry of a running turn id attaches (waits for the ledger); of a completed one
//!   returns the stored result; a turn whose lease expired is taken over.

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt as _, StreamExt as _};
use opentelemetry::trace::FutureExt as _;
use sessionbus_api::{
    AssembledTurn, PluginError, SessionChanges, SessionSnapshot, SessionTurnInput, SessionTurnRequest, TurnContext,
    TurnInput, TurnOutput, VerbatimRefusal, check_verbatim_nodes, clock, ids,
};

use super::JetStreamHost;
use super::api::{JsError, JsErrorExt as _, JsErrorKind, StoredMessage, Write};
use super::layout::STATE_STREAM;
use super::live::{LiveOutput, LiveTargets};
use super::records::{GraphRecord, LeaseRecord, LedgerRecord, MetaRecord, decode, encode};
use super::sessions::{build_nodes, snapshot_of};
use super::trace_sink::HostTraceSink;
use super::turn_protocol::{
    AfterFailedCommit, CommitRefusal, Observed, StartDecision, decide_after_failed_commit, decide_start,
};
use super::view::SessionView;
use crate::request_context::RequestContext;
use crate::subjects::{session_token, turn_token};

/// Lost races for the lease (or the graph) before `start_turn` gives up. Waiting for a
/// turn that another caller runs is not a lost race: a caller waits as long as the
/// turn's lease is alive.
const DECISION_ROUNDS: usize = 100;
/// How often an attached caller re-reads the ledger when no event arrives.
const ATTACH_POLL: Duration = Duration::from_millis(500);

/// What the lease and ledger say about a turn, read from the stream leader.
pub(super) struct TurnState {
    session_exists: bool,
    lease: Option<(u64, LeaseRecord)>,
    lease_alive: bool,
    ledger: Option<(u64, LedgerRecord)>,
}

impl TurnState {
    pub(super) fn observed(&self) -> Observed<'_> {
        Observed {
            session_exists: self.session_exists,
            lease: self.lease.as_ref().map(|(seq, record)| (*seq, record)),
            lease_alive: self.lease_alive,
            ledger: self.ledger.as_ref().map(|(seq, record)| (*seq, record)),
        }
    }
}

/// A lease this host holds for one run of a turn.
#[derive(Clone)]
struct HeldLease {
    run_id: String,
    /// The trace parent of the turn (the `start_turn` call's handling span).
    traceparent: Option<String>,
    lease_seq: u64,
    ledger_seq: u64,
    /// The session's sequence the view the lease was taken on was current at.
    view_seq: u64,
    /// The lease record as written.
    lease: LeaseRecord,
}

/// What a lease is taken on: the lease's and the ledger's sequences the decision saw,
/// and the session's sequence its view was current at.
struct Conditions {
    lease_seq: u64,
    ledger_seq: u64,
    view_seq: u64,
}

fn decoded<T: serde::de::DeserializeOwned>(
    what: &str,
    message: Option<StoredMessage>,
) -> Result<Option<(u64, T)>, PluginError> {
    message.map(|m| decode(what, &m.payload).map(|record| (m.seq, record))).transpose()
}

fn other_input(turn_id: &str) -> PluginError {
    PluginError::Conflict(format!("turn `{turn_id}` was already started with a different input"))
}

impl JetStreamHost {
    /// `start_turn`. The run is its own task, so a caller that goes away does not
    /// strand the turn half-way.
    pub(super) async fn turn(&self, request: SessionTurnRequest) -> Result<AssembledTurn, PluginError> {
        ids::validate_id("turn id", request.turn_id())?;
        session_token(request.session_id())?;
        let (turn, _scope) = request.into_parts();
        let host = self.clone();
        // The task carries the request's context (request id, trace parent) along.
        let context = crate::request_context::current().unwrap_or_default();
        let trace = opentelemetry::Context::current();
        let run = async move { host.drive_turn(turn).await };
        tokio::spawn(crate::request_context::with_request(context, run.with_context(trace)))
            .await
            .map_err(|err| PluginError::Unavailable(format!("the turn task failed: {err}")))?
    }

    pub(super) async fn read_turn_state(&self, token: &str, turn_subject: &str) -> Result<TurnState, PluginError> {
        let subjects = &self.inner.config.subjects;
        let api = &self.inner.api;
        let (meta_subject, lease_subject) = (subjects.meta(token), subjects.lease(token));
        let (meta, lease, ledger) = tokio::join!(
            api.last(STATE_STREAM, &meta_subject),
            api.last(STATE_STREAM, &lease_subject),
            api.last(STATE_STREAM, turn_subject),
        );
        let read = |err: JsError| err.into_plugin("reading a turn's state");
        let session_exists = meta.map_err(read)?.is_some();
        let lease: Option<(u64, LeaseRecord)> = decoded("lease", lease.map_err(read)?)?;
        let lease_alive = self.held_and_alive(token, lease.as_ref());
        Ok(TurnState { session_exists, lease, lease_alive, ledger: decoded("ledger", ledger.map_err(read)?)? })
    }

    /// Whether `lease` is held and alive, as this host judges it.
    fn held_and_alive(&self, token: &str, lease: Option<&(u64, LeaseRecord)>) -> bool {
        match lease {
            Some((seq, LeaseRecord::Held { ttl_ms, .. })) => self.lease_alive(token, *seq, *ttl_ms),
            _ => false,
        }
    }

    /// The turn's ledger, read from the leader after `view` was current (so never older
    /// than it); a view not loaded is read first, with the ledger read alongside its
    /// meta, lease and graph once the session's sequence is known.
    async fn ledger_on_view(
        &self,
        token: &str,
        turn_subject: &str,
        view: &mut SessionView,
    ) -> Result<Option<(u64, LedgerRecord)>, PluginError> {
        let read_ledger = || async {
            let ledger = self
                .inner
                .api
                .last(STATE_STREAM, turn_subject)
                .await
                .map_err(|err| err.into_plugin("reading a turn's ledger"))?;
            decoded("ledger", ledger)
        };
        if view.loaded {
            return read_ledger().await;
        }
        let session_seq = self.session_seq(token).await?;
        let (refreshed, ledger) = tokio::join!(self.refresh_from(token, view, session_seq), read_ledger());
        refreshed?;
        // A write that raced the refresh moved the view past the sequence the ledger
        // was read after: read the ledger again.
        if view.session_seq == session_seq { ledger } else { read_ledger().await }
    }

    async fn drive_turn(&self, turn: SessionTurnInput) -> Result<AssembledTurn, PluginError> {
        let session_id = turn.session_id.clone();
        let turn_id = turn.turn_id.clone();
        let token = session_token(&session_id)?;
        let turn_key = turn_token(&turn_id)?;
        let turn_subject = self.inner.config.subjects.turn(&token, &turn_key);
        let mut attached: Option<async_nats::Subscriber> = None;
        let mut lost_races = 0;
        let view_lock = self.inner.views.get(&token);
        while lost_races < DECISION_ROUNDS {
            // The session's meta and lease come from its view, the turn's ledger from the
            // leader (read after the view was current, so never older than it). The lease
            // write is conditioned on the view's lease, which every write that closes the
            // session or runs a turn moves; a refusal, which writes nothing, is answered
            // only on a view the leader confirms current.
            let mut view = view_lock.lock().await;
            let confirmed = !view.loaded;
            let ledger = self.ledger_on_view(&token, &turn_subject, &mut view).await?;
            let lease_alive = self.held_and_alive(&token, view.lease.as_ref());
            let observed = Observed {
                session_exists: view.exists(),
                lease: view.lease.as_ref().map(|(seq, record)| (*seq, record)),
                lease_alive,
                ledger: ledger.as_ref().map(|(seq, record)| (*seq, record)),
            };
            let refusal = match decide_start(&observed, &turn_id, &turn.input) {
                StartDecision::OtherInput => return Err(other_input(&turn_id)),
                StartDecision::ReturnStored { result, graph_request_id } => {
                    let (result, graph_request_id) = (result.clone(), graph_request_id.to_owned());
                    drop(view);
                    return self.stored_result(&token, &result, &graph_request_id).await;
                }
                StartDecision::Wait => {
                    // The lease is renewed while the turn runs: read it afresh next round.
                    view.loaded = false;
                    drop(view);
                    self.wait_for_ledger(&token, &turn_key, &mut attached).await?;
                    continue;
                }
                StartDecision::Take { lease_seq, ledger_seq } => {
                    let conditions = Conditions { lease_seq, ledger_seq, view_seq: view.session_seq };
                    if let Some(held) = self.acquire(&token, &turn_subject, &turn, conditions).await? {
                        drop(view);
                        return self.run_and_commit(&token, (&turn_key, &turn_subject), turn, held).await;
                    }
                    // The view was stale, or a write raced the decision.
                    view.loaded = false;
                    lost_races += 1;
                    continue;
                }
                StartDecision::UnknownSession => PluginError::unknown_session(&session_id),
                StartDecision::SessionClosed => PluginError::session_closed(&session_id),
                StartDecision::AnotherTurnRuns => {
                    PluginError::Conflict(format!("session `{session_id}` already has a running turn"))
                }
            };
            if !confirmed {
                let current = self.session_seq(&token).await?;
                if current != view.session_seq {
                    view.loaded = false;
                    continue;
                }
            }
            return Err(refusal);
        }
        Err(PluginError::Conflict(format!("turn `{turn_id}` kept losing races for the session's lease; retry later")))
    }

    /// Takes the lease (conditioned on the lease's sequence the decision saw) and marks
    /// the turn running (conditioned on the ledger's), as two writes. `None` when another
    /// writer got there first (the caller reads again and decides again).
    async fn acquire(
        &self,
        token: &str,
        turn_subject: &str,
        turn: &SessionTurnInput,
        conditions: Conditions,
    ) -> Result<Option<HeldLease>, PluginError> {
        let Conditions { lease_seq, ledger_seq, view_seq } = conditions;
        let run_id = uuid::Uuid::new_v4().to_string();
        let subjects = &self.inner.config.subjects;
        let lease = LeaseRecord::Held {
            turn_id: turn.turn_id.clone(),
            holder: self.inner.holder.clone(),
            run_id: run_id.clone(),
            expires_at_ms: clock::now_unix_ms() + duration_ms(self.inner.config.lease_ttl),
            ttl_ms: duration_ms(self.inner.config.lease_ttl),
        };
        let traceparent = crate::request_context::current_traceparent();
        let running = LedgerRecord::Running {
            input: turn.input.clone(),
            run_id: run_id.clone(),
            traceparent: traceparent.clone(),
            worker: Some(self.inner.holder.clone()),
        };
        // Two conditional writes, not a batch (an atomic batch costs several ms on the
        // server; only the commit needs one). The lease comes first: a crash between the
        // two leaves a lease that expires, and a retry of this turn waits for it.
        let lease_write = Write::latest(subjects.lease(token), encode(&lease)?, format!("{run_id}/0"))
            .if_last_sequence(lease_seq, None);
        let lease_seq = match self.inner.api.publish(&lease_write).await {
            Ok(ack) => ack.sequence,
            // A resend whose first attempt was stored (its ack lost) meets its own write
            // on a single-replica stream: the lease is this run's, not a lost race.
            Err(err) if err.kind() == JsErrorKind::WrongLastSequence => match self.stored_as_last(&lease_write).await {
                Some(seq) => seq,
                None => return Ok(None),
            },
            Err(err) if err.kind() == JsErrorKind::InFlight => return Ok(None),
            Err(err) if err.is_transient() => return Ok(None),
            Err(err) => return Err(err.into_plugin("taking a session's turn lease")),
        };
        let ledger_write = Write::latest(turn_subject.to_owned(), encode(&running)?, format!("{run_id}/1"))
            .if_last_sequence(ledger_seq, None);
        match self.inner.api.publish(&ledger_write).await {
            Ok(ack) => {
                Ok(Some(HeldLease { run_id, traceparent, lease_seq, ledger_seq: ack.sequence, view_seq, lease }))
            }
            Err(err) => {
                // The ledger moved under us: give the lease back and decide again.
                let free = Write::latest(subjects.lease(token), encode(&LeaseRecord::Free)?, format!("{run_id}/r"))
                    .if_last_sequence(lease_seq, None);
                let _ = self.inner.api.publish(&free).await;
                match err.kind() {
                    JsErrorKind::WrongLastSequence | JsErrorKind::InFlight => Ok(None),
                    kind if kind.is_transient() => Ok(None),
                    _ => Err(err.into_plugin("recording a running turn")),
                }
            }
        }
    }

    /// The turn's snapshot as of its ledger write. It comes from the view, with the
    /// turn's lease, when the leader shows that the session's next writes after the
    /// view's sequence were this turn's lease and ledger and nothing else; otherwise it
    /// is read as `snapshot_session` reads it.
    async fn snapshot_under_lease(
        &self,
        token: &str,
        session_id: &str,
        held: &HeldLease,
    ) -> Result<SessionSnapshot, PluginError> {
        let view_lock = self.inner.views.get(token);
        let mut view = view_lock.lock().await;
        if view.loaded && view.session_seq == held.view_seq {
            let session = self.inner.config.subjects.state_session(token);
            let api = &self.inner.api;
            let (after_view, after_lease) = tokio::join!(
                api.next(STATE_STREAM, &session, held.view_seq + 1),
                api.next(STATE_STREAM, &session, held.lease_seq + 1)
            );
            let seq_of = |read: Result<Option<StoredMessage>, JsError>| read.ok().flatten().map(|m| m.seq);
            if seq_of(after_view) == Some(held.lease_seq) && seq_of(after_lease) == Some(held.ledger_seq) {
                view.lease = Some((held.lease_seq, held.lease.clone()));
                view.session_seq = held.ledger_seq;
                return snapshot_of(&view, session_id);
            }
        }
        drop(view);
        self.snapshot(session_id).await
    }

    /// Waits until the turn's ledger may have changed (an event, or a poll interval).
    async fn wait_for_ledger(
        &self,
        token: &str,
        turn_token: &str,
        attached: &mut Option<async_nats::Subscriber>,
    ) -> Result<(), PluginError> {
        let Some(subscriber) = attached else {
            let events = self.inner.config.subjects.turn_events(token, turn_token);
            *attached = Some(
                self.inner
                    .api
                    .client()
                    .subscribe(events)
                    .await
                    .map_err(|err| PluginError::Unavailable(format!("could not watch a running turn: {err}")))?,
            );
            // Re-read right away: the turn may have completed before the subscription.
            return Ok(());
        };
        let _ = tokio::time::timeout(ATTACH_POLL, subscriber.next()).await;
        Ok(())
    }

    /// A completed turn's stored result, with its state's graph rebuilt as of the commit.
    async fn stored_result(
        &self,
        token: &str,
        result: &AssembledTurn,
        graph_request_id: &str,
    ) -> Result<AssembledTurn, PluginError> {
        let view_lock = self.inner.views.get(token);
        let mut view = view_lock.lock().await;
        if view.graph_as_of(graph_request_id).is_none() {
            self.refresh(token, &mut view).await?;
        }
        let graph = view.graph_as_of(graph_request_id).ok_or_else(|| {
            PluginError::Session(format!("the graph record of a completed turn (`{graph_request_id}`) is missing"))
        })?;
        let mut result = result.clone();
        result.state.session_graph = graph;
        Ok(result)
    }

    /// Runs a turn whose lease this host took (its key and ledger subject given), and
    /// commits it.
    async fn run_and_commit(
        &self,
        token: &str,
        (turn_key, turn_subject): (&str, &str),
        turn: SessionTurnInput,
        mut held: HeldLease,
    ) -> Result<AssembledTurn, PluginError> {
        let started_at_ms = clock::now_unix_ms();
        let turn_id = turn.turn_id.clone();
        // Registered before the stored cancel request is read: a cancel stored after the
        // read reaches the run through its event. The two reads go out together.
        let running = self.inner.running.register(&turn.session_id, &turn_id);
        let (snapshot, cancelled) = tokio::join!(
            self.snapshot_under_lease(token, &turn.session_id, &held),
            self.cancel_requested(token, turn_key)
        );
        let (mut snapshot, cancelled) = match snapshot.and_then(|snapshot| Ok((snapshot, cancelled?))) {
            Ok(read) => read,
            Err(err) => {
                // Free the lease at once, so a retry need not wait for it to expire.
                self.release_failed(token, turn_subject, &turn.input, &held, &err).await;
                return Err(err);
            }
        };
        let sink = Arc::new(HostTraceSink::new(self.clone(), turn.session_id.clone()));
        let input = turn.input.clone();
        let live = LiveOutput::start(
            self.inner.api.client().clone(),
            LiveTargets {
                subject: self.inner.config.subjects.live(token),
                reply: crate::request_context::current().and_then(|context| context.live_reply),
                turn_id: turn_id.clone(),
            },
        );
        // The commit reads the graph from the session's view: it keeps the snapshot
        // without its graph, and the executor gets the snapshot itself.
        let before = without_graph(&mut snapshot);
        let outcome = if cancelled {
            // Cancelled before this run began (its first worker died): commit it so.
            Ok(TurnOutput::cancelled())
        } else {
            let context = TurnContext::new(turn, snapshot, sink)
                .with_cancellation(running.token().clone())
                .with_live(live.sink());
            self.run_under_lease(token, &turn_id, context, &mut held).await
        };
        drop(running);
        live.finish().await;
        let output = match outcome {
            Ok(output) => output,
            Err(RunError::LeaseLost(err)) => return Err(err),
            Err(RunError::Executor(err)) => {
                self.release_failed(token, turn_subject, &input, &held, &err).await;
                return Err(err);
            }
        };
        let duration_ms = clock::now_unix_ms().saturating_sub(started_at_ms);
        let (lease, retry_input) = (held.clone(), input.clone());
        let commit = Commit { turn_id, input, output, held, before, started_at_ms, duration_ms };
        let committed = self.commit(token, turn_subject, commit).await;
        if let Err(err) = &committed {
            // The commit failed (a leader election, a graph that kept moving). Free the
            // lease at once, so a retry need not wait for it to expire. The release is
            // fenced on the same lease sequence as the commit: if the commit was applied
            // after all, or the lease was taken over, the release is refused.
            self.release_failed(token, turn_subject, &retry_input, &lease, err).await;
        }
        committed
    }

    /// Runs the executor while renewing the lease; stops (without committing) when a
    /// renewal is refused or the maximum turn duration passes.
    async fn run_under_lease(
        &self,
        token: &str,
        turn_id: &str,
        context: TurnContext,
        held: &mut HeldLease,
    ) -> Result<TurnOutput, RunError> {
        let config = &self.inner.config;
        let executor = Arc::clone(&self.inner.executor);
        // The executor's own calls to the host are not retries of `start_turn`: they run
        // without its idempotency key (each gets a fresh one), under the turn's trace.
        let calls =
            RequestContext { traceparent: crate::request_context::current_traceparent(), ..RequestContext::default() };
        let cancel = context.cancellation().clone();
        let executor_run = crate::request_context::with_request(calls, async move {
            sessionbus_api::run_until_cancelled(executor.run(context), &cancel).await
        });
        // A panicking executor fails its turn (500, lease freed at once) instead of
        // killing the task that holds the lease.
        let mut run = std::pin::pin!(
            std::panic::AssertUnwindSafe(executor_run)
                .catch_unwind()
                .map(|ran| ran.unwrap_or_else(|panic| Err(executor_panicked(turn_id, panic.as_ref()))))
        );
        let deadline = tokio::time::sleep(config.max_turn_duration);
        tokio::pin!(deadline);
        let mut renewals =
            tokio::time::interval_at(tokio::time::Instant::now() + config.lease_renew_every, config.lease_renew_every);
        let mut renewal = 0u64;
        loop {
            tokio::select! {
                output = &mut run => return output.map_err(RunError::Executor),
                _ = &mut deadline => {
                    // Permanent: the same turn would run as long again.
                    return Err(RunError::Executor(PluginError::Session(format!(
                        "turn `{turn_id}` ran longer than the maximum of {:?} and was stopped; nothing was \
                         committed", config.max_turn_duration
                    ))));
                }
                _ = renewals.tick() => {
                    renewal += 1;
                    self.renew(token, turn_id, held, renewal).await?;
                }
            }
        }
    }

    async fn renew(&self, token: &str, turn_id: &str, held: &mut HeldLease, renewal: u64) -> Result<(), RunError> {
        let lease = LeaseRecord::Held {
            turn_id: turn_id.to_owned(),
            holder: self.inner.holder.clone(),
            run_id: held.run_id.clone(),
            expires_at_ms: clock::now_unix_ms() + duration_ms(self.inner.config.lease_ttl),
            ttl_ms: duration_ms(self.inner.config.lease_ttl),
        };
        let payload = encode(&lease).map_err(RunError::Executor)?;
        let write =
            Write::latest(self.inner.config.subjects.lease(token), payload, format!("{}/renew/{renewal}", held.run_id))
                .if_last_sequence(held.lease_seq, None);
        match self.inner.api.publish(&write).await {
            Ok(ack) => {
                held.lease_seq = ack.sequence;
                Ok(())
            }
            // A resend whose first attempt was stored (its ack lost): on a single-replica
            // stream the server checks the condition before the message id. The lease's
            // last message decides: if it is this renewal, the turn goes on.
            Err(err) if err.kind() == JsErrorKind::WrongLastSequence => match self.stored_as_last(&write).await {
                Some(seq) => {
                    held.lease_seq = seq;
                    Ok(())
                }
                None => Err(lease_lost(turn_id, &err)),
            },
            Err(err) => Err(lease_lost(turn_id, &err)),
        }
    }

    /// Marks a failed run in the ledger and frees the lease, so the turn id can run again.
    async fn release_failed(
        &self,
        token: &str,
        turn_subject: &str,
        input: &TurnInput,
        held: &HeldLease,
        error: &PluginError,
    ) {
        let subjects = &self.inner.config.subjects;
        let failed = LedgerRecord::Failed {
            input: input.clone(),
            error: error.clone(),
            worker: Some(self.inner.holder.clone()),
        };
        let writes = match (encode(&LeaseRecord::Free), encode(&failed)) {
            (Ok(free), Ok(failed)) => [
                Write::latest(subjects.lease(token), free, format!("{}/f0", held.run_id))
                    .if_last_sequence(held.lease_seq, None),
                Write::latest(turn_subject.to_owned(), failed, format!("{}/f1", held.run_id))
                    .if_last_sequence(held.ledger_seq, None),
            ],
            _ => return,
        };
        // Retried through a leader election (with the same message ids: a release whose
        // ack was lost is then refused as a duplicate), so a retry of the turn need not
        // wait for the lease to expire.
        if let Err(err) = self.inner.api.retrying(|| self.inner.api.publish_batch(&writes)).await {
            tracing::warn!(?err, failure = ?error, "could not record a failed turn; its lease will expire instead");
        }
    }

    async fn commit(&self, token: &str, turn_subject: &str, commit: Commit) -> Result<AssembledTurn, PluginError> {
        let Commit { turn_id, input, output, held, before, started_at_ms, duration_ms } = commit;
        let turn_id = turn_id.as_str();
        let subjects = &self.inner.config.subjects;
        if !output.nodes.is_empty() && !output.changes.verbatim_nodes.is_empty() {
            return Err(PluginError::Session(format!(
                "the executor of turn `{turn_id}` gave both nodes to append and verbatim nodes; nothing was committed"
            )));
        }
        // The tool state is another stream: written before the batch (decision 0008),
        // deduplicated by the turn id and the state's digest when a rerun writes it again.
        let tool_state_generation = match output.changes.tool_state.clone() {
            Some(tools) => {
                let digest = crate::request_context::body_digest(&encode(&tools)?);
                Some(self.write_tool_state(&before.session_id, tools, format!("{turn_id}/tools/{digest}")).await?)
            }
            None => None,
        };
        let view_lock = self.inner.views.get(token);
        let mut view = view_lock.lock().await;
        for round in 0..DECISION_ROUNDS {
            // The commit is conditioned on the view: the graph's and the meta's
            // sequences, so a write to either since (another turn's commit read before
            // this lease was taken, a close, an append) is never overwritten, and the
            // ledger's write on the whole session at the view's sequence, which a
            // replicated stream also holds an append back on while this batch is in
            // flight (decision 0028). The first round takes the view as the turn's
            // snapshot left it, unless the lease was renewed since; a write since refuses
            // the batch, and every later round reads the leader.
            if round > 0 || !view.loaded || held.lease_seq > view.session_seq {
                self.refresh(token, &mut view).await?;
            }
            let Some((meta_seq, mut meta)) = view.meta.clone() else {
                return Err(PluginError::Session(format!(
                    "the meta of a session with a running turn `{turn_id}` is missing"
                )));
            };
            meta.turn_index += 1;
            meta.token_usage.add(&output.token_usage);
            apply_meta_changes(&mut meta, &output.changes, tool_state_generation);
            let (nodes, leaf) = if output.changes.verbatim_nodes.is_empty() {
                build_nodes(&view, output.nodes.clone(), &held.run_id, view.leaf.clone(), view.current_agent_frame())
            } else {
                verbatim_nodes(&view, &output.changes).map_err(|refusal| refusal.into_error(turn_id))?
            };
            let record = GraphRecord {
                request_id: held.run_id.clone(),
                turn_id: Some(turn_id.to_owned()),
                nodes,
                leaf,
                digest: None,
                replace: false,
            };
            let mut state = before.clone();
            state.turn_index = meta.turn_index;
            state.token_usage = meta.token_usage;
            state.agent_frames = meta.agent_frames.clone();
            state.current_agent_frame_id = meta.current_agent_frame_id.clone();
            state.tool_state_generation = meta.tool_state_generation;
            if let Some(options) = &meta.protocol_turn_options {
                state.protocol_turn_options = options.clone();
            }
            state.extra = meta.snapshot_extra(&before.session_id);
            state.session_graph = view.graph();
            state.session_graph.nodes.extend(record.nodes.iter().cloned());
            state.session_graph.leaf_node_id = record.leaf.clone().or(state.session_graph.leaf_node_id);
            let mut result = output.clone().assemble(state, started_at_ms, duration_ms);
            // The ledger keeps the result without its graph: taken out for the copy, not
            // cloned and dropped (the graph is the whole session's).
            let graph = std::mem::take(&mut result.state.session_graph);
            let stored = result.clone();
            result.state.session_graph = graph;
            let completed = LedgerRecord::Completed {
                input: input.clone(),
                result: Box::new(stored),
                graph_request_id: held.run_id.clone(),
                traceparent: held.traceparent.clone(),
                turn_commit_hash: output.changes.turn_commit_hash.clone(),
                worker: Some(self.inner.holder.clone()),
            };
            let writes = [
                Write::latest(subjects.lease(token), encode(&LeaseRecord::Free)?, format!("{}/c0", held.run_id))
                    .if_last_sequence(held.lease_seq, None),
                Write::new(subjects.graph(token), encode(&record)?, format!("{}/c1", held.run_id))
                    .if_last_sequence(view.graph_seq, None),
                Write::latest(turn_subject.to_owned(), encode(&completed)?, format!("{}/c2", held.run_id))
                    .if_last_sequence(view.session_seq, Some(subjects.state_session(token))),
                Write::latest(subjects.meta(token), encode(&meta)?, format!("{}/c3", held.run_id))
                    .if_last_sequence(meta_seq, None),
            ];
            if let Some(write) = writes.iter().find(|w| w.payload.len() > self.max_payload().saturating_sub(1024)) {
                return Err(self.too_large("a turn's commit record", write.payload.len()));
            }
            match self.inner.api.publish_batch(&writes).await {
                Ok(ack) => {
                    // The batch's four writes are stored at consecutive sequences, each
                    // conditioned on the sequence of its subject the view holds (or the
                    // leader gave this round): the view is current at the batch's last.
                    view.lease = Some((ack.sequence - 3, LeaseRecord::Free));
                    view.apply_graph(ack.sequence - 2, record);
                    view.meta = Some((ack.sequence, meta));
                    view.session_seq = ack.sequence;
                    view.loaded = true;
                    return Ok(result);
                }
                Err(err) => {
                    // The commit may have been applied although its answer says otherwise
                    // (a lost ack and a resend refused by its own condition, a duplicate
                    // batch): the ledger decides first, then the lease.
                    tracing::debug!(?err, turn_id, "turn commit failed; reading the ledger to decide");
                    let refusal = match err.kind() {
                        JsErrorKind::WrongLastSequence | JsErrorKind::InFlight => CommitRefusal::Condition,
                        kind if kind.is_transient() => CommitRefusal::Transient,
                        _ => CommitRefusal::Permanent,
                    };
                    let (api, lease_subject) = (&self.inner.api, subjects.lease(token));
                    let (ledger, lease) =
                        tokio::join!(api.last(STATE_STREAM, turn_subject), api.last(STATE_STREAM, &lease_subject));
                    let ledger =
                        decoded::<LedgerRecord>("ledger", ledger.map_err(|e| e.into_plugin("reading a ledger"))?)?;
                    let lease_seq = lease.map_err(|e| e.into_plugin("reading a lease"))?.map(|m| m.seq);
                    let ledger = ledger.as_ref().map(|(_, record)| record);
                    match decide_after_failed_commit(ledger, lease_seq, &held.run_id, held.lease_seq, refusal) {
                        AfterFailedCommit::Committed => {
                            drop(view);
                            return self.stored_result(token, &result, &held.run_id).await;
                        }
                        AfterFailedCommit::Fenced => return Err(commit_fenced(turn_id, &err)),
                        AfterFailedCommit::Retry => {}
                        AfterFailedCommit::Fail => return Err(err.into_plugin("committing a turn")),
                    }
                }
            }
        }
        Err(PluginError::Conflict(format!(
            "turn `{turn_id}` could not commit: the graph kept moving; retry with the same turn id"
        )))
    }
}

/// The meta after a turn's `changes`: frames, ledger, prompt usage, protocol options and
/// the tool-state generation the turn produced.
fn apply_meta_changes(meta: &mut MetaRecord, changes: &SessionChanges, tool_state_generation: Option<u64>) {
    if let Some(frames) = &changes.agent_frames {
        meta.agent_frames = frames.frames.clone();
        meta.current_agent_frame_id = frames.current.clone();
    }
    meta.add_usage_deltas(&changes.usage_deltas);
    if let Some(usage) = &changes.last_prompt_usage {
        meta.last_prompt_usage = Some(usage.clone());
    }
    if let Some(options) = &changes.protocol_turn_options {
        meta.protocol_turn_options = Some(options.clone());
    }
    if tool_state_generation.is_some() {
        meta.tool_state_generation = tool_state_generation;
    }
}

/// A turn's verbatim nodes and the leaf after them, when they fit the graph `view` holds.
fn verbatim_nodes(
    view: &SessionView,
    changes: &SessionChanges,
) -> Result<(Vec<sessionbus_api::SessionNode>, Option<String>), VerbatimRefusal> {
    let leaf = changes.leaf_node_id.clone().or_else(|| changes.verbatim_nodes.last().map(|n| n.node_id.clone()));
    check_verbatim_nodes(&changes.verbatim_nodes, leaf.as_deref(), view.nodes.is_empty(), |id| view.contains_node(id))?;
    Ok((changes.verbatim_nodes.clone(), leaf))
}

/// Everything a turn's commit writes, and the lease it is fenced on.
struct Commit {
    turn_id: String,
    input: TurnInput,
    output: TurnOutput,
    held: HeldLease,
    /// The session as the executor saw it, without its graph (the commit reads the
    /// graph from the session's view).
    before: SessionSnapshot,
    started_at_ms: u64,
    duration_ms: u64,
}

enum RunError {
    /// The lease was taken over; the run stopped without committing.
    LeaseLost(PluginError),
    /// The executor failed (or ran too long).
    Executor(PluginError),
}

impl JetStreamHost {
    /// The sequence of `write` when it is the last message on its subject (same message
    /// id): a resend that met its own stored first attempt, not a lost race.
    async fn stored_as_last(&self, write: &Write) -> Option<u64> {
        let stored = self.inner.api.last(STATE_STREAM, &write.subject).await.ok().flatten()?;
        (stored.msg_id.as_deref() == Some(write.msg_id.as_str())).then_some(stored.seq)
    }
}

/// A commit was refused: another worker took the turn over.
fn commit_fenced(turn_id: &str, err: &JsError) -> PluginError {
    tracing::warn!(turn_id, ?err, "commit refused: the turn lost its lease to another worker");
    PluginError::LeaseLost(format!(
        "turn `{turn_id}` lost its lease before it could commit; nothing was committed; retry with the same turn id"
    ))
}

/// A renewal was refused: another worker took the turn over.
fn lease_lost(turn_id: &str, err: &JsError) -> RunError {
    tracing::warn!(turn_id, ?err, "lease renewal refused; stopping the turn without committing");
    RunError::LeaseLost(PluginError::LeaseLost(format!(
        "turn `{turn_id}` lost its lease (renewal refused: {err:?}); nothing was committed; retry with the same \
         turn id"
    )))
}

/// The error of a turn whose executor panicked.
fn executor_panicked(turn_id: &str, panic: &(dyn std::any::Any + Send)) -> PluginError {
    let what = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message");
    tracing::error!(turn_id, panic = what, "the turn executor panicked; the turn failed and its lease was freed");
    PluginError::Session(format!("the executor of turn `{turn_id}` panicked ({what}); nothing was committed"))
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A copy of `snapshot` without its graph (the whole session's), which stays in place.
fn without_graph(snapshot: &mut SessionSnapshot) -> SessionSnapshot {
    let graph = std::mem::take(&mut snapshot.session_graph);
    let copy = snapshot.clone();
    snapshot.session_graph = graph;
    copy
}
