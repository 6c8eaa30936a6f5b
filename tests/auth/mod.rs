//! deploy/nats/accounts.conf in a real server, with credentials minted by the real
//! `sessionbus credentials`, and connections as its users that see the server's
//! permission violations: shared by the deploy and security tests.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event};
use sessionbus_testkit::{NatsServer, ServerConfig, WorkerConfig, WorkerProcess, sessionbus_binary};
use tokio::sync::mpsc;

/// How long a test waits for a connection or a refusal.
pub const WAIT: Duration = Duration::from_secs(10);

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Credentials minted by `sessionbus credentials` into a throw-away directory: the
/// servers' environment (`server.env`) and one seed file per user.
pub struct Credentials {
    dir: tempfile::TempDir,
    /// `NAME -> value` of server.env.
    pub server_env: BTreeMap<String, String>,
}

impl Credentials {
    /// Runs `sessionbus credentials --out <tmp> --routes <routes>`.
    pub fn mint(routes: &[String]) -> Self {
        let dir = tempfile::Builder::new().prefix("sessionbus-credentials-").tempdir().expect("temp dir");
        let output = std::process::Command::new(sessionbus_binary().expect("the sessionbus binary"))
            .args(["credentials", "--out"])
            .arg(dir.path())
            .arg("--routes")
            .arg(if routes.is_empty() { "127.0.0.1:1".to_owned() } else { routes.join(",") })
            .output()
            .expect("run sessionbus credentials");
        assert!(output.status.success(), "sessionbus credentials failed: {}", String::from_utf8_lossy(&output.stderr));
        let text = std::fs::read_to_string(dir.path().join("server.env")).expect("server.env");
        let server_env = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .map(|line| {
                let (name, value) = line.split_once('=').expect("NAME=value");
                (name.to_owned(), value.to_owned())
            })
            .collect();
        Self { dir, server_env }
    }

    /// The seed file of `user`.
    pub fn seed_file(&self, user: &str) -> PathBuf {
        self.dir.path().join(format!("{user}.nk"))
    }

    /// The seed of `user`.
    pub fn seed(&self, user: &str) -> String {
        std::fs::read_to_string(self.seed_file(user)).expect("seed file").trim().to_owned()
    }

    /// The server.env variables that `config` reads, as nats-server config variable
    /// definitions (the config's own way to define what production passes in the
    /// environment; the server refuses a defined variable nothing reads).
    pub fn as_config_variables(&self, config: &str) -> String {
        self.server_env
            .iter()
            .filter(|(name, _)| config.contains(&format!("${name}")))
            .map(|(name, value)| format!("{name}: {}\n", config_value(value)))
            .collect()
    }
}

/// `value` as the server parses an environment variable's value: a list stays a list.
fn config_value(value: &str) -> String {
    if value.starts_with('[') { value.to_owned() } else { format!("\"{value}\"") }
}

/// The text of `relative` under the repository root.
pub fn read(relative: &str) -> String {
    std::fs::read_to_string(root().join(relative)).unwrap_or_else(|err| panic!("read {relative}: {err}"))
}

/// A server running deploy/nats/accounts.conf as deployed (the users' keys from
/// freshly minted credentials), with the credentials.
pub fn start_server() -> (NatsServer, Credentials) {
    let credentials = Credentials::mint(&[]);
    let accounts = read("deploy/nats/accounts.conf");
    let mut extra = credentials.as_config_variables(&accounts);
    extra.push_str(&accounts);
    let server = NatsServer::start_with(ServerConfig::default().with_extra_config(extra))
        .expect("nats-server with accounts.conf");
    assert_ne!(server.port(), 4222, "tests never use the default port");
    (server, credentials)
}

/// A connection as one user, and the server errors (permission violations) it receives.
pub struct Conn {
    pub client: Client,
    pub errors: mpsc::UnboundedReceiver<String>,
}

/// Connect options as `user` (its nkey seed), reporting server errors into a channel.
pub fn options(credentials: &Credentials, user: &str) -> (ConnectOptions, mpsc::UnboundedReceiver<String>) {
    let (tx, errors) = mpsc::unbounded_channel();
    let options = ConnectOptions::with_nkey(credentials.seed(user)).event_callback(move |event| {
        let tx = tx.clone();
        async move {
            if let Event::ServerError(error) = event {
                let _ = tx.send(error.to_string());
            }
        }
    });
    (options, errors)
}

/// Connects to `url` as `user` (with its own inbox prefix when given).
pub async fn connect_url(url: &str, credentials: &Credentials, user: &str, inbox_prefix: Option<&str>) -> Conn {
    let (mut options, errors) = options(credentials, user);
    if let Some(prefix) = inbox_prefix {
        options = options.custom_inbox_prefix(prefix);
    }
    let client = tokio::time::timeout(WAIT, options.connect(url))
        .await
        .unwrap_or_else(|_| panic!("{user} did not connect in time"))
        .unwrap_or_else(|err| panic!("{user} could not connect: {err}"));
    Conn { client, errors }
}

/// Connects to `server` as `user`.
pub async fn connect(server: &NatsServer, credentials: &Credentials, user: &str, inbox_prefix: Option<&str>) -> Conn {
    connect_url(&server.url(), credentials, user, inbox_prefix).await
}

/// Runs `sessionbus setup` against `url` as the admin user.
pub fn setup_as_admin(url: &str, credentials: &Credentials, replicas: usize) {
    run_setup(url, &credentials.seed_file("admin"), replicas).unwrap_or_else(|err| panic!("{err}"));
}

/// Runs `sessionbus setup` with the seed in `seed_file`; the error holds its output.
pub fn run_setup(url: &str, seed_file: &Path, replicas: usize) -> Result<(), String> {
    let output = std::process::Command::new(sessionbus_binary().expect("the sessionbus binary"))
        .args(["setup", "--wait-secs", "30", "--replicas", &replicas.to_string()])
        .env("NATS_URL", url)
        .env("NATS_NKEY", seed_file)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run sessionbus setup");
    match output.status.success() {
        true => Ok(()),
        false => Err(format!(
            "sessionbus setup failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )),
    }
}

impl Conn {
    /// Forgets the errors received so far.
    pub fn drain(&mut self) {
        while self.errors.try_recv().is_ok() {}
    }

    /// Waits for the server's permission violation for `operation` ("Publish" or
    /// "Subscription") on `subject`.
    pub async fn expect_violation(&mut self, operation: &str, subject: &str) {
        let wanted = format!("Permissions Violation for {operation} to \"{subject}\"");
        let seen = tokio::time::timeout(WAIT, async {
            while let Some(error) = self.errors.recv().await {
                if error.contains(&wanted) {
                    return true;
                }
            }
            false
        })
        .await;
        assert!(matches!(seen, Ok(true)), "expected the server to refuse: {wanted}");
    }

    /// Fails when the server reported an error on this connection.
    pub fn assert_no_violation(&mut self, what: &str) {
        if let Ok(error) = self.errors.try_recv() {
            panic!("{what}: unexpected server error {error}");
        }
    }
}

/// A real `sessionbus worker` under the `worker` user (its seed from `credentials`), on
/// the layout `sessionbus setup` made as admin (it has no right to make it).
pub async fn worker_as_worker_user(server: &NatsServer, credentials: &Credentials) -> WorkerProcess {
    let seed = credentials.seed_file("worker");
    let config = WorkerConfig::default()
        .without_setup()
        .with_env("NATS_NKEY", seed.to_str().expect("utf-8 path"))
        .with_env("RUST_LOG", "warn");
    WorkerProcess::start_with(&server.url(), &config)
        .await
        .expect("the worker starts under the worker user, on the layout setup made")
}
