//! Group commit (issue 14) on real PostgreSQL: one batch gives every caller the answer and
//! leaves the database as the same requests one by one; concurrent calls through the
//! service are batched; a payments process killed while batches are in flight loses no
//! acknowledged request and half-writes nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use paymesh_core::ShardId;
use paymesh_core::config::DatabaseConfig;
use paymesh_core::identity::Caller;
use paymesh_payments::PaymentError;
use paymesh_payments::store::{Answer, BatchStats, Mutation, PaymentStore, TraceHeaders, connect_pool, schema};
use paymesh_payments::validate;
use paymesh_proto::payments::v1 as pb;
use prost::Message;

use crate::harness::*;

const RETENTION: Duration = Duration::from_secs(48 * 3600);

/// A store over a fresh, migrated database.
async fn store(name: &str) -> (PaymentStore, tokio_postgres::Client) {
    let pg = pg();
    let url = pg.url(&pg.fresh_database(name).expect("createdb"));
    let pool = connect_pool(&DatabaseConfig::new(url.clone(), 4)).expect("pool");
    schema::migrate(&mut pool.get().await.expect("connection")).await.expect("migrate");
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(conn);
    (PaymentStore::new(pool, ShardId(0), RETENTION), client)
}

fn fp(method: &'static str, request: &impl Message) -> paymesh_payments::store::Fingerprint {
    paymesh_payments::store::Fingerprint { method, request: request.encode_to_vec() }
}

/// A step of the script, naming payments by their index among the seeded ones.
#[derive(Clone, Copy)]
enum Step {
    Authorize {
        merchant: &'static str,
        amount: i64,
        key: &'static str,
    },
    Capture {
        payment: usize,
        amount: Option<i64>,
        key: &'static str,
    },
    Refund {
        payment: usize,
        amount: Option<i64>,
        key: &'static str,
    },
    Void {
        payment: usize,
        key: &'static str,
    },
    /// A capture by a caller from another merchant (the mesh scopes callers).
    CaptureAsStranger {
        payment: usize,
        key: &'static str,
    },
    CaptureMissing {
        key: &'static str,
    },
}

fn mutation(step: Step, ids: &[String]) -> Mutation {
    let trace = TraceHeaders::default();
    let id = |i: usize| ids[i].parse().expect("payment id");
    match step {
        Step::Authorize { merchant, amount, key } => {
            let req = pb::AuthorizeRequest { merchant_id: merchant.into(), amount, currency: "KRW".into(), idempotency_key: key.into() };
            let cmd = validate::authorize(&req).expect("valid");
            Mutation::Authorize { cmd, fp: fp("Authorize", &pb::AuthorizeRequest { idempotency_key: String::new(), ..req }), trace }
        }
        Step::Capture { payment, amount, key } => {
            let req = pb::CaptureRequest { payment_id: ids[payment].clone(), amount, idempotency_key: key.into() };
            let cmd = validate::Capture { payment_id: id(payment), amount, idempotency_key: key.into() };
            Mutation::Capture { cmd, caller: None, fp: fp("Capture", &pb::CaptureRequest { idempotency_key: String::new(), ..req }), trace }
        }
        Step::Refund { payment, amount, key } => {
            let req = pb::RefundRequest { payment_id: ids[payment].clone(), amount, idempotency_key: key.into() };
            let cmd = validate::Refund { payment_id: id(payment), amount, idempotency_key: key.into() };
            Mutation::Refund { cmd, caller: None, fp: fp("Refund", &pb::RefundRequest { idempotency_key: String::new(), ..req }), trace }
        }
        Step::Void { payment, key } => {
            let req = pb::VoidRequest { payment_id: ids[payment].clone(), idempotency_key: key.into() };
            let cmd = validate::Void { payment_id: id(payment), idempotency_key: key.into() };
            Mutation::Void { cmd, caller: None, fp: fp("Void", &pb::VoidRequest { idempotency_key: String::new(), ..req }), trace }
        }
        Step::CaptureAsStranger { payment, key } => {
            let Mutation::Capture { cmd, fp, trace, .. } = mutation(Step::Capture { payment, amount: None, key }, ids) else {
                unreachable!()
            };
            let stranger = Caller { subject: "mallory".into(), merchant: Some("merchant-x".into()), scopes: vec![] };
            Mutation::Capture { cmd, caller: Some(stranger), fp, trace }
        }
        Step::CaptureMissing { key } => {
            let missing = paymesh_core::ids::PaymentId::new(ShardId(0)).to_string();
            let mut ids = ids.to_vec();
            ids.push(missing);
            mutation(Step::Capture { payment: ids.len() - 1, amount: None, key }, &ids)
        }
    }
}

/// An answer without what differs between two runs (payment and refund ids, times).
fn normalized(step: Step, answer: &Answer, ids: &[String]) -> String {
    match answer {
        Ok(bytes) => {
            let payment = match step {
                Step::Refund { .. } => pb::RefundResponse::decode(bytes.as_slice()).expect("refund").payment.expect("payment"),
                _ => pb::Payment::decode(bytes.as_slice()).expect("payment"),
            };
            let which = ids.iter().position(|i| *i == payment.payment_id).map_or("new".to_owned(), |i| format!("p{i}"));
            format!(
                "ok {which} {} {:?} amount={} captured={} refunded={} version={}",
                payment.merchant_id,
                payment.status(),
                payment.amount,
                payment.captured_amount,
                payment.refunded_amount,
                payment.version
            )
        }
        Err(e) => {
            let mut text = format!("{:?}: {e}", e.code());
            for (i, id) in ids.iter().enumerate() {
                text = text.replace(id.as_str(), &format!("p{i}"));
            }
            // The missing payment's id is new in every run.
            if let PaymentError::NotFound(_) = e {
                text = "NotFound".into();
            }
            text
        }
    }
}

/// The database's state without ids and times: per seeded payment, its row, its operations
/// and its events in outbox order; the idempotency records; the row counts.
async fn state(db: &tokio_postgres::Client, ids: &[String]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (i, id) in ids.iter().enumerate() {
        let row = db
            .query_one("SELECT status, amount, captured_amount, refunded_amount, version FROM payments WHERE payment_id = $1", &[id])
            .await
            .expect("payment");
        let row = format!(
            "{} {} {} {} {}",
            row.get::<_, String>(0),
            row.get::<_, i64>(1),
            row.get::<_, i64>(2),
            row.get::<_, i64>(3),
            row.get::<_, i64>(4)
        );
        let ops: Vec<String> = db
            .query("SELECT kind, amount, idempotency_key FROM payment_operations WHERE payment_id = $1 ORDER BY created_at, kind, idempotency_key", &[id])
            .await
            .expect("ops")
            .iter()
            .map(|r| format!("{}:{}:{}", r.get::<_, String>(0), r.get::<_, i64>(1), r.get::<_, String>(2)))
            .collect();
        let events: Vec<String> = db
            .query("SELECT event_type FROM outbox_event WHERE aggregate_id = $1 ORDER BY id", &[id])
            .await
            .expect("events")
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect();
        out.insert(format!("p{i}"), format!("{row} ops={ops:?} events={events:?}"));
    }
    let keys: Vec<String> = db
        .query(
            "SELECT merchant_id, idempotency_key, method, payment_id IS NOT NULL, response IS NOT NULL FROM idempotency_keys ORDER BY 1, 2",
            &[],
        )
        .await
        .expect("keys")
        .iter()
        .map(|r| {
            format!(
                "{}/{} {} {} {}",
                r.get::<_, String>(0),
                r.get::<_, String>(1),
                r.get::<_, String>(2),
                r.get::<_, bool>(3),
                r.get::<_, bool>(4)
            )
        })
        .collect();
    out.insert("keys".into(), format!("{keys:?}"));
    for table in ["payments", "payment_operations", "outbox_event", "idempotency_keys"] {
        let n: i64 = db.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.expect("count").get(0);
        out.insert(format!("count {table}"), n.to_string());
    }
    out
}

/// Seeds four authorized payments of 1000 (merchant m-1 except the last, m-2) one by one.
async fn seed(store: &PaymentStore) -> Vec<String> {
    let mut ids = Vec::new();
    for (i, merchant) in ["m-1", "m-1", "m-1", "m-2"].iter().enumerate() {
        let key: &'static str = ["seed-0", "seed-1", "seed-2", "seed-3"][i];
        let m = mutation(Step::Authorize { merchant, amount: 1000, key }, &[]);
        let Mutation::Authorize { cmd, fp, trace } = m else { unreachable!() };
        ids.push(store.authorize(&cmd, &fp, &trace).await.expect("seed").payment_id);
    }
    ids
}

/// One batch mixing successes, idempotency replays and conflicts, over-capture and
/// over-refund, illegal transitions, several requests for one payment, a missing payment and
/// a stranger's capture: every answer and the database equal the same requests one by one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_answers_and_writes_exactly_as_the_requests_one_by_one() {
    use Step::*;
    let script = [
        Capture { payment: 0, amount: None, key: "c0" },
        Capture { payment: 0, amount: None, key: "c1" },
        Capture { payment: 0, amount: None, key: "c0" },
        Capture { payment: 0, amount: Some(10), key: "c0" },
        Refund { payment: 0, amount: Some(300), key: "r0" },
        Refund { payment: 0, amount: Some(800), key: "r1" },
        Refund { payment: 0, amount: Some(700), key: "r2" },
        Void { payment: 1, key: "v0" },
        Capture { payment: 1, amount: None, key: "c2" },
        Capture { payment: 2, amount: Some(5000), key: "c3" },
        Capture { payment: 2, amount: Some(500), key: "c3" },
        Refund { payment: 2, amount: None, key: "r3" },
        Authorize { merchant: "m-1", amount: 42, key: "a-new" },
        Authorize { merchant: "m-1", amount: 42, key: "a-new" },
        Authorize { merchant: "m-1", amount: 43, key: "a-new" },
        Authorize { merchant: "m-1", amount: 1000, key: "seed-0" },
        Authorize { merchant: "m-1", amount: 999, key: "seed-1" },
        CaptureMissing { key: "c-missing" },
        CaptureAsStranger { payment: 3, key: "c-stranger" },
        Refund { payment: 3, amount: None, key: "r-early" },
        Capture { payment: 3, amount: None, key: "c4" },
        Refund { payment: 3, amount: Some(1), key: "r4" },
        Refund { payment: 3, amount: Some(1), key: "r4" },
        Refund { payment: 3, amount: Some(2), key: "r4" },
    ];

    // One by one, each request in its own transaction.
    let (alone, alone_db) = store("gc_alone").await;
    let alone_ids = seed(&alone).await;
    let mut alone_answers = Vec::new();
    for step in script {
        let m = mutation(step, &alone_ids);
        let answer = match &m {
            Mutation::Authorize { cmd, fp, trace } => alone.authorize(cmd, fp, trace).await.map(|p| p.encode_to_vec()),
            Mutation::Capture { cmd, caller, fp, trace } => alone.capture(cmd, caller.as_ref(), fp, trace).await.map(|p| p.encode_to_vec()),
            Mutation::Refund { cmd, caller, fp, trace } => alone.refund(cmd, caller.as_ref(), fp, trace).await.map(|p| p.encode_to_vec()),
            Mutation::Void { cmd, caller, fp, trace } => alone.void(cmd, caller.as_ref(), fp, trace).await.map(|p| p.encode_to_vec()),
        };
        alone_answers.push(normalized(step, &answer, &alone_ids));
    }

    // The same requests as one batch.
    let (batched, batched_db) = store("gc_batched").await;
    let batched_ids = seed(&batched).await;
    let batch: Vec<Mutation> = script.iter().map(|s| mutation(*s, &batched_ids)).collect();
    let stats = BatchStats::default();
    let mut answers: Vec<Answer> = Vec::new();
    for (answer, m) in batched.apply_batch(&batch, &stats).await.into_iter().zip(&batch) {
        answers.push(match answer {
            Some(a) => a,
            // Left out of the batch (its payment is missing, or locked elsewhere): answered
            // alone, as the committer does.
            None => batched.apply(m.clone()).await,
        });
    }
    assert_eq!(stats.fallbacks.load(std::sync::atomic::Ordering::Relaxed), 0, "the batch was run one by one, proving nothing");
    let batched_answers: Vec<String> = script.iter().zip(&answers).map(|(s, a)| normalized(*s, a, &batched_ids)).collect();

    for (i, (a, b)) in alone_answers.iter().zip(&batched_answers).enumerate() {
        assert_eq!(a, b, "request {i}: alone vs in the batch");
    }
    // The script means something: successes and each kind of refusal.
    let all = alone_answers.join("\n");
    for needle in ["ok p0", "FailedPrecondition", "AlreadyExists", "NotFound", "PermissionDenied", "ok new"] {
        assert!(all.contains(needle), "the script lacks {needle}:\n{all}");
    }
    let (a, b) = (state(&alone_db, &alone_ids).await, state(&batched_db, &batched_ids).await);
    assert_eq!(a, b, "the database after the batch differs from the one-by-one database");
}

/// Many concurrent calls through the service are answered correctly (each authorize its own
/// payment, a repeated key its first answer or ABORTED while that one runs, an invalid
/// request INVALID_ARGUMENT) and were applied in batches of more than one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_are_batched_and_each_gets_its_own_answer() {
    let mesh = TestMesh::start(1).await;
    let merchant = "m-batch".to_owned();
    let mut calls = Vec::new();
    for i in 0..300 {
        let mut client = mesh.client(0).await;
        let (merchant, key) = (merchant.clone(), format!("k-{}", i % 250));
        let amount = if i % 50 == 49 { 0 } else { 1000 + (i % 250) as i64 };
        calls.push(tokio::spawn(async move {
            let req = pb::AuthorizeRequest { merchant_id: merchant, amount, currency: "KRW".into(), idempotency_key: key.clone() };
            (key, amount, client.authorize(req).await.map(tonic::Response::into_inner))
        }));
    }
    let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in calls {
        let (key, amount, result) = c.await.expect("task");
        match result {
            Ok(p) => {
                assert_eq!((p.amount, p.status()), (amount, pb::PaymentStatus::Authorized));
                by_key.entry(key).or_default().push(p.payment_id);
            }
            Err(s) if amount == 0 => assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s:?}"),
            Err(s) => assert_eq!(s.code(), tonic::Code::Aborted, "{key}: {s:?}"),
        }
    }
    // A key's answers are all the same payment; different keys, different payments.
    let mut all = std::collections::BTreeSet::new();
    for (key, ids) in &by_key {
        assert!(ids.windows(2).all(|w| w[0] == w[1]), "{key} got {ids:?}");
        assert!(all.insert(ids[0].clone()), "{key}'s payment is another key's too");
    }
    let db = mesh_db(&mesh).await;
    let n: i64 = db.query_one("SELECT count(*) FROM payments", &[]).await.expect("count").get(0);
    assert_eq!(n as usize, all.len(), "payments in the database vs payments answered");
    let metrics = mesh.status_page(0, "/metrics").await;
    let batches = metric(&metrics, "paymesh_payments_batches_total");
    let requests = metric(&metrics, "paymesh_payments_batched_requests_total");
    assert!(requests >= 290.0 && batches < requests, "batches {batches}, requests {requests}:\n{metrics}");
    mesh.stop().await;
}

/// Every acknowledged `(key, payment id)` is wholly in the database: the payment, its
/// idempotency record with the answer, its operation and its event.
async fn assert_whole(db: &tokio_postgres::Client, acked: &[(String, String)]) {
    for (key, id) in acked {
        let n: i64 = db
            .query_one(
                "SELECT (SELECT count(*) FROM payments WHERE payment_id = $1)
                      + (SELECT count(*) FROM idempotency_keys WHERE idempotency_key = $2 AND payment_id = $1 AND response IS NOT NULL)
                      + (SELECT count(*) FROM payment_operations WHERE payment_id = $1)
                      + (SELECT count(*) FROM outbox_event WHERE aggregate_id = $1)",
                &[id, key],
            )
            .await
            .expect("query")
            .get(0);
        assert_eq!(n, 4, "acknowledged {key} -> {id} is not wholly in the database");
    }
}

async fn mesh_db(mesh: &TestMesh) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&mesh.db_urls[0], tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(conn);
    client
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

/// `kill -9` of the payments process while batches are in flight: every acknowledged
/// authorize is in the database with its idempotency record, operation and event, and no
/// payment is there without all three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_mid_batch_loses_no_acknowledged_request_and_half_writes_nothing() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let pg = pg();
    let url = pg.url(&pg.fresh_database("gc_crash").expect("createdb"));
    let port = paymesh_testkit::port::free_port_below_ephemeral().expect("port");
    let text = config_text(std::slice::from_ref(&url)).replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    let path = std::env::temp_dir().join(format!("paymesh-gc-crash-{}.toml", std::process::id()));
    std::fs::write(&path, text).expect("config");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_payments"))
        .args(["--instance", "payments-0", "--config"])
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn payments");
    let endpoint = format!("http://127.0.0.1:{port}");
    let start = std::time::Instant::now();
    let channel = loop {
        if let Ok(ch) = tonic::transport::Channel::from_shared(endpoint.clone()).expect("uri").connect().await {
            let mut c = pb::payments_client::PaymentsClient::new(ch.clone());
            let probe =
                pb::AuthorizeRequest { merchant_id: "m-probe".into(), amount: 1, currency: "KRW".into(), idempotency_key: "probe".into() };
            if c.authorize(probe).await.is_ok() {
                break ch;
            }
        }
        assert!(child.try_wait().expect("wait").is_none(), "payments exited early");
        assert!(start.elapsed() < DEADLINE, "payments never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let acked: Arc<std::sync::Mutex<Vec<(String, String)>>> = Arc::default();
    let (killed, count) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let mut tasks = Vec::new();
    for t in 0..32 {
        let (ch, acked, killed, count) = (channel.clone(), acked.clone(), killed.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = pb::payments_client::PaymentsClient::new(ch);
            for i in 0.. {
                let key = format!("crash-{t}-{i}");
                let req = pb::AuthorizeRequest {
                    merchant_id: format!("m-{t}"),
                    amount: 100,
                    currency: "KRW".into(),
                    idempotency_key: key.clone(),
                };
                match c.authorize(req).await {
                    Ok(p) => {
                        acked.lock().expect("acked").push((key, p.into_inner().payment_id));
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(_) if killed.load(Ordering::SeqCst) => return,
                    Err(e) => panic!("{key} failed before the kill: {e:?}"),
                }
            }
        }));
    }
    let start = std::time::Instant::now();
    while count.load(Ordering::SeqCst) < 500 {
        assert!(start.elapsed() < DEADLINE, "the load never reached 500 answers");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    killed.store(true, Ordering::SeqCst);
    let status = std::process::Command::new("kill").args(["-KILL", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    child.wait().expect("reap");
    for t in tasks {
        t.await.expect("load task");
    }
    let _ = std::fs::remove_file(&path);

    let (db, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(conn);
    let acked = acked.lock().expect("acked").clone();
    assert!(acked.len() >= 500);
    assert_whole(&db, &acked).await;
    // Nothing half-written: every payment has its record, operation and event, and nothing
    // refers to a payment that is not there.
    let orphans: i64 = db
        .query_one(
            "SELECT (SELECT count(*) FROM payments p WHERE NOT EXISTS (SELECT 1 FROM idempotency_keys i WHERE i.payment_id = p.payment_id)
                                                       OR NOT EXISTS (SELECT 1 FROM payment_operations o WHERE o.payment_id = p.payment_id)
                                                       OR NOT EXISTS (SELECT 1 FROM outbox_event e WHERE e.aggregate_id = p.payment_id))
                  + (SELECT count(*) FROM idempotency_keys i WHERE i.payment_id IS NULL OR NOT EXISTS (SELECT 1 FROM payments p WHERE p.payment_id = i.payment_id))
                  + (SELECT count(*) FROM outbox_event e WHERE NOT EXISTS (SELECT 1 FROM payments p WHERE p.payment_id = e.aggregate_id))",
            &[],
        )
        .await
        .expect("orphans")
        .get(0);
    assert_eq!(orphans, 0, "half-written payments after the kill");
}

/// A payment locked by another transaction holds up only the requests for it: while a
/// capture waits for that lock, the instance's other requests are batched and answered
/// (the batch skips locked rows; their requests wait in a transaction of their own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_payment_holds_up_only_its_own_requests() {
    use crate::faults::{PATIENT, capture_req, capture_waiting_on_lock, hold_row, mesh_with};
    let mesh = mesh_with("gc_hot", PATIENT).await;
    let m = mesh.merchant_on(0, 0);
    let hot = authorized(&mesh, &m, 1_000).await;
    let cold = authorized(&mesh, &m, 2_000).await;
    let mut db = mesh.db(0).await;
    let held = hold_row(&mut db, &hot.payment_id).await;
    let (waiting, _watcher) = capture_waiting_on_lock(&mesh, &hot, &key()).await;

    // Other work on the same instance goes on while the lock is held (PATIENT: a 60 s lock
    // timeout, so nothing here is answered by a timeout).
    let mut c = mesh.client(0).await;
    let mut other = tonic::Request::new(capture_req(&cold, &key()));
    other.set_timeout(DEADLINE);
    let captured = c.capture(other).await.expect("a capture of another payment is not held up").into_inner();
    assert_eq!(captured.status(), pb::PaymentStatus::Captured);
    let mut fresh = tonic::Request::new(authorize_req(&m, 5, "USD"));
    fresh.set_timeout(DEADLINE);
    c.authorize(fresh).await.expect("an authorize is not held up");
    assert!(!waiting.is_finished(), "the capture of the locked payment did not wait for its lock");

    held.rollback().await.expect("release");
    let done = waiting.await.expect("join").expect("the waiting capture succeeds once the lock is gone").into_inner();
    assert_eq!(done.status(), pb::PaymentStatus::Captured);
    mesh.stop().await;
}

/// PostgreSQL killed (immediate stop, no checkpoint) while batches are in flight, then
/// started again: every authorize that was acknowledged survived the crash with its record,
/// operation and event, and nothing is half-written; the writers go on once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_crash_mid_batch_keeps_every_acknowledged_write_whole() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    // Durable (fsync, synchronous commit): a crash must not lose what was committed.
    let mut pg =
        paymesh_testkit::PgServer::start_with(&paymesh_testkit::PgOptions { durable: true, ..Default::default() }).expect("postgres");
    let url = pg.url(&pg.fresh_database("gc_db_crash").expect("createdb"));
    let mesh = TestMesh::start_with(vec![url.clone()], "pool_size = 8\n").await;
    let acked: Arc<std::sync::Mutex<Vec<(String, String)>>> = Arc::default();
    let (stop, count) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let mut writers = Vec::new();
    for t in 0..16 {
        let (mut c, acked, stop, count) = (mesh.client(0).await, acked.clone(), stop.clone(), count.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let key = format!("dbcrash-{t}-{i}");
                let req = pb::AuthorizeRequest {
                    merchant_id: format!("m-{t}"),
                    amount: 100,
                    currency: "KRW".into(),
                    idempotency_key: key.clone(),
                };
                match c.authorize(req).await {
                    Ok(p) => {
                        acked.lock().expect("acked").push((key, p.into_inner().payment_id));
                        count.fetch_add(1, Ordering::SeqCst);
                        i += 1;
                    }
                    // While the database is down: retried with the same key (the answer, if
                    // it committed, is replayed).
                    Err(s) => assert!(matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Aborted), "{key}: {s:?}"),
                }
            }
        }));
    }
    let wait_for = |n: usize| {
        let count = count.clone();
        async move {
            let start = std::time::Instant::now();
            while count.load(Ordering::SeqCst) < n {
                assert!(start.elapsed() < DEADLINE * 2, "the writers never reached {n} answers");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    wait_for(300).await;
    let before = count.load(Ordering::SeqCst);
    let pg = tokio::task::spawn_blocking(move || {
        pg.crash().expect("crash");
        pg.start_again().expect("start again");
        pg
    })
    .await
    .expect("restart");
    // The writers get going again once the pool reconnects.
    wait_for(before + 300).await;
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.expect("writer");
    }

    let (db, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(conn);
    let acked = acked.lock().expect("acked").clone();
    assert_whole(&db, &acked).await;
    let orphans: i64 = db
        .query_one(
            "SELECT (SELECT count(*) FROM payments p WHERE NOT EXISTS (SELECT 1 FROM idempotency_keys i WHERE i.payment_id = p.payment_id)
                                                       OR NOT EXISTS (SELECT 1 FROM outbox_event e WHERE e.aggregate_id = p.payment_id))
                  + (SELECT count(*) FROM idempotency_keys i WHERE NOT EXISTS (SELECT 1 FROM payments p WHERE p.payment_id = i.payment_id))",
            &[],
        )
        .await
        .expect("orphans")
        .get(0);
    assert_eq!(orphans, 0, "half-written payments after the crash");
    // One payment per key: a write retried across the crash was applied once.
    let dupes: i64 = db
        .query_one(
            "SELECT count(*) FROM (SELECT idempotency_key FROM payment_operations GROUP BY idempotency_key HAVING count(*) > 1) d",
            &[],
        )
        .await
        .expect("dupes")
        .get(0);
    assert_eq!(dupes, 0, "a key was applied twice");
    mesh.stop().await;
    drop(pg);
}
