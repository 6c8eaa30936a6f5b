//! Where the OpenAI-compatible provider sends its requests, with which key and model.

use std::fmt;

/// The environment variable naming the API base (`https://api.openai.com/v1` when unset).
pub const BASE_URL_VAR: &str = "OPENAI_BASE_URL";
/// The environment variable holding the API key (optional: local vLLM and Ollama need none).
pub const API_KEY_VAR: &str = "OPENAI_API_KEY";
/// The environment variable naming the model to call (required).
pub const MODEL_VAR: &str = "OPENAI_MODEL";
/// The API base used when [`BASE_URL_VAR`] is unset.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
/// The path of the chat-completions endpoint below the API base.
pub const CHAT_COMPLETIONS_PATH: &str = "chat/completions";

/// An API key. Its `Debug` output is `ApiKey(<redacted>)`; it has no `Display`, and
/// only the provider's request builder reads it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The key itself, for the `Authorization` header and for scrubbing it from text.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// How to reach an OpenAI-compatible chat-completions API (OpenAI, vLLM, Ollama,
/// LiteLLM, most gateways).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenAiConfig {
    /// The API base, e.g. `https://api.openai.com/v1` or `http://localhost:11434/v1`;
    /// requests go to `<base_url>/chat/completions`.
    pub base_url: String,
    /// The bearer key; `None` sends no `Authorization` header.
    pub api_key: Option<ApiKey>,
    /// The model called when a request names none (lash's `LlmRequest.model` wins).
    pub model: String,
}

/// Why the configuration cannot be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// No model was named.
    #[error("{MODEL_VAR} is not set: set it to the model to call (e.g. gpt-4o-mini, or the name vLLM/Ollama serves)")]
    MissingModel,
    /// The API base is not an http(s) URL.
    #[error(
        "{BASE_URL_VAR} is not an http:// or https:// URL: set it to the API base, e.g. {DEFAULT_BASE_URL} or http://localhost:11434/v1"
    )]
    InvalidBaseUrl,
}

impl OpenAiConfig {
    /// A configuration for `model` at `base_url`, without a key.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Result<Self, ConfigError> {
        let base_url = base_url.into();
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(ConfigError::InvalidBaseUrl);
        }
        let model = model.into();
        if model.trim().is_empty() {
            return Err(ConfigError::MissingModel);
        }
        Ok(Self { base_url: base_url.trim_end_matches('/').to_owned(), api_key: None, model })
    }

    /// The same configuration sending `key` as its bearer token.
    #[must_use]
    pub fn with_api_key(mut self, key: ApiKey) -> Self {
        self.api_key = Some(key);
        self
    }

    /// Reads [`BASE_URL_VAR`], [`API_KEY_VAR`] and [`MODEL_VAR`] from the process
    /// environment; an empty variable counts as unset.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// As [`from_env`](Self::from_env), reading the variables through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let var = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let base_url = var(BASE_URL_VAR).unwrap_or_else(|| DEFAULT_BASE_URL.to_owned());
        let model = var(MODEL_VAR).ok_or(ConfigError::MissingModel)?;
        let config = Self::new(base_url, model)?;
        Ok(match var(API_KEY_VAR) {
            Some(key) => config.with_api_key(ApiKey::new(key)),
            None => config,
        })
    }

    /// The URL requests are posted to.
    pub fn chat_completions_url(&self) -> String {
        format!("{}/{CHAT_COMPLETIONS_PATH}", self.base_url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| vars.iter().find(|(var, _)| *var == name).map(|(_, value)| (*value).to_owned())
    }

    /// Environment variables, and the `(base_url, has_key, model)` or error they give.
    type Case = (&'static [(&'static str, &'static str)], Result<(&'static str, bool, &'static str), ConfigError>);

    #[test]
    fn env_configuration_table() {
        let cases: &[Case] = &[
            (&[(MODEL_VAR, "m")], Ok((DEFAULT_BASE_URL, false, "m"))),
            (
                &[(MODEL_VAR, "llama3"), (BASE_URL_VAR, "http://localhost:11434/v1/"), (API_KEY_VAR, "")],
                Ok(("http://localhost:11434/v1", false, "llama3")),
            ),
            (&[(MODEL_VAR, "m"), (API_KEY_VAR, "sk-1")], Ok((DEFAULT_BASE_URL, true, "m"))),
            (&[], Err(ConfigError::MissingModel)),
            (&[(MODEL_VAR, " ")], Err(ConfigError::MissingModel)),
            (&[(MODEL_VAR, "m"), (BASE_URL_VAR, "localhost:8000")], Err(ConfigError::InvalidBaseUrl)),
        ];
        for (vars, expected) in cases {
            let got = OpenAiConfig::from_lookup(lookup(vars))
                .map(|config| (config.base_url.clone(), config.api_key.is_some(), config.model.clone()));
            let expected = expected.clone().map(|(url, key, model)| (url.to_owned(), key, model.to_owned()));
            assert_eq!(got, expected, "{vars:?}");
        }
    }

    #[test]
    fn debug_output_never_shows_the_key() {
        let config = OpenAiConfig::new(DEFAULT_BASE_URL, "m").unwrap().with_api_key(ApiKey::new("sk-secret-123"));
        let debug = format!("{config:?} {:?}", config.api_key);
        assert!(!debug.contains("sk-secret-123"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
    }

    #[test]
    fn requests_go_to_chat_completions_below_the_base() {
        let config = OpenAiConfig::new("http://127.0.0.1:9/v1/", "m").unwrap();
        assert_eq!(config.chat_completions_url(), "http://127.0.0.1:9/v1/chat/completions");
    }
}
