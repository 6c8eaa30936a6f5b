//! The session registry (docs/decisions/0012): `SESSIONBUS_INDEX` holds one entry per
//! session, written once at create on `<prefix>.index.<parent>.<sid>`; its stream
//! sequence is the session's place in creation order and the page cursor. A page reads
//! at most [`scan_budget`] entries from the cursor on (the parent filter is a subject
//! filter), and each listed session's status, counters and last activity from its own
//! state subjects (three leader reads): the cost of a page does not depend on how many
//! sessions exist.

use futures::StreamExt as _;
use sessionbus_api::{
    PluginError, SessionHandle, SessionListPage, SessionListQuery, SessionStatus, SessionSummary, clock,
};

use super::JetStreamHost;
use super::api::{JetStreamApi, JsErrorExt as _, JsErrorKind, Write};
use super::layout::{INDEX_STREAM, STATE_STREAM};
use super::records::{IndexRecord, LeaseRecord, MetaRecord, decode, encode};
use crate::subjects::{Subjects, session_token};

/// Sessions whose state is read at once while a page is assembled.
const SUMMARY_READS_IN_FLIGHT: usize = 32;

/// The most index entries one page reads: the page size, or more when a status filter
/// may skip entries, so a page's cost is bounded whatever the filters.
pub(crate) fn scan_budget(query: &SessionListQuery) -> usize {
    let limit = query.effective_limit();
    match query.status {
        None => limit,
        Some(_) => (limit * 4).max(256),
    }
}

/// The filter that reads the entries of `parent`'s children, or every entry. The index
/// stream holds nothing but entries, so every entry is `>`: nats-server answers that in
/// stream order, where a wildcard such as `<prefix>.index.>` is matched against each
/// subject the stream holds, one per session (BENCHMARKS.md, "The registry at 100,000
/// sessions").
pub(crate) fn read_filter(subjects: &Subjects, parent_token: Option<&str>) -> String {
    match parent_token {
        Some(_) => subjects.index_filter(parent_token),
        None => ">".to_owned(),
    }
}

/// Writes `handle`'s registry entry under `subjects` once: an entry already written
/// (by a resend, or by another writer of the session) is left as it is.
pub(crate) async fn write_index(
    api: &JetStreamApi,
    subjects: &Subjects,
    handle: &SessionHandle,
    created_at: &str,
    msg_id: String,
) -> Result<(), PluginError> {
    let token = session_token(&handle.session_id)?;
    let parent_token = handle.parent_session_id.as_deref().map(session_token).transpose()?;
    let record = IndexRecord {
        session_id: handle.session_id.clone(),
        parent_session_id: handle.parent_session_id.clone(),
        created_at: created_at.to_owned(),
    };
    let write =
        Write::new(subjects.index(parent_token.as_deref(), &token), encode(&record)?, msg_id).if_last_sequence(0, None);
    match api.publish(&write).await {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == JsErrorKind::WrongLastSequence => Ok(()),
        Err(err) => Err(err.into_plugin("writing the session registry entry")),
    }
}

impl JetStreamHost {
    /// Writes `handle`'s registry entry once (a resent create, or one finding it
    /// written, changes nothing). Called after the session's state is stored: a create
    /// that failed leaves no entry.
    pub(super) async fn write_index(
        &self,
        handle: &SessionHandle,
        created_at: &str,
        msg_id: String,
    ) -> Result<(), PluginError> {
        write_index(&self.inner.api, &self.inner.config.subjects, handle, created_at, msg_id).await
    }

    /// One page of the registry.
    pub(super) async fn list(&self, query: &SessionListQuery) -> Result<SessionListPage, PluginError> {
        let subjects = &self.inner.config.subjects;
        let api = &self.inner.api;
        let parent_token = query.parent.as_deref().map(session_token).transpose()?;
        let filter = read_filter(subjects, parent_token.as_deref());
        let limit = query.effective_limit();
        let mut budget = scan_budget(query);
        let mut next_seq = query.after_sequence()?.saturating_add(1);
        let mut page = SessionListPage::default();
        // The entries up to the registry's last one, as the leader has it now, are read
        // in batches; past it (or when a batch comes back empty) from the leader.
        let newest =
            api.last(INDEX_STREAM, &filter).await.map_err(|e| e.into_plugin("reading the session registry"))?;
        let newest = newest.map_or(0, |entry| entry.seq);
        while page.sessions.len() < limit {
            if budget == 0 {
                page.next_after = Some((next_seq - 1).to_string());
                return Ok(page);
            }
            let mut entries = Vec::new();
            let mut exhausted = false;
            let want = (limit - page.sessions.len()).min(budget);
            while entries.len() < want {
                let mut read = match next_seq <= newest {
                    true => api.batch_read(INDEX_STREAM, &filter, next_seq, newest, want - entries.len()).await,
                    false => Vec::new(),
                };
                if read.is_empty() {
                    let next = api.next(INDEX_STREAM, &filter, next_seq).await;
                    let Some(entry) = next.map_err(|e| e.into_plugin("reading the session registry"))? else {
                        exhausted = true;
                        break;
                    };
                    read.push(entry);
                }
                for entry in read {
                    next_seq = entry.seq + 1;
                    entries.push(decode::<IndexRecord>("registry entry", &entry.payload)?);
                }
            }
            budget -= entries.len();
            let summaries: Vec<_> = futures::stream::iter(entries)
                .map(|entry| read_summary(api, subjects, entry))
                .buffered(SUMMARY_READS_IN_FLIGHT)
                .collect()
                .await;
            for summary in summaries {
                // No meta: a create that never completed, or a session being purged.
                if let Some(summary) = summary?
                    && query.matches(&summary)
                {
                    page.sessions.push(summary);
                }
            }
            if exhausted {
                return Ok(page);
            }
        }
        // Full: every entry read was listed, the last one at `next_seq - 1`.
        page.next_after = Some((next_seq - 1).to_string());
        Ok(page)
    }
}

/// One session's summary from its meta, lease and last write; `None` without meta.
async fn read_summary(
    api: &JetStreamApi,
    subjects: &Subjects,
    entry: IndexRecord,
) -> Result<Option<SessionSummary>, PluginError> {
    let token = session_token(&entry.session_id)?;
    let (meta_subject, lease_subject, session_subject) =
        (subjects.meta(&token), subjects.lease(&token), subjects.state_session(&token));
    let (meta, lease, last) = tokio::join!(
        api.last(STATE_STREAM, &meta_subject),
        api.last(STATE_STREAM, &lease_subject),
        api.last(STATE_STREAM, &session_subject),
    );
    let Some(meta) = meta.map_err(|e| e.into_plugin("reading session meta"))? else { return Ok(None) };
    let meta: MetaRecord = decode("meta", &meta.payload)?;
    let lease = lease.map_err(|e| e.into_plugin("reading a lease"))?;
    let turn_running = match lease {
        Some(lease) => matches!(decode::<LeaseRecord>("lease", &lease.payload)?, LeaseRecord::Held { .. }),
        None => false,
    };
    let last_activity = last
        .map_err(|e| e.into_plugin("reading a session"))?
        .map_or_else(|| meta.created_at.clone(), |m| clock::rfc3339_from_unix_nanos(m.stored_at_unix_nanos));
    Ok(Some(summary(entry.session_id, &meta, turn_running, last_activity)))
}

fn summary(session_id: String, meta: &MetaRecord, turn_running: bool, last_activity: String) -> SessionSummary {
    SessionSummary {
        session_id,
        parent_session_id: meta.handle.parent_session_id.clone(),
        status: if meta.closed { SessionStatus::Closed } else { SessionStatus::Open },
        created_at: meta.created_at.clone(),
        last_activity,
        turn_index: meta.turn_index,
        tokens: meta.token_usage.input_tokens + meta.token_usage.output_tokens,
        turn_running,
    }
}

/// One session's registry summary, read straight from the state stream (for operators:
/// `sessionbus sessions show`); `None` when unknown.
pub async fn describe_session(
    client: &async_nats::Client,
    subjects: &Subjects,
    session_id: &str,
) -> Result<Option<SessionSummary>, PluginError> {
    let api = JetStreamApi::new(client.clone(), std::time::Duration::from_secs(5), std::time::Duration::from_secs(5));
    let entry = IndexRecord { session_id: session_id.to_owned(), parent_session_id: None, created_at: String::new() };
    read_summary(&api, subjects, entry).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_reads_a_bounded_number_of_entries() {
        let query = |limit, status| SessionListQuery { limit, status, ..Default::default() };
        let cases = [
            (query(10, None), 10),
            (query(0, None), 50),
            (query(5000, None), 1000),
            (query(10, Some(SessionStatus::Open)), 256),
            (query(1000, Some(SessionStatus::Closed)), 4000),
        ];
        for (query, budget) in cases {
            assert_eq!(scan_budget(&query), budget, "{query:?}");
        }
    }
}
