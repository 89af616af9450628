//! The workers against real PostgreSQL and the mock Kafka cluster over TCP: exactly-once
//! application, crash and restart, scale-out, poison messages, and what each model holds.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use paymesh_core::config::{MeshConfig, WorkerKind};
use paymesh_kafka::local::LocalBroker;
use paymesh_proto::payments::v1 as pb;
use paymesh_testkit::PgServer;
use paymesh_workers::Worker;
use prost::Message;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

const DEADLINE: Duration = Duration::from_secs(90);

struct Setup {
    broker: LocalBroker,
    config: MeshConfig,
    db_url: String,
    producer: FutureProducer,
}

fn setup() -> Setup {
    let broker = LocalBroker::start(1, 6, 3).expect("mock cluster");
    let pg = PgServer::shared().expect("postgres");
    let db_url = pg.url(&pg.fresh_database("workers").expect("createdb"));
    let text = format!(
        "[[shards]]\nid = 0\ndatabase_url = \"postgres://unused@127.0.0.1:1/x\"\n[[payments.instances]]\nname = \"p\"\nshard = 0\nlisten = \"127.0.0.1:0\"\n\
         [kafka]\nbootstrap = \"{}\"\n[workers]\ndatabase_url = \"{db_url}\"\npool_size = 4\nmax_attempts = 3\n",
        broker.bootstrap()
    );
    let config = MeshConfig::parse(Path::new("workers-test.toml"), &text, &|_| None).unwrap_or_else(|e| panic!("{e}"));
    let producer = paymesh_kafka::client::producer(&broker.bootstrap(), Duration::from_secs(5)).expect("producer");
    Setup { broker, config, db_url, producer }
}

async fn db(url: &str) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(conn);
    c
}

async fn count(url: &str, sql: &str) -> i64 {
    db(url).await.query_one(sql, &[]).await.expect("count").get(0)
}

/// A synthetic event, encoded as the relay publishes it.
struct Ev {
    topic: &'static str,
    key: String,
    id: String,
    payload: Vec<u8>,
}

fn ts(t: SystemTime) -> Option<prost_types::Timestamp> {
    Some(t.into())
}

/// authorized, captured, and `refunds` refunds of 100 for payment `n` of merchant `m`.
fn flow(m: &str, n: usize, refunds: usize) -> Vec<Ev> {
    let id = format!("pay_{}_{:032x}", n % 2, n as u128 + 1);
    let t0 = SystemTime::now();
    let mut p = pb::Payment {
        payment_id: id.clone(),
        merchant_id: m.into(),
        amount: 1_000,
        currency: "KRW".into(),
        status: 1,
        created_at: ts(t0),
        updated_at: ts(t0),
        ..Default::default()
    };
    let eid = || uuid::Uuid::now_v7().to_string();
    let mut out = Vec::new();
    let e = pb::PaymentAuthorized { event_id: eid(), occurred_at: ts(t0), payment: Some(p.clone()), idempotency_key: "k".into() };
    out.push(Ev { topic: "payment.authorized", key: id.clone(), id: e.event_id.clone(), payload: e.encode_to_vec() });
    let t1 = t0 + Duration::from_millis(1);
    p.status = 2;
    p.captured_amount = 800;
    p.updated_at = ts(t1);
    let e = pb::PaymentCaptured {
        event_id: eid(),
        occurred_at: ts(t1),
        payment: Some(p.clone()),
        idempotency_key: "k".into(),
        captured_amount: 800,
    };
    out.push(Ev { topic: "payment.captured", key: id.clone(), id: e.event_id.clone(), payload: e.encode_to_vec() });
    for r in 0..refunds {
        let t = t1 + Duration::from_millis(1 + r as u64);
        p.status = 3;
        p.refunded_amount += 100;
        p.updated_at = ts(t);
        let refund = pb::Refund { refund_id: format!("ref_0_{:032x}", r + 1), payment_id: id.clone(), amount: 100, created_at: ts(t) };
        let e = pb::PaymentRefunded {
            event_id: eid(),
            occurred_at: ts(t),
            payment: Some(p.clone()),
            idempotency_key: "k".into(),
            refund: Some(refund),
        };
        out.push(Ev { topic: "payment.refunded", key: id.clone(), id: e.event_id.clone(), payload: e.encode_to_vec() });
    }
    out
}

async fn publish(p: &FutureProducer, evs: &[Ev]) {
    for e in evs {
        let h = OwnedHeaders::new().insert(Header { key: "event-id", value: Some(e.id.as_str()) });
        p.send(FutureRecord::to(e.topic).key(&e.key).payload(&e.payload).headers(h), Timeout::Never).await.expect("publish");
    }
}

async fn start(s: &Setup, kind: WorkerKind, name: &str) -> (Arc<Worker>, tokio::task::JoinHandle<()>, tokio::sync::oneshot::Sender<()>) {
    let w = Arc::new(Worker::connect(&s.config, kind, name, &s.broker.bootstrap()).await.expect("worker"));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(w.clone().run(async move {
        let _ = rx.await;
    }));
    (w, task, tx)
}

async fn wait_count(url: &str, sql: &str, want: i64) {
    let start = Instant::now();
    loop {
        let n = count(url, sql).await;
        if n == want {
            return;
        }
        assert!(n < want, "{sql}: {n} is more than {want}");
        assert!(start.elapsed() < DEADLINE, "{sql}: stuck at {n} of {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_applies_each_event_once_and_balances() {
    let s = setup();
    let mut events = Vec::new();
    for n in 0..20 {
        events.extend(flow(&format!("m{}", n % 4), n, 2));
    }
    publish(&s.producer, &events).await;
    // The same events again, as a relay that crashed before marking them would.
    publish(&s.producer, &events[..10]).await;
    let (w, _task, _stop) = start(&s, WorkerKind::Ledger, "ledger-1").await;
    wait_count(&s.db_url, "SELECT count(*) FROM processed_events WHERE consumer = 'ledger'", events.len() as i64).await;
    let start_t = Instant::now();
    while w.duplicates.load(Ordering::Relaxed) < 10 {
        assert!(start_t.elapsed() < DEADLINE, "the redelivered events never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(count(&s.db_url, "SELECT count(*) FROM ledger_entries").await, events.len() as i64);
    assert_eq!(count(&s.db_url, "SELECT (sum(debit) - sum(credit))::bigint FROM ledger_postings").await, 0, "debits equal credits");
    // Everything applied and committed: no lag left.
    let start_l = Instant::now();
    while w.measure_lag() != Some(0) {
        assert!(start_l.elapsed() < DEADLINE, "lag never reached 0: {:?}", w.measure_lag());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let c = db(&s.db_url).await;
    for m in 0..4 {
        let b = paymesh_workers::ledger::balances(&c, &format!("m{m}")).await.expect("balance");
        assert_eq!(b, vec![("KRW".to_owned(), 5 * (800 - 200))], "merchant m{m}: 5 payments x (captured 800 - refunded 200)");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_stream_resumes_without_loss_or_double_apply() {
    let s = setup();
    let mut events = Vec::new();
    for n in 0..60 {
        events.extend(flow("crash", n, 1));
    }
    publish(&s.producer, &events).await;
    let (_w, task, _stop) = start(&s, WorkerKind::Ledger, "ledger-a").await;
    let begun = Instant::now();
    while count(&s.db_url, "SELECT count(*) FROM ledger_entries").await < 20 {
        assert!(begun.elapsed() < DEADLINE, "the worker never started applying");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Crash: no graceful stop, whatever was in flight is lost.
    task.abort();
    let _ = task.await;
    let (_w2, _task2, _stop2) = start(&s, WorkerKind::Ledger, "ledger-b").await;
    wait_count(&s.db_url, "SELECT count(*) FROM ledger_entries", events.len() as i64).await;
    assert_eq!(count(&s.db_url, "SELECT count(DISTINCT event_id) FROM ledger_entries").await, events.len() as i64);
    assert_eq!(count(&s.db_url, "SELECT (sum(debit) - sum(credit))::bigint FROM ledger_postings").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_the_partitions_without_duplicates() {
    let s = setup();
    let (a, _ta, _sa) = start(&s, WorkerKind::View, "view-a").await;
    let (b, _tb, _sb) = start(&s, WorkerKind::View, "view-b").await;
    let mut events = Vec::new();
    for n in 0..100 {
        events.extend(flow(&format!("m{}", n % 7), n, 0));
    }
    publish(&s.producer, &events).await;
    wait_count(&s.db_url, "SELECT count(*) FROM processed_events WHERE consumer = 'view'", events.len() as i64).await;
    let (ra, rb) = (a.applied.load(Ordering::Relaxed), b.applied.load(Ordering::Relaxed));
    assert_eq!(ra + rb, events.len() as u64, "every event applied once across the group");
    assert!(ra > 0 && rb > 0, "both instances got partitions: {ra} and {rb}");
    assert_eq!(count(&s.db_url, "SELECT count(*) FROM payments_view").await, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_goes_to_the_dlq_and_does_not_block_its_partition() {
    let s = setup();
    let good = flow("poisoned", 1, 0);
    let key = good[0].key.clone();
    let poison = Ev { topic: "payment.authorized", key: key.clone(), id: "not-an-event".into(), payload: b"\xff\xffgarbage".to_vec() };
    publish(&s.producer, std::slice::from_ref(&poison)).await;
    publish(&s.producer, &good).await;
    let (w, _t, _s) = start(&s, WorkerKind::Ledger, "ledger-p").await;
    wait_count(&s.db_url, "SELECT count(*) FROM ledger_entries", good.len() as i64).await;
    assert_eq!(w.dead_lettered.load(Ordering::Relaxed), 1);

    use rdkafka::Message;
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::Headers;
    let c: StreamConsumer = paymesh_kafka::client::consumer(&s.broker.bootstrap(), "dlq-reader", "t").expect("consumer");
    c.subscribe(&["ledger.dlq"]).expect("subscribe");
    let m = tokio::time::timeout(DEADLINE, c.recv()).await.expect("a DLQ message").expect("message");
    assert_eq!(m.payload(), Some(poison.payload.as_slice()));
    assert_eq!(m.key(), Some(key.as_bytes()));
    let err = m
        .headers()
        .and_then(|h| h.iter().find(|h| h.key == "dlq-error").and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned())))
        .unwrap_or_default();
    assert!(err.contains("PaymentAuthorized"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_view_keeps_the_newest_state_and_settlement_adjusts_after_close() {
    let s = setup();
    let evs = flow("shop", 7, 2);
    // Out of order: the last refund first, then everything.
    publish(&s.producer, &evs[3..]).await;
    publish(&s.producer, &evs[..3]).await;
    let (_v, _tv, _sv) = start(&s, WorkerKind::View, "view-1").await;
    let (_st, _tst, _sst) = start(&s, WorkerKind::Settlement, "settle-1").await;
    wait_count(&s.db_url, "SELECT count(*) FROM processed_events WHERE consumer = 'view'", 4).await;
    let c = db(&s.db_url).await;
    let row = c
        .query_one("SELECT status, captured_amount, refunded_amount FROM payments_view WHERE payment_id = $1", &[&evs[0].key])
        .await
        .expect("row");
    assert_eq!((row.get::<_, i32>(0), row.get::<_, i64>(1), row.get::<_, i64>(2)), (3, 800, 200), "the newest state wins");

    wait_count(&s.db_url, "SELECT count(*) FROM processed_events WHERE consumer = 'settlement'", 4).await;
    let batch =
        c.query_one("SELECT captured, refunded, adjustments FROM settlement_batches WHERE merchant_id = 'shop'", &[]).await.expect("batch");
    assert_eq!((batch.get::<_, i64>(0), batch.get::<_, i64>(1), batch.get::<_, i64>(2)), (800, 200, 0));

    // Today's batch closes; a later refund of today becomes an adjustment in the next batch.
    paymesh_workers::settlement::close_through(&c, paymesh_workers::settlement::today()).await.expect("close");
    let late = flow("shop", 7, 3);
    publish(&s.producer, &late[4..]).await;
    wait_count(&s.db_url, "SELECT count(*) FROM processed_events WHERE consumer = 'settlement'", 5).await;
    let rows = c
        .query(
            "SELECT captured, refunded, adjustments, closed_at IS NOT NULL FROM settlement_batches WHERE merchant_id = 'shop' ORDER BY day",
            &[],
        )
        .await
        .expect("batches");
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (rows[0].get::<_, i64>(0), rows[0].get::<_, i64>(1), rows[0].get::<_, bool>(3)),
        (800, 200, true),
        "a closed batch never changes"
    );
    assert_eq!((rows[1].get::<_, i64>(2), rows[1].get::<_, bool>(3)), (-100, false), "the refund is an adjustment in the next batch");
}
