//! The stock service on a real PostgreSQL, called over gRPC and, through a real edge that
//! was given only the repair descriptor set and a route in its config, over REST.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use paymesh_core::config::MeshConfig;
use paymesh_repair_proto::repair::v1 as pb;
use paymesh_repair_proto::repair::v1::stock_client::StockClient;
use paymesh_testkit::PgServer;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use tonic::transport::Channel;

const DEADLINE: Duration = Duration::from_secs(60);

fn addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], paymesh_testkit::port::free_port_below_ephemeral().expect("port")))
}

/// A mesh with one stock instance (the shard and payments instance are declared because
/// every mesh has them; they are not started) and, if `edge` is given, an edge routing the
/// stock service from the repair descriptor set named in its config.
fn config(db: &str, stock: SocketAddr, edge: Option<(SocketAddr, SocketAddr, &Path)>) -> MeshConfig {
    let mut text = format!(
        r#"[[shards]]
id = 0
database_url = "{db}"
[[payments.instances]]
name = "unused-payments"
shard = 0
listen = "127.0.0.1:1"
[repair.stock]
database_url = "{db}"
pool_size = 8
[[repair.stock.instances]]
name = "stock-1"
listen = "{stock}"
"#
    );
    if let Some((edge, admin, descriptors)) = edge {
        text += &format!(
            r#"[edge]
listen = "{edge}"
admin_listen = "{admin}"
descriptor_sets = ["{}"]
[edge.health]
interval = "100ms"
[[edge.clusters]]
name = "stock"
endpoints = [{{ name = "stock-1", address = "{stock}" }}]
[[edge.routes]]
service = "repair.v1.Stock"
cluster = "stock"
"#,
            descriptors.display()
        );
    }
    MeshConfig::parse(Path::new("stock-test.toml"), &text, &|_| None).unwrap_or_else(|e| panic!("{e}"))
}

/// Starts the stock instance; its stop sender and handle.
async fn start(config: &MeshConfig, at: SocketAddr) -> (tokio::sync::watch::Sender<bool>, tokio::task::JoinHandle<Result<(), String>>) {
    let (stop, mut rx) = tokio::sync::watch::channel(false);
    let cfg = config.clone();
    let handle = tokio::spawn(async move {
        paymesh_stock::run(&cfg, "stock-1", async move {
            let _ = rx.changed().await;
        })
        .await
    });
    let started = Instant::now();
    while tokio::net::TcpStream::connect(at).await.is_err() {
        assert!(!handle.is_finished(), "the stock instance stopped while starting");
        assert!(started.elapsed() < DEADLINE, "the stock instance never listened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (stop, handle)
}

async fn client(at: SocketAddr) -> StockClient<Channel> {
    StockClient::connect(format!("http://{at}")).await.expect("connect")
}

fn add(sku: &str, quantity: i64, key: &str) -> pb::AddPartsRequest {
    pb::AddPartsRequest { sku: sku.into(), quantity, idempotency_key: key.into() }
}

fn reserve(sku: &str, request: &str) -> pb::ReserveRequest {
    pb::ReserveRequest { sku: sku.into(), request_id: request.into() }
}

async fn part(c: &mut StockClient<Channel>, sku: &str) -> pb::Part {
    c.get_part(pb::GetPartRequest { sku: sku.into() }).await.expect("get").into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_never_take_more_parts_than_there_are_and_each_request_takes_one() {
    let pg = PgServer::shared().expect("postgres");
    let db = pg.url(&pg.fresh_database("stock").expect("createdb"));
    let at = addr();
    let config = config(&db, at, None);
    let (stop, handle) = start(&config, at).await;
    let mut c = client(at).await;

    // Additions: once per key; the same key with another quantity is refused.
    assert_eq!(c.add_parts(add("motor-a", 3, "k1")).await.expect("add").into_inner().on_hand, 3);
    assert_eq!(c.add_parts(add("motor-a", 3, "k1")).await.expect("again").into_inner().on_hand, 3, "a repeated key adds nothing");
    let reused = c.add_parts(add("motor-a", 5, "k1")).await.expect_err("key reused");
    assert_eq!(reused.code(), Code::AlreadyExists, "{reused:?}");
    assert_eq!(part(&mut c, "motor-a").await.on_hand, 3);

    // Twenty concurrent accepts for twenty requests: exactly three get a part.
    let tries = (0..20).map(|i| {
        let mut c = c.clone();
        async move { c.reserve(reserve("motor-a", &format!("rq_{i}"))).await }
    });
    let outcomes = futures_util::future::join_all(tries).await;
    let granted = outcomes.iter().filter(|o| o.is_ok()).count();
    assert_eq!(granted, 3, "{outcomes:?}");
    for o in outcomes.iter().filter_map(|o| o.as_ref().err()) {
        assert_eq!(o.code(), Code::FailedPrecondition, "{o:?}");
        assert!(o.message().contains("motor-a"), "{}", o.message());
    }
    let p = part(&mut c, "motor-a").await;
    assert_eq!((p.on_hand, p.reserved, p.available), (3, 3, 0));

    // One request reserving ten times at once takes one part.
    c.add_parts(add("belt-b", 5, "k2")).await.expect("add");
    let same = (0..10).map(|_| {
        let mut c = c.clone();
        async move { c.reserve(reserve("belt-b", "rq_same")).await }
    });
    for o in futures_util::future::join_all(same).await {
        assert_eq!(o.expect("the same request's reservation").into_inner().request_id, "rq_same");
    }
    assert_eq!(part(&mut c, "belt-b").await.reserved, 1);
    let other = c.reserve(reserve("motor-a", "rq_same")).await.expect_err("holds belt-b already");
    assert_eq!(other.code(), Code::AlreadyExists, "holding another part is not a shortage: {other:?}");

    // Consuming twice uses one part.
    for _ in 0..2 {
        let r = c.consume(pb::ConsumeRequest { request_id: "rq_same".into() }).await.expect("consume").into_inner();
        assert_eq!(r.status, pb::ReservationStatus::Consumed as i32);
    }
    let p = part(&mut c, "belt-b").await;
    assert_eq!((p.on_hand, p.reserved), (4, 0));
    let none = c.consume(pb::ConsumeRequest { request_id: "rq_unknown".into() }).await.expect_err("no reservation");
    assert_eq!(none.code(), Code::NotFound);

    // Bad input is refused by name and changes nothing.
    for (bad, field) in [
        (add("", 1, "k3"), "sku"),
        (add("bad sku", 1, "k3"), "sku"),
        (add("ok", 0, "k3"), "quantity"),
        (add("ok", 100_001, "k3"), "quantity"),
        (add("ok", 1, ""), "idempotency_key"),
    ] {
        let e = c.add_parts(bad).await.expect_err("bad input");
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().starts_with(field), "{}", e.message());
    }
    assert_eq!(c.get_part(pb::GetPartRequest { sku: "ok".into() }).await.expect_err("never added").code(), Code::NotFound);
    assert_eq!(c.reserve(reserve("nothing-here", "rq_x")).await.expect_err("unknown sku").code(), Code::NotFound);

    let _ = stop.send(true);
    handle.await.expect("join").expect("stock stopped cleanly");
}

async fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let b = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
        b.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").expect("http");
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Whether the edge's admin listener answers `/ready` with 200 (not listening yet: no).
async fn ready(admin: SocketAddr) -> bool {
    if tokio::net::TcpStream::connect(admin).await.is_err() {
        return false;
    }
    http(admin, "GET", "/ready", None).await.0 == 200
}

/// The edge routes and transcodes the stock service from its descriptor set and a route in
/// the config: the edge binary has no code for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_serves_the_stock_over_rest_from_config_alone() {
    let pg = PgServer::shared().expect("postgres");
    let db = pg.url(&pg.fresh_database("stockedge").expect("createdb"));
    let dir = std::env::temp_dir().join(format!("paymesh-stock-edge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let descriptors = dir.join("repair.binpb");
    std::fs::write(&descriptors, paymesh_repair_proto::FILE_DESCRIPTOR_SET).expect("write descriptors");
    let (at, edge, admin) = (addr(), addr(), addr());
    let config = config(&db, at, Some((edge, admin, &descriptors)));
    let (stop, handle) = start(&config, at).await;

    let state = paymesh_edge::prepare(&config).expect("edge config");
    let (edge_stop, shutdown) = paymesh_edge::ShutdownOnSignal::new();
    let edge_thread = std::thread::spawn(move || paymesh_edge::run(state, Box::new(shutdown)).expect("edge"));
    let started = Instant::now();
    while !ready(admin).await {
        assert!(started.elapsed() < DEADLINE, "the edge never saw the stock instance healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (st, p) = http(edge, "POST", "/api/stock/parts/pump-c/add", Some(r#"{"quantity":2,"idempotencyKey":"e1"}"#)).await;
    assert_eq!((st, p["onHand"].as_str()), (200, Some("2")), "{p}");
    let (st, r) = http(edge, "POST", "/api/stock/reservations", Some(r#"{"sku":"pump-c","requestId":"rq_edge"}"#)).await;
    assert_eq!((st, r["status"].as_str()), (200, Some("RESERVATION_STATUS_RESERVED")), "{r}");
    let (st, p) = http(edge, "GET", "/api/stock/parts/pump-c", None).await;
    assert_eq!((st, p["available"].as_str()), (200, Some("1")), "{p}");
    let (st, r) = http(edge, "POST", "/api/stock/reservations/rq_edge/consume", Some("{}")).await;
    assert_eq!((st, r["status"].as_str()), (200, Some("RESERVATION_STATUS_CONSUMED")), "{r}");
    // Refusals keep their meaning over REST: out of stock is 400 (FAILED_PRECONDITION, as
    // grpc-gateway maps it), an unknown SKU 404, an unknown field 400 naming it.
    http(edge, "POST", "/api/stock/reservations", Some(r#"{"sku":"pump-c","requestId":"rq_e2"}"#)).await;
    let (st, e) = http(edge, "POST", "/api/stock/reservations", Some(r#"{"sku":"pump-c","requestId":"rq_e3"}"#)).await;
    assert_eq!((st, e["code"].as_i64()), (400, Some(9)), "{e}");
    let (st, _) = http(edge, "GET", "/api/stock/parts/nope", None).await;
    assert_eq!(st, 404);
    let (st, e) = http(edge, "POST", "/api/stock/reservations", Some(r#"{"sku":"pump-c","requestId":"rq_e4","extra":1}"#)).await;
    assert_eq!(st, 400);
    assert!(e["message"].as_str().unwrap_or("").contains("extra"), "{e}");

    let _ = edge_stop.send(());
    tokio::task::spawn_blocking(move || edge_thread.join()).await.expect("join").expect("edge thread");
    let _ = stop.send(true);
    handle.await.expect("join").expect("stock stopped cleanly");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_part_is_available_again_once_and_a_consumed_one_is_never_released() {
    let pg = PgServer::shared().expect("postgres");
    let db = pg.url(&pg.fresh_database("stockrel").expect("createdb"));
    let at = addr();
    let config = config(&db, at, None);
    let (stop, handle) = start(&config, at).await;
    let mut c = client(at).await;
    c.add_parts(add("valve", 2, "k")).await.expect("add");
    c.reserve(reserve("valve", "rq_a")).await.expect("reserve a");
    c.reserve(reserve("valve", "rq_b")).await.expect("reserve b");
    assert_eq!(part(&mut c, "valve").await.available, 0);

    let release = |id: &str| pb::ReleaseRequest { request_id: id.into() };
    for _ in 0..2 {
        let r = c.release(release("rq_a")).await.expect("release").into_inner();
        assert_eq!(r.status, pb::ReservationStatus::Released as i32);
    }
    let p = part(&mut c, "valve").await;
    assert_eq!((p.on_hand, p.reserved, p.available), (2, 1, 1), "released once, whatever the retries");
    let e = c.consume(pb::ConsumeRequest { request_id: "rq_a".into() }).await.expect_err("released");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let e = c.reserve(reserve("valve", "rq_a")).await.expect_err("released");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");

    c.consume(pb::ConsumeRequest { request_id: "rq_b".into() }).await.expect("consume b");
    let e = c.release(release("rq_b")).await.expect_err("consumed");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let p = part(&mut c, "valve").await;
    assert_eq!((p.on_hand, p.reserved), (1, 0));
    assert_eq!(c.release(release("rq_none")).await.expect_err("none").code(), Code::NotFound);

    let _ = stop.send(true);
    handle.await.expect("join").expect("stock stopped cleanly");
}
