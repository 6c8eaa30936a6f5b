//! The testkit starts a real JetStream server that async-nats can use.

use async_nats::jetstream::{self, kv};
use sessionbus_testkit::{MAX_PAYLOAD, NatsServer};

#[tokio::test]
async fn kv_create_update_and_stale_update() {
    let server = NatsServer::start().expect("start nats-server");
    assert_ne!(server.port(), 4222, "tests never use the default port");
    let client = server.client().await.expect("connect");
    assert_eq!(client.server_info().max_payload, MAX_PAYLOAD);
    let js = jetstream::new(client);
    let bucket = js
        .create_key_value(kv::Config { bucket: "SMOKE".into(), history: 5, ..Default::default() })
        .await
        .expect("create bucket");
    let first = bucket.create("key", "one".into()).await.expect("create key");
    let second = bucket.update("key", "two".into(), first).await.expect("update with the current revision");
    assert!(second > first);
    let stale = bucket.update("key", "three".into(), first).await;
    let err = stale.expect_err("an update with a stale revision must fail");
    assert_eq!(err.kind(), kv::UpdateErrorKind::WrongLastRevision);
    let entry = bucket.entry("key").await.expect("read").expect("present");
    assert_eq!(&entry.value[..], b"two");
    assert_eq!(entry.revision, second);
}

#[test]
fn server_stops_on_drop() {
    let server = NatsServer::start().expect("start nats-server");
    let port = server.port();
    drop(server);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "the server must be gone after drop");
}
