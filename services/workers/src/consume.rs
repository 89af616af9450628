//! The consume loop every worker shares.
//!
//! For each message: decode it and apply it in one transaction that first records
//! `(worker kind, event id)` in `processed_events`; if that row already exists the event was
//! applied before (a redelivery after a crash, or a duplicate publish) and the transaction
//! does nothing else. Only after the commit is the Kafka offset committed, so a crash at any
//! point replays at most the messages whose offsets were not committed, and the dedupe row
//! makes the replay harmless: every event is applied exactly once.
//!
//! Failures are classified ([`Failure`]). A *transient* one (the database restarting, a
//! connection cut, the pool exhausted, a serialization failure or deadlock, out of
//! resources) says nothing about the message: it is retried without limit with a capped
//! backoff, its offset is not committed, and the loop takes no other message meanwhile (every
//! assigned partition waits). Only *poison* (a message that cannot be decoded, or that the
//! database rejects as invalid data or a constraint violation) is retried `max_attempts`
//! times and then published to the worker's DLQ with the error, its offset committed, so the
//! partition moves on. `cargo xtask redrive` re-publishes DLQ messages once fixed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use paymesh_core::backoff::Backoff;
use paymesh_core::config::{MeshConfig, WorkerKind};
use paymesh_kafka::event::{self, Event};
use paymesh_kafka::topics::{self, headers};
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

use crate::{db, ledger, settlement, view};

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("{0}")]
    Config(String),
    #[error("database: {0}")]
    Database(String),
    #[error("kafka: {0}")]
    Kafka(String),
}

/// Why a message could not be applied, which decides what happens to it.
#[derive(Debug)]
pub enum Failure {
    /// Nothing is wrong with the message; the database (or the way to it) is. Retried
    /// without limit; never dead-lettered.
    Transient(String),
    /// The message itself cannot be applied (undecodable, or rejected by the database as
    /// invalid data). Retried `max_attempts` times, then dead-lettered.
    Poison(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Transient(e) => write!(f, "transient: {e}"),
            Self::Poison(e) => write!(f, "{e}"),
        }
    }
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        // The server's own words (SQLSTATE, message, constraint), not just "db error".
        let text = match e.as_db_error() {
            Some(db) => format!(
                "database: {} (SQLSTATE {}{})",
                db.message(),
                db.code().code(),
                db.constraint().map(|c| format!(", constraint {c}")).unwrap_or_default()
            ),
            None => format!("database: {e}"),
        };
        if is_poison(&e) { Self::Poison(text) } else { Self::Transient(text) }
    }
}

/// Only what the database rejects as bad data is the message's fault: SQLSTATE class 22
/// (data exception: out of range, invalid text) and 23 (integrity constraint violation).
/// Everything else (class 08 connection, 40 serialization/deadlock, 53 resources, 57
/// operator intervention such as an admin or crash shutdown, a closed connection, I/O) is
/// the database's state and passes. A message wrongly thought transient stalls its worker,
/// visibly (`paymesh_worker_transient_failures_total`); one wrongly thought poison would be
/// dropped from the books, so unknown errors count as transient.
pub fn is_poison(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|db| {
        let code = db.code().code();
        code.starts_with("22") || code.starts_with("23")
    })
}

/// The loop was told to stop while a message was in hand.
#[derive(Debug)]
struct Stopped;

/// One worker process (or in-process instance).
pub struct Worker {
    pub kind: WorkerKind,
    pub name: String,
    pool: deadpool_postgres::Pool,
    consumer: StreamConsumer,
    dlq: FutureProducer,
    /// Read for every failure: a reload changes it.
    max_attempts: std::sync::atomic::AtomicU32,
    /// Events applied by this instance (not counting skipped duplicates).
    pub applied: AtomicU64,
    pub duplicates: AtomicU64,
    pub dead_lettered: AtomicU64,
    /// Attempts that failed transiently (each retried later).
    pub transient_failures: AtomicU64,
    /// Messages behind the head of the assigned partitions, measured every few seconds.
    pub lag: AtomicU64,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("kind", &self.kind).field("name", &self.name).finish()
    }
}

impl Worker {
    /// Applies a reloaded config: `workers.max_attempts` at once; the rest of what concerns
    /// this worker (its database, the broker, its status address, its kind) needs a restart.
    pub fn apply_config(&self, old: &MeshConfig, new: &MeshConfig, changes: &mut paymesh_core::reload::Changes) {
        let (Some(o), Some(n)) = (&old.workers, &new.workers) else {
            changes.restart_if("workers", old.workers.is_some() != new.workers.is_some());
            return;
        };
        if o.max_attempts != n.max_attempts {
            self.max_attempts.store(n.max_attempts, Ordering::Relaxed);
            changes.applied.push("workers.max_attempts".into());
        }
        changes.restart_if("workers.database", o.database != n.database);
        let mine =
            |w: &paymesh_core::config::WorkersConfig| w.instances.iter().find(|i| i.name == self.name).map(|i| (i.kind, i.status_listen));
        match (mine(o), mine(n)) {
            (Some(a), Some(b)) => changes.restart_if(&format!("workers.instances[{}]", self.name), a != b),
            (_, None) => changes.restart_required.push(format!("workers.instances[{}] (removed: stop this instance)", self.name)),
            _ => {}
        }
        changes.restart_if("kafka", old.kafka != new.kafka);
    }

    /// Connects to the workers' database (applying migrations) and joins the kind's
    /// consumer group.
    pub async fn connect(config: &MeshConfig, kind: WorkerKind, name: &str, bootstrap: &str) -> Result<Self, WorkerError> {
        let w = config.workers.as_ref().ok_or_else(|| WorkerError::Config("the mesh config has no [workers] section".into()))?;
        let kafka = config.kafka.as_ref().ok_or_else(|| WorkerError::Config("the mesh config has no [kafka] section".into()))?;
        let pool = db::pool(&w.database, &format!("paymesh-{}", kind.as_str())).map_err(WorkerError::Config)?;
        db::migrate(&pool).await.map_err(WorkerError::Database)?;
        let consumer = paymesh_kafka::client::consumer(bootstrap, kind.as_str(), name).map_err(|e| WorkerError::Kafka(e.to_string()))?;
        consumer.subscribe(&topics::EVENT_TOPICS).map_err(|e| WorkerError::Kafka(e.to_string()))?;
        let dlq = paymesh_kafka::client::producer(bootstrap, kafka.message_timeout).map_err(|e| WorkerError::Kafka(e.to_string()))?;
        Ok(Self {
            kind,
            name: name.to_owned(),
            pool,
            consumer,
            dlq,
            max_attempts: std::sync::atomic::AtomicU32::new(w.max_attempts),
            applied: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            transient_failures: AtomicU64::new(0),
            lag: AtomicU64::new(0),
        })
    }

    pub fn pool(&self) -> &deadpool_postgres::Pool {
        &self.pool
    }

    /// Sum over the assigned partitions of (high watermark - committed position).
    pub fn measure_lag(&self) -> Option<u64> {
        let assignment = self.consumer.assignment().ok()?;
        let committed = self.consumer.committed_offsets(assignment, Duration::from_secs(2)).ok()?;
        let mut lag = 0u64;
        for e in committed.elements() {
            let (_, high) = self.consumer.fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(2)).ok()?;
            let pos = match e.offset() {
                rdkafka::Offset::Offset(o) => o,
                _ => 0,
            };
            lag += u64::try_from(high - pos).unwrap_or(0);
        }
        self.lag.store(lag, Ordering::Relaxed);
        Some(lag)
    }

    /// Consumes until `shutdown` resolves. A message being retried when it does is left
    /// uncommitted (it is redelivered to whoever consumes the partition next).
    pub async fn run(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let consume = async {
            let mut idle_stop = stop.clone();
            loop {
                let msg = tokio::select! {
                    m = self.consumer.recv() => m,
                    _ = idle_stop.changed() => return,
                };
                match msg {
                    Ok(m) => {
                        if self.handle(&m, stop.clone()).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(worker = %self.name, error = %e, "consumer error");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        };
        tokio::pin!(consume);
        tokio::pin!(shutdown);
        tokio::select! {
            () = &mut consume => {}
            () = &mut shutdown => {
                // Let the message in hand finish its current attempt (a commit in progress
                // is not cut short), but start no new one.
                let _ = stop_tx.send(true);
                consume.await;
            }
        }
    }

    /// Applies `m` (retrying as its failures call for) and then commits its offset. Returns
    /// `Err` if `stop` fired first: the message is left uncommitted.
    async fn handle(&self, m: &BorrowedMessage<'_>, mut stop: tokio::sync::watch::Receiver<bool>) -> Result<(), Stopped> {
        let mut poison_attempts = 0;
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
        loop {
            if *stop.borrow() {
                return Err(Stopped);
            }
            let wait = match self.process(m).await {
                Ok(()) => break,
                Err(Failure::Transient(e)) => {
                    self.transient_failures.fetch_add(1, Ordering::Relaxed);
                    let wait = backoff.next_wait();
                    tracing::warn!(worker = %self.name, topic = m.topic(), offset = m.offset(), error = %e, retry_in = ?wait, "applying failed transiently; retrying (offset not committed)");
                    wait
                }
                Err(Failure::Poison(e)) if poison_attempts + 1 < self.max_attempts.load(Ordering::Relaxed) => {
                    poison_attempts += 1;
                    tracing::warn!(worker = %self.name, topic = m.topic(), offset = m.offset(), attempt = poison_attempts, error = %e, "message rejected; retrying before dead-lettering");
                    Duration::from_millis(20 * u64::from(poison_attempts))
                }
                Err(Failure::Poison(e)) => match self.dead_letter(m, &e).await {
                    Ok(()) => break,
                    Err(d) => {
                        // Without a DLQ write the message must not be skipped: retry it later.
                        tracing::error!(worker = %self.name, error = %d, "cannot write to the DLQ; will retry the message");
                        backoff.next_wait()
                    }
                },
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return Err(Stopped),
            }
        }
        // Only now: the effect is committed (or dead-lettered).
        tracing::debug!(worker = %self.name, topic = m.topic(), partition = m.partition(), offset = m.offset(), "applied; committing the offset");
        if let Err(e) = self.consumer.commit_message(m, CommitMode::Sync) {
            tracing::warn!(worker = %self.name, error = %e, "offset commit failed; the message may be redelivered (and skipped as a duplicate)");
        }
        Ok(())
    }

    /// Decodes and applies one message exactly once, in a span that joins the publisher's
    /// trace (`traceparent` header).
    async fn process(&self, m: &BorrowedMessage<'_>) -> Result<(), Failure> {
        use rdkafka::message::Headers as _;
        let header = |k: &str| {
            m.headers().and_then(|h| h.iter().find(|h| h.key == k).and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned())))
        };
        let span = tracing::info_span!("worker.apply", otel.name = %format!("{} {}", self.kind.as_str(), m.topic()), worker = %self.name, topic = m.topic(), partition = m.partition(), offset = m.offset());
        paymesh_core::telemetry::continue_trace(&span, &header);
        tracing::Instrument::instrument(self.apply(m), span).await
    }

    async fn apply(&self, m: &BorrowedMessage<'_>) -> Result<(), Failure> {
        let e: Event = event::decode(m.topic(), m.payload().unwrap_or_default()).map_err(|e| Failure::Poison(e.to_string()))?;
        let event_id =
            uuid::Uuid::parse_str(&e.event_id).map_err(|_| Failure::Poison(format!("event id '{}' is not a UUID", e.event_id)))?;
        let mut client = self.pool.get().await.map_err(|e| Failure::Transient(format!("database pool: {e}")))?;
        let tx = client.transaction().await?;
        let fresh = tx
            .execute(
                "INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&self.kind.as_str(), &event_id],
            )
            .await?;
        if fresh == 0 {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
            return Ok(tx.commit().await?);
        }
        let applied = match self.kind {
            WorkerKind::Ledger => ledger::apply(&tx, event_id, &e).await,
            WorkerKind::Settlement => settlement::apply(&tx, &e).await,
            WorkerKind::View => view::apply(&tx, &e).await,
        };
        applied?;
        tx.commit().await?;
        self.applied.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn dead_letter(&self, m: &BorrowedMessage<'_>, error: &str) -> Result<(), String> {
        use rdkafka::message::Headers as _;
        let origin = format!("{}/{}/{}", m.topic(), m.partition(), m.offset());
        // The original headers (event id and type, trace context) travel along, so a re-drive
        // publishes the message as it was.
        let mut hdrs = OwnedHeaders::new();
        if let Some(h) = m.headers() {
            for h in h.iter().filter(|h| h.key != headers::ERROR && h.key != headers::ORIGIN) {
                hdrs = hdrs.insert(Header { key: h.key, value: h.value });
            }
        }
        let hdrs = hdrs
            .insert(Header { key: headers::ERROR, value: Some(error) })
            .insert(Header { key: headers::ORIGIN, value: Some(origin.as_str()) });
        let topic = topics::worker_dlq(self.kind.as_str());
        let mut record = FutureRecord::to(&topic).payload(m.payload().unwrap_or_default()).headers(hdrs);
        if let Some(k) = m.key() {
            record = record.key(k);
        }
        self.dlq.send(record, Timeout::After(Duration::from_secs(10))).await.map_err(|(e, _)| e.to_string())?;
        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
        tracing::error!(worker = %self.name, %origin, %error, "message sent to the DLQ");
        Ok(())
    }
}

/// Runs worker instance `name` of `config` until `shutdown` resolves.
pub async fn run(config: &MeshConfig, name: &str, shutdown: impl std::future::Future<Output = ()>) -> Result<(), WorkerError> {
    let w = config.workers.as_ref().ok_or_else(|| WorkerError::Config("the mesh config has no [workers] section".into()))?;
    let inst = w
        .instances
        .iter()
        .find(|i| i.name == name)
        .ok_or_else(|| WorkerError::Config(format!("no [[workers.instances]] is named '{name}'")))?;
    let kafka = config.kafka.as_ref().ok_or_else(|| WorkerError::Config("no [kafka] section".into()))?;
    let bootstrap = kafka.bootstrap.wait(paymesh_core::config::BROKER_PATIENCE).await.map_err(WorkerError::Config)?;
    let worker = Arc::new(Worker::connect(config, inst.kind, name, &bootstrap).await?);
    let listener = tokio::net::TcpListener::bind(inst.status_listen)
        .await
        .map_err(|e| WorkerError::Config(format!("cannot listen on {}: {e}", inst.status_listen)))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Reloads (SIGHUP, POST /config/reload on the status listener) change what they can.
    let live = {
        let worker = worker.clone();
        paymesh_core::reload::Live::new(config, Box::new(move |old, new, changes| worker.apply_config(old, new, changes)))
    };
    paymesh_core::reload::register(&live);
    let status = tokio::spawn(status(listener, worker.clone(), live, stop_rx.clone()));
    tokio::spawn({
        let (w, mut stop) = (worker.clone(), stop_rx.clone());
        async move {
            loop {
                let w2 = w.clone();
                let _ = tokio::task::spawn_blocking(move || w2.measure_lag()).await;
                tokio::select! {
                    _ = stop.changed() => return,
                    () = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
        }
    });
    if inst.kind == WorkerKind::Settlement {
        tokio::spawn(close_batches(worker.clone(), stop_rx.clone()));
    }
    tracing::info!(worker = name, kind = inst.kind.as_str(), "worker running");
    worker.run(shutdown).await;
    let _ = stop_tx.send(true);
    let _ = status.await;
    tracing::info!(worker = name, "worker stopped");
    Ok(())
}

/// Closes the batches of finished days, once a minute.
async fn close_batches(worker: Arc<Worker>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        if let Ok(c) = worker.pool.get().await {
            match settlement::close_past_days(&c).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(closed = n, "settlement batches closed"),
                Err(e) => tracing::warn!(error = %e, "cannot close settlement batches"),
            }
        }
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
    }
}

async fn status(
    listener: tokio::net::TcpListener,
    worker: Arc<Worker>,
    live: Arc<paymesh_core::reload::Live>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use paymesh_core::status::{Reply, serve_with};
    let reloads = live.clone();
    serve_with(
        listener,
        move |path| {
            let (w, reloads) = (worker.clone(), reloads.clone());
            async move {
                let (applied, dup, dead) = (w.applied.load(Ordering::Relaxed), w.duplicates.load(Ordering::Relaxed), w.dead_lettered.load(Ordering::Relaxed));
                let lag = w.lag.load(Ordering::Relaxed);
                let transient = w.transient_failures.load(Ordering::Relaxed);
                let kind = w.kind.as_str();
                match path.as_str() {
                    "/status" => Reply::json(format!(
                        "{{\"worker\":\"{}\",\"kind\":\"{kind}\",\"applied\":{applied},\"duplicates\":{dup},\"dead_lettered\":{dead},\"lag\":{lag},\"transient_failures\":{transient}}}",
                        w.name
                    )),
                    "/metrics" => {
                        let l = format!("worker=\"{}\",kind=\"{kind}\"", w.name);
                        Reply::metrics(format!(
                            "# HELP paymesh_worker_applied_total Events applied.\n# TYPE paymesh_worker_applied_total counter\npaymesh_worker_applied_total{{{l}}} {applied}\n\
                             # HELP paymesh_worker_duplicates_total Redelivered events skipped by the dedupe record.\n# TYPE paymesh_worker_duplicates_total counter\npaymesh_worker_duplicates_total{{{l}}} {dup}\n\
                             # HELP paymesh_worker_dlq_total Messages sent to the DLQ.\n# TYPE paymesh_worker_dlq_total counter\npaymesh_worker_dlq_total{{{l}}} {dead}\n\
                             # HELP paymesh_worker_transient_failures_total Attempts that failed because of the database (retried, never dead-lettered).\n# TYPE paymesh_worker_transient_failures_total counter\npaymesh_worker_transient_failures_total{{{l}}} {transient}\n\
                             # HELP paymesh_worker_lag_messages Messages of the assigned partitions not yet committed.\n# TYPE paymesh_worker_lag_messages gauge\npaymesh_worker_lag_messages{{{l}}} {lag}\n{}",
                            {
                                let mut r = String::new();
                                reloads.render_metrics(&mut r);
                                r
                            }
                        ))
                    }
                    _ => Reply::not_found(&path, "/status, /metrics, POST /config/reload"),
                }
            }
        },
        Some(live),
        async move {
            let _ = stop.changed().await;
        },
    )
    .await;
}
