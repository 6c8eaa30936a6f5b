//! `sessionbus exporter`: trace records from `SESSIONBUS_TRACE` to OTLP spans.

use clap::Args;
use sessionbus_nats::jetstream::{TraceExporterConfig, run_trace_exporter};
use sessionbus_otel::export::{otlp_configured, otlp_exporter};

use crate::connect::{CliError, ConnectionArgs};

/// Options of `exporter`.
#[derive(Args, Debug, Clone)]
pub struct ExporterArgs {
    /// The durable consumer's name (exporters sharing it share the work).
    #[arg(long, default_value = "sessionbus-exporter")]
    pub consumer: String,
}

/// Starts the exporter as a task; it runs until `shutdown` fires.
pub async fn spawn(
    connection: &ConnectionArgs,
    client: async_nats::Client,
    args: &ExporterArgs,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, CliError> {
    if !otlp_configured() {
        return Err(CliError::Other(
            "no OTLP endpoint is configured: set OTEL_EXPORTER_OTLP_ENDPOINT (e.g. http://localhost:4318)".into(),
        ));
    }
    let exporter = otlp_exporter("sessionbus-exporter", None).map_err(|e| CliError::Other(e.to_string()))?;
    let config =
        TraceExporterConfig::default().with_subjects(connection.subjects()).with_consumer(args.consumer.clone());
    Ok(tokio::spawn(async move {
        let mut shutdown = shutdown;
        let stopped = async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        };
        match run_trace_exporter(client, exporter, config, stopped).await {
            Ok(stats) => tracing::info!(records = stats.records, spans = stats.spans, "trace exporter stopped"),
            Err(err) => tracing::error!(%err, "trace exporter failed"),
        }
    }))
}

/// Runs the exporter until Ctrl-C / SIGTERM.
pub async fn run(connection: &ConnectionArgs, args: ExporterArgs) -> Result<(), CliError> {
    let client = connection.connect("sessionbus-exporter").await?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = spawn(connection, client, &args, stopped).await?;
    println!("sessionbus exporter ready: SESSIONBUS_TRACE -> OTLP (Ctrl-C to stop)");
    super::shutdown_signal().await;
    let _ = stop.send(true);
    let _ = task.await;
    Ok(())
}
