//! [`BenchError`]: why the bench could not run a store or its workload.

/// Why the bench stopped. Every message says what happened and what to check.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The command line is wrong.
    #[error("{0} (run with --help for the options)")]
    Usage(String),
    /// Local I/O failed.
    #[error("could not {action}: {source}")]
    Io {
        /// What was being done.
        action: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The bench's PostgreSQL could not be set up.
    #[error("PostgreSQL: {0}")]
    Postgres(String),
    /// The bench's nats-server (or cluster) could not be set up.
    #[error("NATS: {0} (is NATS_SERVER_BIN set, or nats-server on PATH?)")]
    Nats(String),
    /// A store, or lash's runtime on it, refused to start.
    #[error("the {store} store: {message}")]
    Store {
        /// The store's name.
        store: String,
        /// What failed.
        message: String,
    },
    /// A turn of the workload failed, or did not do what the script says.
    #[error("the workload on {store}: {message}")]
    Workload {
        /// The store's name.
        store: String,
        /// What failed.
        message: String,
    },
}

impl BenchError {
    /// A stable name of the error's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Usage(_) => "usage",
            Self::Io { .. } => "io",
            Self::Postgres(_) => "postgres",
            Self::Nats(_) => "nats",
            Self::Store { .. } => "store",
            Self::Workload { .. } => "workload",
        }
    }

    /// An [`BenchError::Io`] for `action`.
    pub fn io(action: &str, source: std::io::Error) -> Self {
        Self::Io { action: action.to_owned(), source }
    }
}
