//! lash `Provider`s a worker can run turns with.
//!
//! - [`openai`]: OpenAI-compatible chat completions (OpenAI, vLLM, Ollama, LiteLLM, ...);
//! - [`scripted`]: answers from a JSON script keyed by the request's content, for tests
//!   and the offline demo (a retried turn gets the same answers).

pub mod openai;
pub mod scripted;
