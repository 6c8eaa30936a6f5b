//! The terminal as a new user meets it after `sessionbus up`: no NATS_URL, no other
//! environment than HOME and PATH. `status`, `sessions` and `watch` find the bus
//! through the `nats` CLI's selected context, or else at nats://127.0.0.1:4222.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sessionbus_api::{SessionCreateRequest, SessionLifecycleService as _};
use sessionbus_nats::{BusClient, BusClientConfig};
use sessionbus_testkit::{find_nats_server, free_port};

mod support;

const BIN: &str = env!("CARGO_BIN_EXE_sessionbus");

/// A child process stopped with Ctrl-C (SIGINT) on drop, killed if it lingers.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-INT").arg(self.0.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `sessionbus` with an empty environment but HOME and a PATH holding nats-server.
fn clean(home: &Path) -> Command {
    let server_dir = find_nats_server().expect("nats-server installed").parent().expect("a directory").to_owned();
    let mut command = Command::new(BIN);
    command.env_clear().env("HOME", home).env("PATH", format!("{}:/usr/bin:/bin", server_dir.display()));
    command
}

fn run(home: &Path, args: &[&str]) -> Output {
    clean(home).args(args).output().expect("run sessionbus")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A client port whose derived monitoring port (port + 4000) is free too.
fn port_pair() -> (u16, u16) {
    loop {
        let port = free_port().expect("a free port");
        if let Some(http) = port.checked_add(4000)
            && std::net::TcpListener::bind(("127.0.0.1", http)).is_ok()
        {
            return (port, http);
        }
    }
}

/// Selects a `nats` context named `local` pointing at `url` under `home`.
fn select_context(home: &Path, url: &str) {
    let dir = home.join(".config/nats");
    std::fs::create_dir_all(dir.join("context")).expect("mkdir");
    std::fs::write(dir.join("context.txt"), "local").expect("write");
    let context = serde_json::json!({ "description": "", "url": url, "creds": "", "nkey": "", "user": "" });
    std::fs::write(dir.join("context/local.json"), context.to_string()).expect("write");
}

/// Starts `up` and waits for its banner.
fn up(home: &Path, args: &[&str]) -> (Running, String) {
    let mut child = clean(home)
        .arg("up")
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn up");
    let (banner, _) = support::up_banner(&mut child);
    (Running(child), banner)
}

#[test]
fn status_sessions_and_watch_reach_a_fresh_bus_through_the_selected_nats_context() {
    let home = tempfile::tempdir().expect("tempdir");
    let (port, http) = port_pair();
    let url = format!("nats://127.0.0.1:{port}");
    select_context(home.path(), &url);
    let (_bus, banner) = up(home.path(), &["--port", &port.to_string()]);
    assert!(banner.contains(&format!("http://127.0.0.1:{http}")), "monitoring follows the port: {banner}");
    assert!(banner.contains(&format!("sessionbus-{port}")), "its own data directory: {banner}");

    let status = run(home.path(), &["status"]);
    assert!(status.status.success(), "status: {}", stderr(&status));
    assert!(stdout(&status).contains("1 workers"), "{}", stdout(&status));

    // Three sessions, the second closed, written by an application.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let ids = ["first", "second", "third"];
    runtime.block_on(async {
        let nats = async_nats::connect(&url).await.expect("connect");
        let client = Arc::new(BusClient::new(nats, BusClientConfig::default()));
        for id in ids {
            client.create_session(SessionCreateRequest::root(Some(id.into()))).await.expect("create");
        }
        client.close_session("second").await.expect("close");
    });

    let page = |args: &[&str]| -> serde_json::Value {
        let output = run(home.path(), &[&["sessions", "--json"], args].concat());
        assert!(output.status.success(), "sessions {args:?}: {}", stderr(&output));
        serde_json::from_slice(&output.stdout).expect("a JSON page")
    };
    let listed = |page: &serde_json::Value| -> Vec<String> {
        page["sessions"]
            .as_array()
            .expect("sessions")
            .iter()
            .map(|s| s["session_id"].as_str().unwrap_or("?").to_owned())
            .collect()
    };
    let first = page(&["--limit", "2"]);
    assert_eq!(listed(&first), ["first", "second"]);
    let next = first["next_after"].as_str().expect("a next page");
    let second = page(&["--limit", "2", "--after", next]);
    assert_eq!(listed(&second), ["third"]);
    assert_eq!(listed(&page(&["--status", "closed"])), ["second"]);
    let table = stdout(&run(home.path(), &["sessions", "--status", "open"]));
    assert!(table.contains("first") && table.contains("third") && !table.contains("second"), "{table}");

    // Right after the writes, `watch --since` shows them without any new write.
    for since in ["1h", "1"] {
        let watched =
            clean(home.path()).args(["watch", "--json", "--count", "3", "--since", since]).output().expect("watch");
        assert!(watched.status.success(), "watch --since {since}: {}", stderr(&watched));
        let events: Vec<serde_json::Value> =
            stdout(&watched).lines().map(|line| serde_json::from_str(line).expect("a JSON line")).collect();
        assert_eq!(events.len(), 3, "--since {since}");
        assert_eq!(events[0]["session_id"], "first", "oldest first: {events:?}");
        assert_eq!(events[0]["kind"], "meta");
    }
}

#[test]
fn without_nats_url_or_a_context_commands_use_the_default_server() {
    // Skipped only when something listens on 4222 (a developer's own bus): the check
    // needs that nothing answers there, and this test never starts a server on it.
    if std::net::TcpStream::connect(("127.0.0.1", 4222)).is_ok() {
        eprintln!("skipped: 127.0.0.1:4222 is in use on this machine");
        return;
    }
    let home = tempfile::tempdir().expect("tempdir");
    for command in ["status", "sessions", "watch"] {
        let output = run(home.path(), &[command]);
        assert!(!output.status.success(), "{command}");
        let error = stderr(&output);
        assert!(error.contains("nats://127.0.0.1:4222") && error.contains("sessionbus up"), "{command}: {error}");
        assert!(!error.contains("NATS_URL is not set"), "{command}: {error}");
    }
}
