//! Authorize, capture, refund and void: each one transaction, all-or-nothing.
//!
//! Order inside a transaction matters. For an existing payment: lock the payment row, then
//! claim the idempotency key, then apply the rules of [`crate::lifecycle`]. Claiming before
//! the rules lets a replay of a successful capture return its answer even though the
//! payment is no longer AUTHORIZED; locking first keeps one lock order (payment, then key)
//! for every mutation.

use std::time::SystemTime;

use deadpool_postgres::{Client, Transaction};
use paymesh_core::identity::Caller;
use paymesh_core::ids::{PaymentId, RefundId};
use paymesh_proto::payments::v1 as pb;
use prost::Message;

use super::batch::{Answer, Mutation};
use super::idempotency::{self, Claim};
use super::outbox::{self, EventType};
use super::row::{PaymentRow, payment_columns};
use super::{Fingerprint, PaymentStore, TraceHeaders, now};
use crate::error::PaymentError;
use crate::lifecycle::{self, Balance, Change, status_name};
use crate::validate;

impl PaymentStore {
    pub async fn authorize(&self, cmd: &validate::Authorize, fp: &Fingerprint, trace: &TraceHeaders) -> Result<pb::Payment, PaymentError> {
        decode(&self.apply(Mutation::Authorize { cmd: cmd.clone(), fp: fp.clone(), trace: trace.clone() }).await?)
    }

    pub async fn capture(
        &self,
        cmd: &validate::Capture,
        caller: Option<&Caller>,
        fp: &Fingerprint,
        trace: &TraceHeaders,
    ) -> Result<pb::Payment, PaymentError> {
        let m = Mutation::Capture { cmd: cmd.clone(), caller: caller.cloned(), fp: fp.clone(), trace: trace.clone() };
        decode(&self.apply(m).await?)
    }

    pub async fn refund(
        &self,
        cmd: &validate::Refund,
        caller: Option<&Caller>,
        fp: &Fingerprint,
        trace: &TraceHeaders,
    ) -> Result<pb::RefundResponse, PaymentError> {
        let m = Mutation::Refund { cmd: cmd.clone(), caller: caller.cloned(), fp: fp.clone(), trace: trace.clone() };
        decode(&self.apply(m).await?)
    }

    pub async fn void(
        &self,
        cmd: &validate::Void,
        caller: Option<&Caller>,
        fp: &Fingerprint,
        trace: &TraceHeaders,
    ) -> Result<pb::Payment, PaymentError> {
        let m = Mutation::Void { cmd: cmd.clone(), caller: caller.cloned(), fp: fp.clone(), trace: trace.clone() };
        decode(&self.apply(m).await?)
    }

    /// Through the group-commit queue when it is on, else one transaction of its own.
    pub async fn apply(&self, m: Mutation) -> Answer {
        match &self.batcher {
            Some(b) => b.submit(m).await,
            None => self.on_connection(async |client| self.apply_one_on(client, &m).await).await,
        }
    }

    /// One mutation in one transaction of its own (group commit off, or a batch that has to
    /// run its requests one by one).
    pub(super) async fn apply_one_on(&self, client: &mut Client, m: &Mutation) -> Answer {
        match m {
            Mutation::Authorize { cmd, fp, trace } => self.authorize_on(client, cmd, fp, trace).await,
            Mutation::Capture { cmd, caller, fp, trace } => {
                let (on, amount) = (On { payment_id: &cmd.payment_id, key: &cmd.idempotency_key, caller: caller.as_ref() }, cmd.amount);
                self.mutate_on(client, on, fp, trace, |b, id| lifecycle::capture(b, id, amount), |p, _| p).await
            }
            Mutation::Refund { cmd, caller, fp, trace } => {
                let (on, amount) = (On { payment_id: &cmd.payment_id, key: &cmd.idempotency_key, caller: caller.as_ref() }, cmd.amount);
                self.mutate_on(
                    client,
                    on,
                    fp,
                    trace,
                    |b, id| lifecycle::refund(b, id, amount),
                    |payment, refund| pb::RefundResponse { refund, payment: Some(payment) },
                )
                .await
            }
            Mutation::Void { cmd, caller, fp, trace } => {
                let on = On { payment_id: &cmd.payment_id, key: &cmd.idempotency_key, caller: caller.as_ref() };
                self.mutate_on(client, on, fp, trace, lifecycle::void, |p, _| p).await
            }
        }
    }

    async fn authorize_on(&self, client: &mut Client, cmd: &validate::Authorize, fp: &Fingerprint, trace: &TraceHeaders) -> Answer {
        let tx = client.transaction().await?;
        idempotency::try_lock(&tx, &cmd.merchant_id, &cmd.idempotency_key).await?;
        let now = now();
        if let Claim::Replay(bytes) = idempotency::claim(&tx, &cmd.merchant_id, &cmd.idempotency_key, fp, now, self.retention()).await? {
            return Ok(bytes);
        }
        let row = PaymentRow::authorized(self.shard, cmd, now);
        let insert = tx
            .prepare_cached(concat!("INSERT INTO payments (", payment_columns!(), ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"))
            .await?;
        tx.execute(
            &insert,
            &[
                &row.payment_id,
                &row.merchant_id,
                &row.amount,
                &row.currency,
                &status_name(row.status),
                &row.captured_amount,
                &row.refunded_amount,
                &row.created_at,
                &row.updated_at,
                &row.version,
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
        let op = Operation { id: row.payment_id.clone(), kind: "AUTHORIZE", amount: row.amount };
        let event = Event { id: event_id, kind: EventType::Authorized, payload: event.encode_to_vec() };
        let response = payment.encode_to_vec();
        finish(&tx, &row, &op, &cmd.idempotency_key, &event, trace, &response).await?;
        tx.commit().await?;
        Ok(response)
    }

    /// The transaction shared by capture, refund and void (on the payment `on` names): lock, claim the key, let
    /// `decide` apply the rules to the locked state, write everything, build the answer
    /// with `respond` (given the refund record when there is one).
    async fn mutate_on<R: Message + Default>(
        &self,
        client: &mut Client,
        On { payment_id, key, caller }: On<'_>,
        fp: &Fingerprint,
        trace: &TraceHeaders,
        decide: impl FnOnce(&Balance, &str) -> Result<Change, PaymentError>,
        respond: impl FnOnce(pb::Payment, Option<pb::Refund>) -> R,
    ) -> Answer {
        {
            let tx = client.transaction().await?;
            // Before waiting for the payment's row: a request with the same key already waiting
            // (or running) is answered at once, not queued behind it.
            idempotency::try_lock(&tx, &payment_id.to_string(), key).await?;
            let mut row = lock(&tx, payment_id).await?;
            // Another merchant's payment: refused before anything is written (the
            // transaction rolls back with nothing in it).
            if let Some(c) = caller {
                c.may_write(&row.merchant_id).map_err(PaymentError::Forbidden)?;
            }
            // The time is read only once the row is ours, so it follows every earlier change.
            let now = now();
            if let Claim::Replay(bytes) = idempotency::claim(&tx, &row.merchant_id, key, fp, now, self.retention()).await? {
                return Ok(bytes);
            }
            let change = decide(&row.balance(), &row.payment_id)?;
            row.set_balance(lifecycle::apply(&row.balance(), change));
            row.advance(now);
            update(&tx, &row).await?;

            let payment = row.to_proto();
            let event_id = uuid::Uuid::now_v7();
            let (op, event, refund) = self.record(&row, &payment, change, event_id, row.updated_at, key);
            let response = respond(payment, refund).encode_to_vec();
            finish(&tx, &row, &op, key, &event, trace, &response).await?;
            tx.commit().await?;
            Ok(response)
        }
    }

    /// The operation record and outbox event for an accepted change (and the refund record,
    /// for a refund).
    pub(super) fn record(
        &self,
        row: &PaymentRow,
        payment: &pb::Payment,
        change: Change,
        id: uuid::Uuid,
        now: SystemTime,
        key: &str,
    ) -> (Operation, Event, Option<pb::Refund>) {
        let (event_id, occurred_at, payment, idempotency_key) = (id.to_string(), Some(now.into()), Some(payment.clone()), key.to_owned());
        let (op_id, kind, payload, refund) = match change {
            Change::Capture { amount } => {
                let ev = pb::PaymentCaptured { event_id, occurred_at, payment, idempotency_key, captured_amount: amount };
                (format!("{}:capture", row.payment_id), EventType::Captured, ev.encode_to_vec(), None)
            }
            Change::Refund { amount } => {
                let refund = pb::Refund {
                    refund_id: RefundId::new(self.shard).to_string(),
                    payment_id: row.payment_id.clone(),
                    amount,
                    created_at: Some(now.into()),
                };
                let ev = pb::PaymentRefunded { event_id, occurred_at, payment, idempotency_key, refund: Some(refund.clone()) };
                (refund.refund_id.clone(), EventType::Refunded, ev.encode_to_vec(), Some(refund))
            }
            Change::Void => {
                let ev = pb::PaymentVoided { event_id, occurred_at, payment, idempotency_key };
                (format!("{}:void", row.payment_id), EventType::Voided, ev.encode_to_vec(), None)
            }
        };
        let op = Operation { id: op_id, kind: change.kind(), amount: change.amount() };
        (op, Event { id, kind, payload }, refund)
    }
}

/// An operation record: what was done to the payment, by which request.
pub(super) struct Operation {
    pub id: String,
    pub kind: &'static str,
    pub amount: i64,
}

/// An outbox event ready to append.
pub(super) struct Event {
    pub id: uuid::Uuid,
    pub kind: EventType,
    pub payload: Vec<u8>,
}

/// The writes every mutation ends with: operation record, outbox event, stored answer.
async fn finish(
    tx: &Transaction<'_>,
    row: &PaymentRow,
    op: &Operation,
    key: &str,
    event: &Event,
    trace: &TraceHeaders,
    response: &[u8],
) -> Result<(), PaymentError> {
    let insert = tx
        .prepare_cached(
            "INSERT INTO payment_operations (operation_id, payment_id, kind, amount, idempotency_key, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .await?;
    tx.execute(&insert, &[&op.id, &row.payment_id, &op.kind, &op.amount, &key, &row.updated_at]).await?;
    outbox::append(tx, event.id, event.kind, &row.payment_id, &event.payload, trace).await?;
    idempotency::complete(tx, &row.merchant_id, key, &row.payment_id, response).await
}

/// Reads and locks the payment for the rest of the transaction.
async fn lock(tx: &Transaction<'_>, id: &PaymentId) -> Result<PaymentRow, PaymentError> {
    let select = tx.prepare_cached(concat!("SELECT ", payment_columns!(), " FROM payments WHERE payment_id = $1 FOR UPDATE")).await?;
    let r = tx.query_opt(&select, &[&id.to_string()]).await?;
    match r {
        Some(r) => PaymentRow::from_row(&r),
        None => Err(PaymentError::NotFound(id.to_string())),
    }
}

async fn update(tx: &Transaction<'_>, row: &PaymentRow) -> Result<(), PaymentError> {
    let update = tx
        .prepare_cached("UPDATE payments SET status = $2, captured_amount = $3, refunded_amount = $4, updated_at = $5, version = $6 WHERE payment_id = $1")
        .await?;
    tx.execute(
        &update,
        &[&row.payment_id, &status_name(row.status), &row.captured_amount, &row.refunded_amount, &row.updated_at, &row.version],
    )
    .await?;
    Ok(())
}

fn decode<M: Message + Default>(bytes: &[u8]) -> Result<M, PaymentError> {
    M::decode(bytes).map_err(|e| PaymentError::Internal(format!("stored idempotent response does not decode: {e}")))
}

/// What a capture, refund or void acts on: the payment, under the request's idempotency
/// key, for the caller (who must be the payment's merchant when the mesh is scoped).
struct On<'a> {
    payment_id: &'a PaymentId,
    key: &'a str,
    caller: Option<&'a Caller>,
}
