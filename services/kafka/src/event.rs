//! Decoding a published payment event: the topic says which message the payload is.

use paymesh_proto::payments::v1 as pb;
use prost::Message;

/// What happened to a payment.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    Authorized,
    Captured { amount: i64 },
    Refunded { refund_id: String, amount: i64 },
    Voided,
}

/// One payment event as the workers see it.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub event_id: String,
    pub occurred_at: std::time::SystemTime,
    /// The payment right after the change.
    pub payment: pb::Payment,
    pub change: Change,
}

/// Why a message is not a payment event (a poison message: retrying will not help).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("topic '{0}' does not carry payment events")]
    UnknownTopic(String),
    #[error("payload is not a valid {message}: {source}")]
    Payload {
        message: &'static str,
        #[source]
        source: prost::DecodeError,
    },
    #[error("event lacks {0}")]
    Missing(&'static str),
}

pub fn decode(topic: &str, payload: &[u8]) -> Result<Event, DecodeError> {
    let bad = |message| move |source| DecodeError::Payload { message, source };
    let (event_id, occurred_at, payment, change) = match topic {
        "payment.authorized" => {
            let e = pb::PaymentAuthorized::decode(payload).map_err(bad("PaymentAuthorized"))?;
            (e.event_id, e.occurred_at, e.payment, Change::Authorized)
        }
        "payment.captured" => {
            let e = pb::PaymentCaptured::decode(payload).map_err(bad("PaymentCaptured"))?;
            (e.event_id, e.occurred_at, e.payment, Change::Captured { amount: e.captured_amount })
        }
        "payment.refunded" => {
            let e = pb::PaymentRefunded::decode(payload).map_err(bad("PaymentRefunded"))?;
            let refund = e.refund.ok_or(DecodeError::Missing("refund"))?;
            (e.event_id, e.occurred_at, e.payment, Change::Refunded { refund_id: refund.refund_id, amount: refund.amount })
        }
        "payment.voided" => {
            let e = pb::PaymentVoided::decode(payload).map_err(bad("PaymentVoided"))?;
            (e.event_id, e.occurred_at, e.payment, Change::Voided)
        }
        other => return Err(DecodeError::UnknownTopic(other.to_owned())),
    };
    if event_id.is_empty() {
        return Err(DecodeError::Missing("event_id"));
    }
    let payment = payment.ok_or(DecodeError::Missing("payment"))?;
    let occurred_at = occurred_at.and_then(|t| std::time::SystemTime::try_from(t).ok()).ok_or(DecodeError::Missing("occurred_at"))?;
    Ok(Event { event_id, occurred_at, payment, change })
}
