//! Retention: closed sessions whose last write is older than a configured age are
//! purged, a bounded batch per call (docs/decisions/0012).
//!
//! The walk follows the registry's index from its oldest entry and stops at the first
//! entry written after the cutoff (every later session is younger), after `batch`
//! purges, or after examining [`PurgeConfig::max_examined`] entries: one call costs the
//! same whatever the number of sessions. A session is purged subject by subject: its
//! state (`<prefix>.state.<sid>.>`), its trace records, its tool-state key, and its
//! registry entry last, so a purge cut short is finished by the next call (an entry
//! whose meta is gone and that is older than the cutoff is purged again).
//!
//! Purging needs the right to purge streams: the deploy/ `admin` user
//! (`sessionbus purge`), never workers.

use std::time::Duration;

use async_nats::jetstream;
use sessionbus_api::{PluginError, clock};

use super::api::{JetStreamApi, JsErrorExt as _};
use super::layout::{INDEX_STREAM, STATE_STREAM, TOOLS_STREAM, TRACE_STREAM};
use super::records::{IndexRecord, MetaRecord, decode};
use crate::subjects::{Subjects, session_token};

/// What one purge call does.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PurgeConfig {
    /// Closed sessions whose last write is older than this are purged.
    pub closed_older_than: Duration,
    /// The most sessions purged by one call.
    pub batch: usize,
    /// The most registry entries one call examines (open or young sessions included).
    pub max_examined: usize,
}

with_setters!(PurgeConfig {
    with_closed_older_than => closed_older_than: Duration,
    with_batch => batch: usize,
    with_max_examined => max_examined: usize,
});

impl Default for PurgeConfig {
    fn default() -> Self {
        Self { closed_older_than: Duration::from_secs(30 * 24 * 3600), batch: 100, max_examined: 10_000 }
    }
}

/// What one purge call did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PurgeReport {
    /// The sessions purged, oldest first.
    pub purged: Vec<String>,
    /// Registry entries examined.
    pub examined: usize,
    /// True when the call stopped at its batch or examination bound with older entries
    /// left unexamined: call again.
    pub more: bool,
}

/// Whether a session seen by the walk is purged: closed (or with its state already
/// gone) and last written before the cutoff.
fn expired(meta_closed: Option<bool>, last_write_nanos: i128, cutoff_nanos: i128) -> bool {
    meta_closed.unwrap_or(true) && last_write_nanos < cutoff_nanos
}

/// Purges one bounded batch of closed sessions older than `config.closed_older_than`.
pub async fn purge_closed_sessions(
    client: &async_nats::Client,
    subjects: &Subjects,
    config: &PurgeConfig,
) -> Result<PurgeReport, PluginError> {
    let api = JetStreamApi::new(client.clone(), Duration::from_secs(5), Duration::from_secs(5));
    let context = jetstream::new(client.clone());
    let age_nanos = i128::try_from(config.closed_older_than.as_nanos()).unwrap_or(i128::MAX);
    let cutoff_nanos = i128::from(clock::now_unix_ms()) * 1_000_000 - age_nanos;
    let all = super::registry::read_filter(subjects, None);
    let mut report = PurgeReport::default();
    let mut next_seq = 1;
    loop {
        if report.purged.len() >= config.batch || report.examined >= config.max_examined {
            report.more = true;
            return Ok(report);
        }
        let read = |e: super::api::JsError| e.into_plugin("reading the session registry");
        let Some(entry) = api.next(INDEX_STREAM, &all, next_seq).await.map_err(read)? else { return Ok(report) };
        next_seq = entry.seq + 1;
        if entry.stored_at_unix_nanos >= cutoff_nanos {
            return Ok(report);
        }
        report.examined += 1;
        let record: IndexRecord = decode("registry entry", &entry.payload)?;
        let token = session_token(&record.session_id)?;
        let meta = api.last(STATE_STREAM, &subjects.meta(&token)).await.map_err(read)?;
        let closed = meta.map(|m| decode::<MetaRecord>("meta", &m.payload).map(|meta| meta.closed)).transpose()?;
        let last_write = api.last(STATE_STREAM, &subjects.state_session(&token)).await.map_err(read)?;
        let last_write_nanos = last_write.map_or(entry.stored_at_unix_nanos, |m| m.stored_at_unix_nanos);
        if !expired(closed, last_write_nanos, cutoff_nanos) {
            continue;
        }
        for (stream, filter) in [
            (STATE_STREAM, subjects.state_session(&token)),
            (TRACE_STREAM, subjects.trace(&token)),
            (TOOLS_STREAM, subjects.tool_key(&token)),
            (INDEX_STREAM, subjects.index_of(&token)),
        ] {
            purge_subject(&context, stream, filter).await?;
        }
        report.purged.push(record.session_id);
    }
}

async fn purge_subject(context: &jetstream::Context, stream: &str, filter: String) -> Result<(), PluginError> {
    let failed = |err: &dyn std::fmt::Display| {
        PluginError::Unavailable(format!(
            "could not purge {filter} from {stream}: {err} (purging needs the right to purge streams: run it as the \
             admin user)"
        ))
    };
    let handle = context.get_stream_no_info(stream).await.map_err(|e| failed(&e))?;
    handle.purge().filter(filter.clone()).await.map_err(|e| failed(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::expired;

    #[test]
    fn only_closed_sessions_past_the_cutoff_expire() {
        let cutoff = 1_000;
        let cases = [
            (Some(true), 999, true),
            (Some(true), 1_000, false),
            (Some(false), 10, false),
            (None, 10, true),
            (None, 2_000, false),
        ];
        for (closed, last_write, purged) in cases {
            assert_eq!(expired(closed, last_write, cutoff), purged, "{closed:?} {last_write}");
        }
    }
}
