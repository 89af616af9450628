//! Authorize, capture, refund and void: each one transaction, all-or-nothing.
//!
//! Order inside a transaction matters. For an existing payment: lock the payment row, then
//! claim the idempotency key, then check the state rules. Claiming before checking lets a
//! replay of a successful capture return its answer even though the payment is no longer
//! AUTHORIZED; locking first keeps one lock order (payment, then key) for every mutation.

use paymesh_core::ids::{PaymentId, RefundId};
use paymesh_proto::payments::v1 as pb;
use prost::Message;
use tokio_postgres::Transaction;

use super::idempotency::{self, Claim};
use super::outbox::{self, EventType};
use super::row::{COLUMNS, PaymentRow, status_to_db};
use super::{Fingerprint, PaymentStore, TraceHeaders, now};
use crate::error::PaymentError;
use crate::validate;

use pb::PaymentStatus as S;

impl PaymentStore {
    pub async fn authorize(&self, cmd: &validate::Authorize, fp: &Fingerprint, trace: &TraceHeaders) -> Result<pb::Payment, PaymentError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let now = now();
        if let Claim::Replay(bytes) = idempotency::claim(&tx, &cmd.merchant_id, &cmd.idempotency_key, fp, now, self.retention).await? {
            return decode(&bytes);
        }
        let row = PaymentRow {
            payment_id: PaymentId::new(self.shard).to_string(),
            merchant_id: cmd.merchant_id.clone(),
            amount: cmd.amount,
            currency: cmd.currency.to_owned(),
            status: S::Authorized,
            captured_amount: 0,
            refunded_amount: 0,
            created_at: now,
            updated_at: now,
        };
        tx.execute(
            &format!("INSERT INTO payments ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"),
            &[
                &row.payment_id,
                &row.merchant_id,
                &row.amount,
                &row.currency,
                &status_to_db(row.status),
                &row.captured_amount,
                &row.refunded_amount,
                &row.created_at,
                &row.updated_at,
            ],
        )
        .await?;
        let payment = row.to_proto();
        let event_id = uuid::Uuid::now_v7();
        let event = pb::PaymentAuthorized {
            event_id: event_id.to_string(),
            occurred_at: Some(now.into()),
            payment: Some(payment.clone()),
            idempotency_key: cmd.idempotency_key.clone(),
        };
        let op = Operation { id: &row.payment_id, kind: "AUTHORIZE", amount: row.amount };
        finish(
            &tx,
            &row,
            op,
            &cmd.idempotency_key,
            (event_id, EventType::Authorized, event.encode_to_vec()),
            trace,
            &payment.encode_to_vec(),
        )
        .await?;
        tx.commit().await?;
        Ok(payment)
    }

    pub async fn capture(&self, cmd: &validate::Capture, fp: &Fingerprint, trace: &TraceHeaders) -> Result<pb::Payment, PaymentError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let now = now();
        let mut row = lock(&tx, &cmd.payment_id).await?;
        if let Claim::Replay(bytes) = idempotency::claim(&tx, &row.merchant_id, &cmd.idempotency_key, fp, now, self.retention).await? {
            return decode(&bytes);
        }
        require(&row, "capture", &[S::Authorized], "a payment is captured once, and only while AUTHORIZED")?;
        let amount = cmd.amount.unwrap_or(row.amount);
        if amount > row.amount {
            return Err(PaymentError::Precondition(format!(
                "capture amount {amount} exceeds the authorized amount {} of payment {}; capture at most the authorized amount",
                row.amount, row.payment_id
            )));
        }
        row.status = S::Captured;
        row.captured_amount = amount;
        row.updated_at = now;
        update(&tx, &row).await?;
        let payment = row.to_proto();
        let event_id = uuid::Uuid::now_v7();
        let event = pb::PaymentCaptured {
            event_id: event_id.to_string(),
            occurred_at: Some(now.into()),
            payment: Some(payment.clone()),
            idempotency_key: cmd.idempotency_key.clone(),
            captured_amount: amount,
        };
        let op_id = format!("{}:capture", row.payment_id);
        finish(
            &tx,
            &row,
            Operation { id: &op_id, kind: "CAPTURE", amount },
            &cmd.idempotency_key,
            (event_id, EventType::Captured, event.encode_to_vec()),
            trace,
            &payment.encode_to_vec(),
        )
        .await?;
        tx.commit().await?;
        Ok(payment)
    }

    pub async fn refund(&self, cmd: &validate::Refund, fp: &Fingerprint, trace: &TraceHeaders) -> Result<pb::RefundResponse, PaymentError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let now = now();
        let mut row = lock(&tx, &cmd.payment_id).await?;
        if let Claim::Replay(bytes) = idempotency::claim(&tx, &row.merchant_id, &cmd.idempotency_key, fp, now, self.retention).await? {
            return decode(&bytes);
        }
        require(&row, "refund", &[S::Captured, S::PartiallyRefunded], "only captured money can be refunded")?;
        let refundable = row.captured_amount - row.refunded_amount;
        let amount = cmd.amount.unwrap_or(refundable);
        if amount > refundable {
            return Err(PaymentError::Precondition(format!(
                "refund amount {amount} exceeds what payment {} has left to refund: {refundable} (captured {}, already refunded {}); refunds together may not exceed the captured amount",
                row.payment_id, row.captured_amount, row.refunded_amount
            )));
        }
        // amount <= refundable, so this cannot overflow.
        row.refunded_amount += amount;
        row.status = if row.refunded_amount == row.captured_amount { S::Refunded } else { S::PartiallyRefunded };
        row.updated_at = now;
        update(&tx, &row).await?;
        let refund = pb::Refund {
            refund_id: RefundId::new(self.shard).to_string(),
            payment_id: row.payment_id.clone(),
            amount,
            created_at: Some(now.into()),
        };
        let payment = row.to_proto();
        let event_id = uuid::Uuid::now_v7();
        let event = pb::PaymentRefunded {
            event_id: event_id.to_string(),
            occurred_at: Some(now.into()),
            payment: Some(payment.clone()),
            idempotency_key: cmd.idempotency_key.clone(),
            refund: Some(refund.clone()),
        };
        let response = pb::RefundResponse { refund: Some(refund.clone()), payment: Some(payment) };
        finish(
            &tx,
            &row,
            Operation { id: &refund.refund_id, kind: "REFUND", amount },
            &cmd.idempotency_key,
            (event_id, EventType::Refunded, event.encode_to_vec()),
            trace,
            &response.encode_to_vec(),
        )
        .await?;
        tx.commit().await?;
        Ok(response)
    }

    pub async fn void(&self, cmd: &validate::Void, fp: &Fingerprint, trace: &TraceHeaders) -> Result<pb::Payment, PaymentError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let now = now();
        let mut row = lock(&tx, &cmd.payment_id).await?;
        if let Claim::Replay(bytes) = idempotency::claim(&tx, &row.merchant_id, &cmd.idempotency_key, fp, now, self.retention).await? {
            return decode(&bytes);
        }
        require(
            &row,
            "void",
            &[S::Authorized],
            "only an authorization that was never captured can be voided; refund a captured payment instead",
        )?;
        row.status = S::Voided;
        row.updated_at = now;
        update(&tx, &row).await?;
        let payment = row.to_proto();
        let event_id = uuid::Uuid::now_v7();
        let event = pb::PaymentVoided {
            event_id: event_id.to_string(),
            occurred_at: Some(now.into()),
            payment: Some(payment.clone()),
            idempotency_key: cmd.idempotency_key.clone(),
        };
        let op_id = format!("{}:void", row.payment_id);
        finish(
            &tx,
            &row,
            Operation { id: &op_id, kind: "VOID", amount: 0 },
            &cmd.idempotency_key,
            (event_id, EventType::Voided, event.encode_to_vec()),
            trace,
            &payment.encode_to_vec(),
        )
        .await?;
        tx.commit().await?;
        Ok(payment)
    }
}

/// An operation record: what was done to the payment, by which request.
struct Operation<'a> {
    id: &'a str,
    kind: &'static str,
    amount: i64,
}

/// The writes every mutation ends with: operation record, outbox event, stored answer.
async fn finish(
    tx: &Transaction<'_>,
    row: &PaymentRow,
    op: Operation<'_>,
    key: &str,
    (event_id, kind, event): (uuid::Uuid, EventType, Vec<u8>),
    trace: &TraceHeaders,
    response: &[u8],
) -> Result<(), PaymentError> {
    tx.execute(
        "INSERT INTO payment_operations (operation_id, payment_id, kind, amount, idempotency_key, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        &[&op.id, &row.payment_id, &op.kind, &op.amount, &key, &row.updated_at],
    )
    .await?;
    outbox::append(tx, event_id, kind, &row.payment_id, &event, trace).await?;
    idempotency::complete(tx, &row.merchant_id, key, &row.payment_id, response).await
}

/// Reads and locks the payment for the rest of the transaction.
async fn lock(tx: &Transaction<'_>, id: &PaymentId) -> Result<PaymentRow, PaymentError> {
    let r = tx.query_opt(&format!("SELECT {COLUMNS} FROM payments WHERE payment_id = $1 FOR UPDATE"), &[&id.to_string()]).await?;
    match r {
        Some(r) => PaymentRow::from_row(&r),
        None => Err(PaymentError::NotFound(id.to_string())),
    }
}

async fn update(tx: &Transaction<'_>, row: &PaymentRow) -> Result<(), PaymentError> {
    tx.execute(
        "UPDATE payments SET status = $2, captured_amount = $3, refunded_amount = $4, updated_at = $5 WHERE payment_id = $1",
        &[&row.payment_id, &status_to_db(row.status), &row.captured_amount, &row.refunded_amount, &row.updated_at],
    )
    .await?;
    Ok(())
}

/// Fails unless the payment is in one of `allowed`, naming the state and the rule.
fn require(row: &PaymentRow, operation: &str, allowed: &[S], rule: &str) -> Result<(), PaymentError> {
    if allowed.contains(&row.status) {
        return Ok(());
    }
    let names: Vec<&str> = allowed.iter().map(|s| status_to_db(*s)).collect();
    Err(PaymentError::Precondition(format!(
        "cannot {operation} payment {}: it is {} and {operation} needs {}; {rule}",
        row.payment_id,
        status_to_db(row.status),
        names.join(" or ")
    )))
}

fn decode<M: Message + Default>(bytes: &[u8]) -> Result<M, PaymentError> {
    M::decode(bytes).map_err(|e| PaymentError::Internal(format!("stored idempotent response does not decode: {e}")))
}
