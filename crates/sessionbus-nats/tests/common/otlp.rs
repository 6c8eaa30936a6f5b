//! A minimal OTLP/HTTP (protobuf) receiver for tests: accepts `POST /v1/traces`,
//! decodes the spans with the opentelemetry-proto types and keeps them.

use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpListener;

/// One received span with the service that sent it.
#[derive(Clone, Debug)]
pub struct Received {
    pub service: String,
    pub span: Span,
}

pub struct Receiver {
    pub port: u16,
    pub spans: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    /// Listens on `port` (0: a free one).
    pub async fn start(port: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind the OTLP receiver");
        let port = listener.local_addr().expect("addr").port();
        let spans: Arc<Mutex<Vec<Received>>> = Arc::default();
        let sink = Arc::clone(&spans);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let sink = Arc::clone(&sink);
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut read = BufReader::new(read);
                    loop {
                        let mut length = 0usize;
                        loop {
                            let mut line = String::new();
                            if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                                return;
                            }
                            let line = line.trim_end();
                            if line.is_empty() {
                                break;
                            }
                            if let Some((name, value)) = line.split_once(':')
                                && name.eq_ignore_ascii_case("content-length")
                            {
                                length = value.trim().parse().unwrap_or(0);
                            }
                        }
                        let mut body = vec![0u8; length];
                        if read.read_exact(&mut body).await.is_err() {
                            return;
                        }
                        if let Ok(request) = ExportTraceServiceRequest::decode(body.as_slice()) {
                            let mut sink = sink.lock().unwrap();
                            for resource in request.resource_spans {
                                let service = resource
                                    .resource
                                    .iter()
                                    .flat_map(|r| r.attributes.iter())
                                    .find(|kv| kv.key == "service.name")
                                    .and_then(|kv| kv.value.as_ref())
                                    .map(|v| format!("{:?}", v.value))
                                    .unwrap_or_default();
                                for scope in resource.scope_spans {
                                    for span in scope.spans {
                                        sink.push(Received { service: service.clone(), span });
                                    }
                                }
                            }
                        }
                        let reply =
                            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                        if write.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { port, spans, task }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn received(&self) -> Vec<Received> {
        self.spans.lock().unwrap().clone()
    }

    /// Waits until `done` holds for the spans received, or panics after `limit`.
    pub async fn wait_for(&self, limit: std::time::Duration, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let spans = self.received();
            if done(&spans) {
                return spans;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "spans did not arrive within {limit:?}: {} received",
                spans.len()
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}
