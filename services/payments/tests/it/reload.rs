//! Live config of a payments instance: `POST /config/reload` on its status listener resizes
//! its pool and changes the idempotency retention at once, names what needs a restart, and
//! refuses a bad file without changing anything.

use std::time::{Duration, Instant};

use paymesh_core::config::MeshConfig;
use paymesh_proto::payments::v1 as pb;
use paymesh_proto::payments::v1::payments_client::PaymentsClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{config_text, pg};

/// One request to the status listener; the whole answer, head and body.
async fn ask(addr: std::net::SocketAddr, method: &str, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").as_bytes()).await.expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out
}

fn metric(page: &str, name: &str) -> Option<String> {
    page.lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit(' ').next()).map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_resizes_the_pool_changes_retention_and_names_what_needs_a_restart() {
    let pg = pg();
    let url = pg.url(&pg.fresh_database("reload").expect("createdb"));
    let dir = std::env::temp_dir().join(format!("paymesh-payments-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("mesh.toml");
    let text = config_text(&[url]);
    std::fs::write(&path, &text).expect("write");
    let config = MeshConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let cfg = config.clone();
    let task = tokio::spawn(async move {
        paymesh_payments::serve(listener, &cfg, "payments-0", async move {
            let _ = stopped.await;
        })
        .await
    });
    let status = config.payments.instances[0].status_listen.expect("status listener");
    let start = Instant::now();
    loop {
        if tokio::net::TcpStream::connect(status).await.is_ok() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "the status listener never opened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pool_max = || async { metric(&ask(status, "GET", "/metrics").await, "paymesh_payments_pool_max_connections") };
    assert_eq!(pool_max().await.as_deref(), Some("8"));

    // A smaller pool and a longer retention take effect; a new address needs a restart.
    let edited = text
        .replace("pool_size = 8\n", "pool_size = 3\n")
        .replace("[payments]\n", "[payments]\nidempotency_retention = \"48h\"\n")
        .replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:1\"");
    std::fs::write(&path, &edited).expect("write");
    let answer = ask(status, "POST", "/config/reload").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let body: serde_json::Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).expect("body")).expect("json");
    assert_eq!(body["applied"], serde_json::json!(["payments.idempotency_retention", "shards[0].pool_size"]), "{body}");
    assert_eq!(body["restart_required"], serde_json::json!(["payments.instances[payments-0]"]), "{body}");
    assert_eq!(pool_max().await.as_deref(), Some("3"), "the pool was resized");

    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}")).expect("uri").connect().await.expect("connect");
    let req =
        pb::AuthorizeRequest { merchant_id: "m-reload".into(), amount: 100, currency: "KRW".into(), idempotency_key: "k-reload".into() };
    PaymentsClient::new(channel).authorize(req).await.expect("authorize");
    let (client, conn) = tokio_postgres::connect(&config.shards[0].database.url, tokio_postgres::NoTls).await.expect("db");
    tokio::spawn(conn);
    let kept: f64 = client
        .query_one(
            "SELECT extract(epoch FROM expires_at - created_at)::float8 FROM idempotency_keys WHERE idempotency_key = 'k-reload'",
            &[],
        )
        .await
        .expect("key")
        .get(0);
    assert_eq!(kept, 48.0 * 3600.0, "a key written after the reload is kept for the new retention");

    // A bad file: refused with its line, nothing changed, counted.
    let bad = edited.replace("pool_size = 3\n", "pool_size = 0\n");
    std::fs::write(&path, &bad).expect("write");
    let line = bad.lines().position(|l| l.contains("pool_size = 0")).expect("line") + 1;
    let answer = ask(status, "POST", "/config/reload").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains(&format!("mesh.toml:{line}: shards[0].pool_size")), "{answer}");
    assert_eq!(pool_max().await.as_deref(), Some("3"), "a refused reload changed nothing");
    let page = ask(status, "GET", "/metrics").await;
    assert_eq!(metric(&page, "paymesh_config_reloads_total{outcome=\"error\"}").as_deref(), Some("1"), "{page}");

    let _ = stop.send(());
    task.await.expect("join").expect("clean stop");
    let _ = std::fs::remove_dir_all(&dir);
}
