//! A 3-node JetStream cluster on loopback, with SIGKILL and restart of single nodes.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::server::free_port;
use crate::{MAX_PAYLOAD, TestkitError, find_nats_server};

/// How long the cluster may take to form (every node up, a JetStream meta leader, room
/// for an R3 stream).
const FORM_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one node may take to accept client connections.
const NODE_TIMEOUT: Duration = Duration::from_secs(20);
/// The stream the testkit creates (and deletes) to prove an R3 stream can be placed.
const PROBE_STREAM: &str = "TESTKIT_CLUSTER_PROBE";

/// One node of a [`NatsCluster`].
struct Node {
    name: String,
    client_port: u16,
    route_port: u16,
    http_port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn config_path(&self) -> PathBuf {
        self.dir.join("nats-server.conf")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Three nats-server processes (`n1`, `n2`, `n3`) forming one JetStream cluster on
/// free loopback ports (client, route and monitoring ports; never 4222), each with its
/// own store directory and `max_payload` of 8 MiB. Every node is killed, and every store
/// deleted, on drop.
///
/// Nodes are addressed by index `0..3`. [`NatsCluster::kill`] sends SIGKILL to one node;
/// [`NatsCluster::restart`] starts it again on the same ports with the same store.
pub struct NatsCluster {
    binary: PathBuf,
    nodes: Vec<Node>,
    // Dropped after the nodes (declaration order), so no server writes into a deleted dir.
    _dir: tempfile::TempDir,
}

/// The number of nodes of a [`NatsCluster`].
pub const CLUSTER_SIZE: usize = 3;

impl NatsCluster {
    /// Starts the three nodes and waits until the cluster has a JetStream meta leader
    /// and can place an R3 stream.
    pub async fn start() -> Result<Self, TestkitError> {
        // Ports found free can be taken before a server binds them: try a few times.
        let mut last_error = TestkitError::Startup("no attempt made".into());
        for _ in 0..3 {
            let mut cluster = Self::spawn_all()?;
            match cluster.wait_formed().await {
                Ok(()) => return Ok(cluster),
                Err(err) => {
                    for node in &mut cluster.nodes {
                        node.kill();
                    }
                    last_error = err;
                }
            }
        }
        Err(last_error)
    }

    fn spawn_all() -> Result<Self, TestkitError> {
        let binary = find_nats_server()?;
        let dir = tempfile::Builder::new().prefix("sessionbus-cluster-").tempdir()?;
        let mut nodes = Vec::with_capacity(CLUSTER_SIZE);
        for index in 0..CLUSTER_SIZE {
            let name = format!("n{}", index + 1);
            let node_dir = dir.path().join(&name);
            std::fs::create_dir_all(&node_dir)?;
            nodes.push(Node {
                name,
                client_port: free_port()?,
                route_port: free_port()?,
                http_port: free_port()?,
                dir: node_dir,
                child: None,
            });
        }
        let routes: Vec<String> =
            nodes.iter().map(|node| format!("\"nats-route://127.0.0.1:{}\"", node.route_port)).collect();
        for node in &nodes {
            std::fs::write(node.config_path(), node_config(node, &routes))?;
        }
        let mut cluster = Self { binary, nodes, _dir: dir };
        for index in 0..CLUSTER_SIZE {
            cluster.spawn(index)?;
        }
        Ok(cluster)
    }

    fn spawn(&mut self, index: usize) -> Result<(), TestkitError> {
        let node = &mut self.nodes[index];
        let child = Command::new(&self.binary)
            .arg("--config")
            .arg(node.config_path())
            .arg("--log")
            .arg(node.log_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        node.child = Some(child);
        Ok(())
    }

    /// Waits until every running node accepts clients, then until an R3 stream can be
    /// created (a meta leader exists and knows all three peers).
    async fn wait_formed(&mut self) -> Result<(), TestkitError> {
        for index in 0..CLUSTER_SIZE {
            self.wait_accepting(index)?;
        }
        let client = self.client().await.map_err(|err| TestkitError::Startup(format!("connect: {err}")))?;
        let deadline = Instant::now() + FORM_TIMEOUT;
        let create = format!(
            "{{\"name\":\"{PROBE_STREAM}\",\"subjects\":[\"testkit.cluster.probe\"],\"num_replicas\":3,\"storage\":\"memory\"}}"
        );
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            match api_request(&client, &format!("$JS.API.STREAM.CREATE.{PROBE_STREAM}"), create.clone()).await {
                Ok(reply) if reply.get("error").is_none() => {
                    let _ = api_request(&client, &format!("$JS.API.STREAM.DELETE.{PROBE_STREAM}"), String::new()).await;
                    return Ok(());
                }
                Ok(reply) => last = reply.to_string(),
                Err(err) => last = err,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(TestkitError::Startup(format!(
            "the cluster did not form within {FORM_TIMEOUT:?} (last answer: {last}); log of n1:\n{}",
            self.log_tail(0)
        )))
    }

    fn wait_accepting(&mut self, index: usize) -> Result<(), TestkitError> {
        let deadline = Instant::now() + NODE_TIMEOUT;
        while Instant::now() < deadline {
            let node = &mut self.nodes[index];
            if let Some(child) = node.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                node.child = None;
                let name = node.name.clone();
                return Err(TestkitError::Startup(format!(
                    "{name} exited with {status}; log:\n{}",
                    self.log_tail(index)
                )));
            }
            if crate::server::accepts_clients(node.client_port)? {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(TestkitError::Startup(format!(
            "{} accepted no client within {NODE_TIMEOUT:?}; log:\n{}",
            self.nodes[index].name,
            self.log_tail(index)
        )))
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
        self.nodes[index].child.as_ref().map(Child::id)
    }

    /// True while node `index` runs (it was not killed, and has not exited).
    pub fn is_running(&mut self, index: usize) -> bool {
        let node = &mut self.nodes[index];
        match node.child.as_mut().map(|child| child.try_wait()) {
            Some(Ok(None)) => true,
            Some(_) => {
                node.child = None;
                false
            }
            None => false,
        }
    }

    /// The log file of node `index`.
    pub fn log_path(&self, index: usize) -> PathBuf {
        self.nodes[index].log_path()
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
        self.nodes[index].kill();
    }

    /// Starts node `index` again on the same ports with the same store, and waits until
    /// it accepts clients and reports itself healthy (its JetStream assets caught up).
    pub async fn restart(&mut self, index: usize) -> Result<(), TestkitError> {
        self.nodes[index].kill();
        self.spawn(index)?;
        self.wait_accepting(index)?;
        self.wait_healthy(index).await
    }

    /// Waits until node `index` answers `GET /healthz` with 200 (JetStream current).
    pub async fn wait_healthy(&self, index: usize) -> Result<(), TestkitError> {
        let deadline = Instant::now() + FORM_TIMEOUT;
        let port = self.nodes[index].http_port;
        let mut last = String::new();
        while Instant::now() < deadline {
            match tokio::task::spawn_blocking(move || http_get(port, "/healthz")).await {
                Ok(Ok((200, _))) => return Ok(()),
                Ok(Ok((status, body))) => last = format!("{status}: {body}"),
                Ok(Err(err)) => last = err.to_string(),
                Err(err) => last = err.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(TestkitError::Startup(format!(
            "{} was not healthy within {FORM_TIMEOUT:?} (last: {last})",
            self.nodes[index].name
        )))
    }

    /// The node leading `stream` (its replica group), as JetStream reports it now.
    pub async fn stream_leader(&self, client: &async_nats::Client, stream: &str) -> Option<usize> {
        let info = api_request(client, &format!("$JS.API.STREAM.INFO.{stream}"), String::new()).await.ok()?;
        let leader = info.get("cluster")?.get("leader")?.as_str()?;
        self.index_of(leader)
    }

    /// Makes node `index` the leader of `stream` (stepping the leader down, preferring
    /// `index`, until it leads). Returns false when it could not within the timeout.
    pub async fn move_stream_leader(&self, client: &async_nats::Client, stream: &str, index: usize) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        let body = format!("{{\"placement\":{{\"preferred\":\"{}\"}}}}", self.nodes[index].name);
        while Instant::now() < deadline {
            match self.stream_leader(client, stream).await {
                Some(leader) if leader == index => return true,
                Some(_) => {
                    let _ =
                        api_request(client, &format!("$JS.API.STREAM.LEADER.STEPDOWN.{stream}"), body.clone()).await;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                None => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        false
    }

    fn log_tail(&self, index: usize) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(self.nodes[index].log_path()) {
            let _ = file.read_to_string(&mut text);
        }
        let start = text.len().saturating_sub(3000);
        let start = (start..text.len()).find(|i| text.is_char_boundary(*i)).unwrap_or(text.len());
        text[start..].to_owned()
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
    }
}

fn node_config(node: &Node, routes: &[String]) -> String {
    let store = node.dir.join("jetstream");
    format!(
        "server_name: {name}\nlisten: \"127.0.0.1:{client}\"\nhttp: \"127.0.0.1:{http}\"\nmax_payload: {MAX_PAYLOAD}\n\
         jetstream {{\n  store_dir: {store:?}\n  max_memory_store: 512MB\n  max_file_store: 20GB\n}}\n\
         cluster {{\n  name: sessionbus-test\n  listen: \"127.0.0.1:{route}\"\n  routes: [{routes}]\n}}\n",
        name = node.name,
        client = node.client_port,
        http = node.http_port,
        route = node.route_port,
        routes = routes.join(", "),
    )
}

/// A JetStream API request; the reply as JSON.
async fn api_request(client: &async_nats::Client, subject: &str, body: String) -> Result<serde_json::Value, String> {
    let request = async_nats::Request::new().payload(body.into()).timeout(Some(Duration::from_secs(2)));
    let reply = client.send_request(subject.to_owned(), request).await.map_err(|err| err.to_string())?;
    serde_json::from_slice(&reply.payload).map_err(|err| format!("malformed JetStream API reply: {err}"))
}

/// A plain HTTP/1.0 GET on the loopback monitoring port: (status, body).
fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    Ok((status, body))
}
