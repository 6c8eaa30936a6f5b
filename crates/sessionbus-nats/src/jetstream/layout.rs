//! The JetStream layout: the tools bucket, the state and trace streams and the
//! exporter's open-span bucket.
//!
//! Creating or changing the layout needs the right to create and update streams;
//! only `sessionbus setup` (an admin) does it, with [`ensure_layout`]. Workers and the
//! exporter only check that it is there ([`verify_layout`]): they have no right to
//! create, update, delete or purge a stream.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use sessionbus_api::PluginError;

use crate::subjects::Subjects;
pub use crate::subjects::TOOLS_BUCKET;

use super::exporter::SPANS_BUCKET;

/// The stream behind [`TOOLS_BUCKET`].
pub const TOOLS_STREAM: &str = "KV_SESSIONBUS_TOOLS";
/// The stream holding every session's meta, lease, graph and turn ledger.
pub const STATE_STREAM: &str = "SESSIONBUS_STATE";
/// The stream holding trace records.
pub const TRACE_STREAM: &str = "SESSIONBUS_TRACE";
/// The session registry's index: one message per session, written once at create, in
/// creation order (docs/decisions/0012).
pub const INDEX_STREAM: &str = "SESSIONBUS_INDEX";

/// How the streams are created.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct LayoutConfig {
    /// Replicas of every stream and bucket (1 on a single node, 3 in a cluster).
    pub replicas: usize,
    /// How long the state stream remembers message ids for dedupe.
    pub duplicate_window: Duration,
    /// Tool-state history kept per session (older revisions are dropped).
    pub tool_history: i64,
    /// How long trace records are kept.
    pub trace_max_age: Duration,
}

with_setters!(LayoutConfig {
    with_replicas => replicas: usize,
    with_duplicate_window => duplicate_window: Duration,
    with_tool_history => tool_history: i64,
    with_trace_max_age => trace_max_age: Duration,
});

impl Default for LayoutConfig {
    fn default() -> Self {
        Self {
            replicas: 1,
            duplicate_window: Duration::from_secs(600),
            tool_history: 64,
            trace_max_age: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

fn unavailable(what: &str, err: impl std::fmt::Display) -> PluginError {
    PluginError::Unavailable(format!(
        "could not create or update {what}: {err} (is JetStream enabled on the server, and the server 2.12 or newer?)"
    ))
}

/// Creates or updates the buckets and streams under `subjects`' prefix (needs the
/// right to create and update streams: `sessionbus setup`).
pub async fn ensure_layout(
    context: &jetstream::Context,
    subjects: &Subjects,
    config: &LayoutConfig,
) -> Result<(), PluginError> {
    let republish =
        |(source, destination): (String, String)| Some(stream::Republish { source, destination, headers_only: false });
    context
        .create_or_update_key_value(kv::Config {
            bucket: TOOLS_BUCKET.to_owned(),
            description: "sessionbus tool state; the revision is the generation".to_owned(),
            history: config.tool_history,
            num_replicas: config.replicas,
            storage: stream::StorageType::File,
            republish: republish(subjects.republish_tools()),
            ..Default::default()
        })
        .await
        .map_err(|err| unavailable("the SESSIONBUS_TOOLS bucket", err))?;
    context
        .create_or_update_stream(stream::Config {
            name: STATE_STREAM.to_owned(),
            description: Some("sessionbus session meta, leases, graphs and turn ledgers".to_owned()),
            subjects: vec![subjects.state_all()],
            num_replicas: config.replicas,
            storage: stream::StorageType::File,
            duplicate_window: config.duplicate_window,
            allow_rollup: true,
            allow_direct: true,
            allow_atomic_publish: true,
            republish: republish(subjects.republish_state()),
            ..Default::default()
        })
        .await
        .map_err(|err| unavailable("the SESSIONBUS_STATE stream", err))?;
    context
        .create_or_update_stream(stream::Config {
            name: TRACE_STREAM.to_owned(),
            description: Some("sessionbus trace records".to_owned()),
            subjects: vec![subjects.trace_all()],
            num_replicas: config.replicas,
            storage: stream::StorageType::File,
            max_age: config.trace_max_age,
            duplicate_window: Duration::from_secs(120),
            allow_direct: true,
            allow_batch_publish: true,
            republish: republish(subjects.republish_trace()),
            ..Default::default()
        })
        .await
        .map_err(|err| unavailable("the SESSIONBUS_TRACE stream", err))?;
    context
        .create_or_update_stream(stream::Config {
            name: INDEX_STREAM.to_owned(),
            description: Some("sessionbus session registry: one entry per session, in creation order".to_owned()),
            subjects: vec![subjects.index_filter(None)],
            num_replicas: config.replicas,
            storage: stream::StorageType::File,
            duplicate_window: config.duplicate_window,
            max_messages_per_subject: 1,
            allow_direct: true,
            ..Default::default()
        })
        .await
        .map_err(|err| unavailable("the SESSIONBUS_INDEX stream", err))?;
    context
        .create_or_update_key_value(kv::Config {
            bucket: SPANS_BUCKET.to_owned(),
            description: "sessionbus trace exporter: open spans".to_owned(),
            history: 1,
            num_replicas: config.replicas,
            ..Default::default()
        })
        .await
        .map_err(|err| unavailable("the SESSIONBUS_SPANS bucket", err))?;
    Ok(())
}

/// Checks that the streams a worker uses exist and serve `subjects`' prefix, with no
/// right beyond `STREAM.INFO`. When they do not, the error says to run
/// `sessionbus setup`.
pub async fn verify_layout(context: &jetstream::Context, subjects: &Subjects) -> Result<(), PluginError> {
    let expected = [
        (STATE_STREAM, subjects.state_all()),
        (TRACE_STREAM, subjects.trace_all()),
        (TOOLS_STREAM, subjects.tools_all()),
        (INDEX_STREAM, subjects.index_filter(None)),
    ];
    for (stream, subject) in expected {
        let mut handle = context.get_stream(stream).await.map_err(|err| missing(stream, err))?;
        let info = handle.info().await.map_err(|err| missing(stream, err))?;
        if !info.config.subjects.contains(&subject) {
            return Err(PluginError::Unavailable(format!(
                "the JetStream stream {stream} serves {:?}, not {subject}: run `sessionbus setup` with the same \
                 SESSIONBUS_PREFIX as the workers",
                info.config.subjects
            )));
        }
    }
    Ok(())
}

fn missing(stream: &str, err: impl std::fmt::Display) -> PluginError {
    PluginError::Unavailable(format!(
        "the JetStream layout is not ready (stream {stream}: {err}): run `sessionbus setup` once, with a user \
         allowed to create streams, before starting workers"
    ))
}
