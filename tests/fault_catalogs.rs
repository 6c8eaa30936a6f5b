//! Tool catalogs read back what was written, with real `sessionbus worker` processes.
//!
//! - Read-your-writes across servers: on a 3-node cluster, a worker on another server than
//!   the writer's (whose route from the stream leader is busy) never answers `unchanged`
//!   for a generation a write made stale, and a client's own write is seen by its next
//!   `shared_tool_catalog`, whichever worker serves it.
//! - Reconnect: a worker that lost its connection while a write happened elsewhere does
//!   not answer `unchanged` from what it knew before, and gets its cheap path back.
//! - Memory: 70,000 tool writes with no catalog call leave the worker's resident memory
//!   bounded (the tool events are drained as they arrive).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use bytes::Bytes;
use futures::{FutureExt as _, StreamExt as _};
use serde_json::{Value, json};
use sessionbus_api::{SessionStateService, ToolManifest, ToolState};
use sessionbus_nats::subjects::session_token;
use sessionbus_nats::{BusClient, BusClientConfig, Op, Subjects, TOOLS_BUCKET, TOOLS_STREAM};
use sessionbus_testkit::{NatsServer, subscribe_confirmed};

/// A tool state whose catalog says which step wrote it (`step <n>;`), padded to about
/// `pad` bytes.
fn tools_at(step: usize, pad: usize) -> ToolState {
    let mut state = ToolState::default();
    state.insert(ToolManifest::new("tool:step", "step", format!("step {step};{}", "x".repeat(pad))));
    state
}

/// The step a catalog was written at.
fn step_of(catalog: &[Value]) -> Option<usize> {
    let text = serde_json::to_string(catalog).ok()?;
    let start = text.find("step ")? + "step ".len();
    text[start..].split(';').next()?.parse().ok()
}

fn catalog_subject(session: &str) -> String {
    Subjects::default().session_op(&session_token(session).expect("session token"), Op::ToolCatalog)
}

/// One raw `tool_catalog {"if_generation": g}`: `(generation, unchanged, step)`.
async fn ask_catalog(nats: &async_nats::Client, session: &str, if_generation: u64) -> (u64, bool, Option<usize>) {
    let body = Bytes::from(json!({ "if_generation": if_generation }).to_string());
    let reply = support::raw_request(nats, &catalog_subject(session), HeaderMap::new(), body, Duration::from_secs(10))
        .await
        .expect("a tool_catalog reply");
    assert_eq!(reply.code, None, "tool_catalog failed: {:?}", reply.json());
    let body = reply.json();
    let generation = body["generation"].as_u64().expect("a generation");
    let unchanged = body["unchanged"].as_bool().unwrap_or(false);
    let step = body["tools"].as_array().and_then(|tools| step_of(tools));
    (generation, unchanged, step)
}

fn config() -> BusClientConfig {
    BusClientConfig::default().with_attempts(10)
}

/// Pushes `MIB` MiB of other traffic from `source`'s server to the subscriber behind
/// `catalogs.load.>`, so whatever that server sends along the same route next waits
/// behind it.
async fn load_route(source: &async_nats::Client) {
    const MIB: usize = 8;
    let chunk = Bytes::from(vec![b'.'; 1024 * 1024]);
    for _ in 0..MIB {
        source.publish("catalogs.load.bytes", chunk.clone()).await.expect("publish load");
    }
    source.flush().await.expect("flush load");
}

/// Read-your-writes through two workers on different servers of a 3-node cluster. Worker
/// A is on n1, which leads the tools stream; worker B on n2. Before each write the route
/// n1 -> n2 is loaded with other traffic, so the write's tool event reaches n2 late. After
/// each acknowledged write, every read sees the writer's generation, whichever worker
/// serves it (the queue group picks A or B at random; both are checked to have served
/// reads):
/// - another client's `tool_catalog {"if_generation": <previous>}`, 4 times per write;
/// - another client's `shared_tool_catalog` (its cache holds the previous catalog);
/// - the writer's own `shared_tool_catalog` (writes alternate between a client on n1 and
///   one on n3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_catalog_read_after_a_tool_write_sees_the_writers_generation_through_any_server() {
    const STEPS: usize = 24;
    /// `if_generation` reads per step (each reaches A or B).
    const READS: usize = 4;
    let cluster = support::cluster().await;
    let a = support::worker(&cluster.url(0), &["--replicas", "3"]).await;
    let b = support::worker(&cluster.url(1), &["--replicas", "3"]).await;
    let admin = cluster.client_to(0).await.expect("connect");
    assert!(cluster.move_stream_leader(&admin, TOOLS_STREAM, 0).await, "n1 leads the tools stream");

    // Core NATS picks a queue member at random, remote or local: calls from any client
    // reach A or B.
    let on_n1 = support::connect(&cluster.url(0)).await;
    let on_n2 = support::connect(&cluster.url(1)).await;
    let pinned_writer = BusClient::new(on_n1.clone(), config());
    let reader = BusClient::new(on_n2.clone(), config());
    let roaming_writer = support::bus(&cluster.url(2), config()).await;
    support::wait_ready(&roaming_writer).await;

    // The route load's subscriber on n2; a probe confirms n1 forwards to it.
    let sink = support::connect(&cluster.url(1)).await;
    let mut load = sink.subscribe("catalogs.load.>").await.expect("subscribe");
    sink.flush().await.expect("flush");
    let sink_replies = sink.clone();
    let drained = tokio::spawn(async move {
        let mut bytes = 0u64;
        while let Some(message) = load.next().await {
            bytes += message.payload.len() as u64;
            if let Some(reply) = message.reply {
                let _ = sink_replies.publish(reply, Bytes::new()).await;
            }
        }
        bytes
    });
    support::bounded("n1 forwarding to n2's load subscriber", Duration::from_secs(30), async {
        while tokio::time::timeout(Duration::from_millis(500), on_n1.request("catalogs.load.probe", Bytes::new()))
            .await
            .map_or(true, |reply| reply.is_err())
        {}
    })
    .await;

    let session = support::new_id();
    let mut generation = pinned_writer.apply_tool_state(&session, tools_at(0, 0)).await.expect("first write");
    let first = reader.shared_tool_catalog(&session).await.expect("catalog");
    assert_eq!(step_of(&first), Some(0));
    let own = roaming_writer.shared_tool_catalog(&session).await.expect("catalog");
    assert_eq!(step_of(&own), Some(0));

    let mut stale_if_generation = Vec::new();
    let mut stale_other_client = Vec::new();
    let mut stale_own_read = Vec::new();
    for step in 1..=STEPS {
        let writer = if step % 2 == 0 { &pinned_writer } else { &roaming_writer };
        let previous = generation;
        load_route(&on_n1).await;
        let mut state = tools_at(step, 0);
        state.generation = previous;
        generation = writer.apply_tool_state(&session, state).await.expect("write");

        for _ in 0..READS {
            let (answered, unchanged, seen) = ask_catalog(&on_n2, &session, previous).await;
            if unchanged || answered != generation || seen != Some(step) {
                stale_if_generation.push(json!({ "step": step, "written": generation, "answered": answered,
                    "unchanged": unchanged }));
            }
        }
        let catalog = reader.shared_tool_catalog(&session).await.expect("catalog");
        if step_of(&catalog) != Some(step) {
            stale_other_client.push(json!({ "step": step, "seen_step": step_of(&catalog) }));
        }
        let catalog = writer.shared_tool_catalog(&session).await.expect("catalog");
        if step_of(&catalog) != Some(step) {
            stale_own_read.push(json!({ "step": step, "seen_step": step_of(&catalog) }));
        }
    }
    drop(sink);
    drained.abort();
    let served = catalog_requests_per_worker(&admin).await;
    support::report(
        "catalogs_read_your_writes",
        json!({
            "steps": STEPS,
            "route_load_mib_per_step": 8,
            "stale_if_generation_answers": stale_if_generation,
            "stale_other_client_catalogs": stale_other_client,
            "stale_own_catalogs": stale_own_read,
            "tool_catalog_requests_per_worker": served,
        }),
    );
    support::keep_worker_logs("catalogs_read_your_writes", &[&a, &b]);
    assert!(served.len() == 2 && served.iter().all(|n| *n > 0), "both workers served catalog reads: {served:?}");
    assert!(stale_if_generation.is_empty(), "answered from a stale generation: {stale_if_generation:?}");
    assert!(stale_other_client.is_empty(), "another client read a stale catalog: {stale_other_client:?}");
    assert!(stale_own_read.is_empty(), "a writer read a catalog older than its own write: {stale_own_read:?}");
}

/// How many `tool_catalog` requests each worker served (from `$SRV.STATS`, one reply per
/// worker), once both answered.
async fn catalog_requests_per_worker(nats: &async_nats::Client) -> Vec<u64> {
    let inbox = nats.new_inbox();
    let mut replies = nats.subscribe(inbox.clone()).await.expect("subscribe");
    nats.publish_with_reply("$SRV.STATS.sessionbus", inbox, Bytes::new()).await.expect("publish");
    let mut served = Vec::new();
    while served.len() < 2 {
        let Ok(Some(reply)) = tokio::time::timeout(Duration::from_secs(10), replies.next()).await else { break };
        let stats: Value = serde_json::from_slice(&reply.payload).unwrap_or(Value::Null);
        let endpoints = stats["endpoints"].as_array().cloned().unwrap_or_default();
        let catalog = endpoints.iter().find(|endpoint| endpoint["name"] == "tool_catalog");
        served.push(catalog.and_then(|endpoint| endpoint["num_requests"].as_u64()).unwrap_or(0));
    }
    served
}

/// A worker whose server restarted while a write went through another worker does not
/// answer `unchanged` from the generation it knew before; once reconnected it answers an
/// unchanged catalog without a JetStream read again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnected_worker_does_not_answer_unchanged_from_what_it_knew_before() {
    let mut server = NatsServer::start().expect("start nats-server");
    let worker = support::worker(&server.url(), &[]).await;
    let reader = support::bus(&server.url(), config()).await;
    support::wait_ready(&reader).await;
    let session = support::new_id();
    let before = reader.apply_tool_state(&session, tools_at(1, 0)).await.expect("write");
    assert_eq!(step_of(&reader.shared_tool_catalog(&session).await.expect("catalog")), Some(1));
    assert_eq!(ask_catalog(reader.nats(), &session, before).await, (before, true, None), "unchanged, cheaply");

    // The worker misses a write: frozen while its server restarts and another worker
    // takes the write.
    worker.stop().expect("SIGSTOP the worker");
    server.restart().expect("restart nats-server");
    let mut other = support::worker(&server.url(), &[]).await;
    let writer = support::bus(&server.url(), config()).await;
    support::wait_ready(&writer).await;
    let mut state = tools_at(2, 0);
    state.generation = before;
    let after = writer.apply_tool_state(&session, state).await.expect("write through the other worker");
    other.kill();
    worker.cont().expect("SIGCONT the worker");
    let reconnected_at = Instant::now();
    support::bounded("the worker serving again", Duration::from_secs(30), async {
        loop {
            match reader.ping().await {
                Ok(pong) if pong.worker_id == worker.id() => return,
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await;

    let first = ask_catalog(reader.nats(), &session, before).await;
    let catalog = reader.shared_tool_catalog(&session).await.expect("catalog");

    // The cheap path comes back: an unchanged catalog answered with no JetStream read
    // (the read would reach this connection before the reply: the worker sends it first).
    let nats = reader.nats().clone();
    let mut reads =
        subscribe_confirmed(&nats, format!("$JS.API.STREAM.MSG.GET.{TOOLS_STREAM}")).await.expect("subscribe");
    let mut answers = Vec::new();
    let cheap = support::bounded("an unchanged catalog without a read", Duration::from_secs(20), async {
        loop {
            let answer = ask_catalog(&nats, &session, after).await;
            let mut read = false;
            while let Some(Some(_)) = reads.next().now_or_never() {
                read = true;
            }
            answers.push(json!({ "generation": answer.0, "unchanged": answer.1, "read": read }));
            if answer.1 && !read {
                return answers.len();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    support::report(
        "catalogs_reconnect",
        json!({
            "generation_before": before,
            "generation_written_elsewhere": after,
            "first_answer_for_the_old_generation": { "generation": first.0, "unchanged": first.1, "step": first.2 },
            "shared_tool_catalog_step": step_of(&catalog),
            "requests_until_unchanged_without_a_read": cheap,
            "seconds_since_sigcont": reconnected_at.elapsed().as_secs_f64(),
        }),
    );
    support::keep_worker_logs("catalogs_reconnect", &[&worker]);
    assert_eq!(first, (after, false, Some(2)), "the reconnected worker answered from what it knew before");
    assert_eq!(step_of(&catalog), Some(2), "a cached catalog older than the write");
}

/// 70,000 tool writes with no catalog call: the worker's resident memory stays bounded.
/// The writes go straight to the tools bucket (as other workers' writes arrive): the
/// worker under test serves no request while they are written, it only receives their
/// events (about 4 KiB each, 280 MiB in all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seventy_thousand_tool_writes_without_a_catalog_call_keep_the_worker_bounded() {
    const WRITES: usize = 70_000;
    const SESSIONS: usize = 700;
    const PAD: usize = 4096;
    const IN_FLIGHT: usize = 512;
    /// What the tool events may add to the worker's resident memory.
    const BOUND_MIB: u64 = 16;
    let server = NatsServer::start().expect("start nats-server");
    let worker = support::worker(&server.url(), &[]).await;
    let client = support::bus(&server.url(), config()).await;
    support::wait_ready(&client).await;
    let nats = support::connect(&server.url()).await;
    let js = async_nats::jetstream::new(nats.clone());
    let sessions: Vec<String> = (0..SESSIONS).map(|_| support::new_id()).collect();
    let subjects: Vec<String> = sessions
        .iter()
        .map(|session| format!("$KV.{TOOLS_BUCKET}.{}", session_token(session).expect("token")))
        .collect();

    let baseline = worker.rss_kib().expect("the worker's VmRSS");
    let peak = Arc::new(AtomicU64::new(baseline));
    let sampling = Arc::new(AtomicBool::new(true));
    let pid = worker.pid();
    let sampler = tokio::spawn({
        let peak = Arc::clone(&peak);
        let sampling = Arc::clone(&sampling);
        async move {
            while sampling.load(Ordering::Relaxed) {
                if let Some(rss) = rss_kib(pid) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });

    let started = Instant::now();
    let mut acks = futures::stream::FuturesUnordered::new();
    for step in 0..WRITES {
        let payload = Bytes::from(serde_json::to_vec(&tools_at(step, PAD)).expect("json"));
        let ack = js.publish(subjects[step % SESSIONS].clone(), payload).await.expect("publish a tool write");
        acks.push(ack.into_future());
        while acks.len() >= IN_FLIGHT {
            acks.next().await.expect("an ack").expect("a stored tool write");
        }
    }
    while let Some(ack) = acks.next().await {
        ack.expect("a stored tool write");
    }
    let written_in = started.elapsed();
    // The events reach the worker after the acks; watch its memory for a while longer.
    let after_writes = worker.rss_kib().expect("VmRSS");
    tokio::time::sleep(Duration::from_secs(3)).await;
    sampling.store(false, Ordering::Relaxed);
    sampler.await.expect("sampler");
    let settled = worker.rss_kib().expect("VmRSS");
    let peak = peak.load(Ordering::Relaxed).max(after_writes).max(settled);

    // The worker still answers with the last write of a session.
    let last = WRITES - 1;
    let catalog = client.shared_tool_catalog(&sessions[last % SESSIONS]).await.expect("catalog");
    support::report(
        "catalogs_memory",
        json!({
            "writes": WRITES,
            "sessions": SESSIONS,
            "event_bytes_each": serde_json::to_vec(&tools_at(0, PAD)).expect("json").len(),
            "written_in_secs": written_in.as_secs_f64(),
            "worker_rss_kib": { "before": baseline, "after_writes": after_writes, "settled": settled, "peak": peak },
            "peak_growth_mib": peak.saturating_sub(baseline) / 1024,
            "bound_mib": BOUND_MIB,
        }),
    );
    support::keep_worker_logs("catalogs_memory", &[&worker]);
    assert_eq!(step_of(&catalog), Some(last), "the catalog of the last write");
    assert!(
        peak.saturating_sub(baseline) < BOUND_MIB * 1024,
        "the worker's resident memory grew by {} MiB (from {baseline} KiB to {peak} KiB) over {WRITES} tool writes",
        peak.saturating_sub(baseline) / 1024
    );
}

/// `VmRSS` of process `pid`, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| line.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse().ok())
}
