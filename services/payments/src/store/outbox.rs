//! Appending events to the transactional outbox. Only mutations call this, inside their
//! transaction, after every check has passed: a rejected or replayed request adds nothing.

use deadpool_postgres::Transaction;

use super::TraceHeaders;
use crate::error::PaymentError;

/// The kinds of event, as stored in `event_type` (the relay maps each to a topic).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Authorized,
    Captured,
    Refunded,
    Voided,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Authorized => "payment.authorized",
            Self::Captured => "payment.captured",
            Self::Refunded => "payment.refunded",
            Self::Voided => "payment.voided",
        }
    }

    /// The protobuf message the payload holds.
    pub fn message_name(self) -> &'static str {
        match self {
            Self::Authorized => "payments.v1.PaymentAuthorized",
            Self::Captured => "payments.v1.PaymentCaptured",
            Self::Refunded => "payments.v1.PaymentRefunded",
            Self::Voided => "payments.v1.PaymentVoided",
        }
    }
}

pub(super) async fn append(
    tx: &Transaction<'_>,
    event_id: uuid::Uuid,
    kind: EventType,
    payment_id: &str,
    payload: &[u8],
    trace: &TraceHeaders,
) -> Result<(), PaymentError> {
    let insert = tx
        .prepare_cached(
            "INSERT INTO outbox_event (event_id, aggregate_type, aggregate_id, event_type, payload, headers)
             VALUES ($1, 'payment', $2, $3, $4,
                     jsonb_strip_nulls(jsonb_build_object('content-type', 'application/x-protobuf', 'message', $5::text,
                                                          'traceparent', $6::text, 'tracestate', $7::text)))",
        )
        .await?;
    tx.execute(&insert, &[&event_id, &payment_id, &kind.as_str(), &payload, &kind.message_name(), &trace.traceparent, &trace.tracestate])
        .await?;
    Ok(())
}
