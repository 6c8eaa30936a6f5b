//! The OpenAI-compatible provider against a real HTTP server on loopback that replays
//! chat-completions responses kept in `tests/fixtures/openai/`: what the server received
//! (URL, bearer key, body shape) and what lash gets back (parts, usage, terminal reason,
//! stream events, typed errors), and that the key never shows in errors, `Debug`, the
//! serialized config or lash's `provider_request` trace records.

mod replay;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lash_core::llm::types::{
    LlmContentBlock, LlmEventSender, LlmMessage, LlmOutputPart, LlmProviderTraceEvent, LlmProviderTraceSender,
    LlmRequest, LlmRole, LlmStreamEvent, LlmToolChoice, LlmToolSpec, ProviderFailureKind,
};
use lash_core::provider::{Provider, ProviderComponents, ProviderHandle, ProviderOptions, ProviderReliability};
use lash_core::{LlmRequestScope, LlmTerminalReason, SchemaContract};
use replay::{Received, ReplayServer, Reply, fixture};
use serde_json::json;
use sessionbus_lash::provider::openai::{ApiKey, OpenAiConfig, OpenAiProvider, REDACTED};

const KEY: &str = "sk-test-REPLAYKEY-0123456789";

fn provider(server: &ReplayServer) -> OpenAiProvider {
    let config = OpenAiConfig::new(server.base_url(false), "gpt-4o-mini").unwrap().with_api_key(ApiKey::new(KEY));
    OpenAiProvider::new(config)
}

fn request(messages: Vec<LlmMessage>) -> LlmRequest {
    LlmRequest {
        model: String::new(),
        messages,
        attachments: Vec::new(),
        resolved_stored: Default::default(),
        tools: Arc::new(Vec::new()),
        tool_choice: LlmToolChoice::Auto,
        model_variant: Default::default(),
        model_capability: Default::default(),
        generation: Default::default(),
        scope: LlmRequestScope::new("s1", "frame-root", "s1:turn:t1:llm:0"),
        output_spec: None,
        stream_events: None,
        provider_trace: None,
    }
}

fn weather_tool() -> LlmToolSpec {
    LlmToolSpec {
        name: "get_weather".into(),
        description: "The weather in a city.".into(),
        input_schema: SchemaContract::new(json!({
            "type": "object",
            "properties": { "city": { "type": "string" } },
            "required": ["city"],
        })),
        output_schema: SchemaContract::default(),
    }
}

fn only_request(server: &ReplayServer) -> Received {
    let received = server.received();
    assert_eq!(received.len(), 1, "requests: {received:?}");
    received.into_iter().next().unwrap()
}

fn assert_posted_with_key(received: &Received) {
    assert_eq!(received.method, "POST");
    assert_eq!(received.path, "/v1/chat/completions");
    assert_eq!(received.header("authorization"), Some(format!("Bearer {KEY}").as_str()));
    assert_eq!(received.header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn a_plain_answer_is_one_text_part_with_usage_and_the_request_carries_model_messages_and_key() {
    let server =
        ReplayServer::start(vec![Reply::json(200, fixture("plain.json")).with_header("x-request-id", "req_1")]).await;
    let mut provider = provider(&server);
    let response = provider
        .complete(request(vec![
            LlmMessage::text(LlmRole::System, "You are terse."),
            LlmMessage::text(LlmRole::User, "Capital of France?"),
        ]))
        .await
        .unwrap();

    let received = only_request(&server);
    assert_posted_with_key(&received);
    assert_eq!(
        received.json(),
        json!({
            "model": "gpt-4o-mini",
            "messages": [
                { "role": "system", "content": "You are terse." },
                { "role": "user", "content": "Capital of France?" },
            ],
        })
    );
    assert_eq!(response.full_text, "Paris is the capital of France.");
    assert_eq!(
        response.parts,
        vec![LlmOutputPart::Text { text: "Paris is the capital of France.".into(), response_meta: None }]
    );
    assert_eq!(response.terminal_reason, LlmTerminalReason::Stop);
    assert_eq!((response.usage.input_tokens, response.usage.output_tokens), (24, 8));
    let evidence = response.execution_evidence.unwrap();
    assert_eq!(evidence.served_model.as_deref(), Some("gpt-4o-mini-2024-07-18"));
    assert_eq!(evidence.provider_response_id.as_deref(), Some("chatcmpl-AaPlain01"));
    assert_eq!(evidence.provider_request_id.as_deref(), Some("req_1"));
}

#[tokio::test]
async fn tool_calls_come_back_as_lash_tool_call_parts_and_tools_and_results_are_sent_as_functions() {
    let server = ReplayServer::start(vec![Reply::json(200, fixture("tool_call.json"))]).await;
    let mut provider = provider(&server);
    let mut llm_request = request(vec![
        LlmMessage::text(LlmRole::User, "Weather in Paris?"),
        LlmMessage::new(
            LlmRole::Assistant,
            vec![LlmContentBlock::ToolCall {
                call_id: "call_prev".into(),
                tool_name: "get_weather".into(),
                input_json: r#"{"city":"Paris"}"#.into(),
                replay: None,
            }],
        ),
        LlmMessage::new(
            LlmRole::User,
            vec![
                LlmContentBlock::ToolResult {
                    call_id: "call_prev".into(),
                    content: "18C, clear".into(),
                    tool_name: Some("get_weather".into()),
                },
                LlmContentBlock::Text { text: "And the files?".into(), response_meta: None, cache_breakpoint: false },
            ],
        ),
    ]);
    llm_request.model = "served-model".into();
    llm_request.tools = Arc::new(vec![weather_tool()]);
    llm_request.tool_choice = LlmToolChoice::Required;
    let response = provider.complete(llm_request).await.unwrap();

    let received = only_request(&server);
    assert_posted_with_key(&received);
    let body = received.json();
    assert_eq!(body["model"], "served-model", "lash's request model wins over OPENAI_MODEL");
    assert_eq!(body["tool_choice"], "required");
    assert_eq!(body["tools"][0]["type"], "function");
    assert_eq!(body["tools"][0]["function"]["name"], "get_weather");
    assert_eq!(body["tools"][0]["function"]["description"], "The weather in a city.");
    assert_eq!(body["tools"][0]["function"]["parameters"]["properties"]["city"]["type"], "string");
    assert_eq!(
        body["messages"],
        json!([
            { "role": "user", "content": "Weather in Paris?" },
            { "role": "assistant", "content": null, "tool_calls": [
                { "id": "call_prev", "type": "function",
                  "function": { "name": "get_weather", "arguments": "{\"city\":\"Paris\"}" } },
            ] },
            { "role": "tool", "tool_call_id": "call_prev", "content": "18C, clear" },
            { "role": "user", "content": "And the files?" },
        ])
    );

    assert_eq!(
        response.parts,
        vec![
            LlmOutputPart::ToolCall {
                call_id: "call_Xy12ab".into(),
                tool_name: "read_file".into(),
                input_json: r#"{"path":"notes.txt"}"#.into(),
                replay: None,
            },
            LlmOutputPart::ToolCall {
                call_id: "call_Zq34cd".into(),
                tool_name: "list_dir".into(),
                input_json: r#"{"dir":"."}"#.into(),
                replay: None,
            },
        ]
    );
    assert_eq!(response.full_text, "");
    assert_eq!(response.terminal_reason, LlmTerminalReason::ToolUse);
    // 120 prompt tokens, 64 of them cached: lash counts them apart.
    assert_eq!((response.usage.input_tokens, response.usage.cache_read_input_tokens), (56, 64));
    assert_eq!(response.usage.output_tokens, 41);
}

/// A `LlmEventSender` that keeps what it is sent.
fn recording_events() -> (LlmEventSender, Arc<Mutex<Vec<LlmStreamEvent>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    (LlmEventSender::new(move |event| sink.lock().unwrap().push(event)), events)
}

/// A `LlmProviderTraceSender` that keeps what it is sent.
fn recording_trace() -> (LlmProviderTraceSender, Arc<Mutex<Vec<LlmProviderTraceEvent>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    (LlmProviderTraceSender::new(move |event| sink.lock().unwrap().push(event)), events)
}

#[tokio::test]
async fn a_streamed_answer_reaches_lash_as_text_deltas_then_the_whole_tool_call_then_usage_in_stream_order() {
    // 37-byte pieces: lines, events and JSON are cut mid-way.
    let server = ReplayServer::start(vec![Reply::sse(fixture("stream.sse"), 37)]).await;
    let mut provider = provider(&server);
    let (events, seen) = recording_events();
    let mut llm_request = request(vec![LlmMessage::text(LlmRole::User, "Weather in Paris?")]);
    llm_request.tools = Arc::new(vec![weather_tool()]);
    llm_request.stream_events = Some(events);
    let response = provider.complete(llm_request).await.unwrap();

    let received = only_request(&server);
    assert_posted_with_key(&received);
    assert_eq!(received.header("accept"), Some("text/event-stream"));
    let body = received.json();
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"], json!({ "include_usage": true }));

    let call = LlmOutputPart::ToolCall {
        call_id: "call_W1".into(),
        tool_name: "get_weather".into(),
        input_json: r#"{"city": "Paris"}"#.into(),
        replay: None,
    };
    let seen: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|event| match event {
            LlmStreamEvent::Delta(text) => format!("delta:{text}"),
            LlmStreamEvent::Part(part) if *part == call => "tool_call".to_owned(),
            LlmStreamEvent::Usage(usage) => format!("usage:{}/{}", usage.input_tokens, usage.output_tokens),
            other => format!("unexpected:{other:?}"),
        })
        .collect();
    assert_eq!(seen, ["delta:Let me ", "delta:check the ", "delta:weather.", "tool_call", "usage:57/17"]);

    assert_eq!(response.full_text, "Let me check the weather.");
    assert_eq!(
        response.parts,
        vec![LlmOutputPart::Text { text: "Let me check the weather.".into(), response_meta: None }, call]
    );
    assert_eq!(response.terminal_reason, LlmTerminalReason::ToolUse);
    assert_eq!((response.usage.input_tokens, response.usage.output_tokens), (57, 17));
    assert_eq!(response.execution_evidence.unwrap().provider_response_id.as_deref(), Some("chatcmpl-AaStream01"));
}

#[tokio::test]
async fn a_rate_limit_is_a_retryable_quota_error_with_the_retry_after_of_the_response() {
    let server = ReplayServer::start(vec![
        Reply::json(429, fixture("rate_limited.json"))
            .with_header("retry-after-ms", "1500")
            .with_header("retry-after", "2"),
    ])
    .await;
    let error = provider(&server).complete(request(vec![LlmMessage::text(LlmRole::User, "hi")])).await.unwrap_err();

    assert_eq!(error.kind, ProviderFailureKind::Quota);
    assert!(error.retryable);
    assert_eq!(error.status, Some(429));
    assert_eq!(error.retry_after, Some(Duration::from_millis(1500)));
    assert_eq!(error.code.as_deref(), Some("rate_limit_exceeded"));
    assert!(error.message.contains("Rate limit reached for gpt-4o-mini"), "{}", error.message);
}

#[tokio::test]
async fn lash_retries_a_rate_limited_call_after_its_retry_after_and_gets_the_answer() {
    let server = ReplayServer::start(vec![
        Reply::json(429, fixture("rate_limited.json")).with_header("retry-after-ms", "50"),
        Reply::json(200, fixture("plain.json")),
    ])
    .await;
    let mut handle = ProviderHandle::new(ProviderComponents::new(Box::new(provider(&server))));
    handle.set_options(ProviderOptions {
        reliability: ProviderReliability::default().max_attempts(2).base_delay_ms(10),
        ..ProviderOptions::default()
    });
    let completion =
        handle.complete(request(vec![LlmMessage::text(LlmRole::User, "Capital of France?")])).await.unwrap();

    assert_eq!(completion.response.full_text, "Paris is the capital of France.");
    assert_eq!(server.received().len(), 2);
    let attempts = &completion.call_record.attempts;
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[0].error.as_ref().and_then(|error| error.http_status), Some(429));
}

#[tokio::test]
async fn an_error_status_whose_body_echoes_the_key_is_reported_without_the_key() {
    let server = ReplayServer::start(vec![Reply::json(401, fixture("unauthorized.json"))]).await;
    let error = provider(&server).complete(request(vec![LlmMessage::text(LlmRole::User, "hi")])).await.unwrap_err();

    assert_eq!(error.status, Some(401));
    assert!(!error.retryable);
    assert_eq!(error.code.as_deref(), Some("invalid_api_key"));
    let everything = format!("{error} {error:?}");
    assert!(!everything.contains(KEY), "the key leaked: {everything}");
    assert!(error.message.contains(&format!("Incorrect API key provided: {REDACTED}")), "{}", error.message);
}

#[tokio::test]
async fn a_body_that_is_not_chat_completions_is_a_malformed_body_error() {
    let server = ReplayServer::start(vec![Reply::json(200, b"<html>gateway</html>".to_vec())]).await;
    let error = provider(&server).complete(request(vec![LlmMessage::text(LlmRole::User, "hi")])).await.unwrap_err();
    assert_eq!(error.kind, ProviderFailureKind::Stream);
    assert_eq!(error.code.as_deref(), Some("malformed_body"));
}

#[tokio::test]
async fn the_provider_request_trace_record_is_the_body_sent_and_never_the_key() {
    let server = ReplayServer::start(vec![Reply::sse(fixture("stream.sse"), 4096)]).await;
    let (trace, records) = recording_trace();
    let (events, _) = recording_events();
    let mut llm_request = request(vec![LlmMessage::text(LlmRole::User, "Weather in Paris?")]);
    llm_request.provider_trace = Some(trace);
    llm_request.stream_events = Some(events);
    provider(&server).complete(llm_request).await.unwrap();

    let received = only_request(&server);
    let records = records.lock().unwrap();
    let requests: Vec<&LlmProviderTraceEvent> =
        records.iter().filter(|record| record.request_endpoint().is_some()).collect();
    assert_eq!(requests.len(), 1, "one provider_request record per call");
    assert_eq!(requests[0].request_endpoint(), Some("chat/completions"));
    assert_eq!(requests[0].provider, "openai_compatible");
    assert_eq!(requests[0].raw, received.body, "the record is the body the server received");
    let chunks = records.iter().filter(|record| record.event_name == "chat.completion.chunk").count();
    assert_eq!(chunks, 10, "every stream chunk is a provider_stream_event");
    for record in records.iter() {
        assert!(!record.raw.contains(KEY) && !record.event_name.contains(KEY), "the key leaked: {record:?}");
    }
}

#[tokio::test]
async fn debug_output_and_the_serialized_config_never_show_the_key() {
    let server = ReplayServer::start(Vec::new()).await;
    let provider = provider(&server);
    let debug = format!("{provider:?}");
    let config = provider.serialize_config().to_string();
    assert!(!debug.contains(KEY), "{debug}");
    assert!(!config.contains(KEY), "{config}");
    assert_eq!(provider.serialize_config()["api_key_env"], "OPENAI_API_KEY");
    assert_eq!(provider.model(), "gpt-4o-mini");
}
