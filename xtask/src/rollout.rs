//! `cargo xtask rollout [--quick]`: a rolling restart of the whole local stack under a steady
//! load of the seeds' full flow (authorize -> capture -> refund over gRPC through the edge):
//! every payments instance one at a time (each drains first), then each relay and worker,
//! then the edge (a graceful upgrade: the new process takes the listening socket over), then
//! live config changes (a rate limit at the edge, a payments instance added and started, and
//! a change every process reloads, as `cargo xtask reload` does). It
//! prints, per step, the calls made, the non-OK answers (which must be 0) and the p99, writes
//! `.paymesh/rollout/results.md`, and fails on any non-OK answer.
//!
//! The clients retry a call (at most twice) when it never reached a server (the connection was
//! refused or closed before any answer, as gRPC clients retry such calls transparently; every
//! write carries an idempotency key): those retries are counted in their own column.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use paymesh_proto::payments::v1 as pb;
use paymesh_proto::payments::v1::payments_client::PaymentsClient;
use paymesh_testkit::port::free_port_below_ephemeral as free_port;
use tokio::sync::Mutex;
use tonic::transport::Channel;

use crate::stack::Stack;
use crate::supervise::Signal;

/// How many times a call that never reached a server is sent again.
const MAX_TRANSPORT_RETRIES: u32 = 2;

/// One call as a client saw it.
#[derive(Debug, Clone)]
struct Call {
    /// When it started, since the run started.
    at: Duration,
    took: Duration,
    /// `None`: OK; else what it got.
    failed: Option<String>,
    /// It was sent again once after a connection-level refusal.
    retried: bool,
}

/// A step of the rollout, from when it began to when it was done (and settled).
#[derive(Debug, Clone)]
struct Step {
    name: String,
    from: Duration,
    to: Duration,
}

struct Load {
    channel: Channel,
    started: Instant,
    stop: AtomicBool,
    calls: Mutex<Vec<Call>>,
}

impl Load {
    /// One client: flows back to back, `pace` apart, until stopped.
    async fn client(self: Arc<Self>, id: usize, pace: Duration) {
        let mut n = 0usize;
        while !self.stop.load(Ordering::Relaxed) {
            let tag = format!("rollout-{}-{id}-{n}", std::process::id());
            let merchant = format!("rollout-m{}", (id * 7 + n) % 16);
            let auth =
                pb::AuthorizeRequest { merchant_id: merchant, amount: 5_000, currency: "KRW".into(), idempotency_key: format!("{tag}-a") };
            let paid = self
                .call(|mut c| {
                    let r = auth.clone();
                    async move { c.authorize(r).await.map(|p| p.into_inner().payment_id) }
                })
                .await;
            if let Some(id) = paid {
                let capture = pb::CaptureRequest { payment_id: id.clone(), amount: Some(5_000), idempotency_key: format!("{tag}-c") };
                if self
                    .call(|mut c| {
                        let r = capture.clone();
                        async move { c.capture(r).await.map(drop) }
                    })
                    .await
                    .is_some()
                {
                    let refund = pb::RefundRequest { payment_id: id, amount: Some(5_000), idempotency_key: format!("{tag}-r") };
                    self.call(|mut c| {
                        let r = refund.clone();
                        async move { c.refund(r).await.map(drop) }
                    })
                    .await;
                }
            }
            n += 1;
            tokio::time::sleep(pace).await;
        }
    }

    /// One call, sent again once if it never reached a server; recorded.
    async fn call<T, F, Fut>(&self, send: F) -> Option<T>
    where
        F: Fn(PaymentsClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let at = self.started.elapsed();
        let begun = Instant::now();
        let mut retries = 0;
        let outcome = loop {
            let attempt = tokio::time::timeout(Duration::from_secs(10), send(PaymentsClient::new(self.channel.clone()))).await;
            match attempt {
                Ok(Ok(v)) => break Ok(v),
                // A transport error from the client's own side (no grpc-status from any
                // server): the call was not processed. Twice at most: during the edge's
                // upgrade a retry can meet the old process's closing connection too.
                Ok(Err(s)) if std::error::Error::source(&s).is_some() && retries < MAX_TRANSPORT_RETRIES => retries += 1,
                Ok(Err(s)) => break Err(format!("{:?}: {}", s.code(), s.message())),
                Err(_) => break Err("no answer within 10 s".into()),
            }
        };
        let (value, failed) = match outcome {
            Ok(v) => (Some(v), None),
            Err(e) => (None, Some(e)),
        };
        self.calls.lock().await.push(Call { at, took: begun.elapsed(), failed, retried: retries > 0 });
        value
    }
}

/// The durations of a run.
#[derive(Debug, Clone, Copy)]
struct Plan {
    clients: usize,
    pace: Duration,
    /// Load before the first step, and after each step before the next.
    settle: Duration,
}

pub async fn run(quick: bool) -> Result<(), String> {
    let plan = if quick {
        Plan { clients: 4, pace: Duration::from_millis(20), settle: Duration::from_secs(2) }
    } else {
        Plan { clients: 8, pace: Duration::from_millis(10), settle: Duration::from_secs(5) }
    };
    let dir = crate::root().join(".paymesh/rollout");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let config = dir.join("paymesh.toml");
    std::fs::write(&config, rollout_config()?).map_err(|e| e.to_string())?;
    println!(
        "==> rollout ({}): starting the stack ({} build)",
        if quick { "quick" } else { "full" },
        if quick { "dev" } else { "release" }
    );
    let mut stack = Stack::start(&config, &dir, !quick).await?;
    let outcome = drive(&mut stack, plan, &config).await;
    let stopped = stack.stop().await;
    let (steps, calls) = outcome?;
    stopped?;
    let (table, non_ok) = report(&steps, &calls);
    let command = format!("cargo xtask rollout{}", if quick { " --quick" } else { "" });
    let text = format!("# Rolling restart ({command})\n\n{table}");
    println!("\n{text}");
    std::fs::write(dir.join("results.md"), &text).map_err(|e| e.to_string())?;
    if non_ok > 0 {
        return Err(format!("{non_ok} calls got a non-OK answer during the rollout (see the table)"));
    }
    Ok(())
}

fn rollout_config() -> Result<String, String> {
    crate::stack::free_ports::config(crate::stack::free_ports::Shape {
        shard_pool: 8,
        workers: &[("ledger-1", "ledger"), ("settlement-1", "settlement"), ("view-1", "view")],
        relay: "",
        auth_jwks: None,
        shard_password: None,
        mesh_tls: None,
    })
}

async fn drive(stack: &mut Stack, plan: Plan, config: &std::path::Path) -> Result<(Vec<Step>, Vec<Call>), String> {
    let edge = stack.config.edge.clone().ok_or("the rollout config has no [edge]")?;
    let started = Instant::now();
    let channel = Channel::from_shared(format!("http://{}", edge.listen)).map_err(|e| e.to_string())?.connect_lazy();
    let load = Arc::new(Load { channel, started, stop: AtomicBool::new(false), calls: Mutex::new(Vec::new()) });
    let clients: Vec<_> = (0..plan.clients).map(|i| tokio::spawn(load.clone().client(i, plan.pace))).collect();

    let mut steps = Vec::new();
    let mut step = |name: String, from: Duration| {
        steps.push(Step { name, from, to: started.elapsed() });
    };
    let from = started.elapsed();
    tokio::time::sleep(plan.settle).await;
    step("steady load (before)".into(), from);

    let outcome = async {
        let payments: Vec<(String, std::net::SocketAddr)> = stack.config.payments.instances.iter().map(|i| (i.name.clone(), i.listen)).collect();
        for (name, addr) in payments {
            let from = started.elapsed();
            println!("    restarting {name} (SIGTERM: it drains, then exits)");
            stack.process(&name).ok_or_else(|| format!("no process {name}"))?.restart(Signal::Term).await?;
            wait(&format!("{name} serving again"), || stack.serving(&name, addr)).await?;
            wait(&format!("the edge sending {name} calls again"), || endpoint_healthy(edge.admin_listen, &name)).await?;
            tokio::time::sleep(plan.settle).await;
            step(format!("restart {name}"), from);
        }
        let pipeline: Vec<(String, std::net::SocketAddr)> = stack
            .config
            .relay
            .iter()
            .flat_map(|r| r.instances.iter().map(|i| (i.name.clone(), i.status_listen)))
            .chain(stack.config.workers.iter().flat_map(|w| w.instances.iter().map(|i| (i.name.clone(), i.status_listen))))
            .collect();
        for (name, status) in pipeline {
            let from = started.elapsed();
            println!("    restarting {name}");
            stack.process(&name).ok_or_else(|| format!("no process {name}"))?.restart(Signal::Term).await?;
            wait(&format!("{name} answering /status"), || async move { matches!(crate::probe::http(status, "GET", "/status", None).await, Ok((200, _))) }).await?;
            tokio::time::sleep(plan.settle).await;
            step(format!("restart {name}"), from);
        }

        let from = started.elapsed();
        println!("    upgrading the edge (a new process takes the listening socket over)");
        stack.process("edge").ok_or("no edge process")?.upgrade("--upgrade", Signal::Quit).await?;
        wait("the new edge ready", || async { matches!(crate::probe::http(edge.admin_listen, "GET", "/ready", None).await, Ok((200, _))) }).await?;
        tokio::time::sleep(plan.settle).await;
        step("upgrade the edge".into(), from);

        let from = started.elapsed();
        println!("    reloading the edge's config: a route-wide rate limit on payments");
        edit(config, |t| {
            t.replacen(
                "kind = \"sharded_id\" }]\n",
                "kind = \"sharded_id\" }]\nrate_limit = { route = { rate = 100000.0, burst = 100000 } }\n",
                1,
            )
        })?;
        reload(edge.admin_listen, "edge.routes[payments.v1.Payments]").await?;
        tokio::time::sleep(plan.settle).await;
        step("reload: a rate limit".into(), from);

        let from = started.elapsed();
        let (listen, status) = (free_port().map_err(|e| e.to_string())?, free_port().map_err(|e| e.to_string())?);
        let listen: std::net::SocketAddr = ([127, 0, 0, 1], listen).into();
        println!("    adding payments-0c on {listen}: started, then the edge's config reloaded");
        edit(config, |t| {
            format!("{t}\n[[payments.instances]]\nname = \"payments-0c\"\nshard = 0\nlisten = \"{listen}\"\nstatus_listen = \"127.0.0.1:{status}\"\n")
        })?;
        stack.add_payments_instance("payments-0c").await?;
        wait("payments-0c serving", || stack.serving("payments-0c", listen)).await?;
        reload(edge.admin_listen, "edge.clusters[payments]").await?;
        wait("the edge sending payments-0c calls", || endpoint_healthy(edge.admin_listen, "payments-0c")).await?;
        tokio::time::sleep(plan.settle).await;
        step("reload: an instance added".into(), from);

        let from = started.elapsed();
        println!("    every process reloads the config (cargo xtask reload): log level, relay poll interval, worker attempts");
        edit(config, |t| {
            format!("log_level = \"info\"\n{t}")
                .replacen("[relay]\npoll_interval = \"50ms\"\n", "[relay]\npoll_interval = \"100ms\"\n", 1)
                .replacen("[workers]\n", "[workers]\nmax_attempts = 7\n", 1)
        })?;
        crate::reload::run(config).await?;
        tokio::time::sleep(plan.settle).await;
        step("reload: every process".into(), from);
        Ok::<(), String>(())
    }
    .await;

    load.stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }
    outcome?;
    let calls = std::mem::take(&mut *load.calls.lock().await);
    Ok((steps, calls))
}

/// Polls `probe` until it holds, for up to a minute.
async fn wait<F, Fut>(what: &str, mut probe: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while !probe().await {
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Whether the edge's `/clusters` has endpoint `name` healthy.
async fn endpoint_healthy(admin: std::net::SocketAddr, name: &str) -> bool {
    let Ok((200, body)) = crate::probe::http(admin, "GET", "/clusters", None).await else { return false };
    let Ok(json) = serde_json::from_str::<serde_json::Value>(&body) else { return false };
    json["clusters"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["endpoints"].as_array().into_iter().flatten())
        .any(|e| e["name"] == name && e["healthy"] == true)
}

fn edit(path: &std::path::Path, change: impl FnOnce(String) -> String) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let new = change(text.clone());
    if new == text {
        return Err(format!("the edit of {} changed nothing", path.display()));
    }
    std::fs::write(path, new).map_err(|e| e.to_string())
}

/// `POST /config/reload`; fails unless it took effect and applied `expect`.
async fn reload(admin: std::net::SocketAddr, expect: &str) -> Result<(), String> {
    let (status, body) = crate::probe::http(admin, "POST", "/config/reload", None).await?;
    if status != 200 || !body.contains(expect) {
        return Err(format!("the edge's reload answered {status}: {body}"));
    }
    Ok(())
}

/// The per-step table, and the non-OK count over the whole run.
fn report(steps: &[Step], calls: &[Call]) -> (String, usize) {
    let mut out = String::from(
        "| step | seconds | calls | non-OK | retried after a refused or closed connection | p99 ms |\n|---|---:|---:|---:|---:|---:|\n",
    );
    for s in steps {
        let inside: Vec<&Call> = calls.iter().filter(|c| c.at >= s.from && c.at < s.to).collect();
        let mut took: Vec<f64> = inside.iter().map(|c| c.took.as_secs_f64() * 1000.0).collect();
        took.sort_by(f64::total_cmp);
        let p99 = took.get(((took.len() as f64 * 0.99).ceil() as usize).saturating_sub(1)).copied().unwrap_or(0.0);
        let _ = writeln!(
            out,
            "| {} | {:.1} | {} | {} | {} | {p99:.1} |",
            s.name,
            (s.to - s.from).as_secs_f64(),
            inside.len(),
            inside.iter().filter(|c| c.failed.is_some()).count(),
            inside.iter().filter(|c| c.retried).count()
        );
    }
    let failed: Vec<&Call> = calls.iter().filter(|c| c.failed.is_some()).collect();
    let _ = writeln!(
        out,
        "\nIn all: {} calls, {} non-OK, {} retried after a refused or closed connection.",
        calls.len(),
        failed.len(),
        calls.iter().filter(|c| c.retried).count()
    );
    for c in failed.iter().take(10) {
        let _ = writeln!(out, "- at {:.1} s: {}", c.at.as_secs_f64(), c.failed.as_deref().unwrap_or(""));
    }
    (out, failed.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_counts_calls_by_step_and_fails_on_a_non_ok() {
        let call = |at: u64, failed: Option<&str>, retried: bool| Call {
            at: Duration::from_secs(at),
            took: Duration::from_millis(at * 10),
            failed: failed.map(str::to_owned),
            retried,
        };
        let steps = [
            Step { name: "a".into(), from: Duration::from_secs(0), to: Duration::from_secs(2) },
            Step { name: "b".into(), from: Duration::from_secs(2), to: Duration::from_secs(4) },
        ];
        let (table, non_ok) = report(&steps, &[call(0, None, false), call(1, None, true), call(3, Some("Unavailable: x"), false)]);
        assert_eq!(non_ok, 1);
        assert!(table.contains("| a | 2.0 | 2 | 0 | 1 | 10.0 |"), "{table}");
        assert!(table.contains("| b | 2.0 | 1 | 1 | 0 | 30.0 |"), "{table}");
        assert!(table.contains("Unavailable: x"), "{table}");
    }
}
