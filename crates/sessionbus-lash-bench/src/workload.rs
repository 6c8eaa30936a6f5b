//! The workload: `sessions` lash sessions run at once, each `turns` turns one after the
//! other, every turn a tool call (`add`, run by lash) and an answer from a scripted
//! model, through a real `LashCore` on a [`Deployment`]'s stores.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sessionbus_lash::executor::DEFAULT_CONTEXT_TOKENS;
use sessionbus_lash::executor::tools::demo_tools;
use sessionbus_lash::peer::ObservedFactory;
use sessionbus_lash::provider::scripted::{Script, ScriptedProvider};

use crate::error::BenchError;
use crate::stores::Deployment;
use crate::timed::CommitLatencies;

/// The answer the script gives once the tool's result is in.
pub const ANSWER: &str = "2 + 3 = 5.";

/// How much work one round is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Workload {
    /// Sessions run at once.
    pub sessions: usize,
    /// Turns per session, one after the other.
    pub turns: usize,
}

/// What one round did and how long it took.
#[derive(Clone, Debug)]
pub struct Round {
    /// Turns completed (each checked against the script).
    pub turns: usize,
    /// From the first turn's start to the last turn's end.
    pub elapsed: Duration,
    /// Every successful `commit_runtime_state` of the round.
    pub commits: Vec<Duration>,
}

/// The message of turn `turn`: the text its script entry is chosen by.
fn turn_text(turn: usize) -> String {
    format!("[turn {turn}] What is 2 + 3?")
}

/// The script of a session of `turns` turns: turn `k` calls `add` with call id
/// `call-k`; a request whose last message is the tool's result gets [`ANSWER`].
pub fn script_json(turns: usize) -> Value {
    let usage = json!({"input_tokens": 12, "output_tokens": 5, "cache_read_input_tokens": 0,
        "cache_write_input_tokens": 0, "reasoning_output_tokens": 0});
    let mut entries = vec![json!({"when": "ToolResult", "response": {"full_text": ANSWER, "terminal_reason": "stop",
        "parts": [{"Text": {"text": ANSWER, "response_meta": null}}], "usage": usage}})];
    for turn in 0..turns {
        entries.push(
            json!({"when": format!("[turn {turn}]"), "response": {"full_text": "", "terminal_reason": "tool_use",
            "parts": [{"ToolCall": {"call_id": format!("call-{turn}"), "tool_name": "add",
                "input_json": "{\"numbers\":[2,3]}", "replay": null}}], "usage": usage}}),
        );
    }
    Value::Array(entries)
}

/// A `LashCore` on one deployment, its commits timed, answering from the script.
pub struct Runner {
    core: lash::LashCore,
    provider: ScriptedProvider,
    latencies: CommitLatencies,
    store: String,
}

impl Runner {
    /// Builds lash's runtime on `deployment` for sessions of up to `turns` turns.
    pub fn new(store: &str, deployment: &Deployment, turns: usize) -> Result<Self, BenchError> {
        let failed = |message: String| BenchError::Store { store: store.to_owned(), message };
        let script = Script::parse(&script_json(turns).to_string())
            .map_err(|err| failed(format!("the bench's script is not a script: {err}")))?;
        let provider = ScriptedProvider::new(script);
        let latencies = CommitLatencies::default();
        let timed = ObservedFactory::new(Arc::clone(&deployment.factory), Arc::new(latencies.clone()));
        let model =
            lash_core::ModelSpec::from_token_limits("scripted-model", Default::default(), DEFAULT_CONTEXT_TOKENS, None)
                .map_err(|err| failed(format!("lash refused the model spec: {err}")))?;
        let core = lash::LashCore::standard_builder()
            .provider(lash_core::ProviderHandle::new(lash_core::ProviderComponents::new(Box::new(provider.clone()))))
            .model(model)
            .tools(demo_tools())
            .effect_host(Arc::new(lash_core::InlineEffectHost::default()))
            .attachment_store(Arc::clone(&deployment.attachments))
            .process_env_store(Arc::clone(&deployment.process_env))
            .store_factory(Arc::new(timed))
            .build()
            .map_err(|err| failed(format!("lash's LashCore did not build on it: {err}")))?;
        Ok(Self { core, provider, latencies, store: store.to_owned() })
    }

    /// Runs `workload` on sessions named `<prefix>-<n>` (new ones: each round its own).
    pub async fn round(&self, prefix: &str, workload: Workload) -> Result<Round, BenchError> {
        let requests_before = self.provider.requests().len();
        self.latencies.take();
        let started = Instant::now();
        let sessions = (0..workload.sessions).map(|index| {
            let core = self.core.clone();
            let session_id = format!("{prefix}-{index}");
            let store = self.store.clone();
            tokio::spawn(async move { run_session(core, session_id, workload.turns, store).await })
        });
        let mut turns = 0;
        for session in sessions.collect::<Vec<_>>() {
            turns += session.await.map_err(|err| self.failed(format!("a session's task failed: {err}")))??;
        }
        let elapsed = started.elapsed();
        let commits = self.latencies.take();
        // Every turn asked the model twice: for the tool call, then with its result.
        let requests = self.provider.requests().len() - requests_before;
        if requests != 2 * turns {
            return Err(self.failed(format!("{turns} turns asked the model {requests} times, not twice each")));
        }
        Ok(Round { turns, elapsed, commits })
    }

    fn failed(&self, message: String) -> BenchError {
        BenchError::Workload { store: self.store.clone(), message }
    }
}

/// Opens `session_id` and runs its turns one after the other; the turns it completed.
async fn run_session(
    core: lash::LashCore,
    session_id: String,
    turns: usize,
    store: String,
) -> Result<usize, BenchError> {
    let failed = |message: String| BenchError::Workload { store: store.clone(), message };
    let session = core
        .session(session_id.clone())
        .open()
        .await
        .map_err(|err| failed(format!("opening session {session_id} failed: {err}")))?;
    for turn in 0..turns {
        let output = session
            .turn(lash::TurnInput::text(turn_text(turn)))
            .turn_id(format!("turn-{turn}"))
            .run()
            .await
            .map_err(|err| failed(format!("turn {turn} of {session_id} failed: {err}")))?;
        if output.assistant_message() != Some(ANSWER) {
            return Err(failed(format!(
                "turn {turn} of {session_id} answered {:?}, not the script's {ANSWER:?}; lash's errors: {}",
                output.assistant_message(),
                serde_json::to_value(&output.result).map(|result| result["errors"].to_string()).unwrap_or_default()
            )));
        }
    }
    Ok(turns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_turn_s_text_picks_its_own_tool_call_and_a_tool_result_picks_the_answer() {
        let script = Script::parse(&script_json(12).to_string()).expect("the bench's script parses");
        for turn in [0, 1, 2, 10, 11] {
            let message = json!({"role": "User", "blocks": [{"Text": {"text": turn_text(turn)}}]}).to_string();
            let entry = script.answer_for(&message).expect("an entry");
            let call = serde_json::to_value(&entry.response).expect("json");
            assert_eq!(call["parts"][0]["ToolCall"]["call_id"], json!(format!("call-{turn}")), "turn {turn}");
        }
        let result = json!({"role": "User", "blocks": [{"ToolResult": {"call_id": "call-0", "content": "{\"sum\":5.0}",
            "tool_name": "add"}}]})
        .to_string();
        let answer = serde_json::to_value(&script.answer_for(&result).expect("an entry").response).expect("json");
        assert_eq!(answer["full_text"], json!(ANSWER));
    }
}
