//! The sessionbus contract.
//!
//! - the three session service traits of the lash plugin contract ([`SessionStateService`],
//!   [`SessionLifecycleService`], [`SessionGraphService`]);
//! - their DTOs, whose JSON is exactly what the lash runtime writes;
//! - the session registry ([`SessionRegistryService`]: paged lists of sessions);
//! - a session's history ([`SessionHistoryService`]: its turns, paged, and tool generations);
//! - [`PluginError`] and its [`ErrorKind`];
//! - the id rules of the bus ([`ids`]);
//! - [`memory::InMemoryHost`], a complete in-process reference implementation;
//! - with feature `conformance`, the suite every implementation must pass.
//!
//! This crate does no I/O beyond tokio's in-process primitives and has no NATS dependency.

#![deny(missing_docs)]

mod binding;
mod cancel;
mod changes;
pub mod clock;
mod error;
mod executor;
mod graph;
mod history;
pub mod ids;
pub mod memory;
mod registry;
mod service;
mod session;
pub mod sync;
mod tools;
mod trace;
mod turn;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use binding::SessionBinding;
pub use cancel::{CANCEL_GRACE, CancelReply, CancellationToken, TurnCancelService, run_until_cancelled};
pub use changes::{AgentFrames, SessionChanges, VerbatimRefusal, check_verbatim_nodes, merge_ledger};
pub use error::{ErrorKind, PluginError};
pub use executor::{EchoExecutor, LiveSink, TraceSink, TurnContext, TurnExecutor, TurnOutput};
pub use graph::{
    AppendSessionNodesRequest, AppendSessionNodesResult, PluginMessage, ProtocolEvent, SessionAppendNode, SessionGraph,
    SessionNode, SessionNodeBody, assign_node_ids,
};
pub use history::{
    DEFAULT_TURN_PAGE, MAX_TOOL_GENERATIONS, MAX_TURN_PAGE, SessionHistoryService, ToolGeneration, ToolHistory,
    TurnLease, TurnListPage, TurnListQuery, TurnStatus, TurnSummary, member_names, outcome_name, tool_generations,
};
pub use registry::{
    DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT, SessionListPage, SessionListQuery, SessionRegistryService, SessionStatus,
    SessionSummary,
};
pub use service::{
    MEMBERSHIP_ATTEMPTS, SessionGraphService, SessionHost, SessionLifecycleService, SessionStateService, retry_pause,
    set_membership_with_retry, toggle_membership,
};
pub use session::{
    SessionCreateRequest, SessionHandle, SessionRelation, SessionSnapshot, SessionStartPoint, default_policy,
};
pub use tools::{CatalogCache, ToolActivation, ToolEntry, ToolManifest, ToolState, ToolStateError};
pub use trace::{TRACE_SCHEMA_VERSION, TraceContext, TraceEvent, TraceRecord, UnknownTraceEvent, claim_trace_context};
pub use turn::{
    AssembledTurn, AssistantOutput, DirectCompletion, DirectLlmCompletion, ExecutionScope, InputItem, OutputState,
    SessionTurnInput, SessionTurnRequest, TokenUsage, TurnFinish, TurnInput, TurnOutcome, TurnStop,
};
