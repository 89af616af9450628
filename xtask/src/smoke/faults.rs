//! The smoke run's faults, on the running stack: a payments instance killed with SIGKILL
//! while calls go through the edge (the other instance of its shard serves; the supervisor
//! restarts it), a shard's PostgreSQL restarted in immediate mode by hand (`pg_ctl`, the
//! supervisor adopts the new postmaster) and through the supervisor, and a worker stopped by
//! SIGTERM while it is still starting. Every wait polls with a deadline.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use paymesh_core::shard::shard_for_merchant;
use tokio::io::AsyncBufReadExt;

use crate::stack::Stack;
use crate::supervise::Signal;

const DEADLINE: Duration = Duration::from_secs(60);

pub async fn run(stack: &Stack, config: &Path) -> Result<(), String> {
    kill_a_payments_instance(stack).await?;
    restart_postgres_by_hand(stack).await?;
    restart_postgres_supervised(stack).await?;
    sigterm_while_starting(stack, config).await
}

/// Outcomes of the calls through the edge while an instance was down.
#[derive(Debug, Default)]
struct Tally {
    ok: AtomicU32,
    unavailable: AtomicU32,
    other: std::sync::Mutex<Vec<String>>,
}

/// `kill -9` of the first instance of shard 0 while a client authorizes through the edge:
/// every call must succeed or fail UNAVAILABLE until the supervisor has restarted the
/// instance and it serves again.
async fn kill_a_payments_instance(stack: &Stack) -> Result<(), String> {
    let edge = stack.config.edge.as_ref().ok_or("the smoke config has an edge")?.listen;
    let victim = stack.config.payments.instances.iter().find(|i| i.shard.0 == 0).ok_or("no instance of shard 0")?;
    let process = stack.process(&victim.name).ok_or("the victim is not supervised")?;
    let old = process.pid().ok_or("the victim is not running")?;
    let merchant = merchant_on(0, stack.config.shard_count());

    let tally = Arc::new(Tally::default());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let load = tokio::spawn(authorize_until(edge, merchant.clone(), tally.clone(), stopped));
    poll("a first call through the edge", || async { tally.ok.load(Ordering::SeqCst) > 0 }).await?;

    stack.signal(&victim.name, Signal::Kill)?;
    poll(&format!("{} restarted and SERVING", victim.name), || async {
        process.pid().is_some_and(|p| p != old) && stack.serving(&victim.name, victim.listen).await
    })
    .await?;
    let new = process.pid().unwrap_or(0);
    // A few more calls with the instance back, then stop the client.
    let after = tally.ok.load(Ordering::SeqCst) + 3;
    poll("calls after the restart", || async { tally.ok.load(Ordering::SeqCst) >= after }).await?;
    let _ = stop.send(true);
    load.await.map_err(|e| e.to_string())?;

    let other = tally.other.lock().map(|o| o.clone()).unwrap_or_default();
    if !other.is_empty() {
        return Err(format!("with {} killed, calls through the edge failed other than UNAVAILABLE: {other:?}", victim.name));
    }
    println!(
        "    kill -9 {} (pid {old}) under load: the supervisor restarted it (pid {new}); through the edge {} calls succeeded, {} were UNAVAILABLE, none failed otherwise",
        victim.name,
        tally.ok.load(Ordering::SeqCst),
        tally.unavailable.load(Ordering::SeqCst)
    );
    Ok(())
}

/// Authorizes through the edge (REST, a fresh idempotency key each time) until told to stop.
async fn authorize_until(edge: std::net::SocketAddr, merchant: String, tally: Arc<Tally>, mut stop: tokio::sync::watch::Receiver<bool>) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    while !*stop.borrow_and_update() {
        let key = format!("fault-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
        let body = format!(r#"{{"merchantId":"{merchant}","amount":1000,"currency":"KRW","idempotencyKey":"{key}"}}"#);
        match super::http_as(&merchant, edge, "POST", "/api/payments/authorize", Some(&body)).await {
            Ok((200, _)) => {
                tally.ok.fetch_add(1, Ordering::SeqCst);
            }
            Ok((503, b)) if b.contains("\"code\":14") => {
                tally.unavailable.fetch_add(1, Ordering::SeqCst);
            }
            other => {
                if let Ok(mut o) = tally.other.lock() {
                    o.push(format!("{other:?}"));
                }
            }
        }
    }
}

/// `pg_ctl -D DATADIR -m immediate -w restart` of shard 0's server, as a user would type it:
/// the stack keeps running, the supervisor adopts the new postmaster, and calls through the
/// edge succeed again.
async fn restart_postgres_by_hand(stack: &Stack) -> Result<(), String> {
    let db = stack.database(0).ok_or("no PostgreSQL for shard 0")?;
    let before = db.process().restarts();
    let pg_ctl = db.bin_dir().join("pg_ctl");
    let mut cmd = match db.run_as() {
        Some(user) => {
            let mut c = tokio::process::Command::new("runuser");
            c.args(["-u", user, "--"]).arg(pg_ctl);
            c
        }
        None => tokio::process::Command::new(pg_ctl),
    };
    // The new postmaster inherits pg_ctl's output; a pipe would never close.
    cmd.arg("-D").arg(db.data_dir()).args(["-m", "immediate", "-w", "restart"]).stdout(Stdio::null()).stderr(Stdio::null());
    let status = cmd.status().await.map_err(|e| format!("cannot run pg_ctl: {e}"))?;
    if !status.success() {
        return Err(format!("pg_ctl restart of shard 0's PostgreSQL failed: {status}"));
    }
    poll("the supervisor watching the restarted postmaster", || async { db.process().restarts() > before && db.process().pid().is_some() })
        .await?;
    let edge = stack.config.edge.as_ref().ok_or("the smoke config has an edge")?.listen;
    authorize_succeeds(edge, &merchant_on(0, stack.config.shard_count()), "after pg_ctl restart").await?;
    println!(
        "    pg_ctl -m immediate restart of shard 0's PostgreSQL: the stack kept running, the supervisor adopted the new postmaster, calls succeed again"
    );
    Ok(())
}

/// [`Stack::restart_postgres`] on shard 1: calls through the edge succeed again.
async fn restart_postgres_supervised(stack: &Stack) -> Result<(), String> {
    stack.restart_postgres(1).await?;
    let edge = stack.config.edge.as_ref().ok_or("the smoke config has an edge")?.listen;
    authorize_succeeds(edge, &merchant_on(1, stack.config.shard_count()), "after the supervised restart").await?;
    println!("    immediate-mode restart of shard 1's PostgreSQL through the supervisor: calls succeed again");
    Ok(())
}

/// A worker waiting for the broker's address file (which never comes) gets SIGTERM: it must
/// exit at once with 0, not ignore it or wait out its grace.
async fn sigterm_while_starting(stack: &Stack, config: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(config).map_err(|e| e.to_string())?;
    let stuck = config.with_file_name("stuck.toml");
    std::fs::write(&stuck, text.replace("file:kafka.bootstrap", "file:no-broker-writes-this")).map_err(|e| e.to_string())?;
    let worker = stack.config.workers.as_ref().and_then(|w| w.instances.first()).ok_or("the smoke config has workers")?;
    let mut child = tokio::process::Command::new(stack.bin_dir().join("worker"))
        .args(["--instance", &worker.name, "--config"])
        .arg(&stuck)
        .envs(stack.env().iter().map(|(k, v)| (k, v)))
        .env("PAYMESH_LOG_FORMAT", "json")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start a worker: {e}"))?;
    // Its first log line says it is running and listening for signals.
    let mut lines = tokio::io::BufReader::new(child.stderr.take().ok_or("no stderr")?).lines();
    let started = tokio::time::timeout(DEADLINE, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("worker starting") {
                return true;
            }
        }
        false
    })
    .await;
    if started != Ok(true) {
        return Err("the stuck worker never logged that it was starting".into());
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let pid = child.id().ok_or("the worker is gone")?;
    crate::supervise::kill(pid, Signal::Term)?;
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .map_err(|_| format!("a worker still starting ignored SIGTERM for {DEADLINE:?}"))?
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("a worker still starting should exit 0 on SIGTERM, got {status}"));
    }
    println!("    SIGTERM to a worker still waiting for the broker: it exited at once with 0");
    Ok(())
}

/// Polls until an Authorize through the edge answers 200.
async fn authorize_succeeds(edge: std::net::SocketAddr, merchant: &str, when: &str) -> Result<(), String> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let key = format!("recover-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
        let body = format!(r#"{{"merchantId":"{merchant}","amount":1000,"currency":"KRW","idempotencyKey":"{key}"}}"#);
        let last = super::http_as(merchant, edge, "POST", "/api/payments/authorize", Some(&body)).await;
        if matches!(last, Ok((200, _))) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("no Authorize through the edge succeeded {when} within {DEADLINE:?}; last: {last:?}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls `cond` until it holds, or fails naming `what` after [`DEADLINE`].
async fn poll<F, Fut>(what: &str, mut cond: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    while !cond().await {
        if Instant::now() > deadline {
            return Err(format!("no {what} within {DEADLINE:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

fn merchant_on(shard: u32, shards: u32) -> String {
    (0..).map(|i| format!("fault-merchant-{i}")).find(|m| shard_for_merchant(m, shards).0 == shard).unwrap_or_default()
}
