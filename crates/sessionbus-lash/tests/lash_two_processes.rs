//! Two lash runtimes in two OS processes (the `lash-on-nats` binary) share one session
//! through the JetStream stores at lash's Durable tier, with scripted models, and run its
//! turns: one holds the session's lane at a time; when the holder is killed (or stalls)
//! mid-turn, the other takes the session over after the lease TTL and completes its
//! turns; and the session read back by a third, fresh store holds exactly the nodes the
//! runtimes were told were committed, once each.
//!
//! Each peer says what the store answered to lash (every lease claim and commit) as JSON
//! lines on stdout; the tests wait on those lines, never on sleeps.

mod store_support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use lash_core::{SessionCommitStore as _, SessionReadScope, TurnInputStore as _};
use serde_json::json;
use sessionbus_api::SessionStateService as _;
use sessionbus_lash::peer::protocol::{Event, LeaseOutcome};
use sessionbus_lash::store::JetStreamStoreFactory;
use store_support::Deployment;

/// lash's lease TTL and renew interval in these tests: a dead holder's lane is free
/// again at most this long after its last renewal, and a live holder keeps it while its
/// renewals are less than 4 s late (a loaded 2-core machine).
const LEASE_TTL_MS: u64 = 6_000;
const LEASE_RENEW_MS: u64 = 2_000;
/// How long any one awaited fact may take on a loaded 2-core machine.
const WAIT: Duration = Duration::from_secs(90);
const SESSION: &str = "shared";

/// The inputs of the tests: `(input id, text)`. "Wait a while" calls the `sleep` tool for
/// 8 s (the test stops its holder inside it); "Add 2 and 3" calls `add`.
const SEED: (&str, &str) = ("seed", "Say hello");
const SLOW: (&str, &str) = ("slow", "Wait a while");
const QUICK: (&str, &str) = ("quick", "Add 2 and 3");

/// One `lash-on-nats` process, its events as they arrive.
struct PeerProcess {
    label: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    events: Arc<(Mutex<Vec<Event>>, Condvar)>,
    /// When each event arrived (same positions as `events`).
    arrivals: Arc<Mutex<Vec<Instant>>>,
}

impl PeerProcess {
    /// A peer on the deployment's own sessions (no namespace): the ones bus ops read.
    fn start(deployment: &Deployment, label: &'static str) -> Self {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scripts/two_processes.json");
        let mut child = Command::new(env!("CARGO_BIN_EXE_lash-on-nats"))
            .args(["--label", label, "--url", &deployment.url(), "--script", script])
            .args(["--lease-ttl-ms", &LEASE_TTL_MS.to_string(), "--lease-renew-ms", &LEASE_RENEW_MS.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|err| panic!("could not start lash-on-nats `{label}`: {err}"));
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("`{label}` has no stdout"));
        let events = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let (seen, arrived) = (Arc::clone(&events), Arc::clone(&arrivals));
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let event: Event = serde_json::from_str(&line)
                    .unwrap_or_else(|err| panic!("`{label}` said a line that is not an event ({err}): {line}"));
                let (list, changed) = &*seen;
                let mut list = list.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                arrived.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(Instant::now());
                list.push(event);
                drop(list);
                changed.notify_all();
            }
        });
        let stdin = child.stdin.take();
        let peer = Self { label, child, stdin, events, arrivals };
        peer.wait_for("its ready line", |event| matches!(event, Event::Ready { .. }));
        peer
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn send(&mut self, command: serde_json::Value) {
        let stdin = self.stdin.as_mut().unwrap_or_else(|| panic!("`{}` has no stdin", self.label));
        writeln!(stdin, "{command}").unwrap_or_else(|err| panic!("could not write to `{}`: {err}", self.label));
    }

    fn enqueue(&mut self, (input_id, text): (&str, &str)) {
        self.send(json!({"op": "enqueue", "session": SESSION, "input_id": input_id, "text": text}));
    }

    fn drain(&mut self) {
        self.send(json!({"op": "drain", "session": SESSION, "deadline_ms": WAIT.as_millis() as u64}));
    }

    /// When the event at `position` arrived.
    fn arrival(&self, position: usize) -> Instant {
        let arrivals = self.arrivals.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *arrivals.get(position).unwrap_or_else(|| panic!("`{}` said no event {position}", self.label))
    }

    fn events(&self) -> Vec<Event> {
        self.events.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Waits until the peer has said an event matching `wanted` (counting from its first
    /// event) and returns its position; fails with everything it said if it does not
    /// within [`WAIT`], or says `failed` first.
    fn wait_for(&self, what: &str, wanted: impl Fn(&Event) -> bool) -> usize {
        self.wait_for_after(0, what, wanted)
    }

    fn wait_for_after(&self, from: usize, what: &str, wanted: impl Fn(&Event) -> bool) -> usize {
        let deadline = Instant::now() + WAIT;
        let (list, changed) = &*self.events;
        let mut events = list.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        loop {
            if let Some(found) = events.iter().skip(from).position(&wanted) {
                return from + found;
            }
            if let Some(failed) = events.iter().skip(from).find(|event| matches!(event, Event::Failed { .. })) {
                panic!("`{}` failed while the test waited for {what}: {failed:?}\nit said: {events:#?}", self.label);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "`{}` did not say {what} within {WAIT:?}; it said: {events:#?}", self.label);
            events = changed.wait_timeout(events, left).unwrap_or_else(|poisoned| poisoned.into_inner()).0;
        }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .unwrap_or_else(|err| panic!("could not run kill {signal}: {err}"));
        assert!(status.success(), "kill {signal} {} failed", self.pid());
    }

    fn sigkill(&mut self) {
        self.child.kill().unwrap_or_else(|err| panic!("could not SIGKILL `{}`: {err}", self.label));
        self.child.wait().unwrap_or_else(|err| panic!("`{}` was not reaped: {err}", self.label));
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The fencing tokens of the leases `peer` acquired, in order.
fn acquired_tokens(peer: &PeerProcess) -> Vec<u64> {
    peer.events()
        .into_iter()
        .filter_map(|event| match event {
            Event::Lease { outcome: LeaseOutcome::Acquired, fencing_token, .. } => Some(fencing_token),
            _ => None,
        })
        .collect()
}

/// The `(owner id, fencing token)` of every holder `peer` found the lane busy with.
fn busy_holders(peer: &PeerProcess) -> Vec<(String, u64)> {
    peer.events()
        .into_iter()
        .filter_map(|event| match event {
            Event::Lease { outcome: LeaseOutcome::Busy, owner_id, fencing_token, .. } => {
                Some((owner_id, fencing_token))
            }
            _ => None,
        })
        .collect()
}

/// Every node id the store told `peers` it stored.
fn acknowledged_nodes(peers: &[&PeerProcess]) -> BTreeSet<String> {
    peers
        .iter()
        .flat_map(|peer| peer.events())
        .filter_map(|event| match event {
            Event::Committed { node_ids, .. } => Some(node_ids),
            _ => None,
        })
        .flatten()
        .collect()
}

/// Seeds the session through `a`, then starts the slow turn on `a` and waits until its
/// tool runs: `a` holds the lane, mid-turn. Returns `a`'s fencing token.
fn a_holds_the_lane_mid_turn(a: &mut PeerProcess) -> u64 {
    a.enqueue(SEED);
    a.drain();
    let seeded = a.wait_for("the seed turn drained", |event| matches!(event, Event::Drained { .. }));
    a.enqueue(SLOW);
    a.drain();
    a.wait_for_after(seeded, "the slow turn's tool starting", |event| matches!(event, Event::ToolStarted { .. }));
    let tokens = acquired_tokens(a);
    *tokens.last().unwrap_or_else(|| panic!("`a` runs a turn, so it acquired the lane: {:#?}", a.events()))
}

/// `b` enqueues the quick input and drains the session while `a` holds the lane
/// mid-turn: `b` finds the lane busy with `a`'s lease, and waits.
fn b_finds_the_lane_busy(b: &mut PeerProcess, a_token: u64) {
    b.enqueue(QUICK);
    b.drain();
    b.wait_for("the lane busy", |event| matches!(event, Event::LaneBusy { .. }));
    let busy = busy_holders(b);
    assert!(
        busy.contains(&("a".to_owned(), a_token)),
        "while `a` held the lane (token {a_token}), `b` found it busy with `a`: {busy:?}"
    );
    assert!(acquired_tokens(b).is_empty(), "`b` did not get the lane while `a` held it: {:#?}", b.events());
}

/// Once `a` stopped renewing (at `stopped`), `b` takes the lane over (after the lease
/// TTL, under a later fencing token) and runs every pending input, the one `a` never
/// finished included.
fn b_takes_over(b: &PeerProcess, a_token: u64, stopped: Instant) {
    let acquired =
        b.wait_for("the lane", |event| matches!(event, Event::Lease { outcome: LeaseOutcome::Acquired, .. }));
    eprintln!(
        "`b` took the lane over {:?} after `a` stopped (lease TTL {LEASE_TTL_MS} ms, renewed every {LEASE_RENEW_MS} ms)",
        b.arrival(acquired).saturating_duration_since(stopped)
    );
    b.wait_for_after(acquired, "the session drained", |event| matches!(event, Event::Drained { .. }));
    let b_tokens = acquired_tokens(b);
    assert!(
        !b_tokens.is_empty() && b_tokens.iter().all(|token| *token > a_token),
        "`b` holds the lane only under fencing tokens after `a`'s ({a_token}): {b_tokens:?}"
    );
    let done = b.events().iter().filter(|event| matches!(event, Event::TurnDone { .. })).count();
    assert!(done >= 1, "`b` completed the session's pending turns: {:#?}", b.events());
}

/// The session as a fresh store (a new connection, replaying the log) reads it: every
/// node a runtime was told was stored is there, once; nothing else is (a node only a
/// refused commit carried included); each input was applied once, and is in exactly one
/// node of the session's active path (the partial turn of a runtime that stopped
/// mid-turn stays behind as a branch off that path). Bus ops read the same session:
/// the same nodes and the same active path.
async fn the_session_is_consistent(deployment: &Deployment, peers: [&PeerProcess; 2]) {
    let factory = JetStreamStoreFactory::new(deployment.backend(), deployment.clock());
    let store = factory.store(SESSION).unwrap_or_else(|err| panic!("open the session's store: {err}"));
    let read = store
        .load_session(SessionReadScope::FullGraph)
        .await
        .unwrap_or_else(|err| panic!("read the session: {err}"))
        .unwrap_or_else(|| panic!("the session exists"));
    let nodes: BTreeMap<&str, &lash_core::SessionNodeRecord> =
        read.graph.nodes.iter().map(|node| (node.node_id.as_str(), node)).collect();
    assert_eq!(nodes.len(), read.graph.nodes.len(), "0 duplicated nodes: {:#?}", read.graph.nodes);
    let stored: BTreeSet<String> = nodes.keys().map(|id| (*id).to_owned()).collect();
    let acknowledged = acknowledged_nodes(&peers);
    let lost: Vec<_> = acknowledged.difference(&stored).collect();
    assert!(lost.is_empty(), "0 lost nodes: acknowledged to a runtime but not stored: {lost:?}");
    let unacknowledged: Vec<_> = stored.difference(&acknowledged).collect();
    assert!(
        unacknowledged.is_empty(),
        "every stored node was acknowledged to a runtime (none came from a refused commit); these were not: \
         {unacknowledged:?}"
    );

    let mut active = Vec::new();
    let mut next = read.graph.leaf_node_id.as_deref();
    while let Some(id) = next {
        let node = nodes.get(id).unwrap_or_else(|| panic!("the active path's node `{id}` is stored"));
        active.push(*node);
        next = node.parent_node_id.as_deref();
    }
    let applications = store
        .list_turn_input_applications(SESSION)
        .await
        .unwrap_or_else(|err| panic!("read the session's input applications: {err}"));
    // lash names an enqueued input by its own id; the peer's input id is its source key.
    let applied: Vec<&str> = applications.iter().filter_map(|application| application.source_key.as_deref()).collect();
    for (input_id, text) in [SEED, SLOW, QUICK] {
        let times = applied.iter().filter(|applied| **applied == format!("host:{input_id}")).count();
        assert_eq!(times, 1, "input `{input_id}` applied once, applications: {applied:?}");
        let holding =
            active.iter().filter(|node| serde_json::to_string(node).is_ok_and(|json| json.contains(text))).count();
        assert_eq!(holding, 1, "the text of `{input_id}` is in exactly one node of the active path: {active:#?}");
    }

    let bus = deployment.bus_host().await.snapshot_session(SESSION).await.expect("the bus's snapshot");
    let on_the_bus: BTreeSet<String> = bus.session_graph.nodes.iter().map(|node| node.node_id.clone()).collect();
    assert_eq!(on_the_bus, stored, "bus ops read the nodes lash's store holds");
    assert_eq!(bus.session_graph.leaf_node_id, read.graph.leaf_node_id, "and the same leaf");
}

/// Two runtimes `a` and `b` on one session: `a` holds the lane inside its slow turn,
/// and `b` was told the lane is busy. Returns both and `a`'s fencing token.
fn a_holds_the_lane_b_waits(deployment: &Deployment) -> (PeerProcess, PeerProcess, u64) {
    let mut a = PeerProcess::start(deployment, "a");
    let mut b = PeerProcess::start(deployment, "b");
    let a_token = a_holds_the_lane_mid_turn(&mut a);
    b_finds_the_lane_busy(&mut b, a_token);
    (a, b, a_token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_killed_mid_turn_is_taken_over_after_the_lease_ttl_and_no_node_is_lost_or_duplicated() {
    let deployment = Deployment::single().await;
    let (mut a, b, a_token) = a_holds_the_lane_b_waits(&deployment);
    a.sigkill();
    b_takes_over(&b, a_token, Instant::now());
    let a_finished = a.events().iter().filter(|event| matches!(event, Event::TurnDone { .. })).count();
    assert_eq!(a_finished, 1, "`a` finished the seed turn only: it was killed inside the slow one");
    the_session_is_consistent(&deployment, [&a, &b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_stalled_past_its_lease_ttl_is_fenced_off_and_its_late_commit_is_refused() {
    let deployment = Deployment::single().await;
    let (a, b, a_token) = a_holds_the_lane_b_waits(&deployment);
    // `a` stalls (SIGSTOP) mid-turn, holding the lane, past its lease TTL.
    a.signal("-STOP");
    b_takes_over(&b, a_token, Instant::now());
    let resumed = a.events().len();
    a.signal("-CONT");
    // Resumed, `a` finishes its tool call and commits: the store refuses (the head moved
    // on under `b`'s generation, and `a`'s input claim was taken over), and lash ends
    // the turn as failed. Its lease renewal is refused too, when it runs first.
    a.wait_for_after(resumed, "its stale turn failing", |event| matches!(event, Event::Failed { .. }));
    let after = a.events().split_off(resumed);
    assert!(
        !after.iter().any(|event| matches!(event, Event::Committed { .. } | Event::TurnDone { .. })),
        "nothing `a` commits after losing the lane is stored: {after:#?}"
    );
    let fenced = ["HeadRevisionConflict", "TurnInputClaimSuperseded", "SessionExecutionLeaseExpired"];
    let refusals: Vec<&str> = after
        .iter()
        .filter_map(|event| match event {
            Event::CommitRefused { error_kind, .. } => Some(error_kind.as_str()),
            _ => None,
        })
        .collect();
    assert!(
        !refusals.is_empty() && refusals.iter().all(|kind| fenced.contains(kind)),
        "`a`'s late commit is refused by the store's fence ({fenced:?}), got {refusals:?} in {after:#?}"
    );
    the_session_is_consistent(&deployment, [&a, &b]).await;
}
