//! OTLP export configured by the standard `OTEL_*` variables, and export with retry.
//!
//! The SDK's batch processor drops a batch whose export failed; sessionbus calls
//! [`SpanExporter::export`] itself and retries, so a collector outage delays spans
//! instead of losing them.

use std::time::Duration;

use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

/// `OTEL_EXPORTER_OTLP_ENDPOINT`: where every signal goes.
pub const ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`: where traces go (overrides [`ENDPOINT_VAR`]).
pub const TRACES_ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";

/// Why an OTLP exporter could not be built.
#[derive(Debug, thiserror::Error)]
#[error("could not build the OTLP exporter: {0}")]
pub struct ExporterError(String);

/// True when an OTLP endpoint is configured (and `OTEL_TRACES_EXPORTER` is not `none`).
pub fn otlp_configured() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let disabled = std::env::var("OTEL_TRACES_EXPORTER").is_ok_and(|v| v.trim() == "none");
    !disabled && (set(ENDPOINT_VAR) || set(TRACES_ENDPOINT_VAR))
}

/// The resource of this process: `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES`, with
/// `default_service_name` when no service name is configured.
pub fn resource(default_service_name: &str) -> Resource {
    let builder = Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.trim().is_empty()) {
        builder.build()
    } else {
        builder.with_service_name(default_service_name.to_owned()).build()
    }
}

/// An OTLP/HTTP (protobuf) span exporter. `endpoint` overrides the `OTEL_*` variables
/// (a base URL such as `http://collector:4318`; `/v1/traces` is appended).
pub fn otlp_exporter(
    default_service_name: &str,
    endpoint: Option<&str>,
) -> Result<impl SpanExporter + 'static, ExporterError> {
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_timeout(Duration::from_secs(10));
    if let Some(endpoint) = endpoint {
        builder = builder.with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')));
    }
    let mut exporter = builder.build().map_err(|err| ExporterError(err.to_string()))?;
    exporter.set_resource(&resource(default_service_name));
    Ok(exporter)
}

/// Exports `batch`, retrying failures with a backoff (up to `max_pause` between tries)
/// for at most `attempts` tries (`None`: until it succeeds). Returns the batch when it
/// gave up.
pub async fn export_with_retry<E: SpanExporter>(
    exporter: &E,
    batch: Vec<SpanData>,
    attempts: Option<u32>,
    max_pause: Duration,
) -> Result<(), Vec<SpanData>> {
    if batch.is_empty() {
        return Ok(());
    }
    let backoff = sessionbus_api::sync::Backoff::new(Duration::from_millis(100), max_pause);
    let mut tried = 0u32;
    loop {
        match exporter.export(batch.clone()).await {
            Ok(()) => return Ok(()),
            Err(err) => {
                tried += 1;
                if attempts.is_some_and(|max| tried >= max) {
                    tracing::warn!(%err, spans = batch.len(), tried, "giving up exporting spans");
                    return Err(batch);
                }
                let pause = backoff.pause(tried);
                tracing::warn!(%err, spans = batch.len(), ?pause, "span export failed; retrying");
                tokio::time::sleep(pause).await;
            }
        }
    }
}
