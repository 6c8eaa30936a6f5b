//! `sessionbus dashboard` under `deploy/nats/accounts.conf`: the real binary as the
//! `dashboard` user against a real nats-server, a real worker (the `worker` user) and
//! data written by an application (`app_a`).
//!
//! - The dashboard's connection is the `dashboard` user in the DASHBOARD account, as
//!   the server itself reports it (monitoring `connz`).
//! - It can read what its pages need under those rights (the list, a session, a graph
//!   page, tools, workers, events), and every HTTP method on every route leaves the bus
//!   unchanged: every stream's message count and last sequence, and every stream's
//!   consumer count (the dashboard never creates one).
//! - The `dashboard` user's own connection is refused every write: each write op, each
//!   stream and bucket subject, the JetStream API's stream and consumer creation, and
//!   forged events and live output, each seen as a permission violation from the server.

mod auth;
mod support;

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::Client;
use auth::{Credentials, WAIT, connect, read, setup_as_admin};
use bytes::Bytes;
use serde_json::{Value, json};
use sessionbus_api::{
    AppendSessionNodesRequest, SessionAppendNode, SessionCreateRequest, SessionGraphService as _,
    SessionLifecycleService as _, SessionStateService as _, SessionTurnRequest, ToolManifest, ToolState, TurnInput,
};
use sessionbus_nats::jetstream::{INDEX_STREAM, SPANS_STREAM};
use sessionbus_nats::subjects::session_token;
use sessionbus_nats::{BusClient, BusClientConfig, STATE_STREAM, TOOLS_STREAM, TRACE_STREAM};
use sessionbus_testkit::{NatsServer, ServerConfig, free_port, monitoring_get, sessionbus_binary};

const STREAMS: [&str; 4] = [STATE_STREAM, TOOLS_STREAM, TRACE_STREAM, INDEX_STREAM];
const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// accounts.conf in a server with monitoring on a loopback port.
fn start_server() -> (NatsServer, Credentials, u16) {
    let credentials = Credentials::mint(&[]);
    let accounts = read("deploy/nats/accounts.conf");
    let mut extra = credentials.as_config_variables(&accounts);
    extra.push_str(&accounts);
    let http = free_port().expect("a free port");
    let server = NatsServer::start_with(ServerConfig::default().with_http_port(http).with_extra_config(extra))
        .expect("nats-server with accounts.conf");
    (server, credentials, http)
}

/// Every stream's (messages, last sequence, consumers), read as admin.
async fn bus_state(admin: &Client) -> BTreeMap<String, (u64, u64, u64)> {
    let mut state = BTreeMap::new();
    for stream in STREAMS.iter().copied().chain([SPANS_STREAM]) {
        let request = async_nats::Request::new().payload(Bytes::new()).timeout(Some(Duration::from_secs(2)));
        let Ok(reply) = admin.send_request(format!("$JS.API.STREAM.INFO.{stream}"), request).await else { continue };
        let info: Value = serde_json::from_slice(&reply.payload).expect("STREAM.INFO answers JSON");
        if info.get("error").is_some() {
            continue; // SESSIONBUS_SPANS exists only where the exporter ran.
        }
        let s = &info["state"];
        state.insert(
            stream.to_owned(),
            (
                s["messages"].as_u64().unwrap_or(0),
                s["last_seq"].as_u64().unwrap_or(0),
                s["consumer_count"].as_u64().unwrap_or(0),
            ),
        );
    }
    assert!(state.contains_key(STATE_STREAM) && state.contains_key(INDEX_STREAM), "streams read: {state:?}");
    state
}

/// One HTTP request; the status and body read within a second (the event stream never ends).
fn http(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the dashboard");
    stream.set_read_timeout(Some(Duration::from_secs(1))).expect("timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut response = Vec::new();
    let started = Instant::now();
    let mut chunk = [0u8; 8192];
    while started.elapsed() < Duration::from_secs(2) {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    (status, body)
}

/// The dashboard process; killed when dropped.
struct DashboardProcess(Child);

impl Drop for DashboardProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_reads_as_the_dashboard_user_and_no_request_to_it_changes_the_bus() {
    let (server, credentials, monitoring) = start_server();
    setup_as_admin(&server.url(), &credentials, 1);
    let worker = auth::worker_as_worker_user(&server, &credentials).await;
    let admin = connect(&server, &credentials, "admin", None).await.client;
    let app = connect(&server, &credentials, "app_a", Some("_INBOX_app_a")).await.client;
    let bus = BusClient::new(app, BusClientConfig::default());

    // Data for every page: a parent and a child, nodes, tools, a committed turn.
    let session = bus.create_session(SessionCreateRequest::root(None)).await.expect("create").session_id;
    let child = bus
        .create_session(SessionCreateRequest::child(None, &session, sessionbus_api::SessionStartPoint::Empty))
        .await
        .expect("child")
        .session_id;
    let mut tools = ToolState::default();
    tools.insert(ToolManifest::new("tool:bash", "bash", ""));
    bus.apply_tool_state(&session, tools).await.expect("tools");
    let nodes = (0..5).map(|n| SessionAppendNode::message("User", format!("message {n}"))).collect();
    bus.append_session_nodes(&session, AppendSessionNodesRequest { nodes, requires_ancestor_node_id: None })
        .await
        .expect("append");
    let turn = SessionTurnRequest::for_turn(&session, "t1", TurnInput::text("hello")).expect("turn");
    bus.start_turn(turn).await.expect("turn");

    // The real dashboard, as the dashboard user.
    let port = free_port().expect("a free port");
    let dashboard = DashboardProcess(
        Command::new(sessionbus_binary().expect("the sessionbus binary"))
            .args(["dashboard", "--listen", &format!("127.0.0.1:{port}")])
            .env("NATS_URL", server.url())
            .env("NATS_NKEY", credentials.seed_file("dashboard"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sessionbus dashboard"),
    );
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the dashboard did not listen on {port}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Server side: the connection named sessionbus-dashboard is the dashboard user's.
    let (status, connz) = monitoring_get(monitoring, "/connz?auth=true").expect("connz");
    assert_eq!(status, 200);
    let connz: Value =
        serde_json::from_str(connz.split_once("\r\n\r\n").map_or(&connz, |(_, b)| b)).expect("connz JSON");
    let ours: Vec<&Value> = connz["connections"]
        .as_array()
        .expect("connections")
        .iter()
        .filter(|c| c["name"] == "sessionbus-dashboard")
        .collect();
    assert_eq!(ours.len(), 1, "one dashboard connection: {connz}");
    assert_eq!(ours[0]["account"], "DASHBOARD");
    assert_eq!(
        ours[0]["authorized_user"].as_str(),
        credentials.server_env.get("SESSIONBUS_DASHBOARD_NKEY").map(String::as_str)
    );

    // It reads what its pages need under those rights.
    let sid = &session;
    let (status, list) = http(port, "GET", "/api/sessions", "");
    assert_eq!(status, 200, "{list}");
    let list: Value = serde_json::from_str(&list).expect("list JSON");
    let listed: Vec<&str> =
        list["sessions"].as_array().expect("sessions").iter().filter_map(|s| s["session_id"].as_str()).collect();
    assert_eq!(listed, [session.as_str(), child.as_str()]);
    for path in [
        format!("/api/sessions/{sid}"),
        format!("/api/sessions/{sid}/graph?after=0"),
        format!("/api/sessions/{sid}/tools"),
        format!("/api/sessions/{sid}/turns?limit=10"),
        format!("/api/sessions/{sid}/tool-history"),
        "/api/workers".into(),
    ] {
        let (status, body) = http(port, "GET", &path, "");
        assert_eq!(status, 200, "GET {path}: {body}");
    }
    let (_, turns) = http(port, "GET", &format!("/api/sessions/{sid}/turns"), "");
    assert!(turns.contains("\"turn_id\":\"t1\""), "the past turn is read through the turns op: {turns}");
    let (_, generations) = http(port, "GET", &format!("/api/sessions/{sid}/tool-history"), "");
    assert!(generations.contains("\"joined\":[\"bash\"]"), "the tool history is read: {generations}");
    let (_, workers) = http(port, "GET", "/api/workers", "");
    assert!(workers.contains(worker.id()), "the worker is listed through $SRV: {workers}");
    let (_, events) = http(port, "GET", &format!("/api/events?session={sid}"), "");
    assert!(!events.contains("error"), "the event stream opens: {events}");

    // Every method on every route: the bus is unchanged.
    let routes = [
        "/".to_owned(),
        "/app.js".into(),
        "/style.css".into(),
        "/api/config".into(),
        "/api/sessions".into(),
        format!("/api/sessions/{sid}"),
        format!("/api/sessions/{sid}/graph"),
        format!("/api/sessions/{sid}/tools"),
        format!("/api/sessions/{sid}/turns"),
        format!("/api/sessions/{sid}/tool-history"),
        "/api/workers".into(),
        "/api/events".into(),
        format!("/api/events?session={sid}"),
        "/api/nothing-here".into(),
    ];
    let before = bus_state(&admin).await;
    let snapshot_before = bus.snapshot_session(sid).await.expect("snapshot");
    let body = json!({"nodes": [{"kind": "plugin", "plugin_type": "x", "body": {}}], "tool_names": ["bash"], "present": false}).to_string();
    let mut answered = BTreeMap::new();
    for route in &routes {
        for method in METHODS {
            let (status, _) = http(port, method, route, &body);
            answered.insert(format!("{method} {route}"), status);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(bus_state(&admin).await, before, "a request to the dashboard changed the bus; answers: {answered:?}");
    let snapshot_after = bus.snapshot_session(sid).await.expect("snapshot");
    assert_eq!(snapshot_after.session_graph, snapshot_before.session_graph);
    assert_eq!(snapshot_after.turn_index, snapshot_before.turn_index);
    for (request, status) in &answered {
        if request.ends_with("/api/nothing-here") {
            assert_eq!(*status, 404, "{request}: {answered:?}");
        } else if !request.starts_with("GET ") && !request.starts_with("HEAD ") {
            assert_eq!(*status, 405, "{request} is not a read: {answered:?}");
        }
    }
    drop(dashboard);

    // The dashboard user itself is refused every write.
    let mut own = connect(&server, &credentials, "dashboard", None).await;
    let token = session_token(sid).expect("token");
    for subject in [
        "sessionbus.v1.create".to_owned(),
        format!("sessionbus.v1.session.{token}.append_nodes"),
        format!("sessionbus.v1.session.{token}.close"),
        format!("sessionbus.v1.session.{token}.start_turn"),
        format!("sessionbus.v1.session.{token}.cancel_turn"),
        format!("sessionbus.v1.session.{token}.apply_tool_state"),
        format!("sessionbus.v1.session.{token}.set_tool_membership"),
        format!("sessionbus.v1.session.{token}.trace"),
        format!("sessionbus.v1.state.{token}.graph"),
        format!("sessionbus.v1.state.{token}.meta"),
        format!("sessionbus.v1.trace.{token}"),
        format!("sessionbus.v1.index.root.{token}"),
        format!("$KV.SESSIONBUS_TOOLS.{token}"),
        format!("sessionbus.v1.events.{token}.graph"),
        format!("sessionbus.v1.live.{token}"),
        format!("$JS.API.STREAM.CREATE.{STATE_STREAM}"),
        format!("$JS.API.STREAM.PURGE.{STATE_STREAM}"),
        format!("$JS.API.CONSUMER.CREATE.{STATE_STREAM}"),
        format!("$JS.API.CONSUMER.DURABLE.CREATE.{STATE_STREAM}.spy"),
        format!("$JS.API.DIRECT.GET.{STATE_STREAM}"),
    ] {
        own.client.publish(subject.clone(), body.clone().into()).await.expect("publish is queued");
        own.client.flush().await.expect("flush");
        own.expect_violation("Publish", &subject).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(bus_state(&admin).await, before, "a refused write changed the bus");
    assert!(!worker.stderr().to_lowercase().contains("permissions violation"), "{}", worker.stderr());
}
