//! A session's history: its turn ledger, paged, and its tool-state generations.
//!
//! Not part of the lash contract: [`SessionHistoryService`] is the bus's own service
//! (like the registry), with default bodies that refuse, so a host that keeps no
//! history still serves the three lash traits. Both reads are bounded: a turn page
//! holds at most [`MAX_TURN_PAGE`] turns, a tool history at most
//! [`MAX_TOOL_GENERATIONS`] generations (what the JetStream host's KV bucket keeps).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::{AssembledTurn, PluginError, TokenUsage, ToolState, TurnOutcome, clock};

/// The most turns one page holds; a larger [`TurnListQuery::limit`] is cut to it.
pub const MAX_TURN_PAGE: u32 = 200;
/// The page size when a query asks for 0.
pub const DEFAULT_TURN_PAGE: u32 = 50;
/// The most tool-state generations a history holds: the newest ones.
pub const MAX_TOOL_GENERATIONS: usize = 64;

/// One page request of a session's turns.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnListQuery {
    /// The most turns in the page (0 means [`DEFAULT_TURN_PAGE`]; at most
    /// [`MAX_TURN_PAGE`]).
    #[serde(default)]
    pub limit: u32,
    /// Start after this cursor (a previous page's [`TurnListPage::next_after`]); `None`
    /// for the first page. Cursors are opaque and host-specific.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

impl TurnListQuery {
    /// The first page of at most `limit` turns.
    pub fn first(limit: u32) -> Self {
        Self { limit, after: None }
    }

    /// The page size this query gets: `limit`, 0 read as the default, cut to the maximum.
    pub fn effective_limit(&self) -> usize {
        let limit = if self.limit == 0 { DEFAULT_TURN_PAGE } else { self.limit.min(MAX_TURN_PAGE) };
        limit as usize
    }

    /// The ledger sequence this page starts after (0 for the first page): the cursors
    /// of sessionbus's hosts are decimal ledger sequences.
    pub fn after_sequence(&self) -> Result<u64, PluginError> {
        crate::registry::sequence_cursor(self.after.as_deref(), "turn list")
    }
}

/// Where a turn is in its life, as its ledger record says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnStatus {
    /// It runs (or its worker died and its lease has not expired yet).
    Running,
    /// It committed.
    Completed,
    /// Its run failed and committed nothing; the turn id may run again.
    Failed,
}

impl TurnStatus {
    /// `running`, `completed` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            TurnStatus::Running => "running",
            TurnStatus::Completed => "completed",
            TurnStatus::Failed => "failed",
        }
    }
}

impl std::fmt::Display for TurnStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One turn of a session's ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnSummary {
    /// The turn id.
    pub turn_id: String,
    /// Running, completed or failed.
    pub status: TurnStatus,
    /// How a completed turn ended: `finished`, `stopped` or `agent_frame_switch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// Why a failed turn failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the run started (RFC 3339), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// How long a completed run took, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Tokens a completed turn used.
    #[serde(default)]
    pub token_usage: TokenUsage,
    /// The worker (lease holder) that ran it; `None` for an in-process host and for
    /// records written before the field existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// The W3C trace id of the `start_turn` call, when the call carried a trace parent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

impl TurnSummary {
    /// A running turn's summary.
    pub fn running(turn_id: impl Into<String>, started_at: Option<String>) -> Self {
        Self {
            turn_id: turn_id.into(),
            status: TurnStatus::Running,
            outcome: None,
            error: None,
            started_at,
            duration_ms: None,
            token_usage: TokenUsage::default(),
            worker: None,
            trace_id: None,
        }
    }

    /// A completed turn's summary from its result: outcome, tokens, and start and
    /// duration from the result's `execution` facts.
    pub fn completed(turn_id: impl Into<String>, result: &AssembledTurn) -> Self {
        let started_ms = result.execution["started_at_ms"].as_u64();
        Self {
            status: TurnStatus::Completed,
            outcome: Some(outcome_name(&result.outcome).to_owned()),
            started_at: started_ms.map(|ms| clock::rfc3339_from_unix_nanos(i128::from(ms) * 1_000_000)),
            duration_ms: result.execution["duration_ms"].as_u64(),
            token_usage: result.token_usage,
            ..Self::running(turn_id, None)
        }
    }

    /// A failed turn's summary.
    pub fn failed(turn_id: impl Into<String>, error: &PluginError) -> Self {
        Self { status: TurnStatus::Failed, error: Some(error.message().into_owned()), ..Self::running(turn_id, None) }
    }

    /// Input plus output tokens.
    pub fn tokens(&self) -> u64 {
        self.token_usage.input_tokens + self.token_usage.output_tokens
    }
}

/// The name of a turn outcome, as lash's JSON tags it.
pub fn outcome_name(outcome: &TurnOutcome) -> &'static str {
    match outcome {
        TurnOutcome::Finished(_) => "finished",
        TurnOutcome::Stopped(_) => "stopped",
        TurnOutcome::AgentFrameSwitch { .. } => "agent_frame_switch",
    }
}

/// One page of a session's turns.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnListPage {
    /// Turns in ledger order: by their record's last write, oldest first (a session
    /// runs one turn at a time, so this is the order they ran in; a turn run again
    /// after a failure moves to its new place).
    pub turns: Vec<TurnSummary>,
    /// The cursor of the next page; `None` when this page is the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<String>,
    /// The session's lease as the page was read: on the first page (no `after`) only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<TurnLease>,
}

/// A session's lease: who may run a turn now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum TurnLease {
    /// No turn runs.
    Free,
    /// `turn_id` runs on `holder` (a JetStream host's lease holder: the worker id).
    Held {
        /// The running turn.
        turn_id: String,
        /// Who runs it.
        holder: String,
        /// When the lease was last taken or renewed (unix milliseconds, by the store's
        /// clock); `None` when the host keeps no such time (the in-memory host).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        renewed_at_ms: Option<u64>,
    },
    /// The session is closed.
    Closed,
}

/// One generation of a session's tool state and what changed in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolGeneration {
    /// The generation (the JetStream host's KV revision).
    pub generation: u64,
    /// When it was written (RFC 3339).
    pub at: String,
    /// The member tools after it, by name, sorted.
    pub members: Vec<String>,
    /// Tools that became members in it.
    pub joined: Vec<String>,
    /// Tools that stopped being members in it (or were removed).
    pub left: Vec<String>,
    /// Tools in the state (members or not).
    pub tools: usize,
}

/// A session's tool-state generations, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolHistory {
    /// The newest [`MAX_TOOL_GENERATIONS`] generations at most, oldest first.
    pub generations: Vec<ToolGeneration>,
    /// True when the history is full ([`MAX_TOOL_GENERATIONS`] generations): older
    /// ones may have been dropped, and the first entry's `joined`/`left` are then
    /// relative to no tools rather than to the generation before it.
    #[serde(default)]
    pub truncated: bool,
}

impl ToolHistory {
    /// The history of stored tool states `(generation, written at, state)`, oldest
    /// first (see [`tool_generations`]).
    pub fn from_revisions(revisions: impl IntoIterator<Item = (u64, String, ToolState)>) -> Self {
        let generations = tool_generations(revisions);
        let truncated = generations.len() == MAX_TOOL_GENERATIONS;
        Self { generations, truncated }
    }
}

/// The member tools of `state`, by name, sorted.
pub fn member_names(state: &ToolState) -> Vec<String> {
    let names: BTreeSet<String> =
        state.iter().filter(|(_, entry)| entry.is_member()).map(|(_, entry)| entry.manifest().name.clone()).collect();
    names.into_iter().collect()
}

/// The history of a sequence of stored tool states `(generation, written at, state)`,
/// oldest first: each entry's change is relative to the one before it (the first to
/// no tools). Keeps the newest [`MAX_TOOL_GENERATIONS`].
pub fn tool_generations(revisions: impl IntoIterator<Item = (u64, String, ToolState)>) -> Vec<ToolGeneration> {
    let mut previous: Vec<String> = Vec::new();
    let mut history: Vec<ToolGeneration> = revisions
        .into_iter()
        .map(|(generation, at, state)| {
            let members = member_names(&state);
            let joined = members.iter().filter(|name| !previous.contains(name)).cloned().collect();
            let left = previous.iter().filter(|name| !members.contains(name)).cloned().collect();
            previous = members.clone();
            ToolGeneration { generation, at, members, joined, left, tools: state.iter().count() }
        })
        .collect();
    let excess = history.len().saturating_sub(MAX_TOOL_GENERATIONS);
    history.drain(..excess);
    history
}

/// A session's turn ledger and tool history.
#[async_trait::async_trait]
pub trait SessionHistoryService: Send + Sync {
    /// One page of `session_id`'s turns in ledger order. Following `next_after` until
    /// it is `None` lists every turn of the ledger once. An unknown session is
    /// [`PluginError::UnknownSession`]; a cursor that is not one is `InvalidRequest`.
    async fn list_turns(&self, _session_id: &str, _query: &TurnListQuery) -> Result<TurnListPage, PluginError> {
        Err(PluginError::Session("turn history is unavailable in this runtime".to_string()))
    }

    /// `session_id`'s tool-state generations, oldest first, the newest
    /// [`MAX_TOOL_GENERATIONS`] at most. An unknown session is
    /// [`PluginError::UnknownSession`].
    async fn tool_history(&self, _session_id: &str) -> Result<ToolHistory, PluginError> {
        Err(PluginError::Session("tool history is unavailable in this runtime".to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ToolManifest;

    fn state(tools: &[(&str, bool)]) -> ToolState {
        let mut state = ToolState::default();
        for (name, member) in tools {
            let id = format!("tool:{name}");
            state.insert(ToolManifest::new(id.clone(), *name, ""));
            state.set_membership(&id, *member).expect("membership");
        }
        state
    }

    #[test]
    fn each_generation_says_who_joined_and_left() {
        let revisions = vec![
            (3, "t3".to_owned(), state(&[("a", true), ("b", false)])),
            (5, "t5".to_owned(), state(&[("a", true), ("b", true)])),
            (9, "t9".to_owned(), state(&[("a", false), ("b", true), ("c", true)])),
            (12, "t12".to_owned(), ToolState::default()),
        ];
        let history = tool_generations(revisions);
        fn names(v: &[String]) -> Vec<&str> {
            v.iter().map(String::as_str).collect()
        }
        /// A generation, its members, who joined, who left, how many tools.
        type Row<'a> = (u64, Vec<&'a str>, Vec<&'a str>, Vec<&'a str>, usize);
        let table: Vec<Row<'_>> = history
            .iter()
            .map(|g| (g.generation, names(&g.members), names(&g.joined), names(&g.left), g.tools))
            .collect();
        assert_eq!(
            table,
            vec![
                (3, vec!["a"], vec!["a"], vec![], 2),
                (5, vec!["a", "b"], vec!["b"], vec![], 2),
                (9, vec!["b", "c"], vec!["c"], vec!["a"], 3),
                (12, vec![], vec![], vec!["b", "c"], 0),
            ]
        );
        assert_eq!(history[2].at, "t9");
        assert!(!ToolHistory::from_revisions(Vec::new()).truncated);
    }

    #[test]
    fn a_history_keeps_the_newest_generations() {
        let revisions = (1..=100).map(|g| (g, String::new(), ToolState::default()));
        let history = ToolHistory::from_revisions(revisions);
        assert!(history.truncated);
        let history = history.generations;
        assert_eq!(history.len(), MAX_TOOL_GENERATIONS);
        assert_eq!(history.first().map(|g| g.generation), Some(100 - MAX_TOOL_GENERATIONS as u64 + 1));
        assert_eq!(history.last().map(|g| g.generation), Some(100));
    }

    #[test]
    fn turn_pages_default_cap_and_parse_cursors() {
        for (limit, expected) in [(0, 50), (1, 1), (200, 200), (201, 200), (u32::MAX, 200)] {
            assert_eq!(TurnListQuery::first(limit).effective_limit(), expected, "{limit}");
        }
        let after = |cursor: &str| TurnListQuery { after: Some(cursor.to_owned()), limit: 0 };
        assert_eq!(TurnListQuery::default().after_sequence().expect("first page"), 0);
        assert_eq!(after("17").after_sequence().expect("a cursor"), 17);
        for bad in ["", "x", "-3", "1e3"] {
            assert_eq!(after(bad).after_sequence().expect_err(bad).kind(), crate::ErrorKind::InvalidRequest, "{bad}");
        }
    }

    #[test]
    fn statuses_print_as_their_json() {
        for status in [TurnStatus::Running, TurnStatus::Completed, TurnStatus::Failed] {
            assert_eq!(serde_json::to_string(&status).expect("json"), format!("\"{status}\""));
        }
    }

    #[test]
    fn outcomes_are_named_as_lash_tags_them() {
        let finished = TurnOutcome::Finished(crate::TurnFinish::AssistantMessage { text: "hi".into() });
        let switch = TurnOutcome::AgentFrameSwitch { frame_id: "f".into(), task: "t".into(), initial_nodes: vec![] };
        for outcome in [finished, switch] {
            let json = serde_json::to_value(&outcome).expect("json");
            let tag = json.as_object().and_then(|o| o.keys().next().cloned()).expect("a tagged outcome");
            assert_eq!(outcome_name(&outcome), tag);
        }
    }
}
