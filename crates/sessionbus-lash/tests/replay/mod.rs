//! A loopback HTTP/1.1 server that replays fixture responses, one per connection, and
//! records every request it received. Plain TCP or TLS (tokio-rustls).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// A fixture file under `tests/fixtures/openai/`.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/openai").join(name);
    std::fs::read(&path).unwrap_or_else(|err| panic!("read {}: {err}", path.display()))
}

/// One response to replay.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The status.
    pub status: u16,
    /// Headers besides `connection: close`.
    pub headers: Vec<(String, String)>,
    /// The body, written piece by piece with a pause between pieces.
    pub pieces: Vec<Vec<u8>>,
}

impl Reply {
    /// A JSON body, written at once.
    pub fn json(status: u16, body: Vec<u8>) -> Self {
        Self { status, headers: vec![("content-type".into(), "application/json".into())], pieces: vec![body] }
    }

    /// An event stream, cut into pieces of at most `piece` bytes (so lines and events
    /// arrive split).
    pub fn sse(body: Vec<u8>, piece: usize) -> Self {
        Self {
            status: 200,
            headers: vec![("content-type".into(), "text/event-stream".into())],
            pieces: body.chunks(piece).map(<[u8]>::to_vec).collect(),
        }
    }

    /// The same reply with one more header.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// A request as the server received it.
#[derive(Clone, Debug)]
pub struct Received {
    /// `POST`, ...
    pub method: String,
    /// The request target, e.g. `/v1/chat/completions`.
    pub path: String,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

impl Received {
    /// The value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(header, _)| header == name).map(|(_, value)| value.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|err| panic!("request body is not JSON ({err}): {}", self.body))
    }
}

/// The server: answers its replies in order, one per connection.
pub struct ReplayServer {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ReplayServer {
    /// Serves plain HTTP on a free loopback port.
    pub async fn start(replies: Vec<Reply>) -> Self {
        Self::start_with(replies, None).await
    }

    /// Serves HTTPS with `acceptor` on a free loopback port.
    pub async fn start_tls(replies: Vec<Reply>, acceptor: TlsAcceptor) -> Self {
        Self::start_with(replies, Some(acceptor)).await
    }

    async fn start_with(replies: Vec<Reply>, acceptor: Option<TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&received);
        let task = tokio::spawn(async move {
            for reply in replies {
                let Ok((tcp, _)) = listener.accept().await else { return };
                match &acceptor {
                    Some(acceptor) => {
                        if let Ok(tls) = acceptor.accept(tcp).await {
                            serve(tls, &reply, &log).await;
                        }
                    }
                    None => serve(tcp, &reply, &log).await,
                }
            }
        });
        Self { addr, received, task }
    }

    /// `http://127.0.0.1:<port>/v1` (or `https://localhost:<port>/v1` for TLS).
    pub fn base_url(&self, tls: bool) -> String {
        if tls { format!("https://localhost:{}/v1", self.addr.port()) } else { format!("http://{}/v1", self.addr) }
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for ReplayServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request, records it, then writes `reply`.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(stream: S, reply: &Reply, log: &Mutex<Vec<Received>>) {
    let _ = exchange(stream, reply, log).await;
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    reply: &Reply,
    log: &Mutex<Vec<Received>>,
) -> Option<()> {
    let mut buffer = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
        if let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            break end + 4;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let path = request_line.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let length: usize = headers.iter().find(|(name, _)| name == "content-length")?.1.parse().ok()?;
    let mut body = buffer[head_end..].to_vec();
    while body.len() < length {
        let mut chunk = vec![0u8; length - body.len()];
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..read]);
    }
    log.lock().unwrap().push(Received { method, path, headers, body: String::from_utf8_lossy(&body).into_owned() });

    let mut head = format!("HTTP/1.1 {} Replay\r\nconnection: close\r\n", reply.status);
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.ok()?;
    for piece in &reply.pieces {
        stream.write_all(piece).await.ok()?;
        stream.flush().await.ok()?;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let _ = stream.shutdown().await;
    Some(())
}
