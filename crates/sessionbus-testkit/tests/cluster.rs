//! The testkit's 3-node cluster: it forms, places R3 assets, survives the SIGKILL of a
//! stream leader, and takes a killed node back on the same ports and store.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use sessionbus_testkit::{CLUSTER_SIZE, MAX_PAYLOAD, NatsCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_survives_the_loss_of_a_stream_leader_and_takes_it_back() {
    let mut cluster = tokio::time::timeout(Duration::from_secs(90), NatsCluster::start())
        .await
        .expect("the cluster forms in time")
        .expect("start the cluster");
    let urls = cluster.urls();
    assert_eq!(urls.len(), CLUSTER_SIZE);
    assert!(urls.iter().all(|url| !url.ends_with(":4222")), "tests never use the default port: {urls:?}");
    assert_eq!(cluster.nats_url().split(',').count(), CLUSTER_SIZE);

    let client = cluster.client().await.expect("connect");
    assert_eq!(client.server_info().max_payload, MAX_PAYLOAD);
    let js = jetstream::new(client.clone());
    let bucket = js
        .create_key_value(kv::Config { bucket: "CLUSTER".into(), history: 5, num_replicas: 3, ..Default::default() })
        .await
        .expect("an R3 bucket");
    let mut revision = bucket.put("key", "0".into()).await.expect("put");
    let leader = cluster.stream_leader(&client, "KV_CLUSTER").await.expect("the bucket has a leader");
    // Move the leader away from node 0 and back, to exercise leader placement.
    let other = (leader + 1) % CLUSTER_SIZE;
    assert!(cluster.move_stream_leader(&client, "KV_CLUSTER", other).await, "the leader moves to {other}");

    cluster.kill(other);
    assert!(!cluster.is_running(other));
    let killed_at = Instant::now();
    let mut written = 0;
    while written < 5 {
        assert!(killed_at.elapsed() < Duration::from_secs(30), "writes did not resume after a leader loss");
        match bucket.update("key", written.to_string().into(), revision).await {
            Ok(next) => {
                revision = next;
                written += 1;
            }
            Err(_) => {
                // The ack may have been lost: re-read the revision.
                if let Ok(Some(entry)) = bucket.entry("key").await {
                    revision = entry.revision;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let new_leader = cluster.stream_leader(&client, "KV_CLUSTER").await.expect("a new leader");
    assert_ne!(new_leader, other);

    cluster.restart(other).await.expect("the node restarts on the same ports and store");
    assert!(cluster.is_running(other));
    let direct = cluster.client_to(other).await.expect("connect to the restarted node");
    let back = jetstream::new(direct).get_key_value("CLUSTER").await.expect("bucket").entry("key").await;
    assert!(matches!(back, Ok(Some(_))), "the restarted node serves the bucket: {back:?}");
}
