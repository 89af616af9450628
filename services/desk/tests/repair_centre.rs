//! Seed 002's repair centre on real parts: PostgreSQL (a database per service), the local
//! Kafka broker, the relays, the intake, stock, desk and payments services, and a real edge
//! that routes the repair services from their descriptor set and config alone. Every call
//! goes over REST through the edge, as the seed's users (curl) did.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use paymesh_core::config::MeshConfig;
use paymesh_kafka::local::LocalBroker;
use paymesh_ops::issuer::LocalIssuer;
use paymesh_testkit::PgServer;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const DEADLINE: Duration = Duration::from_secs(60);

fn addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], paymesh_testkit::port::free_port_below_ephemeral().expect("port")))
}

async fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    http_as(None, addr, method, path, body).await
}

/// [`http`] with `Authorization: <authorization>` when given.
async fn http_as(authorization: Option<&str>, addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else { return (0, Value::Null) };
    let b = body.unwrap_or("");
    let auth = authorization.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
        b.len()
    );
    if s.write_all(req.as_bytes()).await.is_err() {
        return (0, Value::Null);
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else { return (0, Value::Null) };
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// An int64 field of proto3 JSON (a string; absent when 0).
fn n(v: &Value, key: &str) -> i64 {
    v[key].as_str().map_or(0, |s| s.parse().expect("an int64"))
}

/// `GET path` as text.
async fn raw(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read");
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or(("", ""));
    (head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0), body.to_owned())
}

/// Polls `probe` until it gives `Some`, for at most [`DEADLINE`].
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "{what}: not within {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A started process: its stop signal and its task.
type Running = (watch::Sender<bool>, JoinHandle<Result<(), String>>);

/// The repair centre's processes, each stoppable on its own.
struct Centre {
    config: MeshConfig,
    edge: SocketAddr,
    admin: SocketAddr,
    payments_db: String,
    desk_db: String,
    /// Each desk instance's status listener.
    desk_status: Vec<SocketAddr>,
    running: HashMap<String, Running>,
    edge_stop: Option<tokio::sync::oneshot::Sender<()>>,
    edge_thread: Option<std::thread::JoinHandle<()>>,
    _broker: LocalBroker,
    dir: PathBuf,
    /// What REST calls through the edge carry (`Bearer <token>`), when the edge authenticates.
    caller: Option<String>,
}

impl Centre {
    /// Declares everything; starts nothing.
    fn new(hint: &str, desks: usize) -> Self {
        Self::declare(hint, desks, None)
    }

    /// [`Centre::new`]; with `issuer`, the edge authenticates callers with the issuer's
    /// tokens and the desk presents its own, acting for the repair centre's merchant.
    fn declare(hint: &str, desks: usize, issuer: Option<&LocalIssuer>) -> Self {
        let pg = PgServer::shared().expect("postgres");
        let db = |name: &str| pg.url(&pg.fresh_database(&format!("{hint}{name}")).expect("createdb"));
        let (payments_db, requests_db, desk_db, stock_db, progress_db) = (db("pay"), db("req"), db("desk"), db("stock"), db("prog"));
        let broker = LocalBroker::start(1, 3, 1).expect("broker");
        let dir = std::env::temp_dir().join(format!("paymesh-repair-{hint}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let descriptors = dir.join("repair.binpb");
        std::fs::write(&descriptors, paymesh_repair_proto::FILE_DESCRIPTOR_SET).expect("descriptors");
        let (payments, requests, stock, progress, edge, admin) = (addr(), addr(), addr(), addr(), addr(), addr());
        let desk_addrs: Vec<SocketAddr> = (0..desks).map(|_| addr()).collect();
        let desk_status: Vec<SocketAddr> = (0..desks).map(|_| addr()).collect();
        let mut text = format!(
            r#"[[shards]]
id = 0
database_url = "{payments_db}"
[payments]
health_check_interval = "100ms"
drain_delay = "0s"
[[payments.instances]]
name = "payments-0"
shard = 0
listen = "{payments}"
[kafka]
bootstrap = "{bootstrap}"
[relay]
poll_interval = "50ms"
[[relay.instances]]
name = "relay-requests"
outbox = "repair.requests"
status_listen = "127.0.0.1:0"
[[relay.instances]]
name = "relay-desk"
outbox = "repair.desk"
status_listen = "127.0.0.1:0"
[repair]
merchant_id = "repair-centre"
credential_env = "REPAIR_DESK_CREDENTIAL"
[repair.requests]
database_url = "{requests_db}"
[[repair.requests.instances]]
name = "requests-1"
listen = "{requests}"
[repair.stock]
database_url = "{stock_db}"
[[repair.stock.instances]]
name = "stock-1"
listen = "{stock}"
[repair.progress]
database_url = "{progress_db}"
[[repair.progress.instances]]
name = "progress-1"
listen = "{progress}"
[repair.desk]
database_url = "{desk_db}"
"#,
            bootstrap = broker.bootstrap()
        );
        for (i, a) in desk_addrs.iter().enumerate() {
            text += &format!(
                "[[repair.desk.instances]]\nname = \"desk-{}\"\nlisten = \"{a}\"\nstatus_listen = \"{}\"\n",
                i + 1,
                desk_status[i]
            );
        }
        let desk_endpoints: Vec<String> =
            desk_addrs.iter().enumerate().map(|(i, a)| format!("{{ name = \"desk-{}\", address = \"{a}\" }}", i + 1)).collect();
        text += &format!(
            r#"[edge]
listen = "{edge}"
admin_listen = "{admin}"
descriptor_sets = ["{descriptors}"]
[edge.health]
interval = "100ms"
timeout = "500ms"
healthy_threshold = 1
unhealthy_threshold = 1
[[edge.clusters]]
name = "payments"
payments_instances = true
[[edge.clusters]]
name = "requests"
endpoints = [{{ name = "requests-1", address = "{requests}" }}]
[[edge.clusters]]
name = "stock"
endpoints = [{{ name = "stock-1", address = "{stock}" }}]
[[edge.clusters]]
name = "desk"
endpoints = [{desks}]
[[edge.clusters]]
name = "progress"
endpoints = [{{ name = "progress-1", address = "{progress}" }}]
[[edge.routes]]
service = "payments.v1.Payments"
cluster = "payments"
shard_keys = [{{ field = "merchant_id", kind = "merchant" }}, {{ field = "payment_id", kind = "sharded_id" }}]
[[edge.routes]]
service = "repair.v1.RepairRequests"
cluster = "requests"
[[edge.routes]]
service = "repair.v1.ServiceDesk"
cluster = "desk"
[[edge.routes]]
service = "repair.v1.RepairProgress"
cluster = "progress"
[[edge.routes]]
service = "repair.v1.Stock"
cluster = "stock"
[edge.routes.breaker]
minimum_calls = 2
failure_rate_threshold = 50
wait_in_open = "1s"
half_open_calls = 1
"#,
            descriptors = descriptors.display(),
            desks = desk_endpoints.join(", "),
        );
        let mut desk_credential = None;
        if let Some(issuer) = issuer {
            text += &format!(
                "[edge.auth]\n[[edge.auth.issuers]]\nissuer = \"{}\"\naudiences = [\"{}\"]\njwks_file = \"{}\"\n",
                paymesh_ops::issuer::ISSUER,
                paymesh_ops::issuer::AUDIENCE,
                issuer.jwks.display()
            );
            let token =
                issuer.mint("repair-desk", Some("repair-centre"), &["payments:write".into()], Duration::from_secs(3600)).expect("token");
            desk_credential = Some(format!("Bearer {token}"));
        }
        let env = move |k: &str| (k == "REPAIR_DESK_CREDENTIAL").then(|| desk_credential.clone()).flatten();
        let config = MeshConfig::parse(Path::new("repair-test.toml"), &text, &env).unwrap_or_else(|e| panic!("{e}\n{text}"));
        Self {
            caller: None,
            config,
            edge,
            admin,
            payments_db,
            desk_db,
            desk_status,
            running: HashMap::new(),
            edge_stop: None,
            edge_thread: None,
            _broker: broker,
            dir,
        }
    }

    fn start(&mut self, name: &str) {
        let (stop, mut rx) = watch::channel(false);
        let until = async move {
            let _ = rx.changed().await;
        };
        let (cfg, n) = (self.config.clone(), name.to_owned());
        let handle = tokio::spawn(async move {
            match n.as_str() {
                "payments-0" => paymesh_payments::run(&cfg, &n, until).await.map_err(|e| e.to_string()),
                "relay-requests" | "relay-desk" => paymesh_relay::run(&cfg, &n, until).await.map_err(|e| e.to_string()),
                "progress-1" => paymesh_repair_progress::run(&cfg, &n, until).await,
                "requests-1" => paymesh_repair_requests::run(&cfg, &n, until).await,
                "stock-1" => paymesh_stock::run(&cfg, &n, until).await,
                desk => paymesh_repair_desk::run(&cfg, desk, until).await,
            }
        });
        self.running.insert(name.to_owned(), (stop, handle));
    }

    async fn stop(&mut self, name: &str) {
        let (stop, handle) = self.running.remove(name).expect("running");
        let _ = stop.send(true);
        handle.await.expect("join").unwrap_or_else(|e| panic!("{name} failed: {e}"));
    }

    fn start_edge(&mut self) {
        let state = paymesh_edge::prepare(&self.config).expect("edge config");
        let (stop, shutdown) = paymesh_edge::ShutdownOnSignal::new();
        self.edge_thread = Some(std::thread::spawn(move || paymesh_edge::run(state, Box::new(shutdown)).expect("edge")));
        self.edge_stop = Some(stop);
    }

    /// Waits until the edge sees a healthy instance of every named cluster.
    async fn healthy(&self, clusters: &[&str]) {
        let admin = self.admin;
        eventually(&format!("clusters {clusters:?} healthy at the edge"), || async move {
            let (_, c) = http(admin, "GET", "/clusters", None).await;
            let all = c["clusters"].as_array()?;
            clusters
                .iter()
                .all(|name| {
                    all.iter()
                        .any(|c| c["name"] == *name && c["endpoints"].as_array().is_some_and(|e| e.iter().any(|e| e["healthy"] == true)))
                })
                .then_some(())
        })
        .await;
    }

    async fn post(&self, path: &str, body: &str) -> (u16, Value) {
        http_as(self.caller.as_deref(), self.edge, "POST", path, Some(body)).await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        http_as(self.caller.as_deref(), self.edge, "GET", path, None).await
    }

    async fn file(&self, customer: &str, key: &str) -> String {
        let body = format!(
            r#"{{"customerId":"{customer}","product":"washing-machine","description":"drum does not turn","idempotencyKey":"{key}"}}"#
        );
        let (st, r) = self.post("/api/repairs", &body).await;
        assert_eq!(st, 200, "{r}");
        r["requestId"].as_str().expect("requestId").to_owned()
    }

    /// The desk's items by request id (every page).
    async fn desk(&self) -> HashMap<String, Value> {
        let mut out = HashMap::new();
        let mut token = String::new();
        loop {
            let (st, page) = self.get(&format!("/api/desk/requests?pageSize=500&pageToken={token}")).await;
            assert_eq!(st, 200, "{page}");
            for i in page["items"].as_array().cloned().unwrap_or_default() {
                let id = i["requestId"].as_str().unwrap_or_default().to_owned();
                assert!(out.insert(id.clone(), i).is_none(), "request {id} is listed twice");
            }
            token = page["nextPageToken"].as_str().unwrap_or_default().to_owned();
            if token.is_empty() {
                return out;
            }
        }
    }

    async fn listed(&self, id: &str, status: &str) -> Value {
        let want = status.to_owned();
        eventually(&format!("{id} {status} on the desk"), || {
            let want = want.clone();
            async move { self.desk().await.remove(id).filter(|i| i["status"] == want.as_str()) }
        })
        .await
    }

    async fn shutdown(mut self) {
        let names: Vec<String> = self.running.keys().cloned().collect();
        for n in names {
            self.stop(&n).await;
        }
        if let Some(s) = self.edge_stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.edge_thread.take() {
            tokio::task::spawn_blocking(move || t.join()).await.expect("join").expect("edge thread");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn payments_of(db: &str, merchant: &str) -> Vec<(String, String, i64)> {
    let (c, conn) = tokio_postgres::connect(db, tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(conn);
    c.query("SELECT payment_id, status, captured_amount FROM payments WHERE merchant_id = $1", &[&merchant])
        .await
        .expect("payments")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_scenario_end_to_end_and_a_retried_completion_charges_once() {
    let mut c = Centre::new("scen", 1);
    for p in ["payments-0", "relay-requests", "relay-desk", "requests-1", "stock-1", "desk-1", "progress-1"] {
        c.start(p);
    }
    c.start_edge();
    c.healthy(&["payments", "requests", "stock", "desk", "progress"]).await;

    // An engineer stocks parts; a customer files a request; the desk lists it.
    let (st, p) = c.post("/api/stock/parts/drum-motor/add", r#"{"quantity":1,"idempotencyKey":"stock-1"}"#).await;
    assert_eq!((st, n(&p, "available")), (200, 1), "{p}");
    let id = c.file("kim", "k1").await;
    let item = c.listed(&id, "DESK_STATUS_LISTED").await;
    assert_eq!((item["customerId"].as_str(), item["product"].as_str()), (Some("kim"), Some("washing-machine")));

    // Accepted with the part reserved; a second request for the same part is out of stock and
    // stays listed; an accept of an unknown part is refused.
    let (st, a) = c.post(&format!("/api/desk/requests/{id}/accept"), r#"{"engineerId":"eng-lee","partSku":"drum-motor"}"#).await;
    assert_eq!((st, a["status"].as_str()), (200, Some("DESK_STATUS_ACCEPTED")), "{a}");
    let (st, p) = c.get("/api/stock/parts/drum-motor").await;
    assert_eq!((st, n(&p, "reserved"), n(&p, "available")), (200, 1, 0), "{p}");
    let other = c.file("park", "k2").await;
    c.listed(&other, "DESK_STATUS_LISTED").await;
    let (st, e) = c.post(&format!("/api/desk/requests/{other}/accept"), r#"{"engineerId":"eng-lee","partSku":"drum-motor"}"#).await;
    assert_eq!(st, 400, "out of stock: {e}");
    assert!(e["message"].as_str().unwrap_or("").contains("drum-motor"), "{e}");
    c.listed(&other, "DESK_STATUS_LISTED").await;

    // Completing: the part is consumed and the repair paid; three retries at once and one
    // later give the same payment, and Paymesh holds exactly one, captured once.
    let body = r#"{"amount":85000,"currency":"KRW"}"#;
    let path = format!("/api/desk/requests/{id}/complete");
    let (st, done) = c.post(&path, body).await;
    assert_eq!((st, done["status"].as_str()), (200, Some("DESK_STATUS_PAID")), "{done}");
    let payment = done["paymentId"].as_str().expect("paymentId").to_owned();
    let retries = futures_util::future::join_all((0..3).map(|_| c.post(&path, body))).await;
    for (st, r) in retries.into_iter().chain([c.post(&path, body).await]) {
        assert_eq!((st, r["paymentId"].as_str()), (200, Some(payment.as_str())), "{r}");
    }
    let paid = payments_of(&c.payments_db, "repair-centre").await;
    assert_eq!(paid, vec![(payment.clone(), "CAPTURED".to_owned(), 85000)], "one payment, captured once");
    let (st, p) = c.get("/api/stock/parts/drum-motor").await;
    assert_eq!((st, n(&p, "onHand"), n(&p, "reserved")), (200, 0, 0), "the part is used up: {p}");

    // A cancelled request is marked on the desk and cannot be accepted.
    let gone = c.file("choi", "k3").await;
    let (st, r) = c.post(&format!("/api/repairs/{gone}/cancel"), "{}").await;
    assert_eq!((st, r["status"].as_str()), (200, Some("REQUEST_STATUS_CANCELLED")), "{r}");
    c.listed(&gone, "DESK_STATUS_CANCELLED").await;
    let (st, e) = c.post(&format!("/api/desk/requests/{gone}/accept"), r#"{"engineerId":"eng-lee","partSku":"drum-motor"}"#).await;
    assert_eq!(st, 400, "{e}");

    // Cancelled after its accept: off the desk's work, and its part back in stock.
    let (st, _) = c.post("/api/stock/parts/belt/add", r#"{"quantity":1,"idempotencyKey":"stock-2"}"#).await;
    assert_eq!(st, 200);
    let late = c.file("jung", "k4").await;
    c.listed(&late, "DESK_STATUS_LISTED").await;
    let (st, a) = c.post(&format!("/api/desk/requests/{late}/accept"), r#"{"engineerId":"eng-lee","partSku":"belt"}"#).await;
    assert_eq!(st, 200, "{a}");
    let (st, _) = c.post(&format!("/api/repairs/{late}/cancel"), "{}").await;
    assert_eq!(st, 200);
    c.listed(&late, "DESK_STATUS_CANCELLED").await;
    eventually("the cancelled request's part back in stock", || async {
        let (_, p) = c.get("/api/stock/parts/belt").await;
        (n(&p, "reserved") == 0 && n(&p, "available") == 1).then_some(())
    })
    .await;
    let (st, e) = c.post(&format!("/api/desk/requests/{late}/complete"), body).await;
    assert_eq!(st, 400, "a cancelled request is not completed: {e}");

    // Two engineers accept one request at once with different parts: one wins, the other is
    // refused, one part is reserved, and nothing says the part was out of stock.
    for (sku, key) in [("gear-a", "stock-3"), ("gear-b", "stock-4")] {
        let (st, _) = c.post(&format!("/api/stock/parts/{sku}/add"), &format!(r#"{{"quantity":1,"idempotencyKey":"{key}"}}"#)).await;
        assert_eq!(st, 200);
    }
    let contested = c.file("han", "k5").await;
    c.listed(&contested, "DESK_STATUS_LISTED").await;
    let path = format!("/api/desk/requests/{contested}/accept");
    let (a, b) = tokio::join!(
        c.post(&path, r#"{"engineerId":"eng-a","partSku":"gear-a"}"#),
        c.post(&path, r#"{"engineerId":"eng-b","partSku":"gear-b"}"#)
    );
    assert_eq!([a.0, b.0].iter().filter(|s| **s == 200).count(), 1, "one accept wins: {a:?} {b:?}");
    let reserved: i64 =
        [c.get("/api/stock/parts/gear-a").await.1, c.get("/api/stock/parts/gear-b").await.1].iter().map(|p| n(p, "reserved")).sum();
    assert_eq!(reserved, 1);
    let (desk, conn) = tokio_postgres::connect(&c.desk_db, tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(conn);
    let shortages: i64 = desk
        .query_one("SELECT count(*) FROM outbox_event WHERE aggregate_id = $1 AND event_type = 'repair.out_of_stock'", &[&contested])
        .await
        .expect("count")
        .get(0);
    assert_eq!(shortages, 0, "losing the race for a request is not a shortage of parts");

    // The customer follows each request on the progress view, built from the events alone.
    for (request, status, steps) in [
        (&id, "paid", &["repair.requested", "repair.accepted", "repair.repaired", "repair.paid"][..]),
        (&other, "out_of_stock", &["repair.requested", "repair.out_of_stock"][..]),
        (&gone, "cancelled", &["repair.requested", "repair.cancelled"][..]),
        (&late, "cancelled", &["repair.requested", "repair.accepted", "repair.cancelled"][..]),
        (&contested, "accepted", &["repair.requested", "repair.accepted"][..]),
    ] {
        let view = eventually(&format!("{request} {status} on the progress view"), || async {
            let (st, v) = c.get(&format!("/api/repairs/{request}/progress")).await;
            (st == 200 && v["status"] == status).then_some(v)
        })
        .await;
        let seen: Vec<&str> = view["steps"].as_array().expect("steps").iter().filter_map(|s| s["event"].as_str()).collect();
        for want in steps {
            assert_eq!(seen.iter().filter(|s| *s == want).count(), 1, "{want} once in {view}");
        }
    }
    let (st, _) = c.get("/api/repairs/rq_unknown/progress").await;
    assert_eq!(st, 404);

    // Bad input is refused by name, through the edge.
    let (st, e) = c.post(&path, r#"{"amount":-5,"currency":"KRW"}"#).await;
    assert_eq!(st, 400, "{e}");
    let (st, e) = c.post("/api/repairs", r#"{"customerId":"kim","product":"tv","idempotencyKey":"k9","colour":"red"}"#).await;
    assert!(st == 400 && e["message"].as_str().unwrap_or("").contains("colour"), "{st} {e}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_works_while_desk_and_stock_are_down_and_the_desk_lists_every_request_once_after() {
    let mut c = Centre::new("down", 1);
    for p in ["payments-0", "relay-requests", "requests-1"] {
        c.start(p);
    }
    c.start_edge();
    c.healthy(&["requests"]).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(c.file(&format!("cust{i}"), &format!("k{i}")).await);
    }
    // The desk and stock come up; the desk replays everything filed meanwhile.
    c.start("stock-1");
    c.start("desk-1");
    c.healthy(&["desk"]).await;
    let listed = eventually("every request filed while the desk was down listed", || async {
        let d = c.desk().await;
        (ids.iter().all(|id| d.get(id).is_some_and(|i| i["status"] == "DESK_STATUS_LISTED")) && d.len() == ids.len()).then_some(d)
    })
    .await;
    assert_eq!(listed.len(), 6);
    // Restarted, the desk lists nothing twice (its offsets and dedupe records hold).
    c.stop("desk-1").await;
    c.start("desk-1");
    c.healthy(&["desk"]).await;
    let again = c.file("late", "k-late").await;
    c.listed(&again, "DESK_STATUS_LISTED").await;
    assert_eq!(c.desk().await.len(), 7);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_desk_consumers_list_every_request_exactly_once() {
    let mut c = Centre::new("two", 2);
    for p in ["payments-0", "relay-requests", "requests-1", "desk-1", "desk-2"] {
        c.start(p);
    }
    c.start_edge();
    c.healthy(&["requests", "desk"]).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(c.file(&format!("c{i}"), &format!("k{i}")).await);
    }
    let d = eventually("20 requests on the desk", || async {
        let d = c.desk().await;
        (d.len() == 20).then_some(d)
    })
    .await;
    assert!(ids.iter().all(|id| d.contains_key(id)));
    // Each filing was applied once in all (a redelivery after a rebalance is skipped by its
    // dedupe record, never applied again).
    let mut applied = 0.0;
    for status in &c.desk_status {
        let (_, text) = raw(*status, "/metrics").await;
        applied += text
            .lines()
            .find(|l| l.starts_with("paymesh_desk_events_applied_total"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .expect("an applied counter");
    }
    assert_eq!(applied, 20.0);
    let (cl, conn) = tokio_postgres::connect(&c.desk_db, tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(conn);
    let processed: i64 = cl.query_one("SELECT count(*) FROM processed_event", &[]).await.expect("count").get(0);
    assert_eq!(processed, 20);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_stock_down_an_accept_is_refused_fast_and_works_again_when_stock_returns() {
    let mut c = Centre::new("stk", 1);
    for p in ["payments-0", "relay-requests", "requests-1", "stock-1", "desk-1"] {
        c.start(p);
    }
    c.start_edge();
    c.healthy(&["requests", "stock", "desk"]).await;
    let (st, _) = c.post("/api/stock/parts/hose/add", r#"{"quantity":5,"idempotencyKey":"h"}"#).await;
    assert_eq!(st, 200);
    let id = c.file("yoon", "k1").await;
    c.listed(&id, "DESK_STATUS_LISTED").await;

    c.stop("stock-1").await;
    let path = format!("/api/desk/requests/{id}/accept");
    let body = r#"{"engineerId":"eng-kang","partSku":"hose"}"#;
    // Refused (503: stock cannot be asked), never accepted without a part; after a few the
    // edge's breaker on the stock route is open and refuses without trying.
    let admin = c.admin;
    eventually("the stock route's breaker open", || async {
        let (st, e) = c.post(&path, body).await;
        assert_eq!(st, 503, "an accept with stock down: {e}");
        let (_, b) = http(admin, "GET", "/breakers", None).await;
        b["breakers"].as_array()?.iter().find(|b| b["name"] == "repair.v1.Stock" && b["state"] == "open").map(|_| ())
    })
    .await;
    let (st, e) = c.post(&path, body).await;
    assert_eq!(st, 503, "{e}");
    assert!(e["message"].as_str().unwrap_or("").contains("reserving"), "the desk says what it could not do: {e}");
    c.listed(&id, "DESK_STATUS_LISTED").await;

    // Stock back: the breaker lets a trial through and the accept works.
    c.start("stock-1");
    let accepted = eventually("an accept once stock is back", || async {
        let (st, a) = c.post(&path, body).await;
        (st == 200).then_some(a)
    })
    .await;
    assert_eq!(accepted["status"], "DESK_STATUS_ACCEPTED");
    let (_, p) = c.get("/api/stock/parts/hose").await;
    assert_eq!(n(&p, "reserved"), 1, "one part reserved, whatever the retries: {p}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_authentication_every_caller_needs_a_credential_and_the_desk_pays_as_the_repair_centre() {
    let keys = std::env::temp_dir().join(format!("paymesh-repair-auth-{}", std::process::id()));
    let issuer = LocalIssuer::ensure(&keys).expect("issuer");
    let mut c = Centre::declare("auth", 1, Some(&issuer));
    for p in ["payments-0", "relay-requests", "requests-1", "stock-1", "desk-1"] {
        c.start(p);
    }
    c.start_edge();
    c.healthy(&["payments", "requests", "stock", "desk"]).await;

    // Without a credential every repair route is refused at the edge, and nothing is written.
    for (method, path, body) in [
        ("POST", "/api/repairs", Some(r#"{"customerId":"kim","product":"tv","idempotencyKey":"x"}"#)),
        ("GET", "/api/desk/requests", None),
        ("POST", "/api/stock/parts/p/add", Some(r#"{"quantity":1,"idempotencyKey":"x"}"#)),
        ("GET", "/api/repairs/rq_x/progress", None),
    ] {
        let (st, e) = http(c.edge, method, path, body).await;
        assert_eq!(st, 401, "{method} {path} without a credential: {e}");
    }
    let (st, _) = http_as(Some("Bearer not-a-token"), c.edge, "GET", "/api/desk/requests", None).await;
    assert_eq!(st, 401);

    // A customer's token: the whole scenario, the desk paying with its own credential as the
    // repair centre's merchant.
    let token = issuer.mint("customer-kim", Some("customer-kim"), &["payments:write".into()], Duration::from_secs(600)).expect("token");
    c.caller = Some(format!("Bearer {token}"));
    assert!(c.desk().await.is_empty(), "the refused calls wrote nothing");
    let (st, _) = c.post("/api/stock/parts/fan/add", r#"{"quantity":1,"idempotencyKey":"a"}"#).await;
    assert_eq!(st, 200);
    let id = c.file("kim", "k1").await;
    c.listed(&id, "DESK_STATUS_LISTED").await;
    let (st, a) = c.post(&format!("/api/desk/requests/{id}/accept"), r#"{"engineerId":"eng-lee","partSku":"fan"}"#).await;
    assert_eq!(st, 200, "{a}");
    let (st, done) = c.post(&format!("/api/desk/requests/{id}/complete"), r#"{"amount":30000,"currency":"KRW"}"#).await;
    assert_eq!((st, done["status"].as_str()), (200, Some("DESK_STATUS_PAID")), "{done}");
    assert_eq!(payments_of(&c.payments_db, "repair-centre").await.len(), 1);
    assert!(payments_of(&c.payments_db, "customer-kim").await.is_empty(), "the customer's token paid nothing itself");
    c.shutdown().await;
    let _ = std::fs::remove_dir_all(&keys);
}
