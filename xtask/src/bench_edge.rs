//! The edge-only section of `cargo xtask bench` (alone: `cargo xtask bench --edge`): what the
//! proxy itself costs per call, with an upstream that does no work (`echo-upstream`, see
//! `bench/src/echo.rs`), so neither a database nor the services hide it.
//!
//! Four paths in one run, same load (closed loop, same concurrency and duration), rounds
//! alternating the paths:
//! - `direct`: gRPC straight at the upstream;
//! - `edge-grpc`: gRPC through the edge (routed by merchant, as Authorize is);
//! - `edge-rest`: REST/JSON through the edge, transcoded to the same call;
//! - `edge-grpc-jwt`: as `edge-grpc`, through a second edge that authenticates callers
//!   (`[edge.auth]`, an EdDSA token on every call): the cost of verifying the token;
//! - `edge-grpc-mtls`: as `edge-grpc`, through a third edge that reaches a second echo
//!   upstream over mTLS (`[mesh_tls]`): the cost of TLS inside the mesh;
//! - `nginx`: gRPC through Debian's nginx `grpc_pass` (not shard-aware: one upstream).
//!
//! Per path: calls/s, p50/p99, and the proxy's CPU per call (its process's CPU time over
//! the run divided by the calls). Then the edge's resident memory with 1,000 open client
//! connections. The targets of issue 11 are checked and printed with the figures.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use paymesh_testkit::port::free_port;

use crate::bench::{Nginx, comm_cpu, median, proc_cpu};
use crate::supervise::Program;

const PATHS: [&str; 6] = ["direct", "edge-grpc", "edge-grpc-jwt", "edge-grpc-mtls", "edge-rest", "nginx"];
const CONCURRENCY: usize = 32;
const OPEN_CONNECTIONS: usize = 1_000;

struct Round {
    path: &'static str,
    rps: f64,
    p50: f64,
    p99: f64,
    count: u64,
    errors: u64,
    /// CPU seconds the proxy process used over the run (0 for `direct`).
    proxy_cpu: f64,
}

/// Runs the section and returns its report (Markdown).
pub async fn run(quick: bool) -> Result<String, String> {
    let (rounds, duration) = if quick { (1, "5s") } else { (3, "10s") };
    let bin = build().await?;
    let dir = crate::root().join(".paymesh/bench-edge");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let port = || free_port().map(|p| SocketAddr::from(([127, 0, 0, 1], p))).map_err(|e| format!("no free port: {e}"));
    let (echo_addr, edge_addr, admin_addr) = (port()?, port()?, port()?);
    let descriptors = dir.join("echo.binpb");

    let mut echo = Program::new(bin.join("echo-upstream"), ["--listen".to_owned(), echo_addr.to_string()]);
    echo.args.extend(["--descriptor-set-out".into(), descriptors.clone().into()]);
    echo.log = Some(dir.join("echo.log"));
    let mut echo = echo.spawn().await?;
    wait_listening(echo_addr, "echo-upstream").await?;

    let (mut edge, edge_pid) =
        start_edge(&bin, &dir, "edge", &edge_config(echo_addr, edge_addr, admin_addr, &descriptors, None), admin_addr).await?;
    // The same edge with authentication on, and a token for the load to send.
    let issuer = crate::local_auth::LocalIssuer::ensure(&dir.join("auth"))?;
    let token = issuer.mint("bench", Some("merchant-1"), &["payments:write".into()], Duration::from_secs(3600))?;
    let (jwt_addr, jwt_admin) = (port()?, port()?);
    let jwt_config = edge_config(echo_addr, jwt_addr, jwt_admin, &descriptors, Some(&issuer.jwks));
    let (mut jwt_edge, jwt_pid) = start_edge(&bin, &dir, "edge-jwt", &jwt_config, jwt_admin).await?;

    // mTLS: a second echo upstream serving mTLS only, and an edge with [mesh_tls] before it.
    let certs = dir.join("certs");
    let ca = paymesh_testkit::certs::MeshCa::load_or_create(&certs, "Paymesh bench mesh CA")?;
    for name in ["echo", "edge"] {
        ca.write_issued(&certs, name)?;
    }
    let tls_echo_addr = port()?;
    let mut tls_echo = Program::new(bin.join("echo-upstream"), ["--listen".to_owned(), tls_echo_addr.to_string()]);
    tls_echo.args.extend(["--mtls".into(), certs.clone().into()]);
    tls_echo.log = Some(dir.join("echo-mtls.log"));
    let mut tls_echo = tls_echo.spawn().await?;
    wait_listening(tls_echo_addr, "echo-upstream (mTLS)").await?;
    let (mtls_addr, mtls_admin) = (port()?, port()?);
    let mtls_config = format!(
        "{}\n[mesh_tls]\nca = \"{}\"\ndir = \"{}\"\n",
        edge_config(tls_echo_addr, mtls_addr, mtls_admin, &descriptors, None),
        certs.join("ca.pem").display(),
        certs.display()
    );
    let (mut mtls_edge, mtls_pid) = start_edge(&bin, &dir, "edge-mtls", &mtls_config, mtls_admin).await?;

    let nginx = match crate::install::nginx() {
        Ok(nginx_bin) => {
            let listen = port()?;
            let http = format!(
                "    upstream echo {{\n        server {echo_addr};\n        keepalive 64;\n        keepalive_requests 1000000;\n    }}\n\
                     server {{\n        listen {listen} http2;\n        keepalive_requests 1000000;\n        location / {{ grpc_pass grpc://echo; }}\n    }}\n"
            );
            Nginx::start_with(&nginx_bin, &dir.join("nginx"), listen, &http).await
        }
        Err(e) => Err(e),
    };
    if let Err(e) = &nginx {
        println!("==> skipping the nginx path: {e}");
    }

    let load = bin.join("paymesh-bench");
    let mut results = Vec::new();
    let mut failure = None;
    'rounds: for round in 1..=rounds {
        for path in PATHS {
            let (target, pid, headers) = match (path, &nginx) {
                ("direct", _) => (echo_addr, 0, vec![]),
                ("nginx", Ok(n)) => (n.listen, 0, vec![]),
                ("nginx", Err(_)) => continue,
                ("edge-grpc-jwt", _) => (jwt_addr, jwt_pid, vec![format!("authorization=Bearer {token}")]),
                ("edge-grpc-mtls", _) => (mtls_addr, mtls_pid, vec![]),
                _ => (edge_addr, edge_pid, vec![]),
            };
            match measure(&load, &descriptors, path, target, duration, pid, &headers).await {
                Ok(r) => {
                    println!(
                        "    round {round} {path:<10} {:>8.0} calls/s  p50 {:>6.2} ms  p99 {:>6.2} ms  errors {}  proxy CPU {:>6.1} µs/call",
                        r.rps,
                        r.p50,
                        r.p99,
                        r.errors,
                        per_call_us(r.proxy_cpu, r.count)
                    );
                    results.push(r);
                }
                Err(e) => {
                    failure = Some(e);
                    break 'rounds;
                }
            }
        }
    }
    let rss = if failure.is_none() { resident_with_connections(edge_pid, edge_addr).await } else { Ok((0, 0)) };

    if let Ok(n) = nginx {
        n.stop().await;
    }
    for child in [&mut edge, &mut jwt_edge, &mut mtls_edge, &mut echo, &mut tls_echo] {
        if let Some(pid) = child.id() {
            let _ = crate::supervise::kill(pid, crate::supervise::Signal::Term);
        }
        if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
            let _ = child.kill().await;
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(report(quick, rounds, duration, &results, rss?))
}

async fn build() -> Result<PathBuf, String> {
    println!("==> building the edge and the bench tools (release)");
    let status = tokio::process::Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--release", "-p", "paymesh-edge", "-p", "paymesh-bench"])
        .current_dir(crate::root())
        .status()
        .await
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err("building the edge or the bench tools failed; see the errors above".into());
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let target = exe.parent().and_then(Path::parent).ok_or("cannot locate the target directory")?;
    Ok(target.join("release"))
}

fn edge_config(echo: SocketAddr, edge: SocketAddr, admin: SocketAddr, descriptors: &Path, auth_jwks: Option<&Path>) -> String {
    // The mesh config needs shards and payments instances; this run uses neither.
    let auth = auth_jwks.map(crate::local_auth::edge_auth_section).unwrap_or_default();
    format!(
        r#"[[shards]]
id = 0
database_url = "postgres://unused@127.0.0.1:1/none"

[[payments.instances]]
name = "unused"
shard = 0
listen = "127.0.0.1:1"

[edge]
listen = "{edge}"
admin_listen = "{admin}"
threads = {threads}
descriptor_sets = ["{descriptors}"]

[edge.health]
interval = "1s"

[[edge.clusters]]
name = "echo"
endpoints = [{{ name = "echo", address = "{echo}", shard = 0 }}]

[[edge.routes]]
service = "paymesh.bench.v1.Echo"
cluster = "echo"
shard_keys = [{{ field = "merchant_id", kind = "merchant", header = "x-merchant-id" }}]

{auth}
"#,
        descriptors = descriptors.display(),
        threads = edge_threads()
    )
}

/// Writes `<name>.toml` and starts an edge on it; returns it once its admin API says ready.
async fn start_edge(bin: &Path, dir: &Path, name: &str, config: &str, admin: SocketAddr) -> Result<(tokio::process::Child, u32), String> {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config).map_err(|e| e.to_string())?;
    let mut edge = Program::new(bin.join("edge"), ["--config".to_owned(), path.display().to_string()]);
    edge.log = Some(dir.join(format!("{name}.log")));
    edge.env.push(("RUST_LOG".into(), "warn".into()));
    let child = edge.spawn().await?;
    let pid = child.id().ok_or_else(|| format!("{name} exited at once; see .paymesh/bench-edge/{name}.log"))?;
    wait_ready(admin).await?;
    Ok((child, pid))
}

/// The edge's worker threads: 2 (as nginx's workers), or `PAYMESH_BENCH_EDGE_THREADS`.
fn edge_threads() -> String {
    std::env::var("PAYMESH_BENCH_EDGE_THREADS").ok().filter(|t| t.parse::<u32>().is_ok_and(|n| n > 0)).unwrap_or_else(|| "2".into())
}

async fn wait_listening(addr: SocketAddr, what: &str) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if tokio::time::Instant::now() > deadline {
            return Err(format!("{what} did not listen on {addr} within 20 s; see .paymesh/bench-edge/"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn wait_ready(admin: SocketAddr) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((200, _)) = crate::probe::http(admin, "GET", "/ready", None).await {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err("the edge was not ready within 30 s; see .paymesh/bench-edge/edge.log".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One run of one path.
async fn measure(
    load: &Path,
    descriptors: &Path,
    path: &'static str,
    target: SocketAddr,
    duration: &str,
    proxy_pid: u32,
    headers: &[String],
) -> Result<Round, String> {
    let mut cmd = tokio::process::Command::new(load);
    let data = r#"{"merchantId":"merchant-{{mod .RequestNumber 1000}}","amount":"1000","currency":"KRW","note":"bench"}"#;
    if path == "edge-rest" {
        cmd.args(["--rest", "POST:/v1/echo/merchant-1"]);
    } else {
        cmd.args(["--call", "paymesh.bench.v1.Echo/Echo", "--protoset"]).arg(descriptors);
    }
    // No warm-up: the proxy's CPU is read over the whole run, so every call must count.
    for h in headers {
        cmd.args(["--header", h]);
    }
    cmd.args(["-d", data, "-c", &CONCURRENCY.to_string(), "-z", duration, "--warmup", "0s", &target.to_string()]);
    let proxy_cpu = || match path {
        "edge-grpc" | "edge-rest" | "edge-grpc-jwt" | "edge-grpc-mtls" => proc_cpu(proxy_pid),
        "nginx" => comm_cpu("nginx"),
        _ => 0.0,
    };
    let before = proxy_cpu();
    let out = cmd.output().await.map_err(|e| format!("cannot run {}: {e}", load.display()))?;
    let after = proxy_cpu();
    if !out.status.success() {
        return Err(format!("{path}: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("{path}: bad report: {e}"))?;
    let count = j["count"].as_u64().unwrap_or(0);
    let ok = j["statusCodeDistribution"]["OK"].as_u64().unwrap_or(0);
    let pct = |p: u64| {
        j["latencyDistribution"]
            .as_array()
            .and_then(|d| d.iter().find(|x| x["percentage"].as_u64() == Some(p)))
            .and_then(|x| x["latency"].as_f64())
            .map_or(0.0, |ns| ns / 1e6)
    };
    if ok < count {
        println!("      outcomes: {}", j["statusCodeDistribution"]);
    }
    Ok(Round {
        path,
        rps: j["rps"].as_f64().unwrap_or(0.0),
        p50: pct(50),
        p99: pct(99),
        count,
        errors: count - ok,
        proxy_cpu: after - before,
    })
}

fn per_call_us(cpu_s: f64, calls: u64) -> f64 {
    if calls == 0 { 0.0 } else { cpu_s * 1e6 / calls as f64 }
}

/// The edge's resident memory (KiB) before and with `OPEN_CONNECTIONS` HTTP/2 client
/// connections open (each has sent the connection preface and its settings).
async fn resident_with_connections(pid: u32, edge: SocketAddr) -> Result<(u64, u64), String> {
    use tokio::io::AsyncWriteExt;
    let before = rss_kib(pid)?;
    let mut open = Vec::with_capacity(OPEN_CONNECTIONS);
    for _ in 0..OPEN_CONNECTIONS {
        let mut c = tokio::net::TcpStream::connect(edge).await.map_err(|e| format!("connection {}: {e}", open.len()))?;
        // Preface, then an empty SETTINGS frame.
        c.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").await.map_err(|e| e.to_string())?;
        open.push(c);
    }
    // Every connection has been accepted and set up once the edge has answered a request
    // sent on the last one's heels.
    let _ = crate::probe::http(edge, "GET", "/no-such-route", None).await;
    let with = rss_kib(pid)?;
    drop(open);
    Ok((before, with))
}

fn rss_kib(pid: u32) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| format!("edge status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:")?.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| "no VmRSS in the edge's status".into())
}

fn report(quick: bool, rounds: usize, duration: &str, results: &[Round], (rss_before, rss_with): (u64, u64)) -> String {
    let of = |p: &str| results.iter().filter(|r| r.path == p).collect::<Vec<_>>();
    let m = |p: &str, f: fn(&Round) -> f64| median(of(p).iter().map(|r| f(r)).collect());
    let cpu_us = |p: &str| median(of(p).iter().map(|r| per_call_us(r.proxy_cpu, r.count)).collect());
    let direct = m("direct", |r| r.rps);
    let mut table = String::from(
        "| path | calls/s | vs direct | p50 ms | p99 ms | calls | errors | proxy CPU µs/call |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for p in PATHS {
        let v = of(p);
        if v.is_empty() {
            table += &format!("| {p} | not run (see the command's output) | | | | | | |\n");
            continue;
        }
        let rps = m(p, |r| r.rps);
        table += &format!(
            "| {p} | {rps:.0} | {:.2} | {:.2} | {:.2} | {} | {} | {} |\n",
            if direct > 0.0 { rps / direct } else { 0.0 },
            m(p, |r| r.p50),
            m(p, |r| r.p99),
            v.iter().map(|r| r.count).sum::<u64>(),
            v.iter().map(|r| r.errors).sum::<u64>(),
            if p == "direct" { "-".to_owned() } else { format!("{:.1}", cpu_us(p)) },
        );
    }
    let check = |ok: bool| if ok { "met" } else { "NOT met" };
    let (grpc_cpu, rest_cpu, nginx_cpu) = (cpu_us("edge-grpc"), cpu_us("edge-rest"), cpu_us("nginx"));
    let (grpc_rps, nginx_rps) = (m("edge-grpc", |r| r.rps), m("nginx", |r| r.rps));
    let mut targets = String::new();
    if nginx_cpu > 0.0 {
        targets += &format!(
            "- edge CPU per gRPC call <= nginx's: {grpc_cpu:.1} vs {nginx_cpu:.1} µs ({:.2}x; goal 0.5x): {}\n",
            grpc_cpu / nginx_cpu,
            check(grpc_cpu <= nginx_cpu)
        );
        targets += &format!(
            "- edge throughput >= nginx's: {grpc_rps:.0} vs {nginx_rps:.0} calls/s ({:.2}x): {}\n",
            grpc_rps / nginx_rps,
            check(grpc_rps >= nginx_rps)
        );
    }
    let mtls_cpu = cpu_us("edge-grpc-mtls");
    if grpc_cpu > 0.0 && mtls_cpu > 0.0 {
        targets += &format!(
            "- mTLS to the upstream: {mtls_cpu:.1} vs {grpc_cpu:.1} µs per call ({:+.1} µs, {:.2}x)\n",
            mtls_cpu - grpc_cpu,
            mtls_cpu / grpc_cpu
        );
    }
    let jwt_cpu = cpu_us("edge-grpc-jwt");
    if grpc_cpu > 0.0 && jwt_cpu > 0.0 {
        targets += &format!(
            "- authentication (an EdDSA JWT on every gRPC call): {jwt_cpu:.1} vs {grpc_cpu:.1} µs per call ({:+.1} µs, {:.2}x)\n",
            jwt_cpu - grpc_cpu,
            jwt_cpu / grpc_cpu
        );
    }
    if grpc_cpu > 0.0 {
        targets += &format!(
            "- REST CPU per call <= 1.3x the edge's gRPC: {rest_cpu:.1} vs {grpc_cpu:.1} µs ({:.2}x): {}\n",
            rest_cpu / grpc_cpu,
            check(rest_cpu <= 1.3 * grpc_cpu)
        );
    }
    targets += &format!(
        "- edge RSS with {OPEN_CONNECTIONS} open client connections <= 64 MiB: {:.1} MiB (idle: {:.1} MiB): {}\n",
        rss_with as f64 / 1024.0,
        rss_before as f64 / 1024.0,
        check(rss_with <= 64 * 1024)
    );
    format!(
        "## Edge only: what the proxy costs per call\n\nCommand: `cargo xtask bench --edge{}` (also part of `cargo xtask bench`). Upstream: `echo-upstream` (answers with the request's bytes; no database). Closed loop, concurrency {CONCURRENCY}, {duration} per path per round, {rounds} round(s) alternating the paths, medians across rounds; the edge with {} thread(s), nginx with 2 workers, all release builds and the load generator on this machine ({} cores). Proxy CPU per call = the proxy process's CPU time over the run / calls.\n\n{table}\nTargets (issue 11) and what identity costs (issue 12):\n{targets}",
        if quick { " --quick" } else { "" },
        edge_threads(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    )
}
