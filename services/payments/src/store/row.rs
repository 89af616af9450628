//! A `payments` row and its conversion to the wire message.

use std::time::SystemTime;

use paymesh_proto::payments::v1 as pb;
use tokio_postgres::Row;

use crate::error::PaymentError;
use crate::lifecycle::Balance;

/// Column list matching [`PaymentRow::from_row`], as a literal for `concat!`: every
/// statement's text is a constant, prepared once per connection.
macro_rules! payment_columns {
    () => {
        "payment_id, merchant_id, amount, currency, status, captured_amount, refunded_amount, created_at, updated_at, version"
    };
}
pub(super) use payment_columns;

#[derive(Clone, Debug)]
pub(super) struct PaymentRow {
    pub payment_id: String,
    pub merchant_id: String,
    pub amount: i64,
    pub currency: String,
    pub status: pb::PaymentStatus,
    pub captured_amount: i64,
    pub refunded_amount: i64,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
    pub version: i64,
}

impl PaymentRow {
    /// A new payment, authorized at `now`, on `shard`.
    pub fn authorized(shard: paymesh_core::ShardId, cmd: &crate::validate::Authorize, now: SystemTime) -> Self {
        Self {
            payment_id: paymesh_core::ids::PaymentId::new(shard).to_string(),
            merchant_id: cmd.merchant_id.clone(),
            amount: cmd.amount,
            currency: cmd.currency.to_owned(),
            status: pb::PaymentStatus::Authorized,
            captured_amount: 0,
            refunded_amount: 0,
            created_at: now,
            updated_at: now,
            version: 1,
        }
    }

    pub fn from_row(r: &Row) -> Result<Self, PaymentError> {
        let status: &str = r.try_get(4)?;
        Ok(Self {
            payment_id: r.try_get(0)?,
            merchant_id: r.try_get(1)?,
            amount: r.try_get(2)?,
            currency: r.try_get(3)?,
            status: status_from_db(status)?,
            captured_amount: r.try_get(5)?,
            refunded_amount: r.try_get(6)?,
            created_at: r.try_get(7)?,
            updated_at: r.try_get(8)?,
            version: r.try_get(9)?,
        })
    }

    pub fn balance(&self) -> Balance {
        Balance { status: self.status, amount: self.amount, captured: self.captured_amount, refunded: self.refunded_amount }
    }

    pub fn set_balance(&mut self, b: Balance) {
        self.status = b.status;
        self.amount = b.amount;
        self.captured_amount = b.captured;
        self.refunded_amount = b.refunded;
    }

    /// Moves the row to its next state at `now`: one version up, and a time that never goes
    /// backwards (another instance of the shard may have written the last state with a
    /// clock ahead of ours; the row is locked, so nobody writes between).
    pub fn advance(&mut self, now: SystemTime) {
        self.version += 1;
        self.updated_at = now.max(self.updated_at);
    }

    pub fn to_proto(&self) -> pb::Payment {
        pb::Payment {
            payment_id: self.payment_id.clone(),
            merchant_id: self.merchant_id.clone(),
            amount: self.amount,
            currency: self.currency.clone(),
            status: self.status as i32,
            captured_amount: self.captured_amount,
            refunded_amount: self.refunded_amount,
            created_at: Some(self.created_at.into()),
            updated_at: Some(self.updated_at.into()),
            version: self.version,
        }
    }
}

fn status_from_db(s: &str) -> Result<pb::PaymentStatus, PaymentError> {
    Ok(match s {
        "AUTHORIZED" => pb::PaymentStatus::Authorized,
        "CAPTURED" => pb::PaymentStatus::Captured,
        "PARTIALLY_REFUNDED" => pb::PaymentStatus::PartiallyRefunded,
        "REFUNDED" => pb::PaymentStatus::Refunded,
        "VOIDED" => pb::PaymentStatus::Voided,
        other => return Err(PaymentError::Internal(format!("unknown payment status '{other}' in the database"))),
    })
}
