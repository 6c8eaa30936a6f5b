//! [`RuntimeTraces`]: the trace records of a whole `LashCore`, stored on the bus.
//!
//! A process that embeds lash on the JetStream store gives its `LashCoreBuilder` this
//! sink (`trace_sink`), and every record lash makes lands on its session's trace
//! subject (`SESSIONBUS_TRACE`, `trace.<sid>`), where the trace exporter, `watch` and
//! the dashboard read it, as they read the records of turns workers run.
//!
//! lash appends synchronously, from inside its turns: the sink is the executor's
//! bounded [`TraceBridge`], so a slow trace store never slows a turn (a record that does
//! not fit is dropped and counted). A task drains it and stores the records of one
//! session in order, as one batch when several wait.

use std::sync::Arc;

use sessionbus_api::{SessionGraphService, TraceContext, TraceEvent};
use tokio::sync::mpsc;

use crate::executor::trace::TraceBridge;

/// The most records one store request carries.
const MAX_BATCH: usize = 256;

/// A `LashCore`'s trace sink that stores its records on the bus (see the module docs).
pub struct RuntimeTraces {
    bridge: Arc<TraceBridge>,
    forwarder: tokio::task::JoinHandle<()>,
}

impl RuntimeTraces {
    /// Starts storing records through `bus` (a `JetStreamHost`, or a `BusClient`
    /// reaching workers), holding at most `capacity` records waiting. Runs its task on
    /// the current tokio runtime.
    pub fn start(bus: Arc<dyn SessionGraphService>, capacity: usize) -> Self {
        let (bridge, receiver) = TraceBridge::new(TraceContext::default(), capacity);
        let forwarder = tokio::spawn(forward(bus, receiver));
        Self { bridge: Arc::new(bridge), forwarder }
    }

    /// The sink to give `LashCoreBuilder::trace_sink`.
    pub fn sink(&self) -> Arc<dyn lash_trace::TraceSink> {
        Arc::clone(&self.bridge) as Arc<dyn lash_trace::TraceSink>
    }

    /// How many records were dropped because the sink was full (or lash's record did
    /// not read as the bus's).
    pub fn dropped(&self) -> u64 {
        self.bridge.dropped()
    }
}

impl Drop for RuntimeTraces {
    fn drop(&mut self) {
        self.forwarder.abort();
    }
}

/// Stores what `receiver` yields, one session's consecutive records per request.
async fn forward(bus: Arc<dyn SessionGraphService>, mut receiver: mpsc::Receiver<(TraceContext, TraceEvent)>) {
    let mut next = None;
    loop {
        let first = match next.take() {
            Some(record) => record,
            None => match receiver.recv().await {
                Some(record) => record,
                None => return,
            },
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(record) if record.0.session_id == batch[0].0.session_id => batch.push(record),
                Ok(record) => {
                    next = Some(record);
                    break;
                }
                Err(_) => break,
            }
        }
        let session = batch[0].0.session_id.clone();
        if session.is_none() {
            tracing::debug!(records = batch.len(), "lash trace records naming no session were not stored");
            continue;
        }
        if let Err(err) = bus.emit_trace_events(batch).await {
            tracing::warn!(%err, ?session, "lash trace records could not be stored on the bus");
        }
    }
}
