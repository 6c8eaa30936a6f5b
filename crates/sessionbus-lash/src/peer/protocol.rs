//! What a peer is told (commands, one JSON object a line on its input) and what it says
//! (events, one JSON object a line on its output), and the pure readings of lash's
//! values they are made of.
//!
//! | command | what the peer does |
//! |---|---|
//! | `{"op":"enqueue","session":S,"input_id":I,"text":T}` | opens `S` from the store and enqueues `T` as pending turn input `I` (lash's idempotency key) |
//! | `{"op":"drain","session":S,"deadline_ms":D}` | runs lash's queued turns on `S` until no input is pending, waiting while another runtime holds the session's lane, for at most `D` ms |
//!
//! | event | when |
//! |---|---|
//! | `ready` | the peer's `LashCore` is built and it reads commands |
//! | `lease` | the store answered a claim of a session's execution lease (`acquired` with its fencing token, or `busy` with the holder's) |
//! | `lease_lost` | the store refused a renewal: the lease expired or was taken over |
//! | `committed` | the store stored a commit: the turn's id, the node ids and completed input ids it carried, the new head revision |
//! | `commit_refused` | the store refused a commit (`error_kind` is lash's `StoreError` variant) |
//! | `tool_started` | a tool call of a turn started running |
//! | `enqueued`, `turn_done`, `lane_busy`, `drained` | the command's progress |
//! | `failed` | a command failed (the peer goes on reading commands) |

use lash_core::store::GraphCommitDelta;
use lash_core::{RuntimeCommit, SessionExecutionLeaseClaimOutcome, StoreError};
use serde::{Deserialize, Serialize};

/// A command, one JSON line of the peer's input.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// Enqueue `text` as the pending turn input `input_id` of `session`.
    Enqueue {
        /// The session.
        session: String,
        /// The input's id (lash's source key: enqueuing it again is a no-op).
        input_id: String,
        /// The user's text.
        text: String,
    },
    /// Run `session`'s queued turns until none is pending.
    Drain {
        /// The session.
        session: String,
        /// How long to keep trying while the lane is busy, in milliseconds.
        deadline_ms: u64,
    },
}

impl Command {
    /// Reads one input line.
    pub fn parse(line: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(line)
    }
}

/// An event, one JSON line of the peer's output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The peer reads commands.
    Ready {
        /// The peer's label.
        peer: String,
        /// The OS process id.
        pid: u32,
    },
    /// A lease claim was answered.
    Lease {
        /// The session.
        session: String,
        /// `acquired` or `busy`.
        outcome: LeaseOutcome,
        /// The lease's fencing token (the holder's when busy).
        fencing_token: u64,
        /// The lease owner's id (the holder's when busy).
        owner_id: String,
    },
    /// A lease renewal was refused.
    LeaseLost {
        /// The session.
        session: String,
        /// The fencing token that was lost.
        fencing_token: u64,
        /// Why.
        error: String,
    },
    /// A commit was stored.
    Committed {
        /// The session.
        session: String,
        /// The turn the commit completes, when it is a turn's commit.
        turn_id: Option<String>,
        /// The head revision the commit made.
        head_revision: u64,
        /// The node ids the commit carried, in order.
        node_ids: Vec<String>,
        /// The pending turn inputs it completed.
        input_ids: Vec<String>,
    },
    /// A commit was refused.
    CommitRefused {
        /// The session.
        session: String,
        /// The turn the commit would have completed.
        turn_id: Option<String>,
        /// The node ids it carried.
        node_ids: Vec<String>,
        /// lash's `StoreError` variant.
        error_kind: String,
        /// lash's message.
        error: String,
    },
    /// A tool call started.
    ToolStarted {
        /// The session.
        session: String,
        /// The tool.
        tool: String,
    },
    /// An input was enqueued.
    Enqueued {
        /// The session.
        session: String,
        /// The input's id.
        input_id: String,
    },
    /// A queued turn ended.
    TurnDone {
        /// The session.
        session: String,
        /// lash's outcome, as its JSON.
        outcome: serde_json::Value,
        /// The assistant's text.
        text: String,
    },
    /// Another runtime holds the session's lane; the peer waits and tries again.
    LaneBusy {
        /// The session.
        session: String,
    },
    /// No input of the session is pending any more.
    Drained {
        /// The session.
        session: String,
    },
    /// A command failed.
    Failed {
        /// The command's session, when it has one.
        session: Option<String>,
        /// What failed and why.
        error: String,
    },
}

/// How a lease claim was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseOutcome {
    /// This runtime holds the lane now.
    Acquired,
    /// Another owner holds it.
    Busy,
}

/// The `lease` event of a claim answered with `outcome`.
pub fn lease_event(session: &str, outcome: &SessionExecutionLeaseClaimOutcome) -> Event {
    let (kind, lease) = match outcome {
        SessionExecutionLeaseClaimOutcome::Acquired(lease) => (LeaseOutcome::Acquired, lease),
        SessionExecutionLeaseClaimOutcome::Busy { holder } => (LeaseOutcome::Busy, holder),
    };
    Event::Lease {
        session: session.to_owned(),
        outcome: kind,
        fencing_token: lease.fencing_token,
        owner_id: lease.owner.owner_id.clone(),
    }
}

/// The node ids a commit carries, in order: the appended nodes, or every node of a
/// replacing graph; none when the graph is unchanged.
pub fn commit_node_ids(commit: &RuntimeCommit) -> Vec<String> {
    match &commit.graph {
        GraphCommitDelta::Unchanged { .. } => Vec::new(),
        GraphCommitDelta::Append { nodes, .. } => nodes.iter().map(|node| node.node_id.clone()).collect(),
        GraphCommitDelta::ReplaceFull(graph) => graph.nodes.iter().map(|node| node.node_id.clone()).collect(),
    }
}

/// The pending turn inputs a commit completes.
pub fn commit_input_ids(commit: &RuntimeCommit) -> Vec<String> {
    commit.completed_turn_input_claims.iter().flat_map(|claim| claim.input_ids.iter().cloned()).collect()
}

/// The `committed` or `commit_refused` event of `commit`, answered with `outcome`.
pub fn commit_event(commit: &RuntimeCommit, outcome: Result<u64, &StoreError>) -> Event {
    let session = commit.session_id.clone();
    let turn_id = commit.turn_commit.as_ref().map(|stamp| stamp.turn_id.clone());
    let node_ids = commit_node_ids(commit);
    match outcome {
        Ok(head_revision) => {
            Event::Committed { session, turn_id, head_revision, node_ids, input_ids: commit_input_ids(commit) }
        }
        Err(err) => Event::CommitRefused {
            session,
            turn_id,
            node_ids,
            error_kind: store_error_kind(err),
            error: err.to_string(),
        },
    }
}

/// lash's `StoreError` variant name (`HeadRevisionConflict`, ...).
pub fn store_error_kind(err: &StoreError) -> String {
    let debug = format!("{err:?}");
    debug.split(|c: char| !c.is_alphanumeric()).next().unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use lash_core::{LeaseOwnerIdentity, SessionExecutionLease};

    use super::*;

    /// The three commits of a real lash turn with a tool call (two progress commits, then
    /// the turn's commit replacing the graph).
    fn lash_commits() -> Vec<RuntimeCommit> {
        include_str!("../executor/testdata/tool_turn_commits.jsonl")
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("a lash commit: {err}")))
            .collect()
    }

    #[test]
    fn commands_read_from_their_json_lines() {
        let rows = [
            (
                r#"{"op":"enqueue","session":"s","input_id":"i","text":"hi"}"#,
                Command::Enqueue { session: "s".into(), input_id: "i".into(), text: "hi".into() },
            ),
            (r#"{"op":"drain","session":"s","deadline_ms":5}"#, Command::Drain { session: "s".into(), deadline_ms: 5 }),
        ];
        for (line, expected) in rows {
            assert_eq!(Command::parse(line).ok(), Some(expected), "{line}");
        }
        let bad = [
            r#"{"op":"fly"}"#,
            r#"{"op":"drain","session":"s"}"#,
            r#"{"op":"drain","session":"s","deadline_ms":1,"x":1}"#,
            "drain",
        ];
        for line in bad {
            assert!(Command::parse(line).is_err(), "{line} must be refused");
        }
    }

    #[test]
    fn a_commit_carries_its_appended_or_replacing_nodes() {
        let commits = lash_commits();
        let mut unchanged = commits[0].clone();
        unchanged.graph = GraphCommitDelta::Unchanged { leaf_node_id: None };
        let rows: [(&RuntimeCommit, Vec<&str>); 4] = [
            (&commits[0], vec!["m65c9ef3ccf5b47539307742e74ea021d"]),
            (
                &commits[1],
                vec![
                    "m50cabf9534cf434885807f274a7826e2",
                    "m0a4fd6ea4b054a10aad5453fa1f730b8",
                    "message:m50cabf9534cf434885807f274a7826e2",
                ],
            ),
            (
                &commits[2],
                vec![
                    "m65c9ef3ccf5b47539307742e74ea021d",
                    "m50cabf9534cf434885807f274a7826e2",
                    "m0a4fd6ea4b054a10aad5453fa1f730b8",
                    "message:m50cabf9534cf434885807f274a7826e2",
                    "mf1ee10ff90fe4388a9634e533361e84d",
                ],
            ),
            (&unchanged, vec![]),
        ];
        for (commit, expected) in rows {
            assert_eq!(commit_node_ids(commit), expected, "{:?}", commit.graph);
        }
    }

    #[test]
    fn a_commit_event_names_the_turn_or_lash_s_refusal() {
        let commits = lash_commits();
        let stored = commit_event(&commits[2], Ok(3));
        let Event::Committed { turn_id, head_revision, node_ids, .. } = stored else {
            panic!("a stored commit, got {stored:?}")
        };
        assert_eq!((turn_id.as_deref(), head_revision, node_ids.len()), (Some("turn-1"), 3, 5));
        let refused = commit_event(&commits[0], Err(&StoreError::HeadRevisionConflict { expected: None, actual: 2 }));
        let Event::CommitRefused { error_kind, turn_id, .. } = refused else { panic!("a refusal, got {refused:?}") };
        assert_eq!((error_kind.as_str(), turn_id), ("HeadRevisionConflict", None));
        assert_eq!(store_error_kind(&StoreError::Backend("x".into())), "Backend");
    }

    #[test]
    fn a_lease_event_names_the_holder() {
        let lease = SessionExecutionLease {
            session_id: "s".into(),
            owner: LeaseOwnerIdentity::opaque("holder", "inc"),
            lease_token: "t".into(),
            fencing_token: 7,
            claimed_at_epoch_ms: 0,
            expires_at_epoch_ms: 1,
        };
        let rows = [
            (SessionExecutionLeaseClaimOutcome::Acquired(lease.clone()), LeaseOutcome::Acquired),
            (SessionExecutionLeaseClaimOutcome::Busy { holder: lease }, LeaseOutcome::Busy),
        ];
        for (outcome, expected) in rows {
            assert_eq!(
                lease_event("s", &outcome),
                Event::Lease { session: "s".into(), outcome: expected, fencing_token: 7, owner_id: "holder".into() }
            );
        }
    }
}
