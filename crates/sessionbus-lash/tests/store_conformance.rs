//! lash's own conformance suites (lash-core `testing::conformance`, unchanged) against
//! the JetStream store, on one nats-server (R1). Each test is named after the suite.

mod store_support;

use store_support::{Deployment, suites};

#[tokio::test]
async fn runtime_persistence_reopenable() {
    suites::runtime_persistence_reopenable(&Deployment::single().await).await;
}

#[tokio::test]
async fn session_store_factory() {
    suites::session_store_factory(&Deployment::single().await).await;
}

#[tokio::test]
async fn runtime_persistence_clock_expiry() {
    suites::runtime_persistence_clock_expiry(&Deployment::single().await).await;
}
