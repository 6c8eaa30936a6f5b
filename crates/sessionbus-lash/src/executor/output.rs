//! lash's turn result as the bus's [`TurnOutput`]: outcome, assistant output, usage and
//! the call records, read through their JSON (the contract is the same JSON; the
//! compatibility tests prove it both ways).

use serde_json::Value;
use sessionbus_api::{SessionChanges, TurnOutput};

use super::LashTurnError;

/// The bus's output of a lash turn whose result is `result`, committing `changes`.
pub fn turn_output(result: &lash::TurnResult, changes: SessionChanges) -> Result<TurnOutput, LashTurnError> {
    let json = serde_json::to_value(result).map_err(|err| LashTurnError::Output(err.to_string()))?;
    let field = |name: &str| json.get(name).cloned().unwrap_or(Value::Null);
    let list = |name: &str| field(name).as_array().cloned().unwrap_or_default();
    Ok(TurnOutput {
        nodes: Vec::new(),
        outcome: read(field("outcome"), "outcome")?,
        token_usage: read(field("usage"), "usage")?,
        assistant_output: read(field("assistant_output"), "assistant_output")?,
        llm_calls: list("llm_calls"),
        tool_calls: list("tool_calls"),
        errors: list("errors"),
        changes,
    })
}

fn read<T: serde::de::DeserializeOwned>(value: Value, name: &str) -> Result<T, LashTurnError> {
    serde_json::from_value(value).map_err(|err| LashTurnError::Output(format!("`{name}`: {err}")))
}
