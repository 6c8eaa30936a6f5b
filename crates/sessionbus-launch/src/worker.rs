//! [`WorkerProcess`]: a real `sessionbus worker` process, from a [`WorkerConfig`]: spawn,
//! wait for readiness, SIGKILL, SIGSTOP / SIGCONT, resident memory.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::process::send_signal;
use crate::{LaunchError, sessionbus_binary};

/// How long a worker may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// The start of the line a worker prints on stdout once it serves.
const READY_PREFIX: &str = "sessionbus worker ";
/// The word after the worker id in that line.
const READY_WORD: &str = "ready";

/// The line `sessionbus worker` prints on stdout once it serves every endpoint; the
/// launcher waits for it. `prefix` is the bus's subject prefix.
pub fn ready_line(worker_id: &str, prefix: &str) -> String {
    format!("{READY_PREFIX}{worker_id} {READY_WORD} on {prefix}.> (Ctrl-C to stop)")
}

/// The worker id of a [`ready_line`], or `None` for any other line.
fn parse_ready_line(line: &str) -> Option<&str> {
    let mut words = line.strip_prefix(READY_PREFIX)?.split_whitespace();
    let id = words.next()?;
    (words.next()? == READY_WORD).then_some(id)
}

/// How to run a [`WorkerProcess`]. Build it from [`WorkerConfig::default`] with the
/// `with_<field>` setters.
///
/// The default runs the development build of `sessionbus` ([`sessionbus_binary`]) as
/// `sessionbus worker --setup` (the worker creates the JetStream layout first, as on a
/// local bus) with `RUST_LOG=warn` and no OTLP export.
///
/// ```
/// use sessionbus_launch::WorkerConfig;
///
/// let config = WorkerConfig::default()
///     .with_args(["--lease-ttl-secs", "2"])
///     .with_env("RUST_LOG", "warn,sessionbus_nats=debug")
///     .without_setup();
/// assert_eq!(config.args, ["--lease-ttl-secs", "2"]);
/// assert!(!config.setup);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct WorkerConfig {
    /// The `sessionbus` executable; `None` (the default): [`sessionbus_binary`].
    pub binary: Option<PathBuf>,
    /// Arguments after `sessionbus worker`.
    pub args: Vec<String>,
    /// Environment variables, set after the defaults (so `RUST_LOG` here wins).
    pub env: Vec<(String, String)>,
    /// Pass `--setup` (the default): the worker creates or updates the JetStream layout
    /// before it serves. Without it, the layout must exist (`sessionbus setup` run by an
    /// admin, as under the deploy/ accounts).
    pub setup: bool,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self { binary: None, args: Vec::new(), env: Vec::new(), setup: true }
    }
}

impl WorkerConfig {
    /// Runs `binary` (e.g. the running `sessionbus` itself) instead of the development
    /// build.
    #[must_use]
    pub fn with_binary(mut self, binary: impl Into<PathBuf>) -> Self {
        self.binary = Some(binary.into());
        self
    }

    /// Adds arguments after `sessionbus worker`.
    #[must_use]
    pub fn with_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets the environment variable `name` of the worker.
    #[must_use]
    pub fn with_env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Does not pass `--setup`: the JetStream layout must exist.
    #[must_use]
    pub fn without_setup(mut self) -> Self {
        self.setup = false;
        self
    }
}

/// A running `sessionbus worker` process, killed (SIGKILL) on drop.
///
/// Its stdout and stderr are kept in files (see [`WorkerProcess::stderr`]), so a test
/// can look for panics after the fact, and a failed start shows the worker's own words.
///
/// ```no_run
/// use sessionbus_launch::{NatsServer, WorkerConfig, WorkerProcess};
///
/// # async fn example() -> Result<(), sessionbus_launch::LaunchError> {
/// let server = NatsServer::start()?;
/// // `sessionbus worker --setup --lease-ttl-secs 2` against the server, ready.
/// let mut worker = WorkerProcess::start(&server.url(), &["--lease-ttl-secs", "2"]).await?;
/// worker.stop()?; // SIGSTOP: frozen, its connections open
/// worker.cont()?;
/// println!("worker {} uses {:?} KiB", worker.id(), worker.rss_kib());
///
/// // The `sessionbus` command runs its own executable as the worker.
/// let config = WorkerConfig::default().with_binary(std::env::current_exe().expect("exe")).without_setup();
/// let _second = WorkerProcess::start_with(&server.url(), &config).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct WorkerProcess {
    child: Child,
    id: String,
    dir: tempfile::TempDir,
}

impl WorkerProcess {
    /// Spawns `sessionbus worker --setup <args>` against `nats_url` (one URL or a comma
    /// separated list) and waits for its ready line.
    pub async fn start(nats_url: &str, args: &[&str]) -> Result<Self, LaunchError> {
        Self::start_with(nats_url, &WorkerConfig::default().with_args(args.iter().copied())).await
    }

    /// Spawns `sessionbus worker` as `config` says against `nats_url` and waits for its
    /// ready line.
    pub async fn start_with(nats_url: &str, config: &WorkerConfig) -> Result<Self, LaunchError> {
        let binary = match &config.binary {
            Some(binary) => binary.clone(),
            None => sessionbus_binary()?,
        };
        let dir = tempfile::Builder::new()
            .prefix("sessionbus-worker-")
            .tempdir()
            .map_err(LaunchError::io("create a temporary directory for the worker's output"))?;
        let stderr_path = dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).map_err(LaunchError::io_at("create", &stderr_path))?;
        let mut command = Command::new(&binary);
        command
            .arg("worker")
            .args(config.setup.then_some("--setup"))
            .args(&config.args)
            .env("NATS_URL", nats_url)
            .env("RUST_LOG", "warn")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .envs(config.env.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let mut child = command.spawn().map_err(LaunchError::io_at("start", &binary))?;
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<String>();
        if let Some(stdout) = child.stdout.take() {
            let stdout_log = dir.path().join("stdout.log");
            std::thread::spawn(move || copy_stdout(stdout, &stdout_log, ready_tx));
        }
        let mut worker = Self { child, id: String::new(), dir };
        let failed = |reason: String| LaunchError::Startup { program: "sessionbus worker", reason };
        match tokio::time::timeout(READY_TIMEOUT, ready_rx).await {
            Ok(Ok(id)) => {
                worker.id = id;
                Ok(worker)
            }
            Ok(Err(_)) => {
                let status = worker.child.wait().ok();
                Err(failed(format!("it exited before it was ready ({status:?}); its stderr:\n{}", worker.stderr())))
            }
            Err(_) => Err(failed(format!(
                "it printed no ready line within {READY_TIMEOUT:?}; its stderr:\n{}",
                worker.stderr()
            ))),
        }
    }

    /// The worker id it printed in its ready line.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGSTOP: the process freezes (its connections stay open, it answers nothing).
    pub fn stop(&self) -> Result<(), LaunchError> {
        self.signal("STOP")
    }

    /// SIGCONT: a stopped process runs on.
    pub fn cont(&self) -> Result<(), LaunchError> {
        self.signal("CONT")
    }

    /// Sends signal `name` (e.g. `TERM`) with `kill(1)`.
    pub fn signal(&self, name: &str) -> Result<(), LaunchError> {
        send_signal(self.pid(), name)
    }

    /// Resident memory (`VmRSS` of `/proc/<pid>/status`), in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        crate::process::rss_kib(self.pid())
    }

    /// Everything the worker wrote to stderr so far (its logs).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// Everything the worker wrote to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout.log")).unwrap_or_default()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Copies the worker's stdout into a file, reporting the worker id of its ready line
/// once.
fn copy_stdout(stdout: std::process::ChildStdout, log: &Path, ready: tokio::sync::oneshot::Sender<String>) {
    let mut file = std::fs::File::create(log).ok();
    let mut ready = Some(ready);
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Some(file) = file.as_mut() {
            let _ = writeln!(file, "{line}");
        }
        if let Some(id) = parse_ready_line(&line)
            && let Some(ready) = ready.take()
        {
            let _ = ready.send(id.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ready_line_names_the_worker() {
        let line = ready_line("w-1b2c", "sessionbus.v1");
        assert_eq!(line, "sessionbus worker w-1b2c ready on sessionbus.v1.> (Ctrl-C to stop)");
        assert_eq!(parse_ready_line(&line), Some("w-1b2c"));
        assert_eq!(parse_ready_line("sessionbus worker w-1 stopping"), None);
        assert_eq!(parse_ready_line("stopping: draining requests in flight"), None);
    }
}
