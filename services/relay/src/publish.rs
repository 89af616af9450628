//! Claiming, publishing and marking outbox rows.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use futures_util::future::join_all;
use paymesh_core::breaker::{Breaker, Snapshot};
use paymesh_core::config::{MeshConfig, OutboxSource, RelayConfig};
use paymesh_kafka::topics::{self, headers};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("{0}")]
    Config(String),
    #[error("database: {0}")]
    Database(String),
    #[error("kafka: {0}")]
    Kafka(String),
}

impl From<tokio_postgres::Error> for RelayError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Database(e.to_string())
    }
}

impl From<deadpool_postgres::PoolError> for RelayError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Self::Database(e.to_string())
    }
}

/// What one tick did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    pub claimed: usize,
    pub published: usize,
    pub failed: usize,
    pub dead: usize,
    /// Rows left for later because the breaker refused to publish them.
    pub refused: usize,
}

/// Counters for metrics.
#[derive(Debug, Default)]
pub struct Counters {
    pub published: AtomicU64,
    pub failed: AtomicU64,
    pub dead: AtomicU64,
    /// Commit-to-acknowledgement latency: sum (microseconds), count, cumulative buckets.
    pub latency_sum_us: AtomicU64,
    pub latency_count: AtomicU64,
    pub latency_buckets: [AtomicU64; 10],
}

/// Upper bounds (seconds) of the publish-latency histogram.
pub const LATENCY_BOUNDS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

pub struct Relay {
    pub name: String,
    /// Whose outbox: a payments shard's, or a repair service's.
    pub source: OutboxSource,
    /// Read at every tick: a reload changes batch size, poll interval and retries.
    cfg: std::sync::RwLock<RelayConfig>,
    db_url: String,
    db_password: Option<String>,
    pool: deadpool_postgres::Pool,
    producer: FutureProducer,
    pub breaker: Arc<Breaker>,
    pub counters: Counters,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").field("name", &self.name).field("source", &self.source).finish()
    }
}

/// The database holding `source`'s outbox.
fn database_of<'a>(config: &'a MeshConfig, source: &OutboxSource) -> Option<&'a paymesh_core::config::DatabaseConfig> {
    match source {
        OutboxSource::Shard(shard) => config.shard(*shard).map(|s| &s.database),
        OutboxSource::Repair(service) => config.repair.as_ref()?.services().find(|(n, _)| n == service).map(|(_, s)| &s.database),
    }
}

/// One claimed outbox row.
struct Row {
    id: i64,
    event_id: String,
    aggregate_id: String,
    event_type: String,
    payload: Vec<u8>,
    traceparent: Option<String>,
    tracestate: Option<String>,
    retry_count: i32,
    created_at: SystemTime,
}

impl Relay {
    /// The `[relay]` settings in effect.
    pub fn settings(&self) -> RelayConfig {
        self.cfg.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Applies a reloaded `[relay]`: batch size, poll interval, retries and their interval at
    /// once; the breaker's settings need a restart (its state would be lost).
    pub fn apply(&self, old: &MeshConfig, new: &MeshConfig, changes: &mut paymesh_core::reload::Changes) {
        let (Some(o), Some(n)) = (&old.relay, &new.relay) else {
            changes.restart_if("relay", old.relay.is_some() != new.relay.is_some());
            return;
        };
        changes.applied_if("relay.batch_size", o.batch_size != n.batch_size);
        changes.applied_if("relay.poll_interval", o.poll_interval != n.poll_interval);
        changes.applied_if("relay.max_retries", o.max_retries != n.max_retries);
        changes.applied_if("relay.retry_interval", o.retry_interval != n.retry_interval);
        changes.restart_if("relay.breaker", o.breaker != n.breaker);
        {
            let mut cfg = self.cfg.write().unwrap_or_else(|e| e.into_inner());
            (cfg.batch_size, cfg.poll_interval, cfg.max_retries, cfg.retry_interval) =
                (n.batch_size, n.poll_interval, n.max_retries, n.retry_interval);
        }
        let mine = |c: &MeshConfig| c.relay.as_ref().and_then(|r| r.instances.iter().find(|i| i.name == self.name).cloned());
        match (mine(old), mine(new)) {
            (Some(a), Some(b)) => {
                changes.restart_if(&format!("relay.instances[{}]", self.name), a.source != b.source || a.status_listen != b.status_listen)
            }
            (_, None) => changes.restart_required.push(format!("relay.instances[{}] (removed: stop this instance)", self.name)),
            _ => {}
        }
        changes.restart_if("kafka", old.kafka != new.kafka);
        changes.restart_if(&format!("{}.database", self.source.label()), database_of(old, &self.source) != database_of(new, &self.source));
    }

    /// Connects to the shard's database and the broker (waiting for the local broker's
    /// address file if it is still starting).
    pub async fn connect(config: &MeshConfig, source: OutboxSource, name: &str) -> Result<Self, RelayError> {
        let relay = config.relay.clone().ok_or_else(|| RelayError::Config("no [relay] section".into()))?;
        let kafka = config.kafka.clone().ok_or_else(|| RelayError::Config("no [kafka] section".into()))?;
        let db = database_of(config, &source).ok_or_else(|| RelayError::Config(format!("{source} is not declared")))?;
        let mut pg: tokio_postgres::Config = db.url.parse().map_err(|e| RelayError::Config(format!("{source} database_url: {e}")))?;
        if let Some(p) = &db.password {
            pg.password(p.expose());
        }
        pg.application_name("paymesh-relay");
        let manager = deadpool_postgres::Manager::new(pg, tokio_postgres::NoTls);
        let pool = deadpool_postgres::Pool::builder(manager).max_size(4).build().map_err(|e| RelayError::Config(e.to_string()))?;
        let bootstrap = kafka.bootstrap.wait(paymesh_core::config::BROKER_PATIENCE).await.map_err(RelayError::Config)?;
        let producer = paymesh_kafka::client::producer(&bootstrap, kafka.message_timeout).map_err(|e| RelayError::Kafka(e.to_string()))?;
        let breaker = Breaker::new(format!("kafka-publisher@{}", source.label()), relay.breaker.clone(), Instant::now());
        Ok(Self {
            name: name.to_owned(),
            source,
            cfg: std::sync::RwLock::new(relay),
            db_url: db.url.clone(),
            db_password: db.password.as_ref().map(|p| p.expose().to_owned()),
            pool,
            producer,
            breaker,
            counters: Counters::default(),
        })
    }

    pub fn database_url(&self) -> String {
        self.db_url.clone()
    }

    pub fn password(&self) -> Option<String> {
        self.db_password.clone()
    }

    /// When an open breaker will let a trial through (`None` if it admits calls now).
    pub fn breaker_retry_in(&self) -> Option<Duration> {
        let s = self.breaker.snapshot(Instant::now());
        (s.state.as_str() == "open").then_some(Duration::from_millis(100))
    }

    pub fn breaker_snapshot(&self) -> Snapshot {
        self.breaker.snapshot(Instant::now())
    }

    /// Rows not yet published (and not dead).
    pub async fn backlog(&self) -> Result<i64, RelayError> {
        let c = self.pool.get().await?;
        Ok(c.query_one("SELECT count(*) FROM outbox_event WHERE NOT published AND NOT dead", &[]).await?.get(0))
    }

    /// Claims one batch, publishes it, and records the outcome, in one transaction.
    pub async fn tick(&self) -> Result<Tick, RelayError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let rows = tx
            // Only a payment's oldest unpublished row is eligible: its next event waits until
            // this one is published (or, dead, re-driven), whichever relay holds it. Rows of
            // one payment are written under its row lock, so id order is commit order.
            .query(
                "SELECT id, event_id::text, aggregate_id, event_type, payload, headers->>'traceparent', headers->>'tracestate', retry_count, created_at
                 FROM outbox_event o
                 WHERE NOT published AND NOT dead AND (next_attempt_at IS NULL OR next_attempt_at <= now())
                   AND NOT EXISTS (SELECT 1 FROM outbox_event e WHERE e.aggregate_id = o.aggregate_id AND e.id < o.id AND NOT e.published)
                 ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
                &[&self.settings().batch_size],
            )
            .await?;
        let rows: Vec<Row> = rows
            .iter()
            .map(|r| Row {
                id: r.get(0),
                event_id: r.get(1),
                aggregate_id: r.get(2),
                event_type: r.get(3),
                payload: r.get(4),
                traceparent: r.get(5),
                tracestate: r.get(6),
                retry_count: r.get(7),
                created_at: r.get(8),
            })
            .collect();
        let mut tick = Tick { claimed: rows.len(), ..Tick::default() };
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(tick);
        }

        // Ask the breaker once per row, in order; stop at the first refusal so the rest wait
        // (in half-open only the trial calls go out).
        let mut admitted = Vec::with_capacity(rows.len());
        for row in &rows {
            match self.breaker.try_acquire(Instant::now()) {
                Ok(p) => admitted.push((row, p)),
                Err(_) => break,
            }
        }
        tick.refused = rows.len() - admitted.len();
        // Failures while the breaker is probing the broker (half-open) say nothing about the
        // events: they do not count toward `max_retries`, so an outage never dead-letters.
        let count_failures = self.breaker.state() != paymesh_core::breaker::State::HalfOpen;
        let sends = admitted.into_iter().map(|(row, permit)| async move {
            // The publish joins the trace of the payment call that wrote the row.
            let span = tracing::info_span!("relay.publish", otel.name = %format!("publish {}", row.event_type), source = %self.source, aggregate_id = %row.aggregate_id, event_id = %row.event_id);
            paymesh_core::telemetry::continue_trace(&span, &|k| match k {
                "traceparent" => row.traceparent.clone(),
                "tracestate" => row.tracestate.clone(),
                _ => None,
            });
            let started = Instant::now();
            let result = tracing::Instrument::instrument(self.send(&row.event_type, row, &[]), span).await;
            (row, permit, started, result)
        });
        let results = join_all(sends).await;

        let mut published = Vec::new();
        for (row, permit, started, result) in results {
            let now = Instant::now();
            match result {
                Ok(()) => {
                    self.breaker.record(permit, false, started.elapsed(), now);
                    self.observe_latency(row.created_at);
                    published.push(row.id);
                }
                Err(e) => {
                    self.breaker.record(permit, true, started.elapsed(), now);
                    tick.failed += 1;
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                    if self.fail(&tx, row, &e, count_failures).await? {
                        tick.dead += 1;
                    }
                }
            }
        }
        if !published.is_empty() {
            tx.execute(
                "UPDATE outbox_event SET published = true, published_at = clock_timestamp(), last_error = NULL WHERE id = ANY($1)",
                &[&published],
            )
            .await?;
        }
        tx.commit().await?;
        tick.published = published.len();
        self.counters.published.fetch_add(published.len() as u64, Ordering::Relaxed);
        self.counters.dead.fetch_add(tick.dead as u64, Ordering::Relaxed);
        Ok(tick)
    }

    /// Publishes one row to `topic` and waits for the broker's acknowledgement.
    async fn send(&self, topic: &str, row: &Row, extra: &[(&str, &str)]) -> Result<(), SendError> {
        let mut hdrs = OwnedHeaders::new()
            .insert(Header { key: headers::EVENT_ID, value: Some(row.event_id.as_str()) })
            .insert(Header { key: headers::EVENT_TYPE, value: Some(row.event_type.as_str()) });
        // The consumer continues the publish span (or, untraced, the payment call's context).
        let (tp, ts) = paymesh_core::telemetry::headers_of(&tracing::Span::current());
        if let Some(tp) = tp.or_else(|| row.traceparent.clone()) {
            hdrs = hdrs.insert(Header { key: headers::TRACEPARENT, value: Some(tp.as_str()) });
        }
        if let Some(ts) = ts.or_else(|| row.tracestate.clone()) {
            hdrs = hdrs.insert(Header { key: headers::TRACESTATE, value: Some(ts.as_str()) });
        }
        for (k, v) in extra {
            hdrs = hdrs.insert(Header { key: k, value: Some(*v) });
        }
        let record = FutureRecord::to(topic).key(row.aggregate_id.as_str()).payload(row.payload.as_slice()).headers(hdrs);
        self.producer.send(record, Timeout::Never).await.map(|_| ()).map_err(|(e, _)| SendError::from(e))
    }

    /// Records a failed attempt. Returns true if the row went to the DLQ and is now dead.
    ///
    /// Only a permanent refusal (the broker will never take this message) counts toward
    /// `max_retries`; a transport or availability failure (timeouts, a broker or leader
    /// down, not enough replicas) says nothing about the event, so the row waits and is
    /// retried for as long as it takes, never dead-lettered.
    async fn fail(&self, tx: &tokio_postgres::Transaction<'_>, row: &Row, error: &SendError, counts: bool) -> Result<bool, RelayError> {
        let counts = counts && error.permanent;
        let error = error.message.as_str();
        let retries = row.retry_count + 1;
        if counts && retries >= self.settings().max_retries {
            let origin = format!("{}#{}", row.event_type, row.id);
            if self.send(topics::RELAY_DLQ, row, &[(headers::ERROR, error), (headers::ORIGIN, origin.as_str())]).await.is_ok() {
                tx.execute(
                    "UPDATE outbox_event SET dead = true, retry_count = $2, last_retry_at = now(), last_error = $3 WHERE id = $1",
                    &[&row.id, &retries, &error],
                )
                .await?;
                tracing::error!(event_id = %row.event_id, retries, %error, "event sent to the DLQ after its last retry");
                return Ok(true);
            }
        }
        let wait = self.settings().retry_interval.as_secs_f64();
        tx.execute(
            "UPDATE outbox_event SET retry_count = $2, last_retry_at = now(), next_attempt_at = now() + make_interval(secs => $3), last_error = $4 WHERE id = $1",
            &[&row.id, &retries, &wait, &error],
        )
        .await?;
        Ok(false)
    }

    fn observe_latency(&self, created_at: SystemTime) {
        let latency = SystemTime::now().duration_since(created_at).unwrap_or_default();
        let c = &self.counters;
        c.latency_sum_us.fetch_add(latency.as_micros() as u64, Ordering::Relaxed);
        c.latency_count.fetch_add(1, Ordering::Relaxed);
        let secs = latency.as_secs_f64();
        for (i, bound) in LATENCY_BOUNDS.iter().enumerate() {
            if secs <= *bound {
                c.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// A failed publish: what the broker or client said, and whether retrying can ever help.
#[derive(Debug)]
struct SendError {
    message: String,
    permanent: bool,
}

impl From<rdkafka::error::KafkaError> for SendError {
    fn from(e: rdkafka::error::KafkaError) -> Self {
        use rdkafka::types::RDKafkaErrorCode as C;
        let permanent = match &e {
            rdkafka::error::KafkaError::MessageProduction(code) => matches!(
                code,
                C::MessageSizeTooLarge
                    | C::InvalidMessageSize
                    | C::InvalidMessage
                    | C::InvalidRecord
                    | C::TopicAuthorizationFailed
                    | C::ClusterAuthorizationFailed
                    | C::InvalidTopic
                    | C::InvalidRequiredAcks
                    | C::UnsupportedForMessageFormat
                    | C::PolicyViolation
            ),
            _ => false,
        };
        Self { message: e.to_string(), permanent }
    }
}
