//! The `sessionbus` binary against real nats-servers: up, worker, demo, sessions,
//! watch, status.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sessionbus_testkit::{NatsServer, WorkerConfig, WorkerProcess, free_port};

mod support;

const BIN: &str = env!("CARGO_BIN_EXE_sessionbus");

/// A child process killed on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sessionbus(url: &str) -> Command {
    let mut command = Command::new(BIN);
    command.env("NATS_URL", url).env_remove("OTEL_EXPORTER_OTLP_ENDPOINT").env("RUST_LOG", "warn");
    command
}

fn run(url: &str, args: &[&str]) -> Output {
    sessionbus(url).args(args).output().expect("run sessionbus")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `sessionbus setup`, then a `sessionbus worker` on the layout it made, ready.
async fn start_worker(url: &str) -> WorkerProcess {
    let setup = run(url, &["setup"]);
    assert!(setup.status.success(), "setup: {}", String::from_utf8_lossy(&setup.stderr));
    assert!(stdout(&setup).contains("SESSIONBUS_STATE"), "setup lists what it made: {}", stdout(&setup));
    WorkerProcess::start_with(url, &WorkerConfig::default().with_binary(BIN).without_setup())
        .await
        .expect("a ready worker")
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status().expect("kill");
    assert!(status.success());
}

#[test]
fn up_serves_and_stops_cleanly_leaving_no_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port().expect("a free port");
    let dashboard_port = free_port().expect("a free port");
    let data_dir = dir.path().join("data");
    let mut child = Command::new(BIN)
        .args(["up", "--port", &port.to_string(), "--http-port", "0", "--dashboard", "--dashboard-listen"])
        .arg(format!("127.0.0.1:{dashboard_port}"))
        .arg("--data-dir")
        .arg(&data_dir)
        .env_remove("NATS_URL")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env("NATS_SERVER_BIN", sessionbus_testkit::find_nats_server().expect("nats-server installed"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn up");
    let (banner, mut out) = support::up_banner(&mut child);
    assert!(banner.contains(&format!("nats://127.0.0.1:{port}")), "{banner}");

    let url = format!("nats://127.0.0.1:{port}");
    let status = run(&url, &["status", "--ping"]);
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let pinged = runtime.block_on(async {
        let client = async_nats::connect(&url).await.expect("connect");
        client.request("$SRV.PING.sessionbus", bytes::Bytes::new()).await
    });
    assert!(pinged.is_ok(), "$SRV.PING must answer: {pinged:?}");
    // `--dashboard` prints its URL and serves the page there.
    let dashboard_url = format!("http://127.0.0.1:{dashboard_port}/");
    assert!(banner.contains(&dashboard_url), "{banner}");
    let (status, page) = sessionbus_testkit::monitoring_get(dashboard_port, "/").expect("GET the dashboard");
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("sessionbus dashboard"), "{page}");

    signal(child.id(), "INT");
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "`up` did not stop within 30 s of Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut rest = String::new();
    let _ = out.read_to_string(&mut rest);
    assert!(exit.success(), "{exit}: {rest}");
    assert!(rest.contains("stopped"), "{rest}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "the embedded nats-server is still listening");
    assert!(std::net::TcpStream::connect(("127.0.0.1", dashboard_port)).is_err(), "the dashboard is still listening");
    let leftover = Command::new("pgrep").arg("-f").arg(data_dir.to_string_lossy().as_ref()).output().expect("pgrep");
    assert!(leftover.stdout.is_empty(), "processes left behind: {}", stdout(&leftover));
}

#[test]
fn demo_sessions_watch_and_status_against_a_worker() {
    let server = NatsServer::start().expect("nats-server");
    let url = server.url();
    let _worker = tokio::runtime::Runtime::new().expect("runtime").block_on(start_worker(&url));

    let mut watch = sessionbus(&url)
        .args(["watch", "--json", "--count", "30"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn watch");
    // `watch` prints its banner to stderr once subscribed.
    let mut banner = String::new();
    BufReader::new(watch.stderr.take().expect("stderr")).read_line(&mut banner).expect("banner");
    assert!(banner.contains("watching"), "{banner}");

    let demo =
        run(&url, &["demo", "--sessions", "2", "--children", "1", "--turns", "2", "--toggles", "4", "--appends", "4"]);
    let summary = stdout(&demo);
    assert!(demo.status.success(), "{summary}\n{}", String::from_utf8_lossy(&demo.stderr));
    assert!(summary.contains(", 0 errors,"), "{summary}");
    assert!(summary.contains("start_turn") && summary.contains("p99 ms"), "{summary}");

    let watch = Running(watch);
    let mut watched = String::new();
    let mut child = watch;
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.0.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "watch did not see 30 events");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.0.stdout.take().expect("stdout").read_to_string(&mut watched).expect("read");
    let events: Vec<serde_json::Value> = watched.lines().map(|l| serde_json::from_str(l).expect("json line")).collect();
    assert_eq!(events.len(), 30);
    assert!(events.iter().all(|e| e["session_id"].as_str().is_some_and(|s| s.starts_with("demo-"))));
    assert!(events.iter().any(|e| e["kind"] == "meta") && events.iter().any(|e| e["kind"] == "tools"));

    let listed = run(&url, &["sessions", "--json"]);
    let page: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("json");
    let sessions = page["sessions"].as_array().expect("a page of sessions");
    assert_eq!(sessions.len(), 4, "2 roots with 1 child each");
    let child_session = sessions.iter().find(|s| s["parent_session_id"].is_string()).expect("a child");
    assert_eq!(child_session["status"], "closed");
    assert_eq!(child_session["turn_index"], 2);
    let id = child_session["session_id"].as_str().expect("id");
    let shown = run(&url, &["sessions", "show", id]);
    let shown = stdout(&shown);
    assert!(shown.contains("closed") && shown.contains("graph nodes"), "{shown}");
    // Its turns, one table row each, from the session's ledger.
    let turn_rows: Vec<&str> = shown.lines().filter(|l| l.contains("turn-0") || l.contains("turn-1")).collect();
    assert_eq!(turn_rows.len(), 2, "{shown}");
    assert!(turn_rows.iter().all(|row| row.contains("completed") && row.contains("finished")), "{shown}");
    assert!(shown.contains("2 turns; no more"), "{shown}");
    let paged = stdout(&run(&url, &["sessions", "show", id, "--limit", "1", "--json"]));
    let paged: serde_json::Value = serde_json::from_str(&paged).expect("json");
    assert_eq!(paged["turns"]["turns"][0]["turn_id"], "turn-0", "{paged}");
    let next = paged["turns"]["next_after"].as_str().expect("a second page");
    let rest = stdout(&run(&url, &["sessions", "show", id, "--limit", "1", "--after", next, "--json"]));
    let rest: serde_json::Value = serde_json::from_str(&rest).expect("json");
    assert_eq!(rest["turns"]["turns"][0]["turn_id"], "turn-1", "{rest}");
    assert!(rest["turns"]["next_after"].is_null(), "{rest}");
    let table = stdout(&run(&url, &["sessions"]));
    assert!(table.contains("4 sessions"), "{table}");

    let status = run(&url, &["status"]);
    let status = stdout(&status);
    assert!(status.contains("1 workers"), "{status}");
    assert!(status.contains("start_turn") && status.contains("append_nodes"), "{status}");
    let unknown = run(&url, &["sessions", "show", "no-such-session"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown session `no-such-session`"));
}

#[test]
fn commands_without_a_bus_explain_what_to_do() {
    let port = free_port().expect("a free port");
    let url = format!("nats://127.0.0.1:{port}");
    let output = run(&url, &["status"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("could not connect") && stderr.contains("sessionbus up"), "{stderr}");

    let server = NatsServer::start().expect("nats-server");
    let output = run(&server.url(), &["status", "--ping"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("start one with `sessionbus worker`"), "{stderr}");
}

#[test]
fn the_dashboard_refuses_a_public_address_without_a_token_before_connecting() {
    let output = Command::new(BIN)
        .args(["dashboard", "--listen", "0.0.0.0:18080"])
        .env("NATS_URL", "nats://127.0.0.1:1")
        .env_remove("SESSIONBUS_DASHBOARD_TOKEN")
        .output()
        .expect("run dashboard");
    assert!(!output.status.success());
    let errors = String::from_utf8_lossy(&output.stderr);
    assert!(
        errors.contains("refusing to listen on 0.0.0.0:18080 without a token") && errors.contains("--token"),
        "{errors}"
    );
}

#[test]
fn every_subcommand_has_help() {
    for sub in [
        "up",
        "setup",
        "worker",
        "demo",
        "sessions",
        "purge",
        "cancel",
        "watch",
        "status",
        "dashboard",
        "bench",
        "exporter",
        "credentials",
    ] {
        let output = Command::new(BIN).args([sub, "--help"]).output().expect("help");
        assert!(output.status.success(), "{sub}");
        assert!(stdout(&output).contains("Usage: sessionbus"), "{sub}");
    }
}

/// `sessionbus cancel` from another process stops a turn on the worker process that
/// runs it: the turn's caller gets `Stopped(Cancelled)` with what the turn had, long
/// before the turn would have ended; a second cancel says the turn had finished.
#[test]
fn cancel_stops_a_turn_running_on_a_worker_process() {
    use sessionbus_api::{
        SessionCreateRequest, SessionLifecycleService as _, SessionTurnRequest, TurnInput, TurnOutcome, TurnStop,
    };
    use sessionbus_nats::{BusClient, BusClientConfig};

    let server = NatsServer::start().expect("nats-server");
    let url = server.url();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let _worker = runtime.block_on(async {
        let setup = run(&url, &["setup"]);
        assert!(setup.status.success(), "setup: {}", String::from_utf8_lossy(&setup.stderr));
        // A turn of this worker takes ten minutes unless it is cancelled.
        let slow = ["--executor", "slow", "--turn-delay-ms", "600000"];
        WorkerProcess::start_with(&url, &WorkerConfig::default().with_binary(BIN).without_setup().with_args(slow))
            .await
            .expect("a ready worker")
    });
    runtime.block_on(async {
        let client = BusClient::new(async_nats::connect(&url).await.expect("connect"), BusClientConfig::default());
        let session = format!("cancel-{}", uuid::Uuid::new_v4().simple());
        client.create_session(SessionCreateRequest::root(Some(session.clone()))).await.expect("create");
        let request = SessionTurnRequest::for_turn(&session, "t1", TurnInput::text("hello")).expect("request");
        let turn = tokio::spawn({
            let client = client.clone();
            async move { client.start_turn(request).await }
        });
        let started = Instant::now();
        loop {
            let cancel = run(&url, &["cancel", &session, "t1"]);
            assert!(cancel.status.success(), "{}", String::from_utf8_lossy(&cancel.stderr));
            let said = stdout(&cancel);
            if said.contains("cancelling turn t1") {
                break;
            }
            assert!(said.contains("has no turn t1"), "before the turn starts, the cancel says so: {said}");
            assert!(started.elapsed() < Duration::from_secs(20), "the turn never showed as running");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let result = tokio::time::timeout(Duration::from_secs(30), turn)
            .await
            .expect("the cancelled turn ends long before its ten minutes")
            .expect("join")
            .expect("the turn's result");
        assert_eq!(result.outcome, TurnOutcome::Stopped(TurnStop::Cancelled));
        assert_eq!(result.state.turn_index, 1);
        assert_eq!(result.state.session_graph.nodes.len(), 1, "the user's message it had is committed");
        let again = stdout(&run(&url, &["cancel", &session, "t1"]));
        assert!(again.contains("had already finished (stopped)"), "{again}");
    });
}

#[test]
fn a_worker_without_the_layout_says_to_run_setup() {
    let server = NatsServer::start().expect("nats-server");
    let output = run(&server.url(), &["worker"]);
    assert!(!output.status.success(), "a worker must not start without the layout");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("run `sessionbus setup`"), "the error says what to do: {stderr}");
}

/// `sessionbus bench` still runs end to end (tiny counts, one node): every measurement
/// BENCHMARKS.md reports is in its JSON, with a finite positive ratio. The figures of a
/// run this small mean nothing; this keeps the bench from rotting.
/// `bench --scale N` stores N sessions and reports every op at 10 sessions and at N,
/// cold and hot, the registry at its base and at N, and the servers' memory and disk.
#[test]
fn bench_scale_reports_every_op_with_few_and_with_many_sessions() {
    let output = Command::new(BIN)
        .args(["bench", "--scale", "150", "--iterations", "20", "--json"])
        .env("NATS_SERVER_BIN", sessionbus_testkit::find_nats_server().expect("nats-server installed"))
        .env_remove("NATS_URL")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run sessionbus bench --scale");
    assert!(output.status.success(), "bench --scale failed: {}", String::from_utf8_lossy(&output.stderr));
    let text = stdout(&output);
    let report: serde_json::Value = serde_json::from_str(text.lines().last().expect("a JSON line")).expect("JSON");
    assert_eq!(report["sessions"], 150);
    let ops: Vec<&str> = report["ops"].as_array().expect("ops").iter().filter_map(|op| op["op"].as_str()).collect();
    assert_eq!(ops, ["snapshot", "tool_state", "tool_catalog", "append_nodes", "start_turn"]);
    for op in report["ops"].as_array().expect("ops") {
        for key in ["p50_ms_at_10", "p50_ms_cold", "p50_ms_hot", "cold_ratio", "hot_ratio"] {
            assert!(op[key].as_f64().is_some_and(|value| value > 0.0), "{key} of {op}");
        }
    }
    assert_eq!(report["registry_base_sessions"], 150, "fewer than 1,000 sessions: the registry's base is N");
    assert!(report["sessions_first_page_ms"]["at_n"].as_f64().is_some_and(|ms| ms > 0.0), "{report}");
    assert!(report["nats_server"]["disk_bytes"].as_u64().is_some_and(|bytes| bytes > 0), "{report}");
    assert!(report["worker_rss_mib"].as_f64().is_some_and(|mib| mib > 0.0), "{report}");
}

#[test]
fn bench_runs_every_measurement_with_tiny_counts() {
    let args = [
        "bench",
        "--json",
        "--iterations",
        "10",
        "--throughput-calls",
        "40",
        "--in-flight",
        "4",
        "--sessions",
        "20",
        "--history",
        "20",
        "--out",
    ];
    let out = tempfile::tempdir().expect("tempdir");
    let output = Command::new(BIN)
        .args(args)
        .arg(out.path())
        .env("NATS_SERVER_BIN", sessionbus_testkit::find_nats_server().expect("nats-server installed"))
        .env_remove("NATS_URL")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run sessionbus bench");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "sessionbus bench failed: {stderr}");
    let text = stdout(&output);
    let report: serde_json::Value =
        serde_json::from_str(text.lines().last().expect("a JSON line")).expect("the bench prints JSON");
    assert_eq!(report["setup"], "one node, R1");
    assert_eq!(report["iterations"], 10);
    let results = report["results"].as_array().expect("results");
    let mut ratios = std::collections::BTreeMap::new();
    for result in results {
        let name = result["name"].as_str().expect("a name").to_owned();
        for (key, value) in result.as_object().expect("an object") {
            if key.contains("ratio") {
                let ratio = value.as_f64().unwrap_or(f64::NAN);
                assert!(ratio.is_finite() && ratio > 0.0, "{name}.{key} = {value}");
                ratios.insert(format!("{name}.{key}"), ratio);
            }
        }
    }
    let expected = [
        "tool_state.p50_ratio",
        "tool_state.throughput_ratio",
        "snapshot_session.p50_ratio",
        "snapshot_session.throughput_ratio",
        "tool_catalog.p50_ratio",
        "tool_catalog.throughput_ratio",
        "apply_tool_state.p50_ratio",
        "apply_tool_state.throughput_ratio",
        "append_session_nodes.p50_ratio",
        "append_session_nodes.throughput_ratio",
        "shared_tool_catalog (unchanged).p50_ratio",
        "shared_tool_catalog (unchanged).throughput_ratio",
        "emit_trace_event.p50_ratio",
        "emit_trace_event.throughput_ratio",
        "start_turn.p50_ratio",
        "start_turn.throughput_ratio",
        "tool_state.worker_to_server_cpu_ratio",
        "snapshot_session.worker_to_server_cpu_ratio",
        "tool_catalog.worker_to_server_cpu_ratio",
        "apply_tool_state.worker_to_server_cpu_ratio",
        "append_session_nodes.worker_to_server_cpu_ratio",
        "shared_tool_catalog (unchanged).worker_to_server_cpu_ratio",
        "emit_trace_event.worker_to_server_cpu_ratio",
        "start_turn.worker_to_server_cpu_ratio",
        "trace_burst.throughput_ratio",
        "snapshot_large.second_to_first_ratio",
        "append_history.history_ratio",
        "worker_memory.memory_ratio",
    ];
    let names: Vec<&str> = ratios.keys().map(String::as_str).collect();
    let mut expected_sorted = expected.to_vec();
    expected_sorted.sort();
    assert_eq!(names, expected_sorted, "the bench's measurements changed");
    assert!(results.iter().any(|r| r["name"] == "echo" && r["raw_p50_ms"].as_f64().is_some_and(|v| v > 0.0)));
    // Every scenario reports the CPU its calls cost the worker and the server.
    for result in results.iter().filter(|r| r.get("worker_to_server_cpu_ratio").is_some()) {
        for key in ["worker_cpu_us_per_call", "server_cpu_us_per_bus_call", "server_cpu_us_per_raw_call"] {
            assert!(result[key].as_f64().is_some_and(|us| us > 0.0), "{}.{key} = {}", result["name"], result[key]);
        }
    }
    // `--out` keeps the run's results in a file of its own.
    let files: Vec<_> = std::fs::read_dir(out.path()).expect("out dir").map(|e| e.expect("entry").path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
    assert!(name.starts_with("bench-r1-") && name.ends_with("Z.json"), "{name}");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&files[0]).expect("read")).expect("json");
    assert_eq!(saved, report, "the saved results are the printed ones");
}

/// `sessionbus demo --executor lash` offline: an embedded bus whose worker runs real lash
/// turns on the shipped scripted model (built with `--features lash`, as CI builds it).
#[cfg(feature = "lash")]
#[test]
fn the_offline_lash_demo_runs_real_agent_turns_without_errors() {
    let output = Command::new(BIN)
        .args(["demo", "--executor", "lash", "--sessions", "2", "--children", "1", "--turns", "2", "--json"])
        .env_remove("NATS_URL")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run sessionbus demo");
    let summary = stdout(&output);
    assert!(output.status.success(), "{summary}\n{}", String::from_utf8_lossy(&output.stderr));
    let summary: serde_json::Value = serde_json::from_str(summary.trim()).expect("a JSON summary");
    assert_eq!(summary["errors"], 0, "{summary}");
    let turns = summary["ops"].as_array().and_then(|ops| ops.iter().find(|op| op["op"] == "start_turn")).cloned();
    assert_eq!(turns.expect("turns ran")["calls"], 8, "2 roots and their children, 2 turns each");
}

/// Without the `lash` feature, `--executor lash` says how to get it.
#[cfg(not(feature = "lash"))]
#[test]
fn a_worker_asked_for_lash_without_the_feature_says_how_to_rebuild() {
    let server = NatsServer::start().expect("nats-server");
    let output = run(&server.url(), &["worker", "--setup", "--executor", "lash"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("built without lash: rebuild with --features lash"), "{stderr}");
}
