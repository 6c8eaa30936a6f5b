//! `sessionbus sessions [list | show <id>]`: sessions from the registry, one page at a
//! time through the bus's `sessions` operation; `show` adds one page of the session's
//! turns through its `turns` operation.

use clap::{Args, Subcommand};
use sessionbus_api::{SessionListQuery, SessionStateService, SessionStatus, TurnListPage, TurnListQuery};
use sessionbus_nats::jetstream::describe_session;
use sessionbus_nats::{BusClient, BusClientConfig};

use crate::connect::{CliError, ConnectionArgs};
use crate::output;

/// Options of `sessions`.
#[derive(Args, Debug)]
pub struct SessionsArgs {
    #[command(subcommand)]
    pub action: Option<SessionsAction>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// Sessions per page (at most 1000); with `show`, turns per page (at most 200).
    #[arg(long, global = true, default_value_t = 50)]
    pub limit: u32,
    /// Start after this cursor (the `next` a previous page of sessions, or with `show`
    /// of turns, printed).
    #[arg(long, global = true)]
    pub after: Option<String>,
    /// Only open or only closed sessions.
    #[arg(long, global = true)]
    pub status: Option<SessionStatus>,
    /// Only children of this session.
    #[arg(long, global = true)]
    pub parent: Option<String>,
}

/// What to show.
#[derive(Subcommand, Debug)]
pub enum SessionsAction {
    /// One page of sessions in creation order: status, turns, tokens (the default).
    List,
    /// One session: status, turns, leaf, graph size, tools, and a page of its turns
    /// (outcome, start, duration, tokens, worker, trace id), oldest first.
    Show {
        /// The session id.
        session_id: String,
    },
}

/// Lists or shows sessions.
pub async fn run(connection: &ConnectionArgs, args: SessionsArgs) -> Result<(), CliError> {
    let nats = connection.connect("sessionbus-sessions").await?;
    let subjects = connection.subjects();
    match args.action.unwrap_or(SessionsAction::List) {
        SessionsAction::List => {
            let client = BusClient::new(nats, BusClientConfig::default().with_subjects(subjects));
            let query =
                SessionListQuery { limit: args.limit, after: args.after, status: args.status, parent: args.parent };
            let page = client.list_sessions(&query).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&page).unwrap_or_default());
                return Ok(());
            }
            let mut table =
                output::table(["session", "parent", "status", "turns", "tokens", "created", "last activity"]);
            for s in &page.sessions {
                let status = if s.turn_running { format!("{} (turn running)", s.status) } else { s.status.to_string() };
                table.add_row(vec![
                    s.session_id.clone(),
                    s.parent_session_id.clone().unwrap_or_default(),
                    status,
                    s.turn_index.to_string(),
                    s.tokens.to_string(),
                    s.created_at.clone(),
                    s.last_activity.clone(),
                ]);
            }
            println!("{table}");
            match &page.next_after {
                Some(next) => println!("{} sessions; next page: --after {next}", page.sessions.len()),
                None => println!("{} sessions; no more", page.sessions.len()),
            }
        }
        SessionsAction::Show { session_id } => {
            let summary = describe_session(&nats, &subjects, &session_id)
                .await?
                .ok_or_else(|| CliError::Other(format!("unknown session `{session_id}`")))?;
            let client = BusClient::new(nats, BusClientConfig::default().with_subjects(subjects));
            let snapshot = client.snapshot_session(&session_id).await?;
            let tools = client.tool_state(&session_id).await?;
            let members: Vec<String> = tools
                .iter()
                .filter(|(_, e)| e.is_member() && !e.is_orphaned())
                .map(|(_, e)| e.manifest().name.clone())
                .collect();
            let turns = client.list_turns(&session_id, &TurnListQuery { limit: args.limit, after: args.after }).await?;
            if args.json {
                let value = serde_json::json!({
                    "turns": turns,
                    "session": summary,
                    "leaf_node_id": snapshot.session_graph.leaf_node_id,
                    "nodes": snapshot.session_graph.nodes.len(),
                    "tool_generation": tools.generation,
                    "tools": tools.iter().count(),
                    "member_tools": members,
                });
                println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
                return Ok(());
            }
            let mut table = output::table(["field", "value"]);
            table.add_row(vec!["session".to_owned(), summary.session_id.clone()]);
            table.add_row(vec!["parent".to_owned(), summary.parent_session_id.clone().unwrap_or_else(|| "-".into())]);
            table.add_row(vec!["status".to_owned(), summary.status.to_string()]);
            table.add_row(vec!["turns".to_owned(), snapshot.turn_index.to_string()]);
            table.add_row(vec![
                "tokens (in/out)".to_owned(),
                format!("{}/{}", snapshot.token_usage.input_tokens, snapshot.token_usage.output_tokens),
            ]);
            table.add_row(vec!["graph nodes".to_owned(), snapshot.session_graph.nodes.len().to_string()]);
            table.add_row(vec![
                "leaf".to_owned(),
                snapshot.session_graph.leaf_node_id.clone().unwrap_or_else(|| "-".into()),
            ]);
            table.add_row(vec![
                "tools".to_owned(),
                format!("{} registered, {} members: {}", tools.iter().count(), members.len(), members.join(", ")),
            ]);
            table.add_row(vec!["tool generation".to_owned(), tools.generation.to_string()]);
            table.add_row(vec!["created".to_owned(), summary.created_at.clone()]);
            table.add_row(vec!["last activity".to_owned(), summary.last_activity.clone()]);
            println!("{table}");
            let mut recent = output::table(["node", "kind", "text"]);
            for node in snapshot.session_graph.nodes.iter().rev().take(5).rev() {
                let kind = match &node.body {
                    sessionbus_api::SessionNodeBody::Event { .. } => "event".to_owned(),
                    sessionbus_api::SessionNodeBody::Plugin { plugin_type, .. } => format!("plugin {plugin_type}"),
                };
                let text: String = node.conversation_text().unwrap_or_default().chars().take(60).collect();
                recent.add_row(vec![node.node_id.clone(), kind, text]);
            }
            println!("last nodes\n{recent}");
            print_turns(&turns);
        }
    }
    Ok(())
}

/// One page of a session's turns as a table, and how to read the next.
fn print_turns(page: &TurnListPage) {
    let mut table = output::table(["turn", "status", "outcome", "started", "duration", "tokens", "worker", "trace"]);
    for turn in &page.turns {
        let outcome = turn.outcome.clone().or_else(|| turn.error.clone()).unwrap_or_default();
        let duration = turn.duration_ms.map(|ms| format!("{:.2} s", ms as f64 / 1000.0)).unwrap_or_default();
        table.add_row(vec![
            turn.turn_id.clone(),
            turn.status.to_string(),
            outcome.chars().take(60).collect(),
            turn.started_at.clone().unwrap_or_default(),
            duration,
            turn.tokens().to_string(),
            turn.worker.clone().unwrap_or_default(),
            turn.trace_id.clone().unwrap_or_default(),
        ]);
    }
    println!("turns\n{table}");
    match &page.next_after {
        Some(next) => println!("{} turns; next page: --after {next}", page.turns.len()),
        None => println!("{} turns; no more", page.turns.len()),
    }
}
