//! The stores the bench compares, the durability settings it runs them under, and
//! [`Deployment`]: one store running (its server started when it has one) with the
//! durable peers lash's builder wants beside it.

use std::sync::Arc;

use lash_core::{AttachmentStore, ProcessExecutionEnvStore, SessionStoreFactory};
use sessionbus_lash::store::{
    JetStreamAttachmentStore, JetStreamProcessEnvStore, JetStreamStoreFactory, StoreBackend, StoreBackendConfig,
    ensure_store_layout,
};
use sessionbus_launch::{NatsCluster, NatsServer, ServerConfig};

use crate::error::BenchError;
use crate::postgres::Postgres;

/// A store the bench runs the workload on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StoreKind {
    /// lash's `InMemorySessionStoreFactory` (no durability: the ceiling).
    Memory,
    /// lash-sqlite-store: one SQLite database per session in a temporary directory.
    Sqlite,
    /// lash-postgres-store on a PostgreSQL the bench starts.
    Postgres,
    /// This crate's JetStream store on one nats-server (streams R1).
    JetstreamR1,
    /// The JetStream store on a 3-node cluster (streams R3).
    JetstreamR3,
}

impl StoreKind {
    /// Every store, in the order the table lists them.
    pub const ALL: [StoreKind; 5] = [Self::Memory, Self::Sqlite, Self::Postgres, Self::JetstreamR1, Self::JetstreamR3];

    /// The store's name on the command line and in the table.
    pub fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
            Self::JetstreamR1 => "jetstream-r1",
            Self::JetstreamR3 => "jetstream-r3",
        }
    }

    /// The store called `name` (`jetstream` is `jetstream-r1`).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "jetstream" => Some(Self::JetstreamR1),
            _ => Self::ALL.into_iter().find(|kind| kind.name() == name),
        }
    }
}

/// The durability a run asks of every store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Durability {
    /// Each system as it ships.
    Defaults,
    /// An fsync on every commit before it is acknowledged.
    Fsync,
}

impl Durability {
    /// Both settings, in the order the table lists them.
    pub const ALL: [Durability; 2] = [Self::Defaults, Self::Fsync];

    /// The setting's name on the command line and in the table.
    pub fn name(self) -> &'static str {
        match self {
            Self::Defaults => "defaults",
            Self::Fsync => "fsync",
        }
    }

    /// The setting called `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|setting| setting.name() == name)
    }
}

/// What `store` runs with under `durability`: `Ok` with the configuration the bench
/// sets (in words, for the table), or `Err` with why the setting does not exist for it.
pub fn configuration(store: StoreKind, durability: Durability) -> Result<&'static str, &'static str> {
    match (store, durability) {
        (StoreKind::Memory, Durability::Defaults) => Ok("in memory, nothing written"),
        (StoreKind::Memory, Durability::Fsync) => Err("lash's in-memory store writes nothing to fsync"),
        (StoreKind::Sqlite, Durability::Defaults) => Ok("WAL, synchronous=NORMAL (set by lash-sqlite-store)"),
        (StoreKind::Sqlite, Durability::Fsync) => Err(
            "lash-sqlite-store sets synchronous=NORMAL on every connection it opens (WAL is fsynced at checkpoints, \
             not per commit) and offers no option to change it",
        ),
        (StoreKind::Postgres, Durability::Defaults) => Ok("initdb defaults (fsync=on, synchronous_commit=on)"),
        (StoreKind::Postgres, Durability::Fsync) => Ok("fsync=on, synchronous_commit=on (set explicitly)"),
        (StoreKind::JetstreamR1 | StoreKind::JetstreamR3, Durability::Defaults) => {
            Ok("sync_interval default (fsync every 2 min)")
        }
        (StoreKind::JetstreamR1 | StoreKind::JetstreamR3, Durability::Fsync) => Ok("sync_interval: always"),
    }
}

/// PostgreSQL's server settings under `durability` (none: the defaults).
pub fn postgres_settings(durability: Durability) -> &'static [(&'static str, &'static str)] {
    match durability {
        Durability::Defaults => &[],
        Durability::Fsync => &[("fsync", "on"), ("synchronous_commit", "on")],
    }
}

/// nats-server's JetStream `sync_interval` under `durability` (none: the default).
pub fn nats_sync_interval(durability: Durability) -> Option<&'static str> {
    match durability {
        Durability::Defaults => None,
        Durability::Fsync => Some("always"),
    }
}

/// What a deployment keeps running (and stops on drop).
#[allow(dead_code)] // Held for their `Drop`: the servers stop, the directories go.
enum Running {
    Nothing,
    Directory(tempfile::TempDir),
    Postgres(Postgres, tempfile::TempDir),
    Nats(Box<NatsServer>),
    Cluster(NatsCluster),
}

/// One store, running, with the peers a `LashCore` needs beside it.
pub struct Deployment {
    /// The store's sessions.
    pub factory: Arc<dyn SessionStoreFactory>,
    /// Its attachment store (durable for every durable store).
    pub attachments: Arc<dyn AttachmentStore>,
    /// Its process-env store (durable for every durable store).
    pub process_env: Arc<dyn ProcessExecutionEnvStore>,
    /// The JetStream it writes to, for the JetStream store.
    nats: Option<async_nats::jetstream::Context>,
    _running: Running,
}

impl Deployment {
    /// Starts `store` (and its server) configured for `durability`.
    pub async fn start(store: StoreKind, durability: Durability) -> Result<Self, BenchError> {
        let failed = |message: String| BenchError::Store { store: store.name().to_owned(), message };
        match store {
            StoreKind::Memory => Ok(Self {
                factory: Arc::new(lash_core::InMemorySessionStoreFactory::new()),
                attachments: Arc::new(lash_core::InMemoryAttachmentStore::new()),
                process_env: Arc::new(lash_core::InMemoryProcessExecutionEnvStore::default()),
                nats: None,
                _running: Running::Nothing,
            }),
            StoreKind::Sqlite => {
                let dir = temp_dir("sqlite")?;
                let process_env = lash_sqlite_store::Store::open(&dir.path().join("process-env.db"))
                    .await
                    .map_err(|err| failed(format!("opening its process-env database failed: {err}")))?;
                Ok(Self {
                    factory: Arc::new(lash_sqlite_store::SqliteSessionStoreFactory::new(dir.path().join("sessions"))),
                    attachments: Arc::new(lash_core::FileAttachmentStore::new(dir.path().join("attachments"))),
                    process_env: Arc::new(process_env),
                    nats: None,
                    _running: Running::Directory(dir),
                })
            }
            StoreKind::Postgres => {
                let server = Postgres::start(postgres_settings(durability))?;
                let storage = lash_postgres_store::PostgresStorage::connect(&server.url())
                    .await
                    .map_err(|err| failed(format!("connecting to {} failed: {err}", server.url())))?;
                check_postgres_settings(storage.pool(), postgres_settings(durability)).await.map_err(failed)?;
                let dir = temp_dir("postgres-attachments")?;
                Ok(Self {
                    factory: Arc::new(storage.session_store_factory()),
                    attachments: Arc::new(lash_core::FileAttachmentStore::new(dir.path().to_owned())),
                    process_env: Arc::new(storage.process_env_store()),
                    nats: None,
                    _running: Running::Postgres(server, dir),
                })
            }
            StoreKind::JetstreamR1 | StoreKind::JetstreamR3 => {
                let mut config = ServerConfig::default();
                if let Some(interval) = nats_sync_interval(durability) {
                    config = config.with_sync_interval(interval);
                }
                let (url, replicas, running) = if store == StoreKind::JetstreamR1 {
                    let server = NatsServer::start_with(config).map_err(|err| BenchError::Nats(err.to_string()))?;
                    (server.url(), 1, Running::Nats(Box::new(server)))
                } else {
                    let cluster =
                        NatsCluster::start_with(config).await.map_err(|err| BenchError::Nats(err.to_string()))?;
                    (cluster.nats_url(), 3, Running::Cluster(cluster))
                };
                let context = ensure_layouts(&url, replicas).await.map_err(failed)?;
                let backend = StoreBackend::connect(StoreBackendConfig::new(url))
                    .map_err(|err| failed(format!("connecting its backend failed: {err}")))?;
                let clock: Arc<dyn lash_core::Clock> = Arc::new(lash_core::SystemClock);
                Ok(Self {
                    factory: Arc::new(JetStreamStoreFactory::new(backend.clone(), clock)),
                    attachments: Arc::new(JetStreamAttachmentStore::new(backend.clone())),
                    process_env: Arc::new(JetStreamProcessEnvStore::new(backend)),
                    nats: Some(context),
                    _running: running,
                })
            }
        }
    }
}

impl Deployment {
    /// For the JetStream store: how many messages were ever written to its server's
    /// streams (the sum of their last sequences: log records, blob chunks and metadata,
    /// KV entries). `None` for the other stores.
    pub async fn stream_writes(&self) -> Result<Option<u64>, BenchError> {
        use futures::TryStreamExt as _;
        let Some(context) = &self.nats else { return Ok(None) };
        let failed = |err: String| BenchError::Nats(format!("reading the streams' state failed: {err}"));
        let streams: Vec<_> = context.streams().try_collect().await.map_err(|err| failed(err.to_string()))?;
        Ok(Some(streams.iter().map(|info| info.state.last_sequence).sum()))
    }
}

/// Reads each of `settings` back from the server: the run measures what it says it does.
async fn check_postgres_settings(pool: &sqlx::PgPool, settings: &[(&str, &str)]) -> Result<(), String> {
    for (name, expected) in settings {
        let actual: String = sqlx::query_scalar("SELECT current_setting($1)")
            .bind(*name)
            .fetch_one(pool)
            .await
            .map_err(|err| format!("reading the setting {name} failed: {err}"))?;
        if actual != *expected {
            return Err(format!("the server runs with {name}={actual}, not the {name}={expected} it was started with"));
        }
    }
    Ok(())
}

/// The bus's layout and the store's on `url`, with `replicas` copies (one layout
/// with the bus: the store's stream lives beside the bus's); the JetStream context.
async fn ensure_layouts(url: &str, replicas: usize) -> Result<async_nats::jetstream::Context, String> {
    let servers = sessionbus_lash::store::server_addrs(url).map_err(|err| err.to_string())?;
    let client = async_nats::connect(servers).await.map_err(|err| format!("connecting to {url} failed: {err}"))?;
    let context = async_nats::jetstream::new(client);
    let subjects = sessionbus_nats::Subjects::default();
    let layout = sessionbus_nats::jetstream::LayoutConfig::default().with_replicas(replicas);
    sessionbus_nats::jetstream::ensure_layout(&context, &subjects, &layout)
        .await
        .map_err(|err| format!("creating the bus's layout failed: {err}"))?;
    ensure_store_layout(&context, &subjects, replicas)
        .await
        .map_err(|err| format!("creating the store's layout failed: {err}"))?;
    Ok(context)
}

fn temp_dir(what: &str) -> Result<tempfile::TempDir, BenchError> {
    tempfile::Builder::new()
        .prefix(&format!("sessionbus-bench-{what}-"))
        .tempdir()
        .map_err(|err| BenchError::io(&format!("create a temporary directory for {what}"), err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_store_name_parses_back_to_its_store() {
        for kind in StoreKind::ALL {
            assert_eq!(StoreKind::parse(kind.name()), Some(kind));
        }
        assert_eq!(StoreKind::parse("jetstream"), Some(StoreKind::JetstreamR1));
        assert_eq!(StoreKind::parse("redis"), None);
        for setting in Durability::ALL {
            assert_eq!(Durability::parse(setting.name()), Some(setting));
        }
        assert_eq!(Durability::parse("always"), None);
    }

    #[test]
    fn fsync_on_every_commit_is_asked_of_postgres_and_jetstream_and_refused_where_it_does_not_exist() {
        let table = [
            (StoreKind::Memory, Durability::Defaults, true),
            (StoreKind::Memory, Durability::Fsync, false),
            (StoreKind::Sqlite, Durability::Defaults, true),
            (StoreKind::Sqlite, Durability::Fsync, false),
            (StoreKind::Postgres, Durability::Defaults, true),
            (StoreKind::Postgres, Durability::Fsync, true),
            (StoreKind::JetstreamR1, Durability::Defaults, true),
            (StoreKind::JetstreamR1, Durability::Fsync, true),
            (StoreKind::JetstreamR3, Durability::Defaults, true),
            (StoreKind::JetstreamR3, Durability::Fsync, true),
        ];
        for (store, durability, runs) in table {
            assert_eq!(configuration(store, durability).is_ok(), runs, "{store:?} under {durability:?}");
        }
        assert_eq!(postgres_settings(Durability::Defaults), &[] as &[(&str, &str)]);
        assert_eq!(postgres_settings(Durability::Fsync), &[("fsync", "on"), ("synchronous_commit", "on")]);
        assert_eq!(nats_sync_interval(Durability::Defaults), None);
        assert_eq!(nats_sync_interval(Durability::Fsync), Some("always"));
    }
}
