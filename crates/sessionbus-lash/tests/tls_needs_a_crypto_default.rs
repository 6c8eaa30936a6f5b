//! Why `install_crypto_provider` exists: in a binary that links lash and async-nats,
//! rustls has two crypto providers compiled in (aws-lc-rs through lash's reqwest, ring
//! through async-nats) and cannot pick a default, so async-nats' first TLS connection
//! panics when nothing was installed. Kept in a test binary of its own: the process
//! default is global, and no test here may install one.

mod tls;

use std::time::Duration;

use sessionbus_testkit::{NatsServer, ServerConfig};
use tls::SelfSigned;

#[tokio::test]
async fn without_an_installed_default_a_tls_nats_connection_panics_in_a_binary_that_links_lash() {
    assert!(rustls::crypto::CryptoProvider::get_default().is_none(), "nothing installed a default in this binary");
    let cert = SelfSigned::generate();
    let server = NatsServer::start_with(ServerConfig::default().with_extra_config(cert.nats_tls_block()))
        .expect("start nats-server with TLS");
    let url = format!("tls://localhost:{}", server.port());
    let root = cert.cert_path();
    let attempt = tokio::spawn(async move {
        async_nats::ConnectOptions::new()
            .require_tls(true)
            .add_root_certificates(root)
            .connection_timeout(Duration::from_secs(5))
            .connect(url)
            .await
    });
    let outcome = tokio::time::timeout(Duration::from_secs(20), attempt).await.expect("the attempt ends");
    match outcome {
        Err(join) => {
            assert!(join.is_panic(), "the attempt failed other than by a panic: {join}");
            let payload = join.into_panic();
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|text| (*text).to_owned()))
                .unwrap_or_default();
            assert!(message.contains("CryptoProvider"), "a panic of another cause: {message}");
        }
        Ok(result) => panic!("async-nats connected (or failed cleanly) without a default: {:?}", result.map(|_| ())),
    }
}
