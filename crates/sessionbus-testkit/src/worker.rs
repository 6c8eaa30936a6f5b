//! Real `sessionbus worker` processes: spawn, wait for readiness, SIGKILL, SIGSTOP /
//! SIGCONT, resident memory.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use crate::TestkitError;

/// How long a worker may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The `sessionbus` binary to run: `SESSIONBUS_BIN`, else the debug `sessionbus` in the
/// target directory of the running test (`<target>/debug/`, found from the test
/// executable's own path), else in `CARGO_TARGET_DIR` or the workspace's `target/`.
///
/// `cargo nextest run --workspace` builds it before any test runs (the CLI's own
/// integration tests need it); a narrower run needs `cargo build -p sessionbus-cli` first.
/// A binary older than any of its sources is refused (it would test old code).
pub fn sessionbus_binary() -> Result<PathBuf, TestkitError> {
    if let Some(path) = std::env::var_os("SESSIONBUS_BIN") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(TestkitError::NotInstalled(format!("SESSIONBUS_BIN points to {}, which is not a file", path.display())))
        };
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    // A test runs from `<target>/debug/deps/`: its target directory is the one cargo
    // built the binary into, wherever that is (`--target-dir`, `CARGO_TARGET_DIR`, a
    // clone in another folder).
    let beside_test = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent()?.parent().map(|debug| debug.join("sessionbus")))
        .filter(|path| path.is_file());
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace.join("target"), PathBuf::from);
    let path = beside_test.unwrap_or_else(|| target.join("debug").join("sessionbus"));
    if !path.is_file() {
        return Err(TestkitError::NotInstalled(format!(
            "the sessionbus binary was not found at {}: build it with `cargo build -p sessionbus-cli` (or point \
             SESSIONBUS_BIN at one)",
            path.display()
        )));
    }
    refuse_if_stale(&path, &workspace)?;
    Ok(path)
}

/// Refuses a binary older than a source it is built from (`cargo build -p
/// sessionbus-cli` was not run after an edit): the tests would test old code.
fn refuse_if_stale(binary: &Path, workspace: &Path) -> Result<(), TestkitError> {
    let built = std::fs::metadata(binary).and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH);
    let newest = ["crates/sessionbus-cli/src", "crates/sessionbus-nats/src", "crates/sessionbus-api/src"]
        .iter()
        .filter_map(|dir| newest_file(&workspace.join(dir)))
        .max();
    match newest {
        Some((modified, file)) if modified > built => Err(TestkitError::NotInstalled(format!(
            "{} is older than {}: it does not hold the current sources. Run `cargo build -p sessionbus-cli` (or \
             point SESSIONBUS_BIN at a current build)",
            binary.display(),
            file.display()
        ))),
        _ => Ok(()),
    }
}

fn newest_file(dir: &Path) -> Option<(SystemTime, PathBuf)> {
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let candidate = if path.is_dir() {
            newest_file(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok().map(|modified| (modified, path))
        };
        if let Some(candidate) = candidate
            && newest.as_ref().is_none_or(|(time, _)| candidate.0 > *time)
        {
            newest = Some(candidate);
        }
    }
    newest
}

/// A running `sessionbus worker` process, killed (SIGKILL) on drop.
///
/// Its stdout and stderr are kept in files (see [`WorkerProcess::stderr`]), so a test
/// can look for panics after the fact.
pub struct WorkerProcess {
    child: Child,
    id: String,
    dir: tempfile::TempDir,
}

impl WorkerProcess {
    /// Spawns `sessionbus worker <args>` against `nats_url` (one URL or a comma separated
    /// list) and waits for its ready line.
    pub async fn start(nats_url: &str, args: &[&str]) -> Result<Self, TestkitError> {
        Self::start_with_env(nats_url, args, &[]).await
    }

    /// Like [`WorkerProcess::start`], with extra environment variables (e.g. `NATS_USER`,
    /// `RUST_LOG`). The worker sets up the JetStream layout first (`--setup`), as a
    /// local bus does; [`WorkerProcess::start_without_setup`] leaves that to an admin.
    pub async fn start_with_env(nats_url: &str, args: &[&str], env: &[(&str, &str)]) -> Result<Self, TestkitError> {
        let args: Vec<&str> = std::iter::once("--setup").chain(args.iter().copied()).collect();
        Self::start_without_setup(nats_url, &args, env).await
    }

    /// Spawns `sessionbus worker <args>` with `env`, expecting the JetStream layout to
    /// exist already (`sessionbus setup` run by an admin), as under the deploy/ accounts.
    pub async fn start_without_setup(
        nats_url: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Self, TestkitError> {
        let binary = sessionbus_binary()?;
        let dir = tempfile::Builder::new().prefix("sessionbus-worker-").tempdir()?;
        let stderr = std::fs::File::create(dir.path().join("stderr.log"))?;
        let mut command = Command::new(binary);
        command
            .arg("worker")
            .args(args)
            .env("NATS_URL", nats_url)
            .env("RUST_LOG", "warn")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| TestkitError::Startup("no stdout pipe".into()))?;
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<String>();
        let stdout_log = dir.path().join("stdout.log");
        std::thread::spawn(move || copy_stdout(stdout, &stdout_log, ready_tx));
        let mut worker = Self { child, id: String::new(), dir };
        match tokio::time::timeout(READY_TIMEOUT, ready_rx).await {
            Ok(Ok(line)) => {
                // "sessionbus worker <id> ready on <prefix>.> (Ctrl-C to stop)"
                worker.id = line.split_whitespace().nth(2).unwrap_or_default().to_owned();
                Ok(worker)
            }
            Ok(Err(_)) => {
                let status = worker.child.wait().ok();
                Err(TestkitError::Startup(format!(
                    "sessionbus worker exited before it was ready ({status:?}); stderr:\n{}",
                    worker.stderr()
                )))
            }
            Err(_) => Err(TestkitError::Startup(format!(
                "sessionbus worker printed no ready line within {READY_TIMEOUT:?}; stderr:\n{}",
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
    pub fn stop(&self) -> Result<(), TestkitError> {
        self.signal("STOP")
    }

    /// SIGCONT: a stopped process runs on.
    pub fn cont(&self) -> Result<(), TestkitError> {
        self.signal("CONT")
    }

    /// Sends signal `name` (e.g. `TERM`) with `kill(1)`.
    pub fn signal(&self, name: &str) -> Result<(), TestkitError> {
        let status = Command::new("kill").arg(format!("-{name}")).arg(self.pid().to_string()).status()?;
        if status.success() {
            Ok(())
        } else {
            Err(TestkitError::Startup(format!("kill -{name} {} failed with {status}", self.pid())))
        }
    }

    /// Resident memory (`VmRSS` of `/proc/<pid>/status`), in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status.lines().find_map(|line| line.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse().ok())
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

/// Copies the worker's stdout into a file, reporting the ready line once.
fn copy_stdout(stdout: std::process::ChildStdout, log: &Path, ready: tokio::sync::oneshot::Sender<String>) {
    let mut file = std::fs::File::create(log).ok();
    let mut ready = Some(ready);
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Some(file) = file.as_mut() {
            let _ = writeln!(file, "{line}");
        }
        if line.starts_with("sessionbus worker ")
            && line.contains(" ready")
            && let Some(ready) = ready.take()
        {
            let _ = ready.send(line);
        }
    }
}
