//! `cargo xtask bench [--quick]`: the side-by-side benchmark. Starts the local stack in
//! release mode on free ports, then drives the same Authorize load (same concurrency and
//! duration, unique idempotency keys) three ways in one run:
//!
//! - `grpc-direct`: straight at the payments instances (the client routes by shard, so the
//!   backends are the same four as behind the edge);
//! - `grpc-edge`: gRPC through the edge;
//! - `grpc-nginx`: gRPC through Debian's nginx (`grpc_pass`) as the peer proxy; nginx is
//!   not shard-aware, so the client names the shard in a header that nginx maps to the
//!   shard's upstream group;
//! - `rest-edge`: REST/JSON through the edge (transcoded);
//! - `flow-rest-edge`: the seeds' full flow, authorize -> capture -> refund over REST
//!   through the edge, timed as one unit;
//! - `reads-edge`: GetPayment through the edge (gRPC), the read path;
//! - `pgbench`: the database ceiling, pgbench running Authorize's statements
//!   (`bench/authorize.pgbench.sql`) against both shards with the same number of clients.
//!
//! Rounds alternate the modes, and the report quotes medians across rounds, with the CPU
//! seconds each kind of process used, since this machine is shared and noisy.
//!
//! Then group commit (issue 14): a latency/throughput curve of Authorize through the edge at
//! concurrency 1, 8, 32, 128 and 512, and the same stack restarted with
//! `[payments.group_commit] enabled = false` for `grpc-direct`, `grpc-edge`,
//! `flow-rest-edge` and the curve again, side by side; and a CPU profile of the whole
//! machine during one more run through the edge ([`crate::bench_profile`]).

use std::path::Path;

use paymesh_testkit::port::free_port;

use crate::stack::Stack;

const MODES: [&str; 7] = ["grpc-direct", "grpc-edge", "grpc-nginx", "rest-edge", "flow-rest-edge", "reads-edge", "pgbench"];

/// The per-API-key limit (requests per second, and burst) of the overload scenario. Only
/// requests carrying `x-api-key` are limited, so the side-by-side modes are not.
const OVERLOAD_LIMIT: u32 = 100;

#[derive(Clone, Copy)]
struct Settings {
    rounds: usize,
    concurrency: usize,
    warmup: &'static str,
    duration: &'static str,
}

/// One mode's result in one round.
#[derive(Clone, Debug)]
struct Sample {
    rps: f64,
    p50: f64,
    p90: f64,
    p95: f64,
    p99: f64,
    count: u64,
    errors: u64,
    cpu_edge: f64,
    cpu_payments: f64,
    cpu_postgres: f64,
    cpu_machine: f64,
}

pub async fn run(quick: bool, edge_section: &str) -> Result<(), String> {
    let s = if quick {
        Settings { rounds: 1, concurrency: 32, warmup: "1s", duration: "5s" }
    } else {
        Settings { rounds: 3, concurrency: 32, warmup: "2s", duration: "15s" }
    };
    println!("==> building the load generator (release)");
    let status = tokio::process::Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--release", "-p", "paymesh-bench"])
        .current_dir(crate::root())
        .status()
        .await
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err("building paymesh-bench failed".into());
    }
    let dir = crate::root().join(".paymesh/bench");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let config = dir.join("paymesh.toml");
    std::fs::write(&config, bench_config()?).map_err(|e| e.to_string())?;
    // nginx is the comparison, not the subject: without it (not root, no package) the
    // other paths still run and the report says why its row is missing.
    let nginx_bin = crate::install::nginx();
    let stack = Stack::start(&config, &dir, true).await?;
    let nginx = match nginx_bin {
        Ok(bin) => Nginx::start(&bin, &stack, &dir.join("nginx")).await,
        Err(e) => Err(e),
    };
    if let Err(e) = &nginx {
        println!("==> skipping the grpc-nginx path: {e}");
    }
    let outcome = measure(&stack, nginx.as_ref().ok(), &s).await;
    if let Ok(n) = nginx {
        n.stop().await;
    }
    let overloaded = if outcome.is_ok() { overload(&stack, &s).await } else { Ok(String::new()) };
    let curve_on = if outcome.is_ok() { curve(&stack, &s).await } else { Ok(Vec::new()) };
    let profiled = if outcome.is_ok() { profile(&stack, &s, &dir).await } else { Ok(String::new()) };
    let stopped = stack.stop().await;
    let samples = outcome?;
    let overloaded = overloaded?;
    let curve_on = curve_on?;
    let profiled = profiled?;
    stopped?;

    // The same stack with group commit off, for the side-by-side rows.
    println!("==> the stack again with group commit off");
    let off_dir = dir.join("group-commit-off");
    std::fs::create_dir_all(&off_dir).map_err(|e| e.to_string())?;
    let off_config = off_dir.join("paymesh.toml");
    std::fs::write(&off_config, bench_config()?.replace("[payments]\n", "[payments]\ngroup_commit = { enabled = false }\n"))
        .map_err(|e| e.to_string())?;
    let off_stack = Stack::start(&off_config, &off_dir, true).await?;
    let off = measure_modes(&off_stack, None, &s, &GROUP_COMMIT_MODES).await;
    let curve_off = if off.is_ok() { curve(&off_stack, &s).await } else { Ok(Vec::new()) };
    let stopped = off_stack.stop().await;
    let off = off?;
    let curve_off = curve_off?;
    stopped?;
    let group_commit = group_commit_section(&s, &samples, &off, &curve_on, &curve_off);
    report(&s, &samples, &format!("{group_commit}\n{profiled}\n{overloaded}\n{edge_section}"))
}

/// The modes run again with group commit off.
const GROUP_COMMIT_MODES: [&str; 3] = ["grpc-direct", "grpc-edge", "flow-rest-edge"];

/// A CPU profile of the whole machine during one more run of Authorize through the edge.
async fn profile(stack: &Stack, s: &Settings, dir: &Path) -> Result<String, String> {
    println!("==> profiling Authorize through the edge (perf record, every CPU)");
    let at = Settings { rounds: 1, ..*s };
    let seconds = s.duration.trim_end_matches('s').parse::<u64>().map_err(|e| format!("duration {}: {e}", s.duration))?;
    crate::bench_profile::during(dir, seconds, measure_modes(stack, None, &at, &["grpc-edge"])).await
}

/// The concurrency levels of the latency/throughput curve.
const CURVE: [usize; 5] = [1, 8, 32, 128, 512];

/// Authorize through the edge at each level of [`CURVE`], one run each.
async fn curve(stack: &Stack, s: &Settings) -> Result<Vec<(usize, Sample)>, String> {
    let mut out = Vec::new();
    for c in CURVE {
        let at = Settings { concurrency: c, rounds: 1, ..*s };
        let sample = measure_modes(stack, None, &at, &["grpc-edge"]).await?;
        if let Some((_, _, x)) = sample.into_iter().next() {
            println!("      curve c={c}: {:.0} calls/s, p99 {:.2} ms", x.rps, x.p99);
            out.push((c, x));
        }
    }
    Ok(out)
}

/// Group commit on (the main run) vs off, the curve, and the targets.
fn group_commit_section(
    s: &Settings,
    on: &[(usize, &'static str, Sample)],
    off: &[(usize, &'static str, Sample)],
    curve_on: &[(usize, Sample)],
    curve_off: &[(usize, Sample)],
) -> String {
    let med = |v: &[(usize, &'static str, Sample)], mode: &str, f: fn(&Sample) -> f64| {
        let xs: Vec<f64> = v.iter().filter(|(_, m, _)| *m == mode).map(|(_, _, x)| f(x)).collect();
        if xs.is_empty() { f64::NAN } else { median(xs) }
    };
    let mut out = format!(
        "## Group commit (issue 14)\n\nThe same load with `[payments.group_commit]` on (the table above) and off (the stack restarted with `enabled = false`), concurrency {}, {} round(s) each; payments CPU per call = the four payments processes' CPU time / calls.\n\n| path | on req/s | off req/s | on / off | on p99 ms | off p99 ms | on payments CPU µs/call | off payments CPU µs/call |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
        s.concurrency, s.rounds
    );
    let per_call = |x: &Sample| if x.count > 0 { x.cpu_payments * 1e6 / x.count as f64 } else { f64::NAN };
    for mode in GROUP_COMMIT_MODES {
        let (a, b) = (med(on, mode, |x| x.rps), med(off, mode, |x| x.rps));
        out += &format!(
            "| {mode} | {a:.0} | {b:.0} | {:.2} | {:.2} | {:.2} | {:.0} | {:.0} |\n",
            a / b,
            med(on, mode, |x| x.p99),
            med(off, mode, |x| x.p99),
            med(on, mode, per_call),
            med(off, mode, per_call)
        );
    }
    out += "\nAuthorize through the edge by concurrency (one run per point):\n\n| concurrency | on req/s | on p50 ms | on p99 ms | off req/s | off p50 ms | off p99 ms |\n|---:|---:|---:|---:|---:|---:|---:|\n";
    for (c, a) in curve_on {
        let b = curve_off.iter().find(|(d, _)| d == c).map(|(_, x)| x.clone());
        let (brps, bp50, bp99) = b.map_or((f64::NAN, f64::NAN, f64::NAN), |x| (x.rps, x.p50, x.p99));
        out += &format!("| {c} | {:.0} | {:.2} | {:.2} | {brps:.0} | {bp50:.2} | {bp99:.2} |\n", a.rps, a.p50, a.p99);
    }
    let edge = med(on, "grpc-edge", |x| x.rps);
    let ceiling = med(on, "pgbench", |x| x.rps);
    let edge_cpu = med(on, "grpc-edge", per_call);
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    out += &format!(
        "\nTargets (issue 14):\n- Authorize through the edge >= 1.5x the pgbench ceiling (one transaction each): {edge:.0} vs {ceiling:.0} ({:.2}x): {}\n- Authorize through the edge >= 3,000/s (goal 5,000/s): {edge:.0}/s: {}\n- p99 at concurrency {} no worse than with group commit off: {:.2} vs {:.2} ms: {}\n- payments CPU per Authorize <= 200 µs: {edge_cpu:.0} µs: {}\n",
        edge / ceiling,
        met(edge >= 1.5 * ceiling),
        met(edge >= 3000.0),
        s.concurrency,
        med(on, "grpc-edge", |x| x.p99),
        med(off, "grpc-edge", |x| x.p99),
        met(med(on, "grpc-edge", |x| x.p99) <= med(off, "grpc-edge", |x| x.p99)),
        met(edge_cpu <= 200.0),
    );
    out
}

fn bench_config() -> Result<String, String> {
    let port = || free_port().map_err(|e| format!("no free port: {e}"));
    let mut text = String::new();
    for i in 0..2 {
        text += &format!("[[shards]]\nid = {i}\ndatabase_url = \"postgres://postgres@127.0.0.1:{}/paymesh\"\npool_size = 16\n\n", port()?);
    }
    text += "[payments]\n\n";
    for (i, name) in ["payments-0a", "payments-0b", "payments-1a", "payments-1b"].iter().enumerate() {
        text += &format!("[[payments.instances]]\nname = \"{name}\"\nshard = {}\nlisten = \"127.0.0.1:{}\"\n\n", i / 2, port()?);
    }
    text += &format!(
        "[edge]\nlisten = \"127.0.0.1:{}\"\nadmin_listen = \"127.0.0.1:{}\"\nthreads = 2\n\n[[edge.clusters]]\nname = \"payments\"\npayments_instances = true\n\n\
         [[edge.routes]]\nservice = \"payments.v1.Payments\"\ncluster = \"payments\"\n\
         shard_keys = [{{ field = \"merchant_id\", kind = \"merchant\", header = \"x-merchant-id\" }}, {{ field = \"payment_id\", kind = \"sharded_id\" }}]\n\
         [edge.routes.rate_limit]\nper_key = {{ rate = {OVERLOAD_LIMIT}, burst = {OVERLOAD_LIMIT}, header = \"x-api-key\", by_merchant = false }}\n",
        port()?,
        port()?
    );
    Ok(text)
}

async fn measure(stack: &Stack, nginx: Option<&Nginx>, s: &Settings) -> Result<Vec<(usize, &'static str, Sample)>, String> {
    measure_modes(stack, nginx, s, &MODES).await
}

/// [`measure`] for some of the modes.
async fn measure_modes(
    stack: &Stack,
    nginx: Option<&Nginx>,
    s: &Settings,
    modes: &[&'static str],
) -> Result<Vec<(usize, &'static str, Sample)>, String> {
    let edge = stack.config.edge.as_ref().ok_or("bench config has an edge")?;
    let bin = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .parent()
        .and_then(Path::parent)
        .ok_or("no target dir")?
        .join("release/paymesh-bench");
    let mut out = Vec::new();
    for round in 1..=s.rounds {
        for &mode in modes {
            if mode == "grpc-nginx" && nginx.is_none() {
                continue;
            }
            if mode == "pgbench" {
                let before = cpu(stack);
                let j = pgbench(stack, s, &format!("r{round}")).await?;
                let after = cpu(stack);
                out.push((round, mode, sample_of(&j, before, after)));
                print_sample(round, mode, &out[out.len() - 1].2);
                continue;
            }
            let mut cmd = tokio::process::Command::new(&bin);
            cmd.args([
                "--mode",
                mode,
                "-c",
                &s.concurrency.to_string(),
                "-z",
                s.duration,
                "--warmup",
                s.warmup,
                "--run-id",
                &format!("r{round}-{mode}-{}", std::process::id()),
            ]);
            if mode == "grpc-direct" {
                for inst in &stack.config.payments.instances {
                    cmd.args(["--shard-addr", &format!("{}={}", inst.shard.0, inst.listen)]);
                }
            } else if let (true, Some(nginx)) = (mode == "grpc-nginx", nginx) {
                cmd.args(["--addr", &nginx.listen.to_string(), "--shards", &stack.config.shards.len().to_string()]);
            } else {
                cmd.args(["--addr", &edge.listen.to_string()]);
            }
            let before = cpu(stack);
            let output = cmd.output().await.map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
            let after = cpu(stack);
            if !output.status.success() {
                return Err(format!("{mode}: {}", String::from_utf8_lossy(&output.stderr)));
            }
            let json: serde_json::Value = serde_json::from_slice(&output.stdout).map_err(|e| format!("{mode}: bad output: {e}"))?;
            let sample = sample_of(&json, before, after);
            print_sample(round, mode, &sample);
            if sample.errors > 0 {
                println!("      outcomes: {}", json["statusCodeDistribution"]);
            }
            out.push((round, mode, sample));
        }
    }
    Ok(out)
}

/// Debian's nginx as a gRPC proxy, on a free port.
pub(crate) struct Nginx {
    pub(crate) listen: std::net::SocketAddr,
    child: tokio::process::Child,
}

impl Nginx {
    /// nginx in front of the same payments instances, mapping the client's shard header
    /// to the shard's upstream group.
    async fn start(bin: &Path, stack: &Stack, dir: &Path) -> Result<Self, String> {
        let port = free_port().map_err(|e| format!("no free port: {e}"))?;
        let listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let mut upstreams = String::new();
        let mut map = String::new();
        for shard in &stack.config.shards {
            let id = shard.id.0;
            upstreams += &format!("    upstream shard{id} {{\n");
            for inst in stack.config.payments.instances.iter().filter(|i| i.shard == shard.id) {
                upstreams += &format!("        server {};\n", inst.listen);
            }
            upstreams += "        keepalive 64;\n        keepalive_requests 1000000;\n    }\n";
            map += &format!("        {id} shard{id};\n");
        }
        let http = format!(
            "{upstreams}    map $http_x_paymesh_shard $shard_upstream {{\n        default shard0;\n{map}    }}\n\
                 server {{\n        listen {listen} http2;\n        # The default (1000 requests per connection, then GOAWAY) fails in-flight calls of\n        # a busy multiplexed client; a gRPC proxy keeps its connections.\n        keepalive_requests 1000000;\n        location / {{ grpc_pass grpc://$shard_upstream; }}\n    }}\n"
        );
        Self::start_with(bin, dir, listen, &http).await
    }

    /// nginx with `http` as the body of its `http { }` block, listening on `listen`.
    pub(crate) async fn start_with(bin: &Path, dir: &Path, listen: std::net::SocketAddr, http: &str) -> Result<Self, String> {
        std::fs::create_dir_all(dir.join("tmp")).map_err(|e| e.to_string())?;
        let d = dir.display();
        let conf = format!(
            "daemon off;\nworker_processes 2;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\nevents {{ worker_connections 4096; }}\n\
             http {{\n    access_log off;\n    client_body_temp_path {d}/tmp/body;\n    proxy_temp_path {d}/tmp/proxy;\n    fastcgi_temp_path {d}/tmp/fastcgi;\n    uwsgi_temp_path {d}/tmp/uwsgi;\n    scgi_temp_path {d}/tmp/scgi;\n{http}}}\n"
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).map_err(|e| e.to_string())?;
        let mut program = crate::supervise::Program::new(bin, ["-p".into(), dir.as_os_str().to_owned()]);
        program.args.extend(["-e".into(), dir.join("error.log").into(), "-c".into(), conf_path.clone().into()]);
        let child = program.spawn().await?;
        let mut nginx = Self { listen, child };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while tokio::net::TcpStream::connect(listen).await.is_err() {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
                return Err(format!("nginx exited ({status}):\n{log}"));
            }
            if std::time::Instant::now() > deadline {
                nginx.stop().await;
                return Err(format!("nginx did not listen on {listen} within 20 s; see {}", dir.join("error.log").display()));
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        println!("==> nginx (grpc_pass) on {listen}");
        Ok(nginx)
    }

    pub(crate) async fn stop(mut self) {
        // SIGQUIT is nginx's graceful shutdown; kill if it lingers.
        if let Some(pid) = self.child.id() {
            let _ = tokio::process::Command::new("kill").args(["-QUIT", &pid.to_string()]).status().await;
        }
        if tokio::time::timeout(std::time::Duration::from_secs(10), self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }
}

fn sample_of(json: &serde_json::Value, before: (f64, f64, f64, f64), after: (f64, f64, f64, f64)) -> Sample {
    let f = |k: &str| json[k].as_f64().unwrap_or(0.0);
    Sample {
        rps: f("rps"),
        p50: f("p50_ms"),
        p90: f("p90_ms"),
        p95: f("p95_ms"),
        p99: f("p99_ms"),
        count: json["count"].as_u64().unwrap_or(0),
        errors: json["errors"].as_u64().unwrap_or(0),
        cpu_edge: after.0 - before.0,
        cpu_payments: after.1 - before.1,
        cpu_postgres: after.2 - before.2,
        cpu_machine: after.3 - before.3,
    }
}

fn print_sample(round: usize, mode: &str, s: &Sample) {
    println!(
        "    round {round} {mode:<14} {:>8.0} /s  p50 {:>6.2} ms  p99 {:>7.2} ms  errors {}  cpu s: edge {:.1} payments {:.1} postgres {:.1}",
        s.rps, s.p50, s.p99, s.errors, s.cpu_edge, s.cpu_payments, s.cpu_postgres
    );
}

/// The database ceiling: one pgbench per shard, together `concurrency` clients, for the
/// same duration, running Authorize's statements. The summary has the load tool's fields
/// (rps = transactions per second over both shards, percentiles from pgbench's per-transaction log).
async fn pgbench(stack: &Stack, s: &Settings, tag: &str) -> Result<serde_json::Value, String> {
    let bin = paymesh_testkit::postgres::find_bindir().map_err(|e| e.to_string())?.join("pgbench");
    let script = crate::root().join("bench/authorize.pgbench.sql");
    let secs = paymesh_core::duration::parse(s.duration)?.as_secs().max(1);
    let logs = crate::root().join(".paymesh/bench/pgbench").join(tag);
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs).map_err(|e| e.to_string())?;
    let shards = stack.config.shards.len().max(1);
    let clients = (s.concurrency / shards).max(1);
    let mut runs = Vec::new();
    for shard in &stack.config.shards {
        let mut cmd = tokio::process::Command::new(&bin);
        cmd.args(["-n", "-M", "prepared", "-c", &clients.to_string(), "-j", "1", "-T", &secs.to_string()])
            .arg("-f")
            .arg(&script)
            .arg("-l")
            .arg(format!("--log-prefix={}", logs.join(format!("shard{}", shard.id.0)).display()))
            .arg(&shard.database.url)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        // Spawned together, so the shards are loaded at the same time.
        runs.push(cmd.spawn().map_err(|e| format!("cannot run {}: {e}", bin.display()))?);
    }
    let (mut tps, mut failed) = (0.0, 0u64);
    for run in runs {
        let out = run.wait_with_output().await.map_err(|e| format!("pgbench: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(format!("pgbench failed: {}{}", text, String::from_utf8_lossy(&out.stderr)));
        }
        tps += pgbench_value(&text, "tps = ").ok_or_else(|| format!("no tps in pgbench output:\n{text}"))?;
        failed += pgbench_value(&text, "number of failed transactions: ").unwrap_or(0.0) as u64;
    }
    let mut lat_us: Vec<u64> = Vec::new();
    for entry in std::fs::read_dir(&logs).map_err(|e| e.to_string())?.flatten() {
        let text = std::fs::read_to_string(entry.path()).map_err(|e| e.to_string())?;
        // client_id transaction_no latency_us script_no epoch epoch_us
        lat_us.extend(text.lines().filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok()));
    }
    lat_us.sort_unstable();
    let p = |q: f64| lat_us.get(((q / 100.0 * lat_us.len() as f64).ceil() as usize).saturating_sub(1)).map_or(0.0, |v| *v as f64 / 1_000.0);
    Ok(serde_json::json!({
        "rps": tps, "count": lat_us.len(), "errors": failed,
        "p50_ms": p(50.0), "p90_ms": p(90.0), "p95_ms": p(95.0), "p99_ms": p(99.0),
    }))
}

/// The number after `label` on pgbench's summary line, e.g. `tps = 1234.5 (without ...)`.
fn pgbench_value(text: &str, label: &str) -> Option<f64> {
    text.lines().find_map(|l| l.trim_start().strip_prefix(label)?.split_whitespace().next()?.parse().ok())
}

/// One paced REST run with an API key: (offered rps, summary JSON).
async fn paced(stack: &Stack, bin: &Path, s: &Settings, rps: u32, concurrency: usize, key: &str) -> Result<serde_json::Value, String> {
    let edge = stack.config.edge.as_ref().ok_or("bench config has an edge")?;
    let out = tokio::process::Command::new(bin)
        .args([
            "--mode",
            "rest-edge",
            "--addr",
            &edge.listen.to_string(),
            "-c",
            &concurrency.to_string(),
            "-z",
            s.duration,
            "--warmup",
            s.warmup,
        ])
        .args([
            "--rps",
            &rps.to_string(),
            "--header",
            &format!("x-api-key={key}"),
            "--run-id",
            &format!("overload-{key}-{}", std::process::id()),
        ])
        .output()
        .await
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("overload run: {}", String::from_utf8_lossy(&out.stderr)));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("overload run: bad output: {e}"))
}

/// The overload scenario: one API key at 80 % of its limit, another at 10x, in one run.
async fn overload(stack: &Stack, s: &Settings) -> Result<String, String> {
    let bin = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .parent()
        .and_then(Path::parent)
        .ok_or("no target dir")?
        .join("release/paymesh-bench");
    let under = paced(stack, &bin, s, OVERLOAD_LIMIT * 8 / 10, 16, "tenant-under").await?;
    let over = paced(stack, &bin, s, OVERLOAD_LIMIT * 10, 64, "tenant-over").await?;
    let mut table = String::from(
        "| run | offered req/s | admitted req/s | 429 share | admitted p50 ms | admitted p99 ms | other errors |\n|---|---:|---:|---:|---:|---:|---:|\n",
    );
    let duration = paymesh_core::duration::parse(s.duration).map(|d| d.as_secs_f64()).unwrap_or(1.0);
    for (name, rps, j) in [("80 % of the limit", OVERLOAD_LIMIT * 8 / 10, &under), ("10x the limit", OVERLOAD_LIMIT * 10, &over)] {
        let count = j["count"].as_u64().unwrap_or(0) as f64;
        let dist = &j["statusCodeDistribution"];
        let ok = dist["OK"].as_u64().unwrap_or(0) as f64;
        let limited = dist["HTTP 429"].as_u64().unwrap_or(0) as f64;
        let other = count - ok - limited;
        table += &format!(
            "| {name} | {rps} | {:.1} | {:.1} % | {:.2} | {:.2} | {other} |\n",
            ok / duration,
            if count > 0.0 { limited * 100.0 / count } else { 0.0 },
            j["ok_p50_ms"].as_f64().unwrap_or(0.0),
            j["ok_p99_ms"].as_f64().unwrap_or(0.0),
        );
        println!("    overload {name}: {:.0} sent, {ok} admitted, {limited} limited", count);
    }
    Ok(format!(
        "\n## Overload: one API key at 10x its rate limit\n\nREST Authorize through the edge with `x-api-key`; the route allows {OVERLOAD_LIMIT} req/s per key (burst {OVERLOAD_LIMIT}). Paced (open loop) for {}; the admitted requests' latency under 10x overload next to a run at 80 % of the limit.\n\n{table}",
        s.duration
    ))
}

/// CPU seconds used so far by (edge, all payments instances, all postgres processes, the
/// whole machine).
fn cpu(stack: &Stack) -> (f64, f64, f64, f64) {
    let (edge, payments) = stack.pids();
    // The proxy column: the edge, plus nginx's processes (only busy in the grpc-nginx mode).
    let edge = edge.map(proc_cpu).unwrap_or(0.0) + comm_cpu("nginx");
    let payments = payments.into_iter().map(proc_cpu).sum();
    let postgres = comm_cpu("postgres");
    (edge, payments, postgres, machine_cpu())
}

const TICKS: f64 = 100.0;

/// CPU seconds of a process (utime + stime).
pub(crate) fn proc_cpu(pid: u32) -> f64 {
    stat_seconds(pid, [11, 12])
}

/// The sum of two tick fields of `/proc/<pid>/stat`, in seconds; fields are counted from
/// the state (field 3), after the command name, which may contain spaces.
fn stat_seconds(pid: u32, fields: [usize; 2]) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let values: Vec<&str> = after.split_whitespace().collect();
    fields.iter().map(|i| values.get(*i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)).sum::<f64>() / TICKS
}

/// CPU seconds of every live process named `comm`, with their exited children's (so
/// PostgreSQL's finished backends still count).
pub(crate) fn comm_cpu(comm: &str) -> f64 {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
                .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm))
                .map(|pid| proc_cpu(pid) + reaped_children_cpu(pid))
                .sum()
        })
        .unwrap_or(0.0)
}

/// CPU seconds of a process's children that have exited and been waited for: the
/// postmaster's count of its finished backends (pgbench's connections end with its run).
fn reaped_children_cpu(pid: u32) -> f64 {
    stat_seconds(pid, [13, 14])
}

fn machine_cpu() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else { return 0.0 };
    let Some(line) = stat.lines().next() else { return 0.0 };
    let v: Vec<f64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal: count everything but idle and iowait.
    let busy: f64 = v.iter().enumerate().filter(|(i, _)| *i != 3 && *i != 4).take(8).map(|(_, x)| x).sum();
    busy / TICKS
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

const FOOTNOTE: &str = "A unit is one Authorize, except `flow-rest-edge` (authorize, capture and refund in turn, timed as one flow; HTTP requests/s = 3 x flows/s), `reads-edge` (one GetPayment through the edge) and `pgbench` (one Authorize's statements straight on the shards, no service or edge: the database ceiling; pgbench has no warm-up, and its CPU is in \"postgres\" and \"machine\").";

fn report(s: &Settings, samples: &[(usize, &'static str, Sample)], overloaded: &str) -> Result<(), String> {
    let of = |mode: &str| samples.iter().filter(|(_, m, _)| *m == mode).map(|(_, _, s)| s.clone()).collect::<Vec<_>>();
    let direct_rps = median(of("grpc-direct").iter().map(|x| x.rps).collect());
    let mut table = String::from(
        "| path | req/s | vs direct | p50 ms | p90 ms | p95 ms | p99 ms | requests | errors | CPU s proxy | CPU s payments | CPU s postgres | CPU s machine |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut json = serde_json::Map::new();
    for mode in MODES {
        let v = of(mode);
        if v.is_empty() {
            table += &format!("| {mode} | not run (see the command's output) | | | | | | | | | | | |\n");
            continue;
        }
        let m = |f: fn(&Sample) -> f64| median(v.iter().map(f).collect());
        let rps = m(|x| x.rps);
        json.insert(
            mode.to_owned(),
            serde_json::json!({
                "rps": rps, "p50_ms": m(|x| x.p50), "p90_ms": m(|x| x.p90), "p95_ms": m(|x| x.p95), "p99_ms": m(|x| x.p99),
                "count": v.iter().map(|x| x.count).sum::<u64>(), "errors": v.iter().map(|x| x.errors).sum::<u64>(),
                "cpu_s": { "edge": m(|x| x.cpu_edge), "payments": m(|x| x.cpu_payments), "postgres": m(|x| x.cpu_postgres), "machine": m(|x| x.cpu_machine) },
                "rounds": v.iter().map(|x| x.rps).collect::<Vec<_>>(),
            }),
        );
        let label = match mode {
            "flow-rest-edge" => "flow-rest-edge (flows/s; 3 requests each)",
            "pgbench" => "pgbench (transactions/s)",
            "reads-edge" => "reads-edge (GetPayment)",
            other => other,
        };
        table += &format!(
            "| {label} | {rps:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} |\n",
            if direct_rps > 0.0 { rps / direct_rps } else { 0.0 },
            m(|x| x.p50),
            m(|x| x.p90),
            m(|x| x.p95),
            m(|x| x.p99),
            v.iter().map(|x| x.count).sum::<u64>(),
            v.iter().map(|x| x.errors).sum::<u64>(),
            m(|x| x.cpu_edge),
            m(|x| x.cpu_payments),
            m(|x| x.cpu_postgres),
            m(|x| x.cpu_machine),
        );
    }
    let date = paymesh_core::clock::today();
    let header = format!(
        "# Benchmark {date}\n\nCommand: `cargo xtask bench{}`. Closed loop, concurrency {}, warm-up {}, {} per mode per round, {} round(s) alternating the modes; medians across rounds (requests and errors are totals). Stack: 2 PostgreSQL shards, 2 payments instances per shard, the edge (2 threads), all release builds on this machine ({} cores), load generator on the same machine.\n\n",
        if s.rounds == 1 { " --quick" } else { "" },
        s.concurrency,
        s.warmup,
        s.duration,
        s.rounds,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    let text = format!("{header}{table}\n{FOOTNOTE}\n{overloaded}");
    println!("\n{text}");
    let results = crate::root().join("bench/results");
    let path = write_result("", &text)?;
    let json = serde_json::json!({ "date": date, "quick": s.rounds == 1, "concurrency": s.concurrency, "duration": s.duration, "rounds": s.rounds, "modes": json });
    let json_path = results.join(format!("{date}.json"));
    std::fs::write(&json_path, serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    println!("written to {} and {}", path.display(), json_path.display());
    Ok(())
}

/// Writes a report to `bench/results/<date>[-<suffix>].md` and returns the path.
pub(crate) fn write_result(suffix: &str, text: &str) -> Result<std::path::PathBuf, String> {
    let results = crate::root().join("bench/results");
    std::fs::create_dir_all(&results).map_err(|e| e.to_string())?;
    let date = paymesh_core::clock::today();
    let name = if suffix.is_empty() { format!("{date}.md") } else { format!("{date}-{suffix}.md") };
    let path = results.join(name);
    std::fs::write(&path, text).map_err(|e| e.to_string())?;
    println!("written to {}", path.display());
    Ok(path)
}

#[cfg(test)]
mod tests {
    #[test]
    fn median_of_unsorted_runs() {
        assert_eq!(super::median(vec![3.0, 1.0, 2.0]), 2.0);
    }

    #[test]
    fn reads_pgbench_summary_lines() {
        let out = "number of failed transactions: 3 (0.010%)\nlatency average = 5.1 ms\ntps = 1523.25 (without initial connection time)\n";
        assert_eq!(super::pgbench_value(out, "tps = "), Some(1523.25));
        assert_eq!(super::pgbench_value(out, "number of failed transactions: "), Some(3.0));
        assert_eq!(super::pgbench_value(out, "nothing = "), None);
    }
}
