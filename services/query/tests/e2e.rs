//! The whole pipeline in one process: REST through the edge to the payments shards, the
//! relays to the mock Kafka cluster, the ledger and view workers, and the query service
//! back through the edge. The view and the balance must say what the events imply.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use paymesh_core::config::MeshConfig;
use paymesh_core::shard::shard_for_merchant;
use paymesh_kafka::local::LocalBroker;
use paymesh_testkit::PgServer;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DEADLINE: Duration = Duration::from_secs(90);

async fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let b = body.unwrap_or("");
    let ct = if body.is_some() { "Content-Type: application/json\r\n" } else { "" };
    let req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{ct}Content-Length: {}\r\n\r\n{b}", b.len());
    s.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").expect("http");
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], paymesh_testkit::port::free_port_below_ephemeral().expect("port")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn view_and_balance_through_the_edge_say_what_the_events_imply() {
    let pg = PgServer::shared().expect("postgres");
    let shards: Vec<String> = (0..2).map(|i| pg.url(&pg.fresh_database(&format!("e2e{i}")).expect("createdb"))).collect();
    let workers_db = pg.url(&pg.fresh_database("e2ew").expect("createdb"));
    let broker = LocalBroker::start(1, 6, 3).expect("broker");
    let (p0, p1, q, edge, admin) = (addr(), addr(), addr(), addr(), addr());
    let text = format!(
        r#"[[shards]]
id = 0
database_url = "{s0}"
[[shards]]
id = 1
database_url = "{s1}"
[payments]
health_check_interval = "100ms"
[[payments.instances]]
name = "p0"
shard = 0
listen = "{p0}"
[[payments.instances]]
name = "p1"
shard = 1
listen = "{p1}"
[kafka]
bootstrap = "{bootstrap}"
[relay]
poll_interval = "50ms"
[[relay.instances]]
name = "r0"
shard = 0
status_listen = "127.0.0.1:0"
[[relay.instances]]
name = "r1"
shard = 1
status_listen = "127.0.0.1:0"
[workers]
database_url = "{workers_db}"
[[workers.instances]]
name = "ledger-1"
kind = "ledger"
status_listen = "127.0.0.1:0"
[[workers.instances]]
name = "view-1"
kind = "view"
status_listen = "127.0.0.1:0"
[query]
[[query.instances]]
name = "q1"
listen = "{q}"
[edge]
listen = "{edge}"
admin_listen = "{admin}"
[edge.health]
interval = "100ms"
[[edge.clusters]]
name = "payments"
payments_instances = true
[[edge.clusters]]
name = "query"
endpoints = [{{ address = "{q}" }}]
[[edge.routes]]
service = "payments.v1.Payments"
cluster = "payments"
shard_keys = [{{ field = "merchant_id", kind = "merchant" }}, {{ field = "payment_id", kind = "sharded_id" }}]
[[edge.routes]]
service = "query.v1.MerchantQueries"
cluster = "query"
"#,
        s0 = shards[0],
        s1 = shards[1],
        bootstrap = broker.bootstrap(),
    );
    let config = MeshConfig::parse(Path::new("e2e.toml"), &text, &|_| None).unwrap_or_else(|e| panic!("{e}"));

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stop = || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.changed().await;
        }
    };
    let mut parts: Vec<(&str, tokio::task::JoinHandle<Result<(), String>>)> = Vec::new();
    for name in ["p0", "p1"] {
        let (cfg, s) = (config.clone(), stop());
        parts.push((name, tokio::spawn(async move { paymesh_payments::run(&cfg, name, s).await.map_err(|e| e.to_string()) })));
    }
    for name in ["r0", "r1"] {
        let (cfg, s) = (config.clone(), stop());
        parts.push((name, tokio::spawn(async move { paymesh_relay::run(&cfg, name, s).await.map_err(|e| e.to_string()) })));
    }
    for name in ["ledger-1", "view-1"] {
        let (cfg, s) = (config.clone(), stop());
        parts.push((name, tokio::spawn(async move { paymesh_workers::run(&cfg, name, s).await.map_err(|e| e.to_string()) })));
    }
    {
        let (cfg, s) = (config.clone(), stop());
        parts.push(("q1", tokio::spawn(async move { paymesh_query::run(&cfg, "q1", s).await })));
    }
    // A component that stops early has failed: say which, instead of timing out later.
    let check = |parts: &Vec<(&str, tokio::task::JoinHandle<Result<(), String>>)>| {
        for (name, h) in parts {
            assert!(!h.is_finished(), "{name} stopped early");
        }
    };
    let state = paymesh_edge::prepare(&config).expect("edge config");
    let (edge_stop, shutdown) = paymesh_edge::ShutdownOnSignal::new();
    let edge_thread = std::thread::spawn(move || paymesh_edge::run(state, Box::new(shutdown)).expect("edge"));
    let start = Instant::now();
    while http_ready(admin).await != 200 {
        assert!(start.elapsed() < DEADLINE, "the edge never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Merchant M: three payments; one captured and partly refunded, one captured, one voided.
    let m = "e2e-merchant";
    let mut ids = Vec::new();
    for i in 0..3 {
        let (st, p) = http(
            edge,
            "POST",
            "/api/payments/authorize",
            Some(&format!(r#"{{"merchantId":"{m}","amount":1000,"currency":"KRW","idempotencyKey":"a{i}"}}"#)),
        )
        .await;
        assert_eq!(st, 200, "{p}");
        ids.push(p["paymentId"].as_str().expect("id").to_owned());
    }
    assert!(ids.iter().all(|id| id.starts_with(&format!("pay_{}_", shard_for_merchant(m, 2)))));
    let post = |path: String, body: &'static str| async move { http(edge, "POST", &path, Some(body)).await };
    assert_eq!(post(format!("/api/payments/{}/capture", ids[0]), r#"{"idempotencyKey":"c0"}"#).await.0, 200);
    assert_eq!(post(format!("/api/payments/{}/refund", ids[0]), r#"{"amount":300,"idempotencyKey":"r0"}"#).await.0, 200);
    assert_eq!(post(format!("/api/payments/{}/capture", ids[1]), r#"{"amount":600,"idempotencyKey":"c1"}"#).await.0, 200);
    assert_eq!(post(format!("/api/payments/{}/void", ids[2]), r#"{"idempotencyKey":"v2"}"#).await.0, 200);

    // The view catches up through relay, Kafka and worker; poll it through the edge.
    let start = Instant::now();
    let list = loop {
        let (st, v) = http(edge, "GET", &format!("/api/merchants/{m}/payments"), None).await;
        let statuses: Vec<&str> =
            v["payments"].as_array().map(|a| a.iter().filter_map(|p| p["status"].as_str()).collect()).unwrap_or_default();
        if st == 200 && statuses == ["PAYMENT_STATUS_VOIDED", "PAYMENT_STATUS_CAPTURED", "PAYMENT_STATUS_PARTIALLY_REFUNDED"] {
            break v;
        }
        check(&parts);
        assert!(start.elapsed() < DEADLINE, "the view never showed the final states: {st} {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let got: Vec<&str> = list["payments"].as_array().expect("list").iter().map(|p| p["paymentId"].as_str().expect("id")).collect();
    assert_eq!(got, [ids[2].as_str(), ids[1].as_str(), ids[0].as_str()], "newest first");
    assert_eq!(list["payments"][2]["refundedAmount"], json!("300"));

    // Filter and paginate.
    let (_, captured) = http(edge, "GET", &format!("/api/merchants/{m}/payments?status=PAYMENT_STATUS_CAPTURED"), None).await;
    assert_eq!(captured["payments"].as_array().map(Vec::len), Some(1));
    let (_, page1) = http(edge, "GET", &format!("/api/merchants/{m}/payments?pageSize=2"), None).await;
    assert_eq!(page1["payments"].as_array().map(Vec::len), Some(2));
    let token = page1["nextPageToken"].as_str().expect("a second page").to_owned();
    let (_, page2) = http(edge, "GET", &format!("/api/merchants/{m}/payments?pageSize=2&pageToken={token}"), None).await;
    assert_eq!(page2["payments"][0]["paymentId"], json!(ids[0]));
    assert!(page2.get("nextPageToken").is_none(), "last page: {page2}");
    let (st, bad) = http(edge, "GET", &format!("/api/merchants/{m}/payments?pageToken=zz"), None).await;
    assert_eq!((st, bad["code"].clone()), (400, json!(3)));

    // The balance: captured 1000 + 600, refunded 300.
    let start = Instant::now();
    loop {
        let (st, b) = http(edge, "GET", &format!("/api/merchants/{m}/balance"), None).await;
        if st == 200 && b["balances"] == json!([{"currency": "KRW", "balance": "1300"}]) {
            break;
        }
        check(&parts);
        assert!(start.elapsed() < DEADLINE, "the balance never became 1300: {st} {b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let _ = stop_tx.send(true);
    for (name, h) in parts {
        h.await.expect("join").unwrap_or_else(|e| panic!("{name} failed: {e}"));
    }
    let _ = edge_stop.send(());
    tokio::task::spawn_blocking(move || edge_thread.join()).await.expect("join").expect("edge");
}

async fn http_ready(admin: SocketAddr) -> u16 {
    match tokio::net::TcpStream::connect(admin).await {
        Ok(_) => http(admin, "GET", "/ready", None).await.0,
        Err(_) => 0,
    }
}
