//! The table of scenarios: each bus call beside the raw NATS operations it cannot avoid,
//! run by one loop.

use async_nats::HeaderMap;
use serde_json::json;
use sessionbus_api::{
    SessionGraphService as _, SessionLifecycleService as _, SessionStateService as _, SessionTurnRequest, TraceContext,
    TraceEvent, TurnInput,
};

use super::cpu::{CpuMeter, micros_per_call};
use super::fixture::{Fixture, Keys, Stored, one_message, tools};
use super::measure::{Shape, interleaved, throughput};
use super::report::{CpuPerCall, Row};

/// One scenario: a bus call, the raw reference it is compared with, and what is measured.
#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    /// The bus operation's name, as reported.
    pub name: &'static str,
    /// The raw NATS operations the bus call cannot avoid.
    pub raw: RawCall,
    /// The bus call.
    pub bus: BusCall,
    /// What is measured, against which target.
    pub measure: Measure,
    /// The share of the run's calls this scenario makes: 1 for all of them, `n` for one
    /// in `n` (a scenario whose calls take milliseconds).
    pub share: usize,
}

/// What a scenario measures.
#[derive(Clone, Copy, Debug)]
pub enum Measure {
    /// Latency (raw and bus interleaved in blocks, p50 against `p50_target`), then
    /// throughput.
    LatencyAndThroughput {
        /// The highest bus / raw p50 ratio that meets the target.
        p50_target: f64,
    },
}

/// The raw reference of a scenario.
#[derive(Clone, Copy, Debug)]
pub enum RawCall {
    /// A request/reply echo of the request body, then a leader get
    /// (`$JS.API.STREAM.MSG.GET`) of the value the bus call reads.
    EchoThenLeaderGet(Stored),
    /// An echo of the body, then a publish expecting the key's last sequence.
    EchoThenConditionalWrite(Keys),
    /// One request/reply echo of the request body.
    Echo,
    /// A JetStream publish awaiting its ack.
    Publish,
    /// What a turn cannot avoid: a request/reply echo of the turn request, the lease and
    /// the ledger's `running` record as two conditional publishes, then the commit as one
    /// atomic batch of four conditional writes (lease, graph, ledger, meta).
    TurnWrites,
}

/// The bus call of a scenario.
#[derive(Clone, Copy, Debug)]
pub enum BusCall {
    /// `tool_state` of the small session.
    ToolState,
    /// `snapshot_session` of the small session.
    SnapshotSession,
    /// `tool_catalog` of the small session.
    ToolCatalog,
    /// `apply_tool_state` with the current generation, each call in flight on its own
    /// session.
    ApplyToolState,
    /// `append_session_nodes` of one message, each call in flight on its own session.
    AppendSessionNodes,
    /// `shared_tool_catalog` of the small session, unchanged since the last call.
    SharedToolCatalog,
    /// `emit_trace_event` of a custom event.
    EmitTraceEvent,
    /// `start_turn` of a new turn (the worker's echo executor), each call in flight on its
    /// own session.
    StartTurn,
}

/// Latency and throughput, with the p50 target of a read or write: at most 1.25 times
/// the raw reference.
const LATENCY: Measure = Measure::LatencyAndThroughput { p50_target: 1.25 };
/// A bus trace record costs a request to the worker and the worker's publish, two
/// round trips, against the raw reference's one publish.
const TRACE_LATENCY: Measure = Measure::LatencyAndThroughput { p50_target: 2.5 };

/// Every scenario, in the order they run and are reported: name, raw reference, bus
/// call, what is measured.
#[rustfmt::skip]
pub const SCENARIOS: [Scenario; 8] = [
    Scenario::new("tool_state", RawCall::EchoThenLeaderGet(Stored::ToolState), BusCall::ToolState, LATENCY),
    Scenario::new("snapshot_session", RawCall::EchoThenLeaderGet(Stored::SessionMeta), BusCall::SnapshotSession, LATENCY),
    Scenario::new("tool_catalog", RawCall::EchoThenLeaderGet(Stored::ToolState), BusCall::ToolCatalog, LATENCY),
    Scenario::new("apply_tool_state", RawCall::EchoThenConditionalWrite(Keys::ToolStates), BusCall::ApplyToolState, LATENCY),
    Scenario::new("append_session_nodes", RawCall::EchoThenConditionalWrite(Keys::Graphs), BusCall::AppendSessionNodes, LATENCY),
    // The bus answers from the worker's event-fed generation cache, with no JetStream read.
    Scenario::new("shared_tool_catalog (unchanged)", RawCall::Echo, BusCall::SharedToolCatalog, Measure::LatencyAndThroughput { p50_target: 1.2 }),
    Scenario::new("emit_trace_event", RawCall::Publish, BusCall::EmitTraceEvent, TRACE_LATENCY),
    // nats-server commits one atomic batch per stream at a time: a tenth of the calls.
    Scenario::new("start_turn", RawCall::TurnWrites, BusCall::StartTurn, LATENCY).one_in(10),
];

impl Scenario {
    /// A row of the table.
    const fn new(name: &'static str, raw: RawCall, bus: BusCall, measure: Measure) -> Self {
        Self { name, raw, bus, measure, share: 1 }
    }

    /// The same scenario, making one in `n` of the run's calls.
    const fn one_in(self, n: usize) -> Self {
        Self { share: n, ..self }
    }

    /// Measures the scenario on `fixture`: latency (raw and bus interleaved), then raw
    /// throughput, then bus throughput, as its [`Measure`] says; the throughput phases
    /// also measure the CPU the worker and the servers spend per call. Returns its rows.
    pub async fn run(&self, fixture: &Fixture, shape: Shape, meters: &Meters) -> Result<Vec<Row>, String> {
        let shape = shape.share(self.share);
        let raw = |i| self.raw.call(fixture, i);
        let bus = |i| self.bus.call(fixture, self.name, i);
        let Measure::LatencyAndThroughput { p50_target } = self.measure;
        let (raw_latency, bus_latency) = interleaved(shape.blocks, shape.per_block, &raw, &bus).await?;
        let (raw_per_s, raw_server) = meters.servers.around(throughput(shape.calls, shape.in_flight, &raw)).await;
        let raw_per_s = raw_per_s?;
        let before_worker = meters.worker.read();
        let (bus_per_s, bus_server) = meters.servers.around(throughput(shape.calls, shape.in_flight, &bus)).await;
        let bus_per_s = bus_per_s?;
        let worker = before_worker.zip(meters.worker.read()).map(|(before, after)| after.saturating_sub(before));
        let cpu = CpuPerCall {
            worker_us: micros_per_call(worker, shape.calls),
            server_bus_us: micros_per_call(bus_server, shape.calls),
            server_raw_us: micros_per_call(raw_server, shape.calls),
        };
        let throughput = (raw_per_s, bus_per_s);
        Ok(Row::latency_and_throughput(
            self.name,
            self.raw.describe(),
            (&raw_latency, &bus_latency),
            throughput,
            p50_target,
            shape.in_flight,
            cpu,
        ))
    }
}

/// The CPU meters of one run: the worker process, and every nats-server.
#[derive(Clone, Debug, Default)]
pub struct Meters {
    /// The worker serving the bus calls.
    pub worker: CpuMeter,
    /// The nats-server processes (one, or the cluster's three).
    pub servers: CpuMeter,
}

impl RawCall {
    /// How the report names the raw reference.
    pub fn describe(self) -> &'static str {
        match self {
            Self::EchoThenLeaderGet(_) => "request + leader get",
            Self::EchoThenConditionalWrite(Keys::ToolStates) => "request + KV update with revision",
            Self::EchoThenConditionalWrite(Keys::Graphs) => "request + publish with expected sequence",
            Self::Echo => "request",
            Self::Publish => "JetStream publish",
            Self::TurnWrites => "request + 2 conditional publishes + atomic batch of 4",
        }
    }

    /// Makes call number `i`.
    async fn call(self, fixture: &Fixture, i: usize) -> Result<(), String> {
        let raw = &fixture.raw;
        match self {
            Self::EchoThenLeaderGet(stored) => {
                raw.echo(fixture.empty.clone()).await?;
                let (stream, subject) = fixture.stored(stored);
                raw.leader_get(stream, subject).await
            }
            Self::EchoThenConditionalWrite(keys) => {
                let (slots, payload) = fixture.raw_keys(keys);
                let (subject, seq) = slots.take().ok_or("no free subject")?;
                raw.echo(payload.clone()).await?;
                let result = raw.publish_expecting(&subject, payload.clone(), seq).await;
                slots.put((subject, *result.as_ref().unwrap_or(&seq)));
                result.map(drop)
            }
            Self::Echo => raw.echo(fixture.catalog_request.clone()).await,
            Self::Publish => {
                let mut headers = HeaderMap::new();
                headers.insert("Nats-Msg-Id", format!("raw-{i}-{}", uuid::Uuid::new_v4().simple()).as_str());
                raw.publish(&fixture.raw_trace_subject, headers, fixture.trace_record.clone()).await.map(drop)
            }
            Self::TurnWrites => {
                let mut turn = fixture.raw_turns.take().ok_or("no free turn subjects")?;
                let result = turn.run(raw, &fixture.turn_request).await;
                fixture.raw_turns.put(turn);
                result
            }
        }
    }
}

impl BusCall {
    /// Makes call number `i`; an error names `op`.
    async fn call(self, fixture: &Fixture, op: &str, i: usize) -> Result<(), String> {
        let (client, small) = (&fixture.client, fixture.small.as_str());
        let result = match self {
            Self::ToolState => client.tool_state(small).await.map(drop),
            Self::SnapshotSession => client.snapshot_session(small).await.map(drop),
            Self::ToolCatalog => client.tool_catalog(small).await.map(drop),
            Self::SharedToolCatalog => client.shared_tool_catalog(small).await.map(drop),
            Self::ApplyToolState => {
                let (session, generation) = fixture.bus_tool_states.take().ok_or("no free key")?;
                let mut state = tools(8);
                state.generation = generation;
                let result = client.apply_tool_state(&session, state).await;
                fixture.bus_tool_states.put((session, *result.as_ref().unwrap_or(&generation)));
                result.map(drop)
            }
            Self::AppendSessionNodes => {
                let session = fixture.bus_graphs.take().ok_or("no free session")?;
                let result = client.append_session_nodes(&session, one_message(format!("message {i}"))).await;
                fixture.bus_graphs.put(session);
                result.map(drop)
            }
            Self::EmitTraceEvent => {
                let context = TraceContext { session_id: Some(small.to_owned()), ..TraceContext::default() };
                let event =
                    TraceEvent::Custom { name: "bench".into(), payload: json!({"i": i}), extra: Default::default() };
                client.emit_trace_event(context, event).await
            }
            Self::StartTurn => {
                let session = fixture.bus_turns.take().ok_or("no free session")?;
                let turn_id = format!("bench-{i}-{}", uuid::Uuid::new_v4().simple());
                let result = match SessionTurnRequest::for_turn(&session, turn_id, TurnInput::text("hello")) {
                    Ok(turn) => client.start_turn(turn).await.map(drop),
                    Err(error) => Err(error),
                };
                fixture.bus_turns.put(session);
                result
            }
        };
        result.map_err(|e| format!("{op}: {e}"))
    }
}
