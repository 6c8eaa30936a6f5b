//! [`ScriptedProvider`]: a lash `Provider` that answers from a script, offline.
//!
//! A script is a JSON list of entries `{"when": "<text>", "response": <LlmResponse>}`.
//! A request is answered by the first entry whose `when` occurs in the JSON of the
//! request's last message (an empty `when` matches any request). The answer depends only
//! on the request's content, never on how many requests came before, so a turn run again
//! (a retry after a worker died) gets the same answers. `response` is lash's
//! `LlmResponse` JSON; fields it leaves out take `LlmResponse::default()`'s values.
//!
//! An entry may also list `deltas`: pieces of its `full_text`, in order, that together
//! are exactly that text. When lash asks for stream events (it does for every turn), the
//! provider sends each piece as a text delta before it answers, as a streaming provider
//! does, so a turn's live output carries the answer in several deltas.
//!
//! ```json
//! [
//!   {"when": "notes.txt", "response": {"parts": [{"ToolCall": {"call_id": "c1",
//!     "tool_name": "read_file", "input_json": "{\"path\":\"notes.txt\"}", "replay": null}}],
//!     "terminal_reason": "tool_use"}},
//!   {"when": "ToolResult", "response": {"full_text": "The notes say hi.", "terminal_reason": "stop"},
//!     "deltas": ["The notes", " say hi."]}
//! ]
//! ```

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use lash_core::llm::types::{LlmMessage, LlmStreamEvent};
use lash_core::{LlmRequest, LlmResponse, LlmTransportError, Provider, ProviderOptions};
use serde::Deserialize;
use serde_json::Value;

/// The provider kind lash records for scripted turns.
pub const KIND: &str = "scripted";

/// Why a script cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    /// The script file could not be read.
    #[error("could not read the script {path}: {source}; pass an existing JSON file")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The script is not a list of `{"when", "response"}` entries.
    #[error("the script is not a JSON list of {{\"when\": text, \"response\": LlmResponse}} entries: {0}")]
    Shape(serde_json::Error),
    /// An entry's `deltas` do not add up to its response's `full_text`.
    #[error(
        "script entry {index} has deltas that add up to {streamed:?}, not its full_text {full_text:?}; list pieces \
         of full_text, in order"
    )]
    Deltas {
        /// The entry's position (0-based).
        index: usize,
        /// The deltas, concatenated.
        streamed: String,
        /// The response's text.
        full_text: String,
    },
    /// An entry's `response` is not a lash `LlmResponse`.
    #[error("script entry {index} has a response lash cannot read: {source}")]
    Response {
        /// The entry's position (0-based).
        index: usize,
        /// Why.
        source: serde_json::Error,
    },
}

impl ScriptError {
    /// A stable name of the error's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Read { .. } => "read",
            Self::Shape(_) => "shape",
            Self::Response { .. } => "response",
            Self::Deltas { .. } => "deltas",
        }
    }
}

#[derive(Deserialize)]
struct RawEntry {
    #[serde(default)]
    when: String,
    response: Value,
    #[serde(default)]
    deltas: Vec<String>,
}

/// One scripted answer.
#[derive(Clone, Debug)]
pub struct ScriptEntry {
    /// Text the request's last message (as JSON) must contain.
    pub when: String,
    /// The answer.
    pub response: LlmResponse,
    /// The answer's text in pieces, streamed as text deltas before the answer (none:
    /// the answer is not streamed).
    pub deltas: Vec<String>,
}

/// A script: entries tried in order.
#[derive(Clone, Debug, Default)]
pub struct Script {
    entries: Vec<ScriptEntry>,
}

impl Script {
    /// Parses a script from its JSON text.
    pub fn parse(json: &str) -> Result<Self, ScriptError> {
        let raw: Vec<RawEntry> = serde_json::from_str(json).map_err(ScriptError::Shape)?;
        let defaults = serde_json::to_value(LlmResponse::default()).map_err(ScriptError::Shape)?;
        let entries = raw
            .into_iter()
            .enumerate()
            .map(|(index, entry)| {
                let response: LlmResponse = serde_json::from_value(overlay(defaults.clone(), entry.response))
                    .map_err(|source| ScriptError::Response { index, source })?;
                let streamed = entry.deltas.concat();
                if !entry.deltas.is_empty() && streamed != response.full_text {
                    return Err(ScriptError::Deltas { index, streamed, full_text: response.full_text });
                }
                Ok(ScriptEntry { when: entry.when, response, deltas: entry.deltas })
            })
            .collect::<Result<_, ScriptError>>()?;
        Ok(Self { entries })
    }

    /// Reads and parses the script file at `path`.
    pub fn load(path: &str) -> Result<Self, ScriptError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ScriptError::Read { path: path.to_owned(), source })?;
        Self::parse(&text)
    }

    /// The entry answering a request whose last message serialises to `last_message`.
    pub fn answer_for(&self, last_message: &str) -> Option<&ScriptEntry> {
        self.entries.iter().find(|entry| last_message.contains(&entry.when))
    }
}

/// `base` with the keys of `over` (an object) put over it.
fn overlay(mut base: Value, over: Value) -> Value {
    match (&mut base, over) {
        (Value::Object(into), Value::Object(from)) => {
            into.extend(from);
            base
        }
        (_, other) => other,
    }
}

/// The JSON of a request's last message, the text script entries are matched against.
pub fn last_message_json(request: &LlmRequest) -> String {
    request.messages.last().map(message_json).unwrap_or_default()
}

fn message_json(message: &LlmMessage) -> String {
    serde_json::to_string(message).unwrap_or_default()
}

/// A lash `Provider` answering from a [`Script`]. Clones share the script and the record
/// of requests.
#[derive(Clone, Debug)]
pub struct ScriptedProvider {
    script: Arc<Script>,
    options: ProviderOptions,
    requests: Arc<Mutex<Vec<Value>>>,
}

impl ScriptedProvider {
    /// A provider answering from `script`.
    pub fn new(script: Script) -> Self {
        Self { script: Arc::new(script), options: ProviderOptions::default(), requests: Arc::default() }
    }

    /// Every request this provider (and its clones) received, as lash's JSON, in order.
    pub fn requests(&self) -> Vec<Value> {
        self.requests.lock().map(|seen| seen.clone()).unwrap_or_default()
    }
}

#[async_trait]
impl Provider for ScriptedProvider {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn options(&self) -> ProviderOptions {
        self.options.clone()
    }

    fn set_options(&mut self, options: ProviderOptions) {
        self.options = options;
    }

    fn serialize_config(&self) -> Value {
        Value::Object(serde_json::Map::new())
    }

    async fn complete(&mut self, request: LlmRequest) -> Result<LlmResponse, LlmTransportError> {
        if let (Ok(mut seen), Ok(json)) = (self.requests.lock(), serde_json::to_value(&request)) {
            seen.push(json);
        }
        let last = last_message_json(&request);
        let entry = self.script.answer_for(&last).ok_or_else(|| {
            LlmTransportError::new(format!(
                "the scripted provider has no entry whose `when` occurs in the request's last message ({}); add one \
                 to the script",
                truncate(&last, 200)
            ))
        })?;
        if let Some(events) = &request.stream_events {
            for delta in &entry.deltas {
                events.send(LlmStreamEvent::Delta(delta.clone()));
                // Each piece goes out on its own, as it would from a model.
                tokio::task::yield_now().await;
            }
        }
        Ok(entry.response.clone())
    }

    fn clone_boxed(&self) -> Box<dyn Provider> {
        Box::new(self.clone())
    }
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use lash_core::llm::types::{LlmContentBlock, LlmRole};

    use super::*;

    const SCRIPT: &str = r#"[
        {"when": "notes.txt", "response": {"full_text": "", "terminal_reason": "tool_use",
          "parts": [{"ToolCall": {"call_id": "c1", "tool_name": "read_file",
                     "input_json": "{\"path\":\"notes.txt\"}", "replay": null}}]}},
        {"when": "hello from the notes", "response": {"full_text": "The notes say hello.", "terminal_reason": "stop"}},
        {"when": "", "response": {"full_text": "fallback"}}
    ]"#;

    fn user_text(text: &str) -> String {
        let block = LlmContentBlock::Text { text: text.into(), response_meta: None, cache_breakpoint: false };
        message_json(&LlmMessage::new(LlmRole::User, vec![block]))
    }

    fn tool_result(content: &str) -> String {
        let block = LlmContentBlock::ToolResult {
            call_id: "c1".into(),
            content: content.into(),
            tool_name: Some("read_file".into()),
        };
        message_json(&LlmMessage::new(LlmRole::User, vec![block]))
    }

    #[test]
    fn the_first_entry_whose_text_occurs_in_the_last_message_answers() {
        let script = Script::parse(SCRIPT).unwrap();
        let rows = [
            (user_text("please read notes.txt"), "tool_use"),
            (tool_result("hello from the notes"), "The notes say hello."),
            (user_text("anything else"), "fallback"),
        ];
        for (last, expected) in rows {
            let response = &script.answer_for(&last).unwrap().response;
            let got = if response.full_text.is_empty() {
                serde_json::to_value(response.terminal_reason).unwrap().as_str().unwrap_or_default().to_owned()
            } else {
                response.full_text.clone()
            };
            assert_eq!(got, expected, "{last}");
        }
    }

    #[test]
    fn the_same_request_gets_the_same_answer_however_often_it_is_asked() {
        let script = Script::parse(SCRIPT).unwrap();
        let last = user_text("read notes.txt");
        let first = serde_json::to_value(&script.answer_for(&last).unwrap().response).unwrap();
        for _ in 0..3 {
            assert_eq!(serde_json::to_value(&script.answer_for(&last).unwrap().response).unwrap(), first);
        }
    }

    #[test]
    fn fields_a_response_leaves_out_take_lash_s_defaults() {
        let script = Script::parse(r#"[{"when": "x", "response": {"full_text": "hi"}}]"#).unwrap();
        let response = &script.answer_for("x").unwrap().response;
        assert_eq!(response.full_text, "hi");
        assert!(response.parts.is_empty());
        assert_eq!(response.usage.input_tokens, 0);
    }

    #[test]
    fn a_malformed_script_says_which_part_is_wrong() {
        let rows = [
            (r#"{"when": "x"}"#, "shape"),
            (r#"[{"when": "x"}]"#, "shape"),
            (r#"[{"when": "x", "response": {"terminal_reason": "no_such_reason"}}]"#, "response"),
            (r#"[{"when": "x", "response": {"full_text": "ab"}, "deltas": ["a", "c"]}]"#, "deltas"),
            (r#"[{"when": "x", "response": {"full_text": "ab"}, "deltas": ["b", "a"]}]"#, "deltas"),
        ];
        for (json, kind) in rows {
            assert_eq!(Script::parse(json).unwrap_err().kind(), kind, "{json}");
        }
        assert_eq!(Script::load("/no/such/script.json").unwrap_err().kind(), "read");
    }

    #[test]
    fn no_matching_entry_leaves_nothing_to_answer() {
        let script = Script::parse(r#"[{"when": "only this", "response": {}}]"#).unwrap();
        assert!(script.answer_for("something else").is_none());
    }
}
