//! Tool-state generations a worker knows to be current, so `tool_catalog` with
//! `if_generation` can answer `unchanged` in one small round trip, without reading
//! JetStream — only where that is provably safe (docs/decisions/0003).
//!
//! Every stored tool-state write is republished by the stream leader on
//! `<prefix>.events.<sid>.tools` with its stream sequence (`Nats-Sequence`, the
//! generation) and the previous sequence of the same key (`Nats-Last-Sequence`). The
//! server queues a write's event for its local subscribers before it sends the write's
//! ack. So when the tools stream is stored on the very server the worker is connected to
//! (a standalone server), a request sent after any acknowledged write reaches the worker
//! after that write's event, on the same connection. On a cluster the event and the
//! request can travel different routes: nothing is trusted there, and every
//! `if_generation` call reads the leader.
//!
//! The events are drained continuously by their own task, which keeps only the
//! generation per session (a bounded map). What it learned is forgotten, and every read
//! in flight discarded, whenever an event may have been missed:
//! - the connection was re-established (async-nats's `connects` count changed): the
//!   subscription is replaced (dropping events queued from the old connection) and
//!   confirmed with a round trip before anything is trusted again;
//! - the stream sequence has a gap (an event other than the next one), or an event's
//!   `Nats-Last-Sequence` is not the generation known for its session;
//! - [`RUN_LIMIT`] events were drained without the subscription ever being found empty:
//!   async-nats drops a subscription's messages only when its buffer is full, which
//!   takes at least that many queued events.
//!
//! A catalog call waits (a barrier) until the task has applied every event received
//! before the call, then answers from what is known, or reads the leader.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::{Client, Message, Statistics, Subscriber};
use futures::{FutureExt as _, StreamExt as _};
use sessionbus_api::PluginError;
use tokio::sync::{mpsc, oneshot};

use crate::jetstream::TOOLS_STREAM;
use crate::lock;
use crate::subjects::Subjects;

/// Events drained in a row, without finding the subscription empty, after which an
/// event may have been dropped. async-nats drops a subscription's message only when its
/// buffer (the connection's `subscription_capacity`, 65,536 by default) is full: a
/// worker's connection must not set a capacity below this.
pub(crate) const RUN_LIMIT: u64 = 1024;
/// How long a catalog call waits for the event task before it reads the leader instead.
const BARRIER_TIMEOUT: Duration = Duration::from_millis(500);
/// How often the event task looks for a new connection while idle.
const TICK: Duration = Duration::from_secs(1);

/// What the event task has learned; pure, so its rules are tested without a server.
#[derive(Debug)]
pub(crate) struct Knowledge {
    capacity: usize,
    /// The connection (async-nats's `connects` count) whose subscription is confirmed.
    connection: Option<u64>,
    /// The tools stream is stored on that connection's server, which is standalone.
    local: bool,
    /// Bumped whenever everything is forgotten; reads started in an older era are discarded.
    era: u64,
    /// The stream sequence of the last event applied in this era.
    last_seq: Option<u64>,
    generations: HashMap<String, u64>,
}

impl Knowledge {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            connection: None,
            local: false,
            era: 0,
            last_seq: None,
            generations: HashMap::new(),
        }
    }

    /// Forgets every generation and discards the reads in flight.
    pub(crate) fn forget(&mut self, why: &str) {
        if !self.generations.is_empty() || self.last_seq.is_some() {
            tracing::debug!(why, known = self.generations.len(), "forgetting tool generations");
        }
        self.generations.clear();
        self.era += 1;
        self.last_seq = None;
    }

    /// A new confirmed subscription on connection `connection`: nothing known yet.
    pub(crate) fn start_era(&mut self, connection: Option<u64>, local: bool) {
        self.forget("new subscription");
        self.connection = connection;
        self.local = local;
    }

    /// True when what is known may answer a call that arrived on connection `connects`.
    pub(crate) fn trusted(&self, connects: u64) -> bool {
        self.local && self.connection == Some(connects)
    }

    /// Applies the event of a write of session `token` at stream sequence `seq`, whose
    /// key's previous sequence was `previous` (`Nats-Last-Sequence`).
    pub(crate) fn apply_event(&mut self, token: &str, seq: u64, previous: Option<u64>) {
        if let Some(last) = self.last_seq
            && seq != last + 1
        {
            self.forget("a gap in the tools stream's sequence");
        }
        self.last_seq = Some(seq);
        match self.generations.get(token).copied() {
            Some(known) if seq <= known => return,
            Some(known) if previous != Some(known) => {
                self.forget("an event whose previous sequence is not the known generation");
                self.last_seq = Some(seq);
            }
            _ => {}
        }
        self.insert(token, seq);
    }

    /// The era a read starting now belongs to.
    pub(crate) fn ticket(&self) -> u64 {
        self.era
    }

    /// Records a generation read from the leader by a read started in era `ticket`.
    pub(crate) fn observe_read(&mut self, ticket: u64, token: &str, generation: u64) {
        if ticket != self.era || !self.local || self.connection.is_none() {
            return;
        }
        if self.generations.get(token).is_none_or(|known| generation > *known) {
            self.insert(token, generation);
        }
    }

    /// The known current generation of `token`.
    pub(crate) fn get(&self, token: &str) -> Option<u64> {
        self.generations.get(token).copied()
    }

    fn insert(&mut self, token: &str, generation: u64) {
        if self.generations.len() >= self.capacity && !self.generations.contains_key(token) {
            // Dropping entries is always safe: an unknown session's call reads the leader.
            self.generations.clear();
        }
        self.generations.insert(token.to_owned(), generation);
    }
}

type Barrier = oneshot::Sender<()>;

/// A worker's tool-generation knowledge and the task that keeps it.
pub(crate) struct ToolGenerations {
    knowledge: Arc<Mutex<Knowledge>>,
    statistics: Arc<Statistics>,
    barriers: mpsc::Sender<Barrier>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ToolGenerations {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ToolGenerations {
    /// Starts the event task, and returns once its first subscription is confirmed (or
    /// after a bound: until then every call reads the leader).
    pub(crate) async fn start(client: &Client, subjects: &Subjects, capacity: usize) -> Result<Self, PluginError> {
        let knowledge = Arc::new(Mutex::new(Knowledge::new(capacity)));
        let (barriers, barrier_rx) = mpsc::channel(1024);
        let (ready_tx, ready_rx) = oneshot::channel();
        let events = EventTask {
            client: client.clone(),
            subject: subjects.tool_events(),
            prefix: subjects.events_prefix(),
            knowledge: Arc::clone(&knowledge),
            barriers: barrier_rx,
            ready: Some(ready_tx),
        };
        let task = tokio::spawn(events.run());
        let _ = tokio::time::timeout(Duration::from_secs(10), ready_rx).await;
        Ok(Self { knowledge, statistics: client.statistics(), barriers, task })
    }

    fn connects(&self) -> u64 {
        self.statistics.connects.load(Ordering::Relaxed)
    }

    /// The current generation of session token `token`, when provably known: the tools
    /// stream is local, the connection unchanged, and every event received before this
    /// call applied.
    pub(crate) async fn current(&self, token: &str) -> Option<u64> {
        let connects = self.connects();
        if !lock(&self.knowledge).trusted(connects) {
            // Wakes the task, which notices a new connection at once.
            let (nudge, _) = oneshot::channel();
            let _ = self.barriers.try_send(nudge);
            return None;
        }
        let (barrier, applied) = oneshot::channel();
        self.barriers.try_send(barrier).ok()?;
        tokio::time::timeout(BARRIER_TIMEOUT, applied).await.ok()?.ok()?;
        let knowledge = lock(&self.knowledge);
        if knowledge.trusted(self.connects()) { knowledge.get(token) } else { None }
    }

    /// The era a leader read starting now belongs to.
    pub(crate) fn ticket(&self) -> u64 {
        lock(&self.knowledge).ticket()
    }

    /// Records a generation read from the leader by a read started at `ticket`.
    pub(crate) fn observe_read(&self, ticket: u64, token: &str, generation: u64) {
        lock(&self.knowledge).observe_read(ticket, token, generation);
    }
}

struct EventTask {
    client: Client,
    subject: String,
    prefix: String,
    knowledge: Arc<Mutex<Knowledge>>,
    barriers: mpsc::Receiver<Barrier>,
    ready: Option<oneshot::Sender<()>>,
}

impl EventTask {
    fn connects(&self) -> u64 {
        self.client.statistics().connects.load(Ordering::Relaxed)
    }

    async fn run(mut self) {
        loop {
            lock(&self.knowledge).start_era(None, false);
            let connection = self.connects();
            let subscriber = match self.client.subscribe(self.subject.clone()).await {
                Ok(subscriber) => subscriber,
                Err(err) => {
                    tracing::warn!(%err, subject = self.subject, "could not subscribe to tool events");
                    self.idle_until(None).await;
                    continue;
                }
            };
            // The stream-info request goes out on this connection after the `SUB`, and the
            // server handles a connection's operations in order: its answer confirms the
            // subscription, so every write stored from then on is delivered to it.
            // (`flush` alone would not: it only writes to the socket.)
            let Some(local) = self.stream_is_local().await else {
                // Not known (no answer, an error): nothing is trusted; ask again shortly.
                drop(subscriber);
                self.idle_until(None).await;
                continue;
            };
            if self.connects() != connection {
                continue;
            }
            lock(&self.knowledge).start_era(Some(connection), local);
            tracing::debug!(local, connection, "tool events subscribed");
            if let Some(ready) = self.ready.take() {
                let _ = ready.send(());
            }
            if local {
                self.drain(subscriber, connection).await;
            } else {
                // On a cluster nothing is trusted: no events needed until a reconnect.
                drop(subscriber);
                self.idle_until(Some(connection)).await;
            }
        }
    }

    /// Answers barriers until the connection is no longer `connection` (or for one tick
    /// when `None`).
    async fn idle_until(&mut self, connection: Option<u64>) {
        let tick = tokio::time::sleep(TICK);
        tokio::pin!(tick);
        loop {
            tokio::select! {
                barrier = self.barriers.recv() => match barrier {
                    Some(barrier) => { let _ = barrier.send(()); }
                    None => std::future::pending::<()>().await,
                },
                () = &mut tick => {
                    if connection.is_none() {
                        return;
                    }
                    tick.as_mut().reset(tokio::time::Instant::now() + TICK);
                }
            }
            if connection.is_some_and(|connection| connection != self.connects()) {
                return;
            }
        }
    }

    /// Applies events as they arrive; answers each barrier once everything received
    /// before it is applied. Returns when the connection changed or the subscription ended.
    async fn drain(&mut self, mut subscriber: Subscriber, connection: u64) {
        let mut run = 0u64;
        let mut waiting: Vec<Barrier> = Vec::new();
        loop {
            match subscriber.next().now_or_never() {
                Some(Some(message)) => {
                    run += 1;
                    self.apply(&message, run);
                    continue;
                }
                Some(None) => return,
                None => {}
            }
            // Found empty: everything received so far is applied.
            run = 0;
            if self.connects() != connection {
                return;
            }
            for barrier in waiting.drain(..) {
                let _ = barrier.send(());
            }
            tokio::select! {
                message = subscriber.next() => match message {
                    Some(message) => {
                        run = 1;
                        self.apply(&message, run);
                    }
                    None => return,
                },
                barrier = self.barriers.recv() => match barrier {
                    Some(barrier) => waiting.push(barrier),
                    None => std::future::pending::<()>().await,
                },
                () = tokio::time::sleep(TICK) => {}
            }
        }
    }

    fn apply(&self, message: &Message, run: u64) {
        let mut knowledge = lock(&self.knowledge);
        if run.is_multiple_of(RUN_LIMIT) {
            knowledge.forget("events may have been dropped (a long run without the subscription found empty)");
        }
        let headers = message.headers.as_ref();
        let header = |name: &str| headers.and_then(|h| h.get(name)).and_then(|v| v.as_str().parse::<u64>().ok());
        let token = message.subject.strip_prefix(self.prefix.as_str()).and_then(|rest| rest.strip_suffix(".tools"));
        let from_stream = headers.and_then(|h| h.get("Nats-Stream")).is_some_and(|v| v.as_str() == TOOLS_STREAM);
        match (token, header("Nats-Sequence")) {
            (Some(token), Some(seq)) if from_stream => knowledge.apply_event(token, seq, header("Nats-Last-Sequence")),
            // Not a republished tool write (anyone allowed to publish on the subject can
            // send one): what it claims is not applied, and what is known is not trusted.
            _ => knowledge.forget("a message on the tool events subject that JetStream did not republish"),
        }
    }

    /// Whether the tools stream is stored on this connection's server and that server is
    /// standalone (not in a cluster, not reached through a leaf node); `None` when
    /// JetStream did not say.
    async fn stream_is_local(&self) -> Option<bool> {
        let request = async_nats::Request::new().timeout(Some(Duration::from_secs(5)));
        let reply = self.client.send_request(Subjects::stream_info(TOOLS_STREAM), request).await.ok()?;
        let info = serde_json::from_slice::<serde_json::Value>(&reply.payload).ok()?;
        if info.get("error").is_some() {
            return None;
        }
        let server = self.client.server_info();
        let leader = info["cluster"]["leader"].as_str();
        let cluster = info["cluster"]["name"].as_str().unwrap_or_default();
        Some(
            server.cluster.is_none()
                && cluster.is_empty()
                && leader == Some(server.server_name.as_str())
                && info["config"]["num_replicas"].as_u64().unwrap_or(1) <= 1,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> Knowledge {
        let mut knowledge = Knowledge::new(16);
        knowledge.start_era(Some(1), true);
        knowledge
    }

    #[test]
    fn contiguous_events_are_known_and_trusted_on_their_connection() {
        let mut knowledge = local();
        knowledge.apply_event("a", 5, Some(0));
        knowledge.apply_event("b", 6, Some(0));
        knowledge.apply_event("a", 7, Some(5));
        assert_eq!(knowledge.get("a"), Some(7));
        assert_eq!(knowledge.get("b"), Some(6));
        assert!(knowledge.trusted(1));
    }

    #[test]
    fn a_new_connection_is_not_trusted() {
        let knowledge = local();
        assert!(!knowledge.trusted(2), "events sent while disconnected are lost");
    }

    #[test]
    fn a_cluster_is_never_trusted() {
        let mut knowledge = Knowledge::new(16);
        knowledge.start_era(Some(1), false);
        knowledge.apply_event("a", 1, Some(0));
        assert!(!knowledge.trusted(1));
        knowledge.observe_read(knowledge.ticket(), "b", 4);
        assert_eq!(knowledge.get("b"), None);
    }

    #[test]
    fn a_gap_in_the_stream_sequence_forgets_every_session() {
        let mut knowledge = local();
        knowledge.apply_event("a", 5, Some(0));
        knowledge.apply_event("b", 6, Some(0));
        // 7 was missed: it may have been a's.
        knowledge.apply_event("b", 8, Some(6));
        assert_eq!(knowledge.get("a"), None);
        assert_eq!(knowledge.get("b"), Some(8));
        knowledge.apply_event("c", 9, Some(0));
        assert_eq!(knowledge.get("b"), Some(8), "contiguous again");
    }

    #[test]
    fn a_previous_sequence_other_than_the_known_generation_forgets_every_session() {
        let mut knowledge = local();
        let ticket = knowledge.ticket();
        knowledge.observe_read(ticket, "a", 3);
        knowledge.observe_read(ticket, "b", 4);
        // The first event after the reads says a's previous write was 5, not 3.
        knowledge.apply_event("a", 10, Some(5));
        assert_eq!(knowledge.get("b"), None);
        assert_eq!(knowledge.get("a"), Some(10));
    }

    #[test]
    fn an_event_older_than_a_read_does_not_lower_the_generation() {
        let mut knowledge = local();
        knowledge.observe_read(knowledge.ticket(), "a", 9);
        knowledge.apply_event("a", 8, Some(2));
        assert_eq!(knowledge.get("a"), Some(9));
    }

    #[test]
    fn a_read_started_before_forgetting_is_discarded() {
        let mut knowledge = local();
        let ticket = knowledge.ticket();
        knowledge.forget("test");
        knowledge.observe_read(ticket, "a", 3);
        assert_eq!(knowledge.get("a"), None);
        knowledge.observe_read(knowledge.ticket(), "a", 3);
        assert_eq!(knowledge.get("a"), Some(3));
    }

    #[test]
    fn the_map_is_bounded() {
        let mut knowledge = Knowledge::new(4);
        knowledge.start_era(Some(1), true);
        for seq in 1..=10 {
            knowledge.apply_event(&format!("s{seq}"), seq, Some(0));
        }
        assert!(knowledge.generations.len() <= 4);
        assert_eq!(knowledge.get("s10"), Some(10));
    }
}
