//! What every scenario works on: the clients, a small session with tools, the bodies the
//! raw references send, and a pool of independent keys per conditional write.

use std::sync::Mutex;

use bytes::Bytes;
use serde_json::json;
use sessionbus_api::sync::lock;
use sessionbus_api::{
    AppendSessionNodesRequest, SessionAppendNode, SessionCreateRequest, SessionGraphService as _,
    SessionLifecycleService as _, SessionStateService as _, SessionTurnRequest, ToolManifest, ToolState, TurnInput,
};
use sessionbus_nats::{BusClient, JetStreamHost, STATE_STREAM, Subjects, TOOLS_STREAM};

use super::raw::Raw;

/// The subjects of one raw turn reference, with the last sequence of each.
pub struct RawTurn {
    prefix: String,
    lease: u64,
    graph: u64,
    meta: u64,
    turns: u64,
}

impl RawTurn {
    fn new(slot: usize) -> Self {
        Self { prefix: format!("bench.raw.turn.{slot}"), lease: 0, graph: 0, meta: 0, turns: 0 }
    }

    /// A new turn: the echo of `body`, the lease and a new ledger subject written as two
    /// conditional publishes, then the commit as one atomic batch of four conditional
    /// writes, as the bus writes a turn.
    pub async fn run(&mut self, raw: &Raw, body: &Bytes) -> Result<(), String> {
        self.turns += 1;
        let (lease, graph, meta) =
            (format!("{}.lease", self.prefix), format!("{}.graph", self.prefix), format!("{}.meta", self.prefix));
        let ledger = format!("{}.ledger.{}", self.prefix, self.turns);
        raw.echo(body.clone()).await?;
        self.lease = raw.publish_expecting(&lease, body.clone(), self.lease).await?;
        let running = raw.publish_expecting(&ledger, body.clone(), 0).await?;
        let writes = [
            (lease.as_str(), self.lease),
            (graph.as_str(), self.graph),
            (ledger.as_str(), running),
            (meta.as_str(), self.meta),
        ];
        let last = raw.atomic_batch(&writes, body.clone()).await?;
        // A batch's messages take consecutive sequences.
        (self.lease, self.graph, self.meta) = (last - 3, last - 2, last);
        Ok(())
    }
}

/// The value a raw leader get reads.
#[derive(Clone, Copy, Debug)]
pub enum Stored {
    /// The small session's tool state (its KV entry).
    ToolState,
    /// The small session's meta record.
    SessionMeta,
}

/// A pool of keys for conditional writes, one per call in flight.
#[derive(Clone, Copy, Debug)]
pub enum Keys {
    /// Tool states (bus: sessions with their generation; raw: KV keys with their revision).
    ToolStates,
    /// Graphs (bus: sessions; raw: subjects with their last sequence).
    Graphs,
}

/// A pool of independent keys, so calls in flight never contend on one subject.
pub struct Slots<T>(Mutex<Vec<T>>);

impl<T> Slots<T> {
    fn new() -> Self {
        Self(Mutex::new(Vec::new()))
    }

    /// A free key, taken out of the pool.
    pub fn take(&self) -> Option<T> {
        lock(&self.0).pop()
    }

    /// Returns a key to the pool.
    pub fn put(&self, slot: T) {
        lock(&self.0).push(slot);
    }
}

/// A tool state of `count` tools.
pub fn tools(count: usize) -> ToolState {
    let mut state = ToolState::default();
    for i in 0..count {
        state.insert(ToolManifest::new(format!("tool:t{i}"), format!("t{i}"), format!("Tool number {i}.")));
    }
    state
}

/// An append of one user message.
pub fn one_message(text: String) -> AppendSessionNodesRequest {
    AppendSessionNodesRequest { nodes: vec![SessionAppendNode::message("User", text)], requires_ancestor_node_id: None }
}

/// An error (a `PluginError`, a NATS client error) to a message naming what failed.
pub fn failed<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// What the scenarios work on.
pub struct Fixture {
    /// The bus client; every call goes to the worker process.
    pub client: BusClient,
    /// The raw NATS operations.
    pub raw: Raw,
    /// A session with three nodes and eight tools.
    pub small: String,
    /// `{}`: the body of a read.
    pub empty: Bytes,
    /// The body of an unchanged catalog request.
    pub catalog_request: Bytes,
    /// Where the raw trace records go.
    pub raw_trace_subject: String,
    /// A trace record's body.
    pub trace_record: Bytes,
    /// The small session's tool state KV subject.
    tools_subject: String,
    /// The small session's meta subject.
    meta_subject: String,
    /// Sessions with their tool generation, for `apply_tool_state`.
    pub bus_tool_states: Slots<(String, u64)>,
    /// Sessions for `append_session_nodes`.
    pub bus_graphs: Slots<String>,
    /// Sessions for `start_turn`.
    pub bus_turns: Slots<String>,
    /// The subjects of the raw turn reference.
    pub raw_turns: Slots<RawTurn>,
    /// The body of a turn request.
    pub turn_request: Bytes,
    /// KV keys with their revision, and the tool state written to them.
    raw_tool_states: (Slots<(String, u64)>, Bytes),
    /// Subjects with their last sequence, and the append written to them.
    raw_graphs: (Slots<(String, u64)>, Bytes),
}

impl Fixture {
    /// Writes what the scenarios need (through `setup`, a host in this process) and
    /// warms the paths: `in_flight` keys per conditional write.
    pub async fn prepare(
        client: BusClient,
        raw: Raw,
        setup: &JetStreamHost,
        subjects: &Subjects,
        in_flight: usize,
    ) -> Result<Self, String> {
        let small = format!("bench-small-{}", uuid::Uuid::new_v4().simple());
        setup.create_session(SessionCreateRequest::root(Some(small.clone()))).await.map_err(failed("create"))?;
        for i in 0..3 {
            setup.append_session_nodes(&small, one_message(format!("message {i}"))).await.map_err(failed("append"))?;
        }
        setup.apply_tool_state(&small, tools(8)).await.map_err(failed("tools"))?;
        let empty = Bytes::from_static(b"{}");
        for _ in 0..100 {
            client.snapshot_session(&small).await.map_err(failed("warmup"))?;
            client.tool_state(&small).await.map_err(failed("warmup"))?;
            raw.echo(empty.clone()).await?;
        }
        // The worker learns the catalog's generation; later calls find it unchanged.
        client.shared_tool_catalog(&small).await.map_err(failed("catalog"))?;

        let state_body = Bytes::from(serde_json::to_vec(&tools(8)).unwrap_or_default());
        let (bus_tool_states, raw_tool_states) = (Slots::new(), Slots::new());
        let (bus_graphs, raw_graphs) = (Slots::new(), Slots::new());
        let (bus_turns, raw_turns) = (Slots::new(), Slots::new());
        for i in 0..in_flight.max(1) {
            let session = format!("bench-apply-{i}-{}", uuid::Uuid::new_v4().simple());
            let generation = setup.apply_tool_state(&session, tools(8)).await.map_err(failed("apply"))?;
            bus_tool_states.put((session.clone(), generation));
            let raw_subject = subjects.tool_key(&format!("raw-{session}"));
            let seq = raw.publish_expecting(&raw_subject, state_body.clone(), 0).await?;
            raw_tool_states.put((raw_subject, seq));

            let session = format!("bench-append-{i}-{}", uuid::Uuid::new_v4().simple());
            client.create_session(SessionCreateRequest::root(Some(session.clone()))).await.map_err(failed("create"))?;
            bus_graphs.put(session);
            raw_graphs.put((format!("bench.raw.append.{i}"), 0u64));

            let session = format!("bench-turn-{i}-{}", uuid::Uuid::new_v4().simple());
            client.create_session(SessionCreateRequest::root(Some(session.clone()))).await.map_err(failed("create"))?;
            bus_turns.put(session);
            raw_turns.put(RawTurn::new(i));
        }
        let append_body =
            Bytes::from(serde_json::to_vec(&one_message("a benchmark message".into())).unwrap_or_default());
        let trace_record = Bytes::from(
            serde_json::to_vec(&json!({"schema_version": 2, "type": "custom", "name": "bench"})).unwrap_or_default(),
        );
        let turn = SessionTurnRequest::for_turn(&small, "bench-0", TurnInput::text("hello")).map_err(failed("turn"))?;
        // The body a client sends for it (`StartTurnRequest`).
        let turn_request = Bytes::from(
            serde_json::to_vec(&json!({"turn_id": turn.turn_id(), "input": turn.input(), "scope": turn.scope()}))
                .unwrap_or_default(),
        );
        Ok(Self {
            tools_subject: subjects.tool_key(&small),
            meta_subject: subjects.meta(&small),
            raw_trace_subject: subjects.trace(&format!("raw-{small}")),
            client,
            raw,
            small,
            empty,
            catalog_request: Bytes::from_static(b"{\"if_generation\":1}"),
            trace_record,
            bus_tool_states,
            bus_graphs,
            bus_turns,
            raw_turns,
            turn_request,
            raw_tool_states: (raw_tool_states, state_body),
            raw_graphs: (raw_graphs, append_body),
        })
    }

    /// The stream and subject of a stored value.
    pub fn stored(&self, stored: Stored) -> (&'static str, &str) {
        match stored {
            Stored::ToolState => (TOOLS_STREAM, &self.tools_subject),
            Stored::SessionMeta => (STATE_STREAM, &self.meta_subject),
        }
    }

    /// The raw key pool of `keys`, and the body written to its keys.
    pub fn raw_keys(&self, keys: Keys) -> (&Slots<(String, u64)>, &Bytes) {
        let (slots, body) = match keys {
            Keys::ToolStates => &self.raw_tool_states,
            Keys::Graphs => &self.raw_graphs,
        };
        (slots, body)
    }
}
