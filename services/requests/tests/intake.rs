//! Intake on a real PostgreSQL, its outbox published by the real relay to the local Kafka
//! broker: filing works while the broker is down, and every request reaches its topic once,
//! keyed by the request id (the correlation key), when the broker is back.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use paymesh_core::config::MeshConfig;
use paymesh_kafka::local::LocalBroker;
use paymesh_repair_proto::repair::v1 as pb;
use paymesh_repair_proto::repair::v1::repair_requests_client::RepairRequestsClient;
use paymesh_testkit::PgServer;
use prost::Message as _;
use rdkafka::Message as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use tonic::Code;
use tonic::transport::Channel;

const DEADLINE: Duration = Duration::from_secs(60);

fn addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], paymesh_testkit::port::free_port_below_ephemeral().expect("port")))
}

fn config(db: &str, listen: SocketAddr, bootstrap: &str) -> MeshConfig {
    let text = format!(
        r#"[[shards]]
id = 0
database_url = "{db}"
[[payments.instances]]
name = "unused-payments"
shard = 0
listen = "127.0.0.1:1"
[kafka]
bootstrap = "{bootstrap}"
message_timeout = "2s"
[relay]
poll_interval = "50ms"
retry_interval = "200ms"
[relay.breaker]
wait_in_open = "500ms"
[[relay.instances]]
name = "relay-requests"
outbox = "repair.requests"
status_listen = "127.0.0.1:0"
[repair.requests]
database_url = "{db}"
[[repair.requests.instances]]
name = "requests-1"
listen = "{listen}"
"#
    );
    MeshConfig::parse(Path::new("intake-test.toml"), &text, &|_| None).unwrap_or_else(|e| panic!("{e}"))
}

fn file(customer: &str, product: &str, key: &str) -> pb::FileRequestRequest {
    pb::FileRequestRequest {
        customer_id: customer.into(),
        product: product.into(),
        description: "it makes a noise".into(),
        idempotency_key: key.into(),
    }
}

/// Reads `repair.requested` and `repair.cancelled` until `want` messages arrived: (topic,
/// key, request id in the payload).
async fn consume(bootstrap: &str, want: usize) -> Vec<(String, String, String)> {
    let consumer: StreamConsumer = paymesh_kafka::client::consumer(bootstrap, "intake-test", "t").expect("consumer");
    consumer.subscribe(&["repair.requested", "repair.cancelled"]).expect("subscribe");
    let mut seen = Vec::new();
    let start = Instant::now();
    while seen.len() < want {
        assert!(start.elapsed() < DEADLINE, "only {} of {want} events arrived: {seen:?}", seen.len());
        if let Ok(m) = tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await {
            let m = m.expect("message");
            let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default();
            let payload = m.payload().unwrap_or_default();
            let id = match m.topic() {
                "repair.requested" => pb::RepairRequested::decode(payload).expect("RepairRequested").request_id,
                _ => pb::RepairCancelled::decode(payload).expect("RepairCancelled").request_id,
            };
            seen.push((m.topic().to_owned(), key, id));
        }
    }
    // A duplicate would show up now.
    if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(700), consumer.recv()).await {
        panic!("an extra message on {}", m.topic());
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_taken_while_kafka_is_down_and_each_event_arrives_once_keyed_by_its_request() {
    let pg = PgServer::shared().expect("postgres");
    let db = pg.url(&pg.fresh_database("intake").expect("createdb"));
    let broker = LocalBroker::start(1, 3, 1).expect("broker");
    let at = addr();
    let config = config(&db, at, &broker.bootstrap());
    let (stop, rx) = tokio::sync::watch::channel(false);
    let until_stopped = || {
        let mut rx = rx.clone();
        async move {
            let _ = rx.changed().await;
        }
    };
    let (cfg, s) = (config.clone(), until_stopped());
    let intake = tokio::spawn(async move { paymesh_repair_requests::run(&cfg, "requests-1", s).await });
    let (cfg, s) = (config.clone(), until_stopped());
    let relay = tokio::spawn(async move { paymesh_relay::run(&cfg, "relay-requests", s).await.map_err(|e| e.to_string()) });
    let start = Instant::now();
    let mut c: RepairRequestsClient<Channel> = loop {
        if let Ok(c) = RepairRequestsClient::connect(format!("http://{at}")).await {
            break c;
        }
        assert!(!intake.is_finished(), "intake stopped while starting");
        assert!(start.elapsed() < DEADLINE, "intake never listened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // Kafka down: intake still takes requests (it only writes its own database).
    broker.down().expect("broker down");
    let mut ids = Vec::new();
    for i in 0..5 {
        let r = c.file_request(file(&format!("cust-{i}"), "washing-machine", "k1")).await.expect("filed while Kafka is down").into_inner();
        assert!(r.request_id.starts_with("rq_"));
        assert_eq!(r.status, pb::RequestStatus::Requested as i32);
        ids.push(r.request_id);
    }
    // The same filing again is the same request; another request under the key is refused.
    let again = c.file_request(file("cust-0", "washing-machine", "k1")).await.expect("replay").into_inner();
    assert_eq!(again.request_id, ids[0]);
    let reused = c.file_request(file("cust-0", "fridge", "k1")).await.expect_err("key reused");
    assert_eq!(reused.code(), Code::AlreadyExists);
    // Cancel once; twice is refused and writes nothing.
    let cancelled = c.cancel_request(pb::CancelRequestRequest { request_id: ids[1].clone() }).await.expect("cancel").into_inner();
    assert_eq!(cancelled.status, pb::RequestStatus::Cancelled as i32);
    let twice = c.cancel_request(pb::CancelRequestRequest { request_id: ids[1].clone() }).await.expect_err("twice");
    assert_eq!(twice.code(), Code::FailedPrecondition);
    let unknown = c.cancel_request(pb::CancelRequestRequest { request_id: "rq_none".into() }).await.expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);
    // Bad input: refused by name, nothing written.
    for (bad, field) in [
        (file("", "tv", "k9"), "customer_id"),
        (file("c", "", "k9"), "product"),
        (file("c", &"p".repeat(101), "k9"), "product"),
        (file("c", "tv", ""), "idempotency_key"),
    ] {
        let e = c.file_request(bad).await.expect_err("bad input");
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().starts_with(field), "{}", e.message());
    }

    // Kafka back: every event arrives once, keyed by its request id.
    broker.up().expect("broker up");
    let seen = consume(&broker.bootstrap(), 6).await;
    let requested: Vec<&(String, String, String)> = seen.iter().filter(|s| s.0 == "repair.requested").collect();
    assert_eq!(requested.len(), 5, "{seen:?}");
    for (_, key, id) in &seen {
        assert_eq!(key, id, "the message key is the request id (the correlation key)");
    }
    let mut got: Vec<&str> = requested.iter().map(|s| s.2.as_str()).collect();
    got.sort_unstable();
    let mut want: Vec<&str> = ids.iter().map(String::as_str).collect();
    want.sort_unstable();
    assert_eq!(got, want);
    assert!(seen.iter().any(|s| s.0 == "repair.cancelled" && s.2 == ids[1]));

    let _ = stop.send(true);
    intake.await.expect("join").expect("intake stopped cleanly");
    relay.await.expect("join").expect("relay stopped cleanly");
}
