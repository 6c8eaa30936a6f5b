//! A running turn's live output: the executor's events go, in order and without
//! blocking it, to `<prefix>.live.<sid>` for watchers and, when the `start_turn` caller
//! asked (`Sessionbus-Progress: stream`), to its reply subject as progress messages.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_nats::HeaderMap;
use serde_json::Value;
use sessionbus_api::LiveSink;
use tokio::sync::{mpsc, oneshot};

use crate::wire;

/// Live events a run may have waiting to be published; beyond, new ones are dropped
/// (and counted), so a slow connection never slows the turn.
const PENDING_EVENTS: usize = 1024;

/// The live output of one run of a turn.
pub(super) struct LiveOutput {
    sink: Arc<ChannelSink>,
    finish: oneshot::Sender<()>,
    drained: tokio::task::JoinHandle<()>,
}

struct ChannelSink {
    events: mpsc::Sender<Value>,
    dropped: AtomicU64,
}

impl LiveSink for ChannelSink {
    fn send(&self, event: Value) {
        if self.events.try_send(event).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Where one run's live events go.
pub(super) struct LiveTargets {
    /// `<prefix>.live.<sid>`.
    pub(super) subject: String,
    /// The `start_turn` caller's reply subject, when it asked for live events.
    pub(super) reply: Option<String>,
    /// The turn.
    pub(super) turn_id: String,
}

impl LiveOutput {
    /// Starts publishing the events sent to [`LiveOutput::sink`] on `client`.
    pub(super) fn start(client: async_nats::Client, targets: LiveTargets) -> Self {
        let (events, receiver) = mpsc::channel(PENDING_EVENTS);
        let (finish, finished) = oneshot::channel();
        let drained = tokio::spawn(publish(client, targets, receiver, finished));
        Self { sink: Arc::new(ChannelSink { events, dropped: AtomicU64::new(0) }), finish, drained }
    }

    /// The sink the executor's context gets.
    pub(super) fn sink(&self) -> Arc<dyn LiveSink> {
        Arc::clone(&self.sink) as Arc<dyn LiveSink>
    }

    /// Publishes what is still pending, then stops. Called before the turn's commit:
    /// the commit's JetStream round trip on the same connection then orders every live
    /// event before the final reply.
    pub(super) async fn finish(self) {
        let _ = self.finish.send(());
        let _ = self.drained.await;
        let dropped = self.sink.dropped.load(Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(dropped, "a turn's live output outran its connection; events were dropped");
        }
    }
}

async fn publish(
    client: async_nats::Client,
    targets: LiveTargets,
    mut events: mpsc::Receiver<Value>,
    mut finished: oneshot::Receiver<()>,
) {
    let mut seq = 0u64;
    loop {
        tokio::select! {
            biased;
            event = events.recv() => match event {
                Some(event) => send(&client, &targets, &mut seq, &event).await,
                None => return,
            },
            _ = &mut finished => break,
        }
    }
    // Whatever was sent before the finish is still published, in order.
    events.close();
    while let Some(event) = events.recv().await {
        send(&client, &targets, &mut seq, &event).await;
    }
}

async fn send(client: &async_nats::Client, targets: &LiveTargets, seq: &mut u64, event: &Value) {
    let Ok(payload) = serde_json::to_vec(event) else { return };
    *seq += 1;
    let mut headers = HeaderMap::new();
    headers.insert(wire::LIVE, seq.to_string().as_str());
    headers.insert(wire::TURN_ID, targets.turn_id.as_str());
    let _ = client.publish_with_headers(targets.subject.clone(), headers.clone(), payload.clone().into()).await;
    if let Some(reply) = &targets.reply {
        headers.insert(wire::STATUS, wire::STATUS_PROGRESS);
        let _ = client.publish_with_headers(reply.clone(), headers, payload.into()).await;
    }
}
