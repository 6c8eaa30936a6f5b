//! deploy/nats/auth.conf in a real server, and connections as its users that see the
//! server's permission violations: shared by the permission tests.

#![allow(dead_code)]

use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event};
use sessionbus_testkit::{NatsServer, ServerOptions};
use tokio::sync::mpsc;

/// How long a test waits for a connection or a refusal.
pub const WAIT: Duration = Duration::from_secs(10);

/// The password of `user` in the test servers.
pub fn password_for(user: &str) -> String {
    format!("sb-test-{user}-password")
}

/// A server running auth.conf as deployed: its password variables are defined in the
/// config itself (as the environment defines them in production), the rest is the file.
pub fn start_server() -> NatsServer {
    let auth = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nats/auth.conf"))
        .expect("deploy/nats/auth.conf");
    let mut extra = String::new();
    for word in auth.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '$')) {
        if let Some(variable) = word.strip_prefix('$').filter(|v| v.ends_with("_PASSWORD"))
            && !extra.contains(variable)
        {
            let user = variable.trim_start_matches("SESSIONBUS_").trim_end_matches("_PASSWORD").to_lowercase();
            extra.push_str(&format!("{variable}: \"{}\"\n", password_for(&user)));
        }
    }
    extra.push_str(&auth);
    let server = NatsServer::start_with(ServerOptions { extra_config: extra }).expect("nats-server with auth.conf");
    assert_ne!(server.port(), 4222, "tests never use the default port");
    server
}

/// A connection as one user, and the server errors (permission violations) it receives.
pub struct Conn {
    pub client: Client,
    pub errors: mpsc::UnboundedReceiver<String>,
}

/// Connects as `user` (with its own inbox prefix when given).
pub async fn connect(server: &NatsServer, user: &str, inbox_prefix: Option<&str>) -> Conn {
    let (tx, errors) = mpsc::unbounded_channel();
    let mut options =
        ConnectOptions::with_user_and_password(user.to_owned(), password_for(user)).event_callback(move |event| {
            let tx = tx.clone();
            async move {
                if let Event::ServerError(error) = event {
                    let _ = tx.send(error.to_string());
                }
            }
        });
    if let Some(prefix) = inbox_prefix {
        options = options.custom_inbox_prefix(prefix);
    }
    let client = tokio::time::timeout(WAIT, options.connect(server.url()))
        .await
        .unwrap_or_else(|_| panic!("{user} did not connect in time"))
        .unwrap_or_else(|err| panic!("{user} could not connect: {err}"));
    Conn { client, errors }
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
}
