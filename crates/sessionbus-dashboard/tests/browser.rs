//! The dashboard in a real browser (Debian's chromium, headless, through chromedriver)
//! against a real bus: what each page shows, that it stays live without reloads, that
//! untrusted text stays text, and how fast a large graph is drawn. Every test saves
//! screenshots under `target/dashboard-screenshots/`.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use sessionbus_api::{
    AppendSessionNodesRequest, SessionCreateRequest, SessionGraphService as _, SessionLifecycleService as _,
    SessionNode, SessionStartPoint, SessionStateService as _, SessionTurnRequest, TurnInput, TurnLease, TurnListQuery,
};
use support::{Browser, Bus, WAIT, note};

/// The page is open and its event stream connected.
async fn open_live(browser: &Browser, url: &str) {
    browser.open(url).await;
    browser.wait_until("return document.getElementById('live').classList.contains('on')", WAIT, "the live badge").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sessions_page_lists_every_session_the_demo_created() {
    let bus = Bus::start(1, &[]).await;
    let demo = std::process::Command::new(sessionbus_testkit::sessionbus_binary().expect("the sessionbus binary"))
        .args(["demo", "--sessions", "3", "--children", "1", "--turns", "1", "--appends", "2", "--toggles", "2"])
        .env("NATS_URL", bus.server.url())
        .env("RUST_LOG", "warn")
        .output()
        .expect("run sessionbus demo");
    assert!(demo.status.success(), "demo failed: {}", String::from_utf8_lossy(&demo.stderr));
    let mut created = Vec::new();
    let mut query = sessionbus_api::SessionListQuery::default();
    loop {
        let page = bus.client.list_sessions(&query).await.expect("list");
        created.extend(page.sessions.into_iter().map(|s| s.session_id));
        match page.next_after {
            Some(after) => query.after = Some(after),
            None => break,
        }
    }
    assert_eq!(created.len(), 6, "3 roots and a child each");
    let browser = Browser::start().await;
    open_live(&browser, &format!("{}#/sessions", bus.url)).await;
    browser
        .wait_until(
            &format!("return document.querySelectorAll('#sessions-body tr').length === {}", created.len()),
            WAIT,
            "the demo's sessions",
        )
        .await;
    let mut listed: Vec<String> = serde_json::from_value(
        browser
            .eval("return Array.from(document.querySelectorAll('#sessions-body tr')).map(r => r.dataset.session)")
            .await,
    )
    .expect("ids");
    listed.sort();
    created.sort();
    assert_eq!(listed, created);
    let children = browser
        .eval("return Array.from(document.querySelectorAll('#sessions-body tr td:nth-child(2) a')).length")
        .await;
    assert_eq!(children, json!(3), "each child links its parent");
    browser.screenshot("sessions").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_created_while_the_page_is_open_appears_within_1_s_without_reload() {
    let bus = Bus::start(1, &[]).await;
    let browser = Browser::start().await;
    open_live(&browser, &format!("{}#/sessions", bus.url)).await;
    browser.eval("window.__sameDocument = 'yes'; return true").await;
    let created = std::time::Instant::now();
    let session = bus.session_with(&[]).await;
    let shown = browser
        .wait_until(
            &format!("return document.querySelector('tr[data-session=\"{session}\"]') !== null"),
            WAIT,
            "the new session",
        )
        .await;
    let total = created.elapsed();
    browser.screenshot("sessions-live").await;
    println!("a new session was listed {:?} after create returned ({total:?} after it was sent)", shown);
    assert!(shown < Duration::from_secs(1), "the new session took {shown:?} to appear");
    assert_eq!(browser.eval("return window.__sameDocument").await, json!("yes"), "the page was reloaded");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_turn_shows_as_running_on_its_worker_then_as_completed() {
    let bus = Bus::start(1, &["--executor", "slow", "--turn-delay-ms", "3000"]).await;
    let worker_id = bus.workers[0].id().to_owned();
    let session = bus.session_with(&["before the turn"]).await;
    let browser = Browser::start().await;
    open_live(&browser, &format!("{}#/session/{session}", bus.url)).await;
    browser.wait_until("return document.getElementById('graph').dataset.complete === 'true'", WAIT, "the graph").await;

    let client = bus.client.clone();
    let turn_session = session.clone();
    let turn = tokio::spawn(async move {
        let request = SessionTurnRequest::for_turn(&turn_session, "turn-1", TurnInput::text("hello")).expect("turn");
        client.start_turn(request).await
    });
    browser
        .wait_until(
            "return document.querySelector('tr[data-turn=\"turn-1\"]')?.dataset.status === 'running'",
            WAIT,
            "the running turn",
        )
        .await;
    browser
        .wait_until(
            &format!(
                "return document.querySelector('tr[data-turn=\"turn-1\"]').children[5].textContent === '{worker_id}'"
            ),
            WAIT,
            "the worker running the turn",
        )
        .await;
    assert_eq!(browser.eval("return document.getElementById('lease').dataset.state").await, json!("held"));
    assert_eq!(browser.eval("return document.getElementById('lease').dataset.holder").await, json!(worker_id));
    browser.screenshot("session-turn-running").await;
    turn.await.expect("join").expect("the turn completes");
    browser
        .wait_until(
            "return document.querySelector('tr[data-turn=\"turn-1\"]').dataset.status === 'completed'",
            WAIT,
            "the completed turn",
        )
        .await;
    browser
        .wait_until("return document.getElementById('lease').dataset.state === 'free'", WAIT, "the freed lease")
        .await;
    let row = browser.eval("return document.querySelector('tr[data-turn=\"turn-1\"]').innerText").await;
    assert!(row.as_str().unwrap_or_default().contains(&worker_id), "the completed turn names its worker: {row}");
    browser.screenshot("session").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_turns_streamed_output_shows_as_text_while_it_runs_then_as_completed() {
    // The slow executor streams its reply's words over the first half of its delay,
    // then runs a `wait` tool over the second.
    let bus = Bus::start(1, &["--executor", "slow", "--turn-delay-ms", "8000"]).await;
    let session = bus.session_with(&["before the turn"]).await;
    let browser = Browser::start().await;
    open_live(&browser, &format!("{}#/session/{session}", bus.url)).await;
    browser.wait_until("return document.getElementById('graph').dataset.complete === 'true'", WAIT, "the graph").await;
    browser
        .wait_until("return document.getElementById('lease').dataset.state === 'free'", WAIT, "the free lease, on open")
        .await;

    let input = "streamed <script>window.__pwned='live'</script> and <img src=x onerror=window.__pwned='img'> done";
    let reply = sessionbus_api::EchoExecutor::reply_to(input);
    let client = bus.client.clone();
    let turn_session = session.clone();
    let turn = tokio::spawn(async move {
        let request = SessionTurnRequest::for_turn(&turn_session, "turn-1", TurnInput::text(input)).expect("turn");
        client.start_turn(request).await
    });
    let status = "return document.querySelector('tr[data-turn=\"turn-1\"]')?.dataset.status";
    let first_word =
        "return (document.querySelector('#live-output .live-text')?.textContent || '').startsWith('echo: ')";
    browser.wait_until(first_word, WAIT, "the first streamed delta").await;
    let partial = browser.eval("return document.querySelector('#live-output .live-text').textContent").await;
    assert_ne!(partial, json!(reply), "the first words are shown before the last is streamed");
    assert_eq!(browser.eval(status).await, json!("running"), "streamed while the turn runs");
    let whole = format!("return document.querySelector('#live-output .live-text')?.textContent === {}", json!(reply));
    browser.wait_until(&whole, WAIT, "every streamed delta, in order").await;
    browser
        .wait_until(
            "return document.querySelector('#live-output .live-tool_start')?.textContent === '▶ tool wait started'",
            WAIT,
            "the tool start",
        )
        .await;
    assert_eq!(browser.eval(status).await, json!("running"), "the whole stream was shown before the turn completed");
    assert_eq!(browser.eval("return document.getElementById('live-output').dataset.state").await, json!("streaming"));
    assert_eq!(
        browser.eval("return document.querySelectorAll('#live-output *:not(span):not(div)').length").await,
        json!(0),
        "the streamed markup is text, not elements"
    );
    assert_eq!(browser.eval("return window.__pwned === undefined").await, Value::Bool(true), "nothing ran");
    browser.screenshot("session-live-output").await;

    turn.await.expect("join").expect("the turn completes");
    browser.wait_until(&format!("{status} === 'completed'"), WAIT, "the completed turn").await;
    browser
        .wait_until(
            "return document.getElementById('live-output').dataset.state === 'completed'",
            WAIT,
            "the stream marked completed",
        )
        .await;
    let note = browser.eval("return document.getElementById('live-note').textContent").await;
    assert!(note.as_str().unwrap_or_default().contains("turn-1 completed"), "{note}");
    assert_eq!(
        browser.eval("return document.querySelector('#live-output .live-text').textContent").await,
        json!(reply)
    );
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_opened_while_a_turn_runs_shows_its_holder_and_the_renewal_age_from_the_lease_record() {
    // Renewed every 10 s: no lease event reaches the page in the seconds it is open.
    let bus = Bus::start(1, &["--executor", "slow", "--turn-delay-ms", "8000", "--lease-ttl-secs", "60"]).await;
    let worker_id = bus.workers[0].id().to_owned();
    let session = bus.session_with(&["before the turn"]).await;
    let client = bus.client.clone();
    let turn_session = session.clone();
    let turn = tokio::spawn(async move {
        let request = SessionTurnRequest::for_turn(&turn_session, "turn-1", TurnInput::text("hello")).expect("turn");
        client.start_turn(request).await
    });
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let page = bus.client.list_turns(&session, &TurnListQuery::first(1)).await.expect("turns");
        if let Some(TurnLease::Held { holder, .. }) = page.lease {
            assert_eq!(holder, worker_id, "the bus names the worker");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the turn never took the lease");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    let browser = Browser::start().await;
    open_live(&browser, &format!("{}#/session/{session}", bus.url)).await;
    browser
        .wait_until(
            &format!("return document.getElementById('lease').dataset.holder === '{worker_id}'"),
            WAIT,
            "the lease holder, on open",
        )
        .await;
    let pairs: Vec<String> = serde_json::from_value(
        browser
            .eval("return Array.from(document.querySelectorAll('#lease dt, #lease dd')).map(e => e.textContent)")
            .await,
    )
    .expect("the lease panel");
    assert_eq!(&pairs[..6], ["state", "held", "holder", worker_id.as_str(), "turn", "turn-1"], "{pairs:?}");
    let age = pairs[7].strip_suffix(" s ago").and_then(|s| s.parse::<f64>().ok());
    assert!(
        age.is_some_and(|age| age >= 1.5),
        "the renewal's age counts from the record's time, taken 2 s before the page opened: {pairs:?}"
    );
    assert_eq!(
        browser.eval("return document.querySelector('tr[data-turn=\"turn-1\"]')?.dataset.status").await,
        json!("running")
    );
    browser.screenshot("session-lease-on-open").await;
    turn.await.expect("join").expect("the turn completes");
    browser
        .wait_until("return document.getElementById('lease').dataset.state === 'free'", WAIT, "the freed lease")
        .await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_graph_of_a_branched_session_shows_the_branch_and_marks_the_leaf() {
    let bus = Bus::start(1, &[]).await;
    let source = bus.session_with(&["root", "main line 1", "main line 2"]).await;
    let mut snapshot = bus.client.snapshot_session(&source).await.expect("snapshot");
    let root_id = snapshot.session_graph.nodes[0].node_id.clone();
    let fork: SessionNode = serde_json::from_value(json!({
        "node_id": "fork-1", "parent_node_id": root_id, "timestamp": "2026-01-01T00:00:00Z",
        "kind": "plugin", "plugin_type": "note", "body": {"text": "the other branch"}
    }))
    .expect("a node");
    snapshot.session_graph.nodes.push(fork);
    snapshot.session_graph.leaf_node_id = Some("fork-1".into());
    let mut request = SessionCreateRequest::root(None);
    request.start = SessionStartPoint::Snapshot { snapshot: Box::new(snapshot) };
    let branched = bus.client.create_session(request).await.expect("create from a branched graph").session_id;

    let browser = Browser::start().await;
    open_live(&browser, &format!("{}#/session/{branched}", bus.url)).await;
    browser.wait_until("return document.getElementById('graph').dataset.complete === 'true'", WAIT, "the graph").await;
    let branches = browser
        .eval("return Array.from(document.querySelectorAll('#graph .node.branch')).map(n => n.dataset.node)")
        .await;
    assert_eq!(branches, json!(["fork-1"]), "exactly the forked node opens a branch");
    let lanes = browser
        .eval("return Array.from(document.querySelectorAll('#graph .node')).map(n => Number(n.dataset.lane))")
        .await;
    assert_eq!(lanes, json!([0, 0, 0, 1]), "the main line in lane 0, the branch in lane 1");
    let leaf = browser
        .eval("return Array.from(document.querySelectorAll('#graph .node.leaf')).map(n => n.dataset.node)")
        .await;
    assert_eq!(leaf, json!(["fork-1"]));
    browser.screenshot("session-branched").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workers_page_shows_both_workers_with_their_endpoints_and_charts() {
    let bus = Bus::start(2, &[]).await;
    let session = bus.session_with(&["traffic"]).await;
    bus.client.snapshot_session(&session).await.expect("snapshot");
    let browser = Browser::start().await;
    browser.open(&format!("{}#/workers", bus.url)).await;
    browser.wait_until("return document.querySelectorAll('#workers .worker').length === 2", WAIT, "two workers").await;
    let mut shown: Vec<String> = serde_json::from_value(
        browser
            .eval("return Array.from(document.querySelectorAll('#workers .worker')).map(w => w.dataset.worker)")
            .await,
    )
    .expect("ids");
    shown.sort();
    let mut expected: Vec<String> = bus.workers.iter().map(|w| w.id().to_owned()).collect();
    expected.sort();
    assert_eq!(shown, expected);
    let charts = browser.eval("return document.querySelectorAll('#workers .worker svg.chart rect').length").await;
    assert!(charts.as_u64().unwrap_or(0) > 0, "per-endpoint bars are drawn");
    let endpoints = browser.eval("return document.querySelector('#workers .worker tbody').children.length").await;
    assert!(endpoints.as_u64().unwrap_or(0) >= 10, "every endpoint has a row: {endpoints}");
    // A second poll draws the request-rate line.
    browser
        .wait_until("return document.querySelector('#workers .worker polyline') !== null", WAIT, "the rate chart")
        .await;
    browser.screenshot("workers").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_text_with_markup_is_shown_as_text_and_runs_nothing() {
    let bus = Bus::start(1, &[]).await;
    let script = "<script>window.__pwned = 'script'</script>";
    let image = "<img src=x onerror=\"window.__pwned = 'img'\">";
    let session = bus.session_with(&[script, image]).await;
    let browser = Browser::start().await;
    open_live(&browser, &format!("{}#/session/{session}", bus.url)).await;
    browser.wait_until("return document.getElementById('graph').dataset.complete === 'true'", WAIT, "the graph").await;
    // Live too: the same text arriving through the event stream.
    bus.client
        .append_session_nodes(
            &session,
            AppendSessionNodesRequest { nodes: vec![note(image)], requires_ancestor_node_id: None },
        )
        .await
        .expect("append");
    browser.wait_until("return document.querySelectorAll('#graph .node').length === 3", WAIT, "the live node").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let note = browser.eval("return document.getElementById('graph-note').textContent").await;
    assert!(
        note.as_str().unwrap_or_default().starts_with("3 nodes (on open: 2 nodes drawn in "),
        "counts the live node: {note}"
    );
    let texts = browser
        .eval("return Array.from(document.querySelectorAll('#graph .node .text')).map(t => t.textContent)")
        .await;
    assert_eq!(texts, json!([script, image, image]), "shown as the text it is");
    assert_eq!(browser.eval("return document.querySelectorAll('#graph img, #graph script').length").await, json!(0));
    assert_eq!(browser.eval("return window.__pwned === undefined").await, Value::Bool(true), "nothing ran");
    browser.screenshot("session-hostile-text").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_20000_node_session_is_fully_drawn_with_its_leaf_marked_in_under_2_s() {
    const NODES: usize = 20_000;
    const PER_APPEND: usize = 1000;
    let bus = Bus::start(1, &[]).await;
    let session = bus.session_with(&[]).await;
    for batch in 0..NODES / PER_APPEND {
        let nodes = (0..PER_APPEND).map(|i| note(&format!("node {}", batch * PER_APPEND + i))).collect();
        bus.client
            .append_session_nodes(&session, AppendSessionNodesRequest { nodes, requires_ancestor_node_id: None })
            .await
            .expect("append");
    }
    let leaf =
        bus.client.snapshot_session(&session).await.expect("snapshot").session_graph.leaf_node_id.expect("a leaf");
    let browser = Browser::start().await;
    browser.open(&format!("{}#/session/{session}", bus.url)).await;
    browser
        .wait_until(
            "return document.getElementById('graph').dataset.complete === 'true'",
            Duration::from_secs(60),
            "the whole graph",
        )
        .await;
    let drawn = browser.eval("return Number(document.getElementById('graph').dataset.count)").await;
    let marked = browser
        .eval("return Array.from(document.querySelectorAll('#graph .node.leaf')).map(n => n.dataset.node)")
        .await;
    let ms =
        browser.eval("return Number(document.getElementById('graph').dataset.drawnMs)").await.as_f64().expect("ms");
    let fetched = browser.eval("return Number(document.getElementById('graph').dataset.fetchedMs)").await;
    let head = browser.eval("return Number(document.getElementById('graph').dataset.headMs)").await;
    browser.screenshot("session-20000-nodes").await;
    println!(
        "{NODES} nodes drawn, leaf marked, in {ms:.0} ms (in the browser, from page script start; first page in at {head} ms, all at {fetched} ms)"
    );
    assert_eq!(drawn, json!(NODES));
    assert_eq!(browser.eval("return document.querySelectorAll('#graph .node').length").await, json!(NODES));
    assert_eq!(marked, json!([leaf]));
    assert!(ms < 2000.0, "{NODES} nodes took {ms:.0} ms to draw");
    browser.close().await;
}

/// The rows of the turns table: `(turn id, status, row text, trace link or null)`.
async fn turn_rows(browser: &Browser) -> Vec<(String, String, String, Option<String>)> {
    let rows = browser
        .eval(
            "return Array.from(document.querySelectorAll('#turns-body tr')).map(r => \
             [r.dataset.turn, r.dataset.status, r.innerText, r.querySelector('a') ? r.querySelector('a').href : null])",
        )
        .await;
    serde_json::from_value(rows).expect("turn rows")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_turns_and_tool_generations_show_when_the_page_opens_after_the_demo() {
    let bus = Bus::start(1, &[]).await;
    let worker_id = bus.workers[0].id().to_owned();
    let demo = std::process::Command::new(sessionbus_testkit::sessionbus_binary().expect("the sessionbus binary"))
        .args(["demo", "--sessions", "1", "--children", "0", "--turns", "3", "--appends", "1", "--toggles", "2"])
        .env("NATS_URL", bus.server.url())
        .env("RUST_LOG", "warn")
        .output()
        .expect("run sessionbus demo");
    assert!(demo.status.success(), "demo failed: {}", String::from_utf8_lossy(&demo.stderr));
    let listed = bus.client.list_sessions(&sessionbus_api::SessionListQuery::first(10)).await.expect("list");
    let session = listed.sessions.iter().find(|s| s.turn_index == 3).expect("the demo's session").session_id.clone();
    // What the bus says, read by the test itself.
    let turns = bus.client.list_turns(&session, &TurnListQuery::first(50)).await.expect("turns").turns;
    assert_eq!(turns.len(), 3, "{turns:?}");
    let history = bus.client.tool_history(&session).await.expect("tool history");
    assert!(history.generations.len() > 3, "the demo's toggles: {history:?}");

    let browser = Browser::start().await;
    open_live(&browser, &format!("{}#/session/{session}", bus.url)).await;
    browser
        .wait_until("return document.getElementById('turns-body').dataset.history === 'loaded'", WAIT, "past turns")
        .await;
    let rows = turn_rows(&browser).await;
    let shown: Vec<&str> = rows.iter().map(|(id, ..)| id.as_str()).collect();
    assert_eq!(shown, ["turn-2", "turn-1", "turn-0"], "every past turn, newest first");
    for turn in &turns {
        let (_, status, text, _) = rows.iter().find(|(id, ..)| *id == turn.turn_id).expect("a row");
        assert_eq!(status, "completed", "{text}");
        assert_eq!(turn.worker.as_deref(), Some(worker_id.as_str()), "the bus names the worker: {turn:?}");
        let duration = format!("{:.2} s", turn.duration_ms.expect("a duration") as f64 / 1000.0);
        for expected in ["finished", &turn.tokens().to_string(), &worker_id, &duration] {
            assert!(text.contains(expected), "the row of {} lacks {expected:?}: {text}", turn.turn_id);
        }
    }
    browser
        .wait_until("return document.getElementById('tool-history').dataset.history === 'loaded'", WAIT, "tool history")
        .await;
    let generations: Vec<(u64, String)> = serde_json::from_value(
        browser
            .eval(
                "return Array.from(document.querySelectorAll('#tool-history tr')).map(r => \
                 [Number(r.dataset.generation), r.querySelector('.change').textContent])",
            )
            .await,
    )
    .expect("generation rows");
    let mut expected: Vec<(u64, String)> = history
        .generations
        .iter()
        .map(|g| {
            let change: Vec<String> =
                g.joined.iter().map(|m| format!("+{m}")).chain(g.left.iter().map(|m| format!("−{m}"))).collect();
            (g.generation, change.join(" "))
        })
        .collect();
    expected.reverse();
    assert_eq!(generations, expected, "every generation the bus keeps, newest first, with its change");
    browser.screenshot("session-history").await;
    browser.close().await;
}

/// A random W3C trace parent and its trace id.
fn random_traceparent() -> (String, String) {
    let trace_id = format!("{:032x}", uuid::Uuid::new_v4().as_u128());
    let span_id = &format!("{:032x}", uuid::Uuid::new_v4().as_u128())[..16];
    (format!("00-{trace_id}-{span_id}-01"), trace_id)
}

/// Runs turn `turn_id` through a raw request carrying `traceparent`, as a traced caller does.
async fn start_traced_turn(nats: &async_nats::Client, session: &str, turn_id: &str, traceparent: &str) {
    let token = sessionbus_nats::subjects::session_token(session).expect("token");
    let subject = sessionbus_nats::Subjects::default().session_op(&token, sessionbus_nats::Op::StartTurn);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("traceparent", traceparent);
    let body = json!({ "turn_id": turn_id, "input": TurnInput::text("traced") });
    let reply = tokio::time::timeout(
        WAIT,
        nats.request_with_headers(subject, headers, serde_json::to_vec(&body).expect("json").into()),
    )
    .await
    .expect("a reply in time")
    .expect("a reply");
    let failed = reply.headers.as_ref().and_then(|h| h.get(sessionbus_nats::wire::SERVICE_ERROR_CODE)).is_some();
    assert!(!failed, "the traced turn failed: {}", String::from_utf8_lossy(&reply.payload));
}

/// The trace id in the `traceparent` the ledger stored for `turn_id`, read from the
/// state stream.
async fn ledger_trace_id(nats: &async_nats::Client, session: &str, turn_id: &str) -> String {
    let subjects = sessionbus_nats::Subjects::default();
    let subject = subjects.turn(
        &sessionbus_nats::subjects::session_token(session).expect("token"),
        &sessionbus_nats::subjects::turn_token(turn_id).expect("token"),
    );
    let stream = async_nats::jetstream::new(nats.clone())
        .get_stream(sessionbus_nats::STATE_STREAM)
        .await
        .expect("the state stream");
    let stored = stream.get_last_raw_message_by_subject(&subject).await.expect("the ledger record");
    let record: sessionbus_nats::jetstream::records::LedgerRecord =
        serde_json::from_slice(&stored.payload).expect("a ledger record");
    let traceparent = record.traceparent().expect("the ledger stored the call's trace parent");
    traceparent.split('-').nth(1).expect("a trace id").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turns_trace_link_opens_the_trace_its_ledger_recorded_in_jaeger() {
    let jaeger = "http://jaeger.example:16686";
    let bus = Bus::start_with(1, &[], Some(jaeger)).await;
    let nats = bus.server.client().await.expect("connect");
    let session = bus.session_with(&["traced"]).await;
    let (past_parent, past_trace) = random_traceparent();
    start_traced_turn(&nats, &session, "past", &past_parent).await;

    let browser = Browser::start().await;
    open_live(&browser, &format!("{}#/session/{session}", bus.url)).await;
    browser
        .wait_until("return document.getElementById('turns-body').dataset.history === 'loaded'", WAIT, "past turns")
        .await;
    let (live_parent, live_trace) = random_traceparent();
    start_traced_turn(&nats, &session, "live", &live_parent).await;
    browser
        .wait_until(
            "return document.querySelector('tr[data-turn=\"live\"]')?.dataset.status === 'completed'",
            WAIT,
            "the live turn",
        )
        .await;
    let rows = turn_rows(&browser).await;
    for (turn_id, sent) in [("past", &past_trace), ("live", &live_trace)] {
        let recorded = ledger_trace_id(&nats, &session, turn_id).await;
        assert_eq!(&recorded, sent, "the ledger recorded the call's trace");
        let (_, _, text, link) = rows.iter().find(|(id, ..)| id == turn_id).expect("a row");
        assert_eq!(link.as_deref(), Some(format!("{jaeger}/trace/{recorded}").as_str()), "{turn_id}: {text}");
    }
    assert_ne!(past_trace, live_trace);
    browser.screenshot("session-trace-links").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_browser_leaves_nothing_in_its_temp_dir_and_its_driver_exits_by_itself() {
    let browser = Browser::start().await;
    browser.open("about:blank").await;
    let tmp = browser.tmp_dir().to_owned();
    let written: Vec<String> = std::fs::read_dir(&tmp)
        .expect("the browser's temp dir")
        .filter_map(|entry| entry.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    assert!(
        written.iter().any(|name| name.starts_with("org.chromium.") || name.starts_with("scoped_dir")),
        "chromium keeps its profile in the browser's own temp dir: {written:?}"
    );
    assert!(browser.close().await, "chromedriver exits when asked, before anything is killed");
    assert!(!tmp.exists(), "{} is removed", tmp.display());
}

/// The session ids of the sessions page's rows, once `rows` are drawn.
async fn listed_sessions(browser: &Browser, rows: usize, what: &str) -> Vec<String> {
    browser
        .wait_until(&format!("return document.querySelectorAll('#sessions-body tr').length === {rows}"), WAIT, what)
        .await;
    serde_json::from_value(
        browser
            .eval("return Array.from(document.querySelectorAll('#sessions-body tr')).map(r => r.dataset.session)")
            .await,
    )
    .expect("ids")
}

/// Runs `click` (a script that clicks a link or button of the sessions page) and waits
/// until the page drew its table anew.
async fn click_to_new_page(browser: &Browser, click: &str) {
    browser.eval(&format!("document.getElementById('sessions').dataset.old = 'yes'; {click}; return true")).await;
    browser
        .wait_until(
            "const t = document.getElementById('sessions'); return t !== null && t.dataset.old === undefined",
            WAIT,
            "the page drawn anew",
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sessions_page_pages_in_creation_order_and_filters_by_status() {
    const SESSIONS: usize = 53;
    const PAGE: usize = 50;
    let bus = Bus::start(1, &[]).await;
    let mut created = Vec::new();
    for _ in 0..SESSIONS {
        created.push(bus.session_with(&[]).await);
    }
    let closed = [created[3].clone(), created[51].clone()];
    for id in &closed {
        bus.client.close_session(id).await.expect("close");
    }
    let browser = Browser::start().await;
    open_live(&browser, &format!("{}#/sessions", bus.url)).await;
    assert_eq!(listed_sessions(&browser, PAGE, "the first page").await, created[..PAGE], "the oldest first");
    browser.eval("window.__sameDocument = 'yes'; return true").await;
    click_to_new_page(&browser, "document.getElementById('sessions-next').click()").await;
    assert_eq!(listed_sessions(&browser, SESSIONS - PAGE, "the next page").await, created[PAGE..], "the rest");
    assert_eq!(
        browser.eval("return document.getElementById('sessions-next').hidden").await,
        json!(true),
        "the last page"
    );

    let filter = |status: &str| {
        format!(
            "document.getElementById('filter-status').value = '{status}'; document.getElementById('filter-apply').click()"
        )
    };
    click_to_new_page(&browser, &filter("closed")).await;
    assert_eq!(
        browser.eval("return location.hash").await,
        json!("#/sessions?status=closed"),
        "the filter in the address"
    );
    // A filtered page reads a bounded part of the registry: follow `next` to the end.
    let mut shown = Vec::new();
    loop {
        browser
            .wait_until(
                "return document.getElementById('sessions-note').textContent !== '' || \
                 document.querySelectorAll('#sessions-body tr').length > 0",
                WAIT,
                "a filtered page",
            )
            .await;
        let rows = browser.eval("return document.querySelectorAll('#sessions-body tr').length").await;
        shown.extend(listed_sessions(&browser, rows.as_u64().expect("a count") as usize, "a filtered page").await);
        let states = browser
            .eval("return Array.from(document.querySelectorAll('#sessions-body tr')).every(r => r.dataset.status === 'closed')")
            .await;
        assert_eq!(states, Value::Bool(true), "only closed sessions are listed");
        if browser.eval("return document.getElementById('sessions-next').hidden").await == Value::Bool(true) {
            break;
        }
        click_to_new_page(&browser, "document.getElementById('sessions-next').click()").await;
    }
    assert_eq!(shown, closed, "every closed session, in creation order");

    click_to_new_page(&browser, &filter("open")).await;
    let open = listed_sessions(&browser, PAGE, "the first page of open sessions").await;
    let expected: Vec<String> = created.iter().filter(|id| !closed.contains(id)).take(PAGE).cloned().collect();
    assert_eq!(open, expected, "open sessions only, oldest first");
    assert_eq!(browser.eval("return window.__sameDocument").await, json!("yes"), "paged and filtered without a reload");
    browser.screenshot("sessions-filtered").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_dropped_without_close_stops_its_chromium_and_leaves_nothing_in_its_temp_dir() {
    let browser = Browser::start().await;
    browser.open("about:blank").await;
    let tmp = browser.tmp_dir().to_owned();
    let using_tmp = || {
        let needle = tmp.to_string_lossy().into_owned();
        std::fs::read_dir("/proc")
            .expect("/proc")
            .filter_map(|entry| std::fs::read(entry.ok()?.path().join("cmdline")).ok())
            .filter(|cmdline| String::from_utf8_lossy(cmdline).contains(&needle))
            .count()
    };
    assert!(using_tmp() > 0, "chromium runs with its profile in the browser's temp dir");
    // What a test that panicked before `close` does.
    drop(browser);
    assert_eq!(using_tmp(), 0, "no chromium process is left running");
    assert!(!tmp.exists(), "{} is removed", tmp.display());
}
