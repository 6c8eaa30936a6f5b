//! Cancelling a running turn from anywhere: the contract ([`TurnCancelService`],
//! [`CancelReply`]) and how a host runs an executor so that a cancel stops it
//! ([`run_until_cancelled`]).

use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};
pub use tokio_util::sync::CancellationToken;

use crate::{PluginError, TurnOutcome, TurnOutput, TurnStop};

/// How long an executor has, once its turn is cancelled, to return what it had before
/// the host commits the turn as cancelled without it.
pub const CANCEL_GRACE: Duration = Duration::from_secs(2);

/// What `cancel_turn` found. Every case is an answer, not an error: the caller learns
/// whether its cancel stops something.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum CancelReply {
    /// The turn runs, or ran on a worker that is gone: it commits as
    /// `Stopped(Cancelled)` with what it had, once. A retry of the turn (same id) after
    /// its worker died commits it cancelled without running it again.
    Cancelling {
        /// The worker running it, when one holds its lease.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        holder: Option<String>,
    },
    /// The turn had already finished; nothing was cancelled.
    Finished {
        /// How it ended.
        outcome: TurnOutcome,
    },
    /// The turn's last run failed and nothing runs now; nothing was cancelled.
    NotRunning,
    /// The session has no turn with this id; nothing was cancelled.
    UnknownTurn,
}

/// Cancels turns of any session, whichever worker runs them.
#[async_trait::async_trait]
pub trait TurnCancelService: Send + Sync {
    /// Cancels turn `turn_id` of `session_id`.
    async fn cancel_turn(&self, _session_id: &str, _turn_id: &str) -> Result<CancelReply, PluginError> {
        Err(PluginError::Session("turn cancellation is unavailable in this runtime".to_string()))
    }
}

/// Runs a turn's executor future until it ends, or until `cancel` fires and then at
/// most [`CANCEL_GRACE`] more. An executor that returns in the grace commits what it
/// returned (its outcome says it was cancelled); one that does not, or that fails after
/// the cancel, commits as `Stopped(Cancelled)` with nothing ([`TurnOutput::cancelled`]).
pub async fn run_until_cancelled<F>(run: F, cancel: &CancellationToken) -> Result<TurnOutput, PluginError>
where
    F: Future<Output = Result<TurnOutput, PluginError>>,
{
    let mut run = std::pin::pin!(run);
    tokio::select! {
        output = &mut run => return match output {
            Err(_) if cancel.is_cancelled() => Ok(TurnOutput::cancelled()),
            output => output,
        },
        () = cancel.cancelled() => {}
    }
    match tokio::time::timeout(CANCEL_GRACE, run).await {
        Ok(Ok(output)) => Ok(output),
        Ok(Err(_)) | Err(_) => Ok(TurnOutput::cancelled()),
    }
}

impl TurnOutput {
    /// A turn cancelled before it produced anything.
    pub fn cancelled() -> Self {
        TurnOutput {
            nodes: Vec::new(),
            outcome: TurnOutcome::Stopped(TurnStop::Cancelled),
            token_usage: crate::TokenUsage::default(),
            assistant_output: crate::AssistantOutput::default(),
            llm_calls: Vec::new(),
            tool_calls: Vec::new(),
            errors: Vec::new(),
            changes: crate::SessionChanges::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{TurnFinish, TurnOutcome};

    fn finished() -> TurnOutput {
        TurnOutput {
            outcome: TurnOutcome::Finished(TurnFinish::AssistantMessage { text: "done".into() }),
            ..TurnOutput::cancelled()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_turn_that_ends_before_any_cancel_keeps_its_output() {
        let cancel = CancellationToken::new();
        let output = run_until_cancelled(async { Ok(finished()) }, &cancel).await.expect("ran");
        assert_eq!(output, finished());
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_executor_that_returns_in_the_grace_commits_what_it_returned() {
        let cancel = CancellationToken::new();
        let honouring = {
            let cancel = cancel.clone();
            async move {
                cancel.cancelled().await;
                Ok(TurnOutput {
                    nodes: vec![crate::SessionAppendNode::message("User", "hi")],
                    ..TurnOutput::cancelled()
                })
            }
        };
        cancel.cancel();
        let output = run_until_cancelled(honouring, &cancel).await.expect("ran");
        assert_eq!(output.nodes.len(), 1, "what it had is kept");
        assert_eq!(output.outcome, TurnOutcome::Stopped(TurnStop::Cancelled));
    }

    #[tokio::test(start_paused = true)]
    async fn an_executor_that_ignores_the_cancel_is_stopped_after_the_grace() {
        let cancel = CancellationToken::new();
        cancel.cancel();
        let started = tokio::time::Instant::now();
        let output = run_until_cancelled(std::future::pending(), &cancel).await.expect("ran");
        assert_eq!(output, TurnOutput::cancelled());
        assert_eq!(started.elapsed(), CANCEL_GRACE);
    }

    #[tokio::test(start_paused = true)]
    async fn an_executor_failing_because_it_was_cancelled_commits_a_cancelled_turn() {
        let cancel = CancellationToken::new();
        cancel.cancel();
        let failing = async { Err(PluginError::Session("interrupted".into())) };
        assert_eq!(run_until_cancelled(failing, &cancel).await.expect("ran"), TurnOutput::cancelled());
    }

    #[test]
    fn replies_say_what_the_cancel_found() {
        let cases = [
            (CancelReply::Cancelling { holder: Some("w1".into()) }, r#"{"status":"cancelling","holder":"w1"}"#),
            (CancelReply::Cancelling { holder: None }, r#"{"status":"cancelling"}"#),
            (CancelReply::NotRunning, r#"{"status":"not_running"}"#),
            (CancelReply::UnknownTurn, r#"{"status":"unknown_turn"}"#),
        ];
        for (reply, json) in cases {
            assert_eq!(serde_json::to_string(&reply).expect("encode"), json);
            assert_eq!(serde_json::from_str::<CancelReply>(json).expect("decode"), reply);
        }
    }
}
