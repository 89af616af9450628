//! The event pipeline's sections: `[kafka]`, `[relay]`, `[workers]`, `[query]`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Breaker, DatabaseConfig, raw};
use crate::{ShardId, duration};

/// How to reach the Kafka-protocol broker.
#[derive(Clone, Debug, PartialEq)]
pub struct KafkaConfig {
    pub bootstrap: Bootstrap,
    pub topic_partitions: i32,
    pub dlq_partitions: i32,
    /// How long a produce may take before it counts as failed.
    pub message_timeout: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bootstrap {
    /// `host:port,host:port`.
    Servers(String),
    /// A file the local broker writes its bootstrap servers to (`file:PATH`, relative to the
    /// config file).
    File(PathBuf),
}

impl Bootstrap {
    /// The servers, reading the file if need be (it may not exist yet: the caller retries).
    pub fn resolve(&self) -> Result<String, String> {
        match self {
            Self::Servers(s) => Ok(s.clone()),
            Self::File(p) => match std::fs::read_to_string(p) {
                Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
                Ok(_) => Err(format!("{} is empty; is the broker running?", p.display())),
                Err(e) => {
                    Err(format!("cannot read the broker address from {}: {e}; start the broker first (cargo xtask up does)", p.display()))
                }
            },
        }
    }

    /// [`Bootstrap::resolve`], waiting up to `patience` for the local broker to write its
    /// address (it may still be starting).
    pub async fn wait(&self, patience: Duration) -> Result<String, String> {
        let deadline = std::time::Instant::now() + patience;
        loop {
            match self.resolve() {
                Ok(s) => return Ok(s),
                Err(e) if std::time::Instant::now() > deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

/// How long a process waits for the local broker's address at start.
pub const BROKER_PATIENCE: Duration = Duration::from_secs(60);

/// The outbox relay (seed 003's dispatcher settings by default).
#[derive(Clone, Debug)]
pub struct RelayConfig {
    pub batch_size: i64,
    pub poll_interval: Duration,
    pub max_retries: i32,
    pub retry_interval: Duration,
    pub breaker: Breaker,
    pub instances: Vec<RelayInstance>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayInstance {
    pub name: String,
    /// Whose outbox it publishes.
    pub source: OutboxSource,
    pub status_listen: SocketAddr,
}

/// A database with a transactional outbox (`outbox_event`) for a relay to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutboxSource {
    /// A payments shard (`shard = N`).
    Shard(ShardId),
    /// A repair centre service's own database (`outbox = "repair.requests"` or
    /// `"repair.desk"`): the service's name.
    Repair(String),
}

impl OutboxSource {
    /// The shard, for a payments shard's outbox.
    pub fn shard(&self) -> Option<ShardId> {
        match self {
            Self::Shard(s) => Some(*s),
            Self::Repair(_) => None,
        }
    }

    /// A short label: `shard-0`, `repair.requests` (breaker names, metrics, logs).
    pub fn label(&self) -> String {
        match self {
            Self::Shard(s) => format!("shard-{}", s.0),
            Self::Repair(service) => format!("repair.{service}"),
        }
    }
}

impl std::fmt::Display for OutboxSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Shard(s) => write!(f, "shard {}", s.0),
            Self::Repair(service) => write!(f, "repair.{service}"),
        }
    }
}

/// The consumers: ledger, settlement and the read model, in one database of their own.
#[derive(Clone, Debug)]
pub struct WorkersConfig {
    pub database: DatabaseConfig,
    /// Tries before a message that keeps failing goes to the worker's DLQ.
    pub max_attempts: u32,
    pub instances: Vec<WorkerInstance>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WorkerKind {
    Ledger,
    Settlement,
    View,
}

impl WorkerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ledger => "ledger",
            Self::Settlement => "settlement",
            Self::View => "view",
        }
    }
}

#[derive(Clone, Debug)]
pub struct WorkerInstance {
    pub name: String,
    pub kind: WorkerKind,
    pub status_listen: SocketAddr,
}

/// The query service (reads the workers' database).
#[derive(Clone, Debug)]
pub struct QueryConfig {
    pub instances: Vec<QueryInstance>,
}

#[derive(Clone, Debug)]
pub struct QueryInstance {
    pub name: String,
    pub listen: SocketAddr,
}

type Err<'a> = &'a dyn Fn(String, String) -> super::ConfigError;

pub(super) fn addr(err: Err<'_>, key: String, v: &str) -> Result<SocketAddr, super::ConfigError> {
    v.parse().map_err(|_| err(key, format!("'{v}' is not an address; write host:port, e.g. 127.0.0.1:9911")))
}

pub(super) fn name_ok(err: Err<'_>, key: String, name: &str, seen: &mut HashSet<String>) -> Result<(), super::ConfigError> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(err(key, format!("'{name}' is not a valid name; use letters, digits, '-' and '_'")));
    }
    if !seen.insert(name.to_owned()) {
        return Err(err(key, format!("'{name}' is declared twice")));
    }
    Ok(())
}

pub(super) fn kafka(r: raw::Kafka, base: &Path, err: Err<'_>) -> Result<KafkaConfig, super::ConfigError> {
    let bootstrap = match r.bootstrap.strip_prefix("file:") {
        Some(p) if !p.is_empty() => Bootstrap::File(base.join(p)),
        Some(_) => return Err(err("kafka.bootstrap".into(), "file: needs a path".into())),
        None if r.bootstrap.is_empty() => {
            return Err(err("kafka.bootstrap".into(), "is required: host:port[,host:port] or file:PATH".into()));
        }
        None => Bootstrap::Servers(r.bootstrap),
    };
    if r.topic_partitions < 1 || r.dlq_partitions < 1 {
        return Err(err("kafka.topic_partitions".into(), "topic_partitions and dlq_partitions must be at least 1".into()));
    }
    let message_timeout = duration::parse(&r.message_timeout).map_err(|m| err("kafka.message_timeout".into(), m))?;
    Ok(KafkaConfig { bootstrap, topic_partitions: r.topic_partitions, dlq_partitions: r.dlq_partitions, message_timeout })
}

pub(super) fn relay(r: raw::Relay, shards: u32, err: Err<'_>) -> Result<RelayConfig, super::ConfigError> {
    let d = |k: &str, v: &str| duration::parse(v).map_err(|m| err(format!("relay.{k}"), m));
    if !(1..=10_000).contains(&r.batch_size) {
        return Err(err("relay.batch_size".into(), format!("{} is out of range; use 1 to 10000", r.batch_size)));
    }
    if r.max_retries < 1 {
        return Err(err("relay.max_retries".into(), "must be at least 1".into()));
    }
    let breaker = super::edge::breaker(r.breaker, &|k: &str, m: String| err(format!("relay.breaker.{k}"), m))?;
    let mut seen = HashSet::new();
    let mut instances = Vec::new();
    for (i, inst) in r.instances.into_iter().enumerate() {
        let key = |k: &str| format!("relay.instances[{i}].{k}");
        name_ok(err, key("name"), &inst.name, &mut seen)?;
        let source = match (inst.shard, inst.outbox.as_deref()) {
            (Some(shard), None) if shard < shards => OutboxSource::Shard(ShardId(shard)),
            (Some(shard), None) => {
                return Err(err(key("shard"), format!("shard {shard} does not exist; the mesh has shards 0..={}", shards - 1)));
            }
            (None, Some(outbox)) => match outbox.strip_prefix("repair.") {
                Some(service @ ("requests" | "desk")) => OutboxSource::Repair(service.to_owned()),
                _ => return Err(err(key("outbox"), format!("'{outbox}' has no outbox; use \"repair.requests\" or \"repair.desk\""))),
            },
            (Some(_), Some(_)) => return Err(err(key("outbox"), "give shard or outbox, not both".into())),
            (None, None) => return Err(err(key("shard"), "name the outbox to publish: shard = N, or outbox = \"repair.requests\"".into())),
        };
        instances.push(RelayInstance { name: inst.name, source, status_listen: addr(err, key("status_listen"), &inst.status_listen)? });
    }
    Ok(RelayConfig {
        batch_size: r.batch_size,
        poll_interval: d("poll_interval", &r.poll_interval)?,
        max_retries: r.max_retries,
        retry_interval: d("retry_interval", &r.retry_interval)?,
        breaker,
        instances,
    })
}

pub(super) fn workers(r: raw::Workers, err: Err<'_>, database: DatabaseConfig) -> Result<WorkersConfig, super::ConfigError> {
    if r.max_attempts == 0 {
        return Err(err("workers.max_attempts".into(), "must be at least 1".into()));
    }
    let mut seen = HashSet::new();
    let mut instances = Vec::new();
    for (i, inst) in r.instances.into_iter().enumerate() {
        let key = |k: &str| format!("workers.instances[{i}].{k}");
        name_ok(err, key("name"), &inst.name, &mut seen)?;
        let kind = match inst.kind.as_str() {
            "ledger" => WorkerKind::Ledger,
            "settlement" => WorkerKind::Settlement,
            "view" => WorkerKind::View,
            other => return Err(err(key("kind"), format!("'{other}' is not a worker; use \"ledger\", \"settlement\" or \"view\""))),
        };
        instances.push(WorkerInstance { name: inst.name, kind, status_listen: addr(err, key("status_listen"), &inst.status_listen)? });
    }
    Ok(WorkersConfig { database, max_attempts: r.max_attempts, instances })
}

pub(super) fn query(r: raw::Query, err: Err<'_>) -> Result<QueryConfig, super::ConfigError> {
    let mut seen = HashSet::new();
    let mut instances = Vec::new();
    for (i, inst) in r.instances.into_iter().enumerate() {
        let key = |k: &str| format!("query.instances[{i}].{k}");
        name_ok(err, key("name"), &inst.name, &mut seen)?;
        instances.push(QueryInstance { name: inst.name, listen: addr(err, key("listen"), &inst.listen)? });
    }
    Ok(QueryConfig { instances })
}
