//! Differential test: the bus answers every call as the in-memory reference does, while
//! one of its two workers is killed and restarted.
//!
//! Seeded random sequences of every operation of the three service traits run against
//! `InMemoryHost` (the reference) and against the bus: a real nats-server started here
//! and two real `sessionbus worker` processes, reached through `BusClient`. Both hosts
//! run turns on the same `EchoExecutor` (the worker's `--executor echo`). The operations:
//! create (root and child; empty, existing-session, current-session and snapshot start
//! points, with a branch in the copied graph; initial nodes; custom policies), close,
//! start_turn (new, resent, same id with another input), snapshot (by id, bound,
//! unbound), append (message, plugin and protocol nodes, with and without
//! `requires_ancestor_node_id`: the leaf, a node on the active path, off it, of another
//! session, unknown), apply_tool_state (current, zero, stale and bogus generations;
//! orphaned and non-member tools), set_tool_membership (known and unknown tools),
//! tool_state, tool_catalog (full, shared, and on the wire with `if_generation`),
//! graph_page on the wire, emit_trace_event (named, bound, bound to another session,
//! nameless), and invalid session ids; unknown and closed sessions come up on their own.
//!
//! The server's `max_payload` is lowered to 300 KiB and some nodes are 30-70 KB, so the
//! larger sessions' snapshots and turn replies arrive in pages that the client completes.
//!
//! At seeded points one worker is SIGKILLed a few milliseconds into a call (often while
//! it serves it) and restarted. The client resends a call answered `Unavailable` with
//! the same request id (a turn: with the same turn id), as a caller should.
//!
//! What is proved: every answer (the Ok value, or the error's kind, wire code and
//! message) equals the reference's, and after each sequence so does the final state of
//! every session: snapshot, tool state, catalog, trace records, the turn ledger (every
//! page of `turns`), the tool history and the stored result of every turn id. Both are compared as JSON after `Side::normalize`, which maps only what
//! legitimately differs between the two hosts (each case says why).
//!
//! The seed is printed first and in every failure, with the sequence, the op index, the
//! op and both answers. `SESSIONBUS_DIFF_SEED=<seed>` replays the same operations and
//! kill points (not the kills' timing against the requests); `SESSIONBUS_SOAK=1` runs
//! more and longer sequences.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use serde::Serialize;
use serde_json::{Map, Value, json};
use sessionbus_api::memory::InMemoryHost;
use sessionbus_api::{
    AppendSessionNodesRequest, EchoExecutor, ErrorKind, InputItem, PluginError, PluginMessage, ProtocolEvent,
    SessionAppendNode, SessionCreateRequest, SessionGraph, SessionGraphService, SessionLifecycleService,
    SessionRelation, SessionSnapshot, SessionStartPoint, SessionStateService, SessionTurnRequest, ToolActivation,
    ToolEntry, ToolManifest, ToolState, TraceContext, TraceEvent, TurnInput,
};
use sessionbus_api::{SessionHistoryService as _, TurnListQuery, TurnSummary};
use sessionbus_nats::request_context::with_request_id;
use sessionbus_nats::subjects::session_token;
use sessionbus_nats::wire::{
    ERROR_DETAIL, ErrorCode, GraphPage, GraphPageRequest, REQUEST_ID, ToolCatalogReply, ToolCatalogRequest,
};
use sessionbus_nats::{BusClient, BusClientConfig, Op, Subjects, TRACE_STREAM};
use sessionbus_testkit::{NatsServer, ServerConfig, WorkerProcess};

/// The server's `max_payload`: small enough that sessions of a few large nodes are paged,
/// large enough for a create's graph records (copied in chunks of about 256 KiB).
const MAX_PAYLOAD: usize = 300 * 1024;
/// The largest reply a worker sends in one message (`max_payload` less its 4 KiB of
/// header room): answers larger than this arrive in pages.
const REPLY_LIMIT: usize = MAX_PAYLOAD - 4096;
/// Workers whose dead turn leases are taken over after a second.
const WORKER_ARGS: [&str; 2] = ["--lease-ttl-secs", "1"];
/// One attempt of a call; the test resends (the client itself tries once). A call
/// takes milliseconds; a kill makes its reply never come.
const CALL_TIMEOUT: Duration = Duration::from_secs(1);
/// A kill comes this many microseconds at most after its call was sent: calls take a
/// few milliseconds, so it often lands while a worker serves one.
const KILL_DELAY_US: usize = 6_000;
/// How long one call may stay `Unavailable` before the test fails.
const RESEND_BUDGET: Duration = Duration::from_secs(60);
/// The session pool of a sequence: the last one is never created.
const POOL: usize = 6;
/// How often a session of the pool is picked (skewed, so some sessions grow large).
const SESSION_WEIGHTS: [usize; POOL] = [30, 22, 16, 12, 10, 10];
/// Tool names of generated tool states.
const TOOLS: [&str; 5] = ["read", "write", "bash", "search", "fetch"];
/// Explicit message ids (they collide, so `message:<id>` and `message:<id>:2` come up).
const MESSAGE_IDS: [&str; 4] = ["intro", "q-1", "a.1", "üni"];
const WORDS: [&str; 16] = [
    "alpha", "beta", "gamma", "delta", "tool", "graph", "turn", "echo", "node", "agent", "bus", "stream", "lease",
    "page", "bright", "quiet",
];
/// Ids every session op refuses; only the client and the reference see them.
const INVALID_IDS: [&str; 3] = ["", "   ", "bell\u{7}"];

// ---------------------------------------------------------------------------------------
// A small seeded generator (SplitMix64): the same seed gives the same operations.

#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next_u64() % n as u64) as usize }
    }

    fn percent(&mut self, p: usize) -> bool {
        self.below(100) < p
    }

    fn weighted(&mut self, weights: &[usize]) -> usize {
        let mut roll = self.below(weights.iter().sum());
        for (index, weight) in weights.iter().enumerate() {
            if roll < *weight {
                return index;
            }
            roll -= weight;
        }
        weights.len() - 1
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())].clone()
    }

    fn words(&mut self, count: usize) -> String {
        (0..count.max(1)).map(|_| self.pick(&WORDS)).collect::<Vec<_>>().join(" ")
    }

    /// 1 to `max` words.
    fn some_words(&mut self, max: usize) -> String {
        let count = 1 + self.below(max);
        self.words(count)
    }

    /// Between `min` and `max` bytes of text.
    fn big_text_between(&mut self, min: usize, max: usize) -> String {
        let bytes = min + self.below(max - min);
        self.big_text(bytes)
    }

    /// About `bytes` of text: words, repeated.
    fn big_text(&mut self, bytes: usize) -> String {
        let base = self.words(60);
        let mut text = String::with_capacity(bytes + base.len());
        while text.len() < bytes {
            text.push_str(&base);
            text.push(' ');
        }
        text
    }
}

fn seed() -> u64 {
    match std::env::var("SESSIONBUS_DIFF_SEED") {
        Ok(text) => text.trim().parse().unwrap_or_else(|_| panic!("SESSIONBUS_DIFF_SEED must be a u64, got {text:?}")),
        Err(_) => uuid::Uuid::new_v4().as_u64_pair().0,
    }
}

// ---------------------------------------------------------------------------------------
// Operations, as generated (the same for both hosts).

#[derive(Clone, Debug)]
enum Start {
    Empty,
    Existing(usize),
    /// A `current_session` start point through a client bound to this session.
    Current(usize),
    /// A `current_session` start point through an unbound client (refused).
    CurrentUnbound,
    /// The reference's graph of `source` (ids renamed, its leaf moved `leaf_back` nodes
    /// back, so later appends branch), with or without agent frames.
    Snapshot {
        source: usize,
        leaf_back: usize,
        frames: bool,
    },
}

#[derive(Clone, Debug)]
enum Ancestor {
    None,
    Leaf,
    OnPath(usize),
    OffPath(usize),
    Missing,
    OtherSession(usize, usize),
}

/// A generation a caller sends: resolved per host (each has its own numbers).
#[derive(Clone, Debug)]
enum Base {
    Current,
    Zero,
    /// A generation of this sequence (any session), by rank.
    Stale(usize),
    /// A generation no host has reached.
    Bogus,
}

#[derive(Clone, Debug)]
enum SnapshotHow {
    ById,
    Bound,
    Unbound,
}

#[derive(Clone, Debug)]
enum CatalogHow {
    Full,
    Shared,
    /// `tool_catalog` on the wire with `if_generation` (absent for `None`).
    IfGeneration(Option<Base>),
}

#[derive(Clone, Debug)]
enum TraceVia {
    /// The context names the session; the client is unbound.
    Named,
    /// The client is bound to the session; the context names none.
    Bound,
    /// The client is bound to the session; the context names another (refused).
    BoundOther(usize),
    /// Unbound, and the context names no session (refused).
    Nameless,
}

#[derive(Clone, Debug)]
enum GenOp {
    Create {
        session: usize,
        parent: Option<usize>,
        start: Start,
        initial: Vec<SessionAppendNode>,
        policy: Option<Value>,
    },
    Close {
        session: usize,
    },
    Turn {
        session: usize,
        turn_id: String,
        input: TurnInput,
        kind: &'static str,
    },
    Snapshot {
        session: usize,
        how: SnapshotHow,
    },
    GraphPage {
        session: usize,
        after: usize,
        limit: u32,
        as_of: Option<isize>,
    },
    Append {
        session: usize,
        nodes: Vec<SessionAppendNode>,
        ancestor: Ancestor,
    },
    ApplyTools {
        session: usize,
        base: Base,
        tools: ToolState,
    },
    Membership {
        session: usize,
        names: Vec<String>,
        present: bool,
    },
    ToolState {
        session: usize,
    },
    Catalog {
        session: usize,
        how: CatalogHow,
    },
    Trace {
        session: usize,
        via: TraceVia,
        event: TraceEvent,
        turn_id: Option<String>,
    },
    InvalidId {
        id: String,
        call: usize,
    },
}

impl GenOp {
    fn kind(&self) -> &'static str {
        match self {
            GenOp::Create { .. } => "create",
            GenOp::Close { .. } => "close",
            GenOp::Turn { .. } => "start_turn",
            GenOp::Snapshot { .. } => "snapshot",
            GenOp::GraphPage { .. } => "graph_page",
            GenOp::Append { .. } => "append",
            GenOp::ApplyTools { .. } => "apply_tool_state",
            GenOp::Membership { .. } => "set_tool_membership",
            GenOp::ToolState { .. } => "tool_state",
            GenOp::Catalog { .. } => "tool_catalog",
            GenOp::Trace { .. } => "trace",
            GenOp::InvalidId { .. } => "invalid_session_id",
        }
    }
}

/// A call as one host receives it (generations and node ids resolved for that host).
#[derive(Clone, Debug)]
enum Call {
    Create {
        bound: Option<String>,
        request: Box<SessionCreateRequest>,
    },
    Close {
        session_id: String,
    },
    Turn {
        session_id: String,
        turn_id: String,
        input: TurnInput,
    },
    Snapshot {
        session_id: String,
    },
    SnapshotCurrent {
        bound: Option<String>,
    },
    GraphPage {
        session_id: String,
        request: GraphPageRequest,
    },
    Append {
        session_id: String,
        request: AppendSessionNodesRequest,
    },
    Apply {
        session_id: String,
        state: ToolState,
    },
    Membership {
        session_id: String,
        names: Vec<String>,
        present: bool,
    },
    ToolState {
        session_id: String,
    },
    Catalog {
        session_id: String,
    },
    SharedCatalog {
        session_id: String,
    },
    CatalogIf {
        session_id: String,
        if_generation: Option<u64>,
    },
    Trace {
        bound: Option<String>,
        context: Box<TraceContext>,
        event: Box<TraceEvent>,
    },
    /// Every page of the session's turns (pages of 3, so cursors are followed).
    Turns {
        session_id: String,
    },
    ToolHistory {
        session_id: String,
    },
}

impl Call {
    fn name(&self) -> &'static str {
        match self {
            Call::Create { .. } => "create",
            Call::Close { .. } => "close",
            Call::Turn { .. } => "start_turn",
            Call::Snapshot { .. } | Call::SnapshotCurrent { .. } => "snapshot",
            Call::GraphPage { .. } => "graph_page",
            Call::Append { .. } => "append",
            Call::Apply { .. } => "apply_tool_state",
            Call::Membership { .. } => "set_tool_membership",
            Call::ToolState { .. } => "tool_state",
            Call::Catalog { .. } | Call::SharedCatalog { .. } | Call::CatalogIf { .. } => "tool_catalog",
            Call::Trace { .. } => "trace",
            Call::Turns { .. } => "turns",
            Call::ToolHistory { .. } => "tool_history",
        }
    }

    /// True for the calls whose Ok answer is a new tool-state generation.
    fn writes_generation(&self) -> bool {
        matches!(self, Call::Apply { .. } | Call::Membership { .. })
    }
}

// ---------------------------------------------------------------------------------------
// The generator.

fn message_node(rng: &mut Rng, big: bool) -> SessionAppendNode {
    let text = if big { rng.big_text_between(40_000, 69_000) } else { rng.some_words(12) };
    let mut message = PluginMessage::new(rng.pick(&["User", "Assistant", "System"]), text);
    if rng.percent(30) {
        message.id = Some(rng.pick(&MESSAGE_IDS).to_owned());
    }
    if rng.percent(15) {
        message.extra.insert("origin".into(), json!({ "kind": "test", "n": rng.below(100) }));
    }
    let caused_by = rng.percent(20).then(|| json!({ "type": "user", "n": rng.below(10) }));
    SessionAppendNode::Message { message, caused_by }
}

fn node(rng: &mut Rng, big: bool) -> SessionAppendNode {
    match rng.weighted(&[70, 15, 15]) {
        0 => message_node(rng, big),
        1 => SessionAppendNode::Plugin {
            plugin_type: "todo.snapshot".into(),
            body: json!({ "items": [rng.words(3), rng.words(2)], "done": rng.percent(50) }),
            caused_by: rng.percent(30).then(|| json!({ "type": "plugin", "id": "todo" })),
        },
        _ => SessionAppendNode::ProtocolEvent {
            event: ProtocolEvent { plugin_id: "proto".into(), payload: json!({ "step": rng.below(50) }) },
            caused_by: None,
        },
    }
}

fn nodes(rng: &mut Rng, min: usize, max: usize) -> Vec<SessionAppendNode> {
    (0..min + rng.below(max - min + 1)).map(|_| node(rng, false)).collect()
}

fn turn_input(rng: &mut Rng) -> TurnInput {
    let text = if rng.percent(12) { rng.big_text_between(15_000, 35_000) } else { rng.some_words(10) };
    let mut input = TurnInput::text(text);
    if rng.percent(15) {
        input.items.push(InputItem::Attachment { source: json!({ "path": "/tmp/picture.png" }) });
        input.items.push(InputItem::Text { text: rng.words(3) });
    }
    if rng.percent(15) {
        input.protocol_turn_options = Some(json!({ "schema_version": 1, "payload": { "effort": "low" } }));
    }
    input
}

fn tool_state(rng: &mut Rng) -> ToolState {
    let mut state = ToolState::default();
    for name in TOOLS {
        if !rng.percent(65) {
            continue;
        }
        let mut manifest = ToolManifest::new(format!("tool:{name}"), name, rng.words(3));
        if rng.percent(20) {
            manifest.activation = Some(ToolActivation::Internal);
        }
        if rng.percent(20) {
            manifest.compact_contract = Some(json!({ "input": { "type": "object" } }));
        }
        if rng.percent(15) {
            manifest.extra.insert("x-version".into(), json!(2));
        }
        let mut entry = ToolEntry::new(manifest);
        if rng.percent(15) {
            entry.set_orphaned(true);
        }
        state.tools.insert(format!("tool:{name}"), entry);
        if rng.percent(20) {
            let _ = state.set_membership(&format!("tool:{name}"), false);
        }
    }
    state
}

fn base(rng: &mut Rng) -> Base {
    match rng.weighted(&[55, 15, 20, 10]) {
        0 => Base::Current,
        1 => Base::Zero,
        2 => Base::Stale(rng.below(1000)),
        _ => Base::Bogus,
    }
}

fn trace_event(rng: &mut Rng) -> TraceEvent {
    match rng.below(4) {
        0 => TraceEvent::Custom { name: "probe".into(), payload: json!({ "n": rng.below(100) }), extra: Map::new() },
        1 => TraceEvent::ToolCallStarted {
            call_id: Some(format!("call-{}", rng.below(1000))),
            name: rng.pick(&TOOLS).into(),
            args: json!({ "path": rng.words(1) }),
            extra: Map::new(),
        },
        2 => TraceEvent::LlmCallCompleted {
            response: Some(json!({ "text": rng.words(4) })),
            usage: Some(json!({ "input_tokens": rng.below(500), "output_tokens": rng.below(500) })),
            extra: Map::new(),
        },
        _ => TraceEvent::turn_completed("completed", "assistant_message"),
    }
}

/// What the generator may look at: the turns generated so far (to resend them), which
/// sessions the reference has, and its largest one (to grow it past one message).
struct GenContext<'a> {
    op_index: usize,
    turns: &'a [(usize, String, TurnInput)],
    existing: &'a [bool],
    open: &'a [bool],
    largest: Option<usize>,
}

/// A session of the pool: mostly one that exists and is open, by the pool's weights.
fn pick_session(rng: &mut Rng, open: &[bool]) -> usize {
    let any = rng.weighted(&SESSION_WEIGHTS);
    let weights: Vec<usize> =
        SESSION_WEIGHTS.iter().zip(open).map(|(weight, open)| if *open { *weight } else { 0 }).collect();
    let live = (weights.iter().sum::<usize>() > 0).then(|| rng.weighted(&weights));
    match live {
        Some(live) if rng.percent(85) => live,
        _ => any,
    }
}

fn generate(rng: &mut Rng, cx: &GenContext<'_>) -> GenOp {
    let session = |rng: &mut Rng| pick_session(rng, cx.open);
    let n = cx.op_index;
    // More creates while few sessions are open, so most calls reach a live session.
    let few_open = cx.open.iter().filter(|open| **open).count() < 3;
    let create_weight = match (few_open, cx.existing[..POOL - 1].contains(&false)) {
        (true, true) => 40,
        (false, true) => 12,
        (_, false) => 5,
    };
    match rng.weighted(&[create_weight, 3, 14, 8, 5, 16, 8, 7, 7, 4, 6, 7, 3]) {
        0 => {
            // Mostly sessions that do not exist yet; never the last of the pool.
            let any = rng.weighted(&SESSION_WEIGHTS[..POOL - 1]);
            let missing: Vec<usize> = (0..POOL - 1).filter(|s| !cx.existing[*s]).collect();
            let target = if !missing.is_empty() && rng.percent(75) { rng.pick(&missing) } else { any };
            // Parents and sources: sometimes the session that never exists, so a create
            // is also wrong twice (a taken id and an unknown parent or source).
            let related = |rng: &mut Rng| if rng.percent(20) { POOL - 1 } else { session(rng) };
            let parent = rng.percent(50).then(|| related(rng));
            let start = match rng.weighted(&[35, 20, 15, 3, 27]) {
                0 => Start::Empty,
                1 => Start::Existing(related(rng)),
                2 => Start::Current(related(rng)),
                3 => Start::CurrentUnbound,
                _ => Start::Snapshot { source: session(rng), leaf_back: rng.below(3), frames: rng.percent(50) },
            };
            let initial = if rng.percent(40) { nodes(rng, 1, 3) } else { Vec::new() };
            let policy = rng.percent(20).then(|| json!({ "model": { "id": "echo-1" }, "max_turns": rng.below(9) }));
            GenOp::Create { session: target, parent, start, initial, policy }
        }
        1 => GenOp::Close { session: session(rng) },
        2 => {
            let fresh = |rng: &mut Rng| {
                if rng.percent(25) { format!("t.{n} ü") } else { format!("t{n}") }
            };
            match (rng.weighted(&[70, 20, 10]), cx.turns.is_empty()) {
                (1, false) => {
                    let (session, turn_id, input) = rng.pick(cx.turns);
                    GenOp::Turn { session, turn_id, input, kind: "resent" }
                }
                (2, false) => {
                    let (session, turn_id, _) = rng.pick(cx.turns);
                    GenOp::Turn { session, turn_id, input: turn_input(rng), kind: "other input" }
                }
                _ => GenOp::Turn { session: session(rng), turn_id: fresh(rng), input: turn_input(rng), kind: "new" },
            }
        }
        3 => {
            let how = match rng.weighted(&[70, 25, 5]) {
                0 => SnapshotHow::ById,
                1 => SnapshotHow::Bound,
                _ => SnapshotHow::Unbound,
            };
            GenOp::Snapshot { session: session(rng), how }
        }
        4 => {
            let as_of = match rng.below(4) {
                0 => None,
                1 => Some(0),
                2 => Some(-(rng.below(3) as isize) - 1),
                _ => Some(rng.below(3) as isize + 1),
            };
            GenOp::GraphPage { session: session(rng), after: rng.below(12), limit: 1 + rng.below(4) as u32, as_of }
        }
        5 => {
            let nodes = if rng.percent(4) { Vec::new() } else { nodes(rng, 1, 3) };
            let ancestor = match rng.weighted(&[40, 20, 15, 10, 8, 7]) {
                0 => Ancestor::None,
                1 => Ancestor::Leaf,
                2 => Ancestor::OnPath(rng.below(1000)),
                3 => Ancestor::OffPath(rng.below(1000)),
                4 => Ancestor::Missing,
                _ => Ancestor::OtherSession(session(rng), rng.below(1000)),
            };
            GenOp::Append { session: session(rng), nodes, ancestor }
        }
        6 => {
            // A large node, mostly on the reference's largest session: it outgrows one message.
            let target = match cx.largest {
                Some(largest) if rng.percent(70) => largest,
                _ => session(rng),
            };
            let mut nodes = vec![message_node(rng, true)];
            if rng.percent(30) {
                nodes.push(node(rng, false));
            }
            let ancestor = if rng.percent(20) { Ancestor::Leaf } else { Ancestor::None };
            GenOp::Append { session: target, nodes, ancestor }
        }
        7 => GenOp::ApplyTools { session: session(rng), base: base(rng), tools: tool_state(rng) },
        8 => {
            let mut names: Vec<String> = (0..rng.below(3)).map(|_| rng.pick(&TOOLS).to_owned()).collect();
            if rng.percent(15) {
                names.push("no-such-tool".into());
            }
            GenOp::Membership { session: session(rng), names, present: rng.percent(55) }
        }
        9 => GenOp::ToolState { session: session(rng) },
        10 => {
            let how = match rng.weighted(&[30, 35, 35]) {
                0 => CatalogHow::Full,
                1 => CatalogHow::Shared,
                _ => CatalogHow::IfGeneration(rng.percent(85).then(|| base(rng))),
            };
            GenOp::Catalog { session: session(rng), how }
        }
        11 => {
            let via = match rng.weighted(&[55, 25, 10, 10]) {
                0 => TraceVia::Named,
                1 => TraceVia::Bound,
                2 => TraceVia::BoundOther(session(rng)),
                _ => TraceVia::Nameless,
            };
            let turn_id = rng.percent(30).then(|| format!("t{}", rng.below(n + 1)));
            GenOp::Trace { session: session(rng), via, event: trace_event(rng), turn_id }
        }
        _ => GenOp::InvalidId { id: rng.pick(&INVALID_IDS).to_owned(), call: rng.below(8) },
    }
}

// ---------------------------------------------------------------------------------------
// Answers, as JSON: `{"ok": value}` or `{"err": {"kind", "code", "message"}}`.

/// An error: its class, wire code, message and typed detail (`Sessionbus-Error-Detail`).
fn error_answer(error: &PluginError, code: u16) -> Value {
    let detail = error.detail().map(|detail| {
        serde_json::from_str::<Value>(&detail).unwrap_or_else(|err| panic!("an error detail is JSON: {err}: {detail}"))
    });
    json!({ "err": {
        "kind": format!("{:?}", error.kind()),
        "code": code,
        "message": error.message(),
        "detail": detail,
    } })
}

/// An answer; an error's wire code is the one the bus answers it with (`BusClient`
/// rebuilds the error's kind from that code, so the code is recovered the same way).
fn answer<T: Serialize>(result: Result<T, PluginError>) -> Value {
    match result {
        Ok(value) => json!({ "ok": serde_json::to_value(value).expect("answers serialize") }),
        Err(error) => error_answer(&error, ErrorCode::for_error(&error).as_u16()),
    }
}

fn raw_answer(what: &str, reply: &support::RawReply) -> Value {
    match reply.code {
        None => {
            let value: Value = serde_json::from_slice(&reply.payload)
                .unwrap_or_else(|err| panic!("the bus answered {what} with a body that is not JSON: {err}"));
            json!({ "ok": value })
        }
        Some(code) => {
            let body: PluginError = serde_json::from_slice(&reply.payload).unwrap_or_else(|err| {
                panic!("the bus answered {what} with code {code} and no PluginError body: {err}")
            });
            let detail = reply.headers.as_ref().and_then(|h| h.get(ERROR_DETAIL)).map(|v| v.as_str());
            let error = ErrorCode::parse(&code.to_string())
                .unwrap_or_else(|| panic!("the bus answered {what} with an unknown code {code}"))
                .rebuild(body, detail);
            error_answer(&error, code)
        }
    }
}

// ---------------------------------------------------------------------------------------
// The normaliser: one per host, since each host has its own ids and generations.

/// True when `text[at..]` starts with an id a host generated (`m<32 hex>`,
/// `plugin:<32 hex>`, `protocol:<32 hex>`); returns its length.
fn generated_id_at(text: &str, at: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    if at > 0 && bytes[at - 1].is_ascii_alphanumeric() {
        return None;
    }
    ["plugin:", "protocol:", "m"].into_iter().find_map(|prefix| {
        let rest = text[at..].strip_prefix(prefix)?.as_bytes();
        let hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
        (rest.len() >= 32 && rest[..32].iter().all(hex) && !rest.get(32).is_some_and(u8::is_ascii_alphanumeric))
            .then_some(prefix.len() + 32)
    })
}

fn is_generated(id: &str) -> bool {
    generated_id_at(id, 0) == Some(id.len())
}

/// What one host has shown so far: its generated node ids in first-seen order, and its
/// tool-state generations in the order its writes returned them.
#[derive(Default)]
struct Side {
    ids: HashMap<String, usize>,
    by_token: Vec<String>,
    generations: Vec<u64>,
}

impl Side {
    fn token(&mut self, id: &str) -> usize {
        if let Some(token) = self.ids.get(id) {
            return *token;
        }
        self.by_token.push(id.to_owned());
        self.ids.insert(id.to_owned(), self.by_token.len() - 1);
        self.by_token.len() - 1
    }

    fn record_generation(&mut self, generation: u64) {
        if !self.generations.contains(&generation) {
            self.generations.push(generation);
        }
    }

    /// The rank of `generation` among this sequence's (0 for 0).
    fn rank(&self, generation: u64) -> Option<usize> {
        if generation == 0 {
            return Some(0);
        }
        self.generations.iter().position(|g| *g == generation).map(|i| i + 1)
    }

    fn generation_by_rank(&self, rank: usize) -> Option<u64> {
        if rank == 0 { Some(0) } else { self.generations.get(rank - 1).copied() }
    }

    fn generation_text(&self, generation: u64) -> String {
        match self.rank(generation) {
            Some(rank) => format!("G{rank}"),
            None => format!("G?{generation}"),
        }
    }

    fn rewrite_ids(&mut self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        while at < text.len() {
            if let Some(len) = generated_id_at(text, at) {
                let token = self.token(&text[at..at + len]);
                out.push_str(&format!("<node {token}>"));
                at += len;
            } else {
                let c = text[at..].chars().next().expect("a char at a char boundary");
                out.push(c);
                at += c.len_utf8();
            }
        }
        out
    }

    fn rewrite_message(&mut self, message: &str) -> String {
        if let Some(rest) = message.strip_prefix("generation mismatch: expected ")
            && let Some((expected, actual)) = rest.split_once(", actual ")
            && let (Ok(expected), Ok(actual)) = (expected.parse::<u64>(), actual.parse::<u64>())
        {
            return format!(
                "generation mismatch: expected {}, actual {}",
                self.generation_text(expected),
                self.generation_text(actual)
            );
        }
        self.rewrite_ids(message)
    }

    /// Maps what legitimately differs between the two hosts, and nothing else:
    /// - node ids a host generates (`m<uuid>`, `plugin:<uuid>`, `protocol:<uuid>`): random
    ///   in memory, derived from the request id (or the turn's run id) on the bus, so a
    ///   resend builds the same ids. Mapped to their first-seen order, wherever they occur
    ///   (node ids, parents, leaves, `<id>.p0` part ids, error messages);
    /// - tool-state generations: a counter in memory, the KV revision on the bus (a stream
    ///   sequence shared by every session). Both grow by one per write of this sequence,
    ///   so each maps to its rank, in fields, in "generation mismatch" messages and in
    ///   their typed detail;
    /// - `timestamp` (when a host stored a node or a trace record) and a turn's
    ///   `execution.started_at_ms` / `duration_ms`: wall-clock readings.
    ///
    /// Trace record ids are dropped by the trace comparison (random in memory, derived
    /// from the request id on the bus).
    fn normalize(&mut self, value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut out = Map::new();
                for (key, item) in map {
                    let item = match key.as_str() {
                        "timestamp" => continue,
                        "generation" | "tool_state_generation" if item.is_u64() => {
                            Value::String(self.generation_text(item.as_u64().unwrap_or_default()))
                        }
                        "execution" => {
                            let mut execution = self.normalize(item);
                            if let Some(fields) = execution.as_object_mut() {
                                fields.remove("started_at_ms");
                                fields.remove("duration_ms");
                            }
                            execution
                        }
                        "message" if map.contains_key("code") && item.is_string() => {
                            Value::String(self.rewrite_message(item.as_str().unwrap_or_default()))
                        }
                        "expected" | "actual" if map.get("reason") == Some(&json!("generation_mismatch")) => {
                            match item.as_u64() {
                                Some(generation) => Value::String(self.generation_text(generation)),
                                None => item.clone(),
                            }
                        }
                        _ => self.normalize(item),
                    };
                    out.insert(key.clone(), item);
                }
                Value::Object(out)
            }
            Value::Array(items) => Value::Array(items.iter().map(|item| self.normalize(item)).collect()),
            Value::String(text) => Value::String(self.rewrite_ids(text)),
            other => other.clone(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Running a call on each host.

fn memory_view(host: &InMemoryHost, bound: &Option<String>) -> InMemoryHost {
    match bound {
        Some(session_id) => host.bound_to(session_id.clone()),
        None => host.clone(),
    }
}

fn bus_view(bus: &BusClient, bound: &Option<String>) -> BusClient {
    match bound {
        Some(session_id) => bus.bound(session_id.clone()),
        None => bus.clone(),
    }
}

fn turn_request(session_id: &str, turn_id: &str, input: &TurnInput) -> Result<SessionTurnRequest, PluginError> {
    SessionTurnRequest::for_turn(session_id, turn_id, input.clone())
}

/// Turns per page when a test lists a session's turns: small, so cursors are followed.
const TURN_PAGE: u32 = 3;

/// One page of `session_id`'s turns after `after`.
fn turn_query(after: Option<String>) -> TurnListQuery {
    TurnListQuery { limit: TURN_PAGE, after }
}

/// A session's turns or tool history as compared: without what legitimately differs
/// between the hosts, which `Side::normalize` does not map: wall-clock readings
/// (`started_at`, `duration_ms`, a generation's `at`) and who ran a turn (`worker`: the
/// lease holder on the bus, none in memory; `trace_id`: the bus keeps the call's trace
/// parent). Page cursors are host-specific, so turns are compared as the list every
/// page gave, in order.
fn comparable_history(mut value: Value) -> Value {
    for list in ["turns", "generations"] {
        if let Some(items) = value.get_mut("ok").and_then(|ok| ok.get_mut(list)).and_then(Value::as_array_mut) {
            for item in items.iter_mut().filter_map(Value::as_object_mut) {
                for key in ["started_at", "duration_ms", "worker", "trace_id", "at"] {
                    item.remove(key);
                }
            }
        }
    }
    value
}

/// Every turn of `session_id`, following `next_after` through pages of [`TURN_PAGE`].
async fn memory_turns(host: &InMemoryHost, session_id: &str) -> Result<Vec<TurnSummary>, PluginError> {
    let mut turns = Vec::new();
    let mut after = None;
    loop {
        let page = host.list_turns(session_id, &turn_query(after)).await?;
        turns.extend(page.turns);
        match page.next_after {
            Some(next) => after = Some(next),
            None => return Ok(turns),
        }
    }
}

/// The reference's answer to a call.
async fn on_memory(host: &InMemoryHost, call: &Call) -> Value {
    match call {
        Call::Create { bound, request } => answer(memory_view(host, bound).create_session((**request).clone()).await),
        Call::Close { session_id } => answer(host.close_session(session_id).await),
        Call::Turn { session_id, turn_id, input } => match turn_request(session_id, turn_id, input) {
            Ok(request) => answer(host.start_turn(request).await),
            Err(error) => answer::<()>(Err(error)),
        },
        Call::Snapshot { session_id } => answer(host.snapshot_session(session_id).await),
        Call::SnapshotCurrent { bound } => answer(memory_view(host, bound).snapshot_current().await),
        Call::GraphPage { session_id, request } => {
            // The wire's page: at most `limit` nodes after `after_seq`, none past `as_of`;
            // fewer when they do not fit one message, which never binds here (at most 4
            // nodes of at most ~70 KB each).
            answer(host.snapshot_session(session_id).await.map(|snapshot| {
                let mut nodes = snapshot.session_graph.nodes;
                if let Some(as_of) = request.as_of {
                    nodes.truncate(usize::try_from(as_of).unwrap_or(usize::MAX));
                }
                let start = usize::try_from(request.after_seq).unwrap_or(usize::MAX).min(nodes.len());
                let end = start + (nodes.len() - start).min(request.limit.max(1) as usize);
                let next_seq = (end < nodes.len()).then_some(end as u64);
                GraphPage { nodes: nodes[start..end].to_vec(), next_seq }
            }))
        }
        Call::Append { session_id, request } => answer(host.append_session_nodes(session_id, request.clone()).await),
        Call::Apply { session_id, state } => {
            answer(host.apply_tool_state(session_id, state.clone()).await.map(|g| json!({ "generation": g })))
        }
        Call::Membership { session_id, names, present } => {
            answer(host.set_tool_membership(session_id, names, *present).await.map(|g| json!({ "generation": g })))
        }
        Call::ToolState { session_id } => answer(host.tool_state(session_id).await),
        Call::Catalog { session_id } => answer(host.tool_catalog(session_id).await),
        Call::SharedCatalog { session_id } => {
            answer(host.shared_tool_catalog(session_id).await.map(|catalog| (*catalog).clone()))
        }
        Call::CatalogIf { session_id, if_generation } => {
            // The wire's reply: `unchanged` exactly when the caller's generation is current.
            answer(host.tool_state(session_id).await.map(|state| {
                let generation = state.generation;
                if *if_generation == Some(generation) {
                    ToolCatalogReply::Unchanged { generation, unchanged: true }
                } else {
                    ToolCatalogReply::Full { generation, tools: state.catalog() }
                }
            }))
        }
        Call::Trace { bound, context, event } => {
            answer(memory_view(host, bound).emit_trace_event((**context).clone(), (**event).clone()).await)
        }
        Call::Turns { session_id } => {
            comparable_history(answer(memory_turns(host, session_id).await.map(|turns| json!({ "turns": turns }))))
        }
        Call::ToolHistory { session_id } => comparable_history(answer(host.tool_history(session_id).await)),
    }
}

/// Counts of what the bus needed.
#[derive(Default)]
struct Stats {
    ops: BTreeMap<&'static str, usize>,
    final_checks: usize,
    reference_errors: BTreeMap<String, usize>,
    stale_branches: usize,
    unchanged_catalogs: usize,
    paged_answers: usize,
    largest_answer_bytes: usize,
    resends: BTreeMap<&'static str, usize>,
    kills_during: BTreeMap<&'static str, usize>,
    resent_calls: usize,
    caller_trace_records: usize,
    executor_trace_records: usize,
    executor_trace_records_stored_twice: usize,
}

/// Runs `call` until it is answered otherwise than `Unavailable`, resending it with the
/// same request id (BusClient reuses the request id set by `with_request_id`).
async fn resend<T, F, Fut>(stats: &mut Stats, what: &'static str, mut call: F) -> Result<T, PluginError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, PluginError>>,
{
    let request_id = support::new_id();
    let deadline = Instant::now() + RESEND_BUDGET;
    let mut resent = false;
    loop {
        match with_request_id(request_id.clone(), call()).await {
            Err(error) if error.kind() == ErrorKind::Unavailable && Instant::now() < deadline => {
                *stats.resends.entry(what).or_default() += 1;
                if !resent {
                    stats.resent_calls += 1;
                    resent = true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}

/// A wire request (`graph_page`, `tool_catalog` with `if_generation`), resent with the
/// same request id while unanswered or answered 503.
async fn raw_call(bus: &BusClient, stats: &mut Stats, session_id: &str, op: Op, body: &impl Serialize) -> Value {
    let token = session_token(session_id).expect("raw calls use valid session ids");
    let subject = Subjects::default().session_op(&token, op);
    let payload = bytes::Bytes::from(serde_json::to_vec(body).expect("a request body serializes"));
    let request_id = support::new_id();
    let deadline = Instant::now() + RESEND_BUDGET;
    let mut resent = false;
    loop {
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID, request_id.as_str());
        let reply = support::raw_request(bus.nats(), &subject, headers, payload.clone(), CALL_TIMEOUT).await;
        match reply {
            Ok(reply) if reply.code != Some(503) || Instant::now() >= deadline => {
                return raw_answer(op.as_str(), &reply);
            }
            Err(err) if Instant::now() >= deadline => {
                panic!("{op} on {subject} stayed unanswered for {RESEND_BUDGET:?}: {err}")
            }
            _ => {
                *stats.resends.entry(op.as_str()).or_default() += 1;
                if !resent {
                    stats.resent_calls += 1;
                    resent = true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The bus's answer to a call.
async fn on_bus(bus: &BusClient, stats: &mut Stats, call: &Call) -> Value {
    let what = call.name();
    match call {
        Call::Create { bound, request } => {
            let client = bus_view(bus, bound);
            answer(resend(stats, what, || client.create_session((**request).clone())).await)
        }
        Call::Close { session_id } => answer(resend(stats, what, || bus.close_session(session_id)).await),
        Call::Turn { session_id, turn_id, input } => match turn_request(session_id, turn_id, input) {
            Ok(request) => answer(resend(stats, what, || bus.start_turn(request.clone())).await),
            Err(error) => answer::<()>(Err(error)),
        },
        Call::Snapshot { session_id } => answer(resend(stats, what, || bus.snapshot_session(session_id)).await),
        Call::SnapshotCurrent { bound } => {
            let client = bus_view(bus, bound);
            answer(resend(stats, what, || client.snapshot_current()).await)
        }
        Call::GraphPage { session_id, request } => raw_call(bus, stats, session_id, Op::GraphPage, request).await,
        Call::Append { session_id, request } => {
            answer(resend(stats, what, || bus.append_session_nodes(session_id, request.clone())).await)
        }
        Call::Apply { session_id, state } => answer(
            resend(stats, what, || bus.apply_tool_state(session_id, state.clone()))
                .await
                .map(|g| json!({ "generation": g })),
        ),
        Call::Membership { session_id, names, present } => answer(
            resend(stats, what, || bus.set_tool_membership(session_id, names, *present))
                .await
                .map(|g| json!({ "generation": g })),
        ),
        Call::ToolState { session_id } => answer(resend(stats, what, || bus.tool_state(session_id)).await),
        Call::Catalog { session_id } => answer(resend(stats, what, || bus.tool_catalog(session_id)).await),
        Call::SharedCatalog { session_id } => {
            answer(resend(stats, what, || bus.shared_tool_catalog(session_id)).await.map(|catalog| (*catalog).clone()))
        }
        Call::CatalogIf { session_id, if_generation } => {
            let ask = ToolCatalogRequest { if_generation: *if_generation };
            raw_call(bus, stats, session_id, Op::ToolCatalog, &ask).await
        }
        Call::Trace { bound, context, event } => {
            let client = bus_view(bus, bound);
            answer(resend(stats, what, || client.emit_trace_event((**context).clone(), (**event).clone())).await)
        }
        Call::Turns { session_id } => {
            let mut turns = Vec::new();
            let mut after = None;
            let listed = loop {
                let query = turn_query(after.clone());
                match resend(stats, what, || bus.list_turns(session_id, &query)).await {
                    Ok(page) => {
                        turns.extend(page.turns);
                        match page.next_after {
                            Some(next) => after = Some(next),
                            None => break Ok(json!({ "turns": turns })),
                        }
                    }
                    Err(error) => break Err(error),
                }
            };
            comparable_history(answer(listed))
        }
        Call::ToolHistory { session_id } => {
            comparable_history(answer(resend(stats, what, || bus.tool_history(session_id)).await))
        }
    }
}

// ---------------------------------------------------------------------------------------
// Killing and restarting workers.

struct Kill {
    slot: usize,
    handle: tokio::task::JoinHandle<(WorkerProcess, Instant)>,
}

/// Two worker processes; at most one is down (killed, restarting) at a time.
struct Fleet {
    url: String,
    workers: Vec<Option<WorkerProcess>>,
    restarting: Option<(usize, tokio::task::JoinHandle<WorkerProcess>)>,
    kill_percent: usize,
    kills: usize,
    kills_during_a_call: usize,
    restarts: usize,
}

impl Fleet {
    async fn start(url: &str, kill_percent: usize) -> Self {
        let workers =
            vec![Some(support::worker(url, &WORKER_ARGS).await), Some(support::worker(url, &WORKER_ARGS).await)];
        Self {
            url: url.to_owned(),
            workers,
            restarting: None,
            kill_percent,
            kills: 0,
            kills_during_a_call: 0,
            restarts: 0,
        }
    }

    /// Waits for a restarting worker to be ready.
    async fn settle(&mut self) {
        if let Some((slot, handle)) = self.restarting.take() {
            let worker = handle.await.expect("a killed worker restarts");
            self.workers[slot] = Some(worker);
            self.restarts += 1;
        }
    }

    /// Decides (from `rng`, the same draws at every op) whether to kill a worker during
    /// the next call, and if so arms the kill: SIGKILL after a few milliseconds.
    async fn arm(&mut self, rng: &mut Rng) -> Option<Kill> {
        let (kill, slot, delay_us) = (rng.percent(self.kill_percent), rng.below(2), rng.below(KILL_DELAY_US));
        if !kill {
            return None;
        }
        self.settle().await;
        let mut worker = self.workers[slot].take().expect("both workers run before a kill");
        let handle = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_micros(delay_us as u64)).await;
            let at = Instant::now();
            worker.kill();
            (worker, at)
        });
        Some(Kill { slot, handle })
    }

    /// After the call: counts the kill (during the call or after it) and restarts the
    /// worker in the background.
    async fn disarm(&mut self, kill: Option<Kill>, call_done: Instant) -> bool {
        let Some(Kill { slot, handle }) = kill else { return false };
        let (worker, killed_at) = handle.await.expect("the kill task ends");
        drop(worker);
        self.kills += 1;
        let during = killed_at < call_done;
        self.kills_during_a_call += usize::from(during);
        let url = self.url.clone();
        self.restarting = Some((slot, tokio::spawn(async move { support::worker(&url, &WORKER_ARGS).await })));
        during
    }
}

// ---------------------------------------------------------------------------------------
// One sequence.

fn shorten(text: &str, limit: usize) -> String {
    // Long string literals (large nodes) are cut in the middle.
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find('"') {
        out.push_str(&rest[..=start]);
        rest = &rest[start + 1..];
        let end = rest.find('"').unwrap_or(rest.len());
        let literal = &rest[..end];
        if literal.chars().count() > 160 {
            let head: String = literal.chars().take(60).collect();
            out.push_str(&format!("{head}...({} chars)", literal.chars().count()));
        } else {
            out.push_str(literal);
        }
        rest = &rest[end..];
        if let Some(stripped) = rest.strip_prefix('"') {
            out.push('"');
            rest = stripped;
        }
    }
    out.push_str(rest);
    if out.chars().count() > limit {
        let head: String = out.chars().take(limit).collect();
        format!("{head}... ({} chars in all)", out.chars().count())
    } else {
        out
    }
}

fn short_value(value: Option<&Value>) -> String {
    value.map_or_else(|| "(absent)".to_owned(), |v| shorten(&v.to_string(), 600))
}

/// The first place where `a` and `b` differ, as a path and both values.
fn first_difference(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|key| {
                let here = format!("{path}.{key}");
                match (x.get(key), y.get(key)) {
                    (Some(u), Some(v)) => first_difference(u, v, &here),
                    (u, v) => Some(format!("{here}: {} vs {}", short_value(u), short_value(v))),
                }
            })
        }
        (Value::Array(x), Value::Array(y)) => {
            let inner =
                x.iter().zip(y).enumerate().find_map(|(i, (u, v))| first_difference(u, v, &format!("{path}[{i}]")));
            inner.or_else(|| (x.len() != y.len()).then(|| format!("{path}: {} vs {} items", x.len(), y.len())))
        }
        _ if a == b => None,
        _ => Some(format!("{path}: {} vs {}", short_value(Some(a)), short_value(Some(b)))),
    }
}

/// The active path of `graph`, leaf first.
fn active_path(graph: &SessionGraph) -> Vec<String> {
    let parents: HashMap<&str, Option<&str>> =
        graph.nodes.iter().map(|n| (n.node_id.as_str(), n.parent_node_id.as_deref())).collect();
    let mut path = Vec::new();
    let mut cursor = graph.leaf_node_id.as_deref();
    while let Some(id) = cursor {
        path.push(id.to_owned());
        cursor = parents.get(id).copied().flatten();
    }
    path
}

/// `graph` with every node id replaced by `<prefix>-<i>` (in node ids, parents, the leaf,
/// conversation ids and part ids): the same input for both hosts, whatever ids the
/// reference generated.
fn renamed(graph: &SessionGraph, prefix: &str) -> SessionGraph {
    let names: HashMap<String, String> =
        graph.nodes.iter().enumerate().map(|(i, n)| (n.node_id.clone(), format!("{prefix}-{i}"))).collect();
    fn walk(value: &mut Value, names: &HashMap<String, String>) {
        match value {
            Value::String(text) => {
                if let Some(name) = names.get(text.as_str()) {
                    *text = name.clone();
                } else if let Some(name) = text.strip_suffix(".p0").and_then(|id| names.get(id)) {
                    *text = format!("{name}.p0");
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|item| walk(item, names)),
            Value::Object(map) => map.values_mut().for_each(|item| walk(item, names)),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(graph).expect("a graph serializes");
    walk(&mut value, &names);
    serde_json::from_value(value).expect("a renamed graph deserializes")
}

struct Sequence<'a> {
    seed: u64,
    index: usize,
    ids: Vec<String>,
    memory: InMemoryHost,
    bus: &'a BusClient,
    reference: Side,
    wire: Side,
    log: Vec<String>,
    turns: Vec<(usize, String, TurnInput)>,
    /// Sessions closed so far (for the generator).
    closed: Vec<bool>,
}

impl Sequence<'_> {
    fn fail(&self, op_index: usize, what: &str, reference: &Value, bus: &Value) -> ! {
        let difference = first_difference(reference, bus, "answer").unwrap_or_else(|| "(none found)".into());
        let log: Vec<&String> = self.log.iter().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
        panic!(
            "differential mismatch: seed {seed} (rerun with SESSIONBUS_DIFF_SEED={seed}), sequence {index}, op \
             {op_index}: {what}\n  sessions: {ids:?}\n  first difference: {difference}\n  in-memory reference \
             (normalised): {reference}\n  bus (normalised): {bus}\n  the last ops of this sequence:\n    {log}",
            seed = self.seed,
            index = self.index,
            ids = self.ids,
            reference = shorten(&reference.to_string(), 3000),
            bus = shorten(&bus.to_string(), 3000),
            log = log.iter().map(|l| l.as_str()).collect::<Vec<_>>().join("\n    "),
        );
    }

    /// Runs a pair of calls (the reference's, the bus's), with a kill armed around the
    /// bus's when `fleet` is given, and compares the normalised answers.
    async fn compare(
        &mut self,
        stats: &mut Stats,
        op_index: usize,
        what: &str,
        calls: (Call, Call),
        fleet: Option<(&mut Fleet, &mut Rng)>,
    ) -> Value {
        let (reference_call, bus_call) = calls;
        let mut reference = on_memory(&self.memory, &reference_call).await;
        if let Call::Create { bound: None, request } = &reference_call
            && request.start == SessionStartPoint::CurrentSession
            && reference.get("err").is_some()
        {
            // The one difference in which error is answered: an unbound BusClient refuses a
            // `current_session` start point (400) before it sends anything, since it
            // cannot name the session to copy, while the reference checks the id (409)
            // and the parent (404) first. Both refuse every such create; only which
            // fault is named differs when there are several.
            let unbound = sessionbus_api::SessionBinding::unbound().start_point().map(|_| ());
            reference = answer(unbound);
        }
        let bus = match fleet {
            Some((fleet, rng)) => {
                let kill = fleet.arm(rng).await;
                let bus = on_bus(self.bus, stats, &bus_call).await;
                if fleet.disarm(kill, Instant::now()).await {
                    *stats.kills_during.entry(bus_call.name()).or_default() += 1;
                }
                bus
            }
            None => on_bus(self.bus, stats, &bus_call).await,
        };
        if let Some(error) = reference.get("err") {
            let key = format!("{} {}", error["code"], reference_call.name());
            *stats.reference_errors.entry(key).or_default() += 1;
        }
        if reference["ok"]["status"] == "stale_branch" {
            stats.stale_branches += 1;
        }
        if reference["ok"]["unchanged"] == true {
            stats.unchanged_catalogs += 1;
        }
        if matches!(reference_call, Call::Snapshot { .. } | Call::SnapshotCurrent { .. } | Call::Turn { .. })
            && let Some(ok) = reference.get("ok")
        {
            let size = serde_json::to_vec(ok).map_or(0, |b| b.len());
            stats.largest_answer_bytes = stats.largest_answer_bytes.max(size);
            if size > REPLY_LIMIT {
                stats.paged_answers += 1;
            }
        }
        if reference_call.writes_generation() {
            if let Some(g) = reference["ok"]["generation"].as_u64() {
                self.reference.record_generation(g);
            }
            if let Some(g) = bus["ok"]["generation"].as_u64() {
                self.wire.record_generation(g);
            }
        }
        let normal_reference = self.reference.normalize(&reference);
        let normal_bus = self.wire.normalize(&bus);
        if normal_reference != normal_bus {
            self.fail(op_index, what, &normal_reference, &normal_bus);
        }
        reference
    }

    async fn compare_same(&mut self, stats: &mut Stats, op_index: usize, what: &str, call: Call) -> Value {
        self.compare(stats, op_index, what, (call.clone(), call), None).await
    }

    /// A generation of each host for `base`, on `session_id`.
    async fn resolve_base(&self, base: &Base, session_id: &str) -> (u64, u64) {
        let by_rank = |rank: usize| {
            let reference = self.reference.generation_by_rank(rank).expect("a rank of the reference");
            let bus = self.wire.generation_by_rank(rank).unwrap_or_else(|| {
                panic!("seed {}: the bus has no generation of rank {rank} (it answered fewer writes)", self.seed)
            });
            (reference, bus)
        };
        match base {
            Base::Zero => (0, 0),
            Base::Bogus => (1_000_000_000, 1_000_000_000),
            Base::Current => {
                let current = self.memory.tool_state(session_id).await.map_or(0, |state| state.generation);
                by_rank(self.reference.rank(current).expect("the reference's generations are all recorded"))
            }
            Base::Stale(k) => match self.reference.generations.len() {
                0 => (0, 0),
                len => by_rank(1 + k % len),
            },
        }
    }

    /// The bus's id for a node id of the reference: the same for ids given by callers,
    /// the one of the same first-seen token for generated ids.
    fn bus_id(&self, reference_id: &str) -> Option<String> {
        if !is_generated(reference_id) {
            return Some(reference_id.to_owned());
        }
        let token = self.reference.ids.get(reference_id)?;
        self.wire.by_token.get(*token).cloned()
    }

    /// Each host's `requires_ancestor_node_id` for `ancestor`, chosen on the reference's
    /// graph. A generated id the normaliser has not seen yet is mapped through a
    /// snapshot of its session on both hosts (compared like any answer).
    async fn resolve_ancestor(
        &mut self,
        stats: &mut Stats,
        op_index: usize,
        session: usize,
        ancestor: &Ancestor,
    ) -> (Option<String>, Option<String>) {
        let missing = (Some("no-such-node".to_owned()), Some("no-such-node".to_owned()));
        let owner = match ancestor {
            Ancestor::None => return (None, None),
            Ancestor::Missing => return missing,
            Ancestor::OtherSession(other, _) => *other,
            _ => session,
        };
        let Ok(snapshot) = self.memory.snapshot_session(&self.ids[owner]).await else { return missing };
        let graph = snapshot.session_graph;
        let path = active_path(&graph);
        let chosen = match ancestor {
            Ancestor::Leaf => graph.leaf_node_id.clone(),
            Ancestor::OnPath(k) => (!path.is_empty()).then(|| path[k % path.len()].clone()),
            Ancestor::OffPath(k) => {
                let off: Vec<&String> =
                    graph.nodes.iter().map(|n| &n.node_id).filter(|id| !path.contains(id)).collect();
                (!off.is_empty()).then(|| off[k % off.len()].clone())
            }
            Ancestor::OtherSession(_, k) => {
                (!graph.nodes.is_empty()).then(|| graph.nodes[k % graph.nodes.len()].node_id.clone())
            }
            Ancestor::None | Ancestor::Missing => None,
        };
        let Some(reference_id) = chosen else { return missing };
        let bus_id = match self.bus_id(&reference_id) {
            Some(id) => id,
            None => {
                let call = Call::Snapshot { session_id: self.ids[owner].clone() };
                self.compare_same(stats, op_index, "snapshot (maps the ancestor's id)", call).await;
                self.bus_id(&reference_id).unwrap_or_else(|| {
                    panic!("seed {}: op {op_index}: no bus id for the reference's node {reference_id}", self.seed)
                })
            }
        };
        (Some(reference_id), Some(bus_id))
    }

    /// The two calls of `op`.
    async fn calls(&mut self, stats: &mut Stats, op_index: usize, op: &GenOp) -> (Call, Call) {
        let ids = self.ids.clone();
        let id = |s: &usize| ids[*s].clone();
        let same = |call: Call| (call.clone(), call);
        match op {
            GenOp::Create { session, parent, start, initial, policy } => {
                let mut request = SessionCreateRequest::root(Some(id(session)));
                if let Some(parent) = parent {
                    let caused_by = op_index.is_multiple_of(2).then(|| json!({ "type": "tool_call", "call_id": "c1" }));
                    request.relation = SessionRelation::Child { parent_session_id: id(parent), caused_by };
                }
                request.initial_nodes = initial.clone();
                request.policy = policy.clone();
                let mut bound = None;
                request.start = match start {
                    Start::Empty => SessionStartPoint::Empty,
                    Start::Existing(source) => SessionStartPoint::ExistingSession { session_id: id(source) },
                    Start::Current(source) => {
                        bound = Some(id(source));
                        SessionStartPoint::CurrentSession
                    }
                    Start::CurrentUnbound => SessionStartPoint::CurrentSession,
                    Start::Snapshot { source, leaf_back, frames } => {
                        let mut snapshot = SessionSnapshot::new("a-snapshot", json!({}));
                        if let Ok(source) = self.memory.snapshot_session(&id(source)).await {
                            // A prefix of the source's graph that fits a request, with
                            // neutral ids and its leaf moved back (later appends branch).
                            let mut graph = renamed(&source.session_graph, &format!("cp{op_index}"));
                            let mut size = 0;
                            let keep = graph
                                .nodes
                                .iter()
                                .take_while(|n| {
                                    size += serde_json::to_vec(n).map_or(0, |b| b.len());
                                    size < 150_000
                                })
                                .count();
                            graph.nodes.truncate(keep);
                            graph.leaf_node_id =
                                keep.checked_sub(1 + leaf_back).map(|i| graph.nodes[i].node_id.clone());
                            snapshot.session_graph = graph;
                        }
                        if *frames {
                            snapshot.agent_frames = vec![json!({ "id": "frame-1", "agent": "main" })];
                            snapshot.current_agent_frame_id = Some("frame-1".into());
                        }
                        SessionStartPoint::Snapshot { snapshot: Box::new(snapshot) }
                    }
                };
                same(Call::Create { bound, request: Box::new(request) })
            }
            GenOp::Close { session } => same(Call::Close { session_id: id(session) }),
            GenOp::Turn { session, turn_id, input, .. } => {
                same(Call::Turn { session_id: id(session), turn_id: turn_id.clone(), input: input.clone() })
            }
            GenOp::Snapshot { session, how } => same(match how {
                SnapshotHow::ById => Call::Snapshot { session_id: id(session) },
                SnapshotHow::Bound => Call::SnapshotCurrent { bound: Some(id(session)) },
                SnapshotHow::Unbound => Call::SnapshotCurrent { bound: None },
            }),
            GenOp::GraphPage { session, after, limit, as_of } => {
                let len = self.memory.snapshot_session(&id(session)).await.map_or(0, |s| s.session_graph.nodes.len());
                let as_of = as_of.map(|delta| (len as isize + delta).max(0) as u64);
                let request = GraphPageRequest { after_seq: (*after).min(len + 1) as u64, limit: *limit, as_of };
                same(Call::GraphPage { session_id: id(session), request })
            }
            GenOp::Append { session, nodes, ancestor } => {
                let (reference, bus) = self.resolve_ancestor(stats, op_index, *session, ancestor).await;
                let request =
                    |ancestor| AppendSessionNodesRequest { nodes: nodes.clone(), requires_ancestor_node_id: ancestor };
                (
                    Call::Append { session_id: id(session), request: request(reference) },
                    Call::Append { session_id: id(session), request: request(bus) },
                )
            }
            GenOp::ApplyTools { session, base, tools } => {
                let (reference, bus) = self.resolve_base(base, &id(session)).await;
                let state = |generation| ToolState { generation, ..tools.clone() };
                (
                    Call::Apply { session_id: id(session), state: state(reference) },
                    Call::Apply { session_id: id(session), state: state(bus) },
                )
            }
            GenOp::Membership { session, names, present } => {
                same(Call::Membership { session_id: id(session), names: names.clone(), present: *present })
            }
            GenOp::ToolState { session } => same(Call::ToolState { session_id: id(session) }),
            GenOp::Catalog { session, how } => match how {
                CatalogHow::Full => same(Call::Catalog { session_id: id(session) }),
                CatalogHow::Shared => same(Call::SharedCatalog { session_id: id(session) }),
                CatalogHow::IfGeneration(None) => {
                    same(Call::CatalogIf { session_id: id(session), if_generation: None })
                }
                CatalogHow::IfGeneration(Some(base)) => {
                    let (reference, bus) = self.resolve_base(base, &id(session)).await;
                    (
                        Call::CatalogIf { session_id: id(session), if_generation: Some(reference) },
                        Call::CatalogIf { session_id: id(session), if_generation: Some(bus) },
                    )
                }
            },
            GenOp::Trace { session, via, event, turn_id } => {
                let mut context = TraceContext { turn_id: turn_id.clone(), ..TraceContext::default() };
                // Marks the records callers emit (the executor's have no `op`).
                context.extra.insert("op".into(), json!(op_index));
                let bound = match via {
                    TraceVia::Named => {
                        context.session_id = Some(id(session));
                        None
                    }
                    TraceVia::Bound => Some(id(session)),
                    TraceVia::BoundOther(other) => {
                        context.session_id = Some(id(other));
                        Some(id(session))
                    }
                    TraceVia::Nameless => None,
                };
                same(Call::Trace { bound, context: Box::new(context), event: Box::new(event.clone()) })
            }
            GenOp::InvalidId { id, call } => {
                let session_id = id.clone();
                same(match call {
                    0 => Call::Snapshot { session_id },
                    1 => Call::Append {
                        session_id,
                        request: AppendSessionNodesRequest {
                            nodes: vec![SessionAppendNode::message("User", "hi")],
                            requires_ancestor_node_id: None,
                        },
                    },
                    2 => Call::Apply { session_id, state: ToolState::default() },
                    3 => Call::Close { session_id },
                    4 => Call::ToolState { session_id },
                    5 => Call::Trace {
                        bound: None,
                        context: Box::new(TraceContext { session_id: Some(session_id), ..TraceContext::default() }),
                        event: Box::new(TraceEvent::turn_started()),
                    },
                    6 => Call::Turn { session_id, turn_id: "t".into(), input: TurnInput::text("hi") },
                    _ => Call::Create { bound: None, request: Box::new(SessionCreateRequest::root(Some(session_id))) },
                })
            }
        }
    }

    /// Every trace record of session `s`: the callers' in order, the executor's as a set
    /// (a turn runs at least once: a run killed after it emitted a record and then run
    /// again emits it again, as `TurnExecutor` documents; the bus may hold it twice).
    async fn compare_traces(&mut self, stats: &mut Stats, op_index: usize, s: usize) {
        let session_id = self.ids[s].clone();
        let reference: Vec<Value> = self
            .memory
            .trace_records()
            .into_iter()
            .filter(|record| record.context.session_id.as_deref() == Some(session_id.as_str()))
            .map(|record| serde_json::to_value(record).expect("a trace record serializes"))
            .collect();
        let token = session_token(&session_id).expect("pool ids are valid");
        let stored = support::read_all(self.bus.nats(), TRACE_STREAM, &Subjects::default().trace(&token)).await;
        let bus: Vec<Value> = stored
            .iter()
            .map(|message| {
                serde_json::from_slice(&message.payload)
                    .unwrap_or_else(|err| panic!("a stored trace record of {session_id:?} is not JSON: {err}"))
            })
            .collect();
        let split = |side: &mut Side, records: Vec<Value>| {
            let (mut callers, mut executor) = (Vec::new(), Vec::new());
            for mut record in records {
                // Record ids: random in memory, derived from the request id on the bus.
                if let Some(fields) = record.as_object_mut() {
                    fields.remove("id");
                }
                let by_caller = record["context"].get("op").is_some();
                let record = side.normalize(&record);
                if by_caller { callers.push(record) } else { executor.push(record) }
            }
            (callers, executor)
        };
        let (reference_callers, reference_executor) = split(&mut self.reference, reference);
        let (bus_callers, bus_executor) = split(&mut self.wire, bus);
        let mut seen = HashSet::new();
        let bus_executor_once: Vec<Value> =
            bus_executor.iter().filter(|record| seen.insert(record.to_string())).cloned().collect();
        stats.caller_trace_records += bus_callers.len();
        stats.executor_trace_records += bus_executor.len();
        stats.executor_trace_records_stored_twice += bus_executor.len() - bus_executor_once.len();
        let what = format!("the trace records of session {s}");
        let (reference, bus) = (
            json!({ "callers": reference_callers, "executor": reference_executor }),
            json!({ "callers": bus_callers, "executor": bus_executor_once }),
        );
        if reference != bus {
            self.fail(op_index, &what, &reference, &bus);
        }
    }

    /// The final state of every session: snapshot, tool state, catalog, trace records,
    /// and the stored result of every turn id (resent with its first input).
    async fn compare_final_state(&mut self, stats: &mut Stats, op_index: usize) {
        for s in 0..self.ids.len() {
            let session_id = self.ids[s].clone();
            for call in [
                Call::Snapshot { session_id: session_id.clone() },
                Call::ToolState { session_id: session_id.clone() },
                Call::Catalog { session_id: session_id.clone() },
                Call::Turns { session_id: session_id.clone() },
                Call::ToolHistory { session_id: session_id.clone() },
            ] {
                let what = format!("final state of session {s}: {}", call.name());
                self.compare_same(stats, op_index, &what, call).await;
                stats.final_checks += 1;
            }
            self.compare_traces(stats, op_index, s).await;
            stats.final_checks += 1;
        }
        let mut seen = HashSet::new();
        for (s, turn_id, input) in self.turns.clone() {
            if !seen.insert((s, turn_id.clone())) {
                continue;
            }
            let call = Call::Turn { session_id: self.ids[s].clone(), turn_id: turn_id.clone(), input };
            let what = format!("final state of session {s}: turn {turn_id:?} resent");
            self.compare_same(stats, op_index, &what, call).await;
            stats.final_checks += 1;
        }
    }

    /// Which sessions the reference has, and the one holding the most bytes of text.
    async fn sizes(&self) -> (Vec<bool>, Option<usize>) {
        let mut best: Option<(usize, usize)> = None;
        let mut existing = vec![false; self.ids.len()];
        for (s, id) in self.ids.iter().enumerate() {
            if let Ok(snapshot) = self.memory.snapshot_session(id).await {
                existing[s] = true;
                let size: usize =
                    snapshot.session_graph.nodes.iter().map(|n| n.conversation_text().map_or(0, |t| t.len())).sum();
                if best.is_none_or(|(_, b)| size > b) {
                    best = Some((s, size));
                }
            }
        }
        (existing, best.map(|(s, _)| s))
    }
}

async fn run_sequence(seed: u64, index: usize, ops: usize, bus: &BusClient, fleet: &mut Fleet, stats: &mut Stats) {
    let mut master = Rng(seed ^ (index as u64).wrapping_mul(0xA24B_AED4_963E_E407));
    let mut rng = Rng(master.next_u64());
    let mut kills = Rng(master.next_u64());
    let prefix = support::new_id();
    // Plain ids, and ids that travel base64-encoded on subjects (a dot, a space, non-ASCII).
    let ids = (0..POOL)
        .map(|s| match s % 3 {
            0 => format!("{prefix}-{s}"),
            1 => format!("{prefix}.s{s}"),
            _ => format!("{prefix} ü{s}"),
        })
        .collect();
    let mut sequence = Sequence {
        seed,
        index,
        ids,
        memory: InMemoryHost::new(std::sync::Arc::new(EchoExecutor)),
        bus,
        reference: Side::default(),
        wire: Side::default(),
        log: Vec::new(),
        turns: Vec::new(),
        closed: vec![false; POOL],
    };
    for op_index in 0..ops {
        let (existing, largest) = sequence.sizes().await;
        let open: Vec<bool> =
            existing.iter().zip(&sequence.closed).map(|(exists, closed)| *exists && !closed).collect();
        let cx = GenContext { op_index, turns: &sequence.turns, existing: &existing, open: &open, largest };
        let op = generate(&mut rng, &cx);
        if let GenOp::Turn { session, turn_id, input, kind: "new" } = &op {
            sequence.turns.push((*session, turn_id.clone(), input.clone()));
        }
        *stats.ops.entry(op.kind()).or_default() += 1;
        let described = shorten(&format!("{op:?}"), 1500);
        sequence.log.push(format!("op {op_index}: {described}"));
        let calls = sequence.calls(stats, op_index, &op).await;
        let what = format!("{} {described}", op.kind());
        let reference = sequence.compare(stats, op_index, &what, calls, Some((fleet, &mut kills))).await;
        if let GenOp::Close { session } = op
            && existing[session]
            && reference.get("ok").is_some()
        {
            sequence.closed[session] = true;
        }
    }
    fleet.settle().await;
    sequence.compare_final_state(stats, ops).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_sequences_answer_like_the_in_memory_reference_while_a_worker_is_killed_and_restarted() {
    let seed = seed();
    println!("differential seed: {seed} (rerun with SESSIONBUS_DIFF_SEED={seed})");
    let (sequences, ops, kill_percent) = support::scaled((8, 100, 4), (40, 150, 4));
    let started = Instant::now();
    // The extra configuration comes after the launcher's own `max_payload`: the last wins
    // (checked below through the server's INFO).
    let server =
        NatsServer::start_with(ServerConfig::default().with_extra_config(format!("max_payload: {MAX_PAYLOAD}")))
            .expect("start nats-server");
    let mut fleet = Fleet::start(&server.url(), kill_percent).await;
    let config = BusClientConfig::default()
        .with_timeout(CALL_TIMEOUT)
        // One attempt per call: the test resends, so every resend is counted.
        .with_attempts(1)
        // Progress comes every 2 s from a live worker; 3 s of silence means it is gone.
        .with_turn_idle_timeout(Duration::from_secs(3))
        .with_graph_page_limit(3);
    let bus = support::bus(&server.url(), config).await;
    assert_eq!(bus.nats().server_info().max_payload, MAX_PAYLOAD, "the server took the lowered max_payload");
    support::wait_ready(&bus).await;
    let mut stats = Stats::default();
    for index in 0..sequences {
        run_sequence(seed, index, ops, &bus, &mut fleet, &mut stats).await;
    }
    fleet.settle().await;
    let runtime = started.elapsed();
    let figures = json!({
        "seed": seed,
        "sequences": sequences,
        "ops": stats.ops.values().sum::<usize>(),
        "ops_by_kind": stats.ops,
        "final_state_checks": stats.final_checks,
        "reference_errors_by_code_and_op": stats.reference_errors,
        "stale_branches": stats.stale_branches,
        "unchanged_catalogs": stats.unchanged_catalogs,
        "paged_answers": stats.paged_answers,
        "largest_answer_bytes": stats.largest_answer_bytes,
        "kills": fleet.kills,
        "kills_during_a_call": fleet.kills_during_a_call,
        "kills_during_a_call_by_op": stats.kills_during,
        "restarts": fleet.restarts,
        "resent_calls": stats.resent_calls,
        "resends_by_op": stats.resends,
        "caller_trace_records": stats.caller_trace_records,
        "executor_trace_records": stats.executor_trace_records,
        "executor_trace_records_stored_twice": stats.executor_trace_records_stored_twice,
        "runtime_s": (runtime.as_secs_f64() * 10.0).round() / 10.0,
        "mismatches": 0,
    });
    support::report("differential", figures);
    let workers: Vec<&WorkerProcess> = fleet.workers.iter().flatten().collect();
    support::keep_worker_logs("differential", &workers);
    for worker in &workers {
        assert!(!worker.stderr().contains("panicked"), "a worker panicked:\n{}", worker.stderr());
    }
    assert!(fleet.kills > 0, "seed {seed}: no worker was killed; the kill rate is too low for this run");
}
