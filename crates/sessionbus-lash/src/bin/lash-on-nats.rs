//! `lash-on-nats`: a lash runtime whose sessions live on NATS (the JetStream session
//! store, object-store attachments and KV process environments of `sessionbus-lash`,
//! at lash's Durable tier), with a scripted model and the demo tools.
//!
//! It reads commands, one JSON object a line, on stdin, and says what happened, one
//! JSON object a line, on stdout: `sessionbus_lash::peer::protocol` lists both. Start
//! two (or more), on one host or several, with the same `--url` and `--namespace`, and
//! they share sessions: a session's turns run in whichever runtime holds its lane, and
//! when that runtime dies another takes the session over after the lease TTL.
//!
//! ```text
//! lash-on-nats --url nats://127.0.0.1:4222 --script script.json --label a
//! {"op":"enqueue","session":"s1","input_id":"i1","text":"Add 2 and 3"}
//! {"op":"drain","session":"s1","deadline_ms":60000}
//! ```
//!
//! The server needs the store's layout (`sessionbus_lash::store::ensure_store_layout`).
//! It ends when stdin ends.

use std::io::{BufRead as _, Write as _};
use std::sync::Arc;

use sessionbus_lash::peer::args::PeerArgs;
use sessionbus_lash::peer::protocol::{Command, Event};
use sessionbus_lash::peer::{EventSink, Peer, PeerConfig};
use sessionbus_lash::provider::scripted::Script;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args = match PeerArgs::parse(&args) {
        Ok(args) => args,
        Err(err) => return fail(&err.to_string()),
    };
    let script = match Script::load(&args.script) {
        Ok(script) => script,
        Err(err) => return fail(&err.to_string()),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => return fail(&format!("could not start a tokio runtime: {err}")),
    };
    let config = PeerConfig {
        label: args.label,
        url: args.url,
        namespace: args.namespace,
        script,
        lease_timings: args.lease_timings,
    };
    runtime.block_on(serve(config))
}

async fn serve(config: PeerConfig) -> std::process::ExitCode {
    let events: EventSink = Arc::new(say);
    let peer = match Peer::start(config, Arc::clone(&events)).await {
        Ok(peer) => peer,
        Err(err) => return fail(&err.to_string()),
    };
    let (lines, mut commands) = tokio::sync::mpsc::unbounded_channel();
    // stdin is read on a thread of its own: a blocking read must not hold a runtime
    // worker while turns run.
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    while let Some(line) = commands.recv().await {
        if line.trim().is_empty() {
            continue;
        }
        match Command::parse(&line) {
            Ok(command) => peer.run(command).await,
            Err(err) => events(Event::Failed { session: None, error: format!("not a command: {err}: {line}") }),
        }
    }
    std::process::ExitCode::SUCCESS
}

/// Writes `event` as one JSON line and flushes it, so a reader sees it before the
/// process goes on (or is killed).
fn say(event: Event) {
    if let Ok(line) = serde_json::to_string(&event) {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
    }
}

fn fail(message: &str) -> std::process::ExitCode {
    eprintln!("lash-on-nats: {message}");
    std::process::ExitCode::FAILURE
}
