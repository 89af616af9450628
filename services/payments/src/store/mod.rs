//! The payments shard in PostgreSQL: every mutation is one transaction that writes the
//! payment, its operation record, the idempotency record and the outbox event together, or
//! nothing at all.
//!
//! Concurrency: mutations of an existing payment first lock its row (`SELECT .. FOR UPDATE`),
//! so operations on one payment are serialised and the amount checks see the latest totals.
//! Identical idempotent requests serialise on the idempotency key's primary key instead.

mod batch;
mod idempotency;
mod mutations;
mod outbox;
mod pool;
#[macro_use]
mod row;
pub mod schema;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use paymesh_core::ShardId;
use paymesh_core::ids::PaymentId;
use paymesh_proto::payments::v1 as pb;

use crate::error::PaymentError;

pub use batch::{Answer, BatchStats, Batcher, Mutation};
pub use pool::{PoolSettings, connect_pool};

/// W3C trace context of the request, copied into outbox headers so the trace continues
/// through the relay and the workers.
#[derive(Clone, Debug, Default)]
pub struct TraceHeaders {
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

/// What identifies a request for idempotency: the method and the request's canonical
/// protobuf encoding without its idempotency key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    pub method: &'static str,
    pub request: Vec<u8>,
}

/// One shard's payments.
#[derive(Clone, Debug)]
pub struct PaymentStore {
    pool: deadpool_postgres::Pool,
    shard: ShardId,
    /// Seconds; shared by every clone, so a reload changes it for all.
    retention: Arc<AtomicU64>,
    /// The group-commit queue, when it is on.
    batcher: Option<Batcher>,
}

impl PaymentStore {
    /// Every mutation in a transaction of its own.
    pub fn new(pool: deadpool_postgres::Pool, shard: ShardId, retention: Duration) -> Self {
        Self { pool, shard, retention: Arc::new(AtomicU64::new(retention.as_secs())), batcher: None }
    }

    /// How long an idempotency key's first answer is kept.
    pub fn retention(&self) -> Duration {
        Duration::from_secs(self.retention.load(Ordering::Relaxed))
    }

    /// Changes the retention of keys written from now on (a reload).
    pub fn set_retention(&self, retention: Duration) {
        self.retention.store(retention.as_secs(), Ordering::Relaxed);
    }

    /// Changes the largest batch of the committers (a reload); no effect without group commit.
    pub fn set_max_batch(&self, max_batch: usize) {
        if let Some(b) = &self.batcher {
            b.set_max_batch(max_batch);
        }
    }

    /// With `[payments.group_commit]` on, mutations go through committer tasks (started
    /// here, on the current runtime) that apply them in batches; off, as [`PaymentStore::new`].
    pub fn with_group_commit(self, settings: paymesh_core::config::GroupCommit) -> Self {
        if !settings.enabled {
            return self;
        }
        let batcher = Batcher::start(self.clone(), settings);
        Self { batcher: Some(batcher), ..self }
    }

    /// Batches and requests through group commit so far (`None` when it is off).
    pub fn batch_stats(&self) -> Option<&BatchStats> {
        self.batcher.as_ref().map(|b| b.stats.as_ref())
    }

    pub fn shard(&self) -> ShardId {
        self.shard
    }

    pub fn pool(&self) -> &deadpool_postgres::Pool {
        &self.pool
    }

    /// Runs `work` on a pooled connection. A connection that failed as the database going
    /// away (ended by the server, closed, I/O error) is dropped, not returned to the pool:
    /// its task may not have noticed the end yet, and the next caller would fail on it.
    async fn on_connection<T>(
        &self,
        work: impl AsyncFnOnce(&mut deadpool_postgres::Client) -> Result<T, PaymentError>,
    ) -> Result<T, PaymentError> {
        let mut client = self.pool.get().await?;
        let result = work(&mut client).await;
        if matches!(result, Err(PaymentError::Unavailable(_))) {
            drop(deadpool_postgres::Object::take(client));
        }
        result
    }

    /// Reads one payment.
    pub async fn get(&self, id: &PaymentId) -> Result<pb::Payment, PaymentError> {
        let row = self
            .on_connection(async |client| {
                let statement =
                    client.prepare_cached(concat!("SELECT ", row::payment_columns!(), " FROM payments WHERE payment_id = $1")).await?;
                Ok(client.query_opt(&statement, &[&id.to_string()]).await?)
            })
            .await?;
        row.map(|r| row::PaymentRow::from_row(&r).map(|p| p.to_proto())).transpose()?.ok_or_else(|| PaymentError::NotFound(id.to_string()))
    }

    /// Deletes idempotency records that are past their retention. Returns how many.
    pub async fn expire_idempotency_keys(&self) -> Result<u64, PaymentError> {
        let client = self.pool.get().await?;
        Ok(idempotency::expire(&client, now()).await?)
    }
}

/// The current time at the database's precision (microseconds), so an answer built from
/// memory equals one read back from a row.
fn now() -> SystemTime {
    let since = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    SystemTime::UNIX_EPOCH + Duration::from_micros(since.as_micros() as u64)
}
