//! Batched trace records: the records of one session wait in a lane, and one sender per
//! lane sends them in order, a batch at a time ([`policy::decide`] says when and how
//! many). Each emitter waits for the outcome of the batch its record went out in: `Ok`
//! once the batch is stored, else the batch's error.
//!
//! - Order: a lane has one sender, and it sends a batch only after the one before it
//!   was answered, so a session's records are sent in the order they were emitted.
//! - Memory: every waiting record holds one of a fixed number of permits; an emitter
//!   finding none waits for one (backpressure), so the lanes hold at most that many.
//! - Latency: with no window, a record goes out at once when its lane is idle, and
//!   otherwise with the records that gathered while the batch before it was in flight.

pub(crate) mod policy;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};

use sessionbus_api::PluginError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::time::Instant;

use policy::Decision;
pub(crate) use policy::Limits;

/// Where a lane's batches go: the bus (`BusClient`) or JetStream (the worker's sink).
pub(crate) trait BatchSink<T>: Clone + Send + Sync + 'static {
    /// Stores `items`, records of `session_id` in order; `Ok` once all are stored.
    fn send_batch(&self, session_id: &str, items: Vec<T>) -> impl Future<Output = Result<(), PluginError>> + Send;
}

/// The lanes of one emitter (a `BusClient`, or one turn's trace sink), by session.
pub(crate) struct TraceLanes<T> {
    limits: Limits,
    lanes: Mutex<HashMap<String, Lane<T>>>,
    permits: Arc<Semaphore>,
}

/// The records of one session waiting to be sent; a lane exists while its sender runs.
struct Lane<T> {
    waiting: VecDeque<Waiting<T>>,
}

/// One record waiting, with the emitter to tell and the permit it holds.
struct Waiting<T> {
    item: T,
    size: usize,
    since: Instant,
    done: oneshot::Sender<Result<(), PluginError>>,
    permit: OwnedSemaphorePermit,
}

impl<T: Send + 'static> TraceLanes<T> {
    /// Lanes sending batches within `limits`, holding at most `max_waiting` records.
    pub(crate) fn new(limits: Limits, max_waiting: usize) -> Self {
        Self { limits, lanes: Mutex::default(), permits: Arc::new(Semaphore::new(max_waiting.max(1))) }
    }

    /// Queues `item` (`size` bytes encoded) on `session_id`'s lane and waits until the
    /// batch it goes out in is stored (`Ok`) or failed (that batch's error).
    pub(crate) async fn emit<S: BatchSink<T>>(
        self: &Arc<Self>,
        sink: &S,
        session_id: &str,
        item: T,
        size: usize,
    ) -> Result<(), PluginError> {
        // Unconstrained: out of its task's cooperative budget, the acquire would return
        // `Pending` without taking its place in the semaphore's queue, and emits started
        // in order could queue their records out of order.
        let permit = tokio::task::unconstrained(Arc::clone(&self.permits).acquire_owned())
            .await
            .map_err(|_| PluginError::Unavailable("the trace batcher is closed; make a new client".into()))?;
        let (done, stored) = oneshot::channel();
        let waiting = Waiting { item, size, since: Instant::now(), done, permit };
        let start = {
            let mut lanes = crate::lock(&self.lanes);
            match lanes.get_mut(session_id) {
                Some(lane) => {
                    lane.waiting.push_back(waiting);
                    false
                }
                None => {
                    lanes.insert(session_id.to_owned(), Lane { waiting: VecDeque::from([waiting]) });
                    true
                }
            }
        };
        if start {
            tokio::spawn(Arc::clone(self).send_lane(sink.clone(), session_id.to_owned()));
        }
        stored.await.unwrap_or_else(|_| {
            Err(PluginError::Unavailable(
                "the trace batch sender stopped before the record was stored (the runtime is shutting down?); \
                 emit the record again"
                    .into(),
            ))
        })
    }

    /// The lane's sender: sends batches until the lane is empty, then closes it.
    async fn send_lane<S: BatchSink<T>>(self: Arc<Self>, sink: S, session_id: String) {
        // Closes the lane however this task ends (a panic in the sink, a runtime shut
        // down): the waiting emitters are told, and a later emit starts a new sender.
        let mut close = CloseLane { lanes: &self.lanes, session_id: &session_id, armed: true };
        loop {
            let next = {
                let mut lanes = crate::lock(&self.lanes);
                let Some(lane) = lanes.get_mut(&session_id) else {
                    close.armed = false;
                    return;
                };
                let oldest_age = lane.waiting.front().map(|first| first.since.elapsed()).unwrap_or_default();
                match policy::decide(lane.waiting.iter().map(|waiting| waiting.size), oldest_age, &self.limits) {
                    Decision::Idle => {
                        // Closed under the lock that found it empty: an emit after this
                        // starts a new lane and sender, which the guard must not remove.
                        lanes.remove(&session_id);
                        close.armed = false;
                        return;
                    }
                    Decision::Wait(pause) => Err(pause),
                    Decision::Send(count) => Ok(lane.waiting.drain(..count).collect::<Vec<_>>()),
                }
            };
            match next {
                Err(pause) => tokio::time::sleep(pause).await,
                Ok(batch) => {
                    let (items, emitters): (Vec<T>, Vec<_>) =
                        batch.into_iter().map(|waiting| (waiting.item, (waiting.done, waiting.permit))).unzip();
                    let result = sink.send_batch(&session_id, items).await;
                    for (done, permit) in emitters {
                        let _ = done.send(result.clone());
                        drop(permit);
                    }
                }
            }
        }
    }
}

/// Runs `futures` concurrently, starting them in order: each is polled once before the
/// next is (so an emit queues its record, a publish enqueues its message on the
/// connection, in that order), then all are awaited. Their outputs, in order.
///
/// `join_all` alone does not keep that order: above 30 futures it first polls them in
/// the order of its internal ready queue. And each runs unconstrained by tokio's
/// cooperative budget, which would otherwise make a first poll return `Pending` before
/// the future took its place in a queue (a channel, a semaphore) once the task had
/// polled about 128 of them.
pub(crate) async fn join_started_in_order<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut started: Vec<_> = futures
        .into_iter()
        .map(|future| Box::pin(futures::future::maybe_done(tokio::task::unconstrained(future))))
        .collect();
    for future in &mut started {
        let _ = futures::poll!(future.as_mut());
    }
    futures::future::join_all(started.iter_mut().map(|future| future.as_mut())).await;
    started.iter_mut().filter_map(|future| future.as_mut().take_output()).collect()
}

/// Removes a lane when its sender ends abnormally (`armed`), dropping the records still
/// waiting (their emitters get an error rather than waiting forever).
struct CloseLane<'a, T> {
    lanes: &'a Mutex<HashMap<String, Lane<T>>>,
    session_id: &'a str,
    armed: bool,
}

impl<T> Drop for CloseLane<'_, T> {
    fn drop(&mut self) {
        if self.armed {
            crate::lock(self.lanes).remove(self.session_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::{Notify, mpsc};

    use super::*;

    /// A sink that reports each batch and holds it until released; a batch holding
    /// `"panic"` panics.
    #[derive(Clone)]
    struct HeldSink {
        batches: mpsc::UnboundedSender<Vec<&'static str>>,
        release: Arc<Notify>,
    }

    impl BatchSink<&'static str> for HeldSink {
        async fn send_batch(&self, _session_id: &str, items: Vec<&'static str>) -> Result<(), PluginError> {
            let _ = self.batches.send(items.clone());
            assert!(!items.contains(&"panic"), "the sink panics");
            self.release.notified().await;
            Ok(())
        }
    }

    fn lanes(
        max_waiting: usize,
    ) -> (Arc<TraceLanes<&'static str>>, HeldSink, mpsc::UnboundedReceiver<Vec<&'static str>>) {
        let limits = Limits { window: Duration::ZERO, max_records: 8, max_bytes: 1000 };
        let (batches, seen) = mpsc::unbounded_channel();
        (Arc::new(TraceLanes::new(limits, max_waiting)), HeldSink { batches, release: Arc::new(Notify::new()) }, seen)
    }

    #[tokio::test]
    async fn records_emitted_while_a_batch_is_in_flight_go_together_in_the_next() {
        let (lanes, sink, mut seen) = lanes(16);
        let first = tokio::spawn({
            let (lanes, sink) = (Arc::clone(&lanes), sink.clone());
            async move { lanes.emit(&sink, "s", "a", 1).await }
        });
        assert_eq!(seen.recv().await, Some(vec!["a"]), "an idle lane sends at once");
        let later: Vec<_> = ["b", "c", "d"]
            .into_iter()
            .map(|item| {
                let (lanes, sink) = (Arc::clone(&lanes), sink.clone());
                tokio::spawn(async move { lanes.emit(&sink, "s", item, 1).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(seen.try_recv().is_err(), "no second batch while the first is in flight");
        sink.release.notify_one();
        first.await.expect("task").expect("stored");
        let next = seen.recv().await.expect("the next batch");
        assert_eq!(next.len(), 3, "the waiting records go as one batch: {next:?}");
        sink.release.notify_one();
        for emit in later {
            emit.await.expect("task").expect("stored");
        }
    }

    #[tokio::test]
    async fn emits_beyond_the_cap_wait_for_room() {
        let (lanes, sink, mut seen) = lanes(2);
        let emit = |item: &'static str| {
            let (lanes, sink) = (Arc::clone(&lanes), sink.clone());
            tokio::spawn(async move { lanes.emit(&sink, "s", item, 1).await })
        };
        let a = emit("a");
        assert_eq!(seen.recv().await, Some(vec!["a"]), "a is in flight");
        let b = emit("b");
        tokio::time::sleep(Duration::from_millis(20)).await;
        let c = emit("c");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(lanes.permits.available_permits(), 0, "two records hold both permits");
        assert_eq!(crate::lock(&lanes.lanes).get("s").map(|lane| lane.waiting.len()), Some(1), "c is not queued");
        sink.release.notify_one();
        a.await.expect("task").expect("stored");
        let next = seen.recv().await.expect("the next batch");
        assert!(next.contains(&"b"), "b goes next: {next:?}");
        sink.release.notify_one();
        b.await.expect("task").expect("stored");
        if !next.contains(&"c") {
            assert_eq!(seen.recv().await, Some(vec!["c"]));
            sink.release.notify_one();
        }
        c.await.expect("task").expect("stored");
    }

    #[tokio::test]
    async fn a_sender_that_dies_fails_its_emitters_and_the_lane_starts_over() {
        let (lanes, sink, mut seen) = lanes(16);
        let error = lanes.emit(&sink, "s", "panic", 1).await.expect_err("the sender died");
        assert_eq!(error.kind(), sessionbus_api::ErrorKind::Unavailable);
        assert_eq!(seen.recv().await, Some(vec!["panic"]));
        assert!(crate::lock(&lanes.lanes).is_empty(), "the dead sender's lane is gone");
        let next = tokio::spawn({
            let (lanes, sink) = (Arc::clone(&lanes), sink.clone());
            async move { lanes.emit(&sink, "s", "after", 1).await }
        });
        assert_eq!(seen.recv().await, Some(vec!["after"]), "a new sender serves the lane");
        sink.release.notify_one();
        next.await.expect("task").expect("stored");
    }
}
