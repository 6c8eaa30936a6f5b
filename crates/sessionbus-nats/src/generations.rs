//! Tool-state generations a worker knows to be current, so `tool_catalog` with
//! `if_generation` can answer `unchanged` in one small round trip, without reading
//! JetStream.
//!
//! Every stored tool-state write is republished by JetStream on
//! `<prefix>.events.<sid>.tools` with its revision in `Nats-Sequence`. The worker
//! subscribes on the same connection its endpoints use, and drains the pending events
//! right before answering: the server wrote an event to this connection before the
//! write's ack left it, so a request sent after a write finds that write's event
//! already queued. On a cluster the event and a request can take different routes;
//! an entry is therefore trusted for at most [`MAX_AGE`], and the catalog is a cache
//! either way (`tool_state` and `tool_catalog` without `if_generation` read the leader).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_nats::{Client, Subscriber};
use futures::{FutureExt as _, StreamExt as _};
use sessionbus_api::PluginError;

use crate::subjects::Subjects;

/// How long a generation learned from an event or a read is trusted.
pub(crate) const MAX_AGE: Duration = Duration::from_secs(30);

pub(crate) struct ToolGenerations {
    prefix: String,
    capacity: usize,
    events: tokio::sync::Mutex<Subscriber>,
    known: Mutex<HashMap<String, (u64, Instant)>>,
}

impl ToolGenerations {
    /// Subscribes to every session's tool events.
    pub(crate) async fn subscribe(client: &Client, subjects: &Subjects, capacity: usize) -> Result<Self, PluginError> {
        let subject = format!("{}.events.*.tools", subjects.prefix());
        let events = client
            .subscribe(subject.clone())
            .await
            .map_err(|err| PluginError::Unavailable(format!("could not subscribe to {subject}: {err}")))?;
        Ok(Self {
            prefix: format!("{}.events.", subjects.prefix()),
            capacity,
            events: tokio::sync::Mutex::new(events),
            known: Mutex::default(),
        })
    }

    /// Applies every event already received.
    pub(crate) async fn sync(&self) {
        let mut events = self.events.lock().await;
        while let Some(Some(message)) = events.next().now_or_never() {
            let token = message.subject.strip_prefix(self.prefix.as_str()).and_then(|rest| rest.strip_suffix(".tools"));
            let sequence =
                message.headers.as_ref().and_then(|h| h.get("Nats-Sequence")).and_then(|v| v.as_str().parse().ok());
            if let (Some(token), Some(generation)) = (token, sequence) {
                self.observe(token, generation);
            }
        }
    }

    /// The current generation of session token `token`, when known and fresh.
    pub(crate) fn get(&self, token: &str) -> Option<u64> {
        let known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        known.get(token).filter(|(_, seen)| seen.elapsed() < MAX_AGE).map(|(generation, _)| *generation)
    }

    /// Records that `token`'s generation is at least `generation`.
    pub(crate) fn observe(&self, token: &str, generation: u64) {
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        if known.len() >= self.capacity && !known.contains_key(token) {
            known.retain(|_, (_, seen)| seen.elapsed() < MAX_AGE);
            if known.len() >= self.capacity {
                known.clear();
            }
        }
        let entry = known.entry(token.to_owned()).or_insert((generation, Instant::now()));
        if generation >= entry.0 {
            *entry = (generation, Instant::now());
        }
    }
}
