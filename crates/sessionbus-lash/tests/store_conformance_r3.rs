//! lash's own conformance suites (lash-core `testing::conformance`, unchanged) against
//! the JetStream store, on a 3-node cluster with every stream replicated three times (R3). Each test is named after the suite.

mod store_support;

use store_support::{Deployment, suites};

#[tokio::test]
async fn runtime_persistence_reopenable() {
    suites::runtime_persistence_reopenable(&Deployment::cluster().await).await;
}

#[tokio::test]
async fn session_store_factory() {
    suites::session_store_factory(&Deployment::cluster().await).await;
}

#[tokio::test]
async fn runtime_persistence_clock_expiry() {
    suites::runtime_persistence_clock_expiry(&Deployment::cluster().await).await;
}

#[tokio::test]
async fn attachment_store_reopenable() {
    suites::attachment_store_reopenable(&Deployment::cluster().await).await;
}

#[tokio::test]
async fn process_execution_env_store_reopenable() {
    suites::process_execution_env_store_reopenable(&Deployment::cluster().await).await;
}
