//! Settlement: per merchant, currency and UTC day, what is owed: captured minus refunded,
//! plus adjustments (sums in `numeric`, so they never overflow). A batch is closed once its day is over (or by [`close_through`]); a
//! capture or refund whose day's batch is already closed becomes an adjustment in the next
//! open batch, so a closed batch never changes.

use std::time::SystemTime;

use paymesh_kafka::event::{Change, Event};
use tokio_postgres::Transaction;

/// Days since the Unix epoch (UTC) of a time.
fn day_of(t: SystemTime) -> i64 {
    (t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) / 86_400) as i64
}

pub async fn apply(tx: &Transaction<'_>, e: &Event) -> Result<(), tokio_postgres::Error> {
    let (captured, refunded) = match &e.change {
        Change::Captured { amount } => (*amount, 0),
        Change::Refunded { amount, .. } => (0, *amount),
        Change::Authorized | Change::Voided => return Ok(()),
    };
    let p = &e.payment;
    let day = day_of(e.occurred_at);
    // The batch of the event's day if it is still open, else the next open one (created if
    // need be). "Open" is decided by the upsert itself, on the row it would change: a batch
    // another worker creates and the closer closes while this transaction runs is seen closed
    // here, never changed.
    let mut target = day;
    loop {
        let (c, r, adj) = if target == day { (captured, refunded, 0) } else { (0, 0, captured - refunded) };
        let changed = tx
            .query_opt(
                "INSERT INTO settlement_batches (merchant_id, currency, day, captured, refunded, adjustments)
                 VALUES ($1, $2, DATE '1970-01-01' + $3::integer, $4::bigint, $5::bigint, $6::bigint)
                 ON CONFLICT (merchant_id, currency, day) DO UPDATE SET
                    captured = settlement_batches.captured + EXCLUDED.captured,
                    refunded = settlement_batches.refunded + EXCLUDED.refunded,
                    adjustments = settlement_batches.adjustments + EXCLUDED.adjustments
                 WHERE settlement_batches.closed_at IS NULL
                 RETURNING 1",
                &[&p.merchant_id, &p.currency, &(target as i32), &c, &r, &adj],
            )
            .await?;
        if changed.is_some() {
            return Ok(());
        }
        target += 1;
    }
}

/// Closes every open batch whose day is on or before `day` (days since the epoch).
pub async fn close_through(client: &tokio_postgres::Client, day: i64) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(
            "UPDATE settlement_batches SET closed_at = now() WHERE closed_at IS NULL AND day <= DATE '1970-01-01' + $1::integer",
            &[&(day as i32)],
        )
        .await
}

/// Closes the batches of days that are over (run periodically by the settlement worker).
pub async fn close_past_days(client: &tokio_postgres::Client) -> Result<u64, tokio_postgres::Error> {
    close_through(client, day_of(SystemTime::now()) - 1).await
}

/// Today's day number (UTC).
pub fn today() -> i64 {
    day_of(SystemTime::now())
}
