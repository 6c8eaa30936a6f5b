//! [`LashTurnError`]: why the lash executor could not produce a turn's output, and the
//! one place it becomes the contract's `PluginError`.

use sessionbus_api::PluginError;

use super::commit::CommitRefusal;

/// Why a lash turn produced nothing to commit.
#[derive(Debug, thiserror::Error)]
pub enum LashTurnError {
    /// The bus's snapshot or turn input does not read as lash's type.
    #[error("lash cannot read the turn's {what}: {why}; the session was not written by a compatible sessionbus")]
    Unreadable {
        /// `snapshot` or `turn input`.
        what: &'static str,
        /// Why.
        why: String,
    },
    /// lash refuses the model the executor was configured with.
    #[error("lash refuses the model `{model}`: {why}; configure a model name lash accepts")]
    Model {
        /// The model asked for.
        model: String,
        /// Why.
        why: String,
    },
    /// lash refused to build the runtime or open the session.
    #[error("lash could not open the session: {0}; check the executor's model and tools")]
    Open(lash::EmbedError),
    /// The turn failed inside lash (provider, tool, protocol).
    #[error("the lash turn failed: {0}")]
    Turn(lash::EmbedError),
    /// lash's commit does not fit the bus.
    #[error(transparent)]
    Commit(#[from] CommitRefusal),
    /// lash's turn result does not read as the bus's.
    #[error("lash's turn result does not read as the bus's: {0}")]
    Output(String),
}

impl LashTurnError {
    /// A stable name of the error's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unreadable { .. } => "unreadable",
            Self::Model { .. } => "model",
            Self::Open(_) => "open",
            Self::Turn(_) => "turn",
            Self::Commit(refusal) => refusal.kind(),
            Self::Output(_) => "output",
        }
    }

    /// The contract's error for a turn that failed with `self`: a failed lash turn
    /// (e.g. the provider did not answer) may succeed when run again, so it is
    /// `Unavailable`; everything else is a permanent `Session` error.
    pub fn into_plugin_error(self, turn_id: &str) -> PluginError {
        let message = format!("turn `{turn_id}`: {self}");
        match self {
            Self::Turn(_) => PluginError::Unavailable(message),
            _ => PluginError::Session(message),
        }
    }
}
