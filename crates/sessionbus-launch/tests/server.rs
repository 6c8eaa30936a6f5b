//! The launcher's single server: a kept store outlives its server, a taken fixed port is
//! refused before anything starts.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use sessionbus_launch::{LaunchError, NatsServer, ServerConfig, ServerProcess, free_port};

#[tokio::test]
async fn a_kept_store_is_stopped_gracefully_and_found_by_the_next_server() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("bus");
    let config = ServerConfig::default().with_data_dir(&data).with_http_port(free_port().expect("a port"));
    let server = NatsServer::start_with(config.clone()).expect("start with a kept store");
    assert_eq!(server.data_dir(), data);
    let pid = server.pid().expect("running");
    let bucket = jetstream::new(server.client().await.expect("connect"))
        .create_key_value(kv::Config { bucket: "KEPT".into(), ..Default::default() })
        .await
        .expect("bucket");
    bucket.put("key", "kept".into()).await.expect("put");
    drop(server);
    let gone = std::fs::read_to_string(format!("/proc/{pid}/status")).map_or(true, |s| s.contains("State:\tZ"));
    assert!(gone, "the server stopped on drop");
    let log = std::fs::read_to_string(data.join("nats-server.log")).expect("its log is kept");
    assert!(log.contains("Server Exiting"), "a kept store is stopped gracefully (SIGINT), not killed: {log}");

    let again = NatsServer::start_with(config).expect("start again on the same store");
    let client = again.client().await.expect("connect");
    let entry = jetstream::new(client).get_key_value("KEPT").await.expect("the bucket is back").get("key").await;
    assert_eq!(entry.expect("read").as_deref(), Some(&b"kept"[..]));
}

#[test]
fn a_fixed_port_taken_by_another_process_is_refused_before_anything_starts() {
    let taken = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("never");
    let err =
        NatsServer::start_with(ServerConfig::default().with_port(port).with_data_dir(&data)).expect_err("port taken");
    assert!(matches!(err, LaunchError::PortTaken { port: p, .. } if p == port), "{err:?}");
    assert!(err.to_string().contains("choose another port"), "the message says what to do: {err}");
    assert!(!data.exists(), "nothing was written for a server that cannot start");
}

#[test]
fn a_throw_away_server_is_killed_and_its_store_deleted_on_drop() {
    let server = NatsServer::start().expect("start");
    let (port, dir) = (server.port(), server.data_dir().to_owned());
    assert_ne!(port, 4222, "a launched server never takes NATS's default port");
    assert!(dir.join("nats-server.conf").is_file());
    drop(server);
    std::thread::sleep(Duration::from_millis(50));
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "the server is gone");
    assert!(!dir.exists(), "its store is deleted");
}

#[test]
fn a_greeting_from_another_server_on_the_port_is_not_taken_for_ours() {
    let other = NatsServer::start().expect("start");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("mine.conf");
    std::fs::write(&config, format!("server_name: mine\nlisten: \"127.0.0.1:{}\"\n", other.port())).expect("write");
    let mut mine =
        ServerProcess::spawn(&config, dir.path().join("mine.log"), std::iter::empty::<(&str, &str)>()).expect("spawn");
    let err = mine
        .wait_accepting("127.0.0.1", other.port(), &[("server_name", "mine")], Duration::from_secs(5))
        .expect_err("the other server's greeting is not ours");
    assert!(matches!(err, LaunchError::Startup { .. }), "{err:?}");
    assert!(!mine.is_running(), "ours could not bind the port and exited");
}

#[test]
fn a_sync_interval_of_always_reaches_the_server_s_jetstream_configuration() {
    let http = free_port().expect("a port");
    let server = NatsServer::start_with(ServerConfig::default().with_http_port(http).with_sync_interval("always"))
        .expect("start with sync_interval always");
    let (status, body) = sessionbus_launch::monitoring_get(http, "/varz").expect("varz");
    assert_eq!(status, 200, "{body}");
    let varz: serde_json::Value = serde_json::from_str(&body).expect("varz is JSON");
    assert_eq!(varz["jetstream"]["config"]["sync_always"], serde_json::json!(true), "{}", varz["jetstream"]);
    drop(server);
    let default = NatsServer::start_with(ServerConfig::default().with_http_port(free_port().expect("a port")))
        .expect("start with the default sync_interval");
    let text = std::fs::read_to_string(default.data_dir().join("nats-server.conf")).expect("its configuration");
    assert!(!text.contains("sync_interval"), "the default leaves nats-server's own: {text}");
}
