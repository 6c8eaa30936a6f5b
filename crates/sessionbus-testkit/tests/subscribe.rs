//! A confirmed subscription is in place at the server when it is returned.

use std::time::Duration;

use futures::StreamExt;
use sessionbus_testkit::{NatsServer, subscribe_confirmed};

/// Many rounds, each a fresh subject: the watcher subscribes, and another connection
/// publishes the moment the subscription is returned. Every message arrives. (A
/// subscription followed only by `flush` loses some of them on a loaded machine: the
/// server may route the publish before it reads the `SUB`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmed_subscription_sees_what_another_connection_publishes_right_after() {
    let server = NatsServer::start().expect("start nats-server");
    let watcher = server.client().await.expect("connect");
    let publisher = server.client().await.expect("connect");
    for round in 0..200 {
        let subject = format!("confirmed.{round}");
        let mut subscriber = subscribe_confirmed(&watcher, subject.clone()).await.expect("subscribe");
        publisher.publish(subject, format!("{round}").into()).await.expect("publish");
        publisher.flush().await.expect("flush");
        let message = tokio::time::timeout(Duration::from_secs(5), subscriber.next())
            .await
            .unwrap_or_else(|_| panic!("round {round}: the message published after the subscription never came"))
            .expect("subscription open");
        assert_eq!(&message.payload[..], format!("{round}").as_bytes());
    }
}
