//! Request validation: turns wire messages into commands that are known to be well-formed.
//!
//! Everything here is pure: no database, no clock. A request that fails here has touched
//! nothing. Shard ownership is checked separately (it depends on which instance answers).

use paymesh_core::ids::PaymentId;
use paymesh_core::money;
use paymesh_proto::payments::v1 as pb;

use crate::error::PaymentError;

/// Longest accepted idempotency key, in characters (Stripe's limit).
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;
/// Longest accepted merchant id.
pub use paymesh_core::ids::MAX_MERCHANT_ID_CHARS;

#[derive(Clone, Debug)]
pub struct Authorize {
    pub merchant_id: String,
    pub amount: i64,
    pub currency: &'static str,
    pub idempotency_key: String,
}

#[derive(Clone, Debug)]
pub struct Capture {
    pub payment_id: PaymentId,
    pub amount: Option<i64>,
    pub idempotency_key: String,
}

#[derive(Clone, Debug)]
pub struct Refund {
    pub payment_id: PaymentId,
    pub amount: Option<i64>,
    pub idempotency_key: String,
}

#[derive(Clone, Debug)]
pub struct Void {
    pub payment_id: PaymentId,
    pub idempotency_key: String,
}

pub fn authorize(req: &pb::AuthorizeRequest) -> Result<Authorize, PaymentError> {
    let merchant_id = merchant_id(&req.merchant_id)?;
    let amount = amount(req.amount)?;
    let currency = currency(&req.currency)?;
    let max = money::currency(currency).map_or(i64::MAX, |c| c.max_amount());
    if amount > max {
        return Err(PaymentError::invalid(
            "amount",
            format!(
                "{amount} is more than one payment may carry in {currency}: at most {max} minor units ({} major units)",
                money::MAX_MAJOR_UNITS
            ),
        ));
    }
    Ok(Authorize { merchant_id, amount, currency, idempotency_key: idempotency_key(&req.idempotency_key)? })
}

pub fn capture(req: &pb::CaptureRequest) -> Result<Capture, PaymentError> {
    Ok(Capture {
        payment_id: payment_id(&req.payment_id)?,
        amount: req.amount.map(amount).transpose()?,
        idempotency_key: idempotency_key(&req.idempotency_key)?,
    })
}

pub fn refund(req: &pb::RefundRequest) -> Result<Refund, PaymentError> {
    Ok(Refund {
        payment_id: payment_id(&req.payment_id)?,
        amount: req.amount.map(amount).transpose()?,
        idempotency_key: idempotency_key(&req.idempotency_key)?,
    })
}

pub fn void(req: &pb::VoidRequest) -> Result<Void, PaymentError> {
    Ok(Void { payment_id: payment_id(&req.payment_id)?, idempotency_key: idempotency_key(&req.idempotency_key)? })
}

pub fn payment_id(raw: &str) -> Result<PaymentId, PaymentError> {
    if raw.is_empty() {
        return Err(PaymentError::invalid("payment_id", "is required"));
    }
    raw.parse().map_err(|e: paymesh_core::ids::IdError| PaymentError::invalid("payment_id", e.to_string()))
}

fn merchant_id(raw: &str) -> Result<String, PaymentError> {
    paymesh_core::ids::check_merchant_id(raw).map_err(|problem| PaymentError::invalid("merchant_id", problem))?;
    Ok(raw.to_owned())
}

fn amount(raw: i64) -> Result<i64, PaymentError> {
    if raw <= 0 {
        return Err(PaymentError::invalid(
            "amount",
            format!("must be greater than 0 (an integer count of the currency's minor unit); got {raw}"),
        ));
    }
    Ok(raw)
}

fn currency(raw: &str) -> Result<&'static str, PaymentError> {
    if raw.is_empty() {
        return Err(PaymentError::invalid("currency", "is required: an ISO 4217 code such as USD or KRW"));
    }
    money::currency(raw).map(|c| c.code).ok_or_else(|| {
        let hint = if money::currency(&raw.to_ascii_uppercase()).is_some() {
            format!("; write it in upper case: {}", raw.to_ascii_uppercase())
        } else {
            String::new()
        };
        PaymentError::invalid("currency", format!("'{raw}' is not an ISO 4217 currency code accepted for payments{hint}"))
    })
}

fn idempotency_key(raw: &str) -> Result<String, PaymentError> {
    if raw.is_empty() {
        return Err(PaymentError::invalid(
            "idempotency_key",
            "is required for every mutating call; use a fresh unique value (e.g. a UUID) per distinct request",
        ));
    }
    let chars = raw.chars().count();
    if chars > MAX_IDEMPOTENCY_KEY_CHARS {
        return Err(PaymentError::invalid(
            "idempotency_key",
            format!("is {chars} characters long; the limit is {MAX_IDEMPOTENCY_KEY_CHARS}"),
        ));
    }
    if raw.chars().any(char::is_control) {
        return Err(PaymentError::invalid("idempotency_key", "contains control characters"));
    }
    Ok(raw.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> pb::AuthorizeRequest {
        pb::AuthorizeRequest { merchant_id: "m-1".into(), amount: 5_000, currency: "KRW".into(), idempotency_key: "k1".into() }
    }

    fn rejection(req: pb::AuthorizeRequest) -> String {
        authorize(&req).expect_err("should be rejected").to_string()
    }

    #[test]
    fn accepts_a_good_request() {
        let a = authorize(&good()).expect("valid");
        assert_eq!((a.amount, a.currency), (5_000, "KRW"));
    }

    #[test]
    fn names_the_field_and_the_rule() {
        let m = |f: fn(&mut pb::AuthorizeRequest)| {
            let mut r = good();
            f(&mut r);
            rejection(r)
        };
        assert_eq!(m(|r| r.merchant_id.clear()), "merchant_id: is required");
        assert!(m(|r| r.merchant_id = "a b".into()).starts_with("merchant_id: 'a b' has characters"));
        assert!(m(|r| r.merchant_id = "m".repeat(65)).contains("longer than 64"));
        assert!(m(|r| r.amount = 0).starts_with("amount: must be greater than 0"));
        assert!(m(|r| r.amount = -1).contains("got -1"));
        assert!(m(|r| r.currency.clear()).starts_with("currency: is required"));
        assert!(m(|r| r.currency = "ABC".into()).contains("'ABC' is not an ISO 4217"));
        assert!(m(|r| r.currency = "usd".into()).contains("write it in upper case: USD"));
        assert!(m(|r| r.idempotency_key.clear()).starts_with("idempotency_key: is required"));
        assert!(m(|r| r.idempotency_key = "k".repeat(256)).contains("256 characters long; the limit is 255"));
        assert!(m(|r| r.idempotency_key = "a\nb".into()).contains("control"));
    }

    #[test]
    fn amounts_are_capped_per_currency() {
        let with = |amount, currency: &str| pb::AuthorizeRequest { amount, currency: currency.into(), ..good() };
        assert!(authorize(&with(100_000_000_000, "KRW")).is_ok());
        let e = rejection(with(100_000_000_001, "KRW"));
        assert!(e.starts_with("amount: 100000000001 is more than one payment may carry in KRW: at most 100000000000"), "{e}");
        assert!(authorize(&with(10_000_000_000_000, "USD")).is_ok());
        assert!(authorize(&with(i64::MAX, "USD")).is_err());
    }

    #[test]
    fn key_limit_counts_characters_not_bytes() {
        let mut r = good();
        r.idempotency_key = "é".repeat(255);
        assert!(authorize(&r).is_ok());
    }

    #[test]
    fn capture_amount_is_optional_but_positive_when_given() {
        let id = paymesh_core::ids::PaymentId::new(paymesh_core::ShardId(0)).to_string();
        let req = |amount| pb::CaptureRequest { payment_id: id.clone(), amount, idempotency_key: "k".into() };
        assert!(capture(&req(None)).is_ok());
        assert!(capture(&req(Some(1))).is_ok());
        assert!(capture(&req(Some(0))).is_err());
        let bad = pb::CaptureRequest { payment_id: "pay_nope".into(), amount: None, idempotency_key: "k".into() };
        assert!(capture(&bad).expect_err("malformed").to_string().starts_with("payment_id: 'pay_nope' is not a valid pay id"));
    }
}
