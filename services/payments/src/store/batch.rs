//! Group commit: concurrent mutations arriving at one instance are applied in one
//! transaction per batch, with set-based SQL (one statement per table for the whole batch)
//! and one commit, so the WAL is flushed once for all of them.
//!
//! Batches form without a timer: a committer takes the first request waiting and every other
//! one already queued (up to `max_batch`); what arrives while it commits is the next batch.
//! A lone request waits for nothing. Several committers (`committers`) run batches at once,
//! each on its own connection.
//!
//! Each caller gets exactly the answer it would get alone, in arrival order: the batch takes
//! its idempotency keys (`pg_try_advisory_xact_lock`, so a key in use elsewhere is
//! IN_PROGRESS as before), locks every payment it changes in one statement in payment-id
//! order (two batches never deadlock on rows), reads the live idempotency records, then
//! decides every request in memory with the same rules as the one-request path
//! ([`crate::lifecycle`]), each seeing the changes of the requests before it. Only accepted
//! requests are written. A statement that fails for one request's sake (a constraint, a lock
//! timeout, a key another transaction took meanwhile) rolls the batch back and its requests
//! run again one transaction each, so one request's failure never becomes another's.
//! Answers go out only after the commit returned: a crash before it acknowledges nothing,
//! and everything acknowledged is durable.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::SystemTime;

use paymesh_core::config::GroupCommit;
use paymesh_core::identity::Caller;
use paymesh_core::ids::PaymentId;
use paymesh_proto::payments::v1 as pb;
use prost::Message;
use tokio::sync::{Mutex, mpsc, oneshot};

use super::outbox::EventType;
use super::row::{PaymentRow, payment_columns};
use super::{Fingerprint, PaymentStore, TraceHeaders, now};
use crate::error::PaymentError;
use crate::lifecycle::{self, status_name};
use crate::validate;

/// One mutation as the store receives it.
#[derive(Clone, Debug)]
pub enum Mutation {
    Authorize { cmd: validate::Authorize, fp: Fingerprint, trace: TraceHeaders },
    Capture { cmd: validate::Capture, caller: Option<Caller>, fp: Fingerprint, trace: TraceHeaders },
    Refund { cmd: validate::Refund, caller: Option<Caller>, fp: Fingerprint, trace: TraceHeaders },
    Void { cmd: validate::Void, caller: Option<Caller>, fp: Fingerprint, trace: TraceHeaders },
}

/// A mutation's answer: the encoded response message (`Payment`, or `RefundResponse`), as
/// stored under its idempotency key.
pub type Answer = Result<Vec<u8>, PaymentError>;

impl Mutation {
    fn key(&self) -> &str {
        match self {
            Self::Authorize { cmd, .. } => &cmd.idempotency_key,
            Self::Capture { cmd, .. } => &cmd.idempotency_key,
            Self::Refund { cmd, .. } => &cmd.idempotency_key,
            Self::Void { cmd, .. } => &cmd.idempotency_key,
        }
    }

    /// The payment it changes (`None` for an authorize, which makes one).
    fn payment(&self) -> Option<&PaymentId> {
        match self {
            Self::Authorize { .. } => None,
            Self::Capture { cmd, .. } => Some(&cmd.payment_id),
            Self::Refund { cmd, .. } => Some(&cmd.payment_id),
            Self::Void { cmd, .. } => Some(&cmd.payment_id),
        }
    }

    fn fingerprint(&self) -> &Fingerprint {
        match self {
            Self::Authorize { fp, .. } | Self::Capture { fp, .. } | Self::Refund { fp, .. } | Self::Void { fp, .. } => fp,
        }
    }

    fn trace(&self) -> &TraceHeaders {
        match self {
            Self::Authorize { trace, .. } | Self::Capture { trace, .. } | Self::Refund { trace, .. } | Self::Void { trace, .. } => trace,
        }
    }

    fn caller(&self) -> Option<&Caller> {
        match self {
            Self::Authorize { .. } => None,
            Self::Capture { caller, .. } | Self::Refund { caller, .. } | Self::Void { caller, .. } => caller.as_ref(),
        }
    }

    /// The advisory lock's scope, as the one-request path takes it.
    fn lock_scope(&self) -> String {
        match self {
            Self::Authorize { cmd, .. } => cmd.merchant_id.clone(),
            other => other.payment().map(ToString::to_string).unwrap_or_default(),
        }
    }
}

/// How many batches and requests went through group commit.
#[derive(Debug, Default)]
pub struct BatchStats {
    pub batches: AtomicU64,
    pub requests: AtomicU64,
    /// Batches rolled back and run again one request at a time.
    pub fallbacks: AtomicU64,
}

/// A request and where its answer goes.
type Waiting = (Mutation, oneshot::Sender<Answer>);

struct Job {
    mutation: Mutation,
    reply: oneshot::Sender<Answer>,
}

/// The queue in front of the committers.
#[derive(Clone, Debug)]
pub struct Batcher {
    tx: mpsc::UnboundedSender<Job>,
    pub stats: Arc<BatchStats>,
    /// The most requests in one batch, read by the committers for every batch.
    max_batch: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("key", &self.mutation.key()).finish()
    }
}

impl Batcher {
    /// Starts `settings.committers` committer tasks applying batches to `store`.
    pub fn start(store: PaymentStore, settings: GroupCommit) -> Self {
        let (tx, rx) = mpsc::unbounded_channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let stats = Arc::new(BatchStats::default());
        let max_batch = Arc::new(AtomicUsize::new(settings.max_batch));
        for _ in 0..settings.committers {
            tokio::spawn(committer(store.clone(), rx.clone(), max_batch.clone(), stats.clone()));
        }
        Self { tx, stats, max_batch }
    }

    /// Changes the largest batch from the next batch on.
    pub fn set_max_batch(&self, max_batch: usize) {
        self.max_batch.store(max_batch.max(1), Ordering::Relaxed);
    }

    /// Queues `mutation` and waits for its answer (given after its batch committed).
    pub async fn submit(&self, mutation: Mutation) -> Answer {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Job { mutation, reply }).map_err(|_| PaymentError::Unavailable("the instance is shutting down".into()))?;
        answer.await.unwrap_or_else(|_| Err(PaymentError::Internal("the committer stopped before answering".into())))
    }
}

/// Takes the first waiting job and all others already queued, applies them, answers.
async fn committer(store: PaymentStore, rx: Arc<Mutex<mpsc::UnboundedReceiver<Job>>>, max_batch: Arc<AtomicUsize>, stats: Arc<BatchStats>) {
    loop {
        let jobs = {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else { return };
            let max_batch = max_batch.load(Ordering::Relaxed);
            let mut jobs = vec![first];
            while jobs.len() < max_batch {
                match rx.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
            jobs
        };
        let (mutations, replies): (Vec<Mutation>, Vec<oneshot::Sender<Answer>>) = jobs.into_iter().map(|j| (j.mutation, j.reply)).unzip();
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.requests.fetch_add(mutations.len() as u64, Ordering::Relaxed);
        let answers = store.apply_batch(&mutations, &stats).await;
        // Requests left out of the batch (their payment is locked by another transaction, or
        // missing) wait for the lock in transactions of their own, not in the batch, so one
        // hot payment never holds up the instance's other requests; those for one payment
        // run one after another, in arrival order.
        let mut left_out: Vec<(String, Vec<Waiting>)> = Vec::new();
        for ((reply, answer), mutation) in replies.into_iter().zip(answers).zip(mutations) {
            match answer {
                // A caller that went away still had its request applied; its retry with the
                // same key gets the stored answer.
                Some(answer) => {
                    let _ = reply.send(answer);
                }
                None => {
                    let id = mutation.payment().map(ToString::to_string).unwrap_or_default();
                    match left_out.iter_mut().find(|(p, _)| *p == id) {
                        Some((_, queue)) => queue.push((mutation, reply)),
                        None => left_out.push((id, vec![(mutation, reply)])),
                    }
                }
            }
        }
        for (_, queue) in left_out {
            let store = store.clone();
            tokio::spawn(async move {
                for (mutation, reply) in queue {
                    let answer = store.on_connection(async |c| store.apply_one_on(c, &mutation).await).await;
                    let _ = reply.send(answer);
                }
            });
        }
    }
}

/// Why a batch did not commit as one.
enum BatchFailure {
    /// The database is unreachable (or the commit's outcome is unknown): everyone gets it.
    Unavailable(PaymentError),
    /// A statement failed for reasons one request may have caused: run them one by one.
    OneByOne(String),
}

impl From<tokio_postgres::Error> for BatchFailure {
    fn from(e: tokio_postgres::Error) -> Self {
        use tokio_postgres::error::SqlState;
        // Two batches caught in each other's key inserts: one is chosen to fail; its requests
        // run again one by one rather than fail.
        if e.code().is_some_and(|c| *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE) {
            return Self::OneByOne(e.to_string());
        }
        match PaymentError::from(e) {
            PaymentError::Unavailable(why) => Self::Unavailable(PaymentError::Unavailable(why)),
            other => Self::OneByOne(other.to_string()),
        }
    }
}

/// The writes an accepted request makes.
struct Accepted {
    operation: (String, &'static str, i64),
    event: (uuid::Uuid, EventType, Vec<u8>),
    payment_id: String,
    merchant_id: String,
    key: String,
    fp: Fingerprint,
    response: Vec<u8>,
    trace: TraceHeaders,
    created_at: SystemTime,
}

impl PaymentStore {
    /// Applies a batch: every answer as if the mutations ran one by one in this order.
    /// `None` for a request whose payment another transaction holds locked: it was left out
    /// of the batch, to run in a transaction of its own ([`PaymentStore::apply_one_on`]).
    pub async fn apply_batch(&self, batch: &[Mutation], stats: &BatchStats) -> Vec<Option<Answer>> {
        let mut client = match self.pool().get().await {
            Ok(c) => c,
            Err(e) => {
                let why = e.to_string();
                return batch.iter().map(|_| Some(Err(PaymentError::Unavailable(why.clone())))).collect();
            }
        };
        match self.batch_on(&mut client, batch).await {
            Ok(answers) => answers,
            Err(BatchFailure::Unavailable(e)) => {
                // Its task may not have noticed the end yet: never hand it to the next caller.
                drop(deadpool_postgres::Object::take(client));
                let why = e.to_string();
                batch.iter().map(|_| Some(Err(PaymentError::Unavailable(why.clone())))).collect()
            }
            Err(BatchFailure::OneByOne(why)) => {
                stats.fallbacks.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%why, size = batch.len(), "a batch was rolled back; its requests run one by one");
                let mut answers = Vec::with_capacity(batch.len());
                for m in batch {
                    let answer = self.apply_one_on(&mut client, m).await;
                    let gone = matches!(answer, Err(PaymentError::Unavailable(_)));
                    answers.push(Some(answer));
                    if gone {
                        // The rest would fail the same way on this connection; give them a
                        // fresh one each through the pool.
                        drop(deadpool_postgres::Object::take(client));
                        for m in &batch[answers.len()..] {
                            answers.push(Some(self.on_connection(async |c| self.apply_one_on(c, m).await).await));
                        }
                        return answers;
                    }
                }
                answers
            }
        }
    }

    async fn batch_on(&self, client: &mut deadpool_postgres::Client, batch: &[Mutation]) -> Result<Vec<Option<Answer>>, BatchFailure> {
        let result = self.batch_in_transaction(client, batch).await;
        if matches!(result, Err(BatchFailure::OneByOne(_))) {
            // The transaction was opened by hand (to pipeline BEGIN with the reads): close it
            // before the connection runs the requests one by one.
            if let Err(e) = client.batch_execute("ROLLBACK").await {
                return Err(BatchFailure::Unavailable(PaymentError::from(e)));
            }
        }
        result
    }

    async fn batch_in_transaction(
        &self,
        client: &mut deadpool_postgres::Client,
        batch: &[Mutation],
    ) -> Result<Vec<Option<Answer>>, BatchFailure> {
        // The statements of steps 1-3 are sent together with BEGIN (pipelined: one round trip)
        // and run in this order, each seeing what committed before it started.
        //
        // 1. Every request's idempotency key, as the one-request path takes it: a key held by
        //    another transaction is IN_PROGRESS. (Advisory locks are re-entrant, so the same
        //    key twice in this batch is the second request meeting the first's record.)
        let scopes: Vec<String> = batch.iter().map(Mutation::lock_scope).collect();
        let keys: Vec<String> = batch.iter().map(|m| m.key().to_owned()).collect();
        let lock_keys = client
            .prepare_cached(
                "SELECT pg_try_advisory_xact_lock(hashtextextended(s || '/' || k, 0)) FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS t(s, k, n) ORDER BY n",
            )
            .await?;
        // 2. Every payment the batch changes, locked in one statement, in payment-id order.
        //    A row another transaction holds is skipped, not waited for: its requests leave the
        //    batch (as does a payment that does not exist; both are answered on their own).
        let mut ids: Vec<String> = batch.iter().filter_map(|m| m.payment().map(ToString::to_string)).collect();
        ids.sort_unstable();
        ids.dedup();
        let lock_rows = client
            .prepare_cached(concat!(
                "SELECT ",
                payment_columns!(),
                " FROM payments WHERE payment_id = ANY($1::text[]) ORDER BY payment_id FOR UPDATE SKIP LOCKED"
            ))
            .await?;
        // 3. The idempotency records of every (merchant, key) the batch uses; a capture's,
        //    refund's or void's merchant is its payment's.
        let (merchants, payments): (Vec<Option<String>>, Vec<Option<String>>) = batch
            .iter()
            .map(|m| match m {
                Mutation::Authorize { cmd, .. } => (Some(cmd.merchant_id.clone()), None),
                other => (None, other.payment().map(ToString::to_string)),
            })
            .unzip();
        let read_records = client
            .prepare_cached(
                "SELECT i.merchant_id, i.idempotency_key, i.method, i.request, i.response, i.expires_at
                 FROM unnest($1::text[], $2::text[], $3::text[]) AS u(m, p, k)
                 LEFT JOIN payments p ON u.m IS NULL AND p.payment_id = u.p
                 JOIN idempotency_keys i ON i.merchant_id = COALESCE(u.m, p.merchant_id) AND i.idempotency_key = u.k",
            )
            .await?;
        let begin = client.batch_execute("BEGIN");
        let held = async { client.query(&lock_keys, &[&scopes, &keys]).await };
        let locked = async { if ids.is_empty() { Ok(Vec::new()) } else { client.query(&lock_rows, &[&ids]).await } };
        let found = async { client.query(&read_records, &[&merchants, &payments, &keys]).await };
        // Polled in this order on first poll, so sent (and executed) in this order.
        let ((), held, locked, found) = futures_util::future::try_join4(begin, held, locked, found).await?;

        let held: Vec<bool> = held.iter().map(|r| r.try_get(0)).collect::<Result<_, _>>()?;
        if held.len() != batch.len() {
            return Err(BatchFailure::OneByOne("the key locks did not answer every request".into()));
        }
        let mut rows: HashMap<String, PaymentRow> = HashMap::with_capacity(locked.len());
        for r in &locked {
            let row = PaymentRow::from_row(r).map_err(|e| BatchFailure::OneByOne(e.to_string()))?;
            rows.insert(row.payment_id.clone(), row);
        }
        // Read once the rows are ours, so it follows every earlier change to them.
        let now = now();
        // Only live records count; a request whose key another transaction holds never looks.
        let mut records: HashMap<(String, String), Record> = HashMap::new();
        for r in &found {
            let expires_at: SystemTime = r.try_get(5)?;
            if expires_at > now {
                let record = Record { method: r.try_get(2)?, request: r.try_get(3)?, response: r.try_get(4)? };
                records.insert((r.try_get(0)?, r.try_get(1)?), record);
            }
        }

        // 4. Every request decided in arrival order, each seeing those before it.
        let mut answers: Vec<Option<Answer>> = Vec::with_capacity(batch.len());
        let mut accepted: Vec<Accepted> = Vec::new();
        let mut created: Vec<PaymentRow> = Vec::new();
        let mut changed: Vec<String> = Vec::new();
        for (m, h) in batch.iter().zip(&held) {
            if !h {
                answers.push(Some(Err(PaymentError::InProgress { key: m.key().to_owned() })));
                continue;
            }
            if m.payment().is_some_and(|id| !rows.contains_key(&id.to_string())) {
                answers.push(None);
                continue;
            }
            let answer = self.decide(m, now, &mut rows, &mut records, &mut accepted, &mut created, &mut changed);
            answers.push(Some(answer));
        }

        // 5. The accepted requests' writes, one statement per table.
        self.write(client, &created, &rows, &changed, &accepted, now).await?;
        match client.batch_execute("COMMIT").await {
            Ok(()) => Ok(answers),
            // Whether it committed is unknown: the callers retry with their keys.
            Err(e) => Err(BatchFailure::Unavailable(PaymentError::Unavailable(format!("the commit's outcome is unknown: {e}")))),
        }
    }

    /// One request against the batch's state so far.
    #[allow(clippy::too_many_arguments)]
    fn decide(
        &self,
        m: &Mutation,
        now: SystemTime,
        rows: &mut HashMap<String, PaymentRow>,
        records: &mut HashMap<(String, String), Record>,
        accepted: &mut Vec<Accepted>,
        created: &mut Vec<PaymentRow>,
        changed: &mut Vec<String>,
    ) -> Answer {
        let fp = m.fingerprint();
        let key = m.key().to_owned();
        let replay = |records: &HashMap<(String, String), Record>, merchant: &str| -> Option<Answer> {
            records.get(&(merchant.to_owned(), key.clone())).map(|r| r.answer(merchant, &key, fp))
        };
        let event_id = uuid::Uuid::now_v7();
        let (row, response) = match m {
            Mutation::Authorize { cmd, .. } => {
                if let Some(a) = replay(records, &cmd.merchant_id) {
                    return a;
                }
                let row = PaymentRow::authorized(self.shard(), cmd, now);
                let payment = row.to_proto();
                let event = pb::PaymentAuthorized {
                    event_id: event_id.to_string(),
                    occurred_at: Some(now.into()),
                    payment: Some(payment.clone()),
                    idempotency_key: key.clone(),
                };
                let response = payment.encode_to_vec();
                accepted.push(Accepted {
                    operation: (row.payment_id.clone(), "AUTHORIZE", row.amount),
                    event: (event_id, EventType::Authorized, event.encode_to_vec()),
                    payment_id: row.payment_id.clone(),
                    merchant_id: row.merchant_id.clone(),
                    key: key.clone(),
                    fp: fp.clone(),
                    response: response.clone(),
                    trace: m.trace().clone(),
                    created_at: now,
                });
                created.push(row.clone());
                (row, response)
            }
            other => {
                let id = other.payment().map(ToString::to_string).unwrap_or_default();
                let Some(row) = rows.get_mut(&id) else {
                    return Err(PaymentError::NotFound(id));
                };
                if let Some(c) = other.caller() {
                    c.may_write(&row.merchant_id).map_err(PaymentError::Forbidden)?;
                }
                if let Some(a) = replay(records, &row.merchant_id.clone()) {
                    return a;
                }
                let change = match other {
                    Mutation::Capture { cmd, .. } => lifecycle::capture(&row.balance(), &row.payment_id, cmd.amount),
                    Mutation::Refund { cmd, .. } => lifecycle::refund(&row.balance(), &row.payment_id, cmd.amount),
                    _ => lifecycle::void(&row.balance(), &row.payment_id),
                }?;
                row.set_balance(lifecycle::apply(&row.balance(), change));
                row.advance(now);
                let payment = row.to_proto();
                let (op, event, refund) = self.record(row, &payment, change, event_id, row.updated_at, &key);
                let response = match other {
                    Mutation::Refund { .. } => pb::RefundResponse { refund, payment: Some(payment) }.encode_to_vec(),
                    _ => payment.encode_to_vec(),
                };
                accepted.push(Accepted {
                    operation: (op.id, op.kind, op.amount),
                    event: (event.id, event.kind, event.payload),
                    payment_id: row.payment_id.clone(),
                    merchant_id: row.merchant_id.clone(),
                    key: key.clone(),
                    fp: fp.clone(),
                    response: response.clone(),
                    trace: m.trace().clone(),
                    created_at: row.updated_at,
                });
                if !changed.contains(&row.payment_id) {
                    changed.push(row.payment_id.clone());
                }
                (row.clone(), response)
            }
        };
        // Later requests of the batch with this key meet this request's record.
        records.insert(
            (row.merchant_id.clone(), key),
            Record { method: fp.method.to_owned(), request: fp.request.clone(), response: Some(response.clone()) },
        );
        Ok(response)
    }

    /// One statement per table for the batch's accepted requests, sent together (pipelined
    /// on the connection, executed in order: payments before the operations that refer to
    /// them), so the writes cost one round trip, not five.
    async fn write(
        &self,
        tx: &deadpool_postgres::ClientWrapper,
        created: &[PaymentRow],
        rows: &HashMap<String, PaymentRow>,
        changed: &[String],
        accepted: &[Accepted],
        now: SystemTime,
    ) -> Result<(), BatchFailure> {
        if accepted.is_empty() {
            return Ok(());
        }
        let insert_payments = tx
            .prepare_cached(concat!(
                "INSERT INTO payments (",
                payment_columns!(),
                ") SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[], $5::text[], $6::int8[], $7::int8[], $8::timestamptz[], $9::timestamptz[], $10::int8[])"
            ))
            .await?;
        let update_payments = tx
            .prepare_cached(
                "UPDATE payments p SET status = u.status, captured_amount = u.captured, refunded_amount = u.refunded, updated_at = u.updated_at, version = u.version
                 FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::timestamptz[], $6::int8[]) AS u(payment_id, status, captured, refunded, updated_at, version)
                 WHERE p.payment_id = u.payment_id",
            )
            .await?;
        let insert_operations = tx
            .prepare_cached(
                "INSERT INTO payment_operations (operation_id, payment_id, kind, amount, idempotency_key, created_at)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[], $6::timestamptz[])",
            )
            .await?;
        // In arrival order: the outbox's ids give each payment's events their order.
        let insert_events = tx
            .prepare_cached(
                "INSERT INTO outbox_event (event_id, aggregate_type, aggregate_id, event_type, payload, headers)
                 SELECT e, 'payment', a, t, p,
                        jsonb_strip_nulls(jsonb_build_object('content-type', 'application/x-protobuf', 'message', m, 'traceparent', tp, 'tracestate', ts))
                 FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bytea[], $5::text[], $6::text[], $7::text[]) WITH ORDINALITY AS u(e, a, t, p, m, tp, ts, n)
                 ORDER BY n",
            )
            .await?;
        // A live record another transaction committed since the records were read is not
        // overwritten: the count falls short and the batch runs again one by one (where that
        // request meets it).
        let insert_keys = tx
            .prepare_cached(
                "INSERT INTO idempotency_keys (merchant_id, idempotency_key, method, request, response, payment_id, created_at, expires_at)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::bytea[], $6::text[], $7::timestamptz[], $8::timestamptz[])
                 ON CONFLICT (merchant_id, idempotency_key) DO UPDATE
                    SET method = EXCLUDED.method, request = EXCLUDED.request, response = EXCLUDED.response, payment_id = EXCLUDED.payment_id,
                        created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at
                    WHERE idempotency_keys.expires_at <= EXCLUDED.created_at",
            )
            .await?;

        let new = Columns::of(created.iter());
        let finals: Vec<&PaymentRow> = changed.iter().filter_map(|id| rows.get(id)).collect();
        let updated = Columns::of(finals.iter().copied());
        let a = |f: fn(&Accepted) -> String| accepted.iter().map(f).collect::<Vec<String>>();
        let (op_ids, op_payments, op_kinds, op_keys) =
            (a(|x| x.operation.0.clone()), a(|x| x.payment_id.clone()), a(|x| x.operation.1.to_owned()), a(|x| x.key.clone()));
        let op_amounts: Vec<i64> = accepted.iter().map(|x| x.operation.2).collect();
        let op_times: Vec<SystemTime> = accepted.iter().map(|x| x.created_at).collect();
        let ev_ids: Vec<uuid::Uuid> = accepted.iter().map(|x| x.event.0).collect();
        let (ev_types, ev_messages) = (a(|x| x.event.1.as_str().to_owned()), a(|x| x.event.1.message_name().to_owned()));
        let ev_payloads: Vec<Vec<u8>> = accepted.iter().map(|x| x.event.2.clone()).collect();
        let ev_parents: Vec<Option<String>> = accepted.iter().map(|x| x.trace.traceparent.clone()).collect();
        let ev_states: Vec<Option<String>> = accepted.iter().map(|x| x.trace.tracestate.clone()).collect();
        let (key_merchants, key_methods) = (a(|x| x.merchant_id.clone()), a(|x| x.fp.method.to_owned()));
        let key_requests: Vec<Vec<u8>> = accepted.iter().map(|x| x.fp.request.clone()).collect();
        let key_responses: Vec<Vec<u8>> = accepted.iter().map(|x| x.response.clone()).collect();
        let key_created: Vec<SystemTime> = accepted.iter().map(|_| now).collect();
        let retention = self.retention();
        let key_expires: Vec<SystemTime> = accepted.iter().map(|_| now + retention).collect();

        let payments_in = async {
            if created.is_empty() {
                return Ok(0);
            }
            tx.execute(
                &insert_payments,
                &[
                    &new.ids,
                    &new.merchants,
                    &new.amounts,
                    &new.currencies,
                    &new.statuses,
                    &new.captured,
                    &new.refunded,
                    &new.created,
                    &new.updated,
                    &new.versions,
                ],
            )
            .await
        };
        let payments_up = async {
            if finals.is_empty() {
                return Ok(0);
            }
            tx.execute(
                &update_payments,
                &[&updated.ids, &updated.statuses, &updated.captured, &updated.refunded, &updated.updated, &updated.versions],
            )
            .await
        };
        let operations =
            async { tx.execute(&insert_operations, &[&op_ids, &op_payments, &op_kinds, &op_amounts, &op_keys, &op_times]).await };
        let events = async {
            tx.execute(&insert_events, &[&ev_ids, &op_payments, &ev_types, &ev_payloads, &ev_messages, &ev_parents, &ev_states]).await
        };
        let keys = async {
            tx.execute(
                &insert_keys,
                &[&key_merchants, &op_keys, &key_methods, &key_requests, &key_responses, &op_payments, &key_created, &key_expires],
            )
            .await
        };
        // Polled in this order on first poll, so sent (and executed) in this order.
        let (_, n_updated, _, _, n_keys) = futures_util::future::try_join5(payments_in, payments_up, operations, events, keys).await?;
        if n_updated != finals.len() as u64 {
            return Err(BatchFailure::OneByOne(format!("{n_updated} of {} payments updated", finals.len())));
        }
        if n_keys != accepted.len() as u64 {
            return Err(BatchFailure::OneByOne(format!(
                "{} of {} idempotency keys were taken meanwhile",
                accepted.len() as u64 - n_keys,
                accepted.len()
            )));
        }
        Ok(())
    }
}

/// Payment rows as columns, for `unnest`.
struct Columns {
    ids: Vec<String>,
    merchants: Vec<String>,
    amounts: Vec<i64>,
    currencies: Vec<String>,
    statuses: Vec<String>,
    captured: Vec<i64>,
    refunded: Vec<i64>,
    created: Vec<SystemTime>,
    updated: Vec<SystemTime>,
    versions: Vec<i64>,
}

impl Columns {
    fn of<'a>(rows: impl Iterator<Item = &'a PaymentRow>) -> Self {
        let mut c = Columns {
            ids: vec![],
            merchants: vec![],
            amounts: vec![],
            currencies: vec![],
            statuses: vec![],
            captured: vec![],
            refunded: vec![],
            created: vec![],
            updated: vec![],
            versions: vec![],
        };
        for r in rows {
            c.ids.push(r.payment_id.clone());
            c.merchants.push(r.merchant_id.clone());
            c.amounts.push(r.amount);
            c.currencies.push(r.currency.clone());
            c.statuses.push(status_name(r.status).to_owned());
            c.captured.push(r.captured_amount);
            c.refunded.push(r.refunded_amount);
            c.created.push(r.created_at);
            c.updated.push(r.updated_at);
            c.versions.push(r.version);
        }
        c
    }
}

/// A live idempotency record.
struct Record {
    method: String,
    request: Vec<u8>,
    response: Option<Vec<u8>>,
}

impl Record {
    /// What a request with this key gets: the stored answer if it is the same request, a
    /// conflict if not (as `idempotency::claim` decides).
    fn answer(&self, merchant_id: &str, key: &str, fp: &Fingerprint) -> Answer {
        if self.method != fp.method || self.request != fp.request {
            let previous = if self.method == fp.method {
                format!("{} with different parameters", self.method)
            } else {
                format!("a {} call", self.method)
            };
            return Err(PaymentError::IdempotencyConflict { merchant_id: merchant_id.to_owned(), key: key.to_owned(), previous });
        }
        self.response.clone().ok_or_else(|| PaymentError::Internal("a committed idempotency record has no stored response".into()))
    }
}
