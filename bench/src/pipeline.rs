//! `pipeline-bench [--quick]`: how fast committed payments reach Kafka.
//!
//! 1. Steady load: Authorize at a fixed rate; each outbox row's `published_at - created_at`
//!    is the time from the payment's commit to the broker's acknowledgement (and the mark).
//! 2. Outage: every broker down while the same load continues (intake keeps succeeding), then
//!    back up; how long until the relay publishes again (its breaker waits 30 s in open, the
//!    seeds' setting) and how fast it drains the backlog.
//!
//! Everything real except Kafka (librdkafka's mock cluster): PostgreSQL, the payments
//! service, the relay with its production settings. Prints a Markdown report.

use std::path::Path;
use std::time::{Duration, Instant};

use paymesh_core::config::MeshConfig;
use paymesh_kafka::local::LocalBroker;
use paymesh_proto::payments::v1 as pb;
use paymesh_proto::payments::v1::payments_client::PaymentsClient;
use paymesh_testkit::{PgOptions, PgServer};

const RATE: u64 = 200;

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (steady, outage) =
        if quick { (Duration::from_secs(10), Duration::from_secs(10)) } else { (Duration::from_secs(20), Duration::from_secs(60)) };
    if let Err(e) = run(steady, outage, quick).await {
        eprintln!("pipeline-bench: {e}");
        std::process::exit(1);
    }
}

async fn run(steady: Duration, outage: Duration, quick: bool) -> Result<(), String> {
    let pg = PgServer::start_with(&PgOptions { durable: true, ..PgOptions::default() }).map_err(|e| e.to_string())?;
    let db = pg.fresh_database("pipeline").map_err(|e| e.to_string())?;
    let url = pg.url(&db);
    let broker = LocalBroker::start(3, 6, 3).map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let text = format!(
        "[[shards]]\nid = 0\ndatabase_url = \"{url}\"\npool_size = 16\n[[payments.instances]]\nname = \"p0\"\nshard = 0\nlisten = \"{addr}\"\n\
         [kafka]\nbootstrap = \"{}\"\n[relay]\n[[relay.instances]]\nname = \"r0\"\nshard = 0\nstatus_listen = \"127.0.0.1:0\"\n",
        broker.bootstrap()
    );
    let config = MeshConfig::parse(Path::new("pipeline-bench.toml"), &text, &|_| None).map_err(|e| e.to_string())?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stop = || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.changed().await;
        }
    };
    {
        let (cfg, s) = (config.clone(), stop());
        tokio::spawn(async move { paymesh_payments::serve(listener, &cfg, "p0", s).await });
    }
    {
        let (cfg, s) = (config.clone(), stop());
        tokio::spawn(async move { paymesh_relay::run(&cfg, "r0", s).await });
    }
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);

    eprintln!("steady load: {RATE} Authorize/s for {steady:?}");
    let ok = load(&channel, "steady", steady).await;
    wait_drained(&client, Duration::from_secs(120)).await?;
    let lat = client
        .query_one(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY x), percentile_cont(0.99) WITHIN GROUP (ORDER BY x), max(x), count(*)
             FROM (SELECT (extract(epoch from published_at - created_at) * 1000)::float8 AS x FROM outbox_event WHERE published) s",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    let (p50, p99, max, n): (f64, f64, f64, i64) = (lat.get(0), lat.get(1), lat.get(2), lat.get(3));

    eprintln!("outage: brokers down for {outage:?} under the same load");
    broker.down().map_err(|e| e.to_string())?;
    let down_ok = load(&channel, "outage", outage).await;
    let backlog: i64 =
        client.query_one("SELECT count(*) FROM outbox_event WHERE NOT published", &[]).await.map_err(|e| e.to_string())?.get(0);
    let up_at = std::time::SystemTime::now();
    broker.up().map_err(|e| e.to_string())?;
    let started = Instant::now();
    wait_drained(&client, Duration::from_secs(300)).await?;
    let drained_in = started.elapsed();
    let span = client
        .query_one(
            "SELECT extract(epoch from min(published_at) - $1::timestamptz)::float8, extract(epoch from max(published_at) - min(published_at))::float8 FROM outbox_event WHERE published_at > $1",
            &[&up_at],
        )
        .await
        .map_err(|e| e.to_string())?;
    let (first_after, drain_span): (f64, f64) = (span.get(0), span.get(1));
    let rate = if drain_span > 0.0 { backlog as f64 / drain_span } else { backlog as f64 };
    let _ = stop_tx.send(true);

    println!(
        "## Pipeline: commit to Kafka acknowledgement\n\n\
         Command: `cargo run --release -p paymesh-bench --bin pipeline-bench{}`. One shard (durable PostgreSQL), one payments instance, one relay with \
         the production settings (batches up to 1,000, NOTIFY + 250 ms polling, breaker 30 s open), librdkafka's mock cluster (3 brokers, acks=all).\n\n\
         | measure | value |\n|---|---:|\n\
         | steady load | {RATE} Authorize/s for {} s ({ok} accepted) |\n\
         | commit -> ack p50 | {p50:.1} ms |\n| commit -> ack p99 | {p99:.1} ms |\n| commit -> ack max | {max:.1} ms |\n| events measured | {n} |\n\
         | outage | every broker down for {} s, same load ({down_ok} accepted, none refused) |\n\
         | backlog at broker recovery | {backlog} events |\n\
         | first publish after recovery | {first_after:.1} s (the breaker's 30 s open wait, then half-open trials) |\n\
         | drain rate once publishing resumed | {rate:.0} events/s ({drain_span:.2} s for the backlog) |\n\
         | recovery to empty outbox | {:.1} s |\n",
        if quick { " -- --quick" } else { "" },
        steady.as_secs(),
        outage.as_secs(),
        drained_in.as_secs_f64()
    );
    drop(pg);
    Ok(())
}

/// Authorize at `RATE` per second for `d`; returns how many succeeded.
async fn load(channel: &tonic::transport::Channel, tag: &str, d: Duration) -> u64 {
    let start = Instant::now();
    let total = RATE * d.as_secs();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let at = start + Duration::from_secs_f64(i as f64 / RATE as f64);
        tokio::time::sleep_until(at.into()).await;
        let mut c = PaymentsClient::new(channel.clone());
        let req = pb::AuthorizeRequest {
            merchant_id: format!("m{}", i % 100),
            amount: 1_000,
            currency: "KRW".into(),
            idempotency_key: format!("{tag}-{i}"),
        };
        tasks.push(tokio::spawn(async move { c.authorize(req).await.is_ok() }));
    }
    let mut ok = 0;
    for t in tasks {
        if matches!(t.await, Ok(true)) {
            ok += 1;
        }
    }
    ok
}

async fn wait_drained(client: &tokio_postgres::Client, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        let n: i64 =
            client.query_one("SELECT count(*) FROM outbox_event WHERE NOT published", &[]).await.map_err(|e| e.to_string())?.get(0);
        if n == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{n} events still unpublished after {within:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
