//! Shared helpers of the fault tests: clusters and worker processes, bus clients, raw
//! requests, leader reads of whole subjects, and the figures each test reports.

#![allow(dead_code)]

pub mod audit;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_nats::jetstream::stream::{RawMessageBuilder, RawMessageErrorKind};
use async_nats::{Client, HeaderMap};
use bytes::Bytes;
use serde_json::Value;
use sessionbus_nats::{BusClient, BusClientConfig};
use sessionbus_testkit::{NatsCluster, WorkerConfig, WorkerProcess};

/// True when the long soak variants were asked for (`SESSIONBUS_SOAK=1`).
pub fn soak() -> bool {
    std::env::var("SESSIONBUS_SOAK").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// `quick` normally, `long` under `SESSIONBUS_SOAK=1`.
pub fn scaled<T>(quick: T, long: T) -> T {
    if soak() { long } else { quick }
}

/// A 3-node cluster, formed within a bound.
pub async fn cluster() -> NatsCluster {
    tokio::time::timeout(Duration::from_secs(120), NatsCluster::start())
        .await
        .expect("the cluster forms within 120 s")
        .expect("start a 3-node cluster")
}

/// A `sessionbus worker` against `nats_url` with `args`, ready. Its log level is
/// `SESSIONBUS_WORKER_LOG` when set (e.g. `sessionbus_nats=debug`), else `warn`.
pub async fn worker(nats_url: &str, args: &[&str]) -> WorkerProcess {
    let log = std::env::var("SESSIONBUS_WORKER_LOG").unwrap_or_else(|_| "warn".to_owned());
    let config = WorkerConfig::default().with_args(args.iter().copied()).with_env("RUST_LOG", log);
    WorkerProcess::start_with(nats_url, &config)
        .await
        .unwrap_or_else(|err| panic!("start sessionbus worker {args:?}: {err}"))
}

/// Connects a client to every URL of `nats_url` (comma separated), reconnecting forever.
pub async fn connect(nats_url: &str) -> Client {
    let servers: Vec<async_nats::ServerAddr> =
        nats_url.split(',').map(|url| url.parse().expect("a server address")).collect();
    tokio::time::timeout(
        Duration::from_secs(20),
        async_nats::ConnectOptions::new().max_reconnects(None).connect(servers.as_slice()),
    )
    .await
    .expect("connect in time")
    .expect("connect")
}

/// A BusClient with its own connection.
pub async fn bus(nats_url: &str, config: BusClientConfig) -> BusClient {
    BusClient::new(connect(nats_url).await, config)
}

/// A fresh UUID string.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Waits until a worker answers `ping` through `client`.
pub async fn wait_ready(client: &BusClient) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.ping().await {
            Ok(_) => return,
            Err(err) if Instant::now() > deadline => panic!("no worker answered ping: {err}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// One reply of a raw request: its error code (from `Nats-Service-Error-Code`), its
/// status header and body.
#[derive(Debug, Clone)]
pub struct RawReply {
    pub code: Option<u16>,
    pub headers: Option<HeaderMap>,
    pub payload: Bytes,
}

impl RawReply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).unwrap_or(Value::Null)
    }
}

/// A raw request on `subject`, with an idle timeout; `None` when nothing came back.
pub async fn raw_request(
    client: &Client,
    subject: &str,
    headers: HeaderMap,
    payload: Bytes,
    timeout: Duration,
) -> Result<RawReply, async_nats::RequestError> {
    let request = async_nats::Request::new().payload(payload).headers(headers).timeout(Some(timeout));
    let message = client.send_request(subject.to_owned(), request).await?;
    let code = message
        .headers
        .as_ref()
        .and_then(|h| h.get(sessionbus_nats::wire::SERVICE_ERROR_CODE))
        .and_then(|v| v.as_str().trim().parse().ok());
    Ok(RawReply { code, headers: message.headers, payload: message.payload })
}

/// A message read back from a stream (through the leader, `$JS.API.STREAM.MSG.GET`).
#[derive(Debug, Clone)]
pub struct Stored {
    pub seq: u64,
    pub subject: String,
    pub headers: BTreeMap<String, String>,
    pub payload: Vec<u8>,
}

impl Stored {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).unwrap_or(Value::Null)
    }
}

/// One leader read: the first message at or after `seq` on `filter` (`None` when none).
pub async fn get_next(client: &Client, stream: &str, filter: &str, seq: u64) -> Option<Stored> {
    get(client, stream, &format!("the next message on {filter} from {seq}"), |get| {
        get.sequence(seq.max(1)).next_by_subject(filter)
    })
    .await
}

/// The message with sequence `seq` of `stream`, read from the leader.
pub async fn get_seq(client: &Client, stream: &str, seq: u64) -> Option<Stored> {
    get(client, stream, &format!("sequence {seq}"), |get| get.sequence(seq)).await
}

/// The last message on `subject`, read from the leader.
pub async fn get_last(client: &Client, stream: &str, subject: &str) -> Option<Stored> {
    get(client, stream, &format!("the last message on {subject}"), |get| get.last_by_subject(subject)).await
}

/// One read through async-nats's raw message getter (`$JS.API.STREAM.MSG.GET`, answered
/// by the leader), asked again while the stream has no leader.
async fn get(
    client: &Client,
    stream: &str,
    what: &str,
    ask: impl Fn(RawMessageBuilder) -> RawMessageBuilder,
) -> Option<Stored> {
    let context = async_nats::jetstream::ContextBuilder::new().timeout(Duration::from_secs(2)).build(client.clone());
    let handle = context.get_stream_no_info(stream).await.expect("a stream name");
    for _ in 0..40 {
        match ask(handle.raw_message_builder()).send().await {
            Ok(message) => {
                return Some(Stored {
                    seq: message.sequence,
                    subject: message.subject.to_string(),
                    headers: message
                        .headers
                        .iter()
                        .filter_map(|(name, values)| Some((name.to_string(), values.last()?.to_string())))
                        .collect(),
                    payload: message.payload.to_vec(),
                });
            }
            Err(err) if err.kind() == RawMessageErrorKind::NoMessageFound => return None,
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    panic!("could not read {what} of {stream} through the leader");
}

/// Every message on `filter` in `stream`, in order, read from the leader.
pub async fn read_all(client: &Client, stream: &str, filter: &str) -> Vec<Stored> {
    let mut out = Vec::new();
    let mut next = 1;
    while let Some(message) = get_next(client, stream, filter, next).await {
        next = message.seq + 1;
        out.push(message);
    }
    out
}

/// `(messages, last_sequence)` of `stream`.
pub async fn stream_state(client: &Client, stream: &str) -> (u64, u64) {
    for _ in 0..40 {
        let request = async_nats::Request::new().payload(Bytes::new()).timeout(Some(Duration::from_secs(2)));
        if let Ok(reply) = client.send_request(format!("$JS.API.STREAM.INFO.{stream}"), request).await {
            let info: Value = serde_json::from_slice(&reply.payload).expect("STREAM.INFO answers JSON");
            if info.get("error").is_none() {
                return (
                    info["state"]["messages"].as_u64().unwrap_or(0),
                    info["state"]["last_seq"].as_u64().unwrap_or(0),
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("no info for stream {stream}");
}

/// Records a test's figures: printed, and written to
/// `target/tmp/reliability/<name>.json` (the last run) and to
/// `target/tmp/reliability/history/<name>-<UTC time>.json` (one file per run, kept), for
/// RELIABILITY.md and `scripts/repeat-fault-tests`.
pub fn report(name: &str, figures: Value) {
    let text = serde_json::to_string_pretty(&figures).expect("json");
    println!("reliability figures of {name}:\n{text}");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("reliability");
    if std::fs::create_dir_all(dir.join("history")).is_ok() {
        let _ = std::fs::write(dir.join(format!("{name}.json")), &text);
        let _ = std::fs::write(
            dir.join("history").join(format!("{name}-{}.json", sessionbus_api::clock::now_basic_utc())),
            &text,
        );
    }
}

/// Keeps the workers' logs in `target/tmp/reliability/<name>-worker-<n>.log` when
/// `SESSIONBUS_WORKER_LOG` asked for them.
pub fn keep_worker_logs(name: &str, workers: &[&WorkerProcess]) {
    if std::env::var_os("SESSIONBUS_WORKER_LOG").is_none() {
        return;
    }
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("reliability");
    if std::fs::create_dir_all(&dir).is_ok() {
        for (n, worker) in workers.iter().enumerate() {
            let _ = std::fs::write(dir.join(format!("{name}-worker-{n}.log")), worker.stderr());
        }
    }
}

/// Runs `future` with a bound, panicking with `what` when it takes longer.
pub async fn bounded<T>(what: &str, limit: Duration, future: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(limit, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what} did not finish within {limit:?}"),
    }
}
