//! `cargo xtask chaos [--quick]`: the local stack under a steady full-flow load through the
//! edge, while one fault after another hits it (processes killed with SIGKILL or frozen with
//! SIGSTOP, PostgreSQL restarted in immediate mode, brokers taken down, clients hammering
//! one idempotency key). When the load stops and the pipeline drains, the money invariants
//! are checked against the stores themselves ([`check`]); client-visible errors are reported
//! by status and by fault window. Exits non-zero on any breach; writes
//! `.paymesh/chaos/results.json`.

mod check;
mod load;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use paymesh_testkit::port::free_port_below_ephemeral as free_port;
use tonic::Code;

use crate::stack::Stack;
use crate::supervise::Signal;

/// The durations of one run.
#[derive(Debug, Clone, Copy)]
struct Plan {
    clients: usize,
    pace: Duration,
    warm_up: Duration,
    /// Quiet time after a fault has recovered, before the next.
    settle: Duration,
    all_brokers_down: Duration,
    one_broker_down: Duration,
    stopped: Duration,
    burst: usize,
}

impl Plan {
    fn quick() -> Self {
        Self {
            clients: 4,
            pace: Duration::from_millis(20),
            warm_up: Duration::from_secs(3),
            settle: Duration::from_secs(2),
            all_brokers_down: Duration::from_secs(8),
            one_broker_down: Duration::from_secs(10),
            stopped: Duration::from_secs(5),
            burst: 16,
        }
    }

    fn full() -> Self {
        Self {
            clients: 8,
            pace: Duration::from_millis(10),
            warm_up: Duration::from_secs(10),
            settle: Duration::from_secs(5),
            all_brokers_down: Duration::from_secs(30),
            one_broker_down: Duration::from_secs(60),
            stopped: Duration::from_secs(10),
            burst: 32,
        }
    }
}

/// A fault as it happened: what, from when to when (since the run started).
#[derive(Debug, Clone)]
struct Window {
    fault: String,
    from: Duration,
    to: Duration,
}

pub async fn run(quick: bool) -> Result<(), String> {
    let plan = if quick { Plan::quick() } else { Plan::full() };
    let dir = crate::root().join(".paymesh/chaos");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let config = dir.join("paymesh.toml");
    let control = free_port().map_err(|e| e.to_string())?;
    std::fs::write(&config, chaos_config()?).map_err(|e| e.to_string())?;
    let env = vec![("PAYMESH_BROKER_CONTROL".to_owned(), format!("127.0.0.1:{control}"))];
    println!("==> chaos ({}): starting the stack ({} build)", if quick { "quick" } else { "full" }, if quick { "dev" } else { "release" });
    let stack = Stack::start_with_env(&config, &dir, !quick, env).await?;
    let outcome = drive(&stack, plan, control, &dir).await;
    let stopped = stack.stop().await;
    let verdict = outcome?;
    stopped?;
    verdict
}

/// Runs the load and the faults, then the checks. The outer `Result` is "could not run",
/// the inner one the verdict.
async fn drive(stack: &Stack, plan: Plan, control: u16, dir: &std::path::Path) -> Result<Result<(), String>, String> {
    let edge = stack.config.edge.as_ref().ok_or("the chaos config has no [edge]")?.listen;
    let started = Instant::now();
    let load = load::Load::new(edge, started)?;
    let clients: Vec<_> = (0..plan.clients).map(|i| tokio::spawn(load.clone().client(i, plan.pace))).collect();
    tokio::time::sleep(plan.warm_up).await;

    let mut windows = Vec::new();
    let faults = Faults { stack, control, plan };
    let mut fault_errors = Vec::new();
    for f in faults.list() {
        let from = started.elapsed();
        println!("    fault: {f}");
        if let Err(e) = faults.inject(&f, &load).await {
            fault_errors.push(format!("{f}: {e}"));
        }
        tokio::time::sleep(plan.settle).await;
        windows.push(Window { fault: f, from, to: started.elapsed() });
    }
    tokio::time::sleep(plan.settle).await;
    load.stop();
    for c in clients {
        let _ = c.await;
    }
    let ran = started.elapsed();
    println!("==> load stopped after {ran:.0?} ({} calls); waiting for the pipeline to drain", load.calls.load(Ordering::Relaxed));
    let kinds = ["ledger", "settlement", "view"];
    let drained = check::drain(&stack.config, &kinds, Duration::from_secs(180)).await;
    let log = load.log.lock().await;
    let mut outcomes = match &drained {
        Ok(took) => {
            println!("    drained in {took:.1?}");
            check::all(&stack.config, &log, &kinds).await?
        }
        Err(e) => vec![check::Outcome { name: "pipeline drained", ok: false, detail: e.clone() }],
    };
    outcomes.push(errors_by_window(&log.errors, &windows));
    if outcomes.iter().all(|o| o.ok) {
        outcomes.push(self_test(&stack.config, &log, &kinds).await?);
    }
    if !fault_errors.is_empty() {
        outcomes.push(check::Outcome { name: "every fault injected", ok: false, detail: fault_errors.join("; ") });
    }
    let report = report(&outcomes, &log.errors, &windows, ran, load.calls.load(Ordering::Relaxed), log.payments.len());
    println!("{report}");
    let results = dir.join("results.json");
    std::fs::write(&results, json(&outcomes, &windows, &log.errors, ran, log.payments.len())).map_err(|e| e.to_string())?;
    println!("    results in {}", results.display());
    let breaches: Vec<&str> = outcomes.iter().filter(|o| !o.ok).map(|o| o.name).collect();
    Ok(if breaches.is_empty() { Ok(()) } else { Err(format!("chaos found breaches: {}", breaches.join(", "))) })
}

/// Proves the checks are not vacuous: plants one error in each worker model and one lost
/// acknowledged state on a shard, and requires each matching check to report it. Runs last:
/// it leaves the stores wrong on purpose.
async fn self_test(config: &paymesh_core::config::MeshConfig, log: &load::Log, kinds: &[&str]) -> Result<check::Outcome, String> {
    let workers = &config.workers.as_ref().ok_or("no [workers]")?.database.url;
    let (w, conn) = tokio_postgres::connect(workers, tokio_postgres::NoTls).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let plant = [
        "UPDATE payments_view SET refunded_amount = refunded_amount + 1 WHERE payment_id = (SELECT min(payment_id) FROM payments_view)",
        "INSERT INTO ledger_postings (entry_id, account, debit, credit)
         SELECT entry_id, 'merchant:' || merchant_id || ':' || currency, 0, 1 FROM ledger_entries ORDER BY entry_id LIMIT 1",
        "UPDATE settlement_batches SET captured = captured + 1 WHERE batch_id = (SELECT min(batch_id) FROM settlement_batches)",
    ];
    for sql in plant {
        w.execute(sql, &[]).await.map_err(|e| format!("planting an error: {e}"))?;
    }
    let shard = &config.shards.first().ok_or("no shards")?.database.url;
    let (s, conn) = tokio_postgres::connect(shard, tokio_postgres::NoTls).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    s.execute("UPDATE payments SET version = version + 1 WHERE payment_id = (SELECT min(payment_id) FROM payments)", &[])
        .await
        .map_err(|e| format!("planting an error: {e}"))?;
    let again = check::all(config, log, kinds).await?;
    let caught = |name: &str| again.iter().any(|o| o.name == name && !o.ok);
    let expected = [
        "acknowledged payments on their shards",
        "ledger: balances equal the shards, debits equal credits",
        "settlement totals equal captures minus refunds",
        "view equals the shards (status, amounts, version)",
    ];
    let missed: Vec<&str> = expected.iter().copied().filter(|n| !caught(n)).collect();
    Ok(check::Outcome {
        name: "the checks catch planted errors",
        ok: missed.is_empty(),
        detail: if missed.is_empty() {
            "a changed shard row, view row, ledger posting and settlement batch were each reported".into()
        } else {
            format!("not reported: {}", missed.join(", "))
        },
    })
}

struct Faults<'a> {
    stack: &'a Stack,
    control: u16,
    plan: Plan,
}

impl Faults<'_> {
    fn list(&self) -> Vec<String> {
        let p = self.plan;
        vec![
            "kill -9 payments-0a".into(),
            "kill -9 relay-0".into(),
            "kill -9 ledger-1".into(),
            "kill -9 settlement-1".into(),
            "kill -9 view-1".into(),
            "kill -9 edge".into(),
            "immediate restart of shard 0's PostgreSQL".into(),
            "immediate restart of the workers' PostgreSQL".into(),
            format!("every broker down for {:?}", p.all_brokers_down),
            format!("broker 2 of 3 down for {:?}", p.one_broker_down),
            format!("SIGSTOP payments-1a for {:?}", p.stopped),
            format!("{} clients retrying one idempotency key at once", p.burst),
        ]
    }

    async fn inject(&self, fault: &str, load: &Arc<load::Load>) -> Result<(), String> {
        let p = self.plan;
        if let Some(name) = fault.strip_prefix("kill -9 ") {
            return self.kill(name).await;
        }
        if fault.starts_with("immediate restart of shard 0") {
            return self.stack.restart_postgres(0).await;
        }
        if fault.starts_with("immediate restart of the workers") {
            return self.kill_as("postgres-workers", Signal::Quit).await;
        }
        if fault.starts_with("every broker down") {
            self.broker("/brokers/down").await?;
            tokio::time::sleep(p.all_brokers_down).await;
            return self.broker("/brokers/up").await;
        }
        if fault.starts_with("broker 2 of 3 down") {
            self.broker("/brokers/2/down").await?;
            tokio::time::sleep(p.one_broker_down).await;
            return self.broker("/brokers/2/up").await;
        }
        if fault.starts_with("SIGSTOP") {
            let pid = self.stack.pid("payments-1a").ok_or("payments-1a is not running")?;
            signal_raw(pid, "STOP")?;
            tokio::time::sleep(p.stopped).await;
            return signal_raw(pid, "CONT");
        }
        if fault.contains("one idempotency key") {
            return load.same_key_burst(p.burst).await;
        }
        Err(format!("unknown fault '{fault}'"))
    }

    async fn kill(&self, name: &str) -> Result<(), String> {
        self.kill_as(name, Signal::Kill).await
    }

    /// Sends `signal` to `name` and waits until its supervisor has it running again (a new
    /// pid), ready.
    async fn kill_as(&self, name: &str, signal: Signal) -> Result<(), String> {
        let before = self.stack.pid(name).ok_or_else(|| format!("{name} is not running"))?;
        self.stack.signal(name, signal)?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if self.stack.pid(name).is_some_and(|pid| pid != before) {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("{name} was not restarted within 120 s"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ready(self.stack, name, Duration::from_secs(120)).await
    }

    async fn broker(&self, path: &str) -> Result<(), String> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.control));
        match crate::probe::http(addr, "GET", path, None).await? {
            (200, _) => Ok(()),
            (s, body) => Err(format!("broker control {path}: {s} {body}")),
        }
    }
}

/// Waits until process `name` of the stack serves again.
async fn ready(stack: &Stack, name: &str, timeout: Duration) -> Result<(), String> {
    let c = &stack.config;
    let http_ok = |addr: std::net::SocketAddr, path: &'static str| async move {
        matches!(crate::probe::http(addr, "GET", path, None).await, Ok((200, _)))
    };
    let deadline = Instant::now() + timeout;
    loop {
        let up = if let Some(i) = c.payments.instances.iter().find(|i| i.name == name) {
            stack.serving(&i.name, i.listen).await
        } else if let Some(i) = c.relay.iter().flat_map(|r| &r.instances).find(|i| i.name == name) {
            http_ok(i.status_listen, "/status").await
        } else if let Some(i) = c.workers.iter().flat_map(|w| &w.instances).find(|i| i.name == name) {
            http_ok(i.status_listen, "/status").await
        } else if name == "edge" {
            http_ok(c.edge.as_ref().ok_or("no [edge]")?.admin_listen, "/ready").await
        } else if name == "postgres-workers" {
            let url = &c.workers.as_ref().ok_or("no [workers]")?.database.url;
            tokio_postgres::connect(url, tokio_postgres::NoTls).await.is_ok()
        } else {
            return Err(format!("no readiness check for {name}"));
        };
        if up {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{name} did not serve again within {timeout:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `kill -s NAME pid` for the signals the supervisor does not send (STOP, CONT).
fn signal_raw(pid: u32, signal: &str) -> Result<(), String> {
    let status = std::process::Command::new("kill").args(["-s", signal, &pid.to_string()]).status().map_err(|e| e.to_string())?;
    if status.success() { Ok(()) } else { Err(format!("kill -s {signal} {pid} failed")) }
}

/// Errors a client may see while a fault is active; anything else, or anything outside a
/// fault window, is a breach.
fn allowed(code: Code) -> bool {
    matches!(code, Code::Unavailable | Code::Aborted | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown | Code::Internal)
}

fn errors_by_window(errors: &[(Duration, Code, String)], windows: &[Window]) -> check::Outcome {
    let mut bad = Vec::new();
    for (at, code, msg) in errors {
        let inside = windows.iter().any(|w| w.contains(*at));
        if !inside {
            bad.push(format!("{code:?} at {at:.1?} outside every fault: {msg}"));
        } else if !allowed(*code) {
            bad.push(format!("{code:?} at {at:.1?}: {msg}"));
        }
    }
    check::outcome(
        "client errors only retriable, only during faults",
        bad,
        format!("{} failed attempts, all retriable and inside fault windows", errors.len()),
    )
}

impl Window {
    fn contains(&self, at: Duration) -> bool {
        at >= self.from && at <= self.to
    }

    /// Failed attempts inside this window, by code.
    fn errors(&self, errors: &[(Duration, Code, String)]) -> BTreeMap<String, usize> {
        let mut by = BTreeMap::new();
        for (_, code, _) in errors.iter().filter(|(at, _, _)| self.contains(*at)) {
            *by.entry(format!("{code:?}")).or_default() += 1;
        }
        by
    }
}

fn report(
    outcomes: &[check::Outcome],
    errors: &[(Duration, Code, String)],
    windows: &[Window],
    ran: Duration,
    calls: u64,
    payments: usize,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "\n==> chaos report: {ran:.0?} of load, {calls} calls, {payments} payments acknowledged\n");
    let _ = writeln!(s, "| fault | window (s) | failed attempts by code |");
    let _ = writeln!(s, "|---|---|---|");
    for w in windows {
        let by = w.errors(errors);
        let codes =
            if by.is_empty() { "none".to_owned() } else { by.iter().map(|(c, n)| format!("{c} {n}")).collect::<Vec<_>>().join(", ") };
        let _ = writeln!(s, "| {} | {:.1}-{:.1} | {codes} |", w.fault, w.from.as_secs_f64(), w.to.as_secs_f64());
    }
    let _ = writeln!(s, "\n| check | result | detail |");
    let _ = writeln!(s, "|---|---|---|");
    for o in outcomes {
        let _ = writeln!(s, "| {} | {} | {} |", o.name, if o.ok { "ok" } else { "BREACH" }, o.detail.replace('\n', " "));
    }
    s
}

fn json(outcomes: &[check::Outcome], windows: &[Window], errors: &[(Duration, Code, String)], ran: Duration, payments: usize) -> String {
    let checks: Vec<serde_json::Value> =
        outcomes.iter().map(|o| serde_json::json!({"check": o.name, "ok": o.ok, "detail": o.detail})).collect();
    let faults: Vec<serde_json::Value> = windows
        .iter()
        .map(|w| {
            let by = w.errors(errors);
            serde_json::json!({"fault": w.fault, "from_s": w.from.as_secs_f64(), "to_s": w.to.as_secs_f64(), "errors": by})
        })
        .collect();
    serde_json::json!({"ran_s": ran.as_secs_f64(), "payments": payments, "faults": faults, "checks": checks}).to_string()
}

/// The chaos stack: one worker of each kind, and short relay retries so the pipeline catches
/// up quickly once a fault ends.
fn chaos_config() -> Result<String, String> {
    crate::stack::free_ports::config(crate::stack::free_ports::Shape {
        shard_pool: 8,
        workers: &[("ledger-1", "ledger"), ("settlement-1", "settlement"), ("view-1", "view")],
        relay: "retry_interval = \"500ms\"\n[relay.breaker]\nwait_in_open = \"2s\"\n",
        // The load spans many merchants through one client; authentication has its own
        // tests (and the smoke run drives an authenticated stack).
        auth_jwks: None,
        shard_password: None,
        mesh_tls: None,
    })
}
