//! lash's `LlmRequest` as a chat-completions request body (pure).

use base64::Engine as _;
use lash_core::llm::types::{
    AttachmentSource, LlmContentBlock, LlmMessage, LlmOutputSpec, LlmRequest, LlmRole, LlmToolChoice, LlmToolSpec,
};
use lash_core::provider::ProviderOptions;
use lash_core::{SchemaDialect, SchemaPurpose, SchemaResolutionRequest, resolve_schema};
use serde_json::{Map, Value, json};

use super::error::OpenAiError;

/// The provider name lash's schema resolution reports in its diagnostics.
const SCHEMA_PROVIDER: &str = "openai_compatible";

/// The JSON body for `request`, calling `model`, streamed (with usage) when `stream`.
///
/// Messages: system text becomes `system` messages; user text and image attachments a
/// `user` message; lash's tool results (carried in any role) become `tool` messages,
/// placed before the rest of their message so they follow the assistant's `tool_calls`;
/// assistant text and tool calls one `assistant` message. Reasoning blocks are not sent
/// (chat completions takes no reasoning input).
pub fn build_body(
    request: &LlmRequest,
    model: &str,
    options: &ProviderOptions,
    stream: bool,
) -> Result<Value, OpenAiError> {
    let mut messages = Vec::new();
    for message in &request.messages {
        append_message(request, message, &mut messages)?;
    }
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert("messages".into(), Value::Array(messages));
    if !request.tools.is_empty() {
        let tools = request.tools.iter().map(tool).collect::<Result<Vec<_>, _>>()?;
        body.insert("tools".into(), Value::Array(tools));
        body.insert("tool_choice".into(), json!(tool_choice(&request.tool_choice)));
    }
    if let Some(cap) = request.generation.output_token_cap_u64().or(options.max_output_tokens) {
        body.insert("max_tokens".into(), json!(cap));
    }
    if let Some(spec) = &request.output_spec {
        body.insert("response_format".into(), response_format(spec)?);
    }
    if stream {
        body.insert("stream".into(), json!(true));
        body.insert("stream_options".into(), json!({ "include_usage": true }));
    }
    Ok(Value::Object(body))
}

fn tool_choice(choice: &LlmToolChoice) -> &'static str {
    match choice {
        LlmToolChoice::Auto => "auto",
        LlmToolChoice::None => "none",
        LlmToolChoice::Required => "required",
    }
}

fn tool(spec: &LlmToolSpec) -> Result<Value, OpenAiError> {
    let parameters = resolve_schema(
        &spec.input_schema,
        SchemaResolutionRequest {
            provider: SCHEMA_PROVIDER,
            purpose: SchemaPurpose::ToolInput,
            dialects: &[SchemaDialect::openai_tool_parameters()],
        },
    )
    .map_err(|err| OpenAiError::UnsupportedRequest {
        reason: format!("tool `{}` has an input schema chat completions cannot take: {err:?}", spec.name),
    })?
    .schema;
    Ok(json!({
        "type": "function",
        "function": { "name": spec.name, "description": spec.description, "parameters": parameters },
    }))
}

fn response_format(spec: &LlmOutputSpec) -> Result<Value, OpenAiError> {
    match spec {
        LlmOutputSpec::JsonObject => Ok(json!({ "type": "json_object" })),
        LlmOutputSpec::JsonSchema(schema) => {
            let resolved = resolve_schema(
                &schema.schema,
                SchemaResolutionRequest {
                    provider: SCHEMA_PROVIDER,
                    purpose: SchemaPurpose::StructuredOutput,
                    dialects: &[SchemaDialect::openai_structured_output()],
                },
            )
            .map_err(|err| OpenAiError::UnsupportedRequest {
                reason: format!("output schema `{}` cannot be sent: {err:?}", schema.name),
            })?;
            Ok(json!({
                "type": "json_schema",
                "json_schema": { "name": schema.name, "schema": resolved.schema, "strict": schema.strict },
            }))
        }
    }
}

fn role(role: &LlmRole) -> &'static str {
    match role {
        LlmRole::User => "user",
        LlmRole::Assistant => "assistant",
        LlmRole::System => "system",
    }
}

fn append_message(request: &LlmRequest, message: &LlmMessage, out: &mut Vec<Value>) -> Result<(), OpenAiError> {
    let mut content: Vec<Value> = Vec::new();
    let mut tool_calls: Vec<Value> = Vec::new();
    for block in message.blocks.iter() {
        match block {
            LlmContentBlock::Text { text, .. } => content.push(json!({ "type": "text", "text": &**text })),
            LlmContentBlock::Attachment { attachment_idx } => content.push(image_part(request, *attachment_idx)?),
            LlmContentBlock::ToolCall { call_id, tool_name, input_json, .. } => tool_calls.push(json!({
                "id": call_id,
                "type": "function",
                "function": { "name": tool_name, "arguments": input_json },
            })),
            LlmContentBlock::ToolResult { call_id, content: result, .. } => {
                out.push(json!({ "role": "tool", "tool_call_id": call_id, "content": result }));
            }
            LlmContentBlock::Reasoning { .. } => {}
        }
    }
    if content.is_empty() && tool_calls.is_empty() {
        return Ok(());
    }
    let mut entry = Map::new();
    entry.insert("role".into(), json!(role(&message.role)));
    entry.insert("content".into(), content_value(content));
    if !tool_calls.is_empty() {
        entry.insert("tool_calls".into(), Value::Array(tool_calls));
    }
    out.push(Value::Object(entry));
    Ok(())
}

/// Text only: one string (what every compatible server takes); with images: the parts.
fn content_value(parts: Vec<Value>) -> Value {
    if parts.is_empty() {
        return Value::Null;
    }
    if parts.iter().all(|part| part["type"] == "text") {
        let texts: Vec<&str> = parts.iter().filter_map(|part| part["text"].as_str()).collect();
        return json!(texts.join("\n\n"));
    }
    Value::Array(parts)
}

fn image_part(request: &LlmRequest, index: usize) -> Result<Value, OpenAiError> {
    let source = request.attachments.get(index).ok_or_else(|| OpenAiError::UnsupportedRequest {
        reason: format!("attachment {index} is referenced but the request carries {}", request.attachments.len()),
    })?;
    let media_type = source.media_type().map(ToString::to_string).unwrap_or_default();
    if !media_type.starts_with("image/") {
        return Err(OpenAiError::UnsupportedRequest {
            reason: format!("attachment of type `{media_type}`: chat completions takes images only"),
        });
    }
    let url = match source {
        AttachmentSource::ExternalUrl { url, .. } => url.clone(),
        AttachmentSource::Inline { .. } | AttachmentSource::Stored { .. } => {
            let bytes = request.attachment_bytes(source).ok_or_else(|| OpenAiError::UnsupportedRequest {
                reason: format!("stored attachment {index} was not resolved to bytes before the call"),
            })?;
            format!("data:{media_type};base64,{}", base64::engine::general_purpose::STANDARD.encode(bytes))
        }
        AttachmentSource::ProviderFile { .. } => {
            return Err(OpenAiError::UnsupportedRequest {
                reason: "a provider-owned file cannot be sent to chat completions".into(),
            });
        }
    };
    Ok(json!({ "type": "image_url", "image_url": { "url": url } }))
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroUsize;
    use std::sync::Arc;

    use lash_core::llm::types::{LlmJsonSchema, LlmRequestScope};
    use lash_core::{MediaType, SchemaContract};

    use super::*;

    fn request(blocks: Vec<LlmContentBlock>, attachments: Vec<AttachmentSource>) -> LlmRequest {
        LlmRequest {
            model: String::new(),
            messages: vec![LlmMessage::new(LlmRole::User, blocks)],
            attachments,
            resolved_stored: Default::default(),
            tools: Arc::new(Vec::new()),
            tool_choice: LlmToolChoice::Auto,
            model_variant: Default::default(),
            model_capability: Default::default(),
            generation: Default::default(),
            scope: LlmRequestScope::new("s", "f", "r"),
            output_spec: None,
            stream_events: None,
            provider_trace: None,
        }
    }

    fn text(text: &str) -> LlmContentBlock {
        LlmContentBlock::Text { text: text.into(), response_meta: None, cache_breakpoint: false }
    }

    fn png() -> MediaType {
        MediaType::parse("image/png").unwrap()
    }

    #[test]
    fn user_content_table() {
        let cases = [
            (request(vec![text("a"), text("b")], vec![]), json!("a\n\nb")),
            (
                request(
                    vec![text("see"), LlmContentBlock::Attachment { attachment_idx: 0 }],
                    vec![AttachmentSource::inline(png(), vec![1, 2, 3])],
                ),
                json!([
                    { "type": "text", "text": "see" },
                    { "type": "image_url", "image_url": { "url": "data:image/png;base64,AQID" } },
                ]),
            ),
            (
                request(
                    vec![LlmContentBlock::Attachment { attachment_idx: 0 }],
                    vec![AttachmentSource::external_url(png(), "https://example.test/a.png")],
                ),
                json!([{ "type": "image_url", "image_url": { "url": "https://example.test/a.png" } }]),
            ),
        ];
        for (request, expected) in cases {
            let body = build_body(&request, "m", &ProviderOptions::default(), false).unwrap();
            assert_eq!(body["messages"][0]["content"], expected);
        }
    }

    #[test]
    fn attachments_chat_completions_cannot_carry_are_unsupported_requests() {
        let pdf = MediaType::parse("application/pdf").unwrap();
        let cases = [
            request(
                vec![LlmContentBlock::Attachment { attachment_idx: 0 }],
                vec![AttachmentSource::inline(pdf, vec![1])],
            ),
            request(vec![LlmContentBlock::Attachment { attachment_idx: 1 }], vec![]),
        ];
        for request in cases {
            let error = build_body(&request, "m", &ProviderOptions::default(), false).unwrap_err();
            assert!(matches!(error, OpenAiError::UnsupportedRequest { .. }), "{error}");
        }
    }

    #[test]
    fn generation_settings_table() {
        let options_cap = ProviderOptions { max_output_tokens: Some(99), ..ProviderOptions::default() };
        let mut capped = request(vec![text("x")], vec![]);
        capped.generation.output_token_cap = NonZeroUsize::new(7);
        let mut json_object = request(vec![text("x")], vec![]);
        json_object.output_spec = Some(LlmOutputSpec::JsonObject);
        let mut json_schema = request(vec![text("x")], vec![]);
        json_schema.output_spec = Some(LlmOutputSpec::JsonSchema(LlmJsonSchema {
            name: "answer".into(),
            schema: SchemaContract::new(json!({ "type": "object", "properties": { "a": { "type": "string" } } })),
            strict: true,
        }));
        let cases = [
            (request(vec![text("x")], vec![]), ProviderOptions::default(), "max_tokens", Value::Null),
            (request(vec![text("x")], vec![]), options_cap.clone(), "max_tokens", json!(99)),
            (capped, options_cap, "max_tokens", json!(7)),
            (json_object, ProviderOptions::default(), "response_format", json!({ "type": "json_object" })),
        ];
        for (request, options, field, expected) in cases {
            let body = build_body(&request, "m", &options, false).unwrap();
            assert_eq!(body[field], expected, "{field}");
        }
        let body = build_body(&json_schema, "m", &ProviderOptions::default(), false).unwrap();
        assert_eq!(body["response_format"]["type"], "json_schema");
        assert_eq!(body["response_format"]["json_schema"]["name"], "answer");
        assert_eq!(body["response_format"]["json_schema"]["strict"], true);
        // lash's OpenAI structured-output projection: an optional property becomes
        // required and nullable, as strict mode demands.
        assert_eq!(
            body["response_format"]["json_schema"]["schema"]["properties"]["a"]["type"],
            json!(["string", "null"])
        );
    }

    #[test]
    fn tool_choice_table() {
        for (choice, expected) in
            [(LlmToolChoice::Auto, "auto"), (LlmToolChoice::None, "none"), (LlmToolChoice::Required, "required")]
        {
            assert_eq!(tool_choice(&choice), expected);
        }
    }
}
