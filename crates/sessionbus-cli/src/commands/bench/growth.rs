//! How costs grow: with a session's history (snapshot of a large graph, append cost)
//! and with the number of sessions a worker has touched (its memory).

use std::time::Instant;

use serde_json::json;
use sessionbus_api::{
    AppendSessionNodesRequest, SessionAppendNode, SessionCreateRequest, SessionGraphService as _,
    SessionLifecycleService as _, SessionStateService as _,
};
use sessionbus_launch::WorkerProcess;
use sessionbus_nats::{BusClient, JetStreamHost};

use super::fixture::{failed, one_message};
use super::measure::{sequential, throughput};
use super::report::Row;

/// How many nodes one append of the history writes.
const HISTORY_BATCH: usize = 500;

/// Sessions of 10, 1,000 and `history` nodes, written by `setup` (so the worker has
/// never seen them): the first and second snapshot of the largest, then the p50 of
/// `iterations` appends at each size. Two rows.
pub async fn history(
    client: &BusClient,
    setup: &JetStreamHost,
    history: usize,
    iterations: usize,
) -> Result<Vec<Row>, String> {
    let mut sessions = Vec::new();
    for size in [10usize, 1000, history.max(1000)] {
        let session = format!("bench-history-{size}-{}", uuid::Uuid::new_v4().simple());
        setup.create_session(SessionCreateRequest::root(Some(session.clone()))).await.map_err(failed("create"))?;
        let mut written = 0;
        while written < size {
            let batch = (size - written).min(HISTORY_BATCH);
            let nodes = (0..batch)
                .map(|k| SessionAppendNode::message("User", format!("history node {}", written + k)))
                .collect();
            setup
                .append_session_nodes(&session, AppendSessionNodesRequest { nodes, requires_ancestor_node_id: None })
                .await
                .map_err(failed("history"))?;
            written += batch;
        }
        sessions.push((size, session));
    }
    let (_, large) = &sessions[sessions.len() - 1];
    let started = Instant::now();
    let snapshot = client.snapshot_session(large).await.map_err(failed("snapshot"))?;
    let first_ms = started.elapsed().as_secs_f64() * 1000.0;
    let started = Instant::now();
    client.snapshot_session(large).await.map_err(failed("snapshot"))?;
    let second_ms = started.elapsed().as_secs_f64() * 1000.0;
    let ratio = second_ms / first_ms.max(1e-9);
    let snapshot_row = Row::growth(
        format!("snapshot_session of a {}-node graph: first / second", snapshot.session_graph.nodes.len()),
        (format!("{first_ms:.1} ms"), format!("{second_ms:.1} ms")),
        ratio,
        "second < first",
        second_ms < first_ms,
        json!({"name": "snapshot_large", "first_ms": first_ms, "second_ms": second_ms, "second_to_first_ratio": ratio}),
    );

    let mut per_history = Vec::new();
    for (size, session) in &sessions {
        client.append_session_nodes(session, one_message("warm".into())).await.map_err(failed("append"))?;
        let samples = sequential(iterations, |i| async move {
            client
                .append_session_nodes(session, one_message(format!("more {i}")))
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        })
        .await?;
        per_history.push((*size, samples.percentile_ms(50.0)));
    }
    let (small_size, small_p50) = per_history[0];
    let (big_size, big_p50) = per_history[per_history.len() - 1];
    let ratio = big_p50 / small_p50.max(1e-9);
    let by_history: Vec<_> = per_history.iter().map(|(s, p)| json!({"history": s, "p50_ms": p})).collect();
    let append_row = Row::growth(
        format!("append p50 at history {big_size} vs {small_size}"),
        (format!("{small_p50:.3} ms"), format!("{big_p50:.3} ms")),
        ratio,
        "<= 1.25",
        ratio <= 1.25,
        json!({"name": "append_history", "p50_ms_by_history": by_history, "history_ratio": ratio}),
    );
    Ok(vec![snapshot_row, append_row])
}

/// The worker process's resident memory after touching (create + append) a fifth of
/// `sessions` sessions and after all of them, `in_flight` at a time.
pub async fn memory(
    client: &BusClient,
    worker: &WorkerProcess,
    sessions: usize,
    in_flight: usize,
) -> Result<Row, String> {
    let rss_mib = || worker.rss_kib().unwrap_or(0) as f64 / 1024.0;
    let baseline = rss_mib();
    let touch = |i: usize| async move {
        let session = format!("bench-touch-{i}");
        client.create_session(SessionCreateRequest::root(Some(session.clone()))).await.map_err(|e| e.to_string())?;
        client.append_session_nodes(&session, one_message("hello".into())).await.map(drop).map_err(|e| e.to_string())
    };
    let fifth = (sessions / 5).max(1);
    throughput(fifth, in_flight, touch).await?;
    let at_fifth = rss_mib();
    throughput(sessions.saturating_sub(fifth), in_flight, |i| touch(i + fifth)).await?;
    let at_all = rss_mib();
    let ratio = at_all / at_fifth.max(1e-9);
    Ok(Row::growth(
        format!("worker RSS: {fifth} vs {sessions} sessions touched (MiB)"),
        (format!("{at_fifth:.1}"), format!("{at_all:.1}")),
        ratio,
        "<= 1.50",
        ratio <= 1.5,
        json!({"name": "worker_memory", "baseline_mib": baseline, "mib_after_fifth": at_fifth, "mib_after_all": at_all, "sessions": sessions, "memory_ratio": ratio}),
    ))
}
