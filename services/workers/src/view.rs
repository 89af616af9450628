//! The read model: the latest state of every payment, from every shard, for cross-shard
//! questions ("this merchant's payments, newest first") that must not touch the shards.
//! Events may arrive out of order across topics; an older state never overwrites a newer one:
//! of two states the higher `version` wins (assigned under the payment's row lock, so clocks
//! do not matter); events from before versions existed (version 0) fall back to `updated_at`.

use paymesh_kafka::event::Event;
use tokio_postgres::Transaction;

pub async fn apply(tx: &Transaction<'_>, e: &Event) -> Result<(), tokio_postgres::Error> {
    let p = &e.payment;
    let shard = paymesh_core::ids::shard_of(&p.payment_id).map(|s| s.0 as i32).unwrap_or(-1);
    let ts = |t: &Option<prost_types::Timestamp>| (*t).and_then(|t| std::time::SystemTime::try_from(t).ok()).unwrap_or(e.occurred_at);
    let (created, updated) = (ts(&p.created_at), ts(&p.updated_at));
    tx.execute(
        "INSERT INTO payments_view (payment_id, merchant_id, shard, amount, currency, status, captured_amount, refunded_amount, created_at, updated_at, version)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (payment_id) DO UPDATE SET
            status = EXCLUDED.status, captured_amount = EXCLUDED.captured_amount,
            refunded_amount = EXCLUDED.refunded_amount, updated_at = EXCLUDED.updated_at, version = EXCLUDED.version
         WHERE (payments_view.version, payments_view.updated_at) < (EXCLUDED.version, EXCLUDED.updated_at)",
        &[&p.payment_id, &p.merchant_id, &shard, &p.amount, &p.currency, &p.status, &p.captured_amount, &p.refunded_amount, &created, &updated, &p.version],
    )
    .await?;
    Ok(())
}
