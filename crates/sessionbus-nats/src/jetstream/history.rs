//! A session's history from what JetStream already stores, with no consumer: its turns
//! are the last records of its ledger subjects (`state.<sid>.turn.>`), read in stream
//! order from the cursor one leader read at a time (`next by subject`); its tool
//! history is the revisions the KV bucket keeps of its key, read the same way. The first
//! page of turns also says who holds the lease (its last message, and when it was stored).

use sessionbus_api::{
    MAX_TOOL_GENERATIONS, PluginError, ToolHistory, ToolState, TurnLease, TurnListPage, TurnListQuery, TurnSummary,
    clock,
};

use super::JetStreamHost;
use super::api::{JsErrorExt as _, StoredMessage};
use super::layout::{STATE_STREAM, TOOLS_STREAM};
use super::records::{LeaseRecord, LedgerRecord, decode};
use crate::subjects::session_token;

impl JetStreamHost {
    /// One page of the session's turns, in the order their ledger records were last
    /// written; `limit + 1` leader reads at most (the last says whether a page follows),
    /// and on the first page one more, of the lease.
    pub(super) async fn turns_page(
        &self,
        session_id: &str,
        query: &TurnListQuery,
    ) -> Result<TurnListPage, PluginError> {
        let token = session_token(session_id)?;
        let after = query.after_sequence()?;
        // The first page's lease is read together with the meta, not after it.
        let first_page = query.after.is_none();
        let (exists, lease) = tokio::join!(self.require_session(&token, session_id), async {
            match first_page {
                true => self.read_lease(&token).await.map(Some),
                false => Ok(None),
            }
        });
        exists?;
        let lease = lease?;
        let subjects = &self.inner.config.subjects;
        let filter = subjects.turns(&token);
        let read = |from: u64| {
            let filter = &filter;
            async move {
                self.inner
                    .api
                    .next(STATE_STREAM, filter, from)
                    .await
                    .map_err(|e| e.into_plugin("reading a turn ledger"))
            }
        };
        let mut page = TurnListPage { lease, ..TurnListPage::default() };
        let mut next = after.saturating_add(1);
        while page.turns.len() < query.effective_limit() {
            let Some(message) = read(next).await? else { return Ok(page) };
            next = message.seq + 1;
            let turn_id = subjects.parse_turn(&message.subject)?;
            page.turns.push(ledger_summary(turn_id, &message)?);
        }
        if read(next).await?.is_some() {
            page.next_after = Some((next - 1).to_string());
        }
        Ok(page)
    }

    /// The session's tool-state generations the KV bucket keeps, oldest first.
    pub(super) async fn read_tool_history(&self, session_id: &str) -> Result<ToolHistory, PluginError> {
        let token = session_token(session_id)?;
        self.require_session(&token, session_id).await?;
        let key = self.inner.config.subjects.tool_key(&token);
        let mut revisions = Vec::new();
        let mut next = 1;
        // The bucket keeps at most its history per key; the bound holds if it keeps more.
        while revisions.len() < MAX_TOOL_GENERATIONS * 2 {
            let Some(message) = self
                .inner
                .api
                .next(TOOLS_STREAM, &key, next)
                .await
                .map_err(|e| e.into_plugin("reading tool history"))?
            else {
                break;
            };
            next = message.seq + 1;
            revisions.push(tool_revision(message)?);
        }
        Ok(ToolHistory::from_revisions(revisions))
    }

    /// The session's lease: its last message (none yet: free), held with the time the
    /// server stored it, which is when it was last taken or renewed.
    async fn read_lease(&self, token: &str) -> Result<TurnLease, PluginError> {
        let subject = self.inner.config.subjects.lease(token);
        let stored = self.inner.api.last(STATE_STREAM, &subject).await.map_err(|e| e.into_plugin("reading a lease"))?;
        let Some(message) = stored else { return Ok(TurnLease::Free) };
        Ok(match decode::<LeaseRecord>("lease", &message.payload)? {
            LeaseRecord::Free => TurnLease::Free,
            LeaseRecord::Closed => TurnLease::Closed,
            LeaseRecord::Held { turn_id, holder, .. } => TurnLease::Held {
                turn_id,
                holder,
                renewed_at_ms: u64::try_from(message.stored_at_unix_nanos / 1_000_000).ok(),
            },
        })
    }

    /// `UnknownSession` unless the session's meta is stored.
    async fn require_session(&self, token: &str, session_id: &str) -> Result<(), PluginError> {
        let meta = self
            .inner
            .api
            .last(STATE_STREAM, &self.inner.config.subjects.meta(token))
            .await
            .map_err(|e| e.into_plugin("reading session meta"))?;
        meta.map(|_| ()).ok_or_else(|| PluginError::unknown_session(session_id))
    }
}

/// One stored KV revision as `(generation, written at, state)`; a delete marker is an
/// empty state.
fn tool_revision(message: StoredMessage) -> Result<(u64, String, ToolState), PluginError> {
    let at = clock::rfc3339_from_unix_nanos(message.stored_at_unix_nanos);
    let state = if message.kv_operation.is_some() || message.payload.is_empty() {
        ToolState::default()
    } else {
        decode("tool state", &message.payload)?
    };
    Ok((message.seq, at, ToolState { generation: message.seq, ..state }))
}

/// A stored ledger record as a turn summary: a running turn started when its record
/// was stored; a completed one carries its own start and duration.
fn ledger_summary(turn_id: String, message: &StoredMessage) -> Result<TurnSummary, PluginError> {
    let record: LedgerRecord = decode("turn ledger", &message.payload)?;
    Ok(summary_of(turn_id, &record, clock::rfc3339_from_unix_nanos(message.stored_at_unix_nanos)))
}

/// The summary of `record`, stored at `stored_at` (RFC 3339).
pub(crate) fn summary_of(turn_id: String, record: &LedgerRecord, stored_at: String) -> TurnSummary {
    let mut summary = match record {
        LedgerRecord::Running { .. } => TurnSummary::running(turn_id, Some(stored_at)),
        LedgerRecord::Completed { result, .. } => TurnSummary::completed(turn_id, result),
        LedgerRecord::Failed { error, .. } => TurnSummary::failed(turn_id, error),
    };
    summary.worker = record.worker().map(str::to_owned);
    summary.trace_id = record
        .traceparent()
        .and_then(|value| sessionbus_otel::TraceParent::parse(value).ok())
        .map(|parent| format!("{:032x}", parent.trace_id));
    summary
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use sessionbus_api::{TurnInput, TurnStatus};

    use super::*;

    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn each_ledger_record_reads_as_its_summary() {
        let input = TurnInput::text("hi");
        let state = serde_json::to_value(sessionbus_api::SessionSnapshot::new("s", json!({}))).expect("json");
        let result: sessionbus_api::AssembledTurn = serde_json::from_value(json!({
            "state": state,
            "outcome": {"finished": {"assistant_message": {"text": "ok"}}},
            "execution": {"started_at_ms": 1_767_225_600_000u64, "duration_ms": 250},
            "token_usage": {"input_tokens": 7, "output_tokens": 5},
        }))
        .expect("a stored result");
        let running = LedgerRecord::Running {
            input: input.clone(),
            run_id: "r".into(),
            traceparent: Some(TRACEPARENT.into()),
            worker: Some("w1".into()),
        };
        let completed = LedgerRecord::Completed {
            input: input.clone(),
            result: Box::new(result),
            graph_request_id: "r".into(),
            traceparent: Some(TRACEPARENT.into()),
            turn_commit_hash: None,
            worker: Some("w2".into()),
        };
        let failed = LedgerRecord::Failed { input, error: PluginError::Invoke("boom".into()), worker: None };
        let at = "2026-01-01T00:00:09.000000+00:00".to_owned();
        let summaries: Vec<TurnSummary> =
            [running, completed, failed].iter().map(|r| summary_of("t".into(), r, at.clone())).collect();
        let table: Vec<_> = summaries
            .iter()
            .map(|s| {
                (
                    s.status,
                    s.outcome.as_deref(),
                    s.started_at.as_deref(),
                    s.duration_ms,
                    s.tokens(),
                    s.worker.as_deref(),
                    s.trace_id.as_deref(),
                )
            })
            .collect();
        let trace = Some("4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            table,
            vec![
                (TurnStatus::Running, None, Some(at.as_str()), None, 0, Some("w1"), trace),
                (
                    TurnStatus::Completed,
                    Some("finished"),
                    Some("2026-01-01T00:00:00.000000+00:00"),
                    Some(250),
                    12,
                    Some("w2"),
                    trace
                ),
                (TurnStatus::Failed, None, None, None, 0, None, None),
            ]
        );
        assert_eq!(summaries[2].error.as_deref(), Some("boom"));
    }
}
