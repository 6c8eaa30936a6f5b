//! One nats-server process with JetStream on a free loopback port.

use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::find_nats_server;

/// The `max_payload` every testkit server sets explicitly: 8 MiB.
pub const MAX_PAYLOAD: usize = 8 * 1024 * 1024;

/// The configuration file in a server's directory.
const CONFIG_FILE: &str = "nats-server.conf";

/// How long a server may take to accept connections.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    /// The nats-server binary is missing; the message says how to install it.
    #[error("{0}")]
    NotInstalled(String),
    /// Local I/O failed (temp dir, config file, spawn).
    #[error("testkit I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// The server did not come up; the message holds the end of its log.
    #[error("nats-server did not start: {0}")]
    Startup(String),
}

/// Options for [`NatsServer::start_with`].
#[derive(Clone, Debug, Default)]
pub struct ServerOptions {
    /// Extra configuration appended verbatim to the generated config file.
    pub extra_config: String,
}

/// A running nats-server, killed (and its store deleted) on drop.
pub struct NatsServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts a JetStream server with default options.
    pub fn start() -> Result<Self, TestkitError> {
        Self::start_with(ServerOptions::default())
    }

    /// Starts a JetStream server on a free loopback port and waits until it accepts
    /// client connections.
    pub fn start_with(options: ServerOptions) -> Result<Self, TestkitError> {
        let binary = find_nats_server()?;
        // A port found free can be taken by another process before the server binds
        // it: try a few times, each with a fresh store.
        let mut last_error = TestkitError::Startup("no attempt made".into());
        for _ in 0..5 {
            let dir = tempfile::Builder::new().prefix("sessionbus-nats-").tempdir()?;
            let port = free_port()?;
            let config = write_config(dir.path(), port, &options)?;
            let child = Command::new(&binary)
                .arg("--config")
                .arg(&config)
                .arg("--log")
                .arg(dir.path().join("server.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            let mut server = Self { child, port, dir };
            match server.wait_ready() {
                Ok(()) => return Ok(server),
                Err(err) => {
                    server.kill();
                    last_error = err;
                }
            }
        }
        Err(last_error)
    }

    /// The client URL (`nats://127.0.0.1:<port>`).
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Connects a client to this server.
    pub async fn client(&self) -> Result<async_nats::Client, async_nats::ConnectError> {
        async_nats::connect(self.url()).await
    }

    /// Kills the server at once (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills the server (SIGKILL) and starts it again on the same port with the same
    /// configuration and JetStream store, then waits until it accepts clients. Clients
    /// connected to it lose their connection and reconnect.
    pub fn restart(&mut self) -> Result<(), TestkitError> {
        self.kill();
        let binary = find_nats_server()?;
        self.child = Command::new(&binary)
            .arg("--config")
            .arg(self.dir.path().join(CONFIG_FILE))
            .arg("--log")
            .arg(self.log_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), TestkitError> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Err(TestkitError::Startup(format!("exited with {status}; log:\n{}", self.log_tail())));
            }
            if accepts_clients(self.port)? {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(TestkitError::Startup(format!(
            "no client connection within {STARTUP_TIMEOUT:?}; log:\n{}",
            self.log_tail()
        )))
    }

    fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(self.log_path()) {
            let _ = file.read_to_string(&mut text);
        }
        let start = text.len().saturating_sub(2000);
        text.get(start..).unwrap_or_default().to_owned()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// True when a nats-server on loopback `port` greets a new client with its `INFO` line.
pub(crate) fn accepts_clients(port: u16) -> Result<bool, std::io::Error> {
    let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) else { return Ok(false) };
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut line = String::new();
    Ok(BufReader::new(stream).read_line(&mut line).is_ok() && line.starts_with("INFO "))
}

/// A loopback port nobody listens on right now.
pub(crate) fn free_port() -> Result<u16, TestkitError> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

fn write_config(dir: &Path, port: u16, options: &ServerOptions) -> Result<PathBuf, TestkitError> {
    let store = dir.join("jetstream");
    let config = format!(
        "listen: \"127.0.0.1:{port}\"\nmax_payload: {MAX_PAYLOAD}\njetstream {{\n  store_dir: {store:?}\n  max_memory_store: 1GB\n  max_file_store: 20GB\n}}\n{}\n",
        options.extra_config
    );
    let path = dir.join(CONFIG_FILE);
    std::fs::write(&path, config)?;
    Ok(path)
}
