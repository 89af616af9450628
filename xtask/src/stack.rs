//! The local stack: a throwaway PostgreSQL server per shard and the payments instances,
//! all on 127.0.0.1, started from a mesh config and stopped in reverse order.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use paymesh_core::config::MeshConfig;
use paymesh_core::shard::shard_for_merchant;
use paymesh_testkit::{PgOptions, PgServer};
use tokio::process::{Child, Command};

/// A running stack. Call [`Stack::stop`]; dropping it also stops everything, less politely.
#[derive(Debug)]
pub struct Stack {
    pub config: MeshConfig,
    config_path: PathBuf,
    databases: Vec<(PgServer, String)>,
    instances: Vec<(String, std::net::SocketAddr, Child)>,
    edge: Option<Child>,
}

impl Stack {
    pub async fn start(config_path: &Path, data_dir: &Path, release: bool) -> Result<Self, String> {
        let config = MeshConfig::load(config_path).map_err(|e| e.to_string())?;
        let mut stack =
            Self { config: config.clone(), config_path: config_path.to_owned(), databases: Vec::new(), instances: Vec::new(), edge: None };

        for shard in &config.shards {
            let local = LocalUrl::parse(&shard.database.url)
                .map_err(|e| format!("{}: shards[{}].database_url: {e}", config_path.display(), shard.id))?;
            let dir = data_dir.join(format!("pg/shard-{}", shard.id));
            println!("==> PostgreSQL for shard {} on 127.0.0.1:{} (data in {})", shard.id, local.port, dir.display());
            let opts = PgOptions { dir: Some(dir), port: Some(local.port), keep_data: true, durable: true, max_connections: 300 };
            let server = tokio::task::spawn_blocking(move || PgServer::start_with(&opts))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("shard {}: {e}", shard.id))?;
            if local.database != "postgres" {
                server.create_database(&local.database).map_err(|e| e.to_string())?;
            }
            stack.databases.push((server, local.database));
        }

        let bin_dir = build(release).await?;
        for inst in &config.payments.instances {
            println!("==> payments instance {} (shard {}) on {}", inst.name, inst.shard, inst.listen);
            let child = spawn(&bin_dir.join("payments"), &["--instance", &inst.name], config_path)?;
            stack.instances.push((inst.name.clone(), inst.listen, child));
        }
        for (name, addr, _) in &stack.instances {
            crate::probe::wait_serving(*addr, "", Duration::from_secs(60)).await.map_err(|e| format!("{name}: {e}"))?;
        }
        if let Some(edge) = &config.edge {
            println!("==> edge on {} (admin {})", edge.listen, edge.admin_listen);
            stack.edge = Some(spawn(&bin_dir.join("edge"), &[], config_path)?);
            crate::probe::wait_http_ok(edge.admin_listen, "/ready", Duration::from_secs(60)).await.map_err(|e| format!("edge: {e}"))?;
        }
        Ok(stack)
    }

    /// Process ids of the edge and the payments instances (for CPU accounting).
    pub fn pids(&self) -> (Option<u32>, Vec<u32>) {
        (self.edge.as_ref().and_then(Child::id), self.instances.iter().filter_map(|(_, _, c)| c.id()).collect())
    }

    pub fn print_endpoints(&self) {
        println!("\nPaymesh local stack (config: {})", self.config_path.display());
        if let Some(edge) = &self.config.edge {
            println!(
                "  edge:  http://{0} (REST/JSON and gRPC)   admin: http://{1}/clusters /routes /ready",
                edge.listen, edge.admin_listen
            );
        }
        for (i, (pg, db)) in self.databases.iter().enumerate() {
            println!("  shard {i}: {}   (psql -h 127.0.0.1 -p {} -U postgres {db})", pg.url(db), pg.port());
        }
        for (name, addr, _) in &self.instances {
            let shard = self.config.payments.instances.iter().find(|i| &i.name == name).map(|i| i.shard.0).unwrap_or_default();
            println!("  {name}: grpc://{addr} (shard {shard}, health, reflection)");
        }
        let merchant =
            (0..).map(|i| format!("merchant-{i}")).find(|m| shard_for_merchant(m, self.config.shard_count()).0 == 0).unwrap_or_default();
        match &self.config.edge {
            Some(edge) => {
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
            }
            None => {
                if let Some((_, addr, _)) = self.instances.first() {
                    println!("\nTry it (merchant {merchant} lives on shard 0):");
                    println!("  grpcurl -plaintext {addr} list");
                }
            }
        }
    }

    /// Returns on Ctrl-C (Ok) or when an instance dies (Err).
    pub async fn wait_for_ctrl_c_or_failure(&mut self) -> Result<(), String> {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        loop {
            tokio::select! {
                _ = &mut ctrl_c => return Ok(()),
                _ = tick.tick() => {
                    for (name, _, child) in &mut self.instances {
                        if let Ok(Some(status)) = child.try_wait() {
                            return Err(format!("{name} exited unexpectedly ({status}); see its log above"));
                        }
                    }
                    if let Some(Ok(Some(status))) = self.edge.as_mut().map(Child::try_wait) {
                        return Err(format!("the edge exited unexpectedly ({status}); see its log above"));
                    }
                }
            }
        }
    }

    /// SIGTERM to every instance, wait for them, then stop the databases. Errors if an
    /// instance did not exit cleanly.
    pub async fn stop(mut self) -> Result<(), String> {
        println!("\n==> stopping");
        let grace = self.config.payments.shutdown_grace + Duration::from_secs(5);
        let mut problems = Vec::new();
        if let Some(edge) = &mut self.edge {
            terminate(edge);
            match wait_with_deadline(edge, grace).await {
                Some(s) if s.success() => println!("    edge stopped"),
                Some(s) => problems.push(format!("edge exited with {s}")),
                None => {
                    let _ = edge.kill().await;
                    problems.push(format!("edge did not stop within {grace:?}; killed"));
                }
            }
        }
        for (name, _, child) in &mut self.instances {
            terminate(child);
            match wait_with_deadline(child, grace).await {
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

fn terminate(child: &Child) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    }
}

/// Starts a Paymesh binary with the mesh config, in its own process group: a terminal's
/// Ctrl-C reaches only xtask, which then stops everything in order.
fn spawn(binary: &Path, args: &[&str], config: &Path) -> Result<Child, String> {
    Command::new(binary)
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))
}

/// Builds the service binaries and returns the directory holding them.
async fn build(release: bool) -> Result<PathBuf, String> {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "--quiet", "-p", "paymesh-payments", "-p", "paymesh-edge"]).current_dir(crate::root());
    if release {
        cmd.arg("--release");
    }
    println!("==> building payments and edge ({} profile)", if release { "release" } else { "dev" });
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
        let (host, port) = hostport.rsplit_once(':').ok_or("has no port; xtask starts each shard's server on the URL's port")?;
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
