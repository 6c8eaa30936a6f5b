//! Hostile input and overload against a real `sessionbus worker` process.
//!
//! - Hostile input: for every op, 1,000 generated malformed or random bodies, plus
//!   hostile ids (control characters, CR/LF, NUL, non-canonical encodings, over-long):
//!   every reply is a typed error within the timeout (400 for malformed input, 404 for
//!   odd but valid ids), the worker never dies, and its memory stays flat: after the
//!   first op's 1,000 bodies, its resident memory grows by at most 8 MiB over the other
//!   10,000-odd requests (a leak of 1 KiB per request would add 10 MiB).
//! - Overload: 20 turns at once against a worker that runs 2: exactly 2 are accepted and
//!   complete, exactly 18 are refused with 503 "overloaded" (each refusal's latency is
//!   measured and reported, not asserted: a loaded machine can stretch it), memory grows
//!   by at most 8 MiB, and every refused turn, retried, then completes.

mod support;

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use sessionbus_api::{ErrorKind, SessionCreateRequest, SessionLifecycleService, SessionTurnRequest, TurnInput};
use sessionbus_nats::wire::SERVICE_ERROR_CODE;
use sessionbus_nats::{BusClient, BusClientConfig, Op, Subjects};
use sessionbus_testkit::{NatsServer, WorkerProcess};

/// How much a worker's resident memory may grow and still count as flat.
const FLAT_KIB: u64 = 8 * 1024;

/// A small deterministic generator (xorshift64*), so a failure can be replayed.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// A malformed body of kind `i % 6`: random bytes, truncated JSON, wrong types, deep
/// nesting, a huge unterminated string, raw control characters inside strings.
fn malformed(random: &mut Random, i: usize) -> Vec<u8> {
    let valid = br#"{"turn_id":"t","input":{"items":[{"type":"text","text":"hi"}]},"nodes":[],"tool_names":["x"],"present":true}"#;
    match i % 6 {
        0 => {
            let len = 1 + random.below(255);
            let mut bytes = random.bytes(len);
            bytes[0] = b'!'; // never a JSON value's first byte
            bytes
        }
        1 => {
            let cut = 1 + random.below(valid.len() - 1);
            valid[..cut].to_vec()
        }
        2 => [&b"123"[..], b"\"text\"", b"true", b"null", b"{\"after_seq\": \"x\"", b"{\"nodes\": {\"kind\": 7"]
            [random.below(6)]
        .to_vec(),
        3 => {
            let depth = 200 + random.below(5000);
            let mut nested = vec![b'['; depth];
            nested.extend(std::iter::repeat_n(b']', depth));
            nested
        }
        4 => {
            let mut huge = b"{\"x\": \"".to_vec();
            huge.extend(std::iter::repeat_n(b'a', 50_000 + random.below(500_000)));
            huge
        }
        _ => {
            let mut body = b"{\"turn_id\": \"a".to_vec();
            body.push([0u8, b'\r', b'\n', 0x07, 0x1b][random.below(5)]);
            body.extend_from_slice(b"b\"}");
            body
        }
    }
}

fn token(id: &[u8]) -> String {
    format!("={}", URL_SAFE_NO_PAD.encode(id))
}

async fn code_of(raw: &async_nats::Client, subject: String, body: Vec<u8>) -> String {
    let reply = tokio::time::timeout(Duration::from_secs(10), raw.request(subject.clone(), Bytes::from(body)))
        .await
        .unwrap_or_else(|_| panic!("no reply within 10 s on {subject}"))
        .unwrap_or_else(|err| panic!("request on {subject} failed: {err}"));
    let code = reply.headers.as_ref().and_then(|h| h.get(SERVICE_ERROR_CODE)).map(|v| v.as_str().to_owned());
    code.unwrap_or_else(|| {
        panic!("{subject} answered without an error code: {:?}", String::from_utf8_lossy(&reply.payload))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_gets_typed_errors_and_the_worker_s_memory_stays_flat() {
    let server = NatsServer::start().expect("nats-server");
    let mut worker = WorkerProcess::start(&server.url(), &[]).await.expect("worker");
    let raw = server.client().await.expect("connect");
    let subjects = Subjects::default();
    // Warm the worker up before the first memory reading.
    for _ in 0..50 {
        code_of(&raw, subjects.session_op("warm-up", Op::Snapshot), b"{}".to_vec()).await;
    }
    let before = worker.rss_kib().expect("rss");
    let seed = 0x5e55_10b0_u64;
    let mut random = Random(seed);
    let mut targets: Vec<String> = Op::ALL.into_iter().map(|op| subjects.session_op("chat-42", op)).collect();
    targets.push(subjects.create());
    let mut tried = 0usize;
    // Resident memory after each op's bodies: the first reading is the baseline of "flat".
    let mut rss_kib = Vec::new();
    for subject in &targets {
        let bodies: Vec<Vec<u8>> = (0..1000).map(|i| malformed(&mut random, i)).collect();
        // In flight at once: below the worker's turn limit (32), so no call is refused as overload.
        for chunk in bodies.chunks(25) {
            let codes =
                futures::future::join_all(chunk.iter().map(|body| code_of(&raw, subject.clone(), body.clone()))).await;
            for (code, body) in codes.iter().zip(chunk) {
                assert_eq!(code, "400", "{subject} with {:?}", String::from_utf8_lossy(&body[..body.len().min(60)]));
            }
            tried += chunk.len();
        }
        rss_kib.push(worker.rss_kib().expect("rss"));
    }
    // Hostile ids: control characters, CR/LF, NUL, over-long, non-canonical spellings.
    let hostile: Vec<Vec<u8>> = vec![
        b"line\r\nbreak".to_vec(),
        b"nul\0id".to_vec(),
        b"bell\x07".to_vec(),
        b"tab\tid".to_vec(),
        vec![b'x'; 300],
        b"   ".to_vec(),
        vec![0xff, 0xfe],
        b"chat42".to_vec(), // plain ids have one spelling: their own
    ];
    for id in &hostile {
        for op in Op::ALL {
            assert_eq!(code_of(&raw, subjects.session_op(&token(id), op), b"{}".to_vec()).await, "400", "{id:?} {op}");
            tried += 1;
        }
    }
    let answered_400 = tried;
    // Odd but valid ids are sessions nobody created.
    let mut answered_404 = 0;
    for id in ["a.b", "*", ">", "with space", "ünïcödé", "sessionbus.v1.session.x.close"] {
        assert_eq!(
            code_of(&raw, subjects.session_op(&token(id.as_bytes()), Op::Snapshot), b"{}".to_vec()).await,
            "404",
            "{id}"
        );
        tried += 1;
        answered_404 += 1;
    }
    assert!(worker.is_running(), "the worker died: {}", worker.stderr());
    let client = BusClient::new(server.client().await.expect("connect"), BusClientConfig::default());
    client.ping().await.expect("the worker still serves");
    let after = worker.rss_kib().expect("rss");
    let baseline = rss_kib[0];
    let mib = |kib: u64| format!("{:.1}", kib as f64 / 1024.0);
    println!(
        "hostile input: {tried} requests, all typed errors; worker RSS {} MiB before, {} MiB after the first op, \
         {} MiB at the end; after each op (MiB): {:?} (seed {seed:#x})",
        mib(before),
        mib(baseline),
        mib(after),
        rss_kib.iter().map(|k| mib(*k)).collect::<Vec<_>>()
    );
    support::report(
        "hostile_input",
        serde_json::json!({
            "requests": tried,
            "answered_400": answered_400,
            "answered_404": answered_404,
            "rss_before_mib": before as f64 / 1024.0,
            "rss_after_first_op_mib": baseline as f64 / 1024.0,
            "rss_at_end_mib": after as f64 / 1024.0,
            "rss_after_each_op_mib": rss_kib.iter().map(|k| *k as f64 / 1024.0).collect::<Vec<_>>(),
            "flat_bound_mib": FLAT_KIB / 1024,
            "seed": seed,
        }),
    );
    assert!(
        after <= baseline + FLAT_KIB,
        "worker memory is not flat: {} MiB after the first op, {} MiB at the end (allowed: +{} MiB)",
        mib(baseline),
        mib(after),
        FLAT_KIB / 1024
    );
    assert!(!worker.stderr().contains("panicked"), "{}", worker.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_beyond_the_turn_limit_is_refused_and_every_turn_then_completes() {
    let server = NatsServer::start().expect("nats-server");
    let mut worker = WorkerProcess::start(
        &server.url(),
        &["--turns", "2", "--concurrency", "4", "--executor", "slow", "--turn-delay-ms", "2000"],
    )
    .await
    .expect("worker");
    let config = BusClientConfig::default().with_attempts(1);
    let client = BusClient::new(server.client().await.expect("connect"), config);
    let sessions: Vec<String> = (0..20).map(|i| format!("overload-{i}-{}", uuid::Uuid::new_v4().simple())).collect();
    for session in &sessions {
        client.create_session(SessionCreateRequest::root(Some(session.clone()))).await.expect("create");
    }
    let before = worker.rss_kib().expect("rss");
    // 10x the worker's turn limit (2) at once.
    let calls = sessions.iter().map(|session| {
        let client = client.clone();
        let request = SessionTurnRequest::for_turn(session, "t1", TurnInput::text("busy?")).expect("turn");
        async move {
            let started = Instant::now();
            let result = client.start_turn(request).await;
            (result, started.elapsed())
        }
    });
    let results =
        tokio::time::timeout(Duration::from_secs(60), futures::future::join_all(calls)).await.expect("bounded");
    let (mut accepted, mut refused) = (0, 0);
    let mut refusal_latencies = Vec::new();
    for (result, elapsed) in &results {
        match result {
            Ok(turn) => {
                assert_eq!(turn.state.turn_index, 1);
                accepted += 1;
            }
            Err(err) => {
                assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
                assert!(err.message().contains("overloaded"), "{err}");
                refusal_latencies.push(*elapsed);
                refused += 1;
            }
        }
    }
    let after = worker.rss_kib().expect("rss");
    refusal_latencies.sort();
    let slowest_refusal = refusal_latencies.last().copied().unwrap_or_default();
    let median_refusal = refusal_latencies.get(refusal_latencies.len() / 2).copied().unwrap_or_default();
    println!(
        "overload: 20 turns at once against a limit of 2: {accepted} accepted and completed, {refused} refused with 503 \
         (refusal latency: median {median_refusal:?}, slowest {slowest_refusal:?}); worker RSS {:.1} -> {:.1} MiB",
        before as f64 / 1024.0,
        after as f64 / 1024.0
    );
    assert_eq!(accepted, 2, "the worker runs exactly its limit of 2 turns");
    assert_eq!(refused, 18, "the other 18 are refused");
    assert!(
        after <= before + FLAT_KIB,
        "worker memory grew from {before} KiB to {after} KiB under overload (allowed: +{} MiB)",
        FLAT_KIB / 1024
    );
    assert!(worker.is_running());
    // Once the load is gone, every refused turn goes through: retried two at a time (the
    // worker's limit), each completes as the session's first turn.
    let retry = BusClient::new(server.client().await.expect("connect"), BusClientConfig::default());
    let refused_sessions: Vec<&String> =
        sessions.iter().zip(&results).filter(|(_, (result, _))| result.is_err()).map(|(session, _)| session).collect();
    let mut completed = 0;
    for pair in refused_sessions.chunks(2) {
        let turns = pair.iter().map(|session| {
            let request = SessionTurnRequest::for_turn(session.as_str(), "t1", TurnInput::text("busy?")).expect("turn");
            let retry = retry.clone();
            async move { retry.start_turn(request).await }
        });
        for turn in
            tokio::time::timeout(Duration::from_secs(30), futures::future::join_all(turns)).await.expect("bounded")
        {
            assert_eq!(turn.expect("a refused turn, retried, completes").state.turn_index, 1);
            completed += 1;
        }
    }
    assert_eq!(completed, 18, "every refused turn completed when retried");
    support::report(
        "overload",
        serde_json::json!({
            "turns_at_once": 20,
            "turn_limit": 2,
            "accepted_and_completed": accepted,
            "refused_503": refused,
            "refused_then_completed": completed,
            "refusal_latency_median_ms": median_refusal.as_secs_f64() * 1000.0,
            "refusal_latency_slowest_ms": slowest_refusal.as_secs_f64() * 1000.0,
            "rss_before_mib": before as f64 / 1024.0,
            "rss_after_mib": after as f64 / 1024.0,
        }),
    );
}
