//! The lash executor's options (`sessionbus worker --executor lash ...`) and the
//! executor they build. Built only with the cargo feature `lash`; without it, asking
//! for lash is a clear error (lash's dependencies stay out of the default build).

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, ValueEnum};
use sessionbus_api::TurnExecutor;

use crate::connect::CliError;

/// The script the scripted provider answers from when no `--script` is given: the
/// offline demo's conversation (tool calls of the demo tools, then answers).
#[cfg(feature = "lash")]
pub const DEMO_SCRIPT: &str = include_str!("../../scripts/lash-demo.json");

/// What the demo asks a lash agent, turn after turn: each makes the scripted model call
/// a demo tool, then answer.
pub const DEMO_QUESTIONS: [&str; 2] = ["What is 2 + 3?", "How many words are in 'the quick brown fox'?"];

/// Where a lash worker's model answers come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProviderKind {
    /// Offline: answers from a JSON script (`--script`, else the shipped demo script).
    Scripted,
    /// An OpenAI-compatible chat-completions API (OPENAI_BASE_URL, OPENAI_API_KEY,
    /// OPENAI_MODEL).
    Openai,
}

/// Options of the lash executor.
#[derive(Args, Debug, Clone)]
pub struct LashArgs {
    /// The lash executor's model provider.
    #[arg(long, value_enum, default_value_t = ProviderKind::Scripted)]
    pub provider: ProviderKind,
    /// The scripted provider's script (a JSON list of {"when", "response"}); the shipped
    /// demo script when unset.
    #[arg(long)]
    pub script: Option<PathBuf>,
    /// The model name lash records for scripted turns.
    #[arg(long, default_value = "scripted-model")]
    pub scripted_model: String,
    /// The longest one tool call of a lash turn may run, in seconds; past it the call is
    /// stopped and the model is told so.
    #[arg(long, default_value_t = 300)]
    pub tool_timeout_secs: u64,
}

/// The lash executor these options describe.
#[cfg(feature = "lash")]
pub fn executor(args: &LashArgs) -> Result<Arc<dyn TurnExecutor>, CliError> {
    use sessionbus_lash::executor::{LashExecutor, LashExecutorConfig};
    use sessionbus_lash::provider::openai::OpenAiProvider;
    use sessionbus_lash::provider::scripted::{Script, ScriptedProvider};

    let other = |err: &dyn std::fmt::Display| CliError::Other(err.to_string());
    let config = match args.provider {
        ProviderKind::Scripted => {
            let script = match &args.script {
                Some(path) => Script::load(&path.to_string_lossy()),
                None => Script::parse(DEMO_SCRIPT),
            }
            .map_err(|err| other(&err))?;
            LashExecutorConfig::new(Box::new(ScriptedProvider::new(script)), &args.scripted_model)
        }
        ProviderKind::Openai => {
            let provider = OpenAiProvider::from_env().map_err(|err| other(&err))?;
            let model = provider.model().to_owned();
            LashExecutorConfig::new(Box::new(provider), &model)
        }
    }
    .map_err(|err| other(&err))?
    .with_tool_timeout(std::time::Duration::from_secs(args.tool_timeout_secs.max(1)));
    Ok(Arc::new(LashExecutor::new(config)))
}

/// Without the `lash` feature there is no lash executor.
#[cfg(not(feature = "lash"))]
pub fn executor(_args: &LashArgs) -> Result<Arc<dyn TurnExecutor>, CliError> {
    Err(CliError::LashNotBuilt)
}

/// Settles the TLS crypto provider of a binary that links lash (decision 0010); call
/// before any connection. Nothing to do without lash.
pub fn install_crypto_provider() {
    #[cfg(feature = "lash")]
    sessionbus_lash::install_crypto_provider();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> LashArgs {
        LashArgs {
            provider: ProviderKind::Scripted,
            script: None,
            scripted_model: "scripted-model".into(),
            tool_timeout_secs: 300,
        }
    }

    #[cfg(not(feature = "lash"))]
    #[test]
    fn asking_for_lash_without_the_feature_says_how_to_rebuild() {
        let err = executor(&args()).err().expect("no lash in this build");
        assert!(err.to_string().contains("rebuild with --features lash"), "{err}");
    }

    #[cfg(feature = "lash")]
    #[test]
    fn the_shipped_demo_script_builds_a_lash_executor_and_a_missing_script_is_named() {
        assert!(executor(&args()).is_ok());
        let missing = LashArgs { script: Some("/no/such/script.json".into()), ..args() };
        let err = executor(&missing).err().expect("no such script");
        assert!(err.to_string().contains("/no/such/script.json"), "{err}");
    }
}
