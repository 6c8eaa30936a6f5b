//! A chat-completions response as lash's `LlmResponse` (pure).

use lash_core::llm::types::{ExecutionEvidence, LlmOutputPart, LlmResponse, LlmTerminalReason, LlmUsage};
use serde_json::Value;

use super::error::OpenAiError;

/// The header carrying the endpoint's id for the request (OpenAI, most gateways).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// lash's terminal reason for a chat-completions `finish_reason`.
pub fn terminal_reason(finish_reason: Option<&str>) -> LlmTerminalReason {
    match finish_reason {
        Some("stop") => LlmTerminalReason::Stop,
        Some("tool_calls" | "function_call") => LlmTerminalReason::ToolUse,
        Some("length") => LlmTerminalReason::OutputLimit,
        Some("content_filter") => LlmTerminalReason::ContentFilter,
        _ => LlmTerminalReason::Unknown,
    }
}

/// lash's usage for a chat-completions `usage` object. lash counts cached input apart
/// from fresh input, so `prompt_tokens_details.cached_tokens` moves from
/// `input_tokens` to `cache_read_input_tokens`.
pub fn usage(usage: &Value) -> LlmUsage {
    let count = |value: &Value| value.as_i64().unwrap_or(0);
    let prompt = count(&usage["prompt_tokens"]);
    let cached = count(&usage["prompt_tokens_details"]["cached_tokens"]).clamp(0, prompt.max(0));
    LlmUsage {
        input_tokens: prompt - cached,
        output_tokens: count(&usage["completion_tokens"]),
        cache_read_input_tokens: cached,
        cache_write_input_tokens: 0,
        reasoning_output_tokens: count(&usage["completion_tokens_details"]["reasoning_tokens"]),
    }
}

/// What the endpoint said about itself: served model, response id, request id, finish
/// reason.
pub fn evidence(
    body: &Value,
    finish_reason: Option<&str>,
    headers: &[(String, String)],
    reasoning_tokens: Option<i64>,
) -> ExecutionEvidence {
    let text = |value: &Value| value.as_str().map(str::to_owned);
    ExecutionEvidence {
        served_model: text(&body["model"]),
        provider_response_id: text(&body["id"]),
        provider_request_id: headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(REQUEST_ID_HEADER))
            .map(|(_, value)| value.clone()),
        reasoning_output_tokens: reasoning_tokens.and_then(|tokens| u64::try_from(tokens).ok()),
        provider_finish_reason: finish_reason.map(str::to_owned),
    }
}

/// The parts and text of a response: reasoning first, then text, then tool calls.
pub fn assemble(reasoning: String, text: String, tool_calls: Vec<LlmOutputPart>) -> (String, Vec<LlmOutputPart>) {
    let mut parts = Vec::new();
    if !reasoning.is_empty() {
        parts.push(LlmOutputPart::Reasoning { text: reasoning, replay: None });
    }
    if !text.is_empty() {
        parts.push(LlmOutputPart::Text { text: text.clone(), response_meta: None });
    }
    parts.extend(tool_calls);
    (text, parts)
}

/// A non-streamed response body.
pub fn parse_completion(body: &str, headers: &[(String, String)]) -> Result<LlmResponse, OpenAiError> {
    let malformed = |reason: &str| OpenAiError::MalformedBody { reason: reason.to_owned(), body: body.to_owned() };
    let value: Value = serde_json::from_str(body).map_err(|err| malformed(&format!("not JSON: {err}")))?;
    let choice = value["choices"].get(0).ok_or_else(|| malformed("no `choices[0]`"))?;
    let message = choice.get("message").ok_or_else(|| malformed("no `choices[0].message`"))?;
    let text = message["content"].as_str().unwrap_or_default().to_owned();
    let reasoning = message["reasoning_content"].as_str().unwrap_or_default().to_owned();
    let mut tool_calls = Vec::new();
    for call in message["tool_calls"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let field = |path: &[&str]| {
            path.iter().try_fold(call, |value, key| value.get(*key)).and_then(Value::as_str).map(str::to_owned)
        };
        let call_id = field(&["id"]).ok_or_else(|| malformed("a tool call has no `id`"))?;
        let tool_name = field(&["function", "name"]).ok_or_else(|| malformed("a tool call has no `function.name`"))?;
        let input_json = field(&["function", "arguments"]).unwrap_or_else(|| "{}".to_owned());
        tool_calls.push(LlmOutputPart::ToolCall { call_id, tool_name, input_json, replay: None });
    }
    let finish_reason = choice["finish_reason"].as_str();
    let usage_value = value.get("usage").filter(|usage| usage.is_object());
    let usage = usage_value.map(usage).unwrap_or_default();
    let (full_text, parts) = assemble(reasoning, text, tool_calls);
    Ok(LlmResponse {
        full_text,
        parts,
        terminal_reason: terminal_reason(finish_reason),
        execution_evidence: Some(evidence(
            &value,
            finish_reason,
            headers,
            usage_value.map(|_| usage.reasoning_output_tokens),
        )),
        usage,
        provider_usage: usage_value.cloned(),
        ..LlmResponse::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finish_reason_table() {
        let cases = [
            (Some("stop"), LlmTerminalReason::Stop),
            (Some("tool_calls"), LlmTerminalReason::ToolUse),
            (Some("function_call"), LlmTerminalReason::ToolUse),
            (Some("length"), LlmTerminalReason::OutputLimit),
            (Some("content_filter"), LlmTerminalReason::ContentFilter),
            (Some("eos"), LlmTerminalReason::Unknown),
            (None, LlmTerminalReason::Unknown),
        ];
        for (finish, expected) in cases {
            assert_eq!(terminal_reason(finish), expected, "{finish:?}");
        }
    }

    #[test]
    fn usage_table() {
        let cases = [
            (json!({"prompt_tokens": 10, "completion_tokens": 3}), (10, 3, 0, 0)),
            (
                json!({"prompt_tokens": 10, "completion_tokens": 3,
                       "prompt_tokens_details": {"cached_tokens": 4},
                       "completion_tokens_details": {"reasoning_tokens": 2}}),
                (6, 3, 4, 2),
            ),
            (json!({"prompt_tokens": 2, "prompt_tokens_details": {"cached_tokens": 9}}), (0, 0, 2, 0)),
            (json!({}), (0, 0, 0, 0)),
        ];
        for (value, (input, output, cached, reasoning)) in cases {
            let got = usage(&value);
            assert_eq!(
                (got.input_tokens, got.output_tokens, got.cache_read_input_tokens, got.reasoning_output_tokens),
                (input, output, cached, reasoning),
                "{value}"
            );
        }
    }

    #[test]
    fn malformed_bodies_are_typed() {
        for body in ["not json", "{}", r#"{"choices":[{}]}"#, r#"{"choices":[{"message":{"tool_calls":[{}]}}]}"#] {
            let error = parse_completion(body, &[]).expect_err(body);
            assert!(matches!(error, OpenAiError::MalformedBody { .. }), "{body}: {error}");
        }
    }
}
