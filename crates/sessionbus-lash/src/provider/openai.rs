//! A lash [`Provider`] for the OpenAI-compatible chat-completions API (OpenAI, vLLM,
//! Ollama, LiteLLM and most gateways).
//!
//! - Configuration: [`OpenAiConfig::from_env`] reads `OPENAI_BASE_URL` (default
//!   `https://api.openai.com/v1`), `OPENAI_API_KEY` (optional) and `OPENAI_MODEL`
//!   (required; the model used when lash's request names none).
//! - Transport: lash's own [`ReqwestHttpTransport`] (reqwest with rustls); a caller can
//!   hand in another [`HttpTransport`] (e.g. one trusting a private CA).
//! - Streaming: when lash asks for stream events (`LlmRequest.stream_events`), the
//!   request sets `stream: true` with usage, and text deltas, reasoning deltas, usage and
//!   finished tool calls reach lash as they arrive.
//! - Redaction: the key goes only into the `Authorization` header. It is never in the
//!   body, so never in lash's `provider_request` trace records (they carry the body and
//!   the endpoint path `chat/completions`, not the URL or headers); errors pass through
//!   [`OpenAiError::into_transport_error`], which scrubs it; `Debug` shows
//!   `ApiKey(<redacted>)`; [`Provider::serialize_config`] names the variable, not the key.

mod config;
mod error;
mod request;
mod response;
mod stream;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lash_core::llm::transport::LlmTransportError;
use lash_core::llm::types::{LlmEventSender, LlmProviderTraceEvent, LlmRequest, LlmResponse};
use lash_core::provider::{Provider, ProviderOptions};
use lash_http_transport::{HttpRequest, HttpResponseBody, HttpTransport, ReqwestHttpTransport, run_with_timeout};
use serde_json::{Value, json};

pub use config::{
    API_KEY_VAR, ApiKey, BASE_URL_VAR, CHAT_COMPLETIONS_PATH, ConfigError, DEFAULT_BASE_URL, MODEL_VAR, OpenAiConfig,
};
pub use error::{OpenAiError, OpenAiErrorKind, REDACTED};
pub use request::build_body;
pub use response::parse_completion;
pub use stream::{SseDecoder, StreamAssembler};

/// The provider's kind, as lash records it (`ProviderSpec.type`, trace `provider`).
pub const PROVIDER_KIND: &str = "openai_compatible";

/// The OpenAI-compatible chat-completions provider.
#[derive(Clone, Debug)]
pub struct OpenAiProvider {
    config: OpenAiConfig,
    options: ProviderOptions,
    transport: Arc<dyn HttpTransport>,
}

impl OpenAiProvider {
    /// A provider for `config` over lash's reqwest transport.
    ///
    /// Call [`crate::install_crypto_provider`] first in a binary that also links
    /// async-nats (decision 0010).
    pub fn new(config: OpenAiConfig) -> Self {
        Self::with_transport(config, Arc::new(ReqwestHttpTransport::new()))
    }

    /// A provider for `config` sending through `transport`.
    pub fn with_transport(config: OpenAiConfig, transport: Arc<dyn HttpTransport>) -> Self {
        Self { config, options: ProviderOptions::default(), transport }
    }

    /// A provider configured from the environment ([`OpenAiConfig::from_env`]).
    pub fn from_env() -> Result<Self, ConfigError> {
        OpenAiConfig::from_env().map(Self::new)
    }

    /// Its configuration.
    pub fn config(&self) -> &OpenAiConfig {
        &self.config
    }

    /// The model called when a request names none (`OPENAI_MODEL`); an executor sets it
    /// as the lash session's model.
    pub fn model(&self) -> &str {
        &self.config.model
    }

    async fn call(&self, request: LlmRequest) -> Result<LlmResponse, OpenAiError> {
        let model = if request.model.trim().is_empty() { self.config.model.as_str() } else { request.model.as_str() };
        let streamed = request.stream_events.as_ref();
        let body = build_body(&request, model, &self.options, streamed.is_some())?.to_string();
        if let Some(trace) = &request.provider_trace {
            trace.send(LlmProviderTraceEvent::request(PROVIDER_KIND, CHAT_COMPLETIONS_PATH, body.clone()));
        }
        let accept = if streamed.is_some() { "text/event-stream" } else { "application/json" };
        let mut http = HttpRequest::post(self.config.chat_completions_url(), body)
            .with_header("content-type", "application/json")
            .with_header("accept", accept)
            .with_response_start_timeout_message("the chat-completions endpoint did not answer in time");
        if let Some(key) = &self.config.api_key {
            http = http.with_header("authorization", format!("Bearer {}", key.expose()));
        }
        let timeouts = self.options.llm_timeouts();
        let response = self.transport.send(http, timeouts.request_timeout).await.map_err(OpenAiError::Transport)?;
        let headers = response.headers;
        if !(200..300).contains(&response.status) {
            let body = read_all(response.body, timeouts.request_timeout).await?;
            return Err(OpenAiError::from_status(response.status, headers, body));
        }
        match streamed {
            Some(events) => {
                read_stream(response.body, events, request.provider_trace.as_ref(), &headers, timeouts.chunk_timeout)
                    .await
            }
            None => parse_completion(&read_all(response.body, timeouts.request_timeout).await?, &headers),
        }
    }
}

async fn read_all(body: HttpResponseBody, timeout: Option<Duration>) -> Result<String, OpenAiError> {
    lash_http_transport::read_http_body_text(body, timeout, "the chat-completions response body did not arrive in time")
        .await
        .map_err(OpenAiError::Transport)
}

/// Reads the event stream to its end, sending lash its events as they arrive.
async fn read_stream(
    body: HttpResponseBody,
    events: &LlmEventSender,
    trace: Option<&lash_core::llm::types::LlmProviderTraceSender>,
    headers: &[(String, String)],
    chunk_timeout: Duration,
) -> Result<LlmResponse, OpenAiError> {
    let mut decoder = SseDecoder::default();
    let mut assembler = StreamAssembler::default();
    let mut stream = match body {
        HttpResponseBody::Buffered(bytes) => {
            let data = decoder.push(&bytes).into_iter().chain(decoder.finish());
            for payload in data {
                if !take_payload(&payload, &mut assembler, events, trace)? {
                    break;
                }
            }
            return finish(assembler, events, headers);
        }
        HttpResponseBody::Streamed(stream) => stream,
    };
    loop {
        let chunk = run_with_timeout(stream.next_chunk(), Some(chunk_timeout), "the chat-completions stream stalled")
            .await
            .map_err(OpenAiError::Transport)?;
        let payloads = match &chunk {
            Some(bytes) => decoder.push(bytes),
            None => decoder.finish(),
        };
        for payload in payloads {
            if !take_payload(&payload, &mut assembler, events, trace)? {
                return finish(assembler, events, headers);
            }
        }
        if chunk.is_none() {
            return finish(assembler, events, headers);
        }
    }
}

/// Takes one `data:` payload; false at `[DONE]`.
fn take_payload(
    payload: &str,
    assembler: &mut StreamAssembler,
    events: &LlmEventSender,
    trace: Option<&lash_core::llm::types::LlmProviderTraceSender>,
) -> Result<bool, OpenAiError> {
    if payload.trim() == stream::DONE {
        return Ok(false);
    }
    let chunk: Value = serde_json::from_str(payload).map_err(|err| OpenAiError::MalformedBody {
        reason: format!("a stream chunk is not JSON: {err}"),
        body: payload.to_owned(),
    })?;
    if let Some(trace) = trace {
        trace.send(LlmProviderTraceEvent {
            provider: PROVIDER_KIND,
            event_name: "chat.completion.chunk".to_owned(),
            raw: payload.to_owned(),
        });
    }
    for event in assembler.push(&chunk)? {
        events.send(event);
    }
    Ok(true)
}

fn finish(
    assembler: StreamAssembler,
    events: &LlmEventSender,
    headers: &[(String, String)],
) -> Result<LlmResponse, OpenAiError> {
    let (finished, response) = assembler.finish(headers)?;
    for event in finished {
        events.send(event);
    }
    Ok(response)
}

#[async_trait]
impl Provider for OpenAiProvider {
    fn kind(&self) -> &'static str {
        PROVIDER_KIND
    }

    fn options(&self) -> ProviderOptions {
        self.options.clone()
    }

    fn set_options(&mut self, options: ProviderOptions) {
        self.options = options;
    }

    /// The base URL, the model and the *name* of the key's variable; never the key.
    fn serialize_config(&self) -> Value {
        let mut config = json!({ "base_url": self.config.base_url, "model": self.config.model });
        if self.config.api_key.is_some() {
            config["api_key_env"] = json!(API_KEY_VAR);
        }
        config
    }

    async fn complete(&mut self, request: LlmRequest) -> Result<LlmResponse, LlmTransportError> {
        self.call(request).await.map_err(|err| err.into_transport_error(self.config.api_key.as_ref()))
    }

    fn clone_boxed(&self) -> Box<dyn Provider> {
        Box::new(self.clone())
    }
}
