//! `sessionbus watch [<session-id>] [--since <duration|seq>]`: a live tail of session
//! events, after the stored ones from `--since` on.

use std::collections::HashMap;

use clap::Args;
use futures::StreamExt as _;
use serde_json::Value;
use sessionbus_nats::{BusClient, BusClientConfig, EventKind, ReplayStart, SessionEvent, replay_events};

use crate::connect::{CliError, ConnectionArgs};
use crate::duration::parse_duration;

/// Options of `watch`.
#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Only this session (every session when absent).
    pub session_id: Option<String>,
    /// One JSON object per line, for machines.
    #[arg(long)]
    pub json: bool,
    /// Stop after this many events.
    #[arg(long)]
    pub count: Option<u64>,
    /// First replay the stored events: of the last DURATION (e.g. 10m, 2h), or from
    /// SEQ of the SESSIONBUS_STATE stream on (an event's `sequence`).
    #[arg(long, value_name = "DURATION|SEQ", value_parser = parse_since)]
    pub since: Option<ReplayStart>,
}

/// `--since`: a plain number is a state-stream sequence, anything else a duration.
fn parse_since(text: &str) -> Result<ReplayStart, String> {
    match text.trim().parse::<u64>() {
        Ok(sequence) => Ok(ReplayStart::StateSequence(sequence)),
        Err(_) => parse_duration(text).map(ReplayStart::Since),
    }
}

/// Prints events until Ctrl-C (or `--count`).
pub async fn run(connection: &ConnectionArgs, args: WatchArgs) -> Result<(), CliError> {
    let nats = connection.connect("sessionbus-watch").await?;
    let client = BusClient::new(nats, BusClientConfig::default().with_subjects(connection.subjects()));
    let mut events = match &args.session_id {
        Some(session_id) => client.events(session_id).await?,
        None => client.events_all().await?,
    };
    client.nats().flush().await.map_err(|e| CliError::Other(format!("could not subscribe: {e}")))?;
    let print = |event: &SessionEvent| println!("{}", if args.json { json_line(event) } else { text_line(event) });
    let mut seen = 0u64;
    let done = |seen: u64| args.count.is_some_and(|count| seen >= count);
    // The live subscription is open before the replay reads, so nothing falls between
    // them; live events the replay already printed are skipped by their sequence.
    let mut replayed: HashMap<String, u64> = HashMap::new();
    if let Some(start) = args.since {
        let stored = replay_events(client.nats(), &connection.subjects(), args.session_id.as_deref(), start).await?;
        eprintln!("replaying {} stored events", stored.len());
        for event in stored {
            if done(seen) {
                return Ok(());
            }
            let last = replayed.entry(event.stream.clone()).or_default();
            *last = (*last).max(event.sequence);
            print(&event);
            seen += 1;
        }
    }
    eprintln!("watching {} (Ctrl-C to stop)", args.session_id.as_deref().unwrap_or("every session"));
    let stop = super::shutdown_signal();
    tokio::pin!(stop);
    while !done(seen) {
        let event = tokio::select! {
            event = events.next() => match event { Some(event) => event, None => break },
            _ = &mut stop => break,
        };
        if replayed.get(&event.stream).is_some_and(|last| event.sequence <= *last) {
            continue;
        }
        print(&event);
        seen += 1;
    }
    Ok(())
}

fn body(event: &SessionEvent) -> Value {
    serde_json::from_slice(&event.payload).unwrap_or(Value::Null)
}

fn json_line(event: &SessionEvent) -> String {
    let turn_id = match &event.kind {
        EventKind::Turn { turn_id } | EventKind::Cancel { turn_id } => Some(turn_id.clone()),
        _ => None,
    };
    serde_json::json!({
        "session_id": event.session_id,
        "kind": event.kind.name(),
        "turn_id": turn_id,
        "stream": event.stream,
        "sequence": event.sequence,
        "body": body(event),
    })
    .to_string()
}

fn text_line(event: &SessionEvent) -> String {
    let body = body(event);
    let summary = match &event.kind {
        EventKind::Meta => format!("turns={} closed={}", body["turn_index"], body["closed"].as_bool().unwrap_or(false)),
        EventKind::Lease => match body["state"].as_str() {
            Some("held") => format!("held for turn {}", body["turn_id"].as_str().unwrap_or("?")),
            Some(state) => state.to_owned(),
            None => "?".to_owned(),
        },
        EventKind::Graph => {
            let nodes = body["nodes"].as_array().map_or(0, Vec::len);
            format!("+{nodes} nodes, leaf {}", body["leaf"].as_str().unwrap_or("-"))
        }
        EventKind::Turn { turn_id } => format!("turn {turn_id} {}", body["status"].as_str().unwrap_or("?")),
        EventKind::Cancel { turn_id } => format!("turn {turn_id} cancel requested"),
        EventKind::Tools => {
            let tools = body["tools"].as_object();
            let members = tools.map_or(0, |t| t.values().filter(|e| e["member"].as_bool() != Some(false)).count());
            format!("{} tools, {members} members, generation {}", tools.map_or(0, |t| t.len()), event.sequence)
        }
        EventKind::Trace => {
            format!("{} {}", body["type"].as_str().unwrap_or("?"), body["context"]["turn_id"].as_str().unwrap_or(""))
        }
    };
    format!("{:>8}  {:<40}  {:<6}  {summary}", event.sequence, event.session_id, event.kind.name())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn since_is_a_sequence_or_a_duration() {
        assert_eq!(parse_since("42"), Ok(ReplayStart::StateSequence(42)));
        assert_eq!(parse_since("10m"), Ok(ReplayStart::Since(Duration::from_secs(600))));
        assert!(parse_since("yesterday").is_err());
    }
}
