//! `sessionbus dashboard`: serves the web dashboard (crate `sessionbus-dashboard`) over
//! a connection to the bus (the deploy/ `dashboard` user's rights are enough).

use std::net::SocketAddr;

use clap::Args;
use sessionbus_dashboard::{DEFAULT_LISTEN, Dashboard, DashboardConfig};
use sessionbus_nats::{BusClient, BusClientConfig};

use crate::connect::{CliError, ConnectionArgs};

/// Options of `dashboard` (and of `up --dashboard`).
#[derive(Args, Clone, Debug)]
pub struct DashboardArgs {
    /// Where to serve the page. A non-loopback address needs --token.
    #[arg(long = "listen", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// The token every request must carry (the printed URL has it). Required on a
    /// non-loopback address.
    #[arg(long, env = "SESSIONBUS_DASHBOARD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Jaeger's UI (e.g. http://localhost:16686): turns link to their traces there.
    #[arg(long, env = "SESSIONBUS_JAEGER_URL")]
    pub jaeger_url: Option<String>,
}

/// Binds the dashboard on `client`; the caller serves it.
pub async fn bind(
    client: async_nats::Client,
    connection: &ConnectionArgs,
    args: &DashboardArgs,
) -> Result<Dashboard, CliError> {
    let bus = BusClient::new(client, BusClientConfig::default().with_subjects(connection.subjects()));
    let config =
        DashboardConfig::new(args.listen).with_token(args.token.clone()).with_jaeger_url(args.jaeger_url.clone());
    Dashboard::bind(config, bus).await.map_err(|err| CliError::Other(err.to_string()))
}

/// Serves the dashboard until Ctrl-C or SIGTERM.
pub async fn run(connection: &ConnectionArgs, args: DashboardArgs) -> Result<(), CliError> {
    // Refuse an unguarded public address before touching the bus.
    sessionbus_dashboard::listen::check_listen(args.listen, args.token.as_deref())
        .map_err(|err| CliError::Other(err.to_string()))?;
    let client = connection.connect("sessionbus-dashboard").await?;
    let dashboard = bind(client, connection, &args).await?;
    println!("dashboard: {}", dashboard.url().map_err(|err| CliError::Other(err.to_string()))?);
    dashboard.serve(super::shutdown_signal()).await.map_err(|err| CliError::Other(err.to_string()))
}
