//! Re-driving dead-lettered events, once whatever made them fail is fixed.
//!
//! Two places hold them:
//! - the shards' outbox rows marked `dead` (the relay's DLQ topic `payment.dlq` carries a copy
//!   of each, for inspection): re-driving clears `dead` and the retry state, and the relays
//!   publish the row again, in its payment's order (a dead row holds back that payment's later
//!   events, so nothing overtook it);
//! - each worker's DLQ topic (`ledger.dlq`, ...): re-driving publishes every message not yet
//!   re-driven back to the topic it came from (its `dlq-origin` header), with its key and
//!   headers, then commits the DLQ position of the `paymesh-redrive` consumer group, so a
//!   message is re-driven once. The workers apply each event once (`processed_events`), so a
//!   re-driven event that some worker had applied already changes nothing there.

use std::time::Duration;

use paymesh_core::config::MeshConfig;
use paymesh_kafka::topics::{self, headers};
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};

/// The consumer group whose committed DLQ positions mark what was re-driven.
pub const GROUP: &str = "paymesh-redrive";

const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);

/// A dead outbox row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadRow {
    pub shard: u32,
    pub id: i64,
    pub event_id: String,
    pub event_type: String,
    pub payment_id: String,
    pub error: String,
}

/// A message in a worker's DLQ, not yet re-driven.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlqMessage {
    pub dlq: String,
    pub partition: i32,
    pub offset: i64,
    /// `topic/partition/offset` it was consumed from.
    pub origin: String,
    pub payment_id: String,
    pub event_id: String,
    pub error: String,
}

/// What is dead-lettered (before a re-drive) or what was re-driven.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub rows: Vec<DeadRow>,
    pub messages: Vec<DlqMessage>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "dead outbox rows: {}", self.rows.len())?;
        for r in &self.rows {
            writeln!(f, "  shard {} row {} {} {} event {}: {}", r.shard, r.id, r.event_type, r.payment_id, r.event_id, r.error)?;
        }
        writeln!(f, "worker DLQ messages: {}", self.messages.len())?;
        for m in &self.messages {
            writeln!(f, "  {}/{}/{} from {} {} event {}: {}", m.dlq, m.partition, m.offset, m.origin, m.payment_id, m.event_id, m.error)?;
        }
        Ok(())
    }
}

/// Lists what is dead-lettered, changing nothing.
pub async fn list(config: &MeshConfig) -> Result<Report, String> {
    Ok(Report { rows: dead_rows(config, false).await?, messages: dlq_messages(config, false).await? })
}

/// Re-drives everything dead-lettered and reports what it re-drove.
pub async fn redrive(config: &MeshConfig) -> Result<Report, String> {
    Ok(Report { rows: dead_rows(config, true).await?, messages: dlq_messages(config, true).await? })
}

/// The dead outbox rows of every shard; with `revive`, made publishable again.
pub async fn dead_rows(config: &MeshConfig, revive: bool) -> Result<Vec<DeadRow>, String> {
    let mut out = Vec::new();
    for shard in &config.shards {
        let db = &shard.database;
        let mut pg: tokio_postgres::Config = db.url.parse().map_err(|e| format!("shard {}: database_url: {e}", shard.id))?;
        if let Some(p) = &db.password {
            pg.password(p.expose());
        }
        pg.application_name("paymesh-redrive");
        pg.connect_timeout(db.connect_timeout);
        let (client, conn) = pg.connect(tokio_postgres::NoTls).await.map_err(|e| {
            let cause = std::error::Error::source(&e).map(|c| format!(": {c}")).unwrap_or_default();
            format!(
                "shard {}: cannot connect to {} ({e}{cause}); is the stack running (cargo xtask up)?",
                shard.id,
                paymesh_core::config::redact_url(&db.url)
            )
        })?;
        let conn = tokio::spawn(conn);
        let sql = if revive {
            "UPDATE outbox_event SET dead = false, retry_count = 0, next_attempt_at = NULL
             WHERE dead RETURNING id, event_id::text, event_type, aggregate_id, coalesce(last_error, '')"
        } else {
            "SELECT id, event_id::text, event_type, aggregate_id, coalesce(last_error, '') FROM outbox_event WHERE dead ORDER BY id"
        };
        let rows = client.query(sql, &[]).await.map_err(|e| format!("shard {}: {e}", shard.id))?;
        out.extend(rows.iter().map(|r| DeadRow {
            shard: shard.id.0,
            id: r.get(0),
            event_id: r.get(1),
            event_type: r.get(2),
            payment_id: r.get(3),
            error: r.get(4),
        }));
        drop(client);
        let _ = conn.await;
    }
    out.sort_by_key(|r| (r.shard, r.id));
    Ok(out)
}

/// The worker DLQ messages not yet re-driven; with `republish`, re-driven.
pub async fn dlq_messages(config: &MeshConfig, republish: bool) -> Result<Vec<DlqMessage>, String> {
    let Some(kafka) = &config.kafka else { return Ok(Vec::new()) };
    let bootstrap = kafka.bootstrap.resolve()?;
    let consumer: StreamConsumer =
        paymesh_kafka::client::consumer(&bootstrap, GROUP, "paymesh-redrive").map_err(|e| format!("kafka consumer: {e}"))?;
    let producer: FutureProducer =
        paymesh_kafka::client::producer(&bootstrap, kafka.message_timeout).map_err(|e| format!("kafka producer: {e}"))?;
    let dlqs: Vec<String> = ["ledger", "settlement", "view"].iter().map(|k| topics::worker_dlq(k)).collect();

    // Every partition of every worker DLQ, from the group's committed position, up to the
    // end as it is now.
    let mut assignment = TopicPartitionList::new();
    let mut ends = Vec::new();
    for dlq in &dlqs {
        let meta = consumer.fetch_metadata(Some(dlq), KAFKA_TIMEOUT).map_err(|e| format!("{dlq}: metadata: {e}"))?;
        for t in meta.topics() {
            for p in t.partitions() {
                let (_, high) = consumer.fetch_watermarks(dlq, p.id(), KAFKA_TIMEOUT).map_err(|e| format!("{dlq}/{}: {e}", p.id()))?;
                assignment.add_partition_offset(dlq, p.id(), Offset::Stored).map_err(|e| e.to_string())?;
                ends.push((dlq.clone(), p.id(), high));
            }
        }
    }
    let committed = consumer.committed_offsets(assignment.clone(), KAFKA_TIMEOUT).map_err(|e| format!("committed offsets: {e}"))?;
    let mut pending: Vec<(String, i32, i64)> = ends
        .into_iter()
        .filter(|(t, p, high)| {
            let from = committed.find_partition(t, *p).and_then(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            });
            from.unwrap_or(0) < *high
        })
        .collect();
    if pending.is_empty() {
        return Ok(Vec::new());
    }
    consumer.assign(&assignment).map_err(|e| format!("assign: {e}"))?;
    let mut out = Vec::new();
    while !pending.is_empty() {
        let m = tokio::time::timeout(KAFKA_TIMEOUT, consumer.recv())
            .await
            .map_err(|_| format!("the DLQs did not deliver their messages within {KAFKA_TIMEOUT:?}"))?
            .map_err(|e| format!("reading the DLQs: {e}"))?;
        let header = |k: &str| {
            m.headers()
                .and_then(|h| h.iter().find(|h| h.key == k).and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned())))
                .unwrap_or_default()
        };
        let origin = header(headers::ORIGIN);
        let entry = DlqMessage {
            dlq: m.topic().to_owned(),
            partition: m.partition(),
            offset: m.offset(),
            origin: origin.clone(),
            payment_id: m.key().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default(),
            event_id: header(headers::EVENT_ID),
            error: header(headers::ERROR),
        };
        if republish {
            let topic = origin.split('/').next().filter(|t| topics::EVENT_TOPICS.contains(t)).ok_or_else(|| {
                format!("{}/{}/{}: dlq-origin '{origin}' names no event topic; not re-driven", entry.dlq, entry.partition, entry.offset)
            })?;
            let mut hdrs = OwnedHeaders::new();
            if let Some(h) = m.headers() {
                for h in h.iter().filter(|h| h.key != headers::ERROR && h.key != headers::ORIGIN) {
                    hdrs = hdrs.insert(Header { key: h.key, value: h.value });
                }
            }
            let mut record = FutureRecord::to(topic).payload(m.payload().unwrap_or_default()).headers(hdrs);
            if let Some(k) = m.key() {
                record = record.key(k);
            }
            producer.send(record, Timeout::After(KAFKA_TIMEOUT)).await.map_err(|(e, _)| format!("re-publishing to {topic}: {e}"))?;
            consumer.commit_message(&m, CommitMode::Sync).map_err(|e| format!("committing the DLQ position: {e}"))?;
        }
        let (t, p, o) = (m.topic().to_owned(), m.partition(), m.offset());
        pending.retain(|(pt, pp, high)| !(*pt == t && *pp == p && o + 1 >= *high));
        out.push(entry);
    }
    Ok(out)
}
