//! The launcher's cluster: every node takes the base configuration it is started with.

use sessionbus_launch::{CLUSTER_SIZE, NatsCluster, ServerConfig};

#[tokio::test]
async fn every_node_of_a_cluster_started_with_a_sync_interval_runs_with_it() {
    let cluster =
        NatsCluster::start_with(ServerConfig::default().with_sync_interval("always")).await.expect("start a cluster");
    for index in 0..CLUSTER_SIZE {
        let log = cluster.log_path(index);
        let config = log.parent().expect("the node's directory").join("nats-server.conf");
        let text = std::fs::read_to_string(&config).expect("the node's configuration");
        assert!(text.contains("sync_interval: \"always\""), "node {index}: {text}");
        assert!(text.contains("cluster {"), "node {index} is still a cluster member: {text}");
    }
    // The cluster formed with it: an R3 stream takes a write.
    let context = async_nats::jetstream::new(cluster.client().await.expect("connect"));
    context
        .create_stream(async_nats::jetstream::stream::Config {
            name: "SYNCED".into(),
            subjects: vec!["synced".into()],
            num_replicas: 3,
            ..Default::default()
        })
        .await
        .expect("an R3 stream");
    context.publish("synced", "x".into()).await.expect("publish").await.expect("acknowledged by the replicas");
}
