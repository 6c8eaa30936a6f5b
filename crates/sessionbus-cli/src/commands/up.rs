//! `sessionbus up`: the whole bus on one machine, with one command.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use sessionbus_launch::{NatsServer, ServerConfig};
use sessionbus_nats::{Endpoint, Op};

use super::worker::{WorkerArgs, start_worker};
use crate::connect::{CliError, ConnectionArgs};
use crate::output;

/// Options of `up`.
#[derive(Args, Debug)]
pub struct UpArgs {
    /// Interface of the embedded nats-server.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Client port of the embedded nats-server.
    #[arg(long, default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// Monitoring (HTTP) port of the embedded nats-server; 0 turns it off. Default:
    /// the client port + 4000 (8222 for 4222), so a second bus on another port does
    /// not collide.
    #[arg(long)]
    pub http_port: Option<u16>,
    /// Where the embedded server keeps its JetStream data (default: `sessionbus` in the
    /// user's data directory, `sessionbus-<port>` for a port other than 4222).
    #[arg(long, env = "SESSIONBUS_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub worker: WorkerArgs,
    /// Also serve the web dashboard (see `sessionbus dashboard`) and print its URL.
    #[arg(long)]
    pub dashboard: bool,
    /// Where `--dashboard` serves the page.
    #[arg(long, default_value = sessionbus_dashboard::DEFAULT_LISTEN)]
    pub dashboard_listen: std::net::SocketAddr,
}

/// The name of the embedded server (the one its stores were written under).
const EMBEDDED_SERVER_NAME: &str = "sessionbus-embedded";

/// The default data directory (`$XDG_DATA_HOME/sessionbus`, `~/.local/share/sessionbus`,
/// ...), one per client port other than the default.
fn default_data_dir(port: u16) -> PathBuf {
    let name = if port == DEFAULT_PORT { "sessionbus".to_owned() } else { format!("sessionbus-{port}") };
    dirs::data_dir().unwrap_or_else(std::env::temp_dir).join(name)
}

/// The NATS client port `up` listens on by default.
const DEFAULT_PORT: u16 = 4222;

/// The default monitoring port of a bus on `port`: 4000 above it (8222 for 4222), or
/// 4000 below when that would overflow.
fn default_http_port(port: u16) -> u16 {
    port.checked_add(4000).unwrap_or_else(|| port - 4000)
}

/// Starts the server (unless NATS_URL is set) and a worker; runs until Ctrl-C.
pub async fn run(connection: &ConnectionArgs, args: UpArgs) -> Result<(), CliError> {
    let (mut server, url) = match connection.url() {
        Some(url) => (None, url.to_owned()),
        None => {
            let data_dir = args.data_dir.clone().unwrap_or_else(|| default_data_dir(args.port));
            let mut config = ServerConfig::default()
                .with_host(args.host.clone())
                .with_port(args.port)
                .with_data_dir(data_dir)
                // The store outlives this server: the next `up` on it keeps the name.
                .with_server_name(EMBEDDED_SERVER_NAME);
            let http_port = args.http_port.unwrap_or_else(|| default_http_port(args.port));
            if http_port != 0 {
                config = config.with_http_port(http_port);
            }
            let server = NatsServer::start_with(config)?;
            let url = server.url();
            (Some(server), url)
        }
    };
    let client = connection.connect_to(&url, "sessionbus-up").await?;
    let mut worker_args = args.worker.clone();
    worker_args.setup = true;
    let (worker, _host) = start_worker(client.clone(), &worker_args, connection.subjects()).await?;
    let (stop_exporter, exporter_stopped) = tokio::sync::watch::channel(false);
    let exporter = if sessionbus_otel::export::otlp_configured() {
        let exporter_args = super::exporter::ExporterArgs { consumer: "sessionbus-exporter".into() };
        Some(super::exporter::spawn(connection, client.clone(), &exporter_args, exporter_stopped).await?)
    } else {
        None
    };
    let mut table = output::table(["what", "where"]);
    table.add_row(vec!["NATS clients".to_owned(), url.clone()]);
    if let Some(server) = &server {
        let config = server.config();
        if let Some(http_port) = config.http_port {
            table.add_row(vec!["NATS monitoring".to_owned(), format!("http://{}:{http_port}", config.host)]);
        }
        table.add_row(vec!["JetStream data".to_owned(), server.data_dir().display().to_string()]);
    } else {
        table.add_row(vec!["NATS server".to_owned(), "external (NATS_URL)".to_owned()]);
    }
    let subjects = connection.subjects();
    let snapshot = subjects.listen(Endpoint::Session(Op::Snapshot));
    let per_session = snapshot.rsplit_once('.').map_or(snapshot.as_str(), |(base, _)| base);
    table.add_row(vec![
        "requests".to_owned(),
        format!(
            "{per_session}.<op>, {}, {}, {}",
            subjects.listen(Endpoint::Create),
            subjects.listen(Endpoint::Ping),
            subjects.listen(Endpoint::Sessions)
        ),
    ]);
    table.add_row(vec!["events".to_owned(), subjects.events(None)]);
    table.add_row(vec!["worker".to_owned(), format!("{} (executor {:?})", worker.id(), args.worker.executor)]);
    let traces = match exporter {
        Some(_) => format!(
            "stored in SESSIONBUS_TRACE and exported to {}",
            std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT"))
                .unwrap_or_default()
        ),
        None => "stored in SESSIONBUS_TRACE (set OTEL_EXPORTER_OTLP_ENDPOINT to export spans)".to_owned(),
    };
    table.add_row(vec!["traces".to_owned(), traces]);
    let dashboard = if args.dashboard {
        let dashboard_args = super::dashboard::DashboardArgs {
            listen: args.dashboard_listen,
            token: std::env::var("SESSIONBUS_DASHBOARD_TOKEN").ok(),
            jaeger_url: std::env::var("SESSIONBUS_JAEGER_URL").ok(),
        };
        let dashboard = super::dashboard::bind(client.clone(), connection, &dashboard_args).await?;
        let url = dashboard.url().map_err(|err| CliError::Other(err.to_string()))?;
        table.add_row(vec!["dashboard".to_owned(), url]);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(dashboard.serve(async move {
            let _ = stopped.await;
        }));
        Some((stop, task))
    } else {
        None
    };
    println!("sessionbus is up\n{table}");
    println!("try: NATS_URL={url} sessionbus demo   (Ctrl-C here to stop)");
    super::shutdown_signal().await;
    if let Some((stop, task)) = dashboard {
        let _ = stop.send(());
        if let Ok(Err(err)) = task.await {
            eprintln!("warning: {err}");
        }
    }
    println!("stopping: draining the worker");
    worker.shutdown(Duration::from_secs(args.worker.drain_timeout_secs)).await;
    if let Some(exporter) = exporter {
        let _ = stop_exporter.send(true);
        let _ = exporter.await;
    }
    if let Some(server) = server.as_mut() {
        println!("stopping: nats-server");
        server.stop();
    }
    println!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_monitoring_port_follows_the_client_port() {
        for (port, http) in [(4222, 8222), (14222, 18222), (0, 4000), (61535, 65535), (61536, 57536), (65535, 61535)] {
            assert_eq!(default_http_port(port), http, "{port}");
        }
    }

    #[test]
    fn a_bus_on_another_port_keeps_its_own_data() {
        assert!(default_data_dir(4222).ends_with("sessionbus"));
        assert!(default_data_dir(14222).ends_with("sessionbus-14222"));
    }
}
