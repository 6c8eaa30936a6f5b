//! Audits: an independent record of every revision JetStream stored, built from the
//! events the sessionbus streams republish (`<prefix>.events.<session>.tools` for the tools
//! bucket, `<prefix>.events.<session>.graph` for the graph), so a test can judge what the
//! clients were told against what was stored, revision by revision.
//!
//! The events are recorded by a plain subscription, not captured by a stream: a
//! republished event keeps the headers of the write (`Nats-Expected-Last-Subject-Sequence`
//! and its `-Subject`), and a stream capturing it would enforce them against its own
//! sequences and refuse most events.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::{Client, Message};
use futures::StreamExt as _;
use serde_json::Value;
use sessionbus_api::sync::lock;

/// One stored revision, as its republished event told it.
#[derive(Debug, Clone)]
pub struct Revision {
    /// Its sequence in the origin stream (`Nats-Sequence`): for the tools bucket, the
    /// KV revision, i.e. the tool-state generation.
    pub seq: u64,
    /// The origin stream's previous sequence on the same subject (`Nats-Last-Sequence`),
    /// 0 for the subject's first message.
    pub previous: u64,
    pub body: Value,
}

fn header_u64(message: &Message, name: &str) -> u64 {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get(name))
        .and_then(|v| v.as_str().parse().ok())
        .unwrap_or_else(|| panic!("a republished event on {} without {name}", message.subject))
}

/// Records every event on some subjects from the moment it starts.
pub struct Recorder {
    events: Arc<Mutex<Vec<(String, Revision)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    /// Subscribes `client` to `subjects` (flushed: the subscriptions are in place when
    /// this returns). Connect `client` to a server that will not be killed.
    pub async fn start(client: &Client, subjects: &[String]) -> Self {
        let mut subscribers = Vec::new();
        for subject in subjects {
            subscribers.push(client.subscribe(subject.clone()).await.expect("subscribe to republished events"));
        }
        client.flush().await.expect("flush the audit subscriptions");
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&events);
        let task = tokio::spawn(async move {
            let mut all = futures::stream::select_all(subscribers);
            while let Some(message) = all.next().await {
                let revision = Revision {
                    seq: header_u64(&message, "Nats-Sequence"),
                    previous: header_u64(&message, "Nats-Last-Sequence"),
                    body: serde_json::from_slice(&message.payload).unwrap_or(Value::Null),
                };
                lock(&sink).push((message.subject.to_string(), revision));
            }
        });
        Self { events, task }
    }

    /// The revisions recorded on `subject`, by origin sequence (one revision told more
    /// than once is kept once). Waits, within `limit`, until `complete` says the history
    /// holds what it must.
    pub async fn history(
        &self,
        subject: &str,
        limit: Duration,
        complete: impl Fn(&BTreeMap<u64, Revision>) -> bool,
    ) -> BTreeMap<u64, Revision> {
        let deadline = Instant::now() + limit;
        loop {
            let history: BTreeMap<u64, Revision> = lock(&self.events)
                .iter()
                .filter(|(s, _)| s == subject)
                .map(|(_, revision)| (revision.seq, revision.clone()))
                .collect();
            if complete(&history) || Instant::now() > deadline {
                return history;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Revisions JetStream stored that the audit did not see, from `first` on: the
/// predecessors (`Nats-Last-Sequence`) that recorded revisions name but `history` lacks.
///
/// A republished event is a core NATS message sent by the stream leader: the events it
/// sent just before it was killed can die in its buffers, while its replicas committed
/// the revision. The next revision's `Nats-Last-Sequence` is JetStream's own statement
/// that the unseen one was stored on the subject (its body stays unknown).
pub fn unseen(history: &BTreeMap<u64, Revision>, first: u64) -> Vec<u64> {
    history
        .range(first..)
        .map(|(_, r)| r.previous)
        .filter(|previous| *previous >= first && !history.contains_key(previous))
        .collect()
}

/// Whether JetStream stored revision `seq`: the audit recorded it, or a recorded revision
/// names it as its predecessor.
pub fn stored(history: &BTreeMap<u64, Revision>, seq: u64) -> bool {
    history.contains_key(&seq) || history.values().any(|r| r.previous == seq)
}

/// The recorded revisions split into runs in which each revision's predecessor is the
/// one before it: the pairs that are neighbours in JetStream's chain, not just in the
/// audit.
pub fn chain_runs(history: &BTreeMap<u64, Revision>) -> Vec<Vec<&Revision>> {
    let mut runs: Vec<Vec<&Revision>> = Vec::new();
    for revision in history.values() {
        match runs.last_mut() {
            Some(run) if run.last().is_some_and(|last| last.seq == revision.previous) => run.push(revision),
            _ => runs.push(vec![revision]),
        }
    }
    runs
}

/// Membership of `tool` in a stored tool state (an absent `member` means true); `None`
/// when the state has no such tool.
pub fn is_member(state: &Value, tool: &str) -> Option<bool> {
    let entry = state.get("tools")?.get(format!("tool:{tool}"))?;
    Some(entry.get("member").and_then(Value::as_bool).unwrap_or(true))
}

/// How many consecutive stored tool states differ in more than one of `tools`: each
/// toggle changes one tool, so such a revision was written from a stale read and
/// reverted someone else's toggle.
pub fn count_reverts<'a>(states: impl IntoIterator<Item = &'a Value>, tools: &[String]) -> usize {
    states
        .into_iter()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|pair| tools.iter().filter(|tool| is_member(pair[0], tool) != is_member(pair[1], tool)).count() > 1)
        .count()
}
