//! [`LaunchError`]: why a process could not be started, stopped or signalled.

use std::path::Path;

/// Why a process could not be started, stopped or signalled. Every message says what to
/// check or do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LaunchError {
    /// A program the launcher runs is missing, or is not the version it needs. The
    /// message says how to install it.
    #[error("{0}")]
    NotInstalled(String),
    /// Local I/O failed: a directory, a configuration file, a spawn.
    #[error("could not {action}: {source}")]
    Io {
        /// What was being done (`create the store directory /tmp/x`).
        action: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The process exited, or did not become ready in time. `reason` holds what was
    /// seen, the end of the process's log and what to check.
    #[error("{program} did not start: {reason}")]
    Startup {
        /// The program (`nats-server`, `sessionbus worker`, `the 3-node cluster`).
        program: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// The fixed client port is taken by another process: the server would fail to bind
    /// it, and clients would reach the other process instead.
    #[error(
        "port {port} on {host} is taken by another process (another nats-server, or another `sessionbus up`?): \
         stop it, or choose another port"
    )]
    PortTaken {
        /// The interface.
        host: String,
        /// The port.
        port: u16,
    },
    /// A signal could not be delivered.
    #[error("could not send SIG{signal} to process {pid}: {reason}. Is the process still running?")]
    Signal {
        /// The signal's name without `SIG` (`STOP`, `CONT`, `INT`).
        signal: String,
        /// The process id.
        pid: u32,
        /// What `kill` said.
        reason: String,
    },
}

impl LaunchError {
    /// An [`LaunchError::Io`] maker for `map_err`: `.map_err(LaunchError::io("write x"))`.
    pub(crate) fn io(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let action = action.into();
        move |source| Self::Io { action, source }
    }

    /// [`LaunchError::io`] for an action on `path`.
    pub(crate) fn io_at(action: &str, path: &Path) -> impl FnOnce(std::io::Error) -> Self {
        Self::io(format!("{action} {}", path.display()))
    }
}
