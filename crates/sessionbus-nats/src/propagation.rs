//! W3C trace context (`traceparent`, `tracestate`) over NATS headers, and the
//! messaging attributes of bus spans (OpenTelemetry messaging conventions).

use async_nats::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::{SpanKind, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue, global};
use opentelemetry_sdk::propagation::TraceContextPropagator;

/// The instrumentation scope of every span sessionbus makes.
pub const TRACER: &str = "sessionbus";

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

/// Reads headers by name, case-insensitively (NATS header names are not normalised).
struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(name, _)| AsRef::<str>::as_ref(*name).eq_ignore_ascii_case(key))
            .and_then(|(_, values)| values.first())
            .map(|value| value.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| AsRef::<str>::as_ref(name)).collect()
    }
}

/// Writes `cx`'s span context into `headers` (nothing when it has no valid span).
pub fn inject(cx: &Context, headers: &mut HeaderMap) {
    TraceContextPropagator::new().inject_context(cx, &mut HeaderInjector(headers));
}

/// The remote context carried by `headers` (empty when none).
pub fn extract(headers: Option<&HeaderMap>) -> Context {
    match headers {
        Some(headers) => TraceContextPropagator::new().extract(&HeaderExtractor(headers)),
        None => Context::new(),
    }
}

/// The `traceparent` of `cx`'s span, when it has a valid one.
pub fn traceparent_of(cx: &Context) -> Option<String> {
    let mut headers = HeaderMap::new();
    inject(cx, &mut headers);
    headers.get("traceparent").map(|v| v.as_str().to_owned())
}

/// Starts a span of a bus message: `kind` client for a call, server for its handling.
/// Without installed telemetry no span is built and `parent` is passed through, so an
/// incoming trace context still propagates.
pub fn messaging_span(
    parent: &Context,
    kind: SpanKind,
    operation: &str,
    template: impl FnOnce() -> String,
    subject: &str,
) -> Context {
    if !sessionbus_otel::telemetry::installed() {
        return parent.clone();
    }
    let template = template();
    let tracer = global::tracer(TRACER);
    let operation_type = if kind == SpanKind::Server { "process" } else { "send" };
    let span = tracer
        .span_builder(format!("{operation_type} {template}"))
        .with_kind(kind)
        .with_attributes([
            KeyValue::new("messaging.system", "nats"),
            KeyValue::new("messaging.destination.name", subject.to_owned()),
            KeyValue::new("messaging.destination.template", template),
            KeyValue::new("messaging.operation.name", operation.to_owned()),
            KeyValue::new("messaging.operation.type", operation_type),
        ])
        .start_with_context(&tracer, parent);
    parent.with_span(span)
}

/// Starts a client span for a JetStream API call, child of the current context (the
/// current context itself without installed telemetry).
pub fn jetstream_span(operation: &'static str, subject: &str) -> Context {
    let parent = Context::current();
    if !sessionbus_otel::telemetry::installed() {
        return parent;
    }
    let tracer = global::tracer(TRACER);
    let span = tracer
        .span_builder(format!("jetstream {operation}"))
        .with_kind(SpanKind::Client)
        .with_attributes([
            KeyValue::new("messaging.system", "nats"),
            KeyValue::new("messaging.destination.name", subject.to_owned()),
            KeyValue::new("messaging.operation.name", operation),
            KeyValue::new("messaging.operation.type", "send"),
        ])
        .start_with_context(&tracer, &parent);
    parent.with_span(span)
}

/// Marks `cx`'s span as failed with `message`.
pub fn record_error(cx: &Context, message: &str) {
    cx.span().set_status(opentelemetry::trace::Status::error(message.to_owned()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extraction_ignores_header_name_case() {
        let mut headers = HeaderMap::new();
        headers.insert("TraceParent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        let cx = extract(Some(&headers));
        let span = cx.span();
        let context = span.span_context();
        assert!(context.is_valid());
        assert_eq!(context.trace_id().to_string(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(traceparent_of(&cx).as_deref(), Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"));
    }

    #[test]
    fn no_headers_no_context() {
        assert!(!extract(None).span().span_context().is_valid());
        assert_eq!(traceparent_of(&Context::new()), None);
    }
}
