//! [`NatsServer`]: one JetStream nats-server, from a [`ServerConfig`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::LaunchError;
use crate::process::{ServerProcess, free_port, port_is_free, unique_name};

/// The `max_payload` every launched server sets explicitly: 8 MiB.
pub const MAX_PAYLOAD: usize = 8 * 1024 * 1024;

/// The configuration file the launcher writes into a server's directory.
const CONFIG_FILE: &str = "nats-server.conf";
/// The server's log file, in its directory.
const LOG_FILE: &str = "nats-server.log";
/// The JetStream store, in the server's directory.
const STORE_DIR: &str = "jetstream";
/// How long a server may take to accept connections.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a graceful stop may take before the server is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How many free ports are tried when the one found is taken before the server binds it.
const PORT_ATTEMPTS: usize = 5;
/// One GiB.
const GIB: u64 = 1 << 30;

/// How to run a [`NatsServer`]: where it listens, where it keeps its JetStream store, its
/// limits. Build it from [`ServerConfig::default`] with the `with_<field>` setters.
///
/// The default is a throw-away server: loopback, a free port, no monitoring port, a
/// name unique to each start, a temporary store deleted on drop, JetStream limited to 1 GiB of memory and 20 GiB of
/// files, `max_payload` [`MAX_PAYLOAD`].
///
/// ```
/// use sessionbus_launch::ServerConfig;
///
/// let config = ServerConfig::default().with_port(14222).with_http_port(18222).with_data_dir("/var/lib/sessionbus");
/// assert_eq!(config.port, Some(14222));
/// assert_eq!(config.host, "127.0.0.1");
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The interface to listen on (default `127.0.0.1`).
    pub host: String,
    /// The client port; `None` (the default) takes a free one.
    pub port: Option<u16>,
    /// The HTTP monitoring port; `None` (the default) turns monitoring off.
    pub http_port: Option<u16>,
    /// Where the server keeps its configuration, log and JetStream store; kept after the
    /// server stops. `None` (the default): a temporary directory, deleted on drop.
    pub data_dir: Option<PathBuf>,
    /// The server's name; `None` (the default): a name unique to each start, so the
    /// launcher can tell its server from another process that took the port.
    pub server_name: Option<String>,
    /// JetStream's memory store limit, in bytes (default 1 GiB).
    pub max_memory_store: u64,
    /// JetStream's file store limit, in bytes (default 20 GiB).
    pub max_file_store: u64,
    /// JetStream's `sync_interval`: how often the file store is fsynced. `None` (the
    /// default) leaves nats-server's own default (every 2 minutes); `"always"` fsyncs
    /// every write before it is acknowledged.
    pub sync_interval: Option<String>,
    /// Configuration appended verbatim to the generated file (accounts, authorization).
    pub extra_config: String,
    /// Membership of a cluster (set by [`NatsCluster`](crate::NatsCluster) only).
    pub(crate) cluster: Option<ClusterMembership>,
}

/// A node's place in a local cluster.
#[derive(Clone, Debug)]
pub(crate) struct ClusterMembership {
    /// The cluster's name.
    pub(crate) name: String,
    /// This node's route port.
    pub(crate) route_port: u16,
    /// Every node's route port, this one's included.
    pub(crate) routes: Vec<u16>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".to_owned(),
            port: None,
            http_port: None,
            data_dir: None,
            server_name: None,
            max_memory_store: GIB,
            max_file_store: 20 * GIB,
            sync_interval: None,
            extra_config: String::new(),
            cluster: None,
        }
    }
}

impl ServerConfig {
    /// Listens on `host` instead of loopback.
    #[must_use]
    pub fn with_host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }

    /// Listens for clients on `port` (no retry on another port when it is taken).
    #[must_use]
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Serves HTTP monitoring on `port`.
    #[must_use]
    pub fn with_http_port(mut self, port: u16) -> Self {
        self.http_port = Some(port);
        self
    }

    /// Keeps the configuration, log and JetStream store in `dir` (created when missing,
    /// kept after the server stops; a later server on the same directory finds the
    /// store again).
    #[must_use]
    pub fn with_data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Names the server (a server keeping a store across starts keeps its name).
    #[must_use]
    pub fn with_server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Limits JetStream's memory and file stores, in bytes.
    #[must_use]
    pub fn with_jetstream_limits(mut self, max_memory_store: u64, max_file_store: u64) -> Self {
        self.max_memory_store = max_memory_store;
        self.max_file_store = max_file_store;
        self
    }

    /// Sets JetStream's `sync_interval` (`"always"`, or a duration such as `"10s"`).
    #[must_use]
    pub fn with_sync_interval(mut self, interval: impl Into<String>) -> Self {
        self.sync_interval = Some(interval.into());
        self
    }

    /// Appends `text` verbatim to the generated configuration.
    #[must_use]
    pub fn with_extra_config(mut self, text: impl Into<String>) -> Self {
        self.extra_config = text.into();
        self
    }

    /// Makes the server a member of a local cluster.
    pub(crate) fn with_cluster(mut self, membership: ClusterMembership) -> Self {
        self.cluster = Some(membership);
        self
    }

    /// The configuration file's text for a server called `name` on client `port` with
    /// its store in `store`.
    pub(crate) fn render(&self, name: &str, port: u16, store: &Path) -> String {
        let host = &self.host;
        let mut text = format!(
            "# written by sessionbus-launch\nserver_name: {name}\nlisten: \"{host}:{port}\"\nmax_payload: {MAX_PAYLOAD}\n"
        );
        if let Some(http) = self.http_port {
            text.push_str(&format!("http: \"{host}:{http}\"\n"));
        }
        let sync =
            self.sync_interval.as_ref().map(|interval| format!("  sync_interval: {interval:?}\n")).unwrap_or_default();
        text.push_str(&format!(
            "jetstream {{\n  store_dir: {store:?}\n  max_memory_store: {}\n  max_file_store: {}\n{sync}}}\n",
            self.max_memory_store, self.max_file_store
        ));
        if let Some(cluster) = &self.cluster {
            let routes: Vec<String> =
                cluster.routes.iter().map(|route| format!("\"nats-route://{host}:{route}\"")).collect();
            text.push_str(&format!(
                "cluster {{\n  name: {}\n  listen: \"{host}:{}\"\n  routes: [{}]\n}}\n",
                cluster.name,
                cluster.route_port,
                routes.join(", ")
            ));
        }
        text.push_str(&self.extra_config);
        text.push('\n');
        text
    }
}

/// Where a server keeps its files: a temporary directory or one the caller chose.
#[derive(Debug)]
pub(crate) enum ServerDir {
    /// Deleted on drop.
    Temporary(tempfile::TempDir),
    /// Kept.
    Kept(PathBuf),
}

impl ServerDir {
    /// `dir` (created when missing), or a new temporary directory.
    pub(crate) fn new(dir: Option<&Path>, prefix: &str) -> Result<Self, LaunchError> {
        match dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(LaunchError::io_at("create the directory", dir))?;
                Ok(Self::Kept(dir.to_owned()))
            }
            None => tempfile::Builder::new()
                .prefix(prefix)
                .tempdir()
                .map(Self::Temporary)
                .map_err(LaunchError::io("create a temporary directory")),
        }
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        match self {
            Self::Temporary(dir) => dir.path(),
            Self::Kept(dir) => dir,
        }
    }

    /// Writes `config`'s configuration for a server called `name` on client `port` into
    /// the directory and starts the server on it (not waiting for it to accept clients).
    pub(crate) fn spawn(&self, config: &ServerConfig, name: &str, port: u16) -> Result<ServerProcess, LaunchError> {
        let path = self.path().join(CONFIG_FILE);
        std::fs::write(&path, config.render(name, port, &self.path().join(STORE_DIR)))
            .map_err(LaunchError::io_at("write the server configuration", &path))?;
        ServerProcess::spawn(path, self.path().join(LOG_FILE), std::iter::empty::<(&str, &str)>())
    }
}

/// A running JetStream nats-server.
///
/// On drop, a server with a throw-away store is killed (SIGKILL) and its directory
/// deleted, also when a test panics; a server whose store is kept
/// ([`ServerConfig::data_dir`]) is stopped gracefully ([`NatsServer::stop`]).
///
/// ```no_run
/// use sessionbus_launch::{NatsServer, ServerConfig};
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// // A throw-away server on a free loopback port, as the tests use.
/// let server = NatsServer::start()?;
/// let client = server.client().await?;
/// client.publish("greeting", "hello".into()).await?;
///
/// // A server on a fixed port with its store kept, as `sessionbus up` runs it.
/// let mut kept = NatsServer::start_with(ServerConfig::default().with_port(4222).with_data_dir("/tmp/bus"))?;
/// println!("listening on {}", kept.url());
/// kept.stop();
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct NatsServer {
    // Declared before `dir`: the process stops before its directory is deleted.
    process: ServerProcess,
    port: u16,
    name: String,
    config: ServerConfig,
    dir: ServerDir,
}

impl NatsServer {
    /// Starts a throw-away JetStream server ([`ServerConfig::default`]) and waits until
    /// it accepts clients.
    pub fn start() -> Result<Self, LaunchError> {
        Self::start_with(ServerConfig::default())
    }

    /// Starts a JetStream server as `config` says and waits until it accepts clients.
    /// Without a fixed port, a port taken between finding it free and the server
    /// binding it is retried on another one, each time with a fresh store.
    pub fn start_with(config: ServerConfig) -> Result<Self, LaunchError> {
        if let Some(port) = config.port
            && !port_is_free(&config.host, port)
        {
            return Err(LaunchError::PortTaken { host: config.host.clone(), port });
        }
        let attempts = if config.port.is_some() { 1 } else { PORT_ATTEMPTS };
        let mut last_error = None;
        for _ in 0..attempts {
            let dir = ServerDir::new(config.data_dir.as_deref(), "sessionbus-nats-")?;
            let port = match config.port {
                Some(port) => port,
                None => free_port()?,
            };
            let name = config.server_name.clone().unwrap_or_else(|| unique_name("sessionbus"));
            let process = dir.spawn(&config, &name, port)?;
            let mut server = Self { process, port, name, config: config.clone(), dir };
            match server.wait_accepting() {
                Ok(()) => return Ok(server),
                Err(err) => last_error = Some(err),
            }
        }
        Err(last_error.unwrap_or(LaunchError::Startup { program: "nats-server", reason: "no attempt made".into() }))
    }

    /// The client URL (`nats://<host>:<port>`).
    pub fn url(&self) -> String {
        format!("nats://{}:{}", self.config.host, self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The configuration it runs with (`port` is the configured one: `None` when a free
    /// port was taken; see [`NatsServer::port`]).
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The directory of its configuration, log and JetStream store.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.process.log_path().to_owned()
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Connects a client to this server.
    pub async fn client(&self) -> Result<async_nats::Client, async_nats::ConnectError> {
        async_nats::connect(self.url()).await
    }

    /// Kills the server at once (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Stops the server gracefully (SIGINT: JetStream is flushed), killing it when it
    /// has not exited after 10 s.
    pub fn stop(&mut self) {
        self.process.stop(STOP_GRACE);
    }

    /// Kills the server (SIGKILL) and starts it again on the same port with the same
    /// configuration and JetStream store, then waits until it accepts clients. Clients
    /// connected to it lose their connection and reconnect.
    pub fn restart(&mut self) -> Result<(), LaunchError> {
        self.process.respawn()?;
        self.wait_accepting()
    }

    /// Waits until this server (by its name) accepts clients.
    fn wait_accepting(&mut self) -> Result<(), LaunchError> {
        let identity = [("server_name", self.name.as_str())];
        self.process.wait_accepting(&self.config.host, self.port, &identity, STARTUP_TIMEOUT)
    }

    /// The server's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        match self.dir {
            ServerDir::Kept(_) => self.stop(),
            ServerDir::Temporary(_) => self.kill(),
        }
    }
}
