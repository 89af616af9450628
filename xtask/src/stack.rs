//! The local stack: throwaway PostgreSQL servers (one per shard, one for the workers), the
//! local Kafka broker, and every Paymesh process the mesh config declares, all on 127.0.0.1,
//! started in dependency order and stopped in reverse.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use paymesh_core::config::{Bootstrap, MeshConfig};
use paymesh_core::shard::shard_for_merchant;
use paymesh_testkit::{PgOptions, PgServer};
use tokio::process::{Child, Command};

/// A running stack. Call [`Stack::stop`]; dropping it also stops everything, less politely.
#[derive(Debug)]
pub struct Stack {
    pub config: MeshConfig,
    config_path: PathBuf,
    databases: Vec<(PgServer, Vec<String>)>,
    /// Processes in start order: `(name, child)`.
    procs: Vec<(String, Child)>,
    bootstrap: Option<String>,
    /// Environment added to every process (e.g. the OTLP endpoint).
    env: Vec<(String, String)>,
}

const STARTUP: Duration = Duration::from_secs(60);

impl Stack {
    pub async fn start(config_path: &Path, data_dir: &Path, release: bool) -> Result<Self, String> {
        Self::start_with_env(config_path, data_dir, release, Vec::new()).await
    }

    /// [`Stack::start`], with `env` added to every process's environment.
    pub async fn start_with_env(config_path: &Path, data_dir: &Path, release: bool, env: Vec<(String, String)>) -> Result<Self, String> {
        let config = MeshConfig::load(config_path).map_err(|e| e.to_string())?;
        let mut stack = Self {
            config: config.clone(),
            config_path: config_path.to_owned(),
            databases: Vec::new(),
            procs: Vec::new(),
            bootstrap: None,
            env,
        };

        let mut urls: Vec<(String, String)> = config.shards.iter().map(|s| (format!("shard {}", s.id), s.database.url.clone())).collect();
        if let Some(w) = &config.workers {
            urls.push(("workers".into(), w.database.url.clone()));
        }
        for (what, url) in urls {
            let local = LocalUrl::parse(&url).map_err(|e| format!("{}: {what}: database_url: {e}", config_path.display()))?;
            if let Some((pg, dbs)) = stack.databases.iter_mut().find(|(pg, _)| pg.port() == local.port) {
                if !dbs.contains(&local.database) {
                    pg.create_database(&local.database).map_err(|e| e.to_string())?;
                    dbs.push(local.database);
                }
                continue;
            }
            let dir = data_dir.join(format!("pg/{}", what.replace(' ', "-")));
            println!("==> PostgreSQL for {what} on 127.0.0.1:{} (data in {})", local.port, dir.display());
            let opts = PgOptions { dir: Some(dir), port: Some(local.port), keep_data: true, durable: true, max_connections: 300 };
            let server = tokio::task::spawn_blocking(move || PgServer::start_with(&opts))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("{what}: {e}"))?;
            if local.database != "postgres" {
                server.create_database(&local.database).map_err(|e| e.to_string())?;
            }
            stack.databases.push((server, vec![local.database]));
        }

        let bin = build(release).await?;
        if let Some(kafka) = &config.kafka {
            match &kafka.bootstrap {
                Bootstrap::File(path) => {
                    let _ = std::fs::remove_file(path);
                    println!("==> Kafka-protocol broker (librdkafka mock cluster); address in {}", path.display());
                    stack.spawn("broker", &bin.join("broker"), &[])?;
                    let deadline = Instant::now() + STARTUP;
                    let servers = loop {
                        if let Ok(s) = kafka.bootstrap.resolve() {
                            break s;
                        }
                        if Instant::now() > deadline {
                            return Err(format!("the broker did not write {} within {STARTUP:?}", path.display()));
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    };
                    stack.bootstrap = Some(servers);
                }
                Bootstrap::Servers(s) => stack.bootstrap = Some(s.clone()),
            }
        }
        for inst in &config.payments.instances {
            println!("==> payments {} (shard {}) on {}", inst.name, inst.shard, inst.listen);
            stack.spawn(&inst.name, &bin.join("payments"), &["--instance", &inst.name])?;
        }
        for inst in &config.payments.instances {
            crate::probe::wait_serving(inst.listen, "", STARTUP).await.map_err(|e| format!("{}: {e}", inst.name))?;
        }
        if let Some(relay) = &config.relay {
            for inst in &relay.instances {
                println!("==> relay {} (shard {}), status on {}", inst.name, inst.shard, inst.status_listen);
                stack.spawn(&inst.name, &bin.join("relay"), &["--instance", &inst.name])?;
            }
        }
        if let Some(w) = &config.workers {
            for inst in &w.instances {
                println!("==> {} worker {}, status on {}", inst.kind.as_str(), inst.name, inst.status_listen);
                stack.spawn(&inst.name, &bin.join("worker"), &["--instance", &inst.name])?;
            }
        }
        if let Some(q) = &config.query {
            for inst in &q.instances {
                println!("==> query {} on {}", inst.name, inst.listen);
                stack.spawn(&inst.name, &bin.join("query"), &["--instance", &inst.name])?;
            }
        }
        for r in config.relay.iter().flat_map(|r| &r.instances) {
            crate::probe::wait_http_ok(r.status_listen, "/status", STARTUP).await.map_err(|e| format!("{}: {e}", r.name))?;
        }
        for w in config.workers.iter().flat_map(|w| &w.instances) {
            crate::probe::wait_http_ok(w.status_listen, "/status", STARTUP).await.map_err(|e| format!("{}: {e}", w.name))?;
        }
        for q in config.query.iter().flat_map(|q| &q.instances) {
            crate::probe::wait_serving(q.listen, "", STARTUP).await.map_err(|e| format!("{}: {e}", q.name))?;
        }
        if let Some(edge) = &config.edge {
            println!("==> edge on {} (admin {})", edge.listen, edge.admin_listen);
            stack.spawn("edge", &bin.join("edge"), &[])?;
            crate::probe::wait_http_ok(edge.admin_listen, "/ready", STARTUP).await.map_err(|e| format!("edge: {e}"))?;
        }
        Ok(stack)
    }

    /// Starts a Paymesh binary with the mesh config, in its own process group: a terminal's
    /// Ctrl-C reaches only xtask, which then stops everything in order.
    fn spawn(&mut self, name: &str, binary: &Path, args: &[&str]) -> Result<(), String> {
        let child = Command::new(binary)
            .args(args)
            .arg("--config")
            .arg(&self.config_path)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        self.procs.push((name.to_owned(), child));
        Ok(())
    }

    /// Process ids of the edge and the payments instances (for CPU accounting).
    pub fn pids(&self) -> (Option<u32>, Vec<u32>) {
        let is_payments = |n: &str| self.config.payments.instances.iter().any(|i| i.name == n);
        let edge = self.procs.iter().find(|(n, _)| n == "edge").and_then(|(_, c)| c.id());
        (edge, self.procs.iter().filter(|(n, _)| is_payments(n)).filter_map(|(_, c)| c.id()).collect())
    }

    pub fn print_endpoints(&self) {
        let c = &self.config;
        println!("\nPaymesh local stack (config: {})", self.config_path.display());
        if let Some(edge) = &c.edge {
            println!(
                "  edge:      http://{0} (REST/JSON and gRPC)   admin: http://{1}/clusters /routes /breakers /metrics /ready",
                edge.listen, edge.admin_listen
            );
        }
        for (pg, dbs) in &self.databases {
            for db in dbs {
                println!("  postgres:  {}", pg.url(db));
            }
        }
        if let Some(b) = &self.bootstrap {
            println!("  kafka:     {b} (topics: payment.authorized/captured/refunded/voided, DLQs)");
        }
        for i in &c.payments.instances {
            println!("  payments:  {} grpc://{} (shard {})", i.name, i.listen, i.shard);
        }
        for r in c.relay.iter().flat_map(|r| &r.instances) {
            println!("  relay:     {} http://{}/status /metrics (shard {})", r.name, r.status_listen, r.shard);
        }
        for w in c.workers.iter().flat_map(|w| &w.instances) {
            println!("  worker:    {} ({}) http://{}/status /metrics", w.name, w.kind.as_str(), w.status_listen);
        }
        for q in c.query.iter().flat_map(|q| &q.instances) {
            println!("  query:     {} grpc://{}", q.name, q.listen);
        }
        let merchant = (0..).map(|i| format!("merchant-{i}")).find(|m| shard_for_merchant(m, c.shard_count()).0 == 0).unwrap_or_default();
        if let Some(edge) = &c.edge {
            let e = edge.listen;
            println!("\nTry it through the edge:");
            println!(
                "  curl -s -X POST http://{e}/api/payments/authorize -H 'content-type: application/json' \\\n       -d '{{\"merchantId\":\"{merchant}\",\"amount\":50000,\"currency\":\"KRW\",\"idempotencyKey\":\"demo-1\"}}'"
            );
            println!("  curl -s http://{e}/api/payments/<paymentId>");
            println!("  grpcurl -plaintext {e} list");
            println!(
                "  grpcurl -plaintext -d '{{\"paymentId\":\"<paymentId>\",\"idempotencyKey\":\"demo-2\"}}' {e} payments.v1.Payments/Capture"
            );
            if c.query.is_some() {
                println!("  curl -s http://{e}/api/merchants/{merchant}/payments");
                println!("  curl -s http://{e}/api/merchants/{merchant}/balance");
            }
        }
    }

    /// Returns on Ctrl-C (Ok) or when a process dies (Err).
    pub async fn wait_for_ctrl_c_or_failure(&mut self) -> Result<(), String> {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        loop {
            tokio::select! {
                _ = &mut ctrl_c => return Ok(()),
                _ = tick.tick() => {
                    for (name, child) in &mut self.procs {
                        if let Ok(Some(status)) = child.try_wait() {
                            return Err(format!("{name} exited unexpectedly ({status}); see its log above"));
                        }
                    }
                }
            }
        }
    }

    /// SIGTERM to every process in reverse start order, waiting for each, then the
    /// databases. Errors if a process did not exit cleanly.
    pub async fn stop(mut self) -> Result<(), String> {
        println!("\n==> stopping");
        let grace = self.config.payments.shutdown_grace + Duration::from_secs(5);
        let mut problems = Vec::new();
        while let Some((name, mut child)) = self.procs.pop() {
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
            }
            match wait_with_deadline(&mut child, grace).await {
                Some(s) if s.success() => println!("    {name} stopped"),
                Some(s) => problems.push(format!("{name} exited with {s}")),
                None => {
                    let _ = child.kill().await;
                    problems.push(format!("{name} did not stop within {grace:?}; killed"));
                }
            }
        }
        for (pg, _) in self.databases.drain(..) {
            let port = pg.port();
            tokio::task::spawn_blocking(move || pg.stop()).await.map_err(|e| e.to_string())?;
            println!("    PostgreSQL on port {port} stopped");
        }
        if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
    }
}

async fn wait_with_deadline(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Builds the service binaries and returns the directory holding them.
async fn build(release: bool) -> Result<PathBuf, String> {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "--quiet"]);
    for p in ["paymesh-payments", "paymesh-edge", "paymesh-kafka", "paymesh-relay", "paymesh-workers", "paymesh-query"] {
        cmd.args(["-p", p]);
    }
    cmd.current_dir(crate::root());
    if release {
        cmd.arg("--release");
    }
    println!("==> building the services ({} profile)", if release { "release" } else { "dev" });
    let status = cmd.status().await.map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err("building the services failed; see the errors above".into());
    }
    // xtask itself runs from <target>/<profile>/xtask.
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let target = exe.parent().and_then(Path::parent).ok_or("cannot locate the target directory")?;
    Ok(target.join(if release { "release" } else { "debug" }))
}

/// The parts of a local `postgres://user@127.0.0.1:PORT/DB` URL that xtask needs.
#[derive(Debug, PartialEq)]
struct LocalUrl {
    port: u16,
    database: String,
}

impl LocalUrl {
    fn parse(url: &str) -> Result<Self, String> {
        let rest = url.split_once("://").map(|(_, r)| r).ok_or("not a URL")?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let (host, port) = hostport.rsplit_once(':').ok_or("has no port; xtask starts each database server on the URL's port")?;
        if host != "127.0.0.1" && host != "localhost" {
            return Err(format!("points at {host}; xtask up starts only local databases (127.0.0.1)"));
        }
        let port = port.parse().map_err(|_| format!("'{port}' is not a port"))?;
        let database = path.split('?').next().filter(|d| !d.is_empty()).unwrap_or("postgres").to_owned();
        Ok(Self { port, database })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_local_urls() {
        assert_eq!(
            LocalUrl::parse("postgres://postgres@127.0.0.1:54320/paymesh"),
            Ok(LocalUrl { port: 54320, database: "paymesh".into() })
        );
        assert_eq!(LocalUrl::parse("postgresql://localhost:5/x?sslmode=disable"), Ok(LocalUrl { port: 5, database: "x".into() }));
        assert_eq!(LocalUrl::parse("postgres://u@127.0.0.1:7"), Ok(LocalUrl { port: 7, database: "postgres".into() }));
        assert!(LocalUrl::parse("postgres://db.example.com:5432/x").expect_err("remote").contains("only local"));
        assert!(LocalUrl::parse("postgres://127.0.0.1/x").is_err());
    }
}
