//! The browser tests' kit: a bus (a real nats-server and `sessionbus worker`
//! processes), the dashboard serving it in this process, and headless chromium driven
//! through chromedriver.

#![allow(dead_code)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use sessionbus_api::{
    AppendSessionNodesRequest, SessionAppendNode, SessionCreateRequest, SessionGraphService as _,
    SessionLifecycleService as _,
};
use sessionbus_dashboard::{Dashboard, DashboardConfig};
use sessionbus_nats::{BusClient, BusClientConfig};
use sessionbus_testkit::{NatsServer, WorkerProcess, free_port};

/// How long a test waits for the page to show something.
pub const WAIT: Duration = Duration::from_secs(15);

/// A bus with its workers and a dashboard serving it.
pub struct Bus {
    pub server: NatsServer,
    pub workers: Vec<WorkerProcess>,
    pub client: BusClient,
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Bus {
    /// A server, `workers` workers started with `worker_args`, and the dashboard.
    pub async fn start(workers: usize, worker_args: &[&str]) -> Self {
        Self::start_with(workers, worker_args, None).await
    }

    /// As [`Bus::start`], the dashboard linking turns to traces under `jaeger_url`.
    pub async fn start_with(workers: usize, worker_args: &[&str], jaeger_url: Option<&str>) -> Self {
        let server = NatsServer::start().expect("nats-server (NATS_SERVER_BIN)");
        let mut started = Vec::new();
        for _ in 0..workers {
            started.push(
                WorkerProcess::start(&server.url(), worker_args)
                    .await
                    .expect("sessionbus worker (cargo build -p sessionbus-cli)"),
            );
        }
        let nats = server.client().await.expect("connect");
        let client = BusClient::new(nats, BusClientConfig::default());
        let config =
            DashboardConfig::new("127.0.0.1:0".parse().unwrap()).with_jaeger_url(jaeger_url.map(str::to_owned));
        let dashboard = Dashboard::bind(config, client.clone()).await.expect("the dashboard binds");
        let url = dashboard.url().expect("its url");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(dashboard.serve(async move {
            let _ = stopped.await;
        }));
        Self { server, workers: started, client, url, stop: Some(stop) }
    }

    /// A root session with `texts` appended as plugin nodes, one append.
    pub async fn session_with(&self, texts: &[&str]) -> String {
        let handle = self.client.create_session(SessionCreateRequest::root(None)).await.expect("create");
        if !texts.is_empty() {
            let nodes = texts.iter().map(|t| note(t)).collect();
            self.client
                .append_session_nodes(
                    &handle.session_id,
                    AppendSessionNodesRequest { nodes, requires_ancestor_node_id: None },
                )
                .await
                .expect("append");
        }
        handle.session_id
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A plugin node of type `note` whose text is `text`.
pub fn note(text: &str) -> SessionAppendNode {
    SessionAppendNode::Plugin { plugin_type: "note".into(), body: json!({ "text": text }), caused_by: None }
}

/// How long [`Browser::close`] waits for chromedriver to exit once asked to.
const DRIVER_EXIT: Duration = Duration::from_secs(5);

/// Headless chromium under chromedriver, both with a temp dir of their own (`TMPDIR`:
/// chromium's profile and its singleton socket go there), removed when it ends.
pub struct Browser {
    pub client: Client,
    driver: Child,
    port: u16,
    tmp: Option<tempfile::TempDir>,
}

/// The chromedriver binary (`CHROMEDRIVER`, else `chromedriver` on PATH; scripts/test
/// installs Debian's chromium and chromium-driver).
fn chromedriver() -> String {
    std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into())
}

impl Browser {
    /// Starts chromedriver on a free port and opens a headless chromium session.
    pub async fn start() -> Self {
        let port = free_port().expect("a free port");
        let tmp = tempfile::Builder::new().prefix("sessionbus-browser-").tempdir().expect("a temp dir");
        let driver = Command::new(chromedriver())
            .arg(format!("--port={port}"))
            .env("TMPDIR", tmp.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (apt-get install chromium chromium-driver; scripts/test does)");
        let mut capabilities = serde_json::Map::new();
        let mut args = vec![
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1280,900",
        ];
        if let Ok(binary) = std::env::var("CHROMIUM") {
            capabilities.insert("goog:chromeOptions".into(), json!({ "args": args, "binary": binary }));
        } else {
            args.push("--no-first-run");
            capabilities.insert("goog:chromeOptions".into(), json!({ "args": args }));
        }
        let deadline = Instant::now() + WAIT;
        let client = loop {
            match ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(client) => break client,
                Err(err) if Instant::now() > deadline => panic!("no chromium session: {err}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        Self { client, driver, port, tmp: Some(tmp) }
    }

    /// The temp dir chromedriver and chromium write to.
    pub fn tmp_dir(&self) -> &Path {
        self.tmp.as_ref().map(|tmp| tmp.path()).expect("open until closed")
    }

    /// Opens `url`.
    pub async fn open(&self, url: &str) {
        self.client.goto(url).await.expect("goto");
    }

    /// The value of `script` (a function body that `return`s) in the page.
    pub async fn eval(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.expect("execute")
    }

    /// Waits until `script` returns true; panics with `what` after `within`.
    pub async fn wait_until(&self, script: &str, within: Duration, what: &str) -> Duration {
        let started = Instant::now();
        loop {
            if self.eval(script).await == Value::Bool(true) {
                return started.elapsed();
            }
            if started.elapsed() > within {
                let text = self.eval("return document.body.innerText").await;
                panic!("{what}: not shown within {within:?}; the page shows:\n{}", text.as_str().unwrap_or_default());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Saves a screenshot as `<target>/dashboard-screenshots/<name>.png` and returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = screenshots_dir();
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// Ends the browser session (chromium deletes its profile), stops chromedriver
    /// ([`Browser::stop_driver`]) and removes the temp dir. Returns whether chromedriver
    /// exited by itself.
    pub async fn close(mut self) -> bool {
        let _ = self.client.clone().close().await;
        let exited = tokio::task::block_in_place(|| self.stop_driver());
        self.remove_tmp();
        exited
    }

    /// Asks chromedriver to shut down (it quits the chromium of any session still
    /// open) and waits for it to exit, killing it only past [`DRIVER_EXIT`]. Blocking:
    /// [`Drop`] calls it too. Returns whether it exited by itself.
    fn stop_driver(&mut self) -> bool {
        if !matches!(self.driver.try_wait(), Ok(None)) {
            return true;
        }
        if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
            let _ = stream.write_all(b"GET /shutdown HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        }
        let deadline = Instant::now() + DRIVER_EXIT;
        while Instant::now() < deadline {
            if matches!(self.driver.try_wait(), Ok(Some(_))) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        false
    }

    fn remove_tmp(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let path = tmp.path().to_owned();
            if let Err(err) = tmp.close() {
                eprintln!("could not remove the browser's temp dir {}: {err}", path.display());
            }
        }
    }
}

impl Drop for Browser {
    /// A test that panicked before [`Browser::close`]: stop chromedriver and its
    /// chromium all the same, then remove the temp dir.
    fn drop(&mut self) {
        self.stop_driver();
        self.remove_tmp();
    }
}

/// Where screenshots go: `target/dashboard-screenshots` (`SESSIONBUS_SCREENSHOTS` overrides).
pub fn screenshots_dir() -> PathBuf {
    match std::env::var_os("SESSIONBUS_SCREENSHOTS") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("..").join("dashboard-screenshots"),
    }
}
