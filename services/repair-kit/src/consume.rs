//! The repair consumers' loop (the service desk's list, the progress view): each message is
//! applied exactly once.
//!
//! A message is applied in one transaction that first records its event id in
//! `processed_event`; a redelivered message finds its row and changes nothing else. Only
//! after that commit is the offset committed, so a consumer stopped or killed at any point
//! replays at most the uncommitted messages, harmlessly, when it (or another member of its
//! group) takes the partition again: requests filed while a consumer was down are applied
//! when it is back, and consumers in one group share the partitions without duplicates.
//!
//! A database failure is retried without limit (its offset held); a message the database
//! rejects as bad data, or that cannot be decoded, is retried a few times and then sent to
//! `<group>.dlq` with the error, so one bad message never stops the partition.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Header, Headers as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

/// The dedupe table every consumer's database has (add it to the service's migrations).
pub const DDL: &str =
    "CREATE TABLE processed_event (event_id uuid PRIMARY KEY, topic text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now());";

/// Tries of a rejected message before it goes to the DLQ.
const POISON_ATTEMPTS: u32 = 5;

/// Why a message could not be applied.
#[derive(Debug)]
pub enum Failure {
    /// The database (or the way to it): retried without limit.
    Transient(String),
    /// The message: retried a few times, then dead-lettered.
    Poison(String),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        let text = crate::db::describe(&e);
        // Data exceptions (22) and constraint violations (23) are the message's fault;
        // anything else is the database's state, and unknown errors count as transient.
        let poison = e.as_db_error().is_some_and(|db| ["22", "23"].iter().any(|c| db.code().code().starts_with(c)));
        if poison { Self::Poison(text) } else { Self::Transient(text) }
    }
}

/// What a consumer does with one message, inside the transaction that recorded it.
pub trait Apply: Send + Sync + 'static {
    fn apply<'a>(
        &'a self,
        tx: &'a tokio_postgres::Transaction<'a>,
        topic: &'a str,
        payload: &'a [u8],
    ) -> Pin<Box<dyn Future<Output = Result<(), Failure>> + Send + 'a>>;
}

/// Counters for the status listener.
#[derive(Debug, Default)]
pub struct Counters {
    pub applied: AtomicU64,
    pub duplicates: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub transient_failures: AtomicU64,
}

/// One member of a consumer group.
pub struct Consumer<A> {
    name: String,
    group: String,
    apply: A,
    pool: deadpool_postgres::Pool,
    consumer: StreamConsumer,
    dlq: FutureProducer,
    pub counters: Arc<Counters>,
}

impl<A> std::fmt::Debug for Consumer<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer").field("name", &self.name).field("group", &self.group).finish()
    }
}

impl<A: Apply> Consumer<A> {
    /// Joins `group` on `topics` at `bootstrap`.
    pub fn new(name: &str, group: &str, topics: &[&str], bootstrap: &str, pool: deadpool_postgres::Pool, apply: A) -> Result<Self, String> {
        let consumer: StreamConsumer =
            paymesh_kafka::client::consumer(bootstrap, group, name).map_err(|e| format!("cannot join consumer group {group}: {e}"))?;
        consumer.subscribe(topics).map_err(|e| format!("cannot subscribe to {topics:?}: {e}"))?;
        let dlq = paymesh_kafka::client::producer(bootstrap, Duration::from_secs(10))
            .map_err(|e| format!("cannot create the DLQ producer: {e}"))?;
        Ok(Self { name: name.to_owned(), group: group.to_owned(), apply, pool, consumer, dlq, counters: Arc::default() })
    }

    /// Consumes until `stop` fires; a message being retried then is left uncommitted.
    pub async fn run(&self, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            let msg = tokio::select! {
                m = self.consumer.recv() => m,
                _ = stop.changed() => return,
            };
            match msg {
                Ok(m) => {
                    if !self.handle(&m, &stop).await {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(consumer = %self.name, error = %e, "consumer error");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Applies `m` as its failures call for, then commits its offset; `false` if stopped.
    async fn handle(&self, m: &BorrowedMessage<'_>, stop: &tokio::sync::watch::Receiver<bool>) -> bool {
        let mut poison = 0;
        let mut backoff = paymesh_core::backoff::Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
        loop {
            if *stop.borrow() {
                return false;
            }
            let wait = match self.process(m).await {
                Ok(()) => break,
                Err(Failure::Transient(e)) => {
                    self.counters.transient_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(consumer = %self.name, topic = m.topic(), offset = m.offset(), error = %e, "applying failed transiently; retrying (offset held)");
                    backoff.next_wait()
                }
                Err(Failure::Poison(e)) if poison + 1 < POISON_ATTEMPTS => {
                    poison += 1;
                    tracing::warn!(consumer = %self.name, topic = m.topic(), offset = m.offset(), attempt = poison, error = %e, "message rejected; retrying");
                    Duration::from_millis(20 * u64::from(poison))
                }
                Err(Failure::Poison(e)) => match self.dead_letter(m, &e).await {
                    Ok(()) => break,
                    Err(d) => {
                        tracing::error!(consumer = %self.name, error = %d, "cannot write to the DLQ; will retry the message");
                        backoff.next_wait()
                    }
                },
            };
            let mut stop = stop.clone();
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return false,
            }
        }
        if let Err(e) = self.consumer.commit_message(m, CommitMode::Sync) {
            tracing::warn!(consumer = %self.name, error = %e, "offset commit failed; the message may come again (and be skipped)");
        }
        true
    }

    async fn process(&self, m: &BorrowedMessage<'_>) -> Result<(), Failure> {
        let header = |k: &str| {
            m.headers().and_then(|h| h.iter().find(|h| h.key == k).and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned())))
        };
        let span = tracing::info_span!("repair.apply", otel.name = %format!("{} {}", self.group, m.topic()), consumer = %self.name, topic = m.topic(), offset = m.offset());
        paymesh_core::telemetry::continue_trace(&span, &header);
        let event_id = header("event-id").ok_or_else(|| Failure::Poison("the message has no event-id header".into()))?;
        let event_id = uuid::Uuid::parse_str(&event_id).map_err(|_| Failure::Poison(format!("event id '{event_id}' is not a UUID")))?;
        tracing::Instrument::instrument(
            async {
                let mut client = self.pool.get().await.map_err(|e| Failure::Transient(format!("database pool: {e}")))?;
                let tx = client.transaction().await?;
                let fresh = tx
                    .execute(
                        "INSERT INTO processed_event (event_id, topic) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                        &[&event_id, &m.topic()],
                    )
                    .await?;
                if fresh == 0 {
                    self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
                    return Ok(tx.commit().await?);
                }
                self.apply.apply(&tx, m.topic(), m.payload().unwrap_or_default()).await?;
                tx.commit().await?;
                self.counters.applied.fetch_add(1, Ordering::Relaxed);
                Ok(())
            },
            span,
        )
        .await
    }

    async fn dead_letter(&self, m: &BorrowedMessage<'_>, error: &str) -> Result<(), String> {
        let origin = format!("{}/{}/{}", m.topic(), m.partition(), m.offset());
        let mut hdrs = OwnedHeaders::new();
        if let Some(h) = m.headers() {
            for h in h.iter() {
                hdrs = hdrs.insert(Header { key: h.key, value: h.value });
            }
        }
        let hdrs =
            hdrs.insert(Header { key: "dlq-error", value: Some(error) }).insert(Header { key: "dlq-origin", value: Some(origin.as_str()) });
        let topic = format!("{}.dlq", self.group);
        let mut record = FutureRecord::to(&topic).payload(m.payload().unwrap_or_default()).headers(hdrs);
        if let Some(k) = m.key() {
            record = record.key(k);
        }
        self.dlq.send(record, Timeout::After(Duration::from_secs(10))).await.map_err(|(e, _)| e.to_string())?;
        self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
        tracing::error!(consumer = %self.name, %origin, %error, "message sent to the DLQ");
        Ok(())
    }
}

/// A consumer's counters in Prometheus text (`paymesh_<group>_events_*`), for the status
/// listener.
pub fn metrics(group: &str, name: &str, counters: Arc<Counters>) -> crate::serve::Metrics {
    let (group, label) = (group.to_owned(), format!("instance=\"{name}\""));
    Arc::new(move || {
        let c = &counters;
        let mut out = String::new();
        for (what, help, value) in [
            ("events_applied_total", "Events applied.", &c.applied),
            ("events_duplicate_total", "Redelivered events skipped by their dedupe record.", &c.duplicates),
            ("dlq_total", "Messages sent to the DLQ.", &c.dead_lettered),
            ("transient_failures_total", "Attempts that failed because of the database (retried).", &c.transient_failures),
        ] {
            let name = format!("paymesh_{group}_{what}");
            out += &format!("# HELP {name} {help}\n# TYPE {name} counter\n{name}{{{label}}} {}\n", value.load(Ordering::Relaxed));
        }
        out
    })
}
