//! The trace exporter: a durable JetStream consumer of `SESSIONBUS_TRACE` that turns
//! trace records into OpenTelemetry spans and exports them over OTLP.
//!
//! - Open spans (start seen, end not yet) live in the `SESSIONBUS_SPANS` KV bucket, so
//!   records are acked as soon as they are applied; the consumer never holds a start
//!   record until its end arrives (that would stall it at its max-ack-pending).
//! - Finished spans are exported by calling `SpanExporter::export` directly and retried
//!   until they are accepted; only then are their records acked. A collector outage
//!   delays spans and loses none.
//! - A restart resumes from the consumer's ack floor and the open spans in the bucket.
//!   Delivery is at least once; spans are deduplicated by span id within a run.
//! - A turn's spans hang under the `traceparent` stored in its ledger record.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, pull};
use async_nats::jetstream::{self, kv};
use futures::StreamExt as _;
use opentelemetry_sdk::trace::SpanExporter;
use sessionbus_api::{PluginError, TraceRecord};
use sessionbus_otel::{Applied, OpenSpan, SpanAssembler, TraceParent};

use super::api::JetStreamApi;
use super::layout::{STATE_STREAM, TRACE_STREAM, verify_layout};
use super::records::{LedgerRecord, decode};
use crate::subjects::{Subjects, session_token, turn_token};

/// The KV bucket holding open spans.
pub const SPANS_BUCKET: &str = "SESSIONBUS_SPANS";
/// The stream behind [`SPANS_BUCKET`].
pub const SPANS_STREAM: &str = "KV_SESSIONBUS_SPANS";

/// Settings of the trace exporter.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct TraceExporterConfig {
    /// The subject prefix.
    pub subjects: Subjects,
    /// The durable consumer's name; exporters sharing it share the work.
    pub consumer: String,
    /// Records fetched per round.
    pub batch: usize,
    /// The longest pause between export retries.
    pub max_retry_pause: Duration,
    /// How long a fetched record may stay unacked before JetStream redelivers it (to
    /// this or another exporter). While an export is retried, progress is reported so
    /// the records are not redelivered.
    pub ack_wait: Duration,
}

with_setters!(TraceExporterConfig {
    with_subjects => subjects: Subjects,
    with_consumer => consumer: String,
    with_batch => batch: usize,
    with_max_retry_pause => max_retry_pause: Duration,
    with_ack_wait => ack_wait: Duration,
});

impl Default for TraceExporterConfig {
    fn default() -> Self {
        Self {
            subjects: Subjects::default(),
            consumer: "sessionbus-exporter".to_owned(),
            batch: 256,
            max_retry_pause: Duration::from_secs(10),
            ack_wait: Duration::from_secs(30),
        }
    }
}

/// What an exporter run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExporterStats {
    /// Trace records applied.
    pub records: u64,
    /// Spans exported.
    pub spans: u64,
    /// Records that could not be read or mapped (acked and logged).
    pub rejected: u64,
}

fn unavailable(what: &str, err: impl std::fmt::Display) -> PluginError {
    PluginError::Unavailable(format!("trace exporter: {what}: {err}"))
}

/// Runs the exporter until `shutdown` completes.
pub async fn run_trace_exporter<E: SpanExporter>(
    client: async_nats::Client,
    exporter: E,
    config: TraceExporterConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<ExporterStats, PluginError> {
    let context = jetstream::new(client.clone());
    verify_layout(&context, &config.subjects).await?;
    let spans = context.get_key_value(SPANS_BUCKET).await.map_err(|err| {
        unavailable("opening the open-span bucket (run `sessionbus setup` once before the exporter)", err)
    })?;
    let stream = context.get_stream(TRACE_STREAM).await.map_err(|err| unavailable("reading the trace stream", err))?;
    let consumer = stream
        .get_or_create_consumer(
            &config.consumer,
            pull::Config {
                durable_name: Some(config.consumer.clone()),
                ack_policy: AckPolicy::Explicit,
                ack_wait: config.ack_wait,
                max_ack_pending: 20_000,
                ..Default::default()
            },
        )
        .await
        .map_err(|err| unavailable("creating the durable consumer", err))?;
    let mut assembler = SpanAssembler::new();
    restore_open_spans(&spans, &mut assembler).await?;
    let api = JetStreamApi::new(client, Duration::from_secs(5), Duration::from_secs(15));
    let mut origins = Origins::default();
    let mut stats = ExporterStats::default();
    tokio::pin!(shutdown);
    loop {
        let fetched = consumer.batch().max_messages(config.batch).expires(Duration::from_millis(500)).messages().await;
        let mut batch = match fetched {
            Ok(batch) => batch,
            Err(err) => {
                tracing::warn!(%err, "trace exporter: fetch failed; retrying");
                tokio::select! { _ = &mut shutdown => return Ok(stats), _ = tokio::time::sleep(Duration::from_secs(1)) => continue }
            }
        };
        let mut messages = Vec::new();
        loop {
            tokio::select! {
                _ = &mut shutdown => return Ok(stats),
                next = batch.next() => match next {
                    Some(Ok(message)) => messages.push(message),
                    Some(Err(err)) => { tracing::debug!(%err, "trace exporter: fetch ended"); break; }
                    None => break,
                },
            }
        }
        let mut closed = Vec::new();
        for message in &messages {
            let record: TraceRecord = match serde_json::from_slice(&message.payload) {
                Ok(record) => record,
                Err(err) => {
                    tracing::warn!(%err, subject = %message.subject, "trace exporter: unreadable record skipped");
                    stats.rejected += 1;
                    continue;
                }
            };
            let origin = origins.of(&api, &config.subjects, &record).await;
            match assembler.push(&record, origin.as_ref()) {
                Ok(Applied::Opened(key) | Applied::Updated(key)) => {
                    if let Some(open) = assembler.open_span(&key) {
                        let body = serde_json::to_vec(open).map_err(|err| unavailable("encoding an open span", err))?;
                        spans
                            .put(key.kv_key(), body.into())
                            .await
                            .map_err(|err| unavailable("storing an open span", err))?;
                    }
                }
                Ok(Applied::Finished { closed: Some(key), .. }) => closed.push(key),
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(%err, "trace exporter: record not mapped");
                    stats.rejected += 1;
                }
            }
            stats.records += 1;
        }
        let finished = assembler.take_finished();
        let count = finished.len() as u64;
        let export = sessionbus_otel::export::export_with_retry(&exporter, finished, None, config.max_retry_pause);
        tokio::pin!(export);
        let mut progress = tokio::time::interval(config.ack_wait / 3);
        progress.tick().await;
        loop {
            tokio::select! {
                _ = &mut shutdown => return Ok(stats),
                exported = &mut export => {
                    if exported.is_err() {
                        return Err(PluginError::Unavailable("trace exporter: export gave up".into()));
                    }
                    break;
                }
                _ = progress.tick() => {
                    for message in &messages {
                        let _ = message.ack_with(async_nats::jetstream::AckKind::Progress).await;
                    }
                }
            }
        }
        stats.spans += count;
        for key in closed {
            if let Err(err) = spans.purge(key.kv_key()).await {
                tracing::warn!(%err, "trace exporter: could not drop a closed span from the bucket");
            }
        }
        for message in messages {
            if let Err(err) = message.ack().await {
                tracing::warn!(%err, "trace exporter: ack failed (the record will be redelivered)");
            }
        }
    }
}

async fn restore_open_spans(spans: &kv::Store, assembler: &mut SpanAssembler) -> Result<(), PluginError> {
    let mut keys = spans.keys().await.map_err(|err| unavailable("listing open spans", err))?;
    while let Some(key) = keys.next().await {
        let key = key.map_err(|err| unavailable("listing open spans", err))?;
        if let Ok(Some(body)) = spans.get(&key).await {
            match serde_json::from_slice::<OpenSpan>(&body) {
                Ok(open) => assembler.restore(open),
                Err(err) => tracing::warn!(%err, key, "trace exporter: unreadable open span dropped"),
            }
        }
    }
    Ok(())
}

/// Trace parents of turns, read once from their ledger records.
#[derive(Default)]
struct Origins {
    known: HashMap<(String, String), Option<TraceParent>>,
}

impl Origins {
    async fn of(&mut self, api: &JetStreamApi, subjects: &Subjects, record: &TraceRecord) -> Option<TraceParent> {
        let session = record.context.session_id.clone()?;
        let turn = record.context.turn_id.clone()?;
        let key = (session, turn);
        if let Some(Some(known)) = self.known.get(&key) {
            return Some(*known);
        }
        let (Ok(session_token), Ok(turn_token)) = (session_token(&key.0), turn_token(&key.1)) else { return None };
        let ledger = api.last(STATE_STREAM, &subjects.turn(&session_token, &turn_token)).await.ok().flatten();
        let origin = ledger
            .and_then(|message| decode::<LedgerRecord>("ledger", &message.payload).ok())
            .and_then(|ledger| ledger.traceparent().and_then(|t| TraceParent::parse(t).ok()));
        if self.known.len() > 65_536 {
            self.known.clear();
        }
        // A turn with no ledger yet may get one: only a found parent is final.
        self.known.insert(key, origin);
        origin
    }
}
