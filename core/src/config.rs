//! The mesh config: one TOML file (see `mesh-config/README.md`) read once at start.
//!
//! Parsing happens in two steps, as in ripgrep's low/high args: serde reads the file into
//! `raw` structs that mirror it (unknown keys are errors), then [`MeshConfig::from_raw`]
//! checks every rule and builds typed values that cannot be invalid. A bad file fails at
//! start with the file, the key and what to change.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{ShardId, duration};

mod auth;
pub mod cipher;
mod edge;
mod locate;
mod pipeline;
mod repair;
pub use auth::{ApiKey, Auth, Issuer, KeySource, valid_key_id};
pub use edge::{
    Breaker, BreakerWindow, Bucket, Cluster, EdgeConfig, EdgeTls, Endpoint, HealthCheck, KeyedLimit, Outlier, RateLimit, Retry, Route,
    ShardKey, ShardKeyKind, StreamFormat, Transcoding,
};
pub use pipeline::{
    BROKER_PATIENCE, Bootstrap, KafkaConfig, OutboxSource, QueryConfig, QueryInstance, RelayConfig, RelayInstance, WorkerInstance,
    WorkerKind, WorkersConfig,
};
pub use repair::{RepairConfig, RepairInstance, RepairService};

/// A validated mesh config.
#[derive(Clone, Debug)]
pub struct MeshConfig {
    /// The file it came from, for messages.
    pub source: PathBuf,
    /// Shards in id order: `shards[i].id == ShardId(i)`.
    pub shards: Vec<Shard>,
    pub payments: PaymentsConfig,
    /// The edge proxy; `None` when the file has no `[edge]` section.
    pub edge: Option<EdgeConfig>,
    /// The event pipeline; each `None` when its section is absent.
    pub kafka: Option<KafkaConfig>,
    pub relay: Option<RelayConfig>,
    pub workers: Option<WorkersConfig>,
    pub query: Option<QueryConfig>,
    /// Seed 002's repair centre, a second domain on the mesh; `None` when absent.
    pub repair: Option<RepairConfig>,
    /// mTLS between the edge and the services; `None`: plaintext.
    pub mesh_tls: Option<MeshTlsConfig>,
    /// Every process's log filter (`RUST_LOG` syntax, e.g. `info,paymesh_edge=debug`),
    /// applied at start and on every reload; `None`: `RUST_LOG`, else `info`.
    pub log_level: Option<String>,
}

/// `[mesh_tls]`: the mesh CA and each process's certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshTlsConfig {
    /// The CA every process trusts (PEM).
    pub ca: PathBuf,
    /// Holds `<name>.pem` and `<name>.key` for each process (instance name; the edge's is
    /// `edge`).
    pub dir: PathBuf,
}

impl MeshTlsConfig {
    pub fn files_for(&self, name: &str) -> crate::tls::TlsFiles {
        crate::tls::TlsFiles::for_name(&self.ca, &self.dir, name)
    }
}

/// One PostgreSQL shard.
#[derive(Clone, Debug)]
pub struct Shard {
    pub id: ShardId,
    pub database: DatabaseConfig,
}

/// How to reach and pool one shard's database.
#[derive(Clone, Debug, PartialEq)]
pub struct DatabaseConfig {
    /// `postgres://user@host:port/dbname`, without a password.
    pub url: String,
    /// The password, read at start from the environment variable the config names.
    pub password: Option<Secret>,
    /// Maximum pooled connections per service instance.
    pub pool_size: usize,
    pub connect_timeout: Duration,
    /// How long a statement waits for a row lock (`lock_timeout`) before the call fails
    /// ABORTED: one hot payment never stalls an instance.
    pub lock_timeout: Duration,
    /// The longest any statement runs (`statement_timeout`).
    pub statement_timeout: Duration,
}

impl DatabaseConfig {
    /// A config with the default timeouts (for tests and tools).
    pub fn new(url: impl Into<String>, pool_size: usize) -> Self {
        Self {
            url: url.into(),
            password: None,
            pool_size,
            connect_timeout: Duration::from_secs(2),
            lock_timeout: Duration::from_secs(2),
            statement_timeout: Duration::from_secs(10),
        }
    }

    /// The session settings that enforce the timeouts, for `tokio_postgres::Config::options`
    /// (sent once at connect: no statement per transaction).
    pub fn session_options(&self) -> String {
        format!("-c lock_timeout={} -c statement_timeout={}", self.lock_timeout.as_millis(), self.statement_timeout.as_millis())
    }
}

/// A value that must never be logged. Its `Debug` prints `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }
    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The payments service's settings.
#[derive(Clone, Debug)]
pub struct PaymentsConfig {
    /// How long an idempotency key is remembered (at least 24 h).
    pub idempotency_retention: Duration,
    /// How often each instance checks its database for the health service.
    pub health_check_interval: Duration,
    /// How long in-flight calls may run after SIGTERM before the process exits anyway.
    pub shutdown_grace: Duration,
    /// After SIGTERM, how long an instance reports NOT_SERVING while still serving, so
    /// balancers (the edge's health watch, a Kubernetes readiness probe) stop sending it new
    /// calls before it stops accepting them.
    pub drain_delay: Duration,
    /// Coalescing concurrent mutations into one transaction per batch.
    pub group_commit: GroupCommit,
    pub instances: Vec<PaymentsInstance>,
}

/// `[payments.group_commit]`: concurrent mutations arriving at one instance are applied in
/// one transaction per batch, one commit (one WAL flush) for all of them. No timer: a batch
/// is whatever arrived while the previous one committed, so a lone request waits for nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupCommit {
    /// Off: every request is its own transaction (for side-by-side benches and debugging).
    pub enabled: bool,
    /// The most requests in one batch.
    pub max_batch: usize,
    /// Batches committing at once, each on its own connection.
    pub committers: usize,
}

impl Default for GroupCommit {
    fn default() -> Self {
        Self { enabled: true, max_batch: 128, committers: 1 }
    }
}

/// One payments process: serves exactly one shard.
#[derive(Clone, Debug, PartialEq)]
pub struct PaymentsInstance {
    pub name: String,
    pub shard: ShardId,
    pub listen: SocketAddr,
    /// HTTP `/metrics` (Prometheus) and `/status`, if set.
    pub status_listen: Option<SocketAddr>,
}

impl MeshConfig {
    /// The number of shards (at least 1).
    pub fn shard_count(&self) -> u32 {
        // Validation bounds the count far below u32::MAX.
        self.shards.len() as u32
    }

    /// The shard with this id, if the mesh has it.
    pub fn shard(&self, id: ShardId) -> Option<&Shard> {
        self.shards.get(id.0 as usize)
    }

    /// The payments instance called `name`.
    pub fn payments_instance(&self, name: &str) -> Result<&PaymentsInstance, ConfigError> {
        self.payments.instances.iter().find(|i| i.name == name).ok_or_else(|| {
            let known: Vec<&str> = self.payments.instances.iter().map(|i| i.name.as_str()).collect();
            ConfigError::at(&self.source, "payments.instances", format!("no instance is named '{name}'; the file declares {known:?}"))
        })
    }

    /// Reads and validates a config file. Environment variables named by `password_env`
    /// are read here, once.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::at(path, "", format!("cannot read the file: {e}")))?;
        Self::parse(path, &text, &|name| std::env::var(name).ok())
    }

    /// Parses config text; `env` looks up environment variables (injectable for tests).
    pub fn parse(path: &Path, text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Self::from_raw(path, Self::raw(path, text)?, env).map_err(|e| e.located(text))
    }

    /// The file as serde reads it; a syntax error, an unknown key or a wrong type is placed
    /// at its line.
    fn raw(path: &Path, text: &str) -> Result<raw::Mesh, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| locate::line_at(text, s.start));
            // The line itself, so the message stands on its own.
            let quoted = line.and_then(|l| text.lines().nth(l - 1)).map(|l| format!(" (in `{}`)", l.trim())).unwrap_or_default();
            let mut err = ConfigError::at(path, "", format!("{}{quoted}", e.message().trim_end()));
            err.line = line;
            err
        })
    }

    /// [`MeshConfig::parse`], with every problem of a bad text ([`MeshConfig::check`]) instead
    /// of the first: a good text is parsed once.
    pub fn parse_all(path: &Path, text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, Vec<ConfigError>> {
        Self::parse(path, text, env).map_err(|first| {
            let all = Self::check(path, text, env);
            if all.is_empty() { vec![first] } else { all }
        })
    }

    /// Every problem of a config text, not only the first: after a problem in a section
    /// nothing else depends on (`edge`, `relay`, `workers`, `query`, `repair`, `mesh_tls`), that section
    /// is set aside and the rest checked again. Empty: the text is a valid config.
    pub fn check(path: &Path, text: &str, env: &dyn Fn(&str) -> Option<String>) -> Vec<ConfigError> {
        let mut problems = Vec::new();
        let mut set_aside: Vec<&'static str> = Vec::new();
        loop {
            let mut raw = match Self::raw(path, text) {
                Ok(r) => r,
                Err(e) => {
                    problems.push(e);
                    return problems;
                }
            };
            for section in &set_aside {
                match *section {
                    "edge" => raw.edge = None,
                    "relay" => raw.relay = None,
                    "workers" => raw.workers = None,
                    "query" => raw.query = None,
                    "repair" => raw.repair = None,
                    _ => raw.mesh_tls = None,
                }
            }
            match Self::from_raw(path, raw, env) {
                Ok(_) => return problems,
                Err(e) => {
                    let section = ["edge", "relay", "workers", "query", "repair", "mesh_tls"]
                        .into_iter()
                        .find(|s| e.key == *s || e.key.starts_with(&format!("{s}.")) || e.key.starts_with(&format!("{s}[")));
                    problems.push(e.located(text));
                    match section {
                        Some(s) if !set_aside.contains(&s) => set_aside.push(s),
                        _ => return problems,
                    }
                }
            }
        }
    }

    fn from_raw(path: &Path, raw: raw::Mesh, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let err = |key: String, problem: String| ConfigError::at(path, &key, problem);
        if raw.shards.is_empty() {
            return Err(err("shards".into(), "no shards are declared; add at least one [[shards]] table".into()));
        }
        if raw.shards.len() > crate::ids::MAX_SHARD as usize + 1 {
            return Err(err("shards".into(), format!("at most {} shards are supported", crate::ids::MAX_SHARD + 1)));
        }
        let mut shards = Vec::with_capacity(raw.shards.len());
        for (i, s) in raw.shards.into_iter().enumerate() {
            let key = |k: &str| format!("shards[{i}].{k}");
            if s.id as usize != i {
                return Err(err(key("id"), format!("expected {i}, found {}: shard ids count up from 0 in file order", s.id)));
            }
            let keys = DbKeys {
                url: &s.database_url,
                password_env: s.password_env,
                password: s.password,
                pool_size: s.pool_size,
                connect_timeout: &s.connect_timeout,
                lock_timeout: &s.lock_timeout,
                statement_timeout: &s.statement_timeout,
            };
            let database = database(&format!("shards[{i}]"), keys, env, &err)?;
            shards.push(Shard { id: ShardId(i as u32), database });
        }

        let p = raw.payments;
        let idempotency_retention =
            duration::parse(&p.idempotency_retention).map_err(|m| err("payments.idempotency_retention".into(), m))?;
        if idempotency_retention < Duration::from_secs(24 * 3_600) {
            return Err(err("payments.idempotency_retention".into(), "must be at least 24h: clients retry for a day".into()));
        }
        let health_check_interval =
            duration::parse(&p.health_check_interval).map_err(|m| err("payments.health_check_interval".into(), m))?;
        if health_check_interval.is_zero() {
            return Err(err("payments.health_check_interval".into(), "must be above zero".into()));
        }
        let shutdown_grace = duration::parse(&p.shutdown_grace).map_err(|m| err("payments.shutdown_grace".into(), m))?;
        let drain_delay = duration::parse(&p.drain_delay).map_err(|m| err("payments.drain_delay".into(), m))?;
        if drain_delay > Duration::from_secs(300) {
            return Err(err("payments.drain_delay".into(), "is at most 300s; a drain only needs the balancers' reaction time".into()));
        }

        let mut names = HashSet::new();
        let mut addrs = HashSet::new();
        let mut served = vec![false; shards.len()];
        let mut instances = Vec::with_capacity(p.instances.len());
        for (i, inst) in p.instances.into_iter().enumerate() {
            let key = |k: &str| format!("payments.instances[{i}].{k}");
            if inst.name.is_empty() || !inst.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return Err(err(key("name"), format!("'{}' is not a valid name; use letters, digits, '-' and '_'", inst.name)));
            }
            if !names.insert(inst.name.clone()) {
                return Err(err(key("name"), format!("'{}' is declared twice", inst.name)));
            }
            let Some(seen) = served.get_mut(inst.shard as usize) else {
                return Err(err(
                    key("shard"),
                    format!("shard {} does not exist; the mesh has shards 0..={}", inst.shard, shards.len() - 1),
                ));
            };
            *seen = true;
            let listen: SocketAddr = inst
                .listen
                .parse()
                .map_err(|_| err(key("listen"), format!("'{}' is not an address; write host:port, e.g. 127.0.0.1:25061", inst.listen)))?;
            if listen.port() != 0 && !addrs.insert(listen) {
                return Err(err(key("listen"), format!("{listen} is used by another instance")));
            }
            let status_listen = match inst.status_listen {
                None => None,
                Some(a) => Some(a.parse().map_err(|_| err(key("status_listen"), format!("'{a}' is not an address; write host:port")))?),
            };
            instances.push(PaymentsInstance { name: inst.name, shard: ShardId(inst.shard), listen, status_listen });
        }
        let g = p.group_commit;
        if !(1..=10_000).contains(&g.max_batch) {
            return Err(err("payments.group_commit.max_batch".into(), format!("{} is out of range; use 1 to 10000", g.max_batch)));
        }
        if !(1..=64).contains(&g.committers) {
            return Err(err("payments.group_commit.committers".into(), format!("{} is out of range; use 1 to 64", g.committers)));
        }
        let group_commit = GroupCommit { enabled: g.enabled, max_batch: g.max_batch, committers: g.committers };
        if let Some(orphan) = served.iter().position(|s| !s) {
            return Err(err(
                "payments.instances".into(),
                format!("shard {orphan} has no payments instance; add a [[payments.instances]] with shard = {orphan}"),
            ));
        }

        let shard_count = shards.len() as u32;
        let base_dir = path.parent().unwrap_or(Path::new("."));
        let edge =
            raw.edge.map(|e| edge::validate(e, base_dir, shard_count, &instances, &|k, p| ConfigError::at(path, &k, p))).transpose()?;
        let perr = |k: String, p: String| ConfigError::at(path, &k, p);
        let kafka = raw.kafka.map(|k| pipeline::kafka(k, base_dir, &perr)).transpose()?;
        let relay = raw.relay.map(|r| pipeline::relay(r, shard_count, &perr)).transpose()?;
        let workers = match raw.workers {
            None => None,
            Some(w) => {
                let keys = DbKeys {
                    url: &w.database_url,
                    password_env: w.password_env.clone(),
                    password: w.password.clone(),
                    pool_size: w.pool_size,
                    connect_timeout: &w.connect_timeout,
                    lock_timeout: &w.lock_timeout,
                    statement_timeout: &w.statement_timeout,
                };
                let db = database("workers", keys, env, &perr)?;
                Some(pipeline::workers(w, &perr, db)?)
            }
        };
        let query = raw.query.map(|q| pipeline::query(q, &perr)).transpose()?;
        if (relay.is_some() || workers.is_some()) && kafka.is_none() {
            return Err(perr("kafka".into(), "the relay and the workers need a [kafka] section".into()));
        }
        if query.is_some() && workers.is_none() {
            return Err(perr("query".into(), "the query service reads the workers' database: add a [workers] section".into()));
        }
        let repair = match raw.repair {
            None => None,
            Some(r) => {
                // A name names one process across the mesh.
                let mut taken: HashSet<String> = instances.iter().map(|i| i.name.clone()).collect();
                taken.extend(relay.iter().flat_map(|r| &r.instances).map(|i| i.name.clone()));
                taken.extend(workers.iter().flat_map(|w| &w.instances).map(|i| i.name.clone()));
                taken.extend(query.iter().flat_map(|q| &q.instances).map(|i| i.name.clone()));
                Some(repair::validate(r, env, &perr, &mut taken)?)
            }
        };
        // A relay of a repair service's outbox needs that service.
        for (i, inst) in relay.iter().flat_map(|r| r.instances.iter().enumerate()) {
            if let OutboxSource::Repair(service) = &inst.source {
                let declared = repair.as_ref().is_some_and(|r| r.services().any(|(n, _)| n == service));
                if !declared {
                    return Err(perr(format!("relay.instances[{i}].outbox"), format!("there is no [repair.{service}] section to publish")));
                }
            }
        }
        let log_level = match raw.log_level {
            Some(l) => Some(crate::telemetry::check_filter(&l).map_err(|why| err("log_level".into(), why))?),
            None => None,
        };
        Ok(Self {
            source: path.to_owned(),
            shards,
            payments: PaymentsConfig { idempotency_retention, health_check_interval, shutdown_grace, drain_delay, group_commit, instances },
            edge,
            kafka,
            relay,
            workers,
            query,
            repair,
            mesh_tls: raw.mesh_tls.map(|t| MeshTlsConfig { ca: base_dir.join(t.ca), dir: base_dir.join(t.dir) }),
            log_level,
        })
    }
}

/// One database's keys as written.
struct DbKeys<'a> {
    url: &'a str,
    password_env: Option<String>,
    /// An encrypted password (`{cipher}...`).
    password: Option<String>,
    pool_size: usize,
    connect_timeout: &'a str,
    lock_timeout: &'a str,
    statement_timeout: &'a str,
}

/// Validates one database's settings (`key` names its section in messages).
fn database(
    key: &str,
    k: DbKeys<'_>,
    env: &dyn Fn(&str) -> Option<String>,
    err: &dyn Fn(String, String) -> ConfigError,
) -> Result<DatabaseConfig, ConfigError> {
    let url = k.url.trim().to_owned();
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(err(format!("{key}.database_url"), "must be a URL of the form postgres://user@host:port/dbname".into()));
    }
    if url_has_password(&url) {
        return Err(err(
            format!("{key}.database_url"),
            "contains a password; keep secrets out of config: set password_env to the name of an environment variable that holds it".into(),
        ));
    }
    let password = match (k.password_env, k.password) {
        (None, None) => None,
        (Some(_), Some(_)) => {
            return Err(err(format!("{key}.password"), "give either password (encrypted) or password_env, not both".into()));
        }
        (Some(var), None) => Some(Secret::new(
            env(&var).ok_or_else(|| err(format!("{key}.password_env"), format!("environment variable {var} is not set")))?,
        )),
        (None, Some(value)) => Some(Secret::new(encrypted(&value, env).map_err(|m| err(format!("{key}.password"), m))?)),
    };
    if !(1..=1_000).contains(&k.pool_size) {
        return Err(err(format!("{key}.pool_size"), format!("{} is out of range; use 1 to 1000", k.pool_size)));
    }
    let time = |name: &str, v: &str| {
        let d = duration::parse(v).map_err(|m| err(format!("{key}.{name}"), m))?;
        if d.is_zero() {
            return Err(err(format!("{key}.{name}"), "must be more than 0 (0 would mean no limit)".into()));
        }
        Ok(d)
    };
    let connect_timeout = time("connect_timeout", k.connect_timeout)?;
    let lock_timeout = time("lock_timeout", k.lock_timeout)?;
    let statement_timeout = time("statement_timeout", k.statement_timeout)?;
    if lock_timeout > statement_timeout {
        return Err(err(
            format!("{key}.lock_timeout"),
            format!("{} is longer than statement_timeout ({}); make it shorter", k.lock_timeout, k.statement_timeout),
        ));
    }
    Ok(DatabaseConfig { url, password, pool_size: k.pool_size, connect_timeout, lock_timeout, statement_timeout })
}

/// The plain text of an encrypted config value, with the key from the environment.
fn encrypted(value: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    use cipher::{ConfigKey, KEY_ENV, KEY_FILE_ENV, PREFIX};
    if !value.starts_with(PREFIX) {
        return Err(format!(
            "a password in the config must be encrypted: write {PREFIX}... (`cargo xtask secret encrypt`), or use password_env"
        ));
    }
    let key = ConfigKey::from_env(env)?.ok_or_else(|| {
        format!("is encrypted ({PREFIX}) but no key is set: set {KEY_ENV} (the key, base64) or {KEY_FILE_ENV} (a file holding it)")
    })?;
    key.decrypt(value)
}

/// Redacts anything secret-looking from a database URL (a password in the authority or in a
/// query parameter) so the URL can be logged.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:<redacted>@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if is_secret_param(k) => format!("{k}=<redacted>"),
                    _ => p.to_owned(),
                })
                .collect();
            format!("{path}?{}", params.join("&"))
        }
        None => tail.to_owned(),
    };
    if scheme.is_empty() { format!("{authority}{tail}") } else { format!("{scheme}://{authority}{tail}") }
}

fn is_secret_param(name: &str) -> bool {
    name.to_ascii_lowercase().contains("password")
}

/// `user:password@` in the authority part of a URL, or a `password=` (or `sslpassword=`)
/// query parameter.
fn url_has_password(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let in_authority = authority.rsplit_once('@').is_some_and(|(userinfo, _)| userinfo.contains(':'));
    let in_query = rest.split_once('?').is_some_and(|(_, q)| q.split('&').any(|p| is_secret_param(p.split('=').next().unwrap_or(""))));
    in_authority || in_query
}

/// A config problem: which file, line and key, what is wrong and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{}{}: {}{problem}",
    file.display(),
    line.map(|l| format!(":{l}")).unwrap_or_default(),
    if key.is_empty() { String::new() } else { format!("{key}: ") }
)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; `None` when the problem is not at a place in the file (e.g. it is unreadable).
    pub line: Option<usize>,
    pub key: String,
    pub problem: String,
}

impl ConfigError {
    fn at(file: &Path, key: &str, problem: String) -> Self {
        Self { file: file.to_owned(), line: None, key: key.to_owned(), problem }
    }

    /// The same problem, placed at its key's line in `text`.
    fn located(mut self, text: &str) -> Self {
        if self.line.is_none() {
            self.line = locate::line_of(text, &self.key);
        }
        self
    }
}

/// Serde mirrors of the file. Defaults live here, so the file may omit them.
mod raw {
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Mesh {
        #[serde(default)]
        pub shards: Vec<Shard>,
        #[serde(default)]
        pub payments: Payments,
        #[serde(default)]
        pub edge: Option<Edge>,
        #[serde(default)]
        pub kafka: Option<Kafka>,
        #[serde(default)]
        pub relay: Option<Relay>,
        #[serde(default)]
        pub workers: Option<Workers>,
        #[serde(default)]
        pub query: Option<Query>,
        #[serde(default)]
        pub repair: Option<super::repair::Raw>,
        #[serde(default)]
        pub mesh_tls: Option<MeshTls>,
        #[serde(default)]
        pub log_level: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct MeshTls {
        pub ca: String,
        pub dir: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Kafka {
        pub bootstrap: String,
        #[serde(default = "six")]
        pub topic_partitions: i32,
        #[serde(default = "three_i32")]
        pub dlq_partitions: i32,
        #[serde(default = "default_message_timeout")]
        pub message_timeout: String,
    }

    /// Defaults: seed 003's dispatcher (1,000 events every 250 ms, 20 retries 5 s apart).
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Relay {
        #[serde(default = "default_batch")]
        pub batch_size: i64,
        #[serde(default = "default_poll")]
        pub poll_interval: String,
        #[serde(default = "default_max_retries")]
        pub max_retries: i32,
        #[serde(default = "default_retry_interval")]
        pub retry_interval: String,
        #[serde(default)]
        pub breaker: EdgeBreaker,
        #[serde(default)]
        pub instances: Vec<RelayInstance>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct RelayInstance {
        pub name: String,
        #[serde(default)]
        pub shard: Option<u32>,
        /// A repair service's outbox instead of a shard's: `"repair.requests"`.
        #[serde(default)]
        pub outbox: Option<String>,
        pub status_listen: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Workers {
        pub database_url: String,
        #[serde(default)]
        pub password_env: Option<String>,
        /// Encrypted: `{cipher}...`.
        #[serde(default)]
        pub password: Option<String>,
        #[serde(default = "default_pool_size")]
        pub pool_size: usize,
        #[serde(default = "default_connect_timeout")]
        pub connect_timeout: String,
        #[serde(default = "default_lock_timeout")]
        pub lock_timeout: String,
        #[serde(default = "default_statement_timeout")]
        pub statement_timeout: String,
        #[serde(default = "default_max_attempts")]
        pub max_attempts: u32,
        #[serde(default)]
        pub instances: Vec<WorkerInstance>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct WorkerInstance {
        pub name: String,
        pub kind: String,
        pub status_listen: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Query {
        #[serde(default)]
        pub instances: Vec<QueryInstance>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct QueryInstance {
        pub name: String,
        pub listen: String,
    }

    fn six() -> i32 {
        6
    }
    fn three_i32() -> i32 {
        3
    }
    fn default_message_timeout() -> String {
        "5s".into()
    }
    fn default_batch() -> i64 {
        1_000
    }
    fn default_poll() -> String {
        "250ms".into()
    }
    fn default_max_retries() -> i32 {
        20
    }
    fn default_retry_interval() -> String {
        "5s".into()
    }
    fn default_max_attempts() -> u32 {
        5
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Edge {
        #[serde(default = "default_edge_listen")]
        pub listen: String,
        #[serde(default)]
        pub reload_on_change: bool,
        #[serde(default = "default_admin_listen")]
        pub admin_listen: String,
        #[serde(default = "default_max_body")]
        pub max_body_bytes: usize,
        #[serde(default = "default_connect_timeout")]
        pub connect_timeout: String,
        #[serde(default = "default_request_timeout")]
        pub request_timeout: String,
        #[serde(default = "default_client_read_timeout")]
        pub client_read_timeout: String,
        #[serde(default = "default_body_read_deadline")]
        pub body_read_deadline: String,
        #[serde(default = "default_threads")]
        pub threads: usize,
        #[serde(default)]
        pub descriptor_sets: Vec<String>,
        #[serde(default)]
        pub health: EdgeHealth,
        #[serde(default)]
        pub outlier: EdgeOutlier,
        #[serde(default)]
        pub clusters: Vec<EdgeCluster>,
        #[serde(default)]
        pub routes: Vec<EdgeRoute>,
        #[serde(default)]
        pub auth: Option<super::auth::RawAuth>,
        #[serde(default)]
        pub tls: Option<EdgeTls>,
        #[serde(default)]
        pub transcoding: Transcoding,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Transcoding {
        #[serde(default)]
        pub ignore_unknown_query_parameters: bool,
        #[serde(default)]
        pub case_insensitive_enums: bool,
        #[serde(default = "default_forwarded_headers")]
        pub request_headers: Vec<String>,
        #[serde(default = "default_stream_format")]
        pub stream_format: String,
    }

    impl Default for Transcoding {
        fn default() -> Self {
            Self {
                ignore_unknown_query_parameters: false,
                case_insensitive_enums: false,
                request_headers: default_forwarded_headers(),
                stream_format: default_stream_format(),
            }
        }
    }

    fn default_forwarded_headers() -> Vec<String> {
        ["authorization", "x-request-id", "grpc-metadata-*"].map(str::to_owned).to_vec()
    }

    fn default_stream_format() -> String {
        "array".to_owned()
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct EdgeTls {
        pub cert: String,
        pub key: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct EdgeHealth {
        #[serde(default = "default_health_interval")]
        pub interval: String,
        #[serde(default = "default_health_timeout")]
        pub timeout: String,
        #[serde(default = "one")]
        pub healthy_threshold: u32,
        #[serde(default = "two")]
        pub unhealthy_threshold: u32,
    }

    impl Default for EdgeHealth {
        fn default() -> Self {
            Self { interval: default_health_interval(), timeout: default_health_timeout(), healthy_threshold: 1, unhealthy_threshold: 2 }
        }
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub(super) struct EdgeOutlier {
        pub consecutive_failures: u32,
        pub base_ejection_time: String,
        pub max_ejection_time: String,
        pub max_ejection_percent: u32,
    }

    impl Default for EdgeOutlier {
        fn default() -> Self {
            Self { consecutive_failures: 5, base_ejection_time: "30s".into(), max_ejection_time: "300s".into(), max_ejection_percent: 50 }
        }
    }

    /// Defaults are the seeds' Resilience4j settings (count window of 100 calls, as
    /// Resilience4j's default).
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub(super) struct EdgeBreaker {
        pub enabled: bool,
        pub window: String,
        pub window_size: u32,
        pub failure_rate_threshold: f64,
        pub slow_call_rate_threshold: f64,
        pub slow_call_duration: String,
        pub minimum_calls: u32,
        pub wait_in_open: String,
        pub half_open_calls: u32,
        pub failure_codes: Vec<String>,
    }

    impl Default for EdgeBreaker {
        fn default() -> Self {
            Self {
                enabled: true,
                window: "count".into(),
                window_size: 100,
                failure_rate_threshold: 50.0,
                slow_call_rate_threshold: 50.0,
                slow_call_duration: "5s".into(),
                minimum_calls: 5,
                wait_in_open: "30s".into(),
                half_open_calls: 3,
                failure_codes: vec!["UNAVAILABLE".into(), "DEADLINE_EXCEEDED".into(), "INTERNAL".into()],
            }
        }
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct EdgeRateLimit {
        #[serde(default)]
        pub route: Option<EdgeBucket>,
        #[serde(default)]
        pub per_key: Option<EdgeKeyed>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct EdgeBucket {
        pub rate: f64,
        pub burst: u32,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct EdgeKeyed {
        pub rate: f64,
        pub burst: u32,
        #[serde(default)]
        pub header: Option<String>,
        #[serde(default)]
        pub by_merchant: bool,
        #[serde(default = "default_max_keys")]
        pub max_keys: usize,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub(super) struct EdgeRetry {
        pub enabled: bool,
        pub max_attempts: u32,
        pub backoff_base: String,
        pub backoff_max: String,
        pub budget_ratio: f64,
        pub min_retries_per_second: u32,
        pub idempotency_key_field: Option<String>,
    }

    impl Default for EdgeRetry {
        fn default() -> Self {
            Self {
                enabled: true,
                max_attempts: 3,
                backoff_base: "25ms".into(),
                backoff_max: "250ms".into(),
                budget_ratio: 0.2,
                min_retries_per_second: 10,
                idempotency_key_field: None,
            }
        }
    }

    fn default_max_keys() -> usize {
        100_000
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct EdgeCluster {
        pub name: String,
        #[serde(default)]
        pub payments_instances: bool,
        #[serde(default)]
        pub endpoints: Vec<EdgeEndpoint>,
        #[serde(default = "default_max_requests")]
        pub max_requests: usize,
        #[serde(default = "default_max_requests")]
        pub max_pending: usize,
    }

    fn default_max_requests() -> usize {
        1024
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct EdgeEndpoint {
        #[serde(default)]
        pub name: Option<String>,
        pub address: String,
        #[serde(default)]
        pub shard: Option<u32>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct EdgeRoute {
        pub service: String,
        pub cluster: String,
        #[serde(default)]
        pub shard_keys: Vec<EdgeShardKey>,
        #[serde(default)]
        pub timeout: Option<String>,
        #[serde(default)]
        pub breaker: EdgeBreaker,
        #[serde(default)]
        pub rate_limit: EdgeRateLimit,
        #[serde(default)]
        pub retry: EdgeRetry,
        #[serde(default)]
        pub concurrency: Option<EdgeConcurrency>,
        #[serde(default)]
        pub auth: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct EdgeConcurrency {
        pub max_requests: usize,
        #[serde(default)]
        pub max_pending: usize,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct EdgeShardKey {
        pub field: String,
        pub kind: String,
        #[serde(default)]
        pub header: Option<String>,
    }

    fn default_edge_listen() -> String {
        "127.0.0.1:8080".into()
    }
    fn default_admin_listen() -> String {
        "127.0.0.1:9901".into()
    }
    fn default_max_body() -> usize {
        64 * 1024
    }
    fn default_request_timeout() -> String {
        "20s".into()
    }
    fn default_client_read_timeout() -> String {
        "10s".into()
    }
    fn default_body_read_deadline() -> String {
        "10s".into()
    }
    fn default_threads() -> usize {
        2
    }
    fn default_health_timeout() -> String {
        "1s".into()
    }
    fn one() -> u32 {
        1
    }
    fn two() -> u32 {
        2
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Shard {
        pub id: u32,
        pub database_url: String,
        #[serde(default)]
        pub password_env: Option<String>,
        /// Encrypted: `{cipher}...`.
        #[serde(default)]
        pub password: Option<String>,
        #[serde(default = "default_pool_size")]
        pub pool_size: usize,
        #[serde(default = "default_connect_timeout")]
        pub connect_timeout: String,
        #[serde(default = "default_lock_timeout")]
        pub lock_timeout: String,
        #[serde(default = "default_statement_timeout")]
        pub statement_timeout: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Payments {
        #[serde(default = "default_retention")]
        pub idempotency_retention: String,
        #[serde(default = "default_health_interval")]
        pub health_check_interval: String,
        #[serde(default = "default_shutdown_grace")]
        pub shutdown_grace: String,
        #[serde(default = "default_drain_delay")]
        pub drain_delay: String,
        #[serde(default)]
        pub group_commit: GroupCommit,
        #[serde(default)]
        pub instances: Vec<Instance>,
    }

    impl Default for Payments {
        fn default() -> Self {
            Self {
                idempotency_retention: default_retention(),
                health_check_interval: default_health_interval(),
                shutdown_grace: default_shutdown_grace(),
                drain_delay: default_drain_delay(),
                group_commit: GroupCommit::default(),
                instances: Vec::new(),
            }
        }
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct GroupCommit {
        #[serde(default = "yes")]
        pub enabled: bool,
        #[serde(default = "default_max_batch")]
        pub max_batch: usize,
        #[serde(default = "default_committers")]
        pub committers: usize,
    }

    impl Default for GroupCommit {
        fn default() -> Self {
            Self { enabled: true, max_batch: default_max_batch(), committers: default_committers() }
        }
    }

    fn yes() -> bool {
        true
    }

    fn default_max_batch() -> usize {
        128
    }

    fn default_committers() -> usize {
        1
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Instance {
        pub name: String,
        pub shard: u32,
        pub listen: String,
        #[serde(default)]
        pub status_listen: Option<String>,
    }

    fn default_pool_size() -> usize {
        16
    }
    pub(super) fn default_connect_timeout() -> String {
        "2s".into()
    }
    pub(super) fn default_lock_timeout() -> String {
        "2s".into()
    }
    pub(super) fn default_statement_timeout() -> String {
        "10s".into()
    }
    fn default_retention() -> String {
        "24h".into()
    }
    fn default_health_interval() -> String {
        "1s".into()
    }
    fn default_shutdown_grace() -> String {
        "20s".into()
    }
    fn default_drain_delay() -> String {
        "2s".into()
    }
}

#[cfg(test)]
mod tests;
