//! Runs the dashboard: checks where it may listen, binds, serves until told to stop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use sessionbus_nats::BusClient;

use crate::error::DashboardError;
use crate::listen::check_listen;
use crate::routes::{AppState, router};

/// The default listen address (loopback, so no token is needed).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// Where and how the dashboard serves.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DashboardConfig {
    /// The address to listen on; a non-loopback one needs `token`.
    pub listen: SocketAddr,
    /// The token every request must carry; `None` only on loopback.
    pub token: Option<String>,
    /// Jaeger's UI base URL: turns link to `<url>/trace/<trace id>`.
    pub jaeger_url: Option<String>,
}

impl DashboardConfig {
    /// Listen on `listen`, no token, no Jaeger link.
    pub fn new(listen: SocketAddr) -> Self {
        Self { listen, token: None, jaeger_url: None }
    }

    /// Require `token` (empty means none).
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token.filter(|t| !t.trim().is_empty());
        self
    }

    /// Link turns to traces in the Jaeger UI at `url`.
    pub fn with_jaeger_url(mut self, url: Option<String>) -> Self {
        self.jaeger_url = url.map(|u| u.trim_end_matches('/').to_owned()).filter(|u| !u.is_empty());
        self
    }
}

/// A bound dashboard, not yet serving: [`Dashboard::local_addr`] says where it listens.
pub struct Dashboard {
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
}

impl Dashboard {
    /// Checks the address (a non-loopback one needs a token) and binds it.
    pub async fn bind(config: DashboardConfig, bus: BusClient) -> Result<Self, DashboardError> {
        check_listen(config.listen, config.token.as_deref())?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| DashboardError::Bind { addr: config.listen, source })?;
        let state = Arc::new(AppState { bus, token: config.token, jaeger_url: config.jaeger_url });
        Ok(Self { listener, state })
    }

    /// The address it listens on (the port chosen when it was 0).
    pub fn local_addr(&self) -> Result<SocketAddr, DashboardError> {
        self.listener.local_addr().map_err(DashboardError::Serve)
    }

    /// The URL to open: with `?token=` when a token is set.
    pub fn url(&self) -> Result<String, DashboardError> {
        let addr = self.local_addr()?;
        Ok(match &self.state.token {
            Some(token) => format!("http://{addr}/?token={token}"),
            None => format!("http://{addr}/"),
        })
    }

    /// Serves until `shutdown` completes.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), DashboardError> {
        axum::serve(self.listener, router(self.state))
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(DashboardError::Serve)
    }
}
