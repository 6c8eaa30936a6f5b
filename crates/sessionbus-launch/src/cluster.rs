//! [`NatsCluster`]: a 3-node JetStream cluster on loopback, with SIGKILL and restart of
//! single nodes.

use std::time::Duration;

use crate::deadline::Deadline;
use crate::process::{ServerProcess, free_port, monitoring_get, unique_name};
use crate::server::{ClusterMembership, ServerDir};
use crate::{LaunchError, ServerConfig};

/// The number of nodes of a [`NatsCluster`].
pub const CLUSTER_SIZE: usize = 3;

/// How long the cluster may take to form (every node up, a JetStream meta leader, room
/// for an R3 stream), and a restarted node to catch up.
const FORM_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one node may take to accept client connections.
const NODE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a stream leader may take to move.
const LEADER_MOVE_TIMEOUT: Duration = Duration::from_secs(30);
/// How many times the cluster is started again with fresh ports when it does not form.
const START_ATTEMPTS: usize = 3;
/// The stream the launcher creates (and deletes) to prove an R3 stream can be placed.
const PROBE_STREAM: &str = "LAUNCH_CLUSTER_PROBE";
/// Each node's JetStream memory store (three share one machine).
const NODE_MEMORY_STORE: u64 = 512 << 20;
/// Each node's JetStream file store.
const NODE_FILE_STORE: u64 = 20 << 30;

/// One node of a [`NatsCluster`].
#[derive(Debug)]
struct Node {
    name: String,
    /// The cluster's name, unique to this launch (a node that greets with another is a
    /// stranger that took the port).
    cluster: String,
    client_port: u16,
    http_port: u16,
    process: ServerProcess,
    // Dropped after the process (declaration order): no server writes into a deleted dir.
    _dir: ServerDir,
}

/// Three nats-server processes (`n1`, `n2`, `n3`) forming one JetStream cluster on
/// free loopback ports (client, route and monitoring ports; never 4222), each with its
/// own temporary store and `max_payload` of 8 MiB. Every node is killed, and every store
/// deleted, on drop.
///
/// Nodes are addressed by index `0..3`. [`NatsCluster::kill`] sends SIGKILL to one node;
/// [`NatsCluster::restart`] starts it again on the same ports with the same store.
///
/// ```no_run
/// use sessionbus_launch::NatsCluster;
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let mut cluster = NatsCluster::start().await?;
/// let client = cluster.client().await?; // knows every node, reconnects forever
/// let leader = cluster.stream_leader(&client, "KV_TOOLS").await;
/// if let Some(leader) = leader {
///     cluster.kill(leader);
///     // ... the bus goes on with two nodes ...
///     cluster.restart(leader).await?;
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<Node>,
}

impl NatsCluster {
    /// Starts the three nodes and waits until the cluster has a JetStream meta leader
    /// and can place an R3 stream. Ports taken before a server binds them are retried
    /// with fresh ones.
    pub async fn start() -> Result<Self, LaunchError> {
        Self::start_with(ServerConfig::default()).await
    }

    /// [`NatsCluster::start`] with every node configured from `config`: the launcher
    /// sets each node's ports, JetStream limits and cluster membership, `config` the
    /// rest (its `sync_interval` and extra configuration).
    pub async fn start_with(config: ServerConfig) -> Result<Self, LaunchError> {
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            let mut cluster = Self::spawn_all(&config)?;
            match cluster.wait_formed().await {
                Ok(()) => return Ok(cluster),
                Err(err) => last_error = Some(err),
            }
        }
        Err(last_error
            .unwrap_or(LaunchError::Startup { program: "the 3-node cluster", reason: "no attempt made".into() }))
    }

    fn spawn_all(base: &ServerConfig) -> Result<Self, LaunchError> {
        let ports = (0..CLUSTER_SIZE)
            .map(|_| Ok((free_port()?, free_port()?, free_port()?)))
            .collect::<Result<Vec<_>, LaunchError>>()?;
        let routes: Vec<u16> = ports.iter().map(|(_, route, _)| *route).collect();
        let cluster = unique_name("sessionbus-cluster");
        let mut nodes = Vec::with_capacity(CLUSTER_SIZE);
        for (index, (client_port, route_port, http_port)) in ports.into_iter().enumerate() {
            let name = format!("n{}", index + 1);
            let membership = ClusterMembership { name: cluster.clone(), route_port, routes: routes.clone() };
            let config = base
                .clone()
                .with_http_port(http_port)
                .with_jetstream_limits(NODE_MEMORY_STORE, NODE_FILE_STORE)
                .with_cluster(membership);
            let dir = ServerDir::new(None, &format!("sessionbus-cluster-{name}-"))?;
            let process = dir.spawn(&config, &name, client_port)?;
            nodes.push(Node { name, cluster: cluster.clone(), client_port, http_port, process, _dir: dir });
        }
        Ok(Self { nodes })
    }

    /// Waits until every running node accepts clients, then until an R3 stream can be
    /// created (a meta leader exists and knows all three peers).
    async fn wait_formed(&mut self) -> Result<(), LaunchError> {
        for index in 0..CLUSTER_SIZE {
            self.wait_accepting(index)?;
        }
        let client = self
            .client()
            .await
            .map_err(|err| LaunchError::Startup { program: "the 3-node cluster", reason: format!("connect: {err}") })?;
        let create = format!(
            "{{\"name\":\"{PROBE_STREAM}\",\"subjects\":[\"launch.cluster.probe\"],\"num_replicas\":3,\"storage\":\"memory\"}}"
        );
        let deadline = Deadline::after(FORM_TIMEOUT);
        loop {
            let last = match api_request(&client, &format!("$JS.API.STREAM.CREATE.{PROBE_STREAM}"), create.clone())
                .await
            {
                Ok(reply) if reply.get("error").is_none() => {
                    let _ = api_request(&client, &format!("$JS.API.STREAM.DELETE.{PROBE_STREAM}"), String::new()).await;
                    return Ok(());
                }
                Ok(reply) => reply.to_string(),
                Err(err) => err,
            };
            if !deadline.pause(Duration::from_millis(200)).await {
                return Err(LaunchError::Startup {
                    program: "the 3-node cluster",
                    reason: format!(
                        "it did not form within {FORM_TIMEOUT:?} (last answer: {last}); log of n1:\n{}",
                        self.nodes[0].process.log_tail()
                    ),
                });
            }
        }
    }

    fn wait_accepting(&mut self, index: usize) -> Result<(), LaunchError> {
        let node = &mut self.nodes[index];
        let identity = [("server_name", node.name.as_str()), ("cluster", node.cluster.as_str())];
        node.process.wait_accepting("127.0.0.1", node.client_port, &identity, NODE_TIMEOUT).map_err(|err| {
            LaunchError::Startup { program: "the 3-node cluster", reason: format!("node {}: {err}", node.name) }
        })
    }

    /// The client URL of every node (`nats://127.0.0.1:<port>`), in node order.
    pub fn urls(&self) -> Vec<String> {
        (0..CLUSTER_SIZE).map(|index| self.url(index)).collect()
    }

    /// Every node's client URL, comma separated (the form `NATS_URL` takes).
    pub fn nats_url(&self) -> String {
        self.urls().join(",")
    }

    /// The client URL of node `index`.
    pub fn url(&self, index: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[index].client_port)
    }

    /// The server name of node `index` (`n1`, `n2`, `n3`), as JetStream reports leaders.
    pub fn name(&self, index: usize) -> &str {
        &self.nodes[index].name
    }

    /// The index of the node called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|node| node.name == name)
    }

    /// The process id of node `index`, while it runs.
    pub fn pid(&self, index: usize) -> Option<u32> {
        self.nodes[index].process.pid()
    }

    /// True while node `index` runs (it was not killed, and has not exited).
    pub fn is_running(&mut self, index: usize) -> bool {
        self.nodes[index].process.is_running()
    }

    /// The log file of node `index`.
    pub fn log_path(&self, index: usize) -> std::path::PathBuf {
        self.nodes[index].process.log_path().to_owned()
    }

    /// Connects a client that knows every node and reconnects forever (to whichever
    /// node is up).
    pub async fn client(&self) -> Result<async_nats::Client, async_nats::ConnectError> {
        let servers: Vec<async_nats::ServerAddr> = self.urls().iter().filter_map(|url| url.parse().ok()).collect();
        async_nats::ConnectOptions::new().max_reconnects(None).connect(servers.as_slice()).await
    }

    /// Connects a client to node `index` first (it fails over to the others).
    pub async fn client_to(&self, index: usize) -> Result<async_nats::Client, async_nats::ConnectError> {
        let mut urls = vec![self.url(index)];
        urls.extend((0..CLUSTER_SIZE).filter(|i| *i != index).map(|i| self.url(i)));
        let servers: Vec<async_nats::ServerAddr> = urls.iter().filter_map(|url| url.parse().ok()).collect();
        async_nats::ConnectOptions::new().max_reconnects(None).retain_servers_order().connect(servers.as_slice()).await
    }

    /// Kills node `index` at once (SIGKILL) and reaps it. Its store stays for a restart.
    pub fn kill(&mut self, index: usize) {
        self.nodes[index].process.kill();
    }

    /// Starts node `index` again on the same ports with the same store, and waits until
    /// it accepts clients and reports itself healthy (its JetStream assets caught up).
    pub async fn restart(&mut self, index: usize) -> Result<(), LaunchError> {
        self.nodes[index].process.respawn()?;
        self.wait_accepting(index)?;
        self.wait_healthy(index).await
    }

    /// Waits until node `index` answers `GET /healthz` with 200 (JetStream current).
    pub async fn wait_healthy(&self, index: usize) -> Result<(), LaunchError> {
        let port = self.nodes[index].http_port;
        let deadline = Deadline::after(FORM_TIMEOUT);
        loop {
            let last = match tokio::task::spawn_blocking(move || monitoring_get(port, "/healthz")).await {
                Ok(Ok((200, _))) => return Ok(()),
                Ok(Ok((status, body))) => format!("{status}: {body}"),
                Ok(Err(err)) => err.to_string(),
                Err(err) => err.to_string(),
            };
            if !deadline.pause(Duration::from_millis(100)).await {
                return Err(LaunchError::Startup {
                    program: "nats-server",
                    reason: format!(
                        "node {} was not healthy within {FORM_TIMEOUT:?} (last: {last})",
                        self.nodes[index].name
                    ),
                });
            }
        }
    }

    /// The node leading `stream` (its replica group), as JetStream reports it now.
    pub async fn stream_leader(&self, client: &async_nats::Client, stream: &str) -> Option<usize> {
        let info = api_request(client, &format!("$JS.API.STREAM.INFO.{stream}"), String::new()).await.ok()?;
        let leader = info.get("cluster")?.get("leader")?.as_str()?;
        self.index_of(leader)
    }

    /// Makes node `index` the leader of `stream` (stepping the leader down, preferring
    /// `index`, until it leads). Returns false when it could not within 30 s.
    pub async fn move_stream_leader(&self, client: &async_nats::Client, stream: &str, index: usize) -> bool {
        let body = format!("{{\"placement\":{{\"preferred\":\"{}\"}}}}", self.nodes[index].name);
        // A step-down is given longer to take effect than a missing leader to appear.
        let deadline = Deadline::after(LEADER_MOVE_TIMEOUT);
        loop {
            let waited = match self.stream_leader(client, stream).await {
                Some(leader) if leader == index => return true,
                Some(_) => {
                    let subject = format!("$JS.API.STREAM.LEADER.STEPDOWN.{stream}");
                    let _ = api_request(client, &subject, body.clone()).await;
                    deadline.pause(Duration::from_millis(500)).await
                }
                None => deadline.pause(Duration::from_millis(200)).await,
            };
            if !waited {
                return false;
            }
        }
    }
}

/// A JetStream API request; the reply as JSON.
async fn api_request(client: &async_nats::Client, subject: &str, body: String) -> Result<serde_json::Value, String> {
    let request = async_nats::Request::new().payload(body.into()).timeout(Some(Duration::from_secs(2)));
    let reply = client.send_request(subject.to_owned(), request).await.map_err(|err| err.to_string())?;
    serde_json::from_slice(&reply.payload).map_err(|err| format!("malformed JetStream API reply: {err}"))
}
