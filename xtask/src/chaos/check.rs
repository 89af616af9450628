//! The chaos run's money invariants, checked against the stores themselves once the pipeline
//! has drained: the shards (the truth), the workers' ledger, settlement and read model, the
//! outbox's dead rows and the DLQs.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use paymesh_core::config::MeshConfig;
use paymesh_proto::payments::v1 as pb;

use super::load::Log;

/// One check's outcome.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

pub(super) fn outcome(name: &'static str, problems: Vec<String>, fine: String) -> Outcome {
    if problems.is_empty() {
        Outcome { name, ok: true, detail: fine }
    } else {
        let n = problems.len();
        let mut detail: Vec<String> = problems.into_iter().take(5).collect();
        if n > 5 {
            detail.push(format!("... and {} more", n - 5));
        }
        Outcome { name, ok: false, detail: detail.join("; ") }
    }
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, String> {
    let (c, conn) =
        tokio_postgres::connect(url, tokio_postgres::NoTls).await.map_err(|e| format!("{}: {e}", paymesh_core::config::redact_url(url)))?;
    tokio::spawn(conn);
    Ok(c)
}

/// A payment row on its shard.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    merchant: String,
    currency: String,
    status: i32,
    captured: i64,
    refunded: i64,
    version: i64,
}

async fn shard_rows(config: &MeshConfig) -> Result<BTreeMap<String, Row>, String> {
    let mut out = BTreeMap::new();
    for s in &config.shards {
        let c = connect(&s.database.url).await?;
        for r in c
            .query("SELECT payment_id, merchant_id, currency::text, status, captured_amount, refunded_amount, version FROM payments", &[])
            .await
            .map_err(|e| format!("shard {}: {e}", s.id))?
        {
            let status: String = r.get(3);
            let status = pb::PaymentStatus::from_str_name(&format!("PAYMENT_STATUS_{status}")).map_or(-1, |s| s as i32);
            out.insert(
                r.get(0),
                Row { merchant: r.get(1), currency: r.get(2), status, captured: r.get(4), refunded: r.get(5), version: r.get(6) },
            );
        }
    }
    Ok(out)
}

async fn count(c: &tokio_postgres::Client, sql: &str) -> Result<i64, String> {
    c.query_one(sql, &[]).await.map(|r| r.get(0)).map_err(|e| format!("{sql}: {e}"))
}

/// Outbox rows on every shard: (all, unpublished).
async fn outbox(config: &MeshConfig) -> Result<(i64, i64), String> {
    let (mut all, mut pending) = (0, 0);
    for s in &config.shards {
        let c = connect(&s.database.url).await?;
        all += count(&c, "SELECT count(*) FROM outbox_event").await?;
        pending += count(&c, "SELECT count(*) FROM outbox_event WHERE NOT published").await?;
    }
    Ok((all, pending))
}

/// Waits until every outbox row is published and every worker kind has applied every event.
pub async fn drain(config: &MeshConfig, kinds: &[&str], deadline: Duration) -> Result<Duration, String> {
    let workers = &config.workers.as_ref().ok_or("the chaos config has no [workers]")?.database.url;
    let start = Instant::now();
    loop {
        let attempt = async {
            let (all, pending) = outbox(config).await?;
            let w = connect(workers).await?;
            let mut behind = Vec::new();
            for k in kinds {
                let applied: i64 =
                    w.query_one("SELECT count(*) FROM processed_events WHERE consumer = $1", &[k]).await.map_err(|e| e.to_string())?.get(0);
                if applied != all {
                    behind.push(format!("{k} {applied}/{all}"));
                }
            }
            Ok::<_, String>((pending, behind))
        };
        let last = match attempt.await {
            Ok((0, behind)) if behind.is_empty() => return Ok(start.elapsed()),
            Ok((pending, behind)) => format!("{pending} unpublished outbox rows; behind: {behind:?}"),
            Err(e) => e,
        };
        if start.elapsed() > deadline {
            return Err(format!("the pipeline did not drain within {deadline:?}: {last}"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every check, in the order the report prints them.
pub async fn all(config: &MeshConfig, log: &Log, kinds: &[&str]) -> Result<Vec<Outcome>, String> {
    let rows = shard_rows(config).await?;
    let workers = connect(&config.workers.as_ref().ok_or("no [workers]")?.database.url).await?;
    let mut out = Vec::new();

    // 1. Every acknowledged payment exists on its shard in its acknowledged state.
    let mut lost = Vec::new();
    for a in &log.payments {
        let p = &a.payment;
        let want = Row {
            merchant: p.merchant_id.clone(),
            currency: p.currency.clone(),
            status: p.status,
            captured: p.captured_amount,
            refunded: p.refunded_amount,
            version: p.version,
        };
        match rows.get(&p.payment_id) {
            None => lost.push(format!("{} was acknowledged but is not on its shard", p.payment_id)),
            Some(got) if *got != want => lost.push(format!("{}: acknowledged {want:?}, stored {got:?}", p.payment_id)),
            Some(_) => {}
        }
    }
    out.push(outcome("acknowledged payments on their shards", lost, format!("{} payments, 0 lost", log.payments.len())));

    // 2. No key made two of anything: one operation and one event per acknowledged mutation,
    // and no payment the clients did not ask for.
    let mut dup = Vec::new();
    let acked: BTreeMap<&str, u32> = log.payments.iter().map(|a| (a.payment.payment_id.as_str(), a.operations)).collect();
    let mut events = 0i64;
    for s in &config.shards {
        let c = connect(&s.database.url).await?;
        for r in c.query("SELECT payment_id, count(*) FROM payment_operations GROUP BY 1", &[]).await.map_err(|e| e.to_string())? {
            let (id, n): (String, i64) = (r.get(0), r.get(1));
            match acked.get(id.as_str()) {
                Some(&want) if i64::from(want) != n => dup.push(format!("{id}: {n} operations for {want} acknowledged calls")),
                None if !log.abandoned.is_empty() => {}
                None => dup.push(format!("{id} exists but no client was acknowledged for it")),
                _ => {}
            }
        }
        let (all, distinct) = {
            let r = c.query_one("SELECT count(*), count(DISTINCT event_id) FROM outbox_event", &[]).await.map_err(|e| e.to_string())?;
            (r.get::<_, i64>(0), r.get::<_, i64>(1))
        };
        let ops = count(&c, "SELECT count(*) FROM payment_operations").await?;
        if all != distinct || all != ops {
            dup.push(format!("shard {}: {ops} operations, {all} outbox rows, {distinct} distinct events", s.id));
        }
        events += all;
    }
    out.push(outcome("no duplicates (operations, events)", dup, format!("{events} events, one per operation, 0 duplicated")));

    // 3. Exactly once in effect, per consumer.
    let mut per_kind = Vec::new();
    for k in kinds {
        let applied: i64 =
            workers.query_one("SELECT count(*) FROM processed_events WHERE consumer = $1", &[k]).await.map_err(|e| e.to_string())?.get(0);
        if applied != events {
            per_kind.push(format!("{k} applied {applied} of {events}"));
        }
    }
    out.push(outcome("every event applied once by every worker kind", per_kind, format!("{events} x {}", kinds.len())));

    // Expected money per merchant and currency, from the shards: captured - refunded.
    let mut expected: BTreeMap<(String, String), i128> = BTreeMap::new();
    for r in rows.values() {
        *expected.entry((r.merchant.clone(), r.currency.clone())).or_default() += i128::from(r.captured) - i128::from(r.refunded);
    }

    if kinds.contains(&"ledger") {
        let mut bad = Vec::new();
        let mut merchants: Vec<&String> = expected.keys().map(|(m, _)| m).collect();
        merchants.dedup();
        for m in merchants {
            let got = paymesh_workers::ledger::balances(&workers, m).await.map_err(|e| e.to_string())?;
            for (ccy, bal) in &got {
                let want = expected.get(&(m.clone(), ccy.clone())).copied().unwrap_or(0);
                if i128::from(*bal) != want {
                    bad.push(format!("{m} {ccy}: ledger {bal}, shards {want}"));
                }
            }
        }
        for r in workers
            .query(
                "SELECT e.currency::text, sum(p.debit)::text, sum(p.credit)::text FROM ledger_postings p JOIN ledger_entries e USING (entry_id) GROUP BY 1",
                &[],
            )
            .await
            .map_err(|e| e.to_string())?
        {
            let (ccy, d, c): (String, String, String) = (r.get(0), r.get(1), r.get(2));
            if d != c {
                bad.push(format!("{ccy}: debits {d} != credits {c}"));
            }
        }
        out.push(outcome(
            "ledger: balances equal the shards, debits equal credits",
            bad,
            format!("{} merchant balances exact", expected.len()),
        ));
    }

    if kinds.contains(&"settlement") {
        let mut bad = Vec::new();
        let mut got: BTreeMap<(String, String), i128> = BTreeMap::new();
        for r in workers
            .query(
                "SELECT merchant_id, currency::text, sum(captured - refunded + adjustments)::text FROM settlement_batches GROUP BY 1, 2",
                &[],
            )
            .await
            .map_err(|e| e.to_string())?
        {
            let v: String = r.get(2);
            got.insert((r.get(0), r.get(1)), v.parse().unwrap_or(i128::MIN));
        }
        for (k, want) in &expected {
            let g = got.get(k).copied().unwrap_or(0);
            if g != *want {
                bad.push(format!("{} {}: settlement {g}, shards {want}", k.0, k.1));
            }
        }
        out.push(outcome("settlement totals equal captures minus refunds", bad, format!("{} merchants exact", expected.len())));
    }

    if kinds.contains(&"view") {
        let mut bad = Vec::new();
        let mut seen = 0usize;
        for r in workers
            .query("SELECT payment_id, status, captured_amount, refunded_amount, version FROM payments_view", &[])
            .await
            .map_err(|e| e.to_string())?
        {
            seen += 1;
            let id: String = r.get(0);
            let got = (r.get::<_, i32>(1), r.get::<_, i64>(2), r.get::<_, i64>(3), r.get::<_, i64>(4));
            match rows.get(&id) {
                Some(s) if (s.status, s.captured, s.refunded, s.version) == got => {}
                Some(s) => bad.push(format!("{id}: view {got:?}, shard {:?}", (s.status, s.captured, s.refunded, s.version))),
                None => bad.push(format!("{id} is in the view but on no shard")),
            }
        }
        if seen != rows.len() {
            bad.push(format!("the view has {seen} payments, the shards {}", rows.len()));
        }
        out.push(outcome("view equals the shards (status, amounts, version)", bad, format!("{seen} payments")));
    }

    // 4. Nothing dead-lettered.
    let dead = paymesh_relay::redrive::list(config).await?;
    let mut bad = Vec::new();
    if !dead.rows.is_empty() || !dead.messages.is_empty() {
        bad.push(format!("{} dead outbox rows, {} worker DLQ messages:\n{dead}", dead.rows.len(), dead.messages.len()));
    }
    out.push(outcome("no dead rows, empty DLQs", bad, "0 dead rows, 0 DLQ messages".into()));

    // 5. Clients: nothing refused for good, nothing abandoned.
    let mut bad: Vec<String> = log.wrong.iter().map(|w| format!("refused: {w}")).collect();
    bad.extend(log.abandoned.iter().map(|a| format!("abandoned after retrying: {a}")));
    out.push(outcome("every call eventually acknowledged", bad, "0 refused, 0 abandoned".into()));
    Ok(out)
}
