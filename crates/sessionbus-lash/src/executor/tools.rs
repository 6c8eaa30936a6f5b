//! The built-in demo tools a lash worker offers when the embedding application gives
//! none: small, deterministic and offline, so the scripted demo and the tests can make
//! real tool calls that really run in the worker.
//!
//! - `add`: `{"numbers": [..]}` -> `{"sum": ..}`;
//! - `word_count`: `{"text": ".."}` -> `{"words": ..}`;
//! - `sleep`: `{"ms": ..}` waits that long (at most [`MAX_SLEEP_MS`]) and answers
//!   `{"slept_ms": ..}`: a slow tool, for retries and cancellation.

use std::sync::Arc;
use std::time::Duration;

use lash::tools::{StaticToolExecute, StaticToolProvider};
use lash_core::{ToolCall, ToolDefinition, ToolProvider, ToolResult};
use serde_json::{Value, json};

/// The longest `sleep` the demo tool accepts, in milliseconds.
pub const MAX_SLEEP_MS: u64 = 60_000;

/// The demo tools as a lash `ToolProvider`.
pub fn demo_tools() -> Arc<dyn ToolProvider> {
    Arc::new(StaticToolProvider::new(definitions(), DemoTools))
}

fn definitions() -> Vec<ToolDefinition> {
    let object = |properties: Value, required: &[&str]| json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false});
    vec![
        ToolDefinition::raw(
            "tool:add",
            "add",
            "Adds a list of numbers.",
            object(json!({"numbers": {"type": "array", "items": {"type": "number"}}}), &["numbers"]),
            object(json!({"sum": {"type": "number"}}), &["sum"]),
        ),
        ToolDefinition::raw(
            "tool:word_count",
            "word_count",
            "Counts the words of a text.",
            object(json!({"text": {"type": "string"}}), &["text"]),
            object(json!({"words": {"type": "integer"}}), &["words"]),
        ),
        ToolDefinition::raw(
            "tool:sleep",
            "sleep",
            "Waits the given number of milliseconds.",
            object(json!({"ms": {"type": "integer", "minimum": 0}}), &["ms"]),
            object(json!({"slept_ms": {"type": "integer"}}), &["slept_ms"]),
        ),
    ]
}

struct DemoTools;

#[async_trait::async_trait]
impl StaticToolExecute for DemoTools {
    async fn execute(&self, call: ToolCall<'_>) -> ToolResult {
        match call.name {
            "add" => add(call.args),
            "word_count" => word_count(call.args),
            "sleep" => sleep(call.args).await,
            other => refuse(format!("there is no demo tool `{other}`; use add, word_count or sleep")),
        }
    }
}

fn refuse(message: String) -> ToolResult {
    ToolResult::err(json!({"error": message}))
}

fn add(args: &Value) -> ToolResult {
    let Some(numbers) = args.get("numbers").and_then(Value::as_array) else {
        return refuse("`add` needs `numbers`, a list of numbers".to_owned());
    };
    let mut sum = 0.0;
    for number in numbers {
        match number.as_f64() {
            Some(number) => sum += number,
            None => return refuse(format!("`add` got {number}, which is not a number")),
        }
    }
    ToolResult::ok(json!({"sum": sum}))
}

fn word_count(args: &Value) -> ToolResult {
    match args.get("text").and_then(Value::as_str) {
        Some(text) => ToolResult::ok(json!({"words": text.split_whitespace().count()})),
        None => refuse("`word_count` needs `text`, a string".to_owned()),
    }
}

async fn sleep(args: &Value) -> ToolResult {
    match args.get("ms").and_then(Value::as_u64) {
        Some(ms) if ms <= MAX_SLEEP_MS => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            ToolResult::ok(json!({"slept_ms": ms}))
        }
        _ => refuse(format!("`sleep` needs `ms`, an integer from 0 to {MAX_SLEEP_MS}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(result: &ToolResult) -> bool {
        matches!(result, ToolResult::Done(output) if !output.is_success())
    }

    #[test]
    fn the_demo_tools_answer_from_their_arguments_only() {
        let rows = [
            ("add sums", add(&json!({"numbers": [1, 2.5, -1]})), ToolResult::ok(json!({"sum": 2.5}))),
            ("word_count counts", word_count(&json!({"text": " a b  c "})), ToolResult::ok(json!({"words": 3}))),
        ];
        for (name, got, expected) in rows {
            assert_eq!(got, expected, "{name}");
        }
    }

    #[test]
    fn bad_arguments_are_tool_errors_that_say_what_is_expected() {
        let rows = [add(&json!({})), add(&json!({"numbers": ["x"]})), word_count(&json!({"text": 3}))];
        for result in rows {
            assert!(failed(&result), "{result:?}");
        }
    }

    #[tokio::test]
    async fn sleep_waits_and_refuses_more_than_the_limit() {
        let started = std::time::Instant::now();
        assert_eq!(sleep(&json!({"ms": 20})).await, ToolResult::ok(json!({"slept_ms": 20})));
        assert!(started.elapsed() >= Duration::from_millis(20));
        assert!(failed(&sleep(&json!({"ms": MAX_SLEEP_MS + 1})).await));
    }
}
