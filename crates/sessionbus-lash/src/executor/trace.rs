//! [`TraceBridge`]: lash's synchronous trace sink feeding one turn's `TraceSink`.
//!
//! lash calls `append` synchronously, from inside the turn. The bridge puts each record
//! on a bounded channel and returns at once; the executor drains the channel into the
//! turn's `TraceSink` while the turn runs. When the channel is full the record is
//! dropped and counted: a slow trace store never slows or blocks a turn.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use lash_trace::{TraceRecord, TraceSink, TraceSinkError};
use sessionbus_api::{TraceContext, TraceEvent};
use tokio::sync::mpsc;

/// How many trace records a turn may have in flight before the bridge drops them.
pub const DEFAULT_TRACE_CAPACITY: usize = 1024;

/// One turn's bridge from lash's trace sink to a channel the executor drains.
pub struct TraceBridge {
    sender: Mutex<Option<mpsc::Sender<(TraceContext, TraceEvent)>>>,
    turn: TraceContext,
    dropped: AtomicU64,
}

impl TraceBridge {
    /// A bridge holding at most `capacity` records (at least 1), whose records name
    /// the session and turn of `turn` when lash leaves them out; and the receiving end.
    pub fn new(turn: TraceContext, capacity: usize) -> (Self, mpsc::Receiver<(TraceContext, TraceEvent)>) {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        (Self { sender: Mutex::new(Some(sender)), turn, dropped: AtomicU64::new(0) }, receiver)
    }

    /// Stops taking records: the receiver ends once it has what was sent. Records
    /// lash appends afterwards are dropped and counted.
    pub fn close(&self) {
        match self.sender.lock() {
            Ok(mut sender) => *sender = None,
            Err(poisoned) => *poisoned.into_inner() = None,
        }
    }

    /// How many records were dropped (channel full, closed, or not readable).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn drop_one(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

impl TraceSink for TraceBridge {
    fn append(&self, record: &TraceRecord) -> Result<(), TraceSinkError> {
        let Some((context, event)) = to_bus(record, &self.turn) else {
            self.drop_one();
            return Ok(());
        };
        let sent = match self.sender.lock() {
            Ok(sender) => sender.as_ref().map(|sender| sender.try_send((context, event)).is_ok()),
            Err(_) => None,
        };
        if sent != Some(true) {
            self.drop_one();
        }
        Ok(())
    }
}

/// lash's record as the bus's context and event (the event verbatim, every kind), with
/// the turn's session, turn and turn index filled in where lash left them out.
pub fn to_bus(record: &TraceRecord, turn: &TraceContext) -> Option<(TraceContext, TraceEvent)> {
    let mut json = serde_json::to_value(record).ok()?;
    let fields = json.as_object_mut()?;
    let mut context: TraceContext = serde_json::from_value(fields.remove("context")?).ok()?;
    // The record's own fields; the bus's sink stamps its record anew.
    for field in ["schema_version", "id", "timestamp"] {
        fields.remove(field);
    }
    let event: TraceEvent = serde_json::from_value(json).ok()?;
    context.session_id = context.session_id.or_else(|| turn.session_id.clone());
    context.turn_id = context.turn_id.or_else(|| turn.turn_id.clone());
    context.turn_index = context.turn_index.or(turn.turn_index);
    Some((context, event))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn() -> TraceContext {
        TraceContext {
            session_id: Some("s1".into()),
            turn_id: Some("t1".into()),
            turn_index: Some(3),
            ..TraceContext::default()
        }
    }

    fn record(context: lash_trace::TraceContext) -> TraceRecord {
        TraceRecord::new(context, lash_trace::TraceEvent::TurnStarted { metadata: Default::default() })
    }

    #[test]
    fn records_name_the_turn_where_lash_leaves_it_out() {
        let rows = [
            ("lash names nothing", lash_trace::TraceContext::default(), ("s1", "t1")),
            (
                "lash names its own",
                lash_trace::TraceContext {
                    session_id: Some("s2".into()),
                    turn_id: Some("t2".into()),
                    ..Default::default()
                },
                ("s2", "t2"),
            ),
        ];
        for (name, context, (session, turn_id)) in rows {
            let (context, event) = to_bus(&record(context), &turn()).expect("a lash record reads as the bus's");
            assert_eq!(context.session_id.as_deref(), Some(session), "{name}");
            assert_eq!(context.turn_id.as_deref(), Some(turn_id), "{name}");
            assert_eq!(context.turn_index, Some(3), "{name}");
            let event = serde_json::to_value(event).unwrap();
            assert_eq!(event, serde_json::json!({"type": "turn_started"}), "{name}: the event alone");
        }
    }

    #[test]
    fn a_full_channel_drops_and_counts_without_blocking() {
        let (bridge, mut receiver) = TraceBridge::new(turn(), 2);
        for _ in 0..5 {
            bridge.append(&record(Default::default())).expect("append never fails");
        }
        assert_eq!(bridge.dropped(), 3);
        assert!(receiver.try_recv().is_ok());
        assert!(receiver.try_recv().is_ok());
        assert!(receiver.try_recv().is_err());
    }

    #[test]
    fn a_closed_bridge_ends_the_receiver_and_counts_late_records() {
        let (bridge, mut receiver) = TraceBridge::new(turn(), 4);
        bridge.append(&record(Default::default())).expect("append");
        bridge.close();
        bridge.append(&record(Default::default())).expect("append");
        assert!(receiver.try_recv().is_ok());
        assert_eq!(receiver.try_recv(), Err(mpsc::error::TryRecvError::Disconnected));
        assert_eq!(bridge.dropped(), 1);
    }
}
