//! `cancel_turn` on the durable host: the cancel request is stored on
//! `state.<sid>.cancel.<tid>` (so a rerun of the turn sees it), and its republished
//! event reaches every worker; the one running the turn fires the turn's token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use futures::StreamExt as _;
use sessionbus_api::{CancelReply, CancellationToken, PluginError, clock, ids};

use super::JetStreamHost;
use super::api::{JsErrorExt as _, Write};
use super::layout::STATE_STREAM;
use super::records::{CancelRecord, encode};
use super::turn_protocol::{CancelDecision, decide_cancel};
use crate::events::{EventKind, SessionEvent};
use crate::subjects::{Subjects, session_token, turn_token};

/// The turns this host runs now, by `(session id, turn id)`, with their tokens.
#[derive(Default)]
pub(super) struct RunningTurns {
    turns: Mutex<HashMap<(String, String), CancellationToken>>,
}

impl RunningTurns {
    /// Registers a run of a turn; the run is deregistered when the guard drops.
    pub(super) fn register(self: &Arc<Self>, session_id: &str, turn_id: &str) -> RunningTurn {
        let key = (session_id.to_owned(), turn_id.to_owned());
        let token = CancellationToken::new();
        crate::lock(&self.turns).insert(key.clone(), token.clone());
        RunningTurn { turns: Arc::downgrade(self), key, token }
    }

    fn cancel(&self, session_id: &str, turn_id: &str) {
        if let Some(token) = crate::lock(&self.turns).get(&(session_id.to_owned(), turn_id.to_owned())) {
            token.cancel();
        }
    }
}

/// One registered run; fires when the turn is cancelled.
pub(super) struct RunningTurn {
    turns: Weak<RunningTurns>,
    key: (String, String),
    token: CancellationToken,
}

impl RunningTurn {
    pub(super) fn token(&self) -> &CancellationToken {
        &self.token
    }
}

impl Drop for RunningTurn {
    fn drop(&mut self) {
        if let Some(turns) = self.turns.upgrade() {
            crate::lock(&turns.turns).remove(&self.key);
        }
    }
}

/// Watches every stored cancel request and fires the runs `turns` holds. Ends when the
/// host is gone (or the connection closes for good).
pub(super) async fn watch_cancels(client: async_nats::Client, subjects: Subjects, turns: Weak<RunningTurns>) {
    let mut requests = match client.subscribe(subjects.cancel_events()).await {
        Ok(subscriber) => subscriber,
        Err(err) => {
            tracing::warn!(%err, "could not watch cancel requests: cancelled turns run to their end on this worker");
            return;
        }
    };
    while let Some(message) = requests.next().await {
        let Some(turns) = turns.upgrade() else { return };
        if let Some(SessionEvent { session_id, kind: EventKind::Cancel { turn_id }, .. }) =
            SessionEvent::parse(&subjects, &message)
        {
            turns.cancel(&session_id, &turn_id);
        }
    }
}

impl JetStreamHost {
    /// `cancel_turn`: decides from the turn's lease and ledger, and stores the request
    /// when the turn runs or may be rerun.
    pub(super) async fn cancel(&self, session_id: &str, turn_id: &str) -> Result<CancelReply, PluginError> {
        ids::validate_id("turn id", turn_id)?;
        let token = session_token(session_id)?;
        let turn_key = turn_token(turn_id)?;
        let subjects = &self.inner.config.subjects;
        let state = self.read_turn_state(&token, &subjects.turn(&token, &turn_key)).await?;
        match decide_cancel(&state.observed(), turn_id) {
            CancelDecision::UnknownSession => Err(PluginError::unknown_session(session_id)),
            CancelDecision::UnknownTurn => Ok(CancelReply::UnknownTurn),
            CancelDecision::Finished(outcome) => Ok(CancelReply::Finished { outcome: outcome.clone() }),
            CancelDecision::NotRunning => Ok(CancelReply::NotRunning),
            CancelDecision::Request { holder } => {
                let record = CancelRecord { requested_at_ms: clock::now_unix_ms() };
                let write =
                    Write::latest(subjects.cancel(&token, &turn_key), encode(&record)?, format!("cancel/{turn_id}"));
                self.inner.api.publish(&write).await.map_err(|err| err.into_plugin("storing a cancel request"))?;
                Ok(CancelReply::Cancelling { holder: holder.map(str::to_owned) })
            }
        }
    }

    /// Whether a cancel of the turn is stored (read from the stream leader).
    pub(super) async fn cancel_requested(&self, token: &str, turn_key: &str) -> Result<bool, PluginError> {
        let subject = self.inner.config.subjects.cancel(token, turn_key);
        let stored = self.inner.api.last(STATE_STREAM, &subject).await;
        Ok(stored.map_err(|err| err.into_plugin("reading a turn's cancel request"))?.is_some())
    }
}
