//! The trace sink of turns this host runs: a turn's records go to `SESSIONBUS_TRACE`
//! in batches of pipelined publishes (crate::trace_batch), each emit returning once
//! its record is stored.

use std::sync::Arc;
use std::time::Duration;

use sessionbus_api::{PluginError, TraceContext, TraceEvent, TraceSink};

use super::JetStreamHost;
use super::api::Write;
use crate::trace_batch::{BatchSink, Limits, TraceLanes};

/// The batches of a turn's records: sent as soon as the batch before them is stored
/// (no added wait), up to 256 records or 1 MiB each.
const SINK_LIMITS: Limits = Limits { window: Duration::ZERO, max_records: 256, max_bytes: 1 << 20 };
/// Records of one turn waiting or in flight, at most; beyond it emits wait.
const SINK_MAX_WAITING: usize = 1024;

/// Trace events of one turn run by this host.
pub(super) struct HostTraceSink {
    host: JetStreamHost,
    session_id: String,
    lanes: Arc<TraceLanes<Write>>,
}

impl HostTraceSink {
    /// The sink of a turn of `session_id`.
    pub(super) fn new(host: JetStreamHost, session_id: String) -> Self {
        Self { host, session_id, lanes: Arc::new(TraceLanes::new(SINK_LIMITS, SINK_MAX_WAITING)) }
    }
}

#[async_trait::async_trait]
impl TraceSink for HostTraceSink {
    async fn emit(&self, context: TraceContext, event: TraceEvent) -> Result<(), PluginError> {
        // Encoded (and stamped with a fresh id and the time) now, in emit order.
        let write = self.host.trace_write(&self.session_id, context, event, None)?;
        let size = write.payload.len();
        self.lanes.emit(&self.host, &self.session_id, write, size).await
    }
}

impl BatchSink<Write> for JetStreamHost {
    async fn send_batch(&self, _session_id: &str, items: Vec<Write>) -> Result<(), PluginError> {
        self.store_traces(&items).await
    }
}
