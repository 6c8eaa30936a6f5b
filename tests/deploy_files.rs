//! The deployment files: `docker-compose.yml`, `Dockerfile`, `scripts/gen-certs`,
//! `sessionbus credentials` and everything under `deploy/`.
//!
//! Three kinds of checks:
//! - the files agree with each other: every file a service mounts exists (or is made by
//!   `scripts/gen-certs` / `sessionbus credentials` and git-ignored), every NATS node gets
//!   every variable `deploy/nats/accounts.conf` and its node config read, every sessionbus
//!   service gets its own user's seed, the route list `sessionbus credentials` mints names
//!   the compose services' cluster ports, only client ports are published, and the
//!   Kubernetes files carry the same accounts, users, route credentials and certificates;
//! - the shipped NATS configs in real nats-servers (never on port 4222): every node config
//!   loads; a 3-node cluster started from them forms its routes, runs `sessionbus setup`,
//!   a worker, the exporter and every user's readiness ping with the seeds compose and
//!   Kubernetes hand them, and refuses a route without the CA's certificate or without
//!   the route password; the account and connection limits hold with their errors;
//! - `deploy/nats/accounts.conf` in a real nats-server keeps every caller away from the
//!   bus's stored state: each refusal is seen as a permission violation from the server,
//!   requests from other accounts reach the bus with server-made reply subjects, and the
//!   streams are unchanged after every refused or redirected publish.

mod auth;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::{Client, ConnectOptions};
use auth::{Conn, Credentials, WAIT, connect, read, root, setup_as_admin, start_server};
use futures::StreamExt;
use serde_yaml_ng::Value;
use sessionbus_nats::jetstream::{INDEX_STREAM, SPANS_STREAM};
use sessionbus_nats::{STATE_STREAM, TOOLS_STREAM, TRACE_STREAM};
use sessionbus_testkit::{
    MAX_PAYLOAD, NATS_SERVER_VERSION, ServerProcess, WorkerConfig, WorkerProcess, find_nats_server, monitoring_get,
    sessionbus_binary,
};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// Files the repository does not hold: made by `scripts/gen-certs` and
/// `sessionbus credentials`, git-ignored.
const GENERATED: [&str; 2] = ["deploy/nats/certs", "deploy/nats/secrets"];

// ---------------------------------------------------------------------------------------
// Reading the files
// ---------------------------------------------------------------------------------------

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

/// True when `relative` is (under) a generated path, which must then be git-ignored.
fn generated(relative: &str) -> bool {
    GENERATED.iter().any(|dir| relative == *dir || relative.starts_with(&format!("{dir}/")))
}

// ---------------------------------------------------------------------------------------
// A reader for the nats-server configuration format, enough for deploy/nats/: maps in
// braces, arrays in brackets, `key: value` / `key = value` / `key value`, quoted and bare
// strings, `$VARIABLE` references (bare, not quoted), `#` and `//` comments, and
// `include <path>` (relative to the including file).
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
enum Conf {
    Map(BTreeMap<String, Conf>),
    List(Vec<Conf>),
    Str(String),
    /// A bare `$NAME`: the server reads it from its environment (or a config variable).
    Var(String),
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
        self.items().iter().map(|item| item.str().to_owned()).collect()
    }

    fn items(&self) -> &[Conf] {
        match self {
            Conf::List(items) => items,
            other => panic!("expected a list in nats config, found {other:?}"),
        }
    }

    fn var(&self) -> &str {
        match self {
            Conf::Var(name) => name,
            other => panic!("expected a $VARIABLE in nats config, found {other:?}"),
        }
    }

    /// Every `$VARIABLE` this config reads.
    fn variables(&self, found: &mut BTreeSet<String>) {
        match self {
            Conf::Map(map) => map.values().for_each(|value| value.variables(found)),
            Conf::List(items) => items.iter().for_each(|item| item.variables(found)),
            Conf::Var(name) => {
                found.insert(name.clone());
            }
            Conf::Str(_) => {}
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
            Some(_) => {
                let word = self.word(|c| matches!(c, ',' | ']' | '}' | '#' | ';'));
                match word.strip_prefix('$') {
                    Some(name) => Conf::Var(name.to_owned()),
                    None => Conf::Str(word),
                }
            }
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

/// The node configs of the 3-node cluster.
const NODE_CONFIGS: [&str; 3] = ["deploy/nats/node1.conf", "deploy/nats/node2.conf", "deploy/nats/node3.conf"];

/// Every `$VARIABLE` the shipped node configs (with accounts.conf) read.
fn server_variables() -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for node in NODE_CONFIGS {
        nats_conf(node).variables(&mut found);
    }
    found
}

/// The accounts of accounts.conf, by name.
fn accounts() -> BTreeMap<String, Conf> {
    match nats_conf("deploy/nats/accounts.conf").at(&["accounts"]) {
        Conf::Map(accounts) => accounts.clone(),
        other => panic!("accounts is a map, not {other:?}"),
    }
}

/// The user an nkey variable belongs to: `SESSIONBUS_APP_A_NKEY` -> `app_a`.
fn user_of_variable(variable: &str) -> String {
    variable
        .strip_prefix("SESSIONBUS_")
        .and_then(|rest| rest.strip_suffix("_NKEY"))
        .unwrap_or_else(|| panic!("nkeys come from SESSIONBUS_<USER>_NKEY, not ${variable}"))
        .to_lowercase()
}

/// Every user of accounts.conf: name -> (account, user entry).
fn account_users() -> BTreeMap<String, (String, Conf)> {
    let mut users = BTreeMap::new();
    for (account, conf) in accounts() {
        for user in conf.at(&["users"]).items() {
            let name = user_of_variable(user.at(&["nkey"]).var());
            assert!(users.insert(name.clone(), (account.clone(), user.clone())).is_none(), "user {name} twice");
        }
    }
    users
}

/// A user's permission list (empty when absent).
fn permission(user: &Conf, path: &[&str]) -> BTreeSet<String> {
    let mut full = vec!["permissions"];
    full.extend_from_slice(path);
    let found = full.iter().try_fold(user, |conf, key| conf.get(key));
    found.map(|list| list.list().into_iter().collect()).unwrap_or_default()
}

/// The subjects an account imports as services (`None`: streams).
fn imports(account: &Conf, kind: &str) -> BTreeSet<String> {
    match account.get("imports") {
        None => BTreeSet::new(),
        Some(imports) => imports
            .items()
            .iter()
            .filter_map(|import| import.get(kind))
            .map(|import| {
                assert_eq!(import.at(&["account"]).str(), "BUS", "every import comes from BUS");
                import.at(&["subject"]).str().to_owned()
            })
            .collect(),
    }
}

/// `sessionbus credentials` with its defaults but `--out`: (server.env, seed file names).
fn default_credentials() -> (BTreeMap<String, String>, BTreeSet<String>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = Command::new(sessionbus_binary().expect("the sessionbus binary"))
        .args(["credentials", "--out"])
        .arg(dir.path())
        .output()
        .expect("run sessionbus credentials");
    assert!(output.status.success(), "sessionbus credentials: {}", String::from_utf8_lossy(&output.stderr));
    let env = parse_env(&std::fs::read_to_string(dir.path().join("server.env")).expect("server.env"));
    let seeds = std::fs::read_dir(dir.path())
        .expect("read the credentials dir")
        .map(|entry| entry.expect("an entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".nk"))
        .collect();
    (env, seeds)
}

/// `NAME=value` lines (`#` comments) to a map.
fn parse_env(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (name, value) = line.split_once('=').unwrap_or_else(|| panic!("not NAME=value: {line:?}"));
            (name.to_owned(), value.to_owned())
        })
        .collect()
}

/// A `--flag`'s default in `sessionbus <command> --help`.
fn cli_default(command: &str, flag: &str) -> String {
    let output = Command::new(sessionbus_binary().expect("the sessionbus binary"))
        .args([command, "--help"])
        .output()
        .expect("run sessionbus --help");
    let help = String::from_utf8_lossy(&output.stdout).into_owned();
    let start = help.find(&format!("--{flag} ")).unwrap_or_else(|| panic!("`sessionbus {command}` has no --{flag}"));
    let rest = &help[start..];
    let default = rest.find("[default: ").unwrap_or_else(|| panic!("--{flag} has no default"));
    let rest = &rest[default + "[default: ".len()..];
    rest[..rest.find(']').expect("a closing bracket")].to_owned()
}

/// The default directory of `scripts/gen-certs`.
fn gen_certs_default_dir() -> String {
    let script = read("scripts/gen-certs");
    let line = script.lines().find(|line| line.starts_with("dir=")).expect("gen-certs sets dir=");
    line.split(":-").nth(1).and_then(|rest| rest.split('}').next()).expect("dir=\"${1:-DEFAULT}\"").to_owned()
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

    /// The repository path (relative to the root) a service sees at `container_path`,
    /// through its bind mounts (the most specific one).
    fn host_path(&self, name: &str, container_path: &str) -> String {
        self.volumes(name)
            .into_iter()
            .filter(|(source, _)| source.starts_with("./"))
            .filter_map(|(source, target)| {
                let rest = container_path.strip_prefix(target.trim_end_matches('/'))?;
                if !(rest.is_empty() || rest.starts_with('/')) {
                    return None;
                }
                let source = source.trim_start_matches("./").trim_end_matches('/').to_owned();
                Some((target.len(), if rest.is_empty() { source } else { format!("{source}{rest}") }))
            })
            .max()
            .map(|(_, path)| path)
            .unwrap_or_else(|| panic!("service `{name}` mounts nothing at {container_path}"))
    }

    /// The repository file a service sees at `container_path`.
    fn host_file(&self, name: &str, container_path: &str) -> PathBuf {
        root().join(self.host_path(name, container_path))
    }

    /// The services `name` waits for, with the condition (`service_started` for the list form).
    fn depends_on_conditions(&self, name: &str) -> BTreeMap<String, String> {
        match at(self.service(name), &["depends_on"]) {
            Value::Mapping(map) => map
                .iter()
                .map(|(service, options)| {
                    let condition = at(options, &["condition"]);
                    let condition = if condition.is_null() { "service_started".to_owned() } else { text(condition) };
                    (text(service), condition)
                })
                .collect(),
            other => strings(other).into_iter().map(|service| (service, "service_started".to_owned())).collect(),
        }
    }

    fn depends_on(&self, name: &str) -> Vec<String> {
        self.depends_on_conditions(name).into_keys().collect()
    }

    /// The `env_file`s of a service, relative to the root.
    fn env_files(&self, name: &str) -> Vec<String> {
        let files = at(self.service(name), &["env_file"]);
        let files = match files {
            Value::Sequence(items) => items
                .iter()
                .map(|item| if item.is_mapping() { text(at(item, &["path"])) } else { text(item) })
                .collect(),
            other => strings(other),
        };
        files.into_iter().map(|file| file.trim_start_matches("./").to_owned()).collect()
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
    http: String,
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
        let http = conf.at(&["http"]).str().to_owned();
        nodes.push(Node { service, conf, client_port, cluster_port, http });
    }
    nodes
}

#[test]
fn compose_services_reference_existing_files_services_and_volumes() {
    let compose = Compose::load();
    let services = compose.services();
    for expected in ["nats1", "nats2", "nats3", "setup", "worker1", "worker2", "exporter", "otel-collector", "jaeger"] {
        assert!(services.contains(expected), "docker-compose.yml lacks service `{expected}`");
    }
    let ignored = read(".gitignore");
    for dir in GENERATED {
        assert!(ignored.lines().any(|line| line.trim() == format!("{dir}/")), ".gitignore must list {dir}/");
    }
    let named_volumes = map_keys(at(&compose.doc, &["volumes"]));
    for service in &services {
        for (dependency, condition) in compose.depends_on_conditions(service) {
            assert!(services.contains(&dependency), "`{service}` depends on unknown service `{dependency}`");
            assert_ne!(&dependency, service, "`{service}` depends on itself");
            assert!(
                ["service_started", "service_healthy", "service_completed_successfully"].contains(&condition.as_str()),
                "`{service}` waits for `{dependency}` with unknown condition {condition}"
            );
        }
        for (source, target) in compose.volumes(service) {
            if let Some(relative) = source.strip_prefix("./") {
                let relative = relative.trim_end_matches('/');
                let exists = root().join(relative).exists();
                assert!(exists || generated(relative), "`{service}` mounts {source} at {target}, which does not exist");
            } else {
                assert!(!source.starts_with('/'), "`{service}` mounts the host path {source}");
                assert!(named_volumes.contains(&source), "`{service}` uses undeclared volume `{source}`");
            }
        }
        for file in compose.env_files(service) {
            assert!(root().join(&file).is_file() || generated(&file), "`{service}` reads env_file {file}");
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

    // Compose interpolates `$`: only `${VARIABLE...}` and `$$` (a literal `$`).
    let mut values = vec![&compose.doc];
    while let Some(value) = values.pop() {
        match value {
            Value::Mapping(map) => values.extend(map.values()),
            Value::Sequence(items) => values.extend(items),
            Value::String(string) => {
                let mut chars = string.chars().peekable();
                while let Some(c) = chars.next() {
                    if c == '$' {
                        let next = chars.next();
                        assert!(matches!(next, Some('{' | '$')), "docker-compose.yml: a bare `$` in {string:?}");
                    }
                }
            }
            _ => {}
        }
    }

    // How to make the generated files is written where they are used.
    let header = read("docker-compose.yml");
    assert!(header.contains("scripts/gen-certs"), "docker-compose.yml should say how the certificates are made");
    assert!(
        header.contains("sessionbus credentials --out deploy/nats/secrets"),
        "docker-compose.yml should say how the credentials are minted"
    );
    assert!(header.contains("docker compose up"));
}

#[test]
fn nats_nodes_ports_tls_routes_and_payload_agree_with_compose() {
    let compose = Compose::load();
    let nodes = compose_nats_nodes(&compose);
    assert_eq!(nodes.len(), 3, "a 3-node cluster");

    let names: BTreeSet<_> = nodes.iter().map(|node| node.conf.at(&["server_name"]).str().to_owned()).collect();
    assert_eq!(names.len(), 3, "server names must be distinct: {names:?}");
    let certs_dir = gen_certs_default_dir();
    assert_eq!(certs_dir, "deploy/nats/certs", "scripts/gen-certs writes where compose mounts the certificates");

    for node in &nodes {
        let service = &node.service;
        let name = node.conf.at(&["server_name"]).str();
        assert_eq!(node.conf.at(&["cluster", "name"]).str(), "sessionbus", "`{service}` cluster name");
        assert_eq!(
            node.conf.at(&["max_payload"]).str(),
            MAX_PAYLOAD.to_string(),
            "`{service}` must set max_payload to 8 MiB (8388608) explicitly"
        );
        assert!(!node.conf.at(&["jetstream", "store_dir"]).str().is_empty(), "`{service}` JetStream store_dir");
        assert!(node.conf.get("accounts").is_some(), "`{service}` includes accounts.conf");
        assert_eq!(
            compose.host_path(service, "/etc/nats/accounts.conf"),
            "deploy/nats/accounts.conf",
            "`{service}` sees accounts.conf next to its config (include ./accounts.conf)"
        );

        // Routes: TLS with the cluster CA both ways, the route password, and the route
        // list from the environment (minted by `sessionbus credentials`).
        let cluster = node.conf.at(&["cluster"]);
        assert_eq!(cluster.at(&["authorization", "user"]).str(), "route", "`{service}` route user");
        assert_eq!(cluster.at(&["authorization", "password"]).var(), "SESSIONBUS_ROUTE_PASSWORD");
        assert_eq!(cluster.at(&["routes"]).var(), "SESSIONBUS_ROUTES", "`{service}` routes");
        let tls = cluster.at(&["tls"]);
        assert_eq!(tls.at(&["cert_file"]).str(), format!("/etc/nats/certs/{name}.pem"), "`{service}` cert");
        assert_eq!(tls.at(&["key_file"]).str(), format!("/etc/nats/certs/{name}-key.pem"), "`{service}` key");
        assert_eq!(tls.at(&["ca_file"]).str(), "/etc/nats/certs/ca.pem", "`{service}` CA");
        assert_eq!(tls.at(&["verify"]).str(), "true", "`{service}` routes must present a certificate");
        assert_eq!(compose.host_path(service, "/etc/nats/certs"), certs_dir, "`{service}` certificates");

        // The store is a volume of its own.
        let store = node.conf.at(&["jetstream", "store_dir"]).str();
        let store_volume = compose
            .volumes(service)
            .into_iter()
            .find(|(_, target)| store.starts_with(target.as_str()))
            .unwrap_or_else(|| panic!("`{service}` keeps its JetStream store {store} on no volume"));
        assert!(!store_volume.0.starts_with('.'), "`{service}` store should be a named volume");

        // Monitoring lists every connection: loopback only, never published.
        let (host, _) = node.http.rsplit_once(':').unwrap_or_else(|| panic!("`{service}` http is host:port"));
        assert!(host == "127.0.0.1" || host == "localhost", "`{service}` monitoring listens on {host}");
        let published = compose.published_ports(service);
        assert_eq!(published, [(node.client_port, node.client_port)], "`{service}` publishes its client port only");
        assert_ne!(node.cluster_port, node.client_port);
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
fn credentials_mint_every_server_variable_the_compose_routes_and_a_seed_per_user() {
    let compose = Compose::load();
    let nodes = compose_nats_nodes(&compose);
    let (env, seeds) = default_credentials();

    // server.env holds exactly what the servers read, and a seed per accounts.conf user.
    let variables = server_variables();
    assert_eq!(env.keys().cloned().collect::<BTreeSet<_>>(), variables, "server.env vs the configs' variables");
    let users: BTreeSet<_> = account_users().into_keys().collect();
    assert_eq!(seeds, users.iter().map(|user| format!("{user}.nk")).collect(), "seed files vs accounts.conf users");
    for user in &users {
        assert!(env[&format!("SESSIONBUS_{}_NKEY", user.to_uppercase())].starts_with('U'), "{user}: a user nkey");
    }

    // The default route list: every compose node by service name and cluster port, each
    // with the route user and the minted password.
    let password = &env["SESSIONBUS_ROUTE_PASSWORD"];
    let routes = env["SESSIONBUS_ROUTES"].strip_prefix('[').and_then(|r| r.strip_suffix(']')).expect("a list");
    let routes: BTreeSet<_> = routes.split(',').map(str::to_owned).collect();
    let expected: BTreeSet<_> = nodes
        .iter()
        .map(|node| format!("nats-route://route:{password}@{}:{}", node.service, node.cluster_port))
        .collect();
    assert_eq!(routes, expected, "the default --routes of `sessionbus credentials` vs docker-compose.yml");
    for route in &routes {
        let (user, route_password, _, _) = parse_url(route);
        assert_eq!((user.as_deref(), route_password.as_ref()), (Some("route"), Some(password)));
    }
    assert_eq!(cli_default("credentials", "out"), "deploy/nats/secrets", "where compose reads the credentials");
}

#[test]
fn every_nats_node_gets_every_variable_and_each_service_its_own_seed() {
    let compose = Compose::load();
    let nodes = compose_nats_nodes(&compose);
    let variables = server_variables();
    let users = account_users();

    // Every node gets every variable: from server.env or from the environment.
    for node in &nodes {
        let env_files = compose.env_files(&node.service);
        let environment = compose.environment(&node.service);
        for variable in &variables {
            let from_file = env_files.iter().any(|file| file == "deploy/nats/secrets/server.env");
            let from_env = environment.get(variable).is_some_and(|value| value.starts_with(&format!("${{{variable}")));
            assert!(from_file || from_env, "`{}` lacks {variable}", node.service);
        }
        for (name, value) in &environment {
            assert!(
                !name.starts_with("SESSIONBUS_") || value.starts_with("${"),
                "`{}` {name} is a literal",
                node.service
            );
        }
    }

    // Each sessionbus service: its own user's seed, every node, no other credentials.
    for (service, user, command) in [
        ("setup", "admin", "setup"),
        ("worker1", "worker", "worker"),
        ("worker2", "worker", "worker"),
        ("exporter", "worker", "exporter"),
    ] {
        let env = compose.environment(service);
        let urls = env.get("NATS_URL").unwrap_or_else(|| panic!("`{service}` has no NATS_URL"));
        let mut reached = BTreeSet::new();
        for url in urls.split(',') {
            let (url_user, password, host, port) = parse_url(url.trim());
            assert!(url_user.is_none() && password.is_none(), "`{service}`: no credentials in NATS_URL");
            let node = nodes
                .iter()
                .find(|node| node.service == host)
                .unwrap_or_else(|| panic!("`{service}` NATS_URL names {host}, which is no NATS service"));
            assert_eq!(port, node.client_port, "`{service}` connects to {host} on the wrong port");
            reached.insert(host);
        }
        assert_eq!(reached.len(), nodes.len(), "`{service}` NATS_URL should list every node");
        for other in ["NATS_USER", "NATS_PASSWORD", "NATS_CREDS"] {
            assert!(!env.contains_key(other), "`{service}` sets {other}: users authenticate with nkeys");
        }
        let seed = env.get("NATS_NKEY").unwrap_or_else(|| panic!("`{service}` has no NATS_NKEY"));
        assert_eq!(
            compose.host_path(service, seed),
            format!("deploy/nats/secrets/{user}.nk"),
            "`{service}` must read the seed of `{user}`"
        );
        assert!(users.contains_key(user), "{user} is not in accounts.conf");
        assert_eq!(users[user].0, "BUS", "{user} lives in the BUS account");
        assert_eq!(compose.command(service).first().map(String::as_str), Some(command));
        let uid = text(at(compose.service(service), &["user"]));
        assert!(uid.starts_with("${SESSIONBUS_UID"), "`{service}` runs as the owner of the seed files: {uid}");

        let depends = compose.depends_on_conditions(service);
        for node in &nodes {
            assert!(depends.contains_key(&node.service), "`{service}` should start after `{}`", node.service);
        }
        if service != "setup" {
            assert_eq!(
                depends.get("setup").map(String::as_str),
                Some("service_completed_successfully"),
                "`{service}` must wait for the layout"
            );
            let otlp =
                env.get("OTEL_EXPORTER_OTLP_ENDPOINT").unwrap_or_else(|| panic!("`{service}` has no OTLP endpoint"));
            let (_, _, host, port) = parse_url(otlp);
            assert!(compose.services().contains(&host), "`{service}` sends OTLP to unknown service `{host}`");
            let collector = yaml("deploy/otel/collector.yaml");
            let grpc = text(at(&collector, &["receivers", "otlp", "protocols", "grpc", "endpoint"]));
            assert_eq!(port, port_of(&grpc), "`{service}` OTLP port vs the collector's gRPC receiver");
        }
    }
    // Only setup creates the layout (as admin), once, with a replica per node.
    assert_eq!(compose.command("setup"), ["setup", "--replicas", "3"]);
    assert_eq!(text(at(compose.service("setup"), &["restart"])), "no");
    for service in ["worker1", "worker2", "exporter"] {
        assert!(compose.flag(service, "--replicas").is_none(), "`{service}` does not make the layout");
        assert!(!compose.command(service).contains(&"--setup".to_owned()), "`{service}` cannot create streams");
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
    for service in ["setup", "worker1", "worker2", "exporter"] {
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
    assert!(files.len() >= 5, "deploy/ YAML files: {files:?}");
    for file in files {
        let relative = file.strip_prefix(root()).unwrap().to_string_lossy().into_owned();
        let documents = yaml_documents(&relative);
        assert!(!documents.is_empty(), "{relative} is empty");
    }
}

/// The first object of `kind` in a manifest, and its first container.
fn workload(file: &str, kind: &str) -> (Value, Value) {
    let documents = yaml_documents(file);
    let object = documents
        .into_iter()
        .find(|doc| text(at(doc, &["kind"])) == kind)
        .unwrap_or_else(|| panic!("{file} has no {kind}"));
    let containers = at(&object, &["spec", "template", "spec", "containers"]).as_sequence().expect("containers");
    let container = containers[0].clone();
    (object, container)
}

fn container_env(container: &Value) -> BTreeMap<String, Value> {
    at(container, &["env"])
        .as_sequence()
        .expect("env")
        .iter()
        .map(|var| (text(at(var, &["name"])), var.clone()))
        .collect()
}

/// The Secret and key a pod reads the file at `path` from, through its volume mounts.
fn secret_file(object: &Value, container: &Value, path: &str) -> (String, String) {
    let (dir, key) = path.rsplit_once('/').expect("an absolute path");
    let mount = at(container, &["volumeMounts"])
        .as_sequence()
        .expect("volumeMounts")
        .iter()
        .find(|mount| text(at(mount, &["mountPath"])) == dir)
        .unwrap_or_else(|| panic!("nothing is mounted at {dir}"))
        .clone();
    let volume_name = text(at(&mount, &["name"]));
    let volume = at(object, &["spec", "template", "spec", "volumes"])
        .as_sequence()
        .expect("volumes")
        .iter()
        .find(|volume| text(at(volume, &["name"])) == volume_name)
        .unwrap_or_else(|| panic!("no volume {volume_name}"))
        .clone();
    (text(at(&volume, &["secret", "secretName"])), key.to_owned())
}

#[test]
fn kubernetes_files_carry_the_same_accounts_users_and_route_security_as_compose() {
    let values = yaml("deploy/k8s/nats-values.yaml");
    let readme = read("deploy/k8s/README.md");
    let service = text(at(&values, &["fullnameOverride"]));
    assert_eq!(service, "nats", "the Service and pod names the README and the route list use");

    // Cluster, JetStream, payload, accounts.
    let cluster = at(&values, &["config", "cluster"]);
    assert_eq!(at(cluster, &["enabled"]), &Value::Bool(true));
    assert_eq!(text(at(cluster, &["replicas"])), "3");
    assert_eq!(text(at(cluster, &["merge", "name"])), "sessionbus");
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
    assert_eq!(includes, ["accounts.conf"], "the chart config includes accounts.conf");
    assert!(
        readme.contains("--set-file 'configMap.merge.data.accounts\\.conf=deploy/nats/accounts.conf'"),
        "README.md puts deploy/nats/accounts.conf into the chart's ConfigMap"
    );
    let tag = text(at(&values, &["container", "image", "tag"]));
    assert!(tag.starts_with(NATS_SERVER_VERSION), "chart image tag {tag} vs pinned {NATS_SERVER_VERSION}");

    // Routes: mutual TLS from a Secret at /etc/nats/certs, the route user and password,
    // and the minted route list instead of the chart's (which has no credentials).
    let tls = at(cluster, &["tls"]);
    assert_eq!(at(tls, &["enabled"]), &Value::Bool(true), "route TLS");
    let tls_secret = text(at(tls, &["secretName"]));
    let dir = text(at(tls, &["dir"]));
    assert_eq!(dir, "/etc/nats/certs", "certificates where the compose nodes have them");
    assert_eq!(text(at(tls, &["merge", "ca_file"])), format!("{dir}/ca.crt"));
    assert_eq!(at(tls, &["merge", "verify"]), &Value::Bool(true), "routes must present a certificate");
    assert_eq!(text(at(cluster, &["merge", "authorization", "user"])), "route");
    assert_eq!(text(at(cluster, &["merge", "authorization", "password"])), "<< $SESSIONBUS_ROUTE_PASSWORD >>");
    let patch = at(cluster, &["patch"]).as_sequence().expect("config.cluster.patch");
    assert!(
        patch.iter().any(|op| text(at(op, &["op"])) == "replace"
            && text(at(op, &["path"])) == "/routes"
            && text(at(op, &["value"])) == "<< $SESSIONBUS_ROUTES >>"),
        "the chart's route list is replaced by $SESSIONBUS_ROUTES: {patch:?}"
    );
    let cluster_port = 6222;
    let routes = (0..3).map(|i| format!("{service}-{i}.{service}-headless:{cluster_port}")).collect::<Vec<_>>();
    assert!(
        readme.contains(&format!("sessionbus credentials --out deploy/nats/secrets --routes {}", routes.join(","))),
        "README.md mints the route list for the chart's pods: {}",
        routes.join(",")
    );
    assert!(read("scripts/gen-certs").contains(&format!("DNS:*.{service}-headless")), "certificates fit the pods");
    for (file, key) in [("node1.pem", "tls.crt"), ("node1-key.pem", "tls.key"), ("ca.pem", "ca.crt")] {
        assert!(
            readme.contains(&format!("--from-file={key}=deploy/nats/certs/{file}")),
            "README.md makes the Secret {tls_secret} with {key} from {file}"
        );
    }
    assert!(readme.contains(&format!("create secret generic {tls_secret}")));

    // Monitoring: loopback only, probes from inside the container.
    assert_eq!(at(&values, &["config", "monitor", "enabled"]), &Value::Bool(false), "no monitoring port on the pod");
    let http = text(at(&values, &["config", "merge", "http"]));
    assert!(http.starts_with("127.0.0.1:"), "monitoring on loopback, not {http}");
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let command = strings(at(&values, &["container", "merge", probe, "exec", "command"])).join(" ");
        assert!(command.contains(&format!("http://{http}/healthz")), "{probe} asks the loopback monitor: {command}");
    }

    // Every variable the configs read, from the Secret made of server.env.
    let env = at(&values, &["container", "env"]);
    let mut secrets = BTreeSet::new();
    assert_eq!(map_keys(env), server_variables(), "the NATS pods' environment vs the configs' variables");
    for variable in server_variables() {
        let reference = at(env, &[&variable, "valueFrom", "secretKeyRef"]);
        assert_eq!(text(at(reference, &["key"])), variable, "the Secret's keys are server.env's names");
        secrets.insert(text(at(reference, &["name"])));
    }
    assert_eq!(secrets.len(), 1, "one Secret: {secrets:?}");
    let server_secret = secrets.pop_first().expect("a Secret");
    assert!(
        readme
            .contains(&format!("create secret generic {server_secret} --from-env-file=deploy/nats/secrets/server.env")),
        "README.md makes {server_secret} from server.env"
    );

    // The workloads: each with its own user's seed from a Secret volume.
    for (file, kind, command, user) in [
        ("deploy/k8s/setup-job.yaml", "Job", "setup", "admin"),
        ("deploy/k8s/worker-deployment.yaml", "Deployment", "worker", "worker"),
        ("deploy/k8s/exporter-deployment.yaml", "Deployment", "exporter", "worker"),
    ] {
        assert!(readme.contains(file), "deploy/k8s/README.md should explain {file}");
        let (object, container) = workload(file, kind);
        if kind == "Deployment" {
            let selector = at(&object, &["spec", "selector", "matchLabels"]);
            let labels = at(&object, &["spec", "template", "metadata", "labels"]);
            for (key, value) in selector.as_mapping().expect("matchLabels") {
                assert_eq!(labels.get(key), Some(value), "{file}: the selector must match the pod labels");
            }
        }
        let args = strings(at(&container, &["args"]));
        assert_eq!(args.first().map(String::as_str), Some(command), "{file} runs `sessionbus {command}`");
        let env = container_env(&container);
        let url = text(at(&env["NATS_URL"], &["value"]));
        let (url_user, password, host, port) = parse_url(&url);
        assert_eq!(host, service, "{file}: NATS_URL names the chart's Service");
        assert_eq!(port, 4222, "{file}: the chart's client port");
        assert!(url_user.is_none() && password.is_none(), "{file}: no credentials in NATS_URL");
        for other in ["NATS_USER", "NATS_PASSWORD", "NATS_CREDS"] {
            assert!(!env.contains_key(other), "{file} sets {other}: users authenticate with nkeys");
        }
        let seed = text(at(&env["NATS_NKEY"], &["value"]));
        let (secret, key) = secret_file(&object, &container, &seed);
        assert_eq!(key, format!("{user}.nk"), "{file} reads the seed of `{user}`");
        assert!(
            readme.contains(&format!("create secret generic {secret} --from-file={key}=deploy/nats/secrets/{key}")),
            "README.md makes {secret} from {key}"
        );
        let pod_security = at(&object, &["spec", "template", "spec", "securityContext"]);
        assert_eq!(
            text(at(pod_security, &["fsGroup"])),
            text(at(pod_security, &["runAsUser"])),
            "{file}: the non-root user reads the seed through its group"
        );
        if command == "setup" {
            assert_eq!(args[..3], ["setup", "--replicas", "3"], "{file}: a replica per node");
        } else {
            assert!(!args.contains(&"--replicas".to_owned()) && !args.contains(&"--setup".to_owned()), "{file}");
            assert!(env.contains_key("OTEL_EXPORTER_OTLP_ENDPOINT"), "{file}: OTEL_EXPORTER_OTLP_ENDPOINT");
        }
        if command == "worker" {
            let probe = strings(at(&container, &["readinessProbe", "exec", "command"]));
            assert_eq!(probe, ["sessionbus", "status", "--ping"], "{file}: readiness through sessionbus.v1.ping");
        }
    }
    assert!(readme.contains("nats-values.yaml") && readme.contains("sessionbus.v1.ping"));
    // The README's connection table names the users accounts.conf defines.
    for user in account_users().keys() {
        assert!(readme.contains(&format!("`{user}`")), "deploy/k8s/README.md should say who connects as `{user}`");
    }
}

/// The web dashboard in compose and Kubernetes: as the `dashboard` user (DASHBOARD),
/// on every node, after the layout, with a token it is handed (it listens on the
/// container's interfaces, which the dashboard refuses without one), published only on
/// the host's loopback.
#[test]
fn the_dashboard_runs_as_the_dashboard_user_behind_a_token_in_compose_and_kubernetes() {
    let compose = Compose::load();
    assert!(compose.services().contains("dashboard"), "docker-compose.yml lacks service `dashboard`");
    assert_eq!(compose.command("dashboard"), ["dashboard", "--listen", "0.0.0.0:8080"]);
    let env = compose.environment("dashboard");
    let seed = env.get("NATS_NKEY").expect("`dashboard` has no NATS_NKEY");
    assert_eq!(compose.host_path("dashboard", seed), "deploy/nats/secrets/dashboard.nk");
    let users = account_users();
    assert_eq!(users["dashboard"].0, "DASHBOARD", "the dashboard user lives in the DASHBOARD account");
    let token = env.get("SESSIONBUS_DASHBOARD_TOKEN").expect("`dashboard` has no token");
    assert!(token.starts_with("${SESSIONBUS_DASHBOARD_TOKEN:?"), "the token is required from the caller: {token}");
    let nodes = compose_nats_nodes(&compose);
    let urls = &env["NATS_URL"];
    for node in &nodes {
        assert!(
            urls.contains(&format!("{}:{}", node.service, node.client_port)),
            "`dashboard` reaches {}",
            node.service
        );
    }
    for other in ["NATS_USER", "NATS_PASSWORD", "NATS_CREDS"] {
        assert!(!env.contains_key(other), "`dashboard` sets {other}: users authenticate with nkeys");
    }
    let ports = &compose.service("dashboard")["ports"];
    assert_eq!(strings(ports), ["127.0.0.1:8080:8080"], "published on the host's loopback only");
    assert_eq!(
        compose.depends_on_conditions("dashboard").get("setup").map(String::as_str),
        Some("service_completed_successfully")
    );

    let file = "deploy/k8s/dashboard-deployment.yaml";
    let (object, container) = workload(file, "Deployment");
    assert_eq!(strings(at(&container, &["args"])), ["dashboard", "--listen", "0.0.0.0:8080"]);
    let env = container_env(&container);
    let (secret, key) = secret_file(&object, &container, &text(at(&env["NATS_NKEY"], &["value"])));
    assert_eq!(key, "dashboard.nk", "{file} reads the seed of `dashboard`");
    let token = at(&env["SESSIONBUS_DASHBOARD_TOKEN"], &["valueFrom", "secretKeyRef"]);
    assert_eq!(text(at(token, &["name"])), "sessionbus-dashboard-token");
    let readme = read("deploy/k8s/README.md");
    assert!(readme.contains(file), "deploy/k8s/README.md should explain {file}");
    assert!(readme.contains(&format!("create secret generic {secret} --from-file={key}=deploy/nats/secrets/{key}")));
    assert!(readme.contains("create secret generic sessionbus-dashboard-token"));
    let service = yaml_documents(file).into_iter().find(|d| text(at(d, &["kind"])) == "Service").expect("a Service");
    assert_eq!(text(at(&service, &["spec", "type"])), "ClusterIP", "the dashboard is not exposed outside the cluster");
}

// ---------------------------------------------------------------------------------------
// deploy/nats/accounts.conf, read statically
// ---------------------------------------------------------------------------------------

#[test]
fn accounts_keep_jetstream_and_the_workers_in_bus_and_everyone_else_behind_its_exports() {
    let accounts = accounts();
    assert_eq!(accounts.keys().map(String::as_str).collect::<Vec<_>>(), ["APPS", "BUS", "DASHBOARD", "TENANT"]);
    let users = account_users();
    let placed: BTreeMap<_, _> = users.iter().map(|(user, (account, _))| (user.as_str(), account.as_str())).collect();
    assert_eq!(
        placed,
        BTreeMap::from([
            ("admin", "BUS"),
            ("app_a", "APPS"),
            ("app_b", "APPS"),
            ("dashboard", "DASHBOARD"),
            ("tenant", "TENANT"),
            ("worker", "BUS"),
        ])
    );

    // Limits in every account, and per connection.
    for (name, account) in &accounts {
        for limit in ["max_connections", "max_subscriptions", "max_payload"] {
            let value: u64 = account.at(&["limits", limit]).str().parse().expect("a number");
            assert!(value > 0, "{name}.limits.{limit}");
        }
        assert_eq!(account.get("jetstream").is_some(), name == "BUS", "{name}: JetStream only in BUS");
    }
    let conf = nats_conf("deploy/nats/accounts.conf");
    assert!(conf.at(&["max_subscriptions"]).str().parse::<u64>().expect("a number") > 0);
    assert!(conf.at(&["max_connections"]).str().parse::<u64>().expect("a number") > 0);

    // Outside BUS: only the bus's operations, $SRV for dashboards, own inboxes, events.
    let bus = &accounts["BUS"];
    let exported: BTreeSet<String> =
        bus.at(&["exports"]).items().iter().filter_map(|e| e.get("service")).map(|s| s.str().to_owned()).collect();
    let exported_streams: BTreeSet<String> =
        bus.at(&["exports"]).items().iter().filter_map(|e| e.get("stream")).map(|s| s.str().to_owned()).collect();
    let watched = BTreeSet::from(["sessionbus.v1.events.>".to_owned(), "sessionbus.v1.live.>".to_owned()]);
    assert_eq!(exported_streams, watched, "BUS exports the events and the turns' live output");
    for (user, (account, entry)) in &users {
        if account == "BUS" {
            continue;
        }
        for subject in permission(entry, &["publish", "allow"]) {
            assert!(
                subject.starts_with("sessionbus.v1.") || (account == "DASHBOARD" && subject == "$SRV.>"),
                "{user} may publish {subject}"
            );
            assert!(!subject.starts_with("sessionbus.v1.state") && !subject.starts_with("sessionbus.v1.trace"));
        }
        let inbox = if account == "APPS" { format!("_INBOX_{user}.>") } else { "_INBOX.>".to_owned() };
        let mut may_watch = watched.clone();
        may_watch.insert(inbox);
        assert_eq!(
            permission(entry, &["subscribe", "allow"]),
            may_watch,
            "{user} subscribes to its own inbox, the events and live output only"
        );
        let imported = imports(&accounts[account], "service");
        assert!(imported.is_subset(&exported), "{account} imports what BUS does not export");
        assert_eq!(
            imports(&accounts[account], "stream"),
            exported_streams,
            "{account} imports the events and live output"
        );
    }
    let read_only: BTreeSet<String> = [
        "$SRV.>",
        "sessionbus.v1.ping",
        "sessionbus.v1.sessions",
        "sessionbus.v1.session.*.snapshot",
        "sessionbus.v1.session.*.graph_page",
        "sessionbus.v1.session.*.tool_catalog",
        "sessionbus.v1.session.*.tool_state",
        "sessionbus.v1.session.*.turns",
        "sessionbus.v1.session.*.tool_history",
    ]
    .map(String::from)
    .into();
    assert_eq!(imports(&accounts["DASHBOARD"], "service"), read_only, "dashboards import the read-only ops");
    assert_eq!(permission(&users["dashboard"].1, &["publish", "allow"]), read_only);

    // The worker: message rights on the sessionbus streams, never their layout.
    let worker = &users["worker"].1;
    let streams = STREAMS;
    for subject in permission(worker, &["publish", "allow"]) {
        if subject.starts_with("$JS.") && subject != "$JS.API.INFO" {
            let stream = subject.split('.').find(|token| streams.contains(token));
            assert!(stream.is_some(), "worker JetStream permission {subject} names no sessionbus stream");
            for forbidden in [".CREATE.", ".UPDATE.", ".DELETE.", ".PURGE."] {
                assert!(
                    !subject.contains(forbidden) || subject.starts_with("$JS.API.CONSUMER."),
                    "workers never change streams: {subject}"
                );
            }
        }
        if subject.starts_with("$KV.") {
            assert!(subject.starts_with("$KV.SESSIONBUS_"), "worker KV permission {subject}");
        }
    }
    let denied = permission(worker, &["publish", "deny"]);
    for subject in [
        "$JS.API.STREAM.CREATE.>",
        "$JS.API.STREAM.UPDATE.>",
        "$JS.API.STREAM.DELETE.>",
        "$JS.API.STREAM.PURGE.>",
        "sessionbus.v1.events.>",
    ] {
        assert!(denied.contains(subject), "worker publish must deny {subject}");
    }
    assert!(worker.get("permissions").and_then(|p| p.get("allow_responses")).is_none(), "no reply to anything");
}

// ---------------------------------------------------------------------------------------
// The shipped node configs in real nats-servers
// ---------------------------------------------------------------------------------------

/// A loopback port nobody listens on right now (never 4222).
fn free_port() -> u16 {
    sessionbus_testkit::free_port().expect("a free loopback port")
}

/// Runs `scripts/gen-certs DIR 1`: a CA and node1..3 certificates in `dir`.
fn gen_certs(dir: &Path) {
    let output = Command::new(root().join("scripts/gen-certs")).arg(dir).arg("1").output().expect("run gen-certs");
    assert!(output.status.success(), "scripts/gen-certs: {}", String::from_utf8_lossy(&output.stderr));
    for file in ["ca.pem", "node1.pem", "node1-key.pem", "node2.pem", "node2-key.pem", "node3.pem", "node3-key.pem"] {
        assert!(dir.join(file).is_file(), "scripts/gen-certs made no {file}");
    }
}

/// Loopback ports of one node: client, cluster, monitoring.
#[derive(Clone, Copy)]
struct Ports {
    client: u16,
    cluster: u16,
    http: u16,
}

impl Ports {
    fn free() -> Self {
        Self { client: free_port(), cluster: free_port(), http: free_port() }
    }
}

/// Replaces exactly one occurrence of `from` (the shipped value must still be there).
fn replace_once(text: &mut String, from: &str, to: &str) {
    assert_eq!(text.matches(from).count(), 1, "expected {from:?} once in the node config");
    *text = text.replacen(from, to, 1);
}

/// `deploy/nats/node<n>.conf` rewritten to run in `dir`: its ports to `ports` on
/// loopback, its store into `dir`, its certificates from `certs`, and accounts.conf
/// beside it (the include is relative). Everything else as shipped.
fn node_config(n: usize, dir: &Path, certs: &Path, ports: Ports) -> PathBuf {
    let relative = NODE_CONFIGS[n - 1];
    let conf = nats_conf(relative);
    let mut text = read(relative);
    std::fs::create_dir_all(dir).expect("node dir");
    replace_once(
        &mut text,
        &format!("listen: {}", conf.at(&["listen"]).str()),
        &format!("listen: 127.0.0.1:{}", ports.client),
    );
    replace_once(
        &mut text,
        &format!("listen: {}", conf.at(&["cluster", "listen"]).str()),
        &format!("listen: 127.0.0.1:{}", ports.cluster),
    );
    replace_once(&mut text, &format!("http: {}", conf.at(&["http"]).str()), &format!("http: 127.0.0.1:{}", ports.http));
    replace_once(
        &mut text,
        &format!("store_dir: {}", conf.at(&["jetstream", "store_dir"]).str()),
        &format!("store_dir: {:?}", dir.join("data")),
    );
    assert!(text.contains("\"/etc/nats/certs/"), "the node config names its certificates in /etc/nats/certs");
    let text = text.replace("/etc/nats/certs", &certs.display().to_string());
    std::fs::copy(root().join("deploy/nats/accounts.conf"), dir.join("accounts.conf")).expect("copy accounts.conf");
    let path = dir.join(format!("node{n}.conf"));
    std::fs::write(&path, text).expect("write the node config");
    path
}

/// Waits until the log of `server` after `offset` contains `needle`.
fn wait_log(server: &ServerProcess, offset: usize, needle: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if server.log_since(offset).contains(needle) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// GET `path` from the monitoring port, as JSON (None while the port is not up).
fn monitor(port: u16, path: &str) -> Option<serde_json::Value> {
    let (_, body) = monitoring_get(port, path).ok()?;
    serde_json::from_str(&body).ok()
}

/// The servers a node has routes to (by name), and its number of route connections.
fn routes_of(http: u16) -> Option<(BTreeSet<String>, u64)> {
    let routez = monitor(http, "/routez")?;
    let names = routez["routes"]
        .as_array()
        .map(|routes| routes.iter().filter_map(|route| route["remote_name"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    Some((names, routez["num_routes"].as_u64()?))
}

/// Waits until `routes_of(http)` satisfies `done`, returning the last answer.
fn wait_routes(http: u16, done: impl Fn(&BTreeSet<String>, u64) -> bool) -> (BTreeSet<String>, u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = (BTreeSet::new(), 0);
    while Instant::now() < deadline {
        if let Some(routes) = routes_of(http) {
            if done(&routes.0, routes.1) {
                return routes;
            }
            last = routes;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    last
}

#[test]
fn node_configs_load_in_nats_server_with_minted_credentials_and_generated_certificates() {
    let binary = find_nats_server().expect("nats-server is installed");
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = dir.path().join("certs");
    gen_certs(&certs);
    let credentials = Credentials::mint(&["127.0.0.1:1".to_owned()]);
    let test = |config: &Path, env: Option<&BTreeMap<String, String>>| {
        let mut command = Command::new(&binary);
        command.arg("-t").arg("-c").arg(config);
        for variable in server_variables() {
            command.env_remove(variable);
        }
        if let Some(env) = env {
            command.envs(env);
        }
        let output = command.output().expect("nats-server runs");
        (
            output.status.success(),
            format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)),
        )
    };
    for n in 1..=3 {
        let node_dir = dir.path().join(format!("node{n}"));
        let config = node_config(n, &node_dir, &certs, Ports::free());
        let (ok, output) = test(&config, Some(&credentials.server_env));
        assert!(ok, "nats-server -t node{n}.conf: {output}");

        // Without the variables there is no default credential: the server refuses to start.
        let (ok, output) = test(&config, None);
        assert!(!ok, "node{n}.conf must not load without its variables");
        assert!(output.contains("SESSIONBUS_"), "node{n}.conf: {output}");

        // Without the certificates, no routes without TLS either: the server refuses.
        let missing = dir.path().join(format!("no-certs-{n}"));
        let config = node_config(n, &node_dir, &missing, Ports::free());
        let (ok, output) = test(&config, Some(&credentials.server_env));
        assert!(!ok, "node{n}.conf must not load without its certificates: {output}");
        assert!(output.contains(&format!("{}/node{n}.pem", missing.display())), "node{n}.conf: {output}");
    }

    // The certificates fit the route URLs: each compose node's certificate names its
    // service (routes verify the peer's host name), and the one the Kubernetes Secret
    // is made of names every pod behind the chart's headless Service.
    let compose = Compose::load();
    for node in compose_nats_nodes(&compose) {
        let cert = node.conf.at(&["cluster", "tls", "cert_file"]).str();
        let names = subject_alt_names(&certs.join(cert.rsplit('/').next().expect("a file name")));
        assert!(names.contains(&format!("DNS:{},", node.service)), "{cert} lacks the name {}: {names}", node.service);
    }
    let service = text(at(&yaml("deploy/k8s/nats-values.yaml"), &["fullnameOverride"]));
    let names = subject_alt_names(&certs.join("node1.pem"));
    assert!(names.contains(&format!("DNS:*.{service}-headless,")), "node1.pem (the k8s tls.crt): {names}");
}

/// The subject alternative names of a certificate, as openssl prints them (with a
/// trailing comma, so every name ends in one).
fn subject_alt_names(cert: &Path) -> String {
    let output = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(cert)
        .output()
        .expect("run openssl");
    assert!(output.status.success(), "openssl x509 {}: {}", cert.display(), String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8_lossy(&output.stdout);
    format!("{},", text.lines().skip(1).map(str::trim).collect::<Vec<_>>().join(""))
}

/// The sessionbus services as compose and Kubernetes run them, against `urls`: a worker
/// and the exporter with the worker's seed, the readiness probe (`sessionbus status
/// --ping`) with the worker's seed and with every other user's (client applications and
/// dashboards through their accounts, with their inbox prefixes).
async fn services_run_with_their_own_seeds(urls: &str, credentials: &Credentials, admin: &jetstream::Context) {
    let worker_seed = credentials.seed_file("worker").display().to_string();
    let worker = WorkerProcess::start_with(
        urls,
        &WorkerConfig::default().without_setup().with_env("NATS_NKEY", worker_seed.as_str()),
    )
    .await
    .expect("the worker starts with the worker's seed on the layout setup made");
    for (user, prefix) in [("worker", None), ("app_a", Some("_INBOX_app_a")), ("tenant", None), ("dashboard", None)] {
        let mut command = Command::new(sessionbus_binary().expect("the sessionbus binary"));
        command
            .args(["status", "--ping"])
            .env("NATS_URL", urls)
            .env("NATS_NKEY", credentials.seed_file(user))
            .env_remove("NATS_INBOX_PREFIX");
        if let Some(prefix) = prefix {
            command.env("NATS_INBOX_PREFIX", prefix);
        }
        let output = command.output().expect("run sessionbus status --ping");
        assert!(
            output.status.success(),
            "`sessionbus status --ping` as {user}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    // The exporter: its durable consumer on the trace stream, fed by a trace record.
    let dir = tempfile::tempdir().expect("temp dir");
    let stdout = dir.path().join("exporter.out");
    let stderr = dir.path().join("exporter.err");
    let mut exporter = Command::new(sessionbus_binary().expect("the sessionbus binary"))
        .arg("exporter")
        .env("NATS_URL", urls)
        .env("NATS_NKEY", &worker_seed)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://127.0.0.1:{}", free_port()))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr).expect("stderr file"))
        .spawn()
        .expect("start sessionbus exporter");
    let deadline = Instant::now() + Duration::from_secs(30);
    let output = || {
        let out = std::fs::read_to_string(&stdout).unwrap_or_default();
        format!("{out}{}", std::fs::read_to_string(&stderr).unwrap_or_default())
    };
    while !output().contains("sessionbus exporter ready") {
        let exited = exporter.try_wait().expect("exporter status");
        assert!(exited.is_none() && Instant::now() < deadline, "the exporter did not start: {}", output());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first_url = urls.split(',').next().expect("a URL");
    let worker_js = jetstream::new(auth::connect_url(first_url, credentials, "worker", None).await.client);
    let ack = worker_js
        .publish("sessionbus.v1.trace.deploy-test", "{}".into())
        .await
        .expect("publish")
        .await
        .expect("a trace record is stored");
    let trace = admin.get_stream(TRACE_STREAM).await.expect("the trace stream");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let info = trace.consumer_info("sessionbus-exporter").await;
        if let Ok(info) = &info
            && info.delivered.stream_sequence >= ack.sequence
        {
            break;
        }
        assert!(Instant::now() < deadline, "the exporter never read the trace record: {info:?}; {}", output());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = exporter.kill();
    let _ = exporter.wait();
    for (what, log) in [("worker", worker.stderr()), ("exporter", output())] {
        assert!(!log.to_lowercase().contains("permissions violation"), "{what}: {log}");
    }
}

/// The route TLS of a server outside the cluster: (the directory of its certificate
/// `node1.pem`, the directory of the CA `ca.pem` it trusts), or none.
type RouteTls<'a> = Option<(&'a Path, &'a Path)>;

/// A server outside the cluster that tries to join it through `route`.
fn rogue(dir: &Path, name: &str, route: &str, tls: RouteTls, http: u16) -> ServerProcess {
    let tls = tls.map_or_else(String::new, |(cert_dir, ca_dir)| {
        format!(
            "tls {{ cert_file: {:?}, key_file: {:?}, ca_file: {:?}, verify: true }}",
            cert_dir.join("node1.pem"),
            cert_dir.join("node1-key.pem"),
            ca_dir.join("ca.pem")
        )
    });
    let config = format!(
        "server_name: {name}\nlisten: 127.0.0.1:{}\nhttp: 127.0.0.1:{http}\njetstream {{ store_dir: {:?} }}\n\
         cluster {{\n  name: sessionbus\n  listen: 127.0.0.1:{}\n  routes: [ {route:?} ]\n  {tls}\n}}\n",
        free_port(),
        dir.join(name),
        free_port()
    );
    let path = dir.join(format!("{name}.conf"));
    std::fs::write(&path, config).expect("write the rogue config");
    ServerProcess::spawn(&path, dir.join(format!("{name}.log")), BTreeMap::<String, String>::new())
        .expect("start the rogue nats-server")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_of_the_node_configs_routes_over_tls_with_the_password_and_refuses_any_other_route() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = dir.path().join("certs");
    gen_certs(&certs);
    let other_ca = dir.path().join("other-ca");
    gen_certs(&other_ca);
    let ports: Vec<Ports> = (0..3).map(|_| Ports::free()).collect();
    let credentials = Credentials::mint(&ports.iter().map(|p| format!("127.0.0.1:{}", p.cluster)).collect::<Vec<_>>());
    let password = credentials.server_env["SESSIONBUS_ROUTE_PASSWORD"].clone();
    let mut nodes = Vec::new();
    let mut names = Vec::new();
    for (index, node_ports) in ports.iter().enumerate() {
        let n = index + 1;
        let config = node_config(n, &dir.path().join(format!("node{n}")), &certs, *node_ports);
        names.push(nats_conf(NODE_CONFIGS[index]).at(&["server_name"]).str().to_owned());
        let log = dir.path().join(format!("node{n}.log"));
        nodes.push(ServerProcess::spawn(&config, log, credentials.server_env.clone()).expect("start nats-server"));
    }

    // The routes form: every node has routes to both others.
    for (index, node_ports) in ports.iter().enumerate() {
        let others: BTreeSet<_> = names.iter().filter(|name| **name != names[index]).cloned().collect();
        let (peers, _) = wait_routes(node_ports.http, |peers, _| *peers == others);
        assert_eq!(peers, others, "{} routes; log:\n{}", names[index], nodes[index].log_since(0));
    }
    // JetStream over them: the admin lays out the streams with a replica on every node.
    let urls = ports.iter().map(|p| format!("nats://127.0.0.1:{}", p.client)).collect::<Vec<_>>().join(",");
    setup_as_admin(&urls, &credentials, 3);
    let admin = auth::connect_url(&format!("nats://127.0.0.1:{}", ports[0].client), &credentials, "admin", None).await;
    let js = jetstream::new(admin.client.clone());
    for name in [STATE_STREAM, TRACE_STREAM, TOOLS_STREAM] {
        let mut stream = js.get_stream(name).await.expect("the stream exists");
        let info = stream.info().await.expect("stream info");
        assert_eq!(info.config.num_replicas, 3, "{name} replicas");
        let cluster = info.cluster.as_ref().expect("a clustered stream");
        assert_eq!(cluster.replicas.len(), 2, "{name}: a leader and two followers");
    }
    services_run_with_their_own_seeds(&urls, &credentials, &js).await;

    let first = &nodes[0];
    let http = ports[0].http;
    let (peers, route_count) = routes_of(http).expect("routez");
    let unchanged = |what: &str| {
        let now = routes_of(http).expect("routez");
        assert_eq!(now, (peers.clone(), route_count), "{what}: node1's routes changed");
    };

    // A raw connection to the cluster port that knows the route password but speaks no
    // TLS: no PONG, the server hangs up and logs the failed TLS handshake.
    let offset = first.log_len();
    let mut raw = TcpStream::connect(("127.0.0.1", ports[0].cluster)).expect("connect to the cluster port");
    raw.set_read_timeout(Some(Duration::from_secs(15))).expect("timeout");
    // The server may hang up before the write or while it is read (a loaded machine):
    // a reset or a broken pipe is the refusal too.
    let hung_up = |err: &std::io::Error| {
        matches!(err.kind(), std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset)
    };
    let wrote = write!(
        raw,
        "CONNECT {{\"verbose\":false,\"user\":\"route\",\"pass\":\"{password}\",\"name\":\"raw\"}}\r\nPING\r\n"
    );
    let mut received = Vec::new();
    let closed = match wrote {
        Err(err) => {
            assert!(hung_up(&err), "write: {err}");
            true
        }
        Ok(()) => match raw.read_to_end(&mut received) {
            Ok(_) => true,
            Err(err) => hung_up(&err),
        },
    };
    let received = String::from_utf8_lossy(&received);
    assert!(closed, "the server should close a route connection without TLS");
    assert!(!received.contains("PONG") && !received.contains("+OK"), "a raw route was answered: {received}");
    assert!(wait_log(first, offset, "TLS route handshake error"), "{}", first.log_since(offset));
    unchanged("a raw route connection");

    // Servers that try to join: without a certificate, with another CA's certificate,
    // with the CA's certificate and no password or a wrong one. Each is refused, with
    // the reason in node1's log, and has no route at all.
    let cluster = format!("127.0.0.1:{}", ports[0].cluster);
    let with_password = format!("nats-route://route:{password}@{cluster}");
    let no_password = format!("nats-route://{cluster}");
    let wrong_password = format!("nats-route://route:wrong{password}@{cluster}");
    let cases: [(&str, &str, RouteTls, &str); 4] = [
        ("rogue-no-tls", &with_password, None, "TLS route handshake error"),
        ("rogue-other-ca", &with_password, Some((&other_ca, &certs)), "certificate signed by unknown authority"),
        ("rogue-no-password", &no_password, Some((&certs, &certs)), "authentication error"),
        ("rogue-wrong-password", &wrong_password, Some((&certs, &certs)), "authentication error - User \"route\""),
    ];
    for (name, route, tls, reason) in cases {
        let offset = first.log_len();
        let rogue_http = free_port();
        let rogue = rogue(dir.path(), name, route, tls, rogue_http);
        assert!(
            wait_log(first, offset, reason),
            "{name}: expected {reason:?} in node1's log:\n{}",
            first.log_since(offset)
        );
        let (rogue_peers, rogue_routes) = wait_routes(rogue_http, |_, _| true);
        assert!(rogue_peers.is_empty() && rogue_routes == 0, "{name} has routes: {rogue_peers:?} ({rogue_routes})");
        unchanged(name);
        drop(rogue);
    }
}

// ---------------------------------------------------------------------------------------
// Limits of deploy/nats/accounts.conf in a real nats-server
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_connection_cap_and_per_connection_subscription_cap_hold_with_clear_errors() {
    let (server, credentials) = start_server();
    let cap: usize = accounts()["DASHBOARD"].at(&["limits", "max_connections"]).str().parse().expect("a number");
    let per_connection: usize =
        nats_conf("deploy/nats/accounts.conf").at(&["max_subscriptions"]).str().parse().expect("a number");
    let log_offset = std::fs::read_to_string(server.log_path()).map(|text| text.len()).unwrap_or(0);

    // The DASHBOARD account: `cap` connections, and not one more.
    let mut open = Vec::new();
    for _ in 0..cap {
        open.push(connect(&server, &credentials, "dashboard", None).await);
    }
    let refused = |credentials: &Credentials| {
        let (options, _) = auth::options(credentials, "dashboard");
        options.max_reconnects(Some(1)).connect(server.url())
    };
    let error = timeout(WAIT, refused(&credentials))
        .await
        .expect("refused in time")
        .expect_err("a connection over the account's cap must be refused");
    assert!(error.to_string().contains("maximum account active connections exceeded"), "unclear error: {error}");
    let log = std::fs::read_to_string(server.log_path()).expect("server log");
    assert!(log[log_offset..].contains("maximum account active connections exceeded"), "{}", &log[log_offset..]);

    // Other accounts are not affected, and a freed slot can be used again.
    let mut app = connect(&server, &credentials, "app_a", Some("_INBOX_app_a")).await;
    drop(open.pop());
    let deadline = Instant::now() + WAIT;
    loop {
        match timeout(WAIT, refused(&credentials)).await.expect("in time") {
            Ok(client) => {
                drop(client);
                break;
            }
            Err(error) if Instant::now() < deadline => {
                assert!(error.to_string().contains("maximum account active connections exceeded"), "{error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("the freed connection slot was never given back: {error}"),
        }
    }
    drop(open);

    // One connection: `per_connection` subscriptions, and not one more. The server
    // refuses the extra subscription with the error and keeps the connection (and its
    // other subscriptions) open.
    setup_as_admin(&server.url(), &credentials, 1);
    let worker = connect(&server, &credentials, "worker", None).await;
    let mut subscribers = Vec::with_capacity(per_connection);
    for index in 0..per_connection {
        let subject = format!("sessionbus.v1.events.limit{index}.meta");
        subscribers.push(app.client.subscribe(subject).await.expect("subscribe"));
    }
    app.client.flush().await.expect("flush");
    tokio::time::sleep(QUIET).await;
    app.assert_no_violation("subscriptions within the cap");
    let mut over = app.client.subscribe("sessionbus.v1.events.over.meta").await.expect("subscribe is queued");
    app.client.flush().await.expect("flush");
    let error = timeout(WAIT, app.errors.recv()).await.expect("an error in time").expect("a server error");
    assert_eq!(error, "nats: maximum subscriptions exceeded", "unclear error");
    let log = std::fs::read_to_string(server.log_path()).expect("server log");
    assert!(log[log_offset..].contains("\"APPS/nkey:"), "the log names the account: {}", &log[log_offset..]);
    assert!(log[log_offset..].contains("maximum subscriptions exceeded"), "{}", &log[log_offset..]);
    let worker_js = jetstream::new(worker.client.clone());
    for session in ["over", "limit0"] {
        let subject = format!("sessionbus.v1.state.{session}.meta");
        worker_js.publish(subject, "{}".into()).await.expect("publish").await.expect("stored");
    }
    let event = timeout(WAIT, subscribers[0].next()).await.expect("an event in time").expect("an event");
    assert_eq!(event.subject.as_str(), "sessionbus.v1.events.limit0.meta", "a subscription within the cap works");
    assert_silent(&mut over, "the subscription over the cap").await;
    assert_eq!(app.client.connection_state(), async_nats::connection::State::Connected);
    drop(subscribers);
}

// ---------------------------------------------------------------------------------------
// deploy/nats/accounts.conf in a real nats-server: nothing but the bus's operations
// ---------------------------------------------------------------------------------------

/// How long a refused subscription is watched for messages that must not arrive.
const QUIET: Duration = Duration::from_millis(500);

/// The streams and buckets of the bus.
const STREAMS: [&str; 5] = [STATE_STREAM, INDEX_STREAM, TRACE_STREAM, TOOLS_STREAM, SPANS_STREAM];

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
}

/// Nothing arrives on a refused subscription (the stream of messages may also end).
async fn assert_silent(subscriber: &mut async_nats::Subscriber, what: &str) {
    if let Ok(Some(message)) = timeout(QUIET, subscriber.next()).await {
        panic!("{what}: a refused subscription received a message on {}", message.subject);
    }
}

/// Messages, bytes, first and last sequence of every stream of the bus, read by the admin.
async fn stream_state(js: &jetstream::Context) -> BTreeMap<&'static str, (u64, u64, u64, u64)> {
    let mut state = BTreeMap::new();
    for name in STREAMS {
        let mut stream = timeout(WAIT, js.get_stream(name)).await.expect("stream info in time").expect("stream exists");
        let info = timeout(WAIT, stream.info()).await.expect("stream info in time").expect("stream info");
        let s = &info.state;
        state.insert(name, (s.messages, s.bytes, s.first_sequence, s.last_sequence));
    }
    state
}

/// A server running accounts.conf with the layout made by `sessionbus setup` as the
/// admin, one message in the state, trace and tools streams written by the worker, and
/// a stand-in worker serving the request subjects and the `sessionbus` micro service.
struct Bus {
    server: sessionbus_testkit::NatsServer,
    credentials: Credentials,
    js: jetstream::Context,
    worker: Conn,
    /// The reply subject of every request the stand-in worker received.
    replies: mpsc::UnboundedReceiver<String>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _service: async_nats::service::Service,
}

impl Bus {
    async fn start(progress: usize) -> Self {
        let (server, credentials) = start_server();
        setup_as_admin(&server.url(), &credentials, 1);
        let admin = connect(&server, &credentials, "admin", None).await;
        let js = jetstream::new(admin.client.clone());
        let worker = connect(&server, &credentials, "worker", None).await;
        let worker_js = jetstream::new(worker.client.clone());
        for subject in ["sessionbus.v1.state.s1.meta", "sessionbus.v1.trace.s1", "$KV.SESSIONBUS_TOOLS.s1"] {
            worker_js
                .publish(subject, "{\"seed\":true}".into())
                .await
                .expect("publish")
                .await
                .unwrap_or_else(|err| panic!("the worker writes {subject}: {err}"));
        }
        let (tx, replies) = mpsc::unbounded_channel();
        let tasks = serve(&worker.client, progress, tx).await;
        let service = async_nats::service::ServiceExt::service_builder(&worker.client)
            .start("sessionbus", "0.1.0")
            .await
            .expect("the micro service starts");
        timeout(WAIT, worker_js.query_account()).await.expect("in time").expect("round trip");
        Self { server, credentials, js, worker, replies, tasks, _service: service }
    }

    async fn connect(&self, user: &str, inbox_prefix: Option<&str>) -> Conn {
        connect(&self.server, &self.credentials, user, inbox_prefix).await
    }

    async fn state(&self) -> BTreeMap<&'static str, (u64, u64, u64, u64)> {
        stream_state(&self.js).await
    }

    /// Sends a request on `subject` with the reply subject `reply` as `caller`, and
    /// shows that the worker received it with a reply subject the server made (`_R_.`),
    /// never `reply`, and that the streams are unchanged after the worker answered.
    async fn redirected(&mut self, caller: &mut Conn, subject: &str, reply: &str) {
        let before = self.state().await;
        while self.replies.try_recv().is_ok() {}
        caller.drain();
        caller.client.publish_with_reply(subject.to_owned(), reply.to_owned(), "{}".into()).await.expect("publish");
        caller.client.flush().await.expect("flush");
        let seen = timeout(WAIT, self.replies.recv()).await.expect("the worker got the request").expect("a reply");
        assert!(seen.starts_with("_R_."), "{subject} with reply {reply} reached the worker with reply {seen}");
        self.worker.client.flush().await.expect("the worker's answers are sent");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(before, self.state().await, "the streams changed after a request with reply subject {reply}");
        assert!(self.js.get_stream(STATE_STREAM).await.is_ok(), "the state stream is gone");
        caller.assert_no_violation(&format!("a request on {subject}"));
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A stand-in worker: `sessionbus.v1.ping` answers once; a call on
/// `sessionbus.v1.session.<sid>.<op>` answers with `progress` progress messages and then
/// the final reply. Like a careless worker, it answers any reply subject it is given,
/// and reports each one to `seen`.
async fn serve(
    worker: &Client,
    progress: usize,
    seen: mpsc::UnboundedSender<String>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut ping = worker.queue_subscribe("sessionbus.v1.ping", "sessionbus".to_owned()).await.expect("sub ping");
    let mut calls =
        worker.queue_subscribe("sessionbus.v1.session.*.*", "sessionbus".to_owned()).await.expect("sub calls");
    // A round trip through the server, so both subscriptions are in place.
    timeout(WAIT, jetstream::new(worker.clone()).query_account()).await.expect("in time").expect("account info");

    let ping_client = worker.clone();
    let ping_seen = seen.clone();
    let ping_task = tokio::spawn(async move {
        while let Some(message) = ping.next().await {
            if let Some(reply) = message.reply {
                let _ = ping_seen.send(reply.to_string());
                let _ = ping_client.publish(reply, "{\"worker_id\":\"test\"}".into()).await;
                let _ = ping_client.flush().await;
            }
        }
    });
    let call_client = worker.clone();
    let call_task = tokio::spawn(async move {
        while let Some(message) = calls.next().await {
            let Some(reply) = message.reply else { continue };
            let _ = seen.send(reply.to_string());
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

/// Every subject that names stored state directly: the streams' and bucket's subjects,
/// the JetStream API on them, forged events, object stores, other inboxes.
const DIRECT_SUBJECTS: [&str; 21] = [
    "$KV.SESSIONBUS_TOOLS.s1",
    "$KV.SESSIONBUS_TOOLS.x",
    "$KV.SESSIONBUS_SPANS.x",
    "sessionbus.v1.state.x.meta",
    "sessionbus.v1.state.s1.lease",
    "sessionbus.v1.trace.x",
    "sessionbus.v1.events.s1.meta",
    "$JS.API.INFO",
    "$JS.API.STREAM.INFO.SESSIONBUS_STATE",
    "$JS.API.STREAM.CREATE.OTHER",
    "$JS.API.STREAM.UPDATE.SESSIONBUS_STATE",
    "$JS.API.STREAM.PURGE.SESSIONBUS_STATE",
    "$JS.API.STREAM.DELETE.SESSIONBUS_STATE",
    "$JS.API.STREAM.DELETE.KV_SESSIONBUS_TOOLS",
    "$JS.API.STREAM.MSG.GET.SESSIONBUS_STATE",
    "$JS.API.STREAM.MSG.DELETE.SESSIONBUS_STATE",
    "$JS.API.DIRECT.GET.KV_SESSIONBUS_TOOLS.$KV.SESSIONBUS_TOOLS.s1",
    "$JS.API.CONSUMER.CREATE.SESSIONBUS_STATE",
    "$O.SESSIONBUS.C.x",
    "_INBOX.someone-else",
    "_R_.someone-else",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_apps_and_tenants_reach_only_the_bus_operations_and_their_reply_subjects_never_reach_bus() {
    let mut bus = Bus::start(3).await;

    for (user, prefix) in [("app_a", Some("_INBOX_app_a")), ("tenant", None)] {
        let mut client = bus.connect(user, prefix).await;

        // Allowed: a call through the bus (replies on the caller's own inbox), a turn
        // with its progress messages, and the events.
        let mut events = client.client.subscribe("sessionbus.v1.events.>").await.expect("subscribe events");
        let pong = timeout(WAIT, client.client.request("sessionbus.v1.ping", "{}".into()))
            .await
            .expect("ping answered in time")
            .expect("ping answered");
        assert_eq!(pong.payload.as_ref(), b"{\"worker_id\":\"test\"}", "{user}");
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Sessionbus-Progress", "1");
        let inbox = client.client.new_inbox();
        let mut replies = client.client.subscribe(inbox.clone()).await.expect("own inbox");
        client
            .client
            .publish_with_reply_and_headers("sessionbus.v1.session.s1.start_turn", inbox, headers, "{}".into())
            .await
            .expect("call");
        for step in 0..3 {
            let message = timeout(WAIT, replies.next()).await.expect("progress in time").expect("progress");
            assert_eq!(message.payload.as_ref(), format!("{step}").as_bytes(), "{user}: progress {step}");
        }
        let last = timeout(WAIT, replies.next()).await.expect("the answer in time").expect("the answer");
        assert_eq!(last.payload.as_ref(), b"final");
        jetstream::new(bus.worker.client.clone())
            .publish("sessionbus.v1.state.s1.graph", "{\"nodes\":[]}".into())
            .await
            .expect("publish")
            .await
            .expect("the worker appends");
        let event = timeout(WAIT, events.next()).await.expect("an event in time").expect("an event");
        assert_eq!(event.subject.as_str(), "sessionbus.v1.events.s1.graph", "{user}");
        // A real event is a JetStream republish: it names the stream it comes from.
        let stream = event.headers.as_ref().and_then(|headers| headers.get("Nats-Stream")).map(|v| v.to_string());
        assert_eq!(stream.as_deref(), Some(STATE_STREAM), "{user}: the event's Nats-Stream header");
        client.assert_no_violation("calls, turns and events");

        // Refused: every subject that names stored state, each leaving the streams as
        // they were. (These subjects of the caller's own account are not BUS's.)
        for subject in DIRECT_SUBJECTS {
            let before = bus.state().await;
            client.refused_publish(subject).await;
            assert_eq!(before, bus.state().await, "the streams changed after a refused {user} publish to {subject}");
        }
        let answer = timeout(Duration::from_secs(2), client.client.request("$JS.API.INFO", "".into())).await;
        assert!(!matches!(answer, Ok(Ok(_))), "{user} reached a JetStream API");

        // Reply subjects naming BUS's stored state: the server replaces them on the way
        // into BUS, so the worker's answers land in the caller's own account.
        for (subject, reply) in [
            ("sessionbus.v1.session.s1.close", "$JS.API.STREAM.DELETE.SESSIONBUS_STATE"),
            ("sessionbus.v1.session.s1.close", "$JS.API.STREAM.DELETE.SESSIONBUS_TRACE"),
            ("sessionbus.v1.session.s1.start_turn", "$JS.API.STREAM.PURGE.KV_SESSIONBUS_TOOLS"),
            ("sessionbus.v1.ping", "$JS.API.STREAM.PURGE.SESSIONBUS_STATE"),
            ("sessionbus.v1.ping", "sessionbus.v1.state.s1.meta"),
            ("sessionbus.v1.ping", "$KV.SESSIONBUS_TOOLS.s1"),
            ("sessionbus.v1.session.s1.snapshot", "sessionbus.v1.events.s1.meta"),
        ] {
            bus.redirected(&mut client, subject, reply).await;
        }

        // Refused subscriptions: request subjects, others' inboxes, the stored state.
        let mut refused = Vec::new();
        let mut subjects = vec![
            "sessionbus.v1.session.*.*",
            "sessionbus.v1.session.>",
            "sessionbus.v1.create",
            "_INBOX_app_b.>",
            "_R_.>",
            "sessionbus.v1.state.>",
            "sessionbus.v1.trace.>",
            "$KV.SESSIONBUS_TOOLS.>",
            "$JS.API.>",
            "$SRV.>",
        ];
        if prefix.is_some() {
            subjects.push("_INBOX.>");
        }
        for subject in subjects {
            refused.push((subject, client.refused_subscription(subject).await));
        }
        // Traffic on each of them: app_b's calls, stream writes, a status query.
        let app_b = bus.connect("app_b", Some("_INBOX_app_b")).await;
        let answer = timeout(WAIT, app_b.client.request("sessionbus.v1.session.s1.snapshot", "{}".into())).await;
        assert!(matches!(answer, Ok(Ok(_))), "app_b's call is answered: {answer:?}");
        let worker_js = jetstream::new(bus.worker.client.clone());
        for subject in ["sessionbus.v1.state.s1.meta", "sessionbus.v1.trace.s1", "$KV.SESSIONBUS_TOOLS.s1"] {
            worker_js.publish(subject, "{}".into()).await.expect("publish").await.expect("stored");
        }
        let dashboard = bus.connect("dashboard", None).await;
        let status = timeout(WAIT, dashboard.client.request("$SRV.PING.sessionbus", "".into())).await;
        assert!(matches!(status, Ok(Ok(_))), "the dashboard's $SRV.PING is answered: {status:?}");
        for (subject, subscriber) in &mut refused {
            assert_silent(subscriber, &format!("{user} on {subject}")).await;
        }
    }
    bus.worker.assert_no_violation("the worker answering through the accounts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_serves_long_calls_and_writes_messages_but_only_admin_can_make_or_change_the_layout() {
    // On a server without the layout, the worker's seed cannot make it; the admin's can.
    let (server, credentials) = start_server();
    let url = server.url();
    let output = Command::new(sessionbus_binary().expect("the sessionbus binary"))
        .args(["setup", "--wait-secs", "2", "--replicas", "1"])
        .env("NATS_URL", &url)
        .env("NATS_NKEY", credentials.seed_file("worker"))
        .env("RUST_LOG", "warn")
        .output()
        .expect("run sessionbus setup");
    assert!(!output.status.success(), "the worker made the layout: {}", String::from_utf8_lossy(&output.stdout));
    let admin = connect(&server, &credentials, "admin", None).await;
    let names: Vec<String> =
        jetstream::new(admin.client.clone()).stream_names().collect::<Vec<_>>().await.into_iter().flatten().collect();
    assert!(names.is_empty(), "streams made with the worker's seed: {names:?}");
    setup_as_admin(&url, &credentials, 1);
    let names: BTreeSet<String> =
        jetstream::new(admin.client.clone()).stream_names().collect::<Vec<_>>().await.into_iter().flatten().collect();
    assert_eq!(names, STREAMS.map(String::from).into(), "the admin made the layout");
    drop((admin, server));

    let progress = 50;
    let mut bus = Bus::start(progress).await;
    let mut client = bus.connect("app_a", Some("_INBOX_app_a")).await;

    // A long call across accounts: many progress messages and then the final reply, on
    // the client's inbox (the export streams a turn's replies).
    let inbox = client.client.new_inbox();
    assert!(inbox.starts_with("_INBOX_app_a."), "{inbox}");
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
    bus.worker.assert_no_violation("serving a long call");

    // JetStream as a worker uses it: leader reads, direct gets, KV, a durable consumer.
    let js = jetstream::new(bus.worker.client.clone());
    let state = js.get_stream(STATE_STREAM).await.expect("stream info");
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
    let trace = js.get_stream(TRACE_STREAM).await.expect("trace stream");
    trace.get_last_raw_message_by_subject("sessionbus.v1.trace.s1").await.expect("trace read");
    bus.worker.assert_no_violation("JetStream use");

    // The layout: no creating, updating, deleting or purging a stream, nothing outside
    // sessionbus, no forged events. Each refused, the streams unchanged.
    for subject in [
        "$JS.API.STREAM.CREATE.OTHER",
        "$JS.API.STREAM.CREATE.SESSIONBUS_STATE",
        "$JS.API.STREAM.UPDATE.SESSIONBUS_STATE",
        "$JS.API.STREAM.UPDATE.KV_SESSIONBUS_TOOLS",
        "$JS.API.STREAM.DELETE.SESSIONBUS_STATE",
        "$JS.API.STREAM.DELETE.SESSIONBUS_TRACE",
        "$JS.API.STREAM.DELETE.KV_SESSIONBUS_TOOLS",
        "$JS.API.STREAM.DELETE.KV_SESSIONBUS_SPANS",
        "$JS.API.STREAM.PURGE.SESSIONBUS_STATE",
        "$JS.API.STREAM.PURGE.SESSIONBUS_TRACE",
        "$JS.API.STREAM.PURGE.KV_SESSIONBUS_TOOLS",
        "$JS.API.STREAM.MSG.DELETE.SESSIONBUS_STATE",
        "$JS.API.STREAM.INFO.OTHER",
        "$KV.OTHER.x",
        "$O.SESSIONBUS.C.x",
        "sessionbus.v1.events.s1.meta",
    ] {
        let before = bus.state().await;
        bus.worker.refused_publish(subject).await;
        assert_eq!(before, bus.state().await, "the streams changed after a refused worker publish to {subject}");
    }
    let before = bus.state().await;
    let short = jetstream::ContextBuilder::new().timeout(Duration::from_secs(2)).build(bus.worker.client.clone());
    let deleted = timeout(WAIT, short.delete_stream(STATE_STREAM)).await.expect("an answer in time");
    assert!(deleted.is_err(), "the worker deleted the state stream");
    assert_eq!(before, bus.state().await);
    assert_eq!(
        js.get_stream(STATE_STREAM).await.expect("still there").cached_info().config.name,
        STATE_STREAM,
        "the state stream is still there"
    );

    // Another account's inboxes do not exist in BUS, and may not be subscribed to.
    let mut other_inbox = bus.worker.refused_subscription("_INBOX_app_a.>").await;
    client.client.request("sessionbus.v1.ping", "{}".into()).await.expect("ping");
    assert_silent(&mut other_inbox, "worker reading client inboxes").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_watches_and_reads_through_the_bus_but_never_writes() {
    let mut bus = Bus::start(0).await;
    let mut dashboard = bus.connect("dashboard", None).await;

    // Allowed: events, $SRV status queries (several answers), the read-only ops.
    let mut events = dashboard.client.subscribe("sessionbus.v1.events.>").await.expect("events");
    let ping = timeout(WAIT, dashboard.client.request("$SRV.PING.sessionbus", "".into()))
        .await
        .expect("$SRV.PING answered in time")
        .expect("$SRV.PING answered");
    assert!(String::from_utf8_lossy(&ping.payload).contains("\"name\":\"sessionbus\""));
    for op in ["snapshot", "graph_page", "tool_catalog", "tool_state", "turns", "tool_history"] {
        let answer = timeout(WAIT, dashboard.client.request(format!("sessionbus.v1.session.s1.{op}"), "{}".into()))
            .await
            .unwrap_or_else(|_| panic!("{op} answered in time"))
            .unwrap_or_else(|err| panic!("{op} answered: {err}"));
        assert_eq!(answer.payload.as_ref(), b"final", "{op}");
    }
    jetstream::new(bus.worker.client.clone())
        .publish("sessionbus.v1.state.s1.meta", "{}".into())
        .await
        .expect("publish")
        .await
        .expect("stored");
    let event = timeout(WAIT, events.next()).await.expect("an event in time").expect("an event");
    assert_eq!(event.subject.as_str(), "sessionbus.v1.events.s1.meta");
    dashboard.assert_no_violation("watching and reading");

    // Refused: every write op, every stored subject, every JetStream API.
    let mut subjects = vec![
        "sessionbus.v1.create",
        "sessionbus.v1.session.s1.close",
        "sessionbus.v1.session.s1.append_nodes",
        "sessionbus.v1.session.s1.start_turn",
        "sessionbus.v1.session.s1.cancel_turn",
        "sessionbus.v1.session.s1.apply_tool_state",
        "sessionbus.v1.session.s1.set_tool_membership",
        "sessionbus.v1.session.s1.trace",
        "sessionbus.v1.live.s1",
        "$JS.API.DIRECT.GET.SESSIONBUS_STATE.sessionbus.v1.state.s1.meta",
    ];
    subjects.extend(DIRECT_SUBJECTS);
    for subject in subjects {
        let before = bus.state().await;
        dashboard.refused_publish(subject).await;
        assert_eq!(before, bus.state().await, "the streams changed after a refused dashboard publish to {subject}");
    }

    // Reply subjects naming stored state: replaced on the way into BUS.
    for (subject, reply) in [
        ("sessionbus.v1.session.s1.snapshot", "$JS.API.STREAM.DELETE.SESSIONBUS_STATE"),
        ("sessionbus.v1.session.s1.tool_state", "$KV.SESSIONBUS_TOOLS.s1"),
        ("sessionbus.v1.ping", "sessionbus.v1.state.s1.meta"),
    ] {
        bus.redirected(&mut dashboard, subject, reply).await;
    }
    // The micro service answers $SRV requests to any reply subject; across the import
    // that subject is the server's, and the streams stay as they were.
    for reply in ["$JS.API.STREAM.PURGE.SESSIONBUS_STATE", "sessionbus.v1.state.s1.meta", "$KV.SESSIONBUS_TOOLS.s1"] {
        let before = bus.state().await;
        dashboard.client.publish_with_reply("$SRV.PING", reply.to_owned(), "".into()).await.expect("publish");
        dashboard
            .client
            .publish_with_reply("$SRV.INFO.sessionbus", reply.to_owned(), "".into())
            .await
            .expect("publish");
        dashboard.client.flush().await.expect("flush");
        let after_ping = timeout(WAIT, dashboard.client.request("$SRV.PING.sessionbus", "".into())).await;
        assert!(matches!(after_ping, Ok(Ok(_))), "$SRV.PING after {reply}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(before, bus.state().await, "the streams changed after a $SRV request with reply {reply}");
        dashboard.assert_no_violation("$SRV requests");
    }

    let mut refused = Vec::new();
    for subject in [
        "_INBOX_app_a.>",
        "_R_.>",
        "sessionbus.v1.session.*.*",
        "sessionbus.v1.state.>",
        "sessionbus.v1.trace.>",
        "$KV.SESSIONBUS_TOOLS.>",
        "$SRV.>",
    ] {
        refused.push((subject, dashboard.refused_subscription(subject).await));
    }
    let app = bus.connect("app_a", Some("_INBOX_app_a")).await;
    timeout(WAIT, app.client.request("sessionbus.v1.session.s1.snapshot", "{}".into()))
        .await
        .expect("in time")
        .expect("app_a's call is answered");
    let worker_js = jetstream::new(bus.worker.client.clone());
    worker_js.publish("sessionbus.v1.trace.s1", "{}".into()).await.expect("publish").await.expect("stored");
    worker_js.publish("$KV.SESSIONBUS_TOOLS.s1", "{}".into()).await.expect("publish").await.expect("stored");
    for (subject, subscriber) in &mut refused {
        assert_silent(subscriber, subject).await;
    }

    // Keys the server does not know, and passwords, are refused at connect.
    let strangers = Credentials::mint(&[]);
    let (options, _) = auth::options(&strangers, "dashboard");
    let unknown = options.max_reconnects(Some(1)).connect(bus.server.url());
    assert!(matches!(timeout(WAIT, unknown).await, Ok(Err(_))), "an unknown nkey must be refused");
    let password = ConnectOptions::with_user_and_password("dashboard".into(), "dashboard".into())
        .max_reconnects(Some(1))
        .connect(bus.server.url());
    assert!(matches!(timeout(WAIT, password).await, Ok(Err(_))), "a user and password must be refused");
}
