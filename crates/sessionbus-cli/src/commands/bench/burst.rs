//! A burst of trace records, as a lash turn emits them: many records of one session at
//! once, none waiting for the one before. The bus batches them (README.md "Batched
//! trace records"); the raw reference publishes the same records to JetStream,
//! pipelined, every ack awaited.

use std::future::Future;
use std::time::Instant;

use async_nats::HeaderMap;
use serde_json::json;
use sessionbus_api::{SessionGraphService as _, TraceContext, TraceEvent};

use super::fixture::Fixture;
use super::measure::Samples;
use super::report::Row;

/// The bus / raw records-per-second ratio the issue asks of batched trace records.
const BURST_TARGET: f64 = 1.0;

/// One burst: `records` calls of `emit` started at once; the records per second of the
/// whole burst and each record's latency (from the burst's start to its own answer).
async fn burst<F, Fut>(records: usize, emit: F) -> Result<(f64, Vec<u64>), String>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let started = Instant::now();
    let timed = (0..records).map(|i| {
        let record = emit(i);
        async move {
            record.await?;
            Ok::<_, String>(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX))
        }
    });
    let latencies = futures::future::try_join_all(timed).await?;
    Ok((records as f64 / started.elapsed().as_secs_f64().max(1e-9), latencies))
}

/// `rounds` bursts of `records` each, raw and bus alternating; one row: the median
/// records per second of each side, and the p50 of every record's latency.
pub async fn trace_burst(fixture: &Fixture, records: usize, rounds: usize) -> Result<Row, String> {
    let raw = |i: usize| async move {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("burst-{i}-{}", uuid::Uuid::new_v4().simple()).as_str());
        fixture.raw.publish(&fixture.raw_trace_subject, headers, fixture.trace_record.clone()).await.map(drop)
    };
    let bus = |i: usize| async move {
        let context = TraceContext { session_id: Some(fixture.small.clone()), ..TraceContext::default() };
        let event = TraceEvent::Custom { name: "burst".into(), payload: json!({"i": i}), extra: Default::default() };
        fixture.client.emit_trace_event(context, event).await.map_err(|e| format!("emit_trace_event burst: {e}"))
    };
    let (mut raw_rates, mut bus_rates, mut raw_latency, mut bus_latency) = (vec![], vec![], vec![], vec![]);
    for _ in 0..rounds.max(1) {
        let (rate, latencies) = burst(records, raw).await?;
        raw_rates.push(rate);
        raw_latency.extend(latencies);
        let (rate, latencies) = burst(records, bus).await?;
        bus_rates.push(rate);
        bus_latency.extend(latencies);
    }
    let median = |rates: &mut Vec<f64>| {
        rates.sort_by(f64::total_cmp);
        rates[rates.len() / 2]
    };
    let (raw_per_s, bus_per_s) = (median(&mut raw_rates), median(&mut bus_rates));
    raw_latency.sort_unstable();
    bus_latency.sort_unstable();
    let (raw_p50, bus_p50) = (Samples(raw_latency).percentile_ms(50.0), Samples(bus_latency).percentile_ms(50.0));
    let ratio = bus_per_s / raw_per_s.max(1e-9);
    Ok(Row::growth(
        format!("emit_trace_event, bursts of {records} records of one session (records/s; p50 of a record)"),
        (format!("{raw_per_s:.0}/s (p50 {raw_p50:.2} ms)"), format!("{bus_per_s:.0}/s (p50 {bus_p50:.2} ms)")),
        ratio,
        &format!(">= {BURST_TARGET:.2}"),
        ratio >= BURST_TARGET,
        json!({
            "name": "trace_burst", "records": records, "rounds": rounds,
            "raw_per_s": raw_per_s, "bus_per_s": bus_per_s, "throughput_ratio": ratio,
            "raw_p50_ms": raw_p50, "bus_p50_ms": bus_p50, "added_p50_ms": bus_p50 - raw_p50,
        }),
    ))
}
