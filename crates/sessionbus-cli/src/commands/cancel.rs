//! `sessionbus cancel SESSION TURN`: stops a running turn wherever it runs.

use clap::Args;
use sessionbus_api::{CancelReply, TurnCancelService as _};
use sessionbus_nats::{BusClient, BusClientConfig};

use crate::connect::{CliError, ConnectionArgs};

/// Options of `cancel`.
#[derive(Args, Debug)]
pub struct CancelArgs {
    /// The session.
    pub session_id: String,
    /// The turn to stop.
    pub turn_id: String,
}

/// Asks the bus to cancel the turn and says what it found.
pub async fn run(connection: &ConnectionArgs, args: CancelArgs) -> Result<(), CliError> {
    let nats = connection.connect("sessionbus-cancel").await?;
    let client = BusClient::new(nats, BusClientConfig::default().with_subjects(connection.subjects()));
    let (session, turn) = (&args.session_id, &args.turn_id);
    match client.cancel_turn(session, turn).await? {
        CancelReply::Cancelling { holder: Some(holder) } => {
            println!("cancelling turn {turn} of {session}: worker {holder} stops it and commits it as cancelled");
        }
        CancelReply::Cancelling { holder: None } => println!(
            "cancel of turn {turn} of {session} stored: no worker runs it now; a retry of the turn commits it as \
             cancelled"
        ),
        CancelReply::Finished { outcome } => {
            println!("turn {turn} of {session} had already finished ({}); nothing cancelled", outcome_name(&outcome));
        }
        CancelReply::NotRunning => println!("turn {turn} of {session} failed and nothing runs; nothing cancelled"),
        CancelReply::UnknownTurn => println!("session {session} has no turn {turn}; nothing cancelled"),
    }
    Ok(())
}

fn outcome_name(outcome: &sessionbus_api::TurnOutcome) -> String {
    serde_json::to_value(outcome)
        .ok()
        .and_then(|value| match value {
            serde_json::Value::String(name) => Some(name),
            serde_json::Value::Object(map) => map.keys().next().cloned(),
            _ => None,
        })
        .unwrap_or_else(|| "unknown".to_owned())
}
