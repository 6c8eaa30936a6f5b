//! [`ServerProcess`]: one `nats-server` process of a configuration file, and the small
//! process tools every launcher uses (free ports, readiness, signals, the monitoring port).

use std::ffi::OsString;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::deadline::Deadline;
use crate::{LaunchError, find_nats_server};

/// How often readiness is polled.
const POLL: Duration = Duration::from_millis(20);
/// NATS's default client port, which a launched server never takes by chance.
const DEFAULT_NATS_PORT: u16 = 4222;
/// How much of a log an error message quotes, in bytes.
const LOG_TAIL: usize = 3000;

/// A `nats-server` running one configuration file, with its log in a file; killed
/// (SIGKILL) on drop.
///
/// [`NatsServer`](crate::NatsServer) and [`NatsCluster`](crate::NatsCluster) write their
/// own configuration and run it through this type; a test of configuration files kept in
/// the repository (the deploy/ configs) runs those directly:
///
/// ```no_run
/// use sessionbus_launch::ServerProcess;
///
/// # fn main() -> Result<(), sessionbus_launch::LaunchError> {
/// let dir = tempfile::tempdir().expect("temp dir");
/// let mut server = ServerProcess::spawn(
///     "deploy/nats/node1.conf",
///     dir.path().join("node1.log"),
///     [("SESSIONBUS_ROUTE_PASSWORD", "secret")],
/// )?;
/// let offset = server.log_len();
/// // ... drive the server ...
/// println!("{}", server.log_since(offset));
/// server.kill();
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct ServerProcess {
    binary: PathBuf,
    config: PathBuf,
    log: PathBuf,
    env: Vec<(OsString, OsString)>,
    child: Option<Child>,
}

impl ServerProcess {
    /// Starts the pinned nats-server ([`find_nats_server`]) with `--config config --log
    /// log` and the environment variables `env` (which the configuration may read); what
    /// it writes outside its log goes to `<log>.out` ([`ServerProcess::output`]). It does
    /// not wait for the server to accept clients: see [`ServerProcess::wait_accepting`].
    pub fn spawn<K, V>(
        config: impl Into<PathBuf>,
        log: impl Into<PathBuf>,
        env: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, LaunchError>
    where
        K: Into<OsString>,
        V: Into<OsString>,
    {
        let mut process = Self {
            binary: find_nats_server()?,
            config: config.into(),
            log: log.into(),
            env: env.into_iter().map(|(name, value)| (name.into(), value.into())).collect(),
            child: None,
        };
        process.respawn()?;
        Ok(process)
    }

    /// Kills the process if it runs, and starts it again with the same configuration,
    /// log and environment (a JetStream store in the configuration is kept).
    pub fn respawn(&mut self) -> Result<(), LaunchError> {
        self.kill();
        // What the server writes outside its log (a crash, a fatal error before the log
        // opens) goes to a file beside it.
        let output_path = self.output_path();
        let output = std::fs::File::create(&output_path).map_err(LaunchError::io_at("create", &output_path))?;
        let errors = output.try_clone().map_err(LaunchError::io_at("open", &output_path))?;
        let child = Command::new(&self.binary)
            .arg("--config")
            .arg(&self.config)
            .arg("--log")
            .arg(&self.log)
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(errors)
            .spawn()
            .map_err(LaunchError::io_at("start", &self.binary))?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits, within `limit`, until this server greets a client on `host:port` with its
    /// `INFO` line. `identity` names fields that `INFO` must hold (`server_name`,
    /// `cluster`): a greeting from another server that took the port does not count.
    /// Fails at once when the process exits.
    pub fn wait_accepting(
        &mut self,
        host: &str,
        port: u16,
        identity: &[(&str, &str)],
        limit: Duration,
    ) -> Result<(), LaunchError> {
        let deadline = Deadline::after(limit);
        let mut stranger = None;
        loop {
            let info = server_info(host, port);
            let exited = if self.child.is_none() { Some(None) } else { self.exit_status().map(Some) };
            if let Some(status) = exited {
                return Err(LaunchError::Startup {
                    program: "nats-server",
                    reason: format!(
                        "it exited{}. Is port {port} (or another port of {}) taken? The end of its log:\n{}",
                        status.map_or(String::new(), |status| format!(" with {status}")),
                        self.config.display(),
                        self.log_tail()
                    ),
                });
            }
            match info {
                Some(info) if identity.iter().all(|(field, value)| info[field] == *value) => return Ok(()),
                Some(info) => stranger = Some(info),
                None => {}
            }
            if !deadline.pause_blocking(POLL) {
                let seen = stranger.map_or(String::new(), |info| format!(" (another server answered there: {info})"));
                return Err(LaunchError::Startup {
                    program: "nats-server",
                    reason: format!(
                        "no client connection on {host}:{port} within {limit:?}{seen}. The end of its log:\n{}",
                        self.log_tail()
                    ),
                });
            }
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True while the process runs (it was not killed and has not exited).
    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.exit_status().is_none()
    }

    /// The exit status, once the process has exited on its own (it is then reaped).
    fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// Kills the process at once (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server gracefully (SIGINT: it flushes JetStream and closes its
    /// connections), killing it when it has not exited within `grace`.
    pub fn stop(&mut self, grace: Duration) {
        let Some(pid) = self.pid() else { return };
        if self.exit_status().is_some() {
            return;
        }
        if send_signal(pid, "INT").is_ok() {
            let deadline = Deadline::after(grace);
            while self.exit_status().is_none() && deadline.pause_blocking(Duration::from_millis(50)) {}
        }
        self.kill();
    }

    /// The configuration file it runs.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// Its log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Its whole log so far (empty before the server wrote one).
    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(&self.log) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }

    /// The length of its log so far, in bytes: an offset for [`ServerProcess::log_since`].
    pub fn log_len(&self) -> usize {
        self.log().len()
    }

    /// The log written after `offset` bytes.
    pub fn log_since(&self, offset: usize) -> String {
        self.log().get(offset..).unwrap_or_default().to_owned()
    }

    /// What the server wrote to stdout and stderr (outside its log): a crash's trace, a
    /// fatal error before the log opened.
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.output_path()).unwrap_or_default()
    }

    /// The file of [`ServerProcess::output`]: the log's path with `.out` appended.
    fn output_path(&self) -> PathBuf {
        let mut path = self.log.clone().into_os_string();
        path.push(".out");
        PathBuf::from(path)
    }

    /// The end of its log, and its output outside the log when there is any, for error
    /// messages.
    pub fn log_tail(&self) -> String {
        let tail = |text: String| {
            let start = text.len().saturating_sub(LOG_TAIL);
            let start = (start..text.len()).find(|index| text.is_char_boundary(*index)).unwrap_or(text.len());
            text[start..].to_owned()
        };
        let output = self.output();
        if output.trim().is_empty() {
            tail(self.log())
        } else {
            format!("{}\noutside the log:\n{}", tail(self.log()), tail(output))
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback port nobody listens on right now, never NATS's default 4222 (another
/// process may take it before the caller binds it; the launchers retry with fresh ports
/// when a server cannot bind).
/// Resident memory of process `pid` (`VmRSS` of `/proc/<pid>/status`), in KiB; `None`
/// when the process is gone or the system has no `/proc`.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| line.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse().ok())
}

/// A loopback port nobody listens on right now (never 4222).
pub fn free_port() -> Result<u16, LaunchError> {
    loop {
        let port = TcpListener::bind(("127.0.0.1", 0))
            .and_then(|listener| listener.local_addr())
            .map(|address| address.port())
            .map_err(LaunchError::io("find a free loopback port"))?;
        if port != DEFAULT_NATS_PORT {
            return Ok(port);
        }
    }
}

/// True when nothing listens on `host:port` (it can be bound now).
pub(crate) fn port_is_free(host: &str, port: u16) -> bool {
    TcpListener::bind((host, port)).is_ok()
}

/// The `INFO` a nats-server on `host:port` greets a new client with, as JSON; `None`
/// when nothing answers like a nats-server.
fn server_info(host: &str, port: u16) -> Option<serde_json::Value> {
    let stream = TcpStream::connect((host, port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).ok()?;
    serde_json::from_str(line.strip_prefix("INFO ")?.trim()).ok()
}

/// A name no other launched server has: for telling this launch's server from another
/// that took its port.
pub(crate) fn unique_name(prefix: &str) -> String {
    use std::hash::BuildHasher as _;
    let random = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
    format!("{prefix}-{random:016x}")
}

/// Sends signal `name` (`STOP`, `CONT`, `INT`, ...) to process `pid` with `kill(1)`.
pub(crate) fn send_signal(pid: u32, name: &str) -> Result<(), LaunchError> {
    let failed = |reason: String| LaunchError::Signal { signal: name.to_owned(), pid, reason };
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status()
        .map_err(|err| failed(format!("could not run kill: {err}")))?;
    if status.success() { Ok(()) } else { Err(failed(format!("kill exited with {status}"))) }
}

/// A plain HTTP/1.0 GET of `path` on a server's loopback monitoring port (`/healthz`,
/// `/routez`, `/varz`, ...): the status code and the body.
pub fn monitoring_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    Ok((status, body))
}
