//! The double-entry ledger. Every event becomes one journal entry whose postings balance:
//!
//! | event | postings |
//! |---|---|
//! | authorized A | Dr `holds:customer:{ccy}` A, Cr `holds:merchant:{m}:{ccy}` A (a hold, not money) |
//! | voided | the hold released: Dr `holds:merchant:{m}:{ccy}` A, Cr `holds:customer:{ccy}` A |
//! | captured C | the hold released, and Dr `clearing:{ccy}` C, Cr `merchant:{m}:{ccy}` C |
//! | refunded R | Dr `merchant:{m}:{ccy}` R, Cr `clearing:{ccy}` R |
//!
//! A merchant's balance is credits minus debits on `merchant:{m}:{ccy}` = captured - refunded.
//! Refunds are decided synchronously on the payment's shard (so over-refunding is
//! impossible); here they only move money, which is what the seeds' refund worker did.

use paymesh_kafka::event::{Change, Event};
use tokio_postgres::Transaction;

/// `(account, debit, credit)`.
pub type Posting = (String, i64, i64);

/// The postings of one event. Always balanced.
pub fn postings(e: &Event) -> Vec<Posting> {
    let p = &e.payment;
    let (m, ccy) = (&p.merchant_id, &p.currency);
    let hold = |a: i64, release: bool| {
        let (cust, merch) = (format!("holds:customer:{ccy}"), format!("holds:merchant:{m}:{ccy}"));
        if release { vec![(merch, a, 0), (cust, 0, a)] } else { vec![(cust, a, 0), (merch, 0, a)] }
    };
    match &e.change {
        Change::Authorized => hold(p.amount, false),
        Change::Voided => hold(p.amount, true),
        Change::Captured { amount } => {
            let mut v = hold(p.amount, true);
            v.push((format!("clearing:{ccy}"), *amount, 0));
            v.push((format!("merchant:{m}:{ccy}"), 0, *amount));
            v
        }
        Change::Refunded { amount, .. } => vec![(format!("merchant:{m}:{ccy}"), *amount, 0), (format!("clearing:{ccy}"), 0, *amount)],
    }
}

pub fn kind(c: &Change) -> &'static str {
    match c {
        Change::Authorized => "authorized",
        Change::Captured { .. } => "captured",
        Change::Refunded { .. } => "refunded",
        Change::Voided => "voided",
    }
}

pub async fn apply(tx: &Transaction<'_>, event_id: uuid::Uuid, e: &Event) -> Result<(), tokio_postgres::Error> {
    let p = &e.payment;
    let row = tx
        .query_one(
            "INSERT INTO ledger_entries (event_id, payment_id, merchant_id, kind, currency, occurred_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING entry_id",
            &[&event_id, &p.payment_id, &p.merchant_id, &kind(&e.change), &p.currency, &e.occurred_at],
        )
        .await?;
    let entry: i64 = row.get(0);
    for (account, debit, credit) in postings(e) {
        tx.execute(
            "INSERT INTO ledger_postings (entry_id, account, debit, credit) VALUES ($1, $2, $3, $4)",
            &[&entry, &account, &debit, &credit],
        )
        .await?;
    }
    Ok(())
}

/// A merchant's balance per currency: captured - refunded, summed over the merchant's own
/// account only (`merchant:{m}:{ccy}` of the merchant's own entries, matched exactly: no
/// pattern, so no other merchant's money). The sum is exact (`numeric`); a balance beyond
/// `i64` is an error, not a wrapped number.
pub async fn balances(client: &tokio_postgres::Client, merchant: &str) -> Result<Vec<(String, i64)>, BalanceError> {
    let rows = client
        .query(
            "SELECT e.currency::text, sum(p.credit - p.debit)::text
             FROM ledger_entries e JOIN ledger_postings p USING (entry_id)
             WHERE e.merchant_id = $1 AND p.account = 'merchant:' || e.merchant_id || ':' || e.currency
             GROUP BY 1 ORDER BY 1",
            &[&merchant],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let (currency, sum): (String, String) = (r.get(0), r.get(1));
            let balance = sum.parse::<i64>().map_err(|_| BalanceError::OutOfRange { currency: currency.clone(), sum })?;
            Ok((currency, balance))
        })
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum BalanceError {
    #[error("the ledger database: {0}")]
    Database(#[from] tokio_postgres::Error),
    #[error("the {currency} balance {sum} does not fit a 64-bit integer")]
    OutOfRange { currency: String, sum: String },
}

#[cfg(test)]
mod tests {
    use paymesh_proto::payments::v1 as pb;

    use super::*;

    fn ev(change: Change) -> Event {
        let payment = pb::Payment {
            payment_id: "pay_0_x".into(),
            merchant_id: "m".into(),
            amount: 1_000,
            currency: "KRW".into(),
            ..Default::default()
        };
        Event { event_id: "e".into(), occurred_at: std::time::SystemTime::now(), payment, change }
    }

    #[test]
    fn every_entry_balances() {
        for c in
            [Change::Authorized, Change::Voided, Change::Captured { amount: 800 }, Change::Refunded { refund_id: "r".into(), amount: 300 }]
        {
            let p = postings(&ev(c.clone()));
            let (d, cr): (i64, i64) = p.iter().fold((0, 0), |(d, c), (_, x, y)| (d + x, c + y));
            assert_eq!(d, cr, "{c:?}: {p:?}");
            assert!(p.iter().all(|(_, d, c)| (*d == 0) != (*c == 0)), "one side per posting");
        }
    }

    #[test]
    fn merchant_balance_is_captured_minus_refunded() {
        let mut bal = 0;
        for c in [Change::Authorized, Change::Captured { amount: 800 }, Change::Refunded { refund_id: "r".into(), amount: 300 }] {
            for (acct, d, cr) in postings(&ev(c)) {
                if acct == "merchant:m:KRW" {
                    bal += cr - d;
                }
            }
        }
        assert_eq!(bal, 500);
    }
}
