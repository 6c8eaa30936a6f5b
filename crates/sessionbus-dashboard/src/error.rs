//! What can stop the dashboard, as a kind callers match on.

use std::net::SocketAddr;

/// What went wrong, without the text: match on this instead of the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DashboardErrorKind {
    /// A non-loopback listen address was given without a token.
    TokenRequired,
    /// The listen address could not be bound.
    Bind,
    /// The HTTP server stopped with an error.
    Serve,
}

/// An error that stops the dashboard.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// A non-loopback listen address was given without a token.
    #[error(
        "refusing to listen on {0} without a token: anyone who can reach it could read the bus; \
         pass --token (or SESSIONBUS_DASHBOARD_TOKEN), or listen on a loopback address such as 127.0.0.1:8080"
    )]
    TokenRequired(SocketAddr),
    /// The listen address could not be bound.
    #[error("could not listen on {addr}: {source}; pick a free address with --listen")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The HTTP server stopped with an error.
    #[error("the dashboard's HTTP server stopped: {0}")]
    Serve(std::io::Error),
}

impl DashboardError {
    /// The kind of this error.
    pub fn kind(&self) -> DashboardErrorKind {
        match self {
            DashboardError::TokenRequired(_) => DashboardErrorKind::TokenRequired,
            DashboardError::Bind { .. } => DashboardErrorKind::Bind,
            DashboardError::Serve(_) => DashboardErrorKind::Serve,
        }
    }
}
