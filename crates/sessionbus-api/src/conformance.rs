//! The conformance suite: the behaviour every sessionbus host must share.
//!
//! Each check takes a [`HostFactory`] and builds fresh hosts from it, so the same
//! checks run unchanged against [`crate::memory::InMemoryHost`], the JetStream host
//! and every bus stack. [`conformance_tests!`](crate::conformance_tests) expands to
//! one `#[tokio::test]` per check. Checks use fresh UUID session ids, so several may
//! share one server.
//!
//! Concurrency checks do not pass by luck: a [`GatedExecutor`] holds each turn open
//! until the check releases it.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};

use crate::{
    AppendSessionNodesRequest, AppendSessionNodesResult, CancelReply, EchoExecutor, ErrorKind, PluginError,
    PluginMessage, ProtocolEvent, SessionAppendNode, SessionCreateRequest, SessionHost, SessionListQuery,
    SessionRelation, SessionSnapshot, SessionStartPoint, SessionStatus, SessionSummary, SessionTurnRequest,
    ToolManifest, ToolState, TraceContext, TraceEvent, TurnContext, TurnExecutor, TurnFinish, TurnInput, TurnLease,
    TurnListQuery, TurnOutcome, TurnOutput, TurnStatus, TurnStop, TurnSummary,
};

/// A host under test that can also hand out views bound to one session.
pub trait ConformanceHost: SessionHost {
    /// A view of the same host bound to `session_id` (answers `snapshot_current`).
    fn bound_to(&self, session_id: &str) -> Arc<dyn ConformanceHost>;
}

impl ConformanceHost for crate::memory::InMemoryHost {
    fn bound_to(&self, session_id: &str) -> Arc<dyn ConformanceHost> {
        Arc::new(crate::memory::InMemoryHost::bound_to(self, session_id))
    }
}

/// Builds hosts for the suite.
#[async_trait::async_trait]
pub trait HostFactory: Send + Sync {
    /// A fresh, unbound host whose turns run on `executor`.
    async fn host(&self, executor: Arc<dyn TurnExecutor>) -> Arc<dyn ConformanceHost>;
}

/// How long a check waits for anything before failing instead of hanging.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// An executor that echoes like [`EchoExecutor`] but holds every run open until the
/// check calls [`GatedExecutor::release`] (or [`GatedExecutor::fail`]), and counts runs.
pub struct GatedExecutor {
    gate: Semaphore,
    failures: AtomicUsize,
    started: AtomicUsize,
    runs: AtomicUsize,
    started_notify: Notify,
}

impl GatedExecutor {
    /// A closed gate.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            gate: Semaphore::new(0),
            failures: AtomicUsize::new(0),
            started: AtomicUsize::new(0),
            runs: AtomicUsize::new(0),
            started_notify: Notify::new(),
        })
    }

    /// Lets one held run finish successfully.
    pub fn release(&self) {
        self.gate.add_permits(1);
    }

    /// Lets one held run finish with an error.
    pub fn fail(&self) {
        self.failures.fetch_add(1, Ordering::SeqCst);
        self.gate.add_permits(1);
    }

    /// How many runs have finished (successfully or not).
    pub fn runs(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` runs have started.
    pub async fn wait_started(&self, n: usize) {
        within(async {
            loop {
                let notified = self.started_notify.notified();
                if self.started.load(Ordering::SeqCst) >= n {
                    return;
                }
                notified.await;
            }
        })
        .await;
    }
}

#[async_trait::async_trait]
impl TurnExecutor for GatedExecutor {
    async fn run(&self, context: TurnContext) -> Result<TurnOutput, PluginError> {
        self.started.fetch_add(1, Ordering::SeqCst);
        self.started_notify.notify_waiters();
        let permit = self.gate.acquire().await.map_err(|_| PluginError::Unavailable("gate closed".to_string()))?;
        permit.forget();
        self.runs.fetch_add(1, Ordering::SeqCst);
        let fail = self.failures.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
        if fail {
            return Err(PluginError::Invoke("the gated executor was told to fail".to_string()));
        }
        EchoExecutor.run(context).await
    }
}

async fn within<T>(future: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(CHECK_TIMEOUT, future).await {
        Ok(value) => value,
        Err(_) => panic!("conformance check step took longer than {CHECK_TIMEOUT:?}"),
    }
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

async fn echo_host(factory: &dyn HostFactory) -> Arc<dyn ConformanceHost> {
    factory.host(Arc::new(EchoExecutor)).await
}

async fn create_root(host: &dyn ConformanceHost) -> String {
    let id = new_id();
    within(host.create_session(SessionCreateRequest::root(Some(id.clone())))).await.expect("create a root session");
    id
}

fn turn(session_id: &str, turn_id: &str, text: &str) -> SessionTurnRequest {
    SessionTurnRequest::for_turn(session_id, turn_id, TurnInput::text(text)).expect("a valid turn request")
}

fn manifest(name: &str) -> ToolManifest {
    ToolManifest::new(format!("tool:{name}"), name, format!("The {name} tool."))
}

fn tools(names: &[&str]) -> ToolState {
    let mut state = ToolState::default();
    for name in names {
        state.insert(manifest(name));
    }
    state
}

fn appended(result: AppendSessionNodesResult) -> (Vec<String>, String) {
    match result {
        AppendSessionNodesResult::Appended { node_ids, leaf_node_id } => (node_ids, leaf_node_id),
        other => panic!("expected appended, got {other:?}"),
    }
}

fn assert_kind<T: std::fmt::Debug>(result: Result<T, PluginError>, kind: ErrorKind, contains: &str) {
    match result {
        Err(err) => {
            assert_eq!(err.kind(), kind, "wrong error kind: {err:?}");
            assert!(err.message().contains(contains), "{:?} does not contain {contains:?}", err.message());
        }
        Ok(value) => panic!("expected a {kind:?} error containing {contains:?}, got Ok({value:?})"),
    }
}

fn graph_texts(snapshot: &SessionSnapshot) -> Vec<String> {
    snapshot.session_graph.nodes.iter().filter_map(|n| n.conversation_text()).collect()
}

/// Checks that the graph is one chain: each node's parent is the node before it, and
/// the leaf is the last node.
fn assert_single_chain(snapshot: &SessionSnapshot) {
    let nodes = &snapshot.session_graph.nodes;
    let mut seen = HashSet::new();
    for (i, node) in nodes.iter().enumerate() {
        assert!(seen.insert(node.node_id.clone()), "node id {} stored twice", node.node_id);
        let expected_parent = i.checked_sub(1).map(|p| nodes[p].node_id.clone());
        assert_eq!(node.parent_node_id, expected_parent, "node {i} forks the chain");
    }
    assert_eq!(snapshot.session_graph.leaf_node_id, nodes.last().map(|n| n.node_id.clone()));
}

// ---- snapshots -------------------------------------------------------------------

/// An unbound service answers `snapshot_current` with the seed's "unavailable" error;
/// a bound one answers its session.
pub async fn snapshot_current_follows_binding(factory: &dyn HostFactory) {
    let host = echo_host(factory).await;
    assert_kind(within(host.snapshot_current()).await, ErrorKind::Session, "unavailable");
    let id = create_root(host.as_ref()).await;
    let bound = host.bound_to(&id);
    let snapshot = within(bound.snapshot_current()).await.expect("bound snapshot");
    assert_eq!(snapshot.session_id, id);
}

/// An unknown session id answers ``unknown session `id` ``.
pub async fn snapshot_unknown_session(factory: &dyn HostFactory) {
    let host = echo_host(factory).await;
    let id = new_id();
    assert_kind(within(host.snapshot_session(&id)).await, ErrorKind::Session, &format!("unknown session `{id}`"));
}

// ---- create ----------------------------------------------------------------------

/// The id given is used; without one a new UUID is made; an existing id is refused.
pub async fn create_ids_and_duplicates(factory: &dyn HostFactory) {
    let host = echo_host(factory).await;
    let id = create_root(host.as_ref()).await;
    assert_kind(
        within(host.create_session(SessionCreateRequest::root(Some(id.clone())))).await,
        ErrorKind::Conflict,
        &format!("session `{id}` already exists"),
    );
    let handle = within(host.create_session(SessionCreateRequest::root(None))).await.expect("create without id");
    assert!(uuid::Uuid::parse_str(&handle.session_id).is_ok(), "{} is not a UUID", handle.session_id);
    assert_eq!(handle.parent_session_id, None);
    let snapshot = within(host.snapshot_session(&handle.session_id)).await.expect("snapshot");
    assert_eq!(snapshot.turn_index, 0);
    assert!(snapshot.session_graph.nodes.is_empty());
}

/// Invalid session ids are `InvalidRequest` on create.
pub async fn create_refuses_invalid_ids(factory: &dyn HostFactory) {
    let host = echo_host(factory).await;
    for bad in ["", "   ", "line\nbreak", &"x".repeat(300)] {
        assert_kind(
            within(host.create_session(SessionCreateRequest::root(Some(bad.to_string())))).await,
            ErrorKind::InvalidRequest,
            "session id",
        );
    }
}

/// A child relation records its parent; an unknown parent is refused.
pub async fn create_child_records_parent(factory: &dyn HostFactory) {
    let host = echo_host(factory).await;
    let parent = create_root(host.as_ref()).await;
    let child = new_id();
    let handle = within(host.create_session(SessionCreateRequest::child(
        Some(child.clone()),
        parent.clone(),
        SessionStartPoint::Empty,
    )))
    .await
    .expect("create child");
    assert_eq!(handle.session_id, child);
    assert_eq!(handle.parent_session_id.as_deref(), Some(parent.as_str()));
    let orphan = SessionCreateRequest::child(Some(new_id()), new_id(), SessionStartPoint::Empty);
    assert_kind(within(host.create_session(orphan)).await, ErrorKind::Session, "unknown session");
}

/// `existing_session`, `current_session` and `snapshot` start points copy history;
/// `initial_nodes` are appended after it.
pub async fn create_honours_start_points(factory: &dyn HostFactory) {
    let host = echo_host(factory).await;
    let source = create_root(host.as_ref()).await;
    within(host.append_session_nodes(
        &source,
        AppendSessionNodesRequest {
            nodes: vec![SessionAppendNode::message("User", "hello")],
            requires_ancestor_node_id: None,
        },
    ))
    .await
    .expect("append to source");
    let source_snapshot = within(host.snapshot_session(&source)).await.expect("source snapshot");

    let mut from_existing = SessionCreateRequest::root(Some(new_id()));
    from_existing.start = SessionStartPoint::ExistingSession { session_id: source.clone() };
    from_existing.initial_nodes = vec![SessionAppendNode::message("User", "next")];
    let existing = within(host.create_session(from_existing)).await.expect("from existing");
    let copy = within(host.snapshot_session(&existing.session_id)).await.expect("snapshot");
    assert_eq!(graph_texts(&copy), ["hello", "next"]);
    assert_single_chain(&copy);

    let mut from_current = SessionCreateRequest::root(Some(new_id()));
    from_current.start = SessionStartPoint::CurrentSession;
    let current = within(host.bound_to(&source).create_session(from_current)).await.expect("from current");
    let copy = within(host.snapshot_session(&current.session_id)).await.expect("snapshot");
    assert_eq!(copy.session_graph, source_snapshot.session_graph);

    let mut from_snapshot = SessionCreateRequest::root(Some(new_id()));
    from_snapshot.start = SessionStartPoint::Snapshot { snapshot: Box::new(source_snapshot.clone()) };
    let snap = within(host.create_session(from_snapshot)).await.expect("from snapshot");
    let copy = within(host.snapshot_session(&snap.session_id)).await.expect("snapshot");
    assert_eq!(copy.session_graph, source_snapshot.session_graph);
    assert_eq!(copy.session_id, snap.session_id);

    let mut missing = SessionCreateRequest::root(Some(new_id()));
    missing.start = SessionStartPoint::ExistingSession { session_id: new_id() };
    assert_kind(within(host.create_session(missing)).await, ErrorKind::Session, "unknown session");
}

// ---- tool state ------------------------------------------------------------------

/// Generation 0 creates; a stale generation is `Conflict` with
/// `generation mismatch: expected X, actual Y`; success returns a larger generation.
pub async fn tool_state_is_strict_compare_and_set(factory: &dyn HostFactory) {
    let host = echo_host(factory).await;
    let id = create_root(host.as_ref()).await;
    let empty = within(host.tool_state(&id)).await.expect("tool state");
    assert_eq!(empty.generation, 0);
    assert!(empty.tools.is_empty());
    let first = within(host.apply_tool_state(&id, tools(&["bash", "read_file"]))).await.expect("create");
    assert!(first > 0);
    assert_kind(
        within(host.apply_tool_state(&id, tools(&["bash"]))).await,
        ErrorKind::Conflict,
        &format!("generation mismatch: expected 0, actual {first}"),
    );
    let mut stale = tools(&["bash"]);
    stale.generation = first + 1000;
    assert_kind(
        within(host.apply_tool_state(&id, stale)).await,
        ErrorKind::Conflict,
        &format!("generation mismatch: expected {}, actual {first}", first + 1000),
    );
    let mut current = within(host.tool_state(&id)).await.expect("tool state");
    assert_eq!(current.generation, first);
    current.set_membership("tool:bash", false).expect("toggle");
    let second = within(host.apply_tool_state(&id, current)).await.expect("update");
    assert!(second > first, "generation must grow: {first} -> {second}");
    let stored = within(host.tool_state(&id)).await.expect("tool state");
    assert_eq!(stored.generation, second);
    assert!(!stored.tools["tool:bash"].is_member());
}

/// The catalog lists member tools only, projected to id, name, description,
/// bindings, activation.
pub async fn tool_catalog_projects_members(factory: &dyn HostFactory) {
    let host = echo_host(factory).await;
    let id = create_root(host.as_ref()).await;
    let mut state = tools(&["bash", "read_file", "grep"]);
    state.set_membership("tool:grep", false).expect("toggle");
    within(host.apply_tool_state(&id, state)).await.expect("apply");
    let catalog = within(host.tool_catalog(&id)).await.expect("catalog");
    let names: Vec<&str> = catalog.iter().filter_map(|e| e["name"].as_str()).collect();
    assert_eq!(names, ["bash", "read_file"]);
    assert_eq!(
        catalog[0],
        serde_json::json!({"id":"tool:bash","name":"bash","description":"The bash tool.","bindings":{},"activation":"always"})
    );
}

/// `shared_tool_catalog` hands out the same `Arc` while the generation is unchanged,
/// and a new one after a change.
pub async fn shared_tool_catalog_reuses_arc(factory: &dyn HostFactory) {
    let host = echo_host(factory).await;
    let id = create_root(host.as_ref()).await;
    within(host.apply_tool_state(&id, tools(&["bash"]))).await.expect("apply");
    let first = within(host.shared_tool_catalog(&id)).await.expect("catalog");
    let second = within(host.shared_tool_catalog(&id)).await.expect("catalog");
    assert!(Arc::ptr_eq(&first, &second), "an unchanged catalog must reuse its Arc");
    within(host.set_tool_membership(&id, &["bash".to_string()], false)).await.expect("toggle");
    let third = within(host.shared_tool_catalog(&id)).await.expect("catalog");
    assert!(!Arc::ptr_eq(&first, &third));
    assert!(third.is_empty());
}

/// Toggling a tool nobody registered answers ``unknown tool `x` `` and changes nothing.
pub async fn set_tool_membership_unknown_tool(factory: &dyn HostFactory) {
    let host = echo_host(factory).await;
    let id = create_root(host.as_ref()).await;
    let generation = within(host.apply_tool_state(&id, tools(&["bash"]))).await.expect("apply");
    assert_kind(
        within(host.set_tool_membership(&id, &["nope".to_string()], false)).await,
        ErrorKind::InvalidRequest,
        "unknown tool `nope`",
    );
    assert_eq!(within(host.tool_state(&id)).await.expect("state").generation, generation);
}

/// N tasks toggle their own tools at once: every acknowledged generation is
/// distinct and the final state equals the model (each tool's last toggle).
pub async fn concurrent_membership_loses_no_update(factory: &dyn HostFactory) {
    const TASKS: usize = 8;
    const TOGGLES: usize = 10;
    let host = echo_host(factory).await;
    let id = create_root(host.as_ref()).await;
    let names: Vec<String> = (0..TASKS).map(|i| format!("tool{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    within(host.apply_tool_state(&id, tools(&refs))).await.expect("apply");
    let tasks = names.iter().enumerate().map(|(task, name)| {
        let host = Arc::clone(&host);
        let id = id.clone();
        let name = name.clone();
        async move {
            let mut acknowledged = Vec::new();
            for toggle in 0..TOGGLES {
                let present = (toggle + task) % 2 == 1;
                let generation = host
                    .set_tool_membership(&id, std::slice::from_ref(&name), present)
                    .await
                    .unwrap_or_else(|err| panic!("toggle {name}: {err}"));
                acknowledged.push(generation);
            }
            (name, (TOGGLES - 1 + task) % 2 == 1, acknowledged)
        }
    });
    let results = within(futures::future::join_all(tasks)).await;
    let mut generations = HashSet::new();
    let mut model = BTreeMap::new();
    for (name, last_present, acknowledged) in results {
        for generation in acknowledged {
            assert!(generations.insert(generation), "generation {generation} acknowledged twice");
        }
        model.insert(format!("tool:{name}"), last_present);
    }
    assert_eq!(generations.len(), TASKS * TOGGLES);
    let stored = within(host.tool_state(&id)).await.expect("state");
    let actual: BTreeMap<String, bool> = stored.iter().map(|(id, e)| (id.clone(), e.is_member())).collect();
    assert_eq!(actual, model, "a concurrent toggle was lost");
    assert_eq!(stored.generation, generations.into_iter().max().unwrap_or_default());
}

// ---- appends ---------------------------------------------------------------------

/// Nodes chain onto the leaf; each node's parent is the previous leaf.
pub async fn append_chains_onto_leaf(factory: &dyn HostFactory) {
    let host = echo_host(factory).await;
    let id = create_root(host.as_ref()).await;
    let first = appended(
        within(host.append_session_nodes(
            &id,
            AppendSessionNodesRequest {
                nodes: vec![SessionAppendNode::message("User", "a"), SessionAppendNode::message("Assistant", "b")],
                requires_ancestor_node_id: None,
            },
        ))
        .await
        .expect("append"),
    );
    assert_eq!(first.0.len(), 2);
    assert_eq!(first.1, first.0[1]);
    let second = appended(
        within(host.append_session_nodes(
            &id,
            AppendSessionNodesRequest {
                nodes: vec![SessionAppendNode::message("User", "c")],
                requires_ancestor_node_id: Some(first.0[0].clone()),
            },
        ))
        .await
        .expect("append with an ancestor on the path"),
    );
    let snapshot = within(host.snapshot_session(&id)).await.expect("snapshot");
    assert_single_chain(&snapshot);
    assert_eq!(graph_texts(&snapshot), ["a", "b", "c"]);
    assert_eq!(snapshot.session_graph.leaf_node_id.as_deref(), Some(second.1.as_str()));
    assert_kind(
        within(host.append_session_nodes(
            &new_id(),
            AppendSessionNodesRequest {
                nodes: vec![SessionAppendNode::message("User", "x")],
                requires_ancestor_node_id: None,
            },
        ))
        .await,
        ErrorKind::Session,
        "unknown session",
    );
}

/// An ancestor that is not on the active path answers `StaleBranch` with the current
/// leaf, and nothing is written.
pub async fn append_stale_ancestor_writes_nothing(factory: &dyn HostFactory) {
    let host = echo_host(factory).await;
    let id = create_root(host.as_ref()).await;
    let stale = within(host.append_session_nodes(
        &id,
        AppendSessionNodesRequest {
            nodes: vec![SessionAppendNode::message("User", "x")],
            requires_ancestor_node_id: Some("nowhere".into()),
        },
    ))
    .await
    .expect("append");
    assert_eq!(stale, AppendSessionNodesResult::StaleBranch { current_leaf_node_id: None });
    let (_, leaf) = appended(
        within(host.append_session_nodes(
            &id,
            AppendSessionNodesRequest {
                nodes: vec![SessionAppendNode::message("User", "a")],
                requires_ancestor_node_id: None,
            },
        ))
        .await
        .expect("append"),
    );
    let stale = within(host.append_session_nodes(
        &id,
        AppendSessionNodesRequest {
            nodes: vec![SessionAppendNode::message("User", "x")],
            requires_ancestor_node_id: Some("nowhere".into()),
        },
    ))
    .await
    .expect("append");
    assert_eq!(stale, AppendSessionNodesResult::StaleBranch { current_leaf_node_id: Some(leaf) });
    let snapshot = within(host.snapshot_session(&id)).await.expect("snapshot");
    assert_eq!(graph_texts(&snapshot), ["a"]);
}

/// Node ids: a message id when unique, else `message:<id>`, `message:<id>:2`;
/// `plugin:<uuid>`; `protocol:<uuid>`.
pub async fn append_node_id_rules(factory: &dyn HostFactory) {
    let host = echo_host(factory).await;
    let id = create_root(host.as_ref()).await;
    let message = |mid: &str| SessionAppendNode::Message {
        message: PluginMessage { id: Some(mid.to_string()), ..PluginMessage::new("User", "hi") },
        caused_by: None,
    };
    let (ids, _) = appended(
        within(host.append_session_nodes(
            &id,
            AppendSessionNodesRequest {
                nodes: vec![
                    message("m1"),
                    message("m1"),
                    message("m1"),
                    SessionAppendNode::Plugin {
                        plugin_type: "todo.snapshot".into(),
                        body: serde_json::json!({}),
                        caused_by: None,
                    },
                    SessionAppendNode::ProtocolEvent {
                        event: ProtocolEvent {
                            plugin_id: "lash.protocol.chat".into(),
                            payload: serde_json::json!({"type":"step"}),
                        },
                        caused_by: None,
                    },
                ],
                requires_ancestor_node_id: None,
            },
        ))
        .await
        .expect("append"),
    );
    assert_eq!(&ids[..3], ["m1", "message:m1", "message:m1:2"]);
    let is_uuid_suffixed = |id: &str, prefix: &str| {
        id.strip_prefix(prefix).is_some_and(|rest| uuid::Uuid::try_parse(rest).is_ok() && rest.len() == 32)
    };
    assert!(is_uuid_suffixed(&ids[3], "plugin:"), "{}", ids[3]);
    assert!(is_uuid_suffixed(&ids[4], "protocol:"), "{}", ids[4]);
    let (again, _) = appended(
        within(host.append_session_nodes(
            &id,
            AppendSessionNodesRequest { nodes: vec![message("m1")], requires_ancestor_node_id: None },
        ))
        .await
        .expect("append"),
    );
    assert_eq!(again, ["message:m1:3"]);
}

/// Appends from many tasks at once all land in one chain, each exactly once.
pub async fn concurrent_appends_form_one_chain(factory: &dyn HostFactory) {
    const TASKS: usize = 6;
    const APPENDS: usize = 5;
    let host = echo_host(factory).await;
    let id = create_root(host.as_ref()).await;
    let tasks = (0..TASKS).map(|task| {
        let host = Arc::clone(&host);
        let id = id.clone();
        async move {
            for n in 0..APPENDS {
                let nodes = vec![SessionAppendNode::message("User", format!("{task}-{n}"))];
                host.append_session_nodes(&id, AppendSessionNodesRequest { nodes, requires_ancestor_node_id: None })
                    .await
                    .unwrap_or_else(|err| panic!("append {task}-{n}: {err}"));
            }
        }
    });
    within(futures::future::join_all(tasks)).await;
    let snapshot = within(host.snapshot_session(&id)).await.expect("snapshot");
    assert_single_chain(&snapshot);
    let mut texts = graph_texts(&snapshot);
    texts.sort();
    let mut expected: Vec<String> = (0..TASKS).flat_map(|t| (0..APPENDS).map(move |n| format!("{t}-{n}"))).collect();
    expected.sort();
    assert_eq!(texts, expected);
}

// ---- close -----------------------------------------------------------------------

/// Closing an unknown id succeeds; a closed session refuses turns and appends; closing
/// twice succeeds.
pub async fn close_rules(factory: &dyn HostFactory) {
    let host = echo_host(factory).await;
    within(host.close_session(&new_id())).await.expect("closing an unknown session succeeds");
    let id = create_root(host.as_ref()).await;
    within(host.close_session(&id)).await.expect("close");
    within(host.close_session(&id)).await.expect("close again");
    assert_kind(within(host.start_turn(turn(&id, "t1", "hi"))).await, ErrorKind::Conflict, "closed");
    assert_kind(
        within(host.append_session_nodes(
            &id,
            AppendSessionNodesRequest {
                nodes: vec![SessionAppendNode::message("User", "x")],
                requires_ancestor_node_id: None,
            },
        ))
        .await,
        ErrorKind::Conflict,
        "closed",
    );
    within(host.snapshot_session(&id)).await.expect("a closed session can still be read");
}

/// `close` is refused while a turn runs, and works once it has committed.
pub async fn close_refused_while_turn_runs(factory: &dyn HostFactory) {
    let gate = GatedExecutor::new();
    let host = factory.host(gate.clone()).await;
    let id = create_root(host.as_ref()).await;
    let running = tokio::spawn({
        let host = Arc::clone(&host);
        let request = turn(&id, "t1", "hi");
        async move { host.start_turn(request).await }
    });
    gate.wait_started(1).await;
    assert_kind(within(host.close_session(&id)).await, ErrorKind::Conflict, "running turn");
    gate.release();
    within(running).await.expect("join").expect("turn");
    within(host.close_session(&id)).await.expect("close after the turn");
}

// ---- turns -----------------------------------------------------------------------

/// A turn runs the executor and commits its nodes, the turn index and the usage.
pub async fn turn_runs_and_commits(factory: &dyn HostFactory) {
    let host = echo_host(factory).await;
    let id = create_root(host.as_ref()).await;
    let result = within(host.start_turn(turn(&id, "t1", "hello world"))).await.expect("turn");
    assert_eq!(
        result.outcome,
        TurnOutcome::Finished(TurnFinish::AssistantMessage { text: "echo: hello world".into() })
    );
    assert_eq!(result.state.turn_index, 1);
    assert_eq!(graph_texts(&result.state), ["hello world", "echo: hello world"]);
    assert_eq!(result.token_usage.input_tokens, 2);
    let snapshot = within(host.snapshot_session(&id)).await.expect("snapshot");
    assert_eq!(snapshot.turn_index, 1);
    assert_eq!(snapshot.token_usage, result.token_usage);
    assert_eq!(snapshot.session_graph, result.state.session_graph);
    assert_single_chain(&snapshot);
    assert_kind(within(host.start_turn(turn(&new_id(), "t1", "x"))).await, ErrorKind::Session, "unknown session");
}

/// A completed turn id returns the stored result and runs nothing; the same id with
/// another input is `Conflict`.
pub async fn completed_turn_id_is_answered_from_the_ledger(factory: &dyn HostFactory) {
    let gate = GatedExecutor::new();
    let host = factory.host(gate.clone()).await;
    let id = create_root(host.as_ref()).await;
    gate.release();
    let first = within(host.start_turn(turn(&id, "t1", "hi"))).await.expect("turn");
    let again = within(host.start_turn(turn(&id, "t1", "hi"))).await.expect("repeat");
    assert_eq!(first, again);
    assert_eq!(gate.runs(), 1, "a completed turn id must not run again");
    assert_kind(within(host.start_turn(turn(&id, "t1", "other"))).await, ErrorKind::Conflict, "t1");
    let snapshot = within(host.snapshot_session(&id)).await.expect("snapshot");
    assert_eq!(snapshot.turn_index, 1);
}

/// A retry of a running turn id attaches to the run and gets the same result; a
/// different turn meanwhile is refused; the same id with another input is `Conflict`.
pub async fn running_turn_id_attaches_and_others_are_refused(factory: &dyn HostFactory) {
    let gate = GatedExecutor::new();
    let host = factory.host(gate.clone()).await;
    let id = create_root(host.as_ref()).await;
    let spawn_turn = |turn_id: &str, text: &str| {
        let host = Arc::clone(&host);
        let request = turn(&id, turn_id, text);
        tokio::spawn(async move { host.start_turn(request).await })
    };
    let original = spawn_turn("t1", "hi");
    gate.wait_started(1).await;
    let attached = spawn_turn("t1", "hi");
    assert_kind(
        within(host.start_turn(turn(&id, "t2", "hi"))).await,
        ErrorKind::Conflict,
        &format!("session `{id}` already has a running turn"),
    );
    assert_kind(within(host.start_turn(turn(&id, "t1", "other"))).await, ErrorKind::Conflict, "t1");
    gate.release();
    let original = within(original).await.expect("join").expect("turn");
    let attached = within(attached).await.expect("join").expect("attached turn");
    assert_eq!(original, attached);
    assert_eq!(gate.runs(), 1, "the attached retry must not run the turn again");
    gate.release();
    within(host.start_turn(turn(&id, "t2", "next"))).await.expect("a new turn after the first");
}

/// Nothing of a running turn is visible before its commit; everything is after; a
/// failed turn commits nothing and its id can be retried.
pub async fn turn_commit_is_atomic(factory: &dyn HostFactory) {
    let gate = GatedExecutor::new();
    let host = factory.host(gate.clone()).await;
    let id = create_root(host.as_ref()).await;
    let running = tokio::spawn({
        let host = Arc::clone(&host);
        let request = turn(&id, "t1", "hi");
        async move { host.start_turn(request).await }
    });
    gate.wait_started(1).await;
    let during = within(host.snapshot_session(&id)).await.expect("snapshot");
    assert_eq!(during.turn_index, 0);
    assert!(during.session_graph.nodes.is_empty());
    gate.fail();
    assert_kind(within(running).await.expect("join"), ErrorKind::Invoke, "told to fail");
    let after_failure = within(host.snapshot_session(&id)).await.expect("snapshot");
    assert_eq!(after_failure.turn_index, 0);
    assert!(after_failure.session_graph.nodes.is_empty());
    gate.release();
    let result = within(host.start_turn(turn(&id, "t1", "hi"))).await.expect("retry after a failure");
    let after = within(host.snapshot_session(&id)).await.expect("snapshot");
    assert_eq!(after.turn_index, 1);
    assert_eq!(after.session_graph, result.state.session_graph);
    assert_eq!(graph_texts(&after), ["hi", "echo: hi"]);
}

// ---- traces ----------------------------------------------------------------------

/// A trace context naming another session than the one the call is for is
/// `InvalidRequest`; one naming none is accepted.
pub async fn trace_session_rule(factory: &dyn HostFactory) {
    let host = echo_host(factory).await;
    let id = create_root(host.as_ref()).await;
    let bound = host.bound_to(&id);
    within(bound.emit_trace_event(TraceContext::default(), TraceEvent::turn_started()))
        .await
        .expect("a context naming no session gets the bound one");
    let own = TraceContext { session_id: Some(id.clone()), ..TraceContext::default() };
    within(host.emit_trace_event(own, TraceEvent::turn_started())).await.expect("own session");
    let other = TraceContext { session_id: Some(new_id()), ..TraceContext::default() };
    assert_kind(
        within(bound.emit_trace_event(other, TraceEvent::turn_started())).await,
        ErrorKind::InvalidRequest,
        "names session",
    );
}

// ---- registry --------------------------------------------------------------------

/// Every page of `query`, followed through `next_after`; no page holds more than the
/// limit.
async fn list_all(host: &dyn ConformanceHost, mut query: SessionListQuery) -> Vec<SessionSummary> {
    let mut listed = Vec::new();
    for _ in 0..1000 {
        let page = within(host.list_sessions(&query)).await.expect("a page of the registry");
        assert!(page.sessions.len() <= query.effective_limit(), "a page holds at most its limit");
        listed.extend(page.sessions);
        match page.next_after {
            Some(next) => query.after = Some(next),
            None => return listed,
        }
    }
    panic!("the registry's pages never ended");
}

async fn create_child(host: &dyn ConformanceHost, parent: &str) -> String {
    let id = new_id();
    let request = SessionCreateRequest {
        relation: SessionRelation::Child { parent_session_id: parent.to_owned(), caused_by: None },
        ..SessionCreateRequest::root(Some(id.clone()))
    };
    within(host.create_session(request)).await.expect("create child");
    id
}

fn ids_of(summaries: &[SessionSummary]) -> Vec<String> {
    summaries.iter().map(|s| s.session_id.clone()).collect()
}

/// The registry lists a parent's children once each, in creation order, over pages of
/// the limit, and filters them by status; a summary carries the parent, status, turn
/// count and times.
pub async fn registry_pages_children_in_creation_order(factory: &dyn HostFactory) {
    let host = echo_host(factory).await;
    let parent = create_root(host.as_ref()).await;
    let mut children = Vec::new();
    for _ in 0..7 {
        children.push(create_child(host.as_ref(), &parent).await);
    }
    within(host.start_turn(turn(&children[2], "t1", "hello"))).await.expect("turn");
    for closed in [1, 4] {
        within(host.close_session(&children[closed])).await.expect("close");
    }
    let query = |status| SessionListQuery { limit: 3, parent: Some(parent.clone()), status, after: None };
    let listed = list_all(host.as_ref(), query(None)).await;
    assert_eq!(ids_of(&listed), children, "every child once, oldest first");
    for summary in &listed {
        assert_eq!(summary.parent_session_id.as_deref(), Some(parent.as_str()));
        assert!(!summary.created_at.is_empty() && summary.last_activity >= summary.created_at, "{summary:?}");
        assert!(!summary.turn_running);
    }
    assert_eq!(listed[2].turn_index, 1, "the committed turn is counted");
    assert_eq!(listed[0].turn_index, 0);
    let closed = list_all(host.as_ref(), query(Some(SessionStatus::Closed))).await;
    assert_eq!(ids_of(&closed), [children[1].clone(), children[4].clone()]);
    assert!(closed.iter().all(|s| s.status == SessionStatus::Closed));
    let open = list_all(host.as_ref(), query(Some(SessionStatus::Open))).await;
    let expected: Vec<String> = [0, 2, 3, 5, 6].iter().map(|i| children[*i].clone()).collect();
    assert_eq!(ids_of(&open), expected);
    let none =
        list_all(host.as_ref(), SessionListQuery { parent: Some(new_id()), ..SessionListQuery::first(10) }).await;
    assert!(none.is_empty(), "a session without children has none listed");
}

/// Unfiltered, the registry lists new root sessions once each, in creation order.
pub async fn registry_lists_roots_in_creation_order(factory: &dyn HostFactory) {
    let host = echo_host(factory).await;
    let mut roots = Vec::new();
    for _ in 0..5 {
        roots.push(create_root(host.as_ref()).await);
    }
    let listed = ids_of(&list_all(host.as_ref(), SessionListQuery::first(2)).await);
    let positions: Vec<usize> = roots
        .iter()
        .map(|id| {
            assert_eq!(listed.iter().filter(|l| *l == id).count(), 1, "{id} listed once");
            listed.iter().position(|l| l == id).unwrap_or(usize::MAX)
        })
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "creation order: {positions:?}");
    assert_kind(
        within(host.list_sessions(&SessionListQuery { after: Some("not a cursor".into()), ..Default::default() }))
            .await,
        ErrorKind::InvalidRequest,
        "cursor",
    );
}

/// A session whose turn runs is listed as running, and not once the turn committed.
pub async fn registry_shows_a_running_turn(factory: &dyn HostFactory) {
    let gate = GatedExecutor::new();
    let host = factory.host(gate.clone()).await;
    let parent = create_root(host.as_ref()).await;
    let child = create_child(host.as_ref(), &parent).await;
    let query = SessionListQuery { parent: Some(parent.clone()), ..SessionListQuery::first(10) };
    let running = tokio::spawn({
        let host = Arc::clone(&host);
        let request = turn(&child, "t1", "hi");
        async move { host.start_turn(request).await }
    });
    gate.wait_started(1).await;
    let listed = list_all(host.as_ref(), query.clone()).await;
    assert_eq!(ids_of(&listed), vec![child]);
    assert!(listed[0].turn_running, "{:?}", listed[0]);
    gate.release();
    within(running).await.expect("join").expect("turn");
    let listed = list_all(host.as_ref(), query).await;
    assert!(!listed[0].turn_running && listed[0].turn_index == 1, "{:?}", listed[0]);
}

// ---- history ---------------------------------------------------------------------

/// Every page of `session_id`'s turns, followed through `next_after`; no page holds
/// more than the limit.
async fn all_turns(host: &dyn ConformanceHost, session_id: &str, mut query: TurnListQuery) -> Vec<TurnSummary> {
    let mut listed = Vec::new();
    for _ in 0..1000 {
        let page = within(host.list_turns(session_id, &query)).await.expect("a page of turns");
        assert!(page.turns.len() <= query.effective_limit(), "a page holds at most its limit");
        listed.extend(page.turns);
        match page.next_after {
            Some(next) => query.after = Some(next),
            None => return listed,
        }
    }
    panic!("the turn pages never ended");
}

fn assert_unknown_session<T: std::fmt::Debug>(result: Result<T, PluginError>, session_id: &str) {
    match result {
        Err(PluginError::UnknownSession { session_id: named }) => assert_eq!(named, session_id),
        other => panic!("expected UnknownSession for {session_id}, got {other:?}"),
    }
}

/// A session's turns are listed once each in the order they ran, over pages of the
/// limit, with status, outcome, tokens, start and duration; a failed run is listed as
/// failed, a running one as running. A bad cursor is `InvalidRequest`, an unknown
/// session `UnknownSession`.
pub async fn history_lists_turns_in_order_across_pages(factory: &dyn HostFactory) {
    let gate = GatedExecutor::new();
    let host = factory.host(gate.clone()).await;
    let id = create_root(host.as_ref()).await;
    assert!(all_turns(host.as_ref(), &id, TurnListQuery::first(2)).await.is_empty(), "no turn yet");
    let mut results = Vec::new();
    for (n, text) in ["one", "two words", "three more words", "four", "five"].iter().enumerate() {
        gate.release();
        let turn_id = format!("t{}", n + 1);
        results.push(within(host.start_turn(turn(&id, &turn_id, text))).await.expect("turn"));
    }
    let running = tokio::spawn({
        let host = Arc::clone(&host);
        let request = turn(&id, "t6", "fails");
        async move { host.start_turn(request).await }
    });
    gate.wait_started(6).await;
    let listed = all_turns(host.as_ref(), &id, TurnListQuery::first(2)).await;
    let ids: Vec<&str> = listed.iter().map(|t| t.turn_id.as_str()).collect();
    assert_eq!(ids, ["t1", "t2", "t3", "t4", "t5", "t6"], "every turn once, in the order they ran");
    for (summary, result) in listed.iter().zip(&results) {
        assert_eq!(summary.status, TurnStatus::Completed, "{summary:?}");
        assert_eq!(summary.outcome.as_deref(), Some("finished"), "{summary:?}");
        assert_eq!(summary.token_usage, result.token_usage, "{summary:?}");
        assert_eq!(summary.duration_ms, result.execution["duration_ms"].as_u64(), "{summary:?}");
        assert!(summary.started_at.as_deref().is_some_and(|t| !t.is_empty()), "{summary:?}");
    }
    assert_eq!(listed[2].tokens(), results[2].token_usage.input_tokens + results[2].token_usage.output_tokens);
    assert_eq!(listed[5].status, TurnStatus::Running, "{:?}", listed[5]);
    gate.fail();
    assert_kind(within(running).await.expect("join"), ErrorKind::Invoke, "told to fail");
    let after = all_turns(host.as_ref(), &id, TurnListQuery::first(50)).await;
    assert_eq!(after.len(), 6);
    assert_eq!((after[5].turn_id.as_str(), after[5].status), ("t6", TurnStatus::Failed), "{:?}", after[5]);
    assert!(after[5].error.as_deref().is_some_and(|e| e.contains("told to fail")), "{:?}", after[5]);
    let first = within(host.list_turns(&id, &TurnListQuery::first(5))).await.expect("a page");
    assert_eq!(first.turns.len(), 5);
    let rest = TurnListQuery { limit: 5, after: first.next_after.clone() };
    let second = within(host.list_turns(&id, &rest)).await.expect("the last page");
    assert_eq!((second.turns.len(), second.next_after), (1, None), "the last page says it is the last");
    let bad = TurnListQuery { limit: 2, after: Some("not a cursor".into()) };
    assert_kind(within(host.list_turns(&id, &bad)).await, ErrorKind::InvalidRequest, "cursor");
    let unknown = new_id();
    assert_unknown_session(within(host.list_turns(&unknown, &TurnListQuery::default())).await, &unknown);
}

/// The first page of a session's turns says who holds its lease: free before a turn,
/// held for the running turn by a named holder, free again once it committed, closed
/// after close; later pages do not carry it.
pub async fn history_shows_the_lease(factory: &dyn HostFactory) {
    let gate = GatedExecutor::new();
    let host = factory.host(gate.clone()).await;
    let id = create_root(host.as_ref()).await;
    let lease = |query: TurnListQuery| {
        let host = Arc::clone(&host);
        let id = id.clone();
        async move { within(host.list_turns(&id, &query)).await.expect("a page of turns").lease }
    };
    assert_eq!(lease(TurnListQuery::first(1)).await, Some(TurnLease::Free), "no turn yet");
    gate.release();
    within(host.start_turn(turn(&id, "t1", "one"))).await.expect("turn");
    let running = tokio::spawn({
        let host = Arc::clone(&host);
        let request = turn(&id, "t2", "two");
        async move { host.start_turn(request).await }
    });
    gate.wait_started(2).await;
    match lease(TurnListQuery::first(1)).await {
        Some(TurnLease::Held { turn_id, holder, .. }) => {
            assert_eq!(turn_id, "t2");
            assert!(!holder.is_empty(), "the holder is named");
        }
        other => panic!("the running turn holds the lease: {other:?}"),
    }
    let first = within(host.list_turns(&id, &TurnListQuery::first(1))).await.expect("a page");
    let rest = TurnListQuery { limit: 1, after: first.next_after };
    assert_eq!(lease(rest).await, None, "a later page does not carry the lease");
    gate.release();
    within(running).await.expect("join").expect("turn");
    assert_eq!(lease(TurnListQuery::first(1)).await, Some(TurnLease::Free), "released at commit");
    within(host.close_session(&id)).await.expect("close");
    assert_eq!(lease(TurnListQuery::first(1)).await, Some(TurnLease::Closed));
}

/// A session's tool history lists each generation once, oldest first, with its members
/// and who joined and left. An unknown session is `UnknownSession`.
pub async fn history_shows_each_tool_generation(factory: &dyn HostFactory) {
    let host = echo_host(factory).await;
    let id = create_root(host.as_ref()).await;
    assert!(within(host.tool_history(&id)).await.expect("history").generations.is_empty(), "no tools yet");
    let first = within(host.apply_tool_state(&id, tools(&["bash", "read"]))).await.expect("first state");
    let names = |list: &[&str]| list.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    let second = within(host.set_tool_membership(&id, &names(&["bash"]), false)).await.expect("toggle");
    let third = within(host.set_tool_membership(&id, &names(&["bash"]), true)).await.expect("toggle back");
    let history = within(host.tool_history(&id)).await.expect("history");
    assert!(!history.truncated);
    /// A generation, its members, who joined, who left.
    type Row = (u64, Vec<String>, Vec<String>, Vec<String>);
    let table: Vec<Row> = history
        .generations
        .iter()
        .map(|g| (g.generation, g.members.clone(), g.joined.clone(), g.left.clone()))
        .collect();
    assert_eq!(
        table,
        vec![
            (first, names(&["bash", "read"]), names(&["bash", "read"]), vec![]),
            (second, names(&["read"]), vec![], names(&["bash"])),
            (third, names(&["bash", "read"]), names(&["bash"]), vec![]),
        ]
    );
    assert!(history.generations.iter().all(|g| g.tools == 2 && !g.at.is_empty()));
    let current = within(host.tool_state(&id)).await.expect("state");
    assert_eq!(history.generations.last().map(|g| g.generation), Some(current.generation));
    let unknown = new_id();
    assert_unknown_session(within(host.tool_history(&unknown)).await, &unknown);
}

// ---- cancellation ---------------------------------------------------------------

/// An executor that records the user's message, then waits until its turn is cancelled
/// and returns what it had as `Stopped(Cancelled)`.
struct WaitsForCancel {
    started: Notify,
    runs: AtomicUsize,
}

#[async_trait::async_trait]
impl TurnExecutor for WaitsForCancel {
    async fn run(&self, context: TurnContext) -> Result<TurnOutput, PluginError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        self.started.notify_one();
        let text = context.turn.input.joined_text();
        tokio::select! {
            () = context.cancellation().cancelled() => {}
            () = tokio::time::sleep(CHECK_TIMEOUT) => return Err(PluginError::Session("never cancelled".into())),
        }
        Ok(TurnOutput {
            nodes: vec![SessionAppendNode::message("User", text)],
            outcome: TurnOutcome::Stopped(TurnStop::Cancelled),
            ..TurnOutput::cancelled()
        })
    }
}

/// A cancel stops a running turn wherever it runs: the turn commits once as
/// `Stopped(Cancelled)` with what it had. A cancel of a finished turn, of a turn id the
/// session never ran, or in an unknown session says so.
pub async fn cancel_stops_a_running_turn_once(factory: &dyn HostFactory) {
    let executor = Arc::new(WaitsForCancel { started: Notify::new(), runs: AtomicUsize::new(0) });
    let host = factory.host(executor.clone()).await;
    let id = create_root(host.as_ref()).await;
    assert_eq!(within(host.cancel_turn(&id, "t1")).await.expect("cancel"), CancelReply::UnknownTurn);
    let running = tokio::spawn({
        let host = Arc::clone(&host);
        let request = turn(&id, "t1", "stop me");
        async move { host.start_turn(request).await }
    });
    within(executor.started.notified()).await;
    // The run is under way; its ledger record may trail the executor's start.
    let reply = within(async {
        loop {
            match host.cancel_turn(&id, "t1").await.expect("cancel") {
                CancelReply::UnknownTurn => tokio::time::sleep(Duration::from_millis(20)).await,
                reply => return reply,
            }
        }
    })
    .await;
    assert!(matches!(reply, CancelReply::Cancelling { .. }), "{reply:?}");
    let result = within(running).await.expect("join").expect("the cancelled turn's result");
    assert_eq!(result.outcome, TurnOutcome::Stopped(TurnStop::Cancelled));
    assert_eq!(graph_texts(&result.state), ["stop me"], "what the turn had is committed");
    assert_eq!(result.state.turn_index, 1, "committed once");
    assert_eq!(executor.runs.load(Ordering::SeqCst), 1);
    let again = within(host.cancel_turn(&id, "t1")).await.expect("cancel again");
    assert_eq!(again, CancelReply::Finished { outcome: TurnOutcome::Stopped(TurnStop::Cancelled) });
    let snapshot = within(host.snapshot_session(&id)).await.expect("snapshot");
    assert_eq!((snapshot.turn_index, graph_texts(&snapshot)), (1, vec!["stop me".to_owned()]));
    assert_kind(within(host.cancel_turn(&new_id(), "t1")).await, ErrorKind::Session, "unknown session");
}

/// Expands to one `#[tokio::test]` per conformance check, each calling the check with
/// `$factory` (an expression evaluating to a [`HostFactory`]); `sequentially $factory`
/// expands to one future running every check in turn; `count` to the number of checks.
#[macro_export]
macro_rules! conformance_tests {
    // One expression (an async block) that runs every check in turn on `$factory`.
    (sequentially $factory:expr) => {
        $crate::conformance_tests! { @list @sequential $factory }
    };
    // How many checks there are.
    (count) => {
        $crate::conformance_tests! { @list @count () }
    };
    (@list @$mode:ident $factory:expr) => {
        $crate::conformance_tests! { @$mode $factory;
            snapshot_current_follows_binding,
            snapshot_unknown_session,
            create_ids_and_duplicates,
            create_refuses_invalid_ids,
            create_child_records_parent,
            create_honours_start_points,
            tool_state_is_strict_compare_and_set,
            tool_catalog_projects_members,
            shared_tool_catalog_reuses_arc,
            set_tool_membership_unknown_tool,
            concurrent_membership_loses_no_update,
            append_chains_onto_leaf,
            append_stale_ancestor_writes_nothing,
            append_node_id_rules,
            concurrent_appends_form_one_chain,
            close_rules,
            close_refused_while_turn_runs,
            turn_runs_and_commits,
            completed_turn_id_is_answered_from_the_ledger,
            running_turn_id_attaches_and_others_are_refused,
            turn_commit_is_atomic,
            trace_session_rule,
            registry_pages_children_in_creation_order,
            registry_lists_roots_in_creation_order,
            registry_shows_a_running_turn,
            history_lists_turns_in_order_across_pages,
            history_shows_the_lease,
            history_shows_each_tool_generation,
            cancel_stops_a_running_turn_once
        }
    };
    (@sequential $factory:expr; $($check:ident),* $(,)?) => {
        async {
            let factory = $factory;
            $($crate::conformance::$check(&factory).await;)*
        }
    };
    (@count $factory:expr; $($check:ident),* $(,)?) => {
        [$(stringify!($check)),*].len()
    };
    (@checks $factory:expr; $($check:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let factory = $factory;
                $crate::conformance::$check(&factory).await;
            }
        )*
    };
    ($factory:expr) => {
        $crate::conformance_tests! { @list @checks $factory }
    };
}
