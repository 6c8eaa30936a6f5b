//! The streamed answer: server-sent events split into `data:` payloads, and chunks
//! folded into lash's stream events and final `LlmResponse` (pure).

use std::collections::BTreeMap;

use lash_core::llm::types::{LlmOutputPart, LlmResponse, LlmStreamEvent};
use serde_json::Value;

use super::error::{OpenAiError, error_object};
use super::response::{assemble, evidence, terminal_reason, usage};

/// The payload that ends a chat-completions stream.
pub const DONE: &str = "[DONE]";

/// Splits a byte stream into the `data` of each server-sent event. Bytes may arrive cut
/// anywhere, inside a line or a UTF-8 sequence.
#[derive(Debug, Default)]
pub struct SseDecoder {
    pending: Vec<u8>,
    data: Vec<String>,
}

impl SseDecoder {
    /// Feeds `bytes`; returns the data of every event they complete, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.pending.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = self.pending.iter().position(|byte| *byte == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            self.line(line.trim_end_matches(['\n', '\r']), &mut events);
        }
        events
    }

    /// Ends the stream: an event not closed by a blank line still counts.
    pub fn finish(&mut self) -> Vec<String> {
        let mut events = Vec::new();
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            let line = String::from_utf8_lossy(&rest).into_owned();
            self.line(line.trim_end_matches('\r'), &mut events);
        }
        self.line("", &mut events);
        events
    }

    fn line(&mut self, line: &str, events: &mut Vec<String>) {
        if line.is_empty() {
            if !self.data.is_empty() {
                events.push(std::mem::take(&mut self.data).join("\n"));
            }
        } else if let Some(data) = line.strip_prefix("data:") {
            self.data.push(data.strip_prefix(' ').unwrap_or(data).to_owned());
        }
        // `event:`, `id:`, `retry:` and `:` comments carry nothing chat completions uses.
    }
}

/// One tool call being streamed: its arguments arrive in pieces.
#[derive(Debug, Default)]
struct PendingToolCall {
    id: Option<String>,
    name: String,
    arguments: String,
}

/// Folds chat-completion chunks into lash's stream events and the final response.
#[derive(Debug, Default)]
pub struct StreamAssembler {
    text: String,
    reasoning: String,
    tool_calls: BTreeMap<u64, PendingToolCall>,
    finished_calls: Vec<LlmOutputPart>,
    finish_reason: Option<String>,
    usage: Option<Value>,
    first_chunk: Option<Value>,
}

impl StreamAssembler {
    /// Takes one chunk; returns the events lash should see now: text and reasoning
    /// deltas, the tool calls once the choice finishes (their arguments are whole only
    /// then), and usage when the chunk carries it.
    pub fn push(&mut self, chunk: &Value) -> Result<Vec<LlmStreamEvent>, OpenAiError> {
        if let Some((message, code)) = chunk.get("error").and_then(|_| error_object(&chunk.to_string())) {
            return Err(OpenAiError::StreamError { message, code, body: chunk.to_string() });
        }
        if self.first_chunk.is_none() {
            self.first_chunk = Some(chunk.clone());
        }
        let mut events = Vec::new();
        for choice in chunk["choices"].as_array().map(Vec::as_slice).unwrap_or_default() {
            let delta = &choice["delta"];
            if let Some(piece) = delta["reasoning_content"].as_str().filter(|piece| !piece.is_empty()) {
                self.reasoning.push_str(piece);
                events.push(LlmStreamEvent::ReasoningDelta(piece.to_owned()));
            }
            if let Some(piece) = delta["content"].as_str().filter(|piece| !piece.is_empty()) {
                self.text.push_str(piece);
                events.push(LlmStreamEvent::Delta(piece.to_owned()));
            }
            for call in delta["tool_calls"].as_array().map(Vec::as_slice).unwrap_or_default() {
                self.tool_call_piece(call, chunk)?;
            }
            if let Some(reason) = choice["finish_reason"].as_str() {
                self.finish_reason = Some(reason.to_owned());
                let finished = self.take_tool_calls()?;
                events.extend(finished.iter().cloned().map(LlmStreamEvent::Part));
                self.finished_calls.extend(finished);
            }
        }
        if let Some(usage_value) = chunk.get("usage").filter(|usage| usage.is_object()) {
            self.usage = Some(usage_value.clone());
            events.push(LlmStreamEvent::Usage(usage(usage_value)));
        }
        Ok(events)
    }

    fn tool_call_piece(&mut self, call: &Value, chunk: &Value) -> Result<(), OpenAiError> {
        let index = call["index"].as_u64().ok_or_else(|| OpenAiError::MalformedBody {
            reason: "a streamed tool call has no `index`".into(),
            body: chunk.to_string(),
        })?;
        let pending = self.tool_calls.entry(index).or_default();
        if let Some(id) = call["id"].as_str().filter(|id| !id.is_empty()) {
            pending.id = Some(id.to_owned());
        }
        if let Some(name) = call["function"]["name"].as_str() {
            pending.name.push_str(name);
        }
        if let Some(arguments) = call["function"]["arguments"].as_str() {
            pending.arguments.push_str(arguments);
        }
        Ok(())
    }

    /// The tool calls streamed so far, whole, in index order.
    fn take_tool_calls(&mut self) -> Result<Vec<LlmOutputPart>, OpenAiError> {
        let mut calls = Vec::new();
        for (index, call) in std::mem::take(&mut self.tool_calls) {
            let call_id = call.id.ok_or_else(|| OpenAiError::MalformedBody {
                reason: format!("streamed tool call {index} never got an `id`"),
                body: String::new(),
            })?;
            let input_json = if call.arguments.trim().is_empty() { "{}".to_owned() } else { call.arguments };
            calls.push(LlmOutputPart::ToolCall { call_id, tool_name: call.name, input_json, replay: None });
        }
        Ok(calls)
    }

    /// Ends the stream: the tool calls of a stream that ended without a finish reason
    /// as events, and the response.
    pub fn finish(mut self, headers: &[(String, String)]) -> Result<(Vec<LlmStreamEvent>, LlmResponse), OpenAiError> {
        let late = self.take_tool_calls()?;
        let events = late.iter().cloned().map(LlmStreamEvent::Part).collect();
        let mut tool_calls = std::mem::take(&mut self.finished_calls);
        tool_calls.extend(late);
        let usage_parsed = self.usage.as_ref().map(usage);
        let first = self.first_chunk.unwrap_or(Value::Null);
        let finish_reason = self.finish_reason.as_deref();
        let evidence =
            evidence(&first, finish_reason, headers, usage_parsed.as_ref().map(|usage| usage.reasoning_output_tokens));
        let (full_text, parts) = assemble(self.reasoning, self.text, tool_calls);
        let response = LlmResponse {
            full_text,
            parts,
            usage: usage_parsed.unwrap_or_default(),
            terminal_reason: terminal_reason(finish_reason),
            provider_usage: self.usage,
            execution_evidence: Some(evidence),
            ..LlmResponse::default()
        };
        Ok((events, response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sse_decoder_table() {
        // (input cut into pieces, the data payloads expected)
        let cases: &[(&[&str], &[&str])] = &[
            (&["data: a\n\n"], &["a"]),
            (&["da", "ta: a\n", "\ndata: b\n\n"], &["a", "b"]),
            (&["data: a\r\n\r\n"], &["a"]),
            (&[": keep-alive\n\nevent: x\ndata: 1\ndata: 2\n\n"], &["1\n2"]),
            (&["data:[DONE]\n\n"], &["[DONE]"]),
            (&["data: tail"], &["tail"]),
        ];
        for (pieces, expected) in cases {
            let mut decoder = SseDecoder::default();
            let mut got: Vec<String> = pieces.iter().flat_map(|piece| decoder.push(piece.as_bytes())).collect();
            got.extend(decoder.finish());
            assert_eq!(got, *expected, "{pieces:?}");
        }
    }

    #[test]
    fn sse_decoder_keeps_a_utf8_sequence_cut_between_chunks() {
        let bytes = "data: é\n\n".as_bytes();
        let mut decoder = SseDecoder::default();
        let mut got = decoder.push(&bytes[..7]);
        got.extend(decoder.push(&bytes[7..]));
        assert_eq!(got, ["é"]);
    }

    #[test]
    fn tool_call_arguments_are_joined_across_chunks() {
        let mut assembler = StreamAssembler::default();
        let chunks = [
            json!({"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": 0, "id": "call_1", "type": "function", "function": {"name": "read", "arguments": ""}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"pa"}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "th\":1}"}}]}, "finish_reason": "tool_calls"}]}),
        ];
        let events: Vec<Vec<LlmStreamEvent>> = chunks.iter().map(|chunk| assembler.push(chunk).unwrap()).collect();
        let (late, response) = assembler.finish(&[]).unwrap();
        let call = LlmOutputPart::ToolCall {
            call_id: "call_1".into(),
            tool_name: "read".into(),
            input_json: r#"{"path":1}"#.into(),
            replay: None,
        };
        assert!(events[0].is_empty() && events[1].is_empty(), "no event before the arguments are whole");
        assert!(matches!(&events[2][..], [LlmStreamEvent::Part(part)] if *part == call), "{:?}", events[2]);
        assert!(late.is_empty());
        assert_eq!(response.parts, vec![call]);
        assert_eq!(response.terminal_reason, lash_core::LlmTerminalReason::ToolUse);
    }

    #[test]
    fn tool_calls_of_a_stream_without_finish_reason_come_at_its_end() {
        let mut assembler = StreamAssembler::default();
        let chunk = json!({"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "call_1", "function": {"name": "ls"}}]}}]});
        assert!(assembler.push(&chunk).unwrap().is_empty());
        let (late, response) = assembler.finish(&[]).unwrap();
        let call = LlmOutputPart::ToolCall {
            call_id: "call_1".into(),
            tool_name: "ls".into(),
            input_json: "{}".into(),
            replay: None,
        };
        assert!(matches!(&late[..], [LlmStreamEvent::Part(part)] if *part == call));
        assert_eq!(response.parts, vec![call]);
    }

    #[test]
    fn an_error_chunk_is_a_stream_error() {
        let mut assembler = StreamAssembler::default();
        let error = assembler.push(&json!({"error": {"message": "overloaded", "type": "server_error"}})).unwrap_err();
        assert!(matches!(error, OpenAiError::StreamError { ref message, .. } if message == "overloaded"), "{error}");
    }
}
