//! This process's own spans (bus calls, worker handling, JetStream operations), exported
//! over OTLP by a tokio task: the global tracer provider is set only when an OTLP
//! endpoint is configured, so without one every span is a no-op.

use std::time::Duration;

use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanProcessor};
use tokio::sync::mpsc;

use crate::export::{ExporterError, export_with_retry, otlp_configured, otlp_exporter};

/// Whether a tracer provider exporting somewhere is installed: callers skip building
/// spans (and their attributes) when nobody would receive them.
static INSTALLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// True while a [`Telemetry`] is installed in this process.
pub fn installed() -> bool {
    INSTALLED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Finished spans waiting for export; more are dropped (and counted) rather than
/// growing memory while a collector is down.
const QUEUE: usize = 16_384;
/// Spans per export call.
const BATCH: usize = 512;

/// Hands finished spans to the export task.
#[derive(Debug)]
struct ChannelProcessor {
    spans: mpsc::Sender<SpanData>,
}

impl SpanProcessor for ChannelProcessor {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if self.spans.try_send(span).is_err() {
            tracing::debug!("span queue full or closed: a span was dropped");
        }
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }
}

/// The installed tracer provider and its export task. [`Telemetry::shutdown`] exports
/// what is queued before returning.
pub struct Telemetry {
    provider: SdkTracerProvider,
    task: tokio::task::JoinHandle<()>,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl Telemetry {
    /// Installs the global tracer provider exporting to the `OTEL_*` endpoint; `None`
    /// when no endpoint is configured. Must run inside a tokio runtime.
    pub fn from_env(default_service_name: &str) -> Result<Option<Self>, ExporterError> {
        if !otlp_configured() {
            return Ok(None);
        }
        Self::to_endpoint(default_service_name, None).map(Some)
    }

    /// Installs the global tracer provider exporting to `endpoint` (or the `OTEL_*` one).
    pub fn to_endpoint(default_service_name: &str, endpoint: Option<&str>) -> Result<Self, ExporterError> {
        let exporter = otlp_exporter(default_service_name, endpoint)?;
        let (sender, mut receiver) = mpsc::channel::<SpanData>(QUEUE);
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            loop {
                tokio::select! {
                    span = receiver.recv() => match span {
                        Some(span) => batch.push(span),
                        None => break,
                    },
                    _ = &mut stopped => break,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
                while batch.len() < BATCH {
                    match receiver.try_recv() {
                        Ok(span) => batch.push(span),
                        Err(_) => break,
                    }
                }
                if !batch.is_empty() {
                    let _ =
                        export_with_retry(&exporter, std::mem::take(&mut batch), Some(5), Duration::from_secs(2)).await;
                }
            }
            while let Ok(span) = receiver.try_recv() {
                batch.push(span);
            }
            let _ = export_with_retry(&exporter, batch, Some(3), Duration::from_secs(1)).await;
        });
        let provider = SdkTracerProvider::builder()
            .with_span_processor(ChannelProcessor { spans: sender })
            .with_resource(crate::export::resource(default_service_name))
            .build();
        opentelemetry::global::set_tracer_provider(provider.clone());
        INSTALLED.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(Self { provider, task, stop })
    }

    /// Stops taking spans and exports the ones queued.
    pub async fn shutdown(self) {
        let Self { provider, task, stop } = self;
        INSTALLED.store(false, std::sync::atomic::Ordering::Relaxed);
        opentelemetry::global::set_tracer_provider(opentelemetry::trace::noop::NoopTracerProvider::new());
        let _ = provider.shutdown();
        let _ = stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
    }
}
