//! [`AckDropper`]: a loopback TCP proxy in front of a nats-server that parses the NATS
//! protocol frames in both directions and can drop one chosen reply (a JetStream
//! publish ack, say) while the connection stays up.
//!
//! A test points a client at the proxy and arms it with a predicate over the client's
//! publishes (`PUB` / `HPUB`: subject, reply subject, headers). The first matching
//! publish's reply subject is remembered, and the next message the server delivers on
//! it (`MSG` / `HMSG`) is not forwarded: the client sees its request time out although
//! the server stored the message. Everything else passes through unchanged.

use std::sync::{Arc, Mutex};

use sessionbus_api::sync::lock;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// A publish as the proxy saw it: its subject, reply subject and header block.
#[derive(Clone, Debug)]
pub struct Publish {
    /// The subject published to.
    pub subject: String,
    /// The reply subject, when the publish is a request.
    pub reply: Option<String>,
    /// The raw header block (`NATS/1.0\r\nName: value\r\n...`), empty for `PUB`.
    pub headers: String,
}

impl Publish {
    /// The value of header `name`, when present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

type Matcher = Box<dyn Fn(&Publish) -> bool + Send>;

#[derive(Default)]
struct Plan {
    /// Waiting for a publish that matches.
    armed: Option<Matcher>,
    /// The reply subject whose next message is dropped.
    drop_reply: Option<String>,
    /// Replies dropped so far.
    dropped: Vec<String>,
}

/// A protocol-aware proxy that drops chosen replies. Stops when dropped.
pub struct AckDropper {
    port: u16,
    plan: Arc<Mutex<Plan>>,
    task: tokio::task::JoinHandle<()>,
}

impl AckDropper {
    /// Listens on a free loopback port and forwards every connection to `upstream_port`.
    pub async fn start(upstream_port: u16) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let plan = Arc::new(Mutex::new(Plan::default()));
        let shared = Arc::clone(&plan);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)).await else { continue };
                let plan = Arc::clone(&shared);
                tokio::spawn(relay(client, server, plan));
            }
        });
        Ok(Self { port, plan, task })
    }

    /// The URL clients use (`nats://127.0.0.1:<port>`).
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Drops the reply to the next publish for which `matches` holds (once).
    pub fn drop_reply_to(&self, matches: impl Fn(&Publish) -> bool + Send + 'static) {
        let mut plan = lock(&self.plan);
        plan.armed = Some(Box::new(matches));
        plan.drop_reply = None;
    }

    /// The reply subjects whose message was dropped so far.
    pub fn dropped(&self) -> Vec<String> {
        lock(&self.plan).dropped.clone()
    }
}

impl Drop for AckDropper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(client: TcpStream, server: TcpStream, plan: Arc<Mutex<Plan>>) {
    let (client_read, mut client_write) = client.into_split();
    let (server_read, mut server_write) = server.into_split();
    let upstream = {
        let plan = Arc::clone(&plan);
        async move {
            let mut frames = BufReader::new(client_read);
            while let Some(frame) = read_frame(&mut frames).await {
                if let Some(publish) = frame.publish() {
                    let mut plan = lock(&plan);
                    if plan.armed.as_ref().is_some_and(|matches| matches(&publish)) {
                        plan.armed = None;
                        plan.drop_reply = publish.reply.clone();
                    }
                }
                if server_write.write_all(&frame.bytes).await.is_err() {
                    return;
                }
            }
        }
    };
    let downstream = async move {
        let mut frames = BufReader::new(server_read);
        while let Some(frame) = read_frame(&mut frames).await {
            if let Some(subject) = frame.delivery_subject() {
                let mut plan = lock(&plan);
                if plan.drop_reply.as_deref() == Some(subject.as_str()) {
                    plan.drop_reply = None;
                    plan.dropped.push(subject);
                    continue;
                }
            }
            if client_write.write_all(&frame.bytes).await.is_err() {
                return;
            }
        }
    };
    tokio::join!(upstream, downstream);
}

/// One protocol frame: its control line and, for messages, its payload, as raw bytes.
struct Frame {
    line: String,
    bytes: Vec<u8>,
    payload_start: usize,
    header_len: usize,
}

impl Frame {
    /// The publish of a `PUB` / `HPUB` frame.
    fn publish(&self) -> Option<Publish> {
        let parts: Vec<&str> = self.line.split_whitespace().collect();
        let (verb, rest) = parts.split_first()?;
        let (subject, reply) = match (verb.to_ascii_uppercase().as_str(), rest.len()) {
            ("PUB", 2) | ("HPUB", 3) => (rest[0], None),
            ("PUB", 3) | ("HPUB", 4) => (rest[0], Some(rest[1].to_owned())),
            _ => return None,
        };
        let headers = self.bytes.get(self.payload_start..self.payload_start + self.header_len).unwrap_or_default();
        Some(Publish { subject: subject.to_owned(), reply, headers: String::from_utf8_lossy(headers).into_owned() })
    }

    /// The subject of a `MSG` / `HMSG` frame.
    fn delivery_subject(&self) -> Option<String> {
        let mut parts = self.line.split_whitespace();
        let verb = parts.next()?.to_ascii_uppercase();
        matches!(verb.as_str(), "MSG" | "HMSG").then(|| parts.next().map(str::to_owned)).flatten()
    }
}

/// Reads one frame; `None` at the end of the stream or on a frame it cannot parse.
async fn read_frame<R: tokio::io::AsyncRead + Unpin>(reader: &mut BufReader<R>) -> Option<Frame> {
    let mut raw = Vec::new();
    if reader.read_until(b'\n', &mut raw).await.ok()? == 0 {
        return None;
    }
    let line = String::from_utf8_lossy(&raw).trim_end().to_owned();
    let parts: Vec<&str> = line.split_whitespace().collect();
    let verb = parts.first().map(|v| v.to_ascii_uppercase()).unwrap_or_default();
    let sizes = |header: bool| -> Option<(usize, usize)> {
        let total: usize = parts.last()?.parse().ok()?;
        let header_len = if header { parts.get(parts.len().checked_sub(2)?)?.parse().ok()? } else { 0 };
        Some((header_len, total))
    };
    let (header_len, total) = match verb.as_str() {
        "PUB" | "MSG" => sizes(false)?,
        "HPUB" | "HMSG" => sizes(true)?,
        _ => return Some(Frame { line, payload_start: raw.len(), bytes: raw, header_len: 0 }),
    };
    let payload_start = raw.len();
    let mut body = vec![0; total + 2];
    reader.read_exact(&mut body).await.ok()?;
    raw.extend_from_slice(&body);
    Some(Frame { line, bytes: raw, payload_start, header_len })
}
