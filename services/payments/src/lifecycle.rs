//! The payment state machine and money rules, as pure functions over a payment's state.
//!
//! ```text
//! AUTHORIZED --capture--> CAPTURED --refund--> PARTIALLY_REFUNDED --refund--> REFUNDED
//!      \                       \________________ refund of the rest ________/
//!       \--void--> VOIDED
//! ```
//!
//! The store calls these on the row it has locked, so the totals they see are current; they
//! decide, the store writes. Nothing here does I/O, which is why the rules are unit-tested
//! exhaustively below.

use paymesh_proto::payments::v1::PaymentStatus as S;

use crate::error::PaymentError;

/// The money-relevant state of a payment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Balance {
    pub status: S,
    pub amount: i64,
    pub captured: i64,
    pub refunded: i64,
}

/// What an accepted operation does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Capture { amount: i64 },
    Refund { amount: i64 },
    Void,
}

impl Change {
    /// The operation's kind in `payment_operations.kind`.
    pub fn kind(self) -> &'static str {
        match self {
            Self::Capture { .. } => "CAPTURE",
            Self::Refund { .. } => "REFUND",
            Self::Void => "VOID",
        }
    }

    /// The amount the operation moves (0 for a void).
    pub fn amount(self) -> i64 {
        match self {
            Self::Capture { amount } | Self::Refund { amount } => amount,
            Self::Void => 0,
        }
    }
}

/// Decides a capture of `amount` (absent: everything authorized).
pub fn capture(b: &Balance, payment_id: &str, amount: Option<i64>) -> Result<Change, PaymentError> {
    require(b, payment_id, "capture", &[S::Authorized], "a payment is captured once, and only while AUTHORIZED")?;
    let amount = amount.unwrap_or(b.amount);
    if amount > b.amount {
        return Err(PaymentError::Precondition(format!(
            "capture amount {amount} exceeds the authorized amount {} of payment {payment_id}; capture at most the authorized amount",
            b.amount
        )));
    }
    Ok(Change::Capture { amount })
}

/// Decides a refund of `amount` (absent: everything captured and not yet refunded).
pub fn refund(b: &Balance, payment_id: &str, amount: Option<i64>) -> Result<Change, PaymentError> {
    require(b, payment_id, "refund", &[S::Captured, S::PartiallyRefunded], "only captured money can be refunded")?;
    let refundable = b.captured - b.refunded;
    let amount = amount.unwrap_or(refundable);
    if amount > refundable {
        return Err(PaymentError::Precondition(format!(
            "refund amount {amount} exceeds what payment {payment_id} has left to refund: {refundable} (captured {}, already refunded {}); refunds together may not exceed the captured amount",
            b.captured, b.refunded
        )));
    }
    Ok(Change::Refund { amount })
}

/// Decides a void.
pub fn void(b: &Balance, payment_id: &str) -> Result<Change, PaymentError> {
    require(
        b,
        payment_id,
        "void",
        &[S::Authorized],
        "only an authorization that was never captured can be voided; refund a captured payment instead",
    )?;
    Ok(Change::Void)
}

/// The state after an accepted change. Amounts were checked by the deciding function, so
/// nothing here can overflow or break a rule.
pub fn apply(b: &Balance, change: Change) -> Balance {
    match change {
        Change::Capture { amount } => Balance { status: S::Captured, captured: amount, ..*b },
        Change::Refund { amount } => {
            let refunded = b.refunded + amount;
            Balance { status: if refunded == b.captured { S::Refunded } else { S::PartiallyRefunded }, refunded, ..*b }
        }
        Change::Void => Balance { status: S::Voided, ..*b },
    }
}

/// The status as stored and shown in messages: the enum name without `PAYMENT_STATUS_`.
pub fn status_name(s: S) -> &'static str {
    match s {
        S::Authorized => "AUTHORIZED",
        S::Captured => "CAPTURED",
        S::PartiallyRefunded => "PARTIALLY_REFUNDED",
        S::Refunded => "REFUNDED",
        S::Voided => "VOIDED",
        S::Unspecified => "UNSPECIFIED",
    }
}

/// Fails unless the payment is in one of `allowed`, naming the state and the rule.
fn require(b: &Balance, payment_id: &str, operation: &str, allowed: &[S], rule: &str) -> Result<(), PaymentError> {
    if allowed.contains(&b.status) {
        return Ok(());
    }
    let names: Vec<&str> = allowed.iter().map(|s| status_name(*s)).collect();
    Err(PaymentError::Precondition(format!(
        "cannot {operation} payment {payment_id}: it is {} and {operation} needs {}; {rule}",
        status_name(b.status),
        names.join(" or ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [S; 5] = [S::Authorized, S::Captured, S::PartiallyRefunded, S::Refunded, S::Voided];

    fn bal(status: S, amount: i64, captured: i64, refunded: i64) -> Balance {
        Balance { status, amount, captured, refunded }
    }

    #[test]
    fn only_the_drawn_transitions_are_allowed() {
        for s in ALL {
            let b = bal(s, 100, if s == S::Authorized || s == S::Voided { 0 } else { 100 }, if s == S::Refunded { 100 } else { 0 });
            assert_eq!(capture(&b, "p", None).is_ok(), s == S::Authorized, "capture from {s:?}");
            assert_eq!(void(&b, "p").is_ok(), s == S::Authorized, "void from {s:?}");
            assert_eq!(refund(&b, "p", Some(1)).is_ok(), matches!(s, S::Captured | S::PartiallyRefunded), "refund from {s:?}");
        }
    }

    #[test]
    fn capture_is_bounded_by_the_authorization() {
        let b = bal(S::Authorized, 100, 0, 0);
        assert_eq!(capture(&b, "p", None).ok(), Some(Change::Capture { amount: 100 }));
        assert_eq!(capture(&b, "p", Some(40)).ok(), Some(Change::Capture { amount: 40 }));
        assert!(capture(&b, "p", Some(101)).is_err());
        let after = apply(&b, Change::Capture { amount: 40 });
        assert_eq!(after, bal(S::Captured, 100, 40, 0));
    }

    #[test]
    fn refunds_sum_to_at_most_the_capture() {
        let mut b = bal(S::Captured, 100, 80, 0);
        for _ in 0..3 {
            let c = refund(&b, "p", Some(25)).expect("fits");
            b = apply(&b, c);
        }
        assert_eq!(b, bal(S::PartiallyRefunded, 100, 80, 75));
        let err = refund(&b, "p", Some(6)).expect_err("over").to_string();
        assert!(err.contains("left to refund: 5 (captured 80, already refunded 75)"), "{err}");
        let rest = refund(&b, "p", None).expect("the rest");
        assert_eq!(rest, Change::Refund { amount: 5 });
        assert_eq!(apply(&b, rest), bal(S::Refunded, 100, 80, 80));
    }

    #[test]
    fn extreme_amounts_cannot_overflow() {
        let b = bal(S::PartiallyRefunded, i64::MAX, i64::MAX, i64::MAX - 1);
        assert!(refund(&b, "p", Some(i64::MAX)).is_err());
        let last = refund(&b, "p", Some(1)).expect("last unit");
        assert_eq!(apply(&b, last).refunded, i64::MAX);
    }

    #[test]
    fn rejections_name_state_and_rule() {
        let err = void(&bal(S::Captured, 1, 1, 0), "pay_0_x").expect_err("captured").to_string();
        assert_eq!(
            err,
            "cannot void payment pay_0_x: it is CAPTURED and void needs AUTHORIZED; only an authorization that was never captured can be voided; refund a captured payment instead"
        );
    }
}
