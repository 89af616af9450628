//! Idempotency records (Stripe's semantics), scoped per merchant.
//!
//! [`claim`] runs inside the mutation's transaction. Inserting the key takes its primary-key
//! slot; a concurrent request with the same key blocks on that slot until the first commits
//! (then it sees the stored answer) or rolls back (then it proceeds as the first). Expired
//! records are overwritten as if absent. The answer is stored by [`complete`] in the same
//! transaction, so a committed record always has one.

use std::time::{Duration, SystemTime};

use deadpool_postgres::Transaction;
use tokio_postgres::Client;

use super::Fingerprint;
use crate::error::PaymentError;

/// What the key says about this request.
pub(super) enum Claim {
    /// First use: go ahead, then call [`complete`].
    New,
    /// Same request as before: answer with these bytes, write nothing.
    Replay(Vec<u8>),
}

/// Takes the key for this transaction, or fails at once with [`PaymentError::InProgress`] if
/// another transaction holds it (a request with the same key still running): that request
/// is not waited for, as Stripe answers 409. `scope` is the merchant (authorize) or the
/// payment (later changes); merchant ids and payment ids never contain `/`.
pub(super) async fn try_lock(tx: &Transaction<'_>, scope: &str, key: &str) -> Result<(), PaymentError> {
    let statement = tx.prepare_cached("SELECT pg_try_advisory_xact_lock(hashtextextended($1 || '/' || $2, 0))").await?;
    let held: bool = tx.query_one(&statement, &[&scope, &key]).await?.try_get(0)?;
    if held { Ok(()) } else { Err(PaymentError::InProgress { key: key.to_owned() }) }
}

pub(super) async fn claim(
    tx: &Transaction<'_>,
    merchant_id: &str,
    key: &str,
    fp: &Fingerprint,
    now: SystemTime,
    retention: Duration,
) -> Result<Claim, PaymentError> {
    let expires_at = now + retention;
    let insert = tx
        .prepare_cached(
            "INSERT INTO idempotency_keys (merchant_id, idempotency_key, method, request, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (merchant_id, idempotency_key) DO UPDATE
                SET method = EXCLUDED.method, request = EXCLUDED.request, response = NULL, payment_id = NULL,
                    created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at
                WHERE idempotency_keys.expires_at <= EXCLUDED.created_at
             RETURNING 1",
        )
        .await?;
    let inserted = tx.query_opt(&insert, &[&merchant_id, &key, &fp.method, &fp.request, &now, &expires_at]).await?;
    if inserted.is_some() {
        return Ok(Claim::New);
    }
    let select =
        tx.prepare_cached("SELECT method, request, response FROM idempotency_keys WHERE merchant_id = $1 AND idempotency_key = $2").await?;
    let row = tx.query_one(&select, &[&merchant_id, &key]).await?;
    let (method, request, response): (String, Vec<u8>, Option<Vec<u8>>) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
    if method != fp.method || request != fp.request {
        let previous = if method == fp.method { format!("{method} with different parameters") } else { format!("a {method} call") };
        return Err(PaymentError::IdempotencyConflict { merchant_id: merchant_id.to_owned(), key: key.to_owned(), previous });
    }
    response.map(Claim::Replay).ok_or_else(|| PaymentError::Internal("a committed idempotency record has no stored response".into()))
}

pub(super) async fn complete(
    tx: &Transaction<'_>,
    merchant_id: &str,
    key: &str,
    payment_id: &str,
    response: &[u8],
) -> Result<(), PaymentError> {
    let update = tx
        .prepare_cached("UPDATE idempotency_keys SET response = $3, payment_id = $4 WHERE merchant_id = $1 AND idempotency_key = $2")
        .await?;
    let n = tx.execute(&update, &[&merchant_id, &key, &response, &payment_id]).await?;
    if n == 1 { Ok(()) } else { Err(PaymentError::Internal(format!("idempotency record vanished mid-transaction ({n} rows)"))) }
}

/// Deletes expired records in batches so a large backlog never holds long locks.
pub(super) async fn expire(client: &Client, now: SystemTime) -> Result<u64, tokio_postgres::Error> {
    let mut total = 0;
    loop {
        let n = client
            .execute(
                // The outer condition is checked again on the row actually deleted: a key
                // re-claimed since the inner scan has a new expiry and stays.
                "DELETE FROM idempotency_keys WHERE ctid IN (SELECT ctid FROM idempotency_keys WHERE expires_at <= $1 LIMIT 5000) AND expires_at <= $1",
                &[&now],
            )
            .await?;
        total += n;
        if n < 5000 {
            return Ok(total);
        }
    }
}
