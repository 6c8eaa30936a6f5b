//! Attacks on stored state, run as an attacker would: through the bus's own subjects,
//! with hostile reply subjects, forged events and other applications' inboxes.
//!
//! - Under the shipped `deploy/nats/accounts.conf` (real server, real `sessionbus
//!   worker` under the worker user, the layout made by `sessionbus setup` as admin),
//!   every attack is tried by a client application (app_a), a second application in
//!   the same account (app_b), a tenant in its own account and the dashboard. Each is
//!   refused by the server or answered into the attacker's own account, and the bus's
//!   stored state (every message of every stream: sequence, subject, headers, payload)
//!   is byte-for-byte unchanged after each.
//! - Without authorization (the `sessionbus up` default), the worker itself drops every
//!   request whose reply subject is outside the inbox prefixes, before executing it.
//! - A request id reused on another session is a new write, answered at once.
//! - A worker whose server is gone stops within its drain deadline.
//!
//! The table of outcomes goes to `target/tmp/reliability/security.json` (RELIABILITY.md).

mod auth;
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_nats::{Client, HeaderMap};
use bytes::Bytes;
use futures::StreamExt as _;
use serde_json::{Value, json};
use sessionbus_api::{
    AppendSessionNodesRequest, SessionAppendNode, SessionCreateRequest, SessionGraphService as _,
    SessionLifecycleService as _, SessionStateService as _, ToolManifest, ToolState,
};
use sessionbus_nats::wire::{PROGRESS, REQUEST_ID};
use sessionbus_nats::{BusClient, BusClientConfig, STATE_STREAM, TOOLS_STREAM, TRACE_STREAM};
use sessionbus_testkit::{NatsServer, WorkerProcess};

/// Every stream of the bus, as stored.
const STREAMS: [&str; 4] = [STATE_STREAM, TRACE_STREAM, TOOLS_STREAM, "KV_SESSIONBUS_SPANS"];

/// Every message of every stream (sequence, subject, headers, payload) and the stream
/// names: what an attack must leave byte-for-byte unchanged.
async fn stored_state(admin: &Client) -> BTreeMap<String, Vec<(u64, String, String, Vec<u8>)>> {
    let mut state = BTreeMap::new();
    let js = async_nats::jetstream::new(admin.clone());
    let names: Vec<String> = js.stream_names().map(|name| name.expect("stream name")).collect().await;
    state.insert(
        "(stream names)".to_owned(),
        names.into_iter().map(|name| (0, name, String::new(), Vec::new())).collect(),
    );
    for stream in STREAMS {
        let messages = support::read_all(admin, stream, ">").await;
        state.insert(
            stream.to_owned(),
            messages.into_iter().map(|m| (m.seq, m.subject, format!("{:?}", m.headers), m.payload)).collect(),
        );
    }
    state
}

/// A victim session with tool state, nodes and a completed turn.
async fn victim(bus: &BusClient) -> String {
    let session = support::new_id();
    bus.create_session(SessionCreateRequest::root(Some(session.clone()))).await.expect("create the victim");
    let mut tools = ToolState::default();
    tools.insert(ToolManifest::new("tool:bash", "bash", ""));
    bus.apply_tool_state(&session, tools).await.expect("tool state");
    let append = AppendSessionNodesRequest {
        nodes: vec![SessionAppendNode::message("User", "hello")],
        requires_ancestor_node_id: None,
    };
    bus.append_session_nodes(&session, append).await.expect("append");
    let turn = sessionbus_api::SessionTurnRequest::for_turn(&session, "t1", sessionbus_api::TurnInput::text("hi"))
        .expect("turn");
    bus.start_turn(turn).await.expect("turn");
    session
}

/// The request count and refused-reply count of one endpoint of the one worker
/// (`$SRV.STATS`).
async fn endpoint_counts(admin: &Client, endpoint: &str) -> (u64, u64) {
    let reply = admin.request("$SRV.STATS.sessionbus", Bytes::new()).await.expect("the worker's stats");
    let stats: Value = serde_json::from_slice(&reply.payload).expect("stats JSON");
    let entry = stats["endpoints"].as_array().into_iter().flatten().find(|e| e["name"] == endpoint);
    let entry = entry.unwrap_or_else(|| panic!("no endpoint {endpoint} in the worker's stats: {stats}"));
    (entry["num_requests"].as_u64().unwrap_or(0), entry["data"]["refused_replies"].as_u64().unwrap_or(0))
}

/// Waits until `check` holds for the counts of `endpoint`.
async fn wait_counts(admin: &Client, endpoint: &str, what: &str, check: impl Fn((u64, u64)) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let counts = endpoint_counts(admin, endpoint).await;
        if check(counts) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: the worker never counted it ({counts:?})");
    }
}

/// One hostile request: a subject, a reply subject, and whether it asks for progress.
struct Attack {
    name: &'static str,
    subject: String,
    reply: Option<String>,
    progress: bool,
    /// The worker endpoint the request reaches when the server lets it through.
    endpoint: Option<&'static str>,
}

fn attacks(victim: &str) -> Vec<Attack> {
    let missing = support::new_id();
    let op = |s: &str, op: &str| format!("sessionbus.v1.session.{s}.{op}");
    let attack = |name, subject: String, reply: &str, progress, endpoint| Attack {
        name,
        subject,
        reply: Some(reply.to_owned()),
        progress,
        endpoint,
    };
    vec![
        attack(
            "close -> reply STREAM.DELETE.SESSIONBUS_STATE",
            op(&missing, "close"),
            "$JS.API.STREAM.DELETE.SESSIONBUS_STATE",
            false,
            Some("close"),
        ),
        attack(
            "close -> reply STREAM.DELETE.SESSIONBUS_TRACE",
            op(&missing, "close"),
            "$JS.API.STREAM.DELETE.SESSIONBUS_TRACE",
            false,
            Some("close"),
        ),
        attack(
            "start_turn progress -> reply STREAM.DELETE.KV_SESSIONBUS_TOOLS",
            op(&missing, "start_turn"),
            "$JS.API.STREAM.DELETE.KV_SESSIONBUS_TOOLS",
            true,
            Some("start_turn"),
        ),
        attack(
            "snapshot -> reply STREAM.PURGE.SESSIONBUS_STATE",
            op(victim, "snapshot"),
            "$JS.API.STREAM.PURGE.SESSIONBUS_STATE",
            false,
            Some("snapshot"),
        ),
        attack(
            "ping -> reply into the victim's meta",
            "sessionbus.v1.ping".to_owned(),
            &format!("sessionbus.v1.state.{victim}.meta"),
            false,
            Some("ping"),
        ),
        attack(
            "ping -> reply into the victim's KV key",
            "sessionbus.v1.ping".to_owned(),
            &format!("$KV.SESSIONBUS_TOOLS.{victim}"),
            false,
            Some("ping"),
        ),
        attack(
            "tool_state -> reply forges a tools event",
            op(victim, "tool_state"),
            &format!("sessionbus.v1.events.{victim}.tools"),
            false,
            Some("tool_state"),
        ),
        attack(
            "$SRV.PING -> reply into the victim's meta",
            "$SRV.PING".to_owned(),
            &format!("sessionbus.v1.state.{victim}.meta"),
            false,
            None,
        ),
        attack(
            "STREAM.INFO -> reply into the victim's meta",
            format!("$JS.API.STREAM.INFO.{STATE_STREAM}"),
            &format!("sessionbus.v1.state.{victim}.meta"),
            false,
            None,
        ),
        attack(
            "DIRECT.GET -> reply into the victim's KV key",
            format!("$JS.API.DIRECT.GET.{TOOLS_STREAM}"),
            &format!("$KV.SESSIONBUS_TOOLS.{victim}"),
            false,
            None,
        ),
        Attack {
            name: "publish STREAM.DELETE.SESSIONBUS_STATE",
            subject: format!("$JS.API.STREAM.DELETE.{STATE_STREAM}"),
            reply: None,
            progress: false,
            endpoint: None,
        },
        Attack {
            name: "publish into the victim's meta",
            subject: format!("sessionbus.v1.state.{victim}.meta"),
            reply: None,
            progress: false,
            endpoint: None,
        },
        Attack {
            name: "publish a forged tools event",
            subject: format!("sessionbus.v1.events.{victim}.tools"),
            reply: None,
            progress: false,
            endpoint: None,
        },
    ]
}

async fn send(client: &Client, attack: &Attack) {
    let mut headers = HeaderMap::new();
    headers.insert(REQUEST_ID, support::new_id().as_str());
    if attack.progress {
        headers.insert(PROGRESS, "1");
    }
    let body = Bytes::from_static(b"{}");
    let sent = match &attack.reply {
        Some(reply) => {
            client.publish_with_reply_and_headers(attack.subject.clone(), reply.clone(), headers, body).await
        }
        None => client.publish_with_headers(attack.subject.clone(), headers, body).await,
    };
    sent.expect("the publish is queued");
    client.flush().await.expect("flush");
}

/// What became of `attack`: refused by the server (a permission violation), or served
/// (the worker counted its reply, or an honest request behind it on the same subject
/// was answered).
async fn observe(admin: &Client, conn: &mut auth::Conn, attack: &Attack, counted_before: u64) -> &'static str {
    const SERVED: &str = "served; the reply went back into the attacker's own account";
    let started = Instant::now();
    loop {
        while let Ok(error) = conn.errors.try_recv() {
            if error.contains("Permissions Violation for Publish") {
                return "refused by the server";
            }
        }
        match attack.endpoint {
            Some(endpoint) if endpoint_counts(admin, endpoint).await.0 > counted_before => return SERVED,
            // Answered by the server or the micro service, in order: once an honest
            // request on the same subject is answered, so was the attack.
            None if started.elapsed() > Duration::from_secs(1) => {
                conn.client
                    .request(attack.subject.clone(), Bytes::new())
                    .await
                    .unwrap_or_else(|err| panic!("`{}` was not refused, yet not served: {err}", attack.name));
                return SERVED;
            }
            _ => {}
        }
        assert!(started.elapsed() < Duration::from_secs(10), "`{}`: neither refused nor served", attack.name);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_dashboard_or_other_app_reaches_stored_state_under_the_shipped_accounts() {
    let (server, credentials) = auth::start_server();
    auth::setup_as_admin(&server.url(), &credentials, 1);
    let worker = auth::worker_as_worker_user(&server, &credentials).await;
    let admin = auth::connect(&server, &credentials, "admin", None).await.client;
    let app_a = auth::connect(&server, &credentials, "app_a", Some("_INBOX_app_a")).await;
    let bus = BusClient::new(app_a.client.clone(), BusClientConfig::default());
    let session = victim(&bus).await;

    // Watchers in other accounts: a forged event must never reach them.
    let mut dashboard = auth::connect(&server, &credentials, "dashboard", None).await;
    let mut tenant = auth::connect(&server, &credentials, "tenant", None).await;
    let mut app_b = auth::connect(&server, &credentials, "app_b", Some("_INBOX_app_b")).await;
    let mut dashboard_events = dashboard.client.subscribe("sessionbus.v1.events.>").await.expect("watch");
    let mut tenant_events = tenant.client.subscribe("sessionbus.v1.events.>").await.expect("watch");
    dashboard.client.flush().await.expect("flush");
    tenant.client.flush().await.expect("flush");
    let mut app_a = app_a;

    let mut table = Vec::new();
    let mut attackers: Vec<(&str, &str, &mut auth::Conn)> = vec![
        ("app_a", "APPS", &mut app_a),
        ("app_b", "APPS", &mut app_b),
        ("tenant", "TENANT", &mut tenant),
        ("dashboard", "DASHBOARD", &mut dashboard),
    ];
    for (who, account, conn) in attackers.iter_mut() {
        for attack in attacks(&session) {
            let before = stored_state(&admin).await;
            let counted_before = match attack.endpoint {
                Some(endpoint) => endpoint_counts(&admin, endpoint).await.0,
                None => 0,
            };
            conn.drain();
            send(&conn.client, &attack).await;
            // Either the server refuses the publish, or the request reaches a worker
            // (and its reply goes back into the attacker's account).
            let outcome = observe(&admin, conn, &attack, counted_before).await;
            let after = stored_state(&admin).await;
            assert!(before == after, "{who}: `{}` changed the stored state", attack.name);
            table.push(
                json!({ "attacker": who, "attack": attack.name, "outcome": outcome, "stored_state": "unchanged" }),
            );
        }
        // Nothing attacker wrote or made the worker answer reached a watcher in another
        // account as an event (an attacker's own account sees its own replies).
        for (watcher, events) in [("DASHBOARD", &mut dashboard_events), ("TENANT", &mut tenant_events)] {
            while let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(300), events.next()).await {
                let stored = event.headers.as_ref().and_then(|h| h.get("Nats-Stream")).is_some();
                assert!(
                    stored || watcher == *account,
                    "{who}'s attacks put an event JetStream did not write in front of {watcher}: {}",
                    event.subject
                );
            }
        }
    }

    // Another application's inbox: no reading, no forged answers.
    let mut spy = app_b.client.subscribe("_INBOX_app_a.>").await.expect("subscribe is queued");
    app_b.client.flush().await.expect("flush");
    app_b.expect_violation("Subscription", "_INBOX_app_a.>").await;
    app_b.drain();
    app_b.client.publish("_INBOX_app_a.fake", "final".into()).await.expect("publish is queued");
    app_b.client.flush().await.expect("flush");
    app_b.expect_violation("Publish", "_INBOX_app_a.fake").await;
    table.push(json!({ "attacker": "app_b", "attack": "read app_a's replies", "outcome": "refused by the server" }));
    table.push(json!({ "attacker": "app_b", "attack": "answer on app_a's inbox", "outcome": "refused by the server" }));

    // Within one account, app_a can make the worker's reply land on an events subject
    // app_b watches (the server delivers replies to the reply subject's subscribers in
    // the caller's account). It carries no JetStream republish headers, so app_b's event
    // stream does not take it for an event.
    let app_b_bus = BusClient::new(app_b.client.clone(), BusClientConfig::default());
    let mut typed = app_b_bus.events(&session).await.expect("app_b watches the victim");
    let mut raw = app_b.client.subscribe(format!("sessionbus.v1.events.{session}.meta")).await.expect("raw watch");
    app_b.client.flush().await.expect("flush");
    let forged_reply = format!("sessionbus.v1.events.{session}.meta");
    app_a.client.publish_with_reply("sessionbus.v1.ping", forged_reply, Bytes::from_static(b"{}")).await.expect("ping");
    app_a.client.flush().await.expect("flush");
    let delivered = tokio::time::timeout(auth::WAIT, raw.next()).await.expect("the reply reaches app_b's subject");
    assert!(delivered.is_some_and(|m| m.headers.is_none_or(|h| h.get("Nats-Stream").is_none())));
    assert!(
        tokio::time::timeout(Duration::from_millis(500), typed.next()).await.is_err(),
        "app_b's event stream took a worker's reply for an event"
    );
    table.push(json!({ "attacker": "app_a", "attack": "ping with reply on an events subject app_b watches", "outcome": "delivered in APPS without republish headers; not an event to BusClient::events or sessionbus watch" }));

    // The bus still serves app_a, and app_b's spy saw none of it.
    let snapshot = bus.snapshot_session(&session).await.expect("the victim is still readable");
    assert_eq!(snapshot.turn_index, 1);
    assert!(tokio::time::timeout(Duration::from_millis(300), spy.next()).await.is_err_or_none());
    assert!(worker.stderr().lines().all(|line| !line.contains("panicked")), "worker log:\n{}", worker.stderr());
    support::report("security", json!({ "accounts": table }));
}

trait ErrOrNone {
    fn is_err_or_none(&self) -> bool;
}

impl<T, E> ErrOrNone for Result<Option<T>, E> {
    fn is_err_or_none(&self) -> bool {
        !matches!(self, Ok(Some(_)))
    }
}

/// A server without authorization, a worker, a connection and a bus client on it.
async fn open_bus() -> (NatsServer, WorkerProcess, Client, BusClient) {
    let server = NatsServer::start().expect("nats-server");
    let worker = support::worker(&server.url(), &[]).await;
    let client = server.client().await.expect("connect");
    let bus = BusClient::new(client.clone(), BusClientConfig::default());
    (server, worker, client, bus)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_authorization_the_worker_drops_requests_with_hostile_reply_subjects() {
    let (_server, worker, admin, bus) = open_bus().await;
    let session = victim(&bus).await;
    let mut table = Vec::new();
    for attack in attacks(&session).into_iter().filter(|attack| attack.reply.is_some() && attack.endpoint.is_some()) {
        let endpoint = attack.endpoint.expect("filtered");
        let before = stored_state(&admin).await;
        let (_, refused_before) = endpoint_counts(&admin, endpoint).await;
        send(&admin, &attack).await;
        wait_counts(&admin, endpoint, attack.name, |(_, refused)| refused > refused_before).await;
        assert!(before == stored_state(&admin).await, "`{}` changed the stored state", attack.name);
        table.push(json!({ "attack": attack.name, "outcome": "dropped by the worker", "stored_state": "unchanged" }));
    }
    assert_eq!(bus.snapshot_session(&session).await.expect("still served").turn_index, 1);
    let logged =
        worker.stderr().lines().filter(|line| line.contains("reply subject is outside the inbox prefixes")).count();
    assert!(logged >= 1 && logged <= table.len(), "refusals are logged once per sender: {logged} lines");
    support::report("security-no-auth", json!({ "no_auth": table }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_reused_on_another_session_is_a_new_write() {
    let (_server, _worker, client, bus) = open_bus().await;
    let (a, b) = (support::new_id(), support::new_id());
    for session in [&a, &b] {
        bus.create_session(SessionCreateRequest::root(Some(session.clone()))).await.expect("create");
    }
    let request_id = support::new_id();
    let append = |text: &str| {
        let request = AppendSessionNodesRequest {
            nodes: vec![SessionAppendNode::message("User", text)],
            requires_ancestor_node_id: None,
        };
        Bytes::from(serde_json::to_vec(&request).expect("json"))
    };
    let mut answers = Vec::new();
    for (session, text) in [(&a, "to a"), (&b, "to b")] {
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID, request_id.as_str());
        let started = Instant::now();
        let reply = support::raw_request(
            &client,
            &format!("sessionbus.v1.session.{session}.append_nodes"),
            headers,
            append(text),
            Duration::from_secs(10),
        )
        .await
        .expect("an answer");
        assert_eq!(reply.code, None, "append to {session} with a reused request id: {:?}", reply.json());
        // Before scoping, b's append was taken for a retry of a's: 200 retries, then 409.
        assert!(started.elapsed() < Duration::from_secs(5), "answered at once, not after retries");
        answers.push(reply.json());
    }
    let graph_b = bus.snapshot_session(&b).await.expect("snapshot b").session_graph.nodes;
    assert_eq!(graph_b.len(), 1, "b's append was written");
    assert!(serde_json::to_string(&graph_b[0]).expect("json").contains("to b"), "b holds b's node: {graph_b:?}");
    assert_ne!(answers[0]["node_ids"], answers[1]["node_ids"], "two writes, two node ids");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_server_is_gone_stops_within_its_drain_deadline() {
    let mut server = NatsServer::start().expect("nats-server");
    let mut worker = support::worker(&server.url(), &["--drain-timeout-secs", "3"]).await;
    server.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let asked = Instant::now();
    worker.signal("TERM").expect("SIGTERM");
    let deadline = asked + Duration::from_secs(30);
    while worker.is_running() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = asked.elapsed();
    assert!(!worker.is_running(), "the worker did not exit within 30 s of SIGTERM; log:\n{}", worker.stderr());
    // The drain deadline (3 s) plus at most one second to unregister, plus process
    // exit: a bound no load on this machine comes near, far below the 70 s it took.
    assert!(took < Duration::from_secs(10), "the worker took {took:?} to stop (drain deadline 3 s)");
    support::report("worker-shutdown", json!({ "drain_deadline_s": 3, "stopped_after_s": took.as_secs_f64() }));
}
