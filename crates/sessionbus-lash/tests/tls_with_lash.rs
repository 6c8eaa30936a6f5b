//! In a binary that links lash (whose reqwest pulls rustls' aws-lc-rs provider) and
//! async-nats (ring), after `install_crypto_provider()`: a TLS connection to a real
//! nats-server works, and so does an HTTPS call through the OpenAI-compatible provider
//! to a loopback TLS server. Decision 0010.

mod replay;
mod tls;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use lash_core::LlmRequestScope;
use lash_core::llm::types::{LlmMessage, LlmRequest, LlmRole, LlmToolChoice};
use lash_core::provider::Provider as _;
use lash_http_transport::{ReqwestHttpTransport, reqwest};
use replay::{ReplayServer, Reply, fixture};
use sessionbus_lash::install_crypto_provider;
use sessionbus_lash::provider::openai::{ApiKey, OpenAiConfig, OpenAiProvider};
use sessionbus_testkit::{NatsServer, ServerConfig};
use tls::SelfSigned;

#[test]
fn installing_the_crypto_provider_twice_keeps_the_first_default() {
    let first = install_crypto_provider();
    let second = install_crypto_provider();
    assert!(Arc::ptr_eq(&first, &second));
    let installed = rustls::crypto::CryptoProvider::get_default().expect("a process default");
    assert!(Arc::ptr_eq(&first, installed));
}

#[tokio::test]
async fn a_tls_nats_connection_works_in_a_binary_that_links_lash_after_the_install() {
    install_crypto_provider();
    let cert = SelfSigned::generate();
    let server = NatsServer::start_with(ServerConfig::default().with_extra_config(cert.nats_tls_block()))
        .expect("start nats-server with TLS");

    // The server really speaks TLS: a client that does not trust its certificate is
    // refused (async-nats upgrades to TLS when the server requires it).
    let untrusting = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(2))
        .connect(format!("nats://localhost:{}", server.port()));
    let untrusting = tokio::time::timeout(Duration::from_secs(10), untrusting).await.expect("the attempt ends");
    assert!(untrusting.is_err(), "a client not trusting the self-signed certificate connected");

    let client = async_nats::ConnectOptions::new()
        .require_tls(true)
        .add_root_certificates(cert.cert_path())
        .connect(format!("tls://localhost:{}", server.port()))
        .await
        .expect("connect over TLS");
    let mut subscriber = client.subscribe("tls.check").await.unwrap();
    client.publish("tls.check", "over tls".into()).await.unwrap();
    client.flush().await.unwrap();
    let message = tokio::time::timeout(Duration::from_secs(5), subscriber.next())
        .await
        .expect("the message arrives")
        .expect("the subscription is open");
    assert_eq!(&message.payload[..], b"over tls");
}

#[tokio::test]
async fn an_https_call_through_the_provider_works_after_the_install() {
    install_crypto_provider();
    let cert = SelfSigned::generate();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cert.server_config()));
    let server = ReplayServer::start_tls(vec![Reply::json(200, fixture("plain.json"))], acceptor).await;
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(cert.cert_pem.as_bytes()).unwrap()])
        .build()
        .expect("a reqwest client trusting the test certificate");
    let config = OpenAiConfig::new(server.base_url(true), "gpt-4o-mini").unwrap().with_api_key(ApiKey::new("sk-tls"));
    let mut provider = OpenAiProvider::with_transport(config, Arc::new(ReqwestHttpTransport::from_client(client)));

    let response = provider
        .complete(LlmRequest {
            model: String::new(),
            messages: vec![LlmMessage::text(LlmRole::User, "Capital of France?")],
            attachments: Vec::new(),
            resolved_stored: Default::default(),
            tools: Arc::new(Vec::new()),
            tool_choice: LlmToolChoice::Auto,
            model_variant: Default::default(),
            model_capability: Default::default(),
            generation: Default::default(),
            scope: LlmRequestScope::new("s1", "frame-root", "r1"),
            output_spec: None,
            stream_events: None,
            provider_trace: None,
        })
        .await
        .expect("the HTTPS call succeeds");
    assert_eq!(response.full_text, "Paris is the capital of France.");
    let received = server.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].header("authorization"), Some("Bearer sk-tls"));
}
