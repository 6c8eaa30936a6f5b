//! The deployment files: `docker-compose.yml`, `Dockerfile` and everything under `deploy/`.
//!
//! Two kinds of checks:
//! - the files agree with each other: every file a service mounts exists, every service a
//!   service depends on exists, the NATS routes name the other nodes' compose services and
//!   cluster ports, published ports are the ones the configs listen on, the collector
//!   exports to a compose service, every node sets `max_payload` to 8 MiB, the Kubernetes
//!   manifests name the Helm release's Service and the chart's Secret;
//! - `deploy/nats/auth.conf`, loaded into a real nats-server (never on port 4222), enforces
//!   DESIGN.md section 5: each refusal is seen as a permission violation from the server,
//!   and the streams are unchanged after every refused publish.

mod auth;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use async_nats::{Client, ConnectOptions};
use auth::{Conn, WAIT, connect, start_server};
use futures::StreamExt;
use serde_yaml_ng::Value;
use sessionbus_testkit::{MAX_PAYLOAD, NATS_SERVER_VERSION};
use tokio::time::timeout;

// ---------------------------------------------------------------------------------------
// Reading the files
// ---------------------------------------------------------------------------------------

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    let path = root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()))
}

fn yaml(relative: &str) -> Value {
    serde_yaml_ng::from_str(&read(relative)).unwrap_or_else(|err| panic!("{relative} is not valid YAML: {err}"))
}

/// Every document of a (possibly multi-document) YAML file.
fn yaml_documents(relative: &str) -> Vec<Value> {
    let text = read(relative);
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|document| {
            serde::Deserialize::deserialize(document)
                .unwrap_or_else(|err| panic!("{relative} is not valid YAML: {err}"))
        })
        .collect()
}

/// `value[a][b]...`, or `Value::Null` when a key is missing.
fn at<'a>(value: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(value, |value, key| value.get(*key).unwrap_or(&Value::Null))
}

fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        Value::Bool(flag) => flag.to_string(),
        other => panic!("expected a scalar, found {other:?}"),
    }
}

fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::Sequence(items) => items.iter().map(text).collect(),
        Value::Null => Vec::new(),
        Value::String(single) => vec![single.clone()],
        other => panic!("expected a list, found {other:?}"),
    }
}

fn map_keys(value: &Value) -> BTreeSet<String> {
    match value {
        Value::Mapping(map) => map.keys().map(text).collect(),
        Value::Null => BTreeSet::new(),
        other => panic!("expected a mapping, found {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// A reader for the nats-server configuration format, enough for deploy/nats/: maps in
// braces, arrays in brackets, `key: value` / `key = value` / `key value`, quoted and bare
// strings, `#` and `//` comments, and `include <path>` (relative to the including file).
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
enum Conf {
    Map(BTreeMap<String, Conf>),
    List(Vec<Conf>),
    Str(String),
}

impl Conf {
    fn get(&self, key: &str) -> Option<&Conf> {
        match self {
            Conf::Map(map) => map.get(key),
            _ => None,
        }
    }

    fn at(&self, path: &[&str]) -> &Conf {
        path.iter()
            .try_fold(self, |conf, key| conf.get(key))
            .unwrap_or_else(|| panic!("missing {} in nats config", path.join(".")))
    }

    fn str(&self) -> &str {
        match self {
            Conf::Str(text) => text,
            other => panic!("expected a string in nats config, found {other:?}"),
        }
    }

    fn list(&self) -> Vec<String> {
        match self {
            Conf::List(items) => items.iter().map(|item| item.str().to_owned()).collect(),
            other => panic!("expected a list in nats config, found {other:?}"),
        }
    }
}

struct ConfParser<'a> {
    chars: Vec<char>,
    pos: usize,
    dir: &'a Path,
}

impl ConfParser<'_> {
    fn parse_file(path: &Path) -> Conf {
        let source =
            std::fs::read_to_string(path).unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
        let dir = path.parent().expect("a config file has a directory");
        let mut parser = ConfParser { chars: source.chars().collect(), pos: 0, dir };
        let map = parser.entries(None);
        Conf::Map(map)
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_blank(&mut self, newlines: bool) {
        while let Some(c) = self.peek() {
            if c == '#' || (c == '/' && self.chars.get(self.pos + 1) == Some(&'/')) {
                while self.peek().is_some_and(|c| c != '\n') {
                    self.pos += 1;
                }
            } else if c == ' ' || c == '\t' || c == '\r' || (newlines && (c == '\n' || c == ',' || c == ';')) {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    fn word(&mut self, stop: impl Fn(char) -> bool) -> String {
        let start = self.pos;
        while self.peek().is_some_and(|c| !c.is_whitespace() && !stop(c)) {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }

    fn entries(&mut self, close: Option<char>) -> BTreeMap<String, Conf> {
        let mut map = BTreeMap::new();
        loop {
            self.skip_blank(true);
            match self.peek() {
                None if close.is_none() => return map,
                None => panic!("unterminated block in nats config"),
                Some(c) if Some(c) == close => {
                    self.pos += 1;
                    return map;
                }
                Some(_) => {}
            }
            let key = match self.peek() {
                Some(quote @ ('"' | '\'')) => self.quoted(quote),
                _ => self.word(|c| matches!(c, ':' | '=' | '{' | '[')),
            };
            self.skip_blank(false);
            if matches!(self.peek(), Some(':' | '=')) {
                self.pos += 1;
            }
            self.skip_blank(false);
            let value = self.value();
            if key == "include" {
                let included = ConfParser::parse_file(&self.dir.join(value.str()));
                let Conf::Map(included) = included else { unreachable!() };
                map.extend(included);
            } else {
                map.insert(key, value);
            }
        }
    }

    fn quoted(&mut self, quote: char) -> String {
        self.pos += 1;
        let start = self.pos;
        while self.peek().is_some_and(|c| c != quote) {
            self.pos += 1;
        }
        let text = self.chars[start..self.pos].iter().collect();
        self.pos += 1;
        text
    }

    fn value(&mut self) -> Conf {
        match self.peek() {
            Some('{') => {
                self.pos += 1;
                Conf::Map(self.entries(Some('}')))
            }
            Some('[') => {
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_blank(true);
                    if self.peek() == Some(']') {
                        self.pos += 1;
                        return Conf::List(items);
                    }
                    items.push(self.value());
                }
            }
            Some(quote @ ('"' | '\'')) => Conf::Str(self.quoted(quote)),
            Some(_) => Conf::Str(self.word(|c| matches!(c, ',' | ']' | '}' | '#' | ';'))),
            None => panic!("a key without a value at the end of a nats config"),
        }
    }
}

fn nats_conf(relative: &str) -> Conf {
    ConfParser::parse_file(&root().join(relative))
}

/// `host:port` (or a bare port) to the port.
fn port_of(listen: &str) -> u16 {
    let port = listen.rsplit(':').next().unwrap_or(listen);
    port.parse().unwrap_or_else(|_| panic!("no port in {listen:?}"))
}

/// `scheme://[user[:password]@]host:port` to (user, password, host, port).
fn parse_url(url: &str) -> (Option<String>, Option<String>, String, u16) {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.trim_end_matches('/');
    let (userinfo, hostport) = match rest.rsplit_once('@') {
        Some((userinfo, hostport)) => (Some(userinfo), hostport),
        None => (None, rest),
    };
    let (user, password) = match userinfo {
        Some(info) => match info.split_once(':') {
            Some((user, password)) => (Some(user.to_owned()), Some(password.to_owned())),
            None => (Some(info.to_owned()), None),
        },
        None => (None, None),
    };
    let (host, port) = hostport.rsplit_once(':').unwrap_or_else(|| panic!("no port in {url:?}"));
    (user, password, host.to_owned(), port.parse().unwrap_or_else(|_| panic!("bad port in {url:?}")))
}

// ---------------------------------------------------------------------------------------
// docker-compose.yml
// ---------------------------------------------------------------------------------------

struct Compose {
    doc: Value,
}

impl Compose {
    fn load() -> Self {
        Self { doc: yaml("docker-compose.yml") }
    }

    fn services(&self) -> BTreeSet<String> {
        map_keys(at(&self.doc, &["services"]))
    }

    fn service(&self, name: &str) -> &Value {
        let service = at(&self.doc, &["services", name]);
        assert!(!service.is_null(), "docker-compose.yml has no service `{name}`");
        service
    }

    fn command(&self, name: &str) -> Vec<String> {
        strings(at(self.service(name), &["command"]))
    }

    fn environment(&self, name: &str) -> BTreeMap<String, String> {
        match at(self.service(name), &["environment"]) {
            Value::Mapping(map) => map.iter().map(|(key, value)| (text(key), text(value))).collect(),
            Value::Sequence(items) => items
                .iter()
                .map(|item| {
                    let item = text(item);
                    let (key, value) = item.split_once('=').unwrap_or((&item, ""));
                    (key.to_owned(), value.to_owned())
                })
                .collect(),
            Value::Null => BTreeMap::new(),
            other => panic!("service `{name}`: unexpected environment {other:?}"),
        }
    }

    /// `(host, container)` for every published port `"H:C"`.
    fn published_ports(&self, name: &str) -> Vec<(u16, u16)> {
        strings(at(self.service(name), &["ports"]))
            .iter()
            .map(|mapping| {
                let (host, container) = mapping.split_once(':').unwrap_or_else(|| {
                    panic!("service `{name}`: publish ports as \"HOST:CONTAINER\", not {mapping:?}")
                });
                let container = container.split('/').next().unwrap_or(container);
                (port_of(host), container.parse().expect("a container port"))
            })
            .collect()
    }

    /// `(source, target)` of every volume; bind mounts start with `./` or `/`.
    fn volumes(&self, name: &str) -> Vec<(String, String)> {
        strings(at(self.service(name), &["volumes"]))
            .iter()
            .map(|volume| {
                let mut parts = volume.splitn(3, ':');
                let source = parts.next().unwrap_or_default().to_owned();
                let target =
                    parts.next().unwrap_or_else(|| panic!("service `{name}`: volume {volume:?} has no target"));
                (source, target.to_owned())
            })
            .collect()
    }

    /// The repository file a service sees at `container_path`, through its bind mounts.
    fn host_file(&self, name: &str, container_path: &str) -> PathBuf {
        self.volumes(name)
            .into_iter()
            .filter(|(source, _)| source.starts_with("./") || source.starts_with('/'))
            .find_map(|(source, target)| {
                let rest = container_path.strip_prefix(target.trim_end_matches('/'))?;
                if !(rest.is_empty() || rest.starts_with('/')) {
                    return None;
                }
                Some(root().join(source.trim_start_matches("./")).join(rest.trim_start_matches('/')))
            })
            .unwrap_or_else(|| panic!("service `{name}` mounts nothing at {container_path}"))
    }

    fn depends_on(&self, name: &str) -> Vec<String> {
        match at(self.service(name), &["depends_on"]) {
            Value::Mapping(map) => map.keys().map(text).collect(),
            other => strings(other),
        }
    }

    /// The value after `flag` in a service's command.
    fn flag(&self, name: &str, flag: &str) -> Option<String> {
        let command = self.command(name);
        let index = command.iter().position(|arg| arg == flag)?;
        command.get(index + 1).cloned()
    }
}

/// A NATS node of the compose file, read through its config file.
struct Node {
    service: String,
    conf: Conf,
    client_port: u16,
    cluster_port: u16,
    http_port: u16,
}

fn compose_nats_nodes(compose: &Compose) -> Vec<Node> {
    let mut nodes = Vec::new();
    for service in compose.services() {
        let image = text(at(compose.service(&service), &["image"]));
        if !image.starts_with("nats:") {
            continue;
        }
        let config = compose
            .flag(&service, "--config")
            .or_else(|| compose.flag(&service, "-c"))
            .unwrap_or_else(|| panic!("NATS service `{service}` names no --config"));
        let path = compose.host_file(&service, &config);
        assert!(path.is_file(), "service `{service}`: {} does not exist", path.display());
        let conf = ConfParser::parse_file(&path);
        let client_port = port_of(conf.at(&["listen"]).str());
        let cluster_port = port_of(conf.at(&["cluster", "listen"]).str());
        let http_port = port_of(conf.at(&["http"]).str());
        nodes.push(Node { service, conf, client_port, cluster_port, http_port });
    }
    nodes
}

#[test]
fn compose_services_reference_existing_files_services_and_volumes() {
    let compose = Compose::load();
    let services = compose.services();
    for expected in ["nats1", "nats2", "nats3", "worker1", "worker2", "exporter", "otel-collector", "jaeger"] {
        assert!(services.contains(expected), "docker-compose.yml lacks service `{expected}`");
    }
    let named_volumes = map_keys(at(&compose.doc, &["volumes"]));
    for service in &services {
        for dependency in compose.depends_on(service) {
            assert!(services.contains(&dependency), "`{service}` depends on unknown service `{dependency}`");
            assert_ne!(&dependency, service, "`{service}` depends on itself");
        }
        for (source, target) in compose.volumes(service) {
            if source.starts_with("./") || source.starts_with('/') {
                let path = root().join(source.trim_start_matches("./"));
                assert!(path.exists(), "`{service}` mounts {source} at {target}, which does not exist");
            } else {
                assert!(named_volumes.contains(&source), "`{service}` uses undeclared volume `{source}`");
            }
        }
        let build = at(compose.service(service), &["build"]);
        if !build.is_null() {
            let context = root().join(text(at(build, &["context"])));
            let dockerfile = context.join(text(at(build, &["dockerfile"])));
            assert!(dockerfile.is_file(), "`{service}` builds from {}, which does not exist", dockerfile.display());
        }
    }

    // The NATS image is the version the project pins (and tests against).
    for node in compose_nats_nodes(&compose) {
        let image = text(at(compose.service(&node.service), &["image"]));
        assert_eq!(image, format!("nats:{NATS_SERVER_VERSION}"), "`{}` image", node.service);
    }
}

#[test]
fn nats_cluster_routes_ports_and_payload_agree_with_compose() {
    let compose = Compose::load();
    let nodes = compose_nats_nodes(&compose);
    assert_eq!(nodes.len(), 3, "a 3-node cluster");

    let names: BTreeSet<_> = nodes.iter().map(|node| node.conf.at(&["server_name"]).str().to_owned()).collect();
    assert_eq!(names.len(), 3, "server names must be distinct: {names:?}");

    for node in &nodes {
        let service = &node.service;
        assert_eq!(node.conf.at(&["cluster", "name"]).str(), "sessionbus", "`{service}` cluster name");
        assert_eq!(
            node.conf.at(&["max_payload"]).str(),
            MAX_PAYLOAD.to_string(),
            "`{service}` must set max_payload to 8 MiB (8388608) explicitly"
        );
        assert!(!node.conf.at(&["jetstream", "store_dir"]).str().is_empty(), "`{service}` JetStream store_dir");

        // Routes: exactly the other nodes, by compose service name and cluster port.
        let routes: BTreeSet<_> = node.conf.at(&["cluster", "routes"]).list().into_iter().collect();
        let expected: BTreeSet<_> = nodes
            .iter()
            .filter(|other| other.service != *service)
            .map(|other| format!("nats-route://{}:{}", other.service, other.cluster_port))
            .collect();
        assert_eq!(routes, expected, "`{service}` routes");

        // The store is a volume of its own.
        let store = node.conf.at(&["jetstream", "store_dir"]).str();
        let store_volume = compose
            .volumes(service)
            .into_iter()
            .find(|(_, target)| store.starts_with(target.as_str()))
            .unwrap_or_else(|| panic!("`{service}` keeps its JetStream store {store} on no volume"));
        assert!(!store_volume.0.starts_with('.'), "`{service}` store should be a named volume");

        // Published ports: the client and monitoring ports, unchanged, and nothing else.
        let published = compose.published_ports(service);
        for (host, container) in &published {
            assert_eq!(host, container, "`{service}` publishes {container} as {host}");
            assert!(
                [node.client_port, node.http_port].contains(container),
                "`{service}` publishes {container}, which its config does not listen on for clients or monitoring"
            );
        }
        let published: BTreeSet<_> = published.into_iter().map(|(_, container)| container).collect();
        assert!(published.contains(&node.client_port), "`{service}` must publish its client port");
        assert!(published.contains(&node.http_port), "`{service}` must publish its monitoring port");
    }
    let stores: BTreeSet<_> = nodes
        .iter()
        .map(|node| {
            let store = node.conf.at(&["jetstream", "store_dir"]).str().to_owned();
            compose.volumes(&node.service).into_iter().find(|(_, target)| store.starts_with(target.as_str())).unwrap().0
        })
        .collect();
    assert_eq!(stores.len(), 3, "each node needs its own store volume: {stores:?}");
}

#[test]
fn sessionbus_services_connect_to_the_cluster_and_the_collector() {
    let compose = Compose::load();
    let nodes = compose_nats_nodes(&compose);
    let auth = nats_conf("deploy/nats/auth.conf");
    let users = auth_users(&auth);
    let password_variables = password_variables();

    for service in ["worker1", "worker2", "exporter"] {
        let env = compose.environment(service);
        let urls = env.get("NATS_URL").unwrap_or_else(|| panic!("`{service}` has no NATS_URL"));
        let mut reached = BTreeSet::new();
        for url in urls.split(',') {
            let (user, password, host, port) = parse_url(url.trim());
            assert!(user.is_none() && password.is_none(), "`{service}`: credentials go in NATS_USER/NATS_PASSWORD");
            let node = nodes
                .iter()
                .find(|node| node.service == host)
                .unwrap_or_else(|| panic!("`{service}` NATS_URL names {host}, which is no NATS service"));
            assert_eq!(port, node.client_port, "`{service}` connects to {host} on the wrong port");
            reached.insert(host);
        }
        assert_eq!(reached.len(), nodes.len(), "`{service}` NATS_URL should list every node");
        let user = env.get("NATS_USER").unwrap_or_else(|| panic!("`{service}` connects without a user"));
        assert_eq!(user, "worker", "`{service}` connects as {user}");
        assert!(users.contains_key(user), "user {user} is not in auth.conf");
        assert_eq!(
            env.get("NATS_PASSWORD").map(String::as_str),
            Some("${SESSIONBUS_WORKER_PASSWORD}"),
            "`{service}` must take the worker password from the environment, never a literal"
        );

        let depends = compose.depends_on(service);
        for node in &nodes {
            assert!(depends.contains(&node.service), "`{service}` should start after `{}`", node.service);
        }

        let otlp = env.get("OTEL_EXPORTER_OTLP_ENDPOINT").unwrap_or_else(|| panic!("`{service}` has no OTLP endpoint"));
        let (_, _, host, port) = parse_url(otlp);
        assert!(compose.services().contains(&host), "`{service}` sends OTLP to unknown service `{host}`");
        let collector = yaml("deploy/otel/collector.yaml");
        let grpc = text(at(&collector, &["receivers", "otlp", "protocols", "grpc", "endpoint"]));
        assert_eq!(port, port_of(&grpc), "`{service}` OTLP port vs the collector's gRPC receiver");
    }
    assert_eq!(compose.flag("worker1", "--replicas").as_deref(), Some("3"));
    assert_eq!(compose.flag("worker2", "--replicas").as_deref(), Some("3"));
    assert_eq!(compose.command("worker1").first().map(String::as_str), Some("worker"));
    assert_eq!(compose.command("exporter").first().map(String::as_str), Some("exporter"));

    // Every NATS node gets every password auth.conf reads from its environment.
    for node in &nodes {
        let env = compose.environment(&node.service);
        for variable in &password_variables {
            let value = env.get(variable).unwrap_or_else(|| panic!("`{}` lacks {variable}", node.service));
            assert!(
                value.starts_with(&format!("${{{variable}")),
                "`{}` {variable} must come from the environment",
                node.service
            );
        }
    }
}

#[test]
fn collector_exports_to_jaeger_and_jaeger_ui_is_published() {
    let compose = Compose::load();
    let collector = yaml("deploy/otel/collector.yaml");

    // Mounted where the command says the config is.
    let config = compose.flag("otel-collector", "--config").expect("the collector names its config");
    let mounted = compose.host_file("otel-collector", &config);
    assert_eq!(mounted, root().join("deploy/otel/collector.yaml"));

    let protocols = at(&collector, &["receivers", "otlp", "protocols"]);
    assert_eq!(port_of(&text(at(protocols, &["grpc", "endpoint"]))), 4317);
    assert_eq!(port_of(&text(at(protocols, &["http", "endpoint"]))), 4318);

    let jaeger = at(&collector, &["exporters", "otlp/jaeger"]);
    let endpoint = text(at(jaeger, &["endpoint"]));
    let (host, port) = endpoint.rsplit_once(':').expect("host:port");
    assert!(compose.services().contains(host), "the collector exports to `{host}`, which is no compose service");
    assert_eq!(host, "jaeger");
    assert_eq!(port, "4317");
    assert_eq!(at(jaeger, &["tls", "insecure"]), &Value::Bool(true));

    // Every pipeline names defined components, and traces are batched into Jaeger.
    let defined = |kind: &str| map_keys(at(&collector, &[kind]));
    for (name, pipeline) in at(&collector, &["service", "pipelines"]).as_mapping().expect("pipelines") {
        for kind in ["receivers", "processors", "exporters"] {
            for component in strings(at(pipeline, &[kind])) {
                assert!(defined(kind).contains(&component), "pipeline {name:?} uses undefined {kind} `{component}`");
            }
        }
    }
    let traces = at(&collector, &["service", "pipelines", "traces"]);
    assert!(strings(at(traces, &["processors"])).contains(&"batch".to_owned()));
    assert!(strings(at(traces, &["exporters"])).contains(&"otlp/jaeger".to_owned()));
    for extension in strings(at(&collector, &["service", "extensions"])) {
        assert!(defined("extensions").contains(&extension), "undefined extension `{extension}`");
    }

    assert!(compose.published_ports("jaeger").contains(&(16686, 16686)), "the Jaeger UI port 16686 is published");
    assert!(compose.depends_on("otel-collector").contains(&"jaeger".to_owned()));
}

#[test]
fn dockerfile_builds_the_cli_on_bookworm() {
    let dockerfile = read("Dockerfile");
    let froms: Vec<_> = dockerfile.lines().filter(|line| line.starts_with("FROM ")).collect();
    assert_eq!(froms.len(), 2, "a two-stage build: {froms:?}");
    assert!(froms[0].starts_with("FROM rust:1.95-bookworm AS builder"), "{}", froms[0]);
    assert_eq!(froms[1], "FROM debian:bookworm-slim");
    assert!(dockerfile.contains("cargo build --release --locked -p sessionbus-cli"));
    assert!(dockerfile.contains("COPY --from=builder /usr/local/bin/sessionbus /usr/local/bin/sessionbus"));
    assert!(dockerfile.contains("ENTRYPOINT [\"sessionbus\"]"));
    // The image the compose file builds is the one every sessionbus service runs.
    let compose = Compose::load();
    for service in ["worker1", "worker2", "exporter"] {
        assert_eq!(text(at(compose.service(service), &["image"])), "sessionbus:latest");
        assert_eq!(text(at(compose.service(service), &["build", "dockerfile"])), "Dockerfile");
    }
    let ignored = read(".dockerignore");
    assert!(ignored.lines().any(|line| line.trim() == "target/"), "keep target/ out of the build context");
}

// ---------------------------------------------------------------------------------------
// deploy/ YAML and Kubernetes manifests
// ---------------------------------------------------------------------------------------

fn yaml_files_under(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("deploy/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            yaml_files_under(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "yaml" || ext == "yml") {
            found.push(path);
        }
    }
}

#[test]
fn every_deploy_yaml_file_parses() {
    let mut files = Vec::new();
    yaml_files_under(&root().join("deploy"), &mut files);
    assert!(files.len() >= 4, "deploy/ YAML files: {files:?}");
    for file in files {
        let relative = file.strip_prefix(root()).unwrap().to_string_lossy().into_owned();
        let documents = yaml_documents(&relative);
        assert!(!documents.is_empty(), "{relative} is empty");
    }
}

#[test]
fn kubernetes_manifests_agree_with_the_chart_values_and_auth_config() {
    let values = yaml("deploy/k8s/nats-values.yaml");
    assert_eq!(at(&values, &["config", "cluster", "enabled"]), &Value::Bool(true));
    assert_eq!(text(at(&values, &["config", "cluster", "replicas"])), "3");
    assert_eq!(text(at(&values, &["config", "cluster", "merge", "name"])), "sessionbus");
    assert_eq!(at(&values, &["config", "jetstream", "enabled"]), &Value::Bool(true));
    assert_eq!(at(&values, &["config", "jetstream", "fileStore", "enabled"]), &Value::Bool(true));
    assert_eq!(at(&values, &["config", "jetstream", "fileStore", "pvc", "enabled"]), &Value::Bool(true));
    assert_eq!(text(at(&values, &["config", "merge", "max_payload"])), MAX_PAYLOAD.to_string());
    let includes: Vec<_> = at(&values, &["config", "merge"])
        .as_mapping()
        .expect("config.merge")
        .iter()
        .filter(|(key, _)| text(key).ends_with("$include"))
        .map(|(_, value)| text(value))
        .collect();
    assert_eq!(includes, ["auth.conf"], "the chart config includes auth.conf");
    let tag = text(at(&values, &["container", "image", "tag"]));
    assert!(tag.starts_with(NATS_SERVER_VERSION), "chart image tag {tag} vs pinned {NATS_SERVER_VERSION}");
    let service = text(at(&values, &["fullnameOverride"]));

    // The chart's servers get every password auth.conf reads, from one Secret.
    let mut secret_keys = BTreeMap::new();
    for variable in password_variables() {
        let reference = at(&values, &["container", "env", &variable, "valueFrom", "secretKeyRef"]);
        assert!(!reference.is_null(), "the NATS pods lack {variable}");
        secret_keys.insert(variable, (text(at(reference, &["name"])), text(at(reference, &["key"]))));
    }

    let readme = read("deploy/k8s/README.md");
    assert!(readme.contains("deploy/nats/auth.conf") && root().join("deploy/nats/auth.conf").is_file());

    for (file, command) in
        [("deploy/k8s/worker-deployment.yaml", "worker"), ("deploy/k8s/exporter-deployment.yaml", "exporter")]
    {
        assert!(readme.contains(file), "deploy/k8s/README.md should explain {file}");
        let documents = yaml_documents(file);
        let deployment = documents
            .iter()
            .find(|doc| text(at(doc, &["kind"])) == "Deployment")
            .unwrap_or_else(|| panic!("{file} has no Deployment"));
        let selector = at(deployment, &["spec", "selector", "matchLabels"]);
        let labels = at(deployment, &["spec", "template", "metadata", "labels"]);
        for (key, value) in selector.as_mapping().expect("matchLabels") {
            assert_eq!(labels.get(key), Some(value), "{file}: the selector must match the pod labels");
        }
        let containers = at(deployment, &["spec", "template", "spec", "containers"]).as_sequence().expect("containers");
        let container = &containers[0];
        let args = strings(at(container, &["args"]));
        assert_eq!(args.first().map(String::as_str), Some(command), "{file} runs `sessionbus {command}`");

        let env: BTreeMap<_, _> = at(container, &["env"])
            .as_sequence()
            .expect("env")
            .iter()
            .map(|var| (text(at(var, &["name"])), var.clone()))
            .collect();
        let url = text(at(&env["NATS_URL"], &["value"]));
        let (user, password, host, port) = parse_url(&url);
        assert_eq!(host, service, "{file}: NATS_URL names the chart's Service");
        assert_eq!(port, 4222, "{file}: the chart's client port");
        assert!(user.is_none() && password.is_none(), "{file}: credentials go in NATS_USER/NATS_PASSWORD");
        assert_eq!(text(at(&env["NATS_USER"], &["value"])), "worker");
        let reference = at(&env["NATS_PASSWORD"], &["valueFrom", "secretKeyRef"]);
        assert_eq!(
            (text(at(reference, &["name"])), text(at(reference, &["key"]))),
            secret_keys["SESSIONBUS_WORKER_PASSWORD"],
            "{file}: the same Secret as the NATS pods"
        );
        assert!(env.contains_key("OTEL_EXPORTER_OTLP_ENDPOINT"), "{file}: OTEL_EXPORTER_OTLP_ENDPOINT");

        if command == "worker" {
            assert_eq!(args, ["worker", "--replicas", "3"]);
            let probe = strings(at(container, &["readinessProbe", "exec", "command"]));
            assert_eq!(probe, ["sessionbus", "status", "--ping"], "{file}: readiness through sessionbus.v1.ping");
        }
    }
    assert!(readme.contains("nats-values.yaml") && readme.contains("sessionbus.v1.ping"));
}

// ---------------------------------------------------------------------------------------
// deploy/nats/auth.conf, read statically
// ---------------------------------------------------------------------------------------

/// The `$VARIABLE`s auth.conf reads its passwords from.
fn password_variables() -> BTreeSet<String> {
    auth_users(&nats_conf("deploy/nats/auth.conf"))
        .values()
        .map(|user| {
            let password = user.at(&["password"]).str();
            password
                .strip_prefix('$')
                .unwrap_or_else(|| panic!("passwords come from environment variables, not {password:?}"))
                .to_owned()
        })
        .collect()
}

fn auth_users(auth: &Conf) -> BTreeMap<String, Conf> {
    let Conf::List(users) = auth.at(&["authorization", "users"]) else { panic!("authorization.users is a list") };
    users.iter().map(|user| (user.at(&["user"]).str().to_owned(), user.clone())).collect()
}

fn permission(user: &Conf, path: &[&str]) -> BTreeSet<String> {
    let mut full = vec!["permissions"];
    full.extend_from_slice(path);
    user.at(&full).list().into_iter().collect()
}

#[test]
fn auth_config_allow_lists_follow_the_design() {
    let auth = nats_conf("deploy/nats/auth.conf");
    let users = auth_users(&auth);
    assert_eq!(users.keys().map(String::as_str).collect::<Vec<_>>(), ["client", "dashboard", "worker"]);

    let client = &users["client"];
    assert_eq!(
        permission(client, &["publish", "allow"]),
        ["sessionbus.v1.create", "sessionbus.v1.ping", "sessionbus.v1.session.*.*"].map(String::from).into()
    );
    assert_eq!(
        permission(client, &["subscribe", "allow"]),
        ["_INBOX_client.>", "sessionbus.v1.events.>"].map(String::from).into()
    );
    let denied = permission(client, &["publish", "deny"]);
    for subject in ["$JS.>", "$KV.>", "$O.>", "sessionbus.v1.state.>", "sessionbus.v1.trace.>"] {
        assert!(denied.contains(subject), "client publish must deny {subject}");
    }

    let dashboard = &users["dashboard"];
    for subject in permission(dashboard, &["publish", "allow"]) {
        let read_only = subject == "$SRV.>"
            || subject.starts_with("$JS.API.DIRECT.GET.")
            || subject.starts_with("$JS.API.STREAM.INFO.");
        assert!(read_only, "dashboard may publish only read-only requests, not {subject}");
    }
    assert_eq!(
        permission(dashboard, &["subscribe", "allow"]),
        ["_INBOX_dashboard.>", "sessionbus.v1.events.>", "sessionbus.v1.trace.>"].map(String::from).into()
    );

    // Every JetStream subject a worker may publish to names a sessionbus stream.
    let worker = &users["worker"];
    let streams = ["SESSIONBUS_STATE", "SESSIONBUS_TRACE", "KV_SESSIONBUS_TOOLS", "KV_SESSIONBUS_SPANS"];
    for subject in permission(worker, &["publish", "allow"]) {
        if subject.starts_with("$JS.") && subject != "$JS.API.INFO" {
            let stream = subject.split('.').find(|token| streams.contains(token));
            assert!(stream.is_some(), "worker JetStream permission {subject} names no sessionbus stream");
            assert!(!subject.contains(".DELETE.") || subject.contains(".CONSUMER."), "workers never delete streams");
        }
        if subject.starts_with("$KV.") {
            assert!(subject.starts_with("$KV.SESSIONBUS_"), "worker KV permission {subject}");
        }
    }
    let responses = worker.at(&["permissions", "allow_responses"]);
    assert_eq!(responses.at(&["max"]).str(), "10000");
    assert_eq!(responses.at(&["expires"]).str(), "1h");
}

#[test]
fn node_configs_load_in_nats_server() {
    let binary = sessionbus_testkit::find_nats_server().expect("nats-server is installed");
    let variables = password_variables();
    for node in ["node1.conf", "node2.conf", "node3.conf"] {
        let path = root().join("deploy/nats").join(node);
        let mut command = Command::new(&binary);
        command.arg("-t").arg("-c").arg(&path);
        for variable in &variables {
            command.env(variable, format!("sb{}", variable.to_lowercase()));
        }
        let output = command.output().expect("nats-server runs");
        assert!(
            output.status.success(),
            "nats-server -t {node}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );

        // Without the passwords there is no default: the server refuses to start.
        let mut command = Command::new(&binary);
        command.arg("-t").arg("-c").arg(&path);
        for variable in &variables {
            command.env_remove(variable);
        }
        let output = command.output().expect("nats-server runs");
        assert!(!output.status.success(), "{node} must not load without the password variables");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("SESSIONBUS_"), "{node}: {stderr}");
    }
}

// ---------------------------------------------------------------------------------------
// deploy/nats/auth.conf in a real nats-server
// ---------------------------------------------------------------------------------------

/// How long a refused subscription is watched for messages that must not arrive.
const QUIET: Duration = Duration::from_millis(500);

impl Conn {
    /// Publishes to `subject` and waits for the refusal.
    async fn refused_publish(&mut self, subject: &str) {
        self.drain();
        self.client.publish(subject.to_owned(), "{}".into()).await.expect("publish is queued");
        self.client.flush().await.expect("flush");
        self.expect_violation("Publish", subject).await;
    }

    /// Subscribes to `subject`, waits for the refusal, and returns the subscriber so the
    /// caller can show that nothing arrives on it.
    async fn refused_subscription(&mut self, subject: &str) -> async_nats::Subscriber {
        self.drain();
        let subscriber = self.client.subscribe(subject.to_owned()).await.expect("subscribe is queued");
        self.client.flush().await.expect("flush");
        self.expect_violation("Subscription", subject).await;
        subscriber
    }

    fn assert_no_violation(&mut self, what: &str) {
        if let Ok(error) = self.errors.try_recv() {
            panic!("{what}: unexpected server error {error}");
        }
    }
}

/// Nothing arrives on a refused subscription (the stream of messages may also end).
async fn assert_silent(subscriber: &mut async_nats::Subscriber, what: &str) {
    if let Ok(Some(message)) = timeout(QUIET, subscriber.next()).await {
        panic!("{what}: a refused subscription received a message on {}", message.subject);
    }
}

/// The message counts and last sequences of the sessionbus streams, read by the worker.
async fn stream_state(js: &jetstream::Context) -> BTreeMap<&'static str, (u64, u64)> {
    let mut state = BTreeMap::new();
    for name in ["SESSIONBUS_STATE", "SESSIONBUS_TRACE", "KV_SESSIONBUS_TOOLS"] {
        let mut stream = timeout(WAIT, js.get_stream(name)).await.expect("stream info in time").expect("stream exists");
        let info = timeout(WAIT, stream.info()).await.expect("stream info in time").expect("stream info");
        state.insert(name, (info.state.messages, info.state.last_sequence));
    }
    state
}

/// The sessionbus layout, created by the worker credential as a worker does at start,
/// plus one stored message in each stream.
async fn create_layout(worker: &Client) -> jetstream::Context {
    let js = jetstream::new(worker.clone());
    let created = async {
        js.create_key_value(kv::Config {
            bucket: "SESSIONBUS_TOOLS".to_owned(),
            history: 8,
            republish: Some(stream::Republish {
                source: "$KV.SESSIONBUS_TOOLS.*".to_owned(),
                destination: "sessionbus.v1.events.{{wildcard(1)}}.tools".to_owned(),
                headers_only: false,
            }),
            ..Default::default()
        })
        .await
        .expect("worker creates the SESSIONBUS_TOOLS bucket");
        js.create_or_update_stream(stream::Config {
            name: "SESSIONBUS_STATE".to_owned(),
            subjects: vec!["sessionbus.v1.state.>".to_owned()],
            allow_direct: true,
            allow_rollup: true,
            allow_atomic_publish: true,
            republish: Some(stream::Republish {
                source: "sessionbus.v1.state.*.>".to_owned(),
                destination: "sessionbus.v1.events.{{wildcard(1)}}.>".to_owned(),
                headers_only: false,
            }),
            ..Default::default()
        })
        .await
        .expect("worker creates the SESSIONBUS_STATE stream");
        js.create_or_update_stream(stream::Config {
            name: "SESSIONBUS_TRACE".to_owned(),
            subjects: vec!["sessionbus.v1.trace.>".to_owned()],
            allow_direct: true,
            ..Default::default()
        })
        .await
        .expect("worker creates the SESSIONBUS_TRACE stream");
        for subject in ["sessionbus.v1.state.s1.meta", "sessionbus.v1.trace.s1", "$KV.SESSIONBUS_TOOLS.s1"] {
            js.publish(subject, "{\"seed\":true}".into())
                .await
                .expect("publish")
                .await
                .unwrap_or_else(|err| panic!("worker writes {subject}: {err}"));
        }
    };
    timeout(Duration::from_secs(30), created).await.expect("the layout is created in time");
    js
}

/// A worker's request handlers: `sessionbus.v1.ping` answers once; a call on
/// `sessionbus.v1.session.<sid>.<op>` answers with `progress` progress messages and then
/// the final reply, all on the caller's reply subject.
async fn serve(worker: &Client, progress: usize) -> Vec<tokio::task::JoinHandle<()>> {
    let mut ping = worker.queue_subscribe("sessionbus.v1.ping", "sessionbus".to_owned()).await.expect("sub ping");
    let mut calls =
        worker.queue_subscribe("sessionbus.v1.session.*.*", "sessionbus".to_owned()).await.expect("sub calls");
    // A round trip through the server, so both subscriptions are in place.
    timeout(WAIT, jetstream::new(worker.clone()).query_account()).await.expect("in time").expect("account info");

    let ping_client = worker.clone();
    let ping_task = tokio::spawn(async move {
        while let Some(message) = ping.next().await {
            if let Some(reply) = message.reply {
                let _ = ping_client.publish(reply, "{\"worker_id\":\"test\"}".into()).await;
            }
        }
    });
    let call_client = worker.clone();
    let call_task = tokio::spawn(async move {
        while let Some(message) = calls.next().await {
            let Some(reply) = message.reply else { continue };
            for step in 0..progress {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Sessionbus-Status", "102");
                let _ = call_client.publish_with_headers(reply.clone(), headers, format!("{step}").into()).await;
            }
            let _ = call_client.publish(reply, "final".into()).await;
            let _ = call_client.flush().await;
        }
    });
    vec![ping_task, call_task]
}

#[tokio::test]
async fn client_credential_is_refused_everything_but_calls_and_events() {
    let server = start_server();
    let mut worker = connect(&server, "worker", None).await;
    let js = create_layout(&worker.client).await;
    let tasks = serve(&worker.client, 3).await;
    let service = async_nats::service::ServiceExt::service_builder(&worker.client)
        .start("sessionbus", "0.1.0")
        .await
        .expect("the micro service starts");
    timeout(WAIT, js.query_account()).await.expect("in time").expect("round trip");
    let mut client = connect(&server, "client", Some("_INBOX_client")).await;

    // Allowed: a call through the bus (request/reply on the client's own inbox prefix)
    // and the events.
    let mut events = client.client.subscribe("sessionbus.v1.events.>").await.expect("subscribe events");
    let pong = timeout(WAIT, client.client.request("sessionbus.v1.ping", "{}".into()))
        .await
        .expect("ping answered in time")
        .expect("ping answered");
    assert_eq!(pong.payload.as_ref(), b"{\"worker_id\":\"test\"}");
    js.publish("sessionbus.v1.state.s1.graph", "{\"nodes\":[]}".into())
        .await
        .expect("publish")
        .await
        .expect("worker appends");
    let event = timeout(WAIT, events.next()).await.expect("an event in time").expect("an event");
    assert_eq!(event.subject.as_str(), "sessionbus.v1.events.s1.graph");
    client.assert_no_violation("calls and events");

    // Refused publishes, each leaving every stream as it was.
    for subject in [
        "$KV.SESSIONBUS_TOOLS.s1",
        "$KV.SESSIONBUS_TOOLS.x",
        "sessionbus.v1.state.x.meta",
        "sessionbus.v1.state.s1.lease",
        "sessionbus.v1.trace.x",
        "sessionbus.v1.events.s1.meta",
        "$JS.API.STREAM.INFO.SESSIONBUS_STATE",
        "$JS.API.STREAM.PURGE.SESSIONBUS_STATE",
        "$JS.API.STREAM.DELETE.SESSIONBUS_STATE",
        "$JS.API.STREAM.MSG.GET.SESSIONBUS_STATE",
        "$JS.API.DIRECT.GET.KV_SESSIONBUS_TOOLS.$KV.SESSIONBUS_TOOLS.s1",
        "$JS.API.CONSUMER.CREATE.SESSIONBUS_STATE",
        "$O.SESSIONBUS.C.x",
        "$SRV.PING",
        "_INBOX.someone-else",
    ] {
        let before = stream_state(&js).await;
        client.refused_publish(subject).await;
        let after = stream_state(&js).await;
        assert_eq!(before, after, "the streams changed after a refused client publish to {subject}");
    }

    // A request to the JetStream API never gets an answer.
    client.drain();
    let answer = timeout(Duration::from_secs(3), client.client.request("$JS.API.INFO", "".into())).await;
    assert!(!matches!(answer, Ok(Ok(_))), "the client reached the JetStream API");
    client.expect_violation("Publish", "$JS.API.INFO").await;

    // Refused subscriptions: request subjects, others' inboxes, the streams' subjects.
    let mut refused = Vec::new();
    for subject in [
        "sessionbus.v1.session.*.*",
        "sessionbus.v1.session.>",
        "sessionbus.v1.create",
        "_INBOX.>",
        "_INBOX_dashboard.>",
        "sessionbus.v1.state.>",
        "sessionbus.v1.trace.>",
        "$KV.SESSIONBUS_TOOLS.>",
        "$SRV.>",
    ] {
        refused.push((subject, client.refused_subscription(subject).await));
    }
    // Traffic on each of them: requests, replies to the worker's and to a dashboard's
    // inbox, stream writes (whose acks go to the worker's `_INBOX.`).
    worker.drain();
    for subject in ["sessionbus.v1.session.s1.snapshot", "_INBOX.someone.1", "$SRV.PING"] {
        worker.client.publish(subject, "secret".into()).await.expect("worker publishes");
    }
    js.publish("sessionbus.v1.state.s1.meta", "{}".into()).await.expect("publish").await.expect("stored");
    js.publish("sessionbus.v1.trace.s1", "{}".into()).await.expect("publish").await.expect("stored");
    js.publish("$KV.SESSIONBUS_TOOLS.s1", "{}".into()).await.expect("publish").await.expect("stored");
    let dashboard = connect(&server, "dashboard", Some("_INBOX_dashboard")).await;
    let status = timeout(WAIT, dashboard.client.request("$SRV.PING.sessionbus", "".into())).await;
    assert!(matches!(status, Ok(Ok(_))), "the dashboard's $SRV.PING is answered: {status:?}");
    for (subject, subscriber) in &mut refused {
        assert_silent(subscriber, subject).await;
    }
    worker.assert_no_violation("worker publishes to request subjects and inboxes");

    drop(service);
    for task in tasks {
        task.abort();
    }
}

#[tokio::test]
async fn worker_credential_serves_long_calls_and_writes_only_sessionbus_streams() {
    let server = start_server();
    let mut worker = connect(&server, "worker", None).await;
    let js = create_layout(&worker.client).await;
    let progress = 50;
    let tasks = serve(&worker.client, progress).await;
    let mut client = connect(&server, "client", Some("_INBOX_client")).await;

    // A long call: many progress messages and then the final reply, on the client's inbox
    // (the worker may answer far more than once: allow_responses).
    let inbox = client.client.new_inbox();
    assert!(inbox.starts_with("_INBOX_client."), "{inbox}");
    let mut replies = client.client.subscribe(inbox.clone()).await.expect("subscribe own inbox");
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Sessionbus-Progress", "1");
    client
        .client
        .publish_with_reply_and_headers("sessionbus.v1.session.s1.start_turn", inbox, headers, "{}".into())
        .await
        .expect("call");
    let mut progress_seen = 0;
    loop {
        let message = timeout(WAIT, replies.next()).await.expect("a reply in time").expect("a reply");
        let status =
            message.headers.as_ref().and_then(|headers| headers.get("Sessionbus-Status")).map(|v| v.to_string());
        if status.as_deref() == Some("102") {
            progress_seen += 1;
        } else {
            assert_eq!(message.payload.as_ref(), b"final");
            break;
        }
    }
    assert_eq!(progress_seen, progress, "every progress message arrived");
    client.assert_no_violation("a long call");
    worker.assert_no_violation("serving a long call");

    // JetStream as a worker uses it: leader reads, direct gets, KV, a durable consumer.
    let state = js.get_stream("SESSIONBUS_STATE").await.expect("stream info");
    let last = state.get_last_raw_message_by_subject("sessionbus.v1.state.s1.meta").await.expect("leader read");
    assert_eq!(last.payload.as_ref(), b"{\"seed\":true}");
    let direct = state.direct_get_last_for_subject("sessionbus.v1.state.s1.meta").await.expect("direct get");
    assert_eq!(direct.payload.as_ref(), b"{\"seed\":true}");
    let tools = js.get_key_value("SESSIONBUS_TOOLS").await.expect("bucket");
    let revision = tools.put("s2", "{\"generation\":0}".into()).await.expect("kv put");
    let entry = tools.entry("s2").await.expect("kv entry").expect("the key exists");
    assert_eq!(entry.revision, revision);
    let consumer = state
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some("deploy-test".to_owned()),
            ..Default::default()
        })
        .await
        .expect("durable consumer");
    let mut batch = consumer.fetch().max_messages(1).messages().await.expect("fetch");
    let message = timeout(WAIT, batch.next()).await.expect("a message in time").expect("a message").expect("ok");
    message.ack().await.expect("ack");
    let trace = js.get_stream("SESSIONBUS_TRACE").await.expect("trace stream");
    trace.get_last_raw_message_by_subject("sessionbus.v1.trace.s1").await.expect("trace read");
    worker.assert_no_violation("JetStream use");

    // Outside sessionbus: no other stream, no deleting a sessionbus stream.
    let before = stream_state(&js).await;
    for subject in [
        "$JS.API.STREAM.CREATE.OTHER",
        "$JS.API.STREAM.DELETE.SESSIONBUS_STATE",
        "$JS.API.STREAM.DELETE.KV_SESSIONBUS_TOOLS",
        "$JS.API.STREAM.INFO.OTHER",
        "$KV.OTHER.x",
        "$O.SESSIONBUS.C.x",
        "sessionbus.v1.events.s1.meta",
    ] {
        worker.refused_publish(subject).await;
    }
    assert_eq!(before, stream_state(&js).await);
    assert_eq!(
        js.get_stream("SESSIONBUS_STATE").await.expect("still there").cached_info().config.name,
        "SESSIONBUS_STATE"
    );
    let mut other_inbox = worker.refused_subscription("_INBOX_client.>").await;
    client.client.publish("sessionbus.v1.ping", "{}".into()).await.expect("publish");
    assert_silent(&mut other_inbox, "worker reading client inboxes").await;

    for task in tasks {
        task.abort();
    }
}

#[tokio::test]
async fn dashboard_credential_watches_and_reads_but_never_writes() {
    let server = start_server();
    let worker = connect(&server, "worker", None).await;
    let js = create_layout(&worker.client).await;
    let tasks = serve(&worker.client, 0).await;
    let service = async_nats::service::ServiceExt::service_builder(&worker.client)
        .start("sessionbus", "0.1.0")
        .await
        .expect("the micro service starts");
    timeout(WAIT, js.query_account()).await.expect("in time").expect("round trip");

    let mut dashboard = connect(&server, "dashboard", Some("_INBOX_dashboard")).await;

    // Allowed: events, trace records, $SRV status queries, direct gets.
    let mut events = dashboard.client.subscribe("sessionbus.v1.events.>").await.expect("events");
    let mut traces = dashboard.client.subscribe("sessionbus.v1.trace.>").await.expect("traces");
    let ping = timeout(WAIT, dashboard.client.request("$SRV.PING.sessionbus", "".into()))
        .await
        .expect("$SRV.PING answered in time")
        .expect("$SRV.PING answered");
    assert!(String::from_utf8_lossy(&ping.payload).contains("\"name\":\"sessionbus\""));
    let direct = timeout(
        WAIT,
        dashboard.client.request("$JS.API.DIRECT.GET.SESSIONBUS_STATE.sessionbus.v1.state.s1.meta", "".into()),
    )
    .await
    .expect("direct get in time")
    .expect("direct get");
    assert_eq!(direct.payload.as_ref(), b"{\"seed\":true}");
    js.publish("sessionbus.v1.trace.s1", "{\"trace\":1}".into()).await.expect("publish").await.expect("stored");
    let trace = timeout(WAIT, traces.next()).await.expect("a trace record in time").expect("a trace record");
    assert_eq!(trace.subject.as_str(), "sessionbus.v1.trace.s1");
    js.publish("sessionbus.v1.state.s1.meta", "{}".into()).await.expect("publish").await.expect("stored");
    let event = timeout(WAIT, events.next()).await.expect("an event in time").expect("an event");
    assert_eq!(event.subject.as_str(), "sessionbus.v1.events.s1.meta");
    dashboard.assert_no_violation("watching and reading");

    // Refused: every write, every call, and the consumer API.
    for subject in [
        "sessionbus.v1.create",
        "sessionbus.v1.ping",
        "sessionbus.v1.session.s1.close",
        "sessionbus.v1.state.s1.meta",
        "sessionbus.v1.trace.s1",
        "sessionbus.v1.events.s1.meta",
        "$KV.SESSIONBUS_TOOLS.s1",
        "$JS.API.STREAM.PURGE.SESSIONBUS_STATE",
        "$JS.API.STREAM.UPDATE.SESSIONBUS_STATE",
        "$JS.API.STREAM.MSG.DELETE.SESSIONBUS_STATE",
        "$JS.API.CONSUMER.CREATE.SESSIONBUS_STATE",
        "_INBOX.x",
    ] {
        let before = stream_state(&js).await;
        dashboard.refused_publish(subject).await;
        assert_eq!(
            before,
            stream_state(&js).await,
            "the streams changed after a refused dashboard publish to {subject}"
        );
    }
    let mut refused = Vec::new();
    for subject in ["_INBOX.>", "_INBOX_client.>", "sessionbus.v1.session.*.*", "sessionbus.v1.state.>"] {
        refused.push((subject, dashboard.refused_subscription(subject).await));
    }
    for subject in ["_INBOX.x.1", "_INBOX_client.x.1", "sessionbus.v1.session.s1.snapshot"] {
        worker.client.publish(subject, "secret".into()).await.expect("worker publishes");
    }
    for (subject, subscriber) in &mut refused {
        assert_silent(subscriber, subject).await;
    }

    // Unknown users and wrong passwords are refused at connect.
    let wrong = ConnectOptions::with_user_and_password("dashboard".into(), "wrong".into())
        .max_reconnects(Some(1))
        .connect(server.url());
    assert!(matches!(timeout(WAIT, wrong).await, Ok(Err(_))), "a wrong password must be refused");

    drop(service);
    for task in tasks {
        task.abort();
    }
}
