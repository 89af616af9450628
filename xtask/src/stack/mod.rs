//! The local stack: PostgreSQL servers (one per shard, one for the workers), the local Kafka
//! broker, and every Paymesh process the mesh config declares, all on 127.0.0.1, started in
//! dependency order and stopped in reverse. Every process is supervised ([`crate::supervise`]):
//! one that dies is restarted with backoff while the rest keep serving, and all of them die
//! with xtask.

mod database;
mod endpoints;
pub mod free_ports;
mod local_url;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use paymesh_core::config::{Bootstrap, MeshConfig};

use crate::probe;
use crate::supervise::{self, Launch, Program, Signal, Stopped, Supervised};
pub use database::Database;
use local_url::LocalUrl;

/// A running stack. Call [`Stack::stop`]; dropping it kills everything (SIGKILL).
#[derive(Debug)]
pub struct Stack {
    pub config: MeshConfig,
    config_path: PathBuf,
    databases: Vec<Database>,
    /// Processes in start order.
    procs: Vec<Supervised>,
    bootstrap: Option<String>,
    /// Environment added to every process (e.g. the OTLP endpoint).
    env: Vec<(String, String)>,
    /// Where the Paymesh binaries are.
    bin: PathBuf,
    /// Where each Paymesh process writes its output (`None`: xtask's own).
    log_dir: Option<PathBuf>,
    /// xtask's client certificate, when the mesh talks mTLS.
    operator_tls: Option<std::sync::Arc<paymesh_core::tls::MeshTls>>,
}

const STARTUP: Duration = Duration::from_secs(60);

impl Stack {
    pub async fn start(config_path: &Path, data_dir: &Path, release: bool) -> Result<Self, String> {
        Self::start_with_env(config_path, data_dir, release, Vec::new()).await
    }

    /// [`Stack::start`], with `env` added to every process's environment.
    pub async fn start_with_env(config_path: &Path, data_dir: &Path, release: bool, env: Vec<(String, String)>) -> Result<Self, String> {
        Self::start_logged(config_path, data_dir, release, env, None).await
    }

    /// [`Stack::start_with_env`], each Paymesh process writing its output to
    /// `<log_dir>/<name>.log` instead of xtask's (when `log_dir` is given). The config is
    /// read with `env` too (e.g. `PAYMESH_CONFIG_KEY` for its `{cipher}` values).
    pub async fn start_logged(
        config_path: &Path,
        data_dir: &Path,
        release: bool,
        env: Vec<(String, String)>,
        log_dir: Option<PathBuf>,
    ) -> Result<Self, String> {
        let text = std::fs::read_to_string(config_path).map_err(|e| format!("cannot read {}: {e}", config_path.display()))?;
        let lookup = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).or_else(|| std::env::var(name).ok());
        let config = MeshConfig::parse(config_path, &text, &lookup).map_err(|e| e.to_string())?;
        // mTLS: the certificates every process (and xtask's probes) will present.
        let issued = crate::certs::ensure(&config, &[])?;
        if !issued.is_empty() {
            println!("==> mesh certificates issued for {}", issued.join(", "));
        }
        let operator_tls = match &config.mesh_tls {
            Some(t) => Some(std::sync::Arc::new(paymesh_core::tls::MeshTls::load(t.files_for(crate::certs::OPERATOR))?)),
            None => None,
        };
        let mut stack = Self {
            log_dir,
            operator_tls,
            config,
            config_path: config_path.to_owned(),
            databases: Vec::new(),
            procs: Vec::new(),
            bootstrap: None,
            env,
            bin: PathBuf::new(),
        };
        match stack.start_all(data_dir, release).await {
            Ok(()) => Ok(stack),
            Err(e) => {
                // Stop what did start, in order, before reporting.
                let _ = stack.stop().await;
                Err(e)
            }
        }
    }

    async fn start_all(&mut self, data_dir: &Path, release: bool) -> Result<(), String> {
        let config = self.config.clone();
        let mut urls: Vec<(String, String, Option<u32>)> =
            config.shards.iter().map(|s| (format!("shard {}", s.id), s.database.url.clone(), Some(s.id.0))).collect();
        if let Some(w) = &config.workers {
            urls.push(("workers".into(), w.database.url.clone(), None));
        }
        for (service, s) in config.repair.iter().flat_map(|r| r.services()) {
            urls.push((format!("repair.{service}"), s.database.url.clone(), None));
        }
        for (what, url, shard) in urls {
            let local = LocalUrl::parse(&url).map_err(|e| format!("{}: {what}: database_url: {e}", self.config_path.display()))?;
            let index = match self.databases.iter().position(|d| d.port() == local.port) {
                Some(i) => i,
                None => {
                    let slug = what.replace(' ', "-");
                    let dir = data_dir.join(format!("pg/{slug}"));
                    println!("==> PostgreSQL for {what} on 127.0.0.1:{} (data in {})", local.port, dir.display());
                    let db = Database::start(&format!("postgres-{slug}"), dir, local.port, supervise::to_stdout())
                        .await
                        .map_err(|e| format!("{what}: {e}"))?;
                    self.databases.push(db);
                    self.databases.len() - 1
                }
            };
            let db = &mut self.databases[index];
            db.shards.extend(shard);
            if local.database != "postgres" && !db.databases.contains(&local.database) {
                db.create_database(&local.database).await?;
            }
        }

        let bin = build(release).await?;
        self.bin = bin.clone();
        if let Some(kafka) = &config.kafka {
            match &kafka.bootstrap {
                Bootstrap::File(path) => {
                    let _ = std::fs::remove_file(path);
                    println!("==> Kafka-protocol broker (librdkafka mock cluster); address in {}", path.display());
                    self.spawn("broker", &bin.join("broker"), &[]).await?;
                    let broker = self.process("broker").ok_or("the broker is not running")?;
                    until(broker, &format!("writing {}", path.display()), || async { kafka.bootstrap.resolve().is_ok() }).await?;
                    self.bootstrap = kafka.bootstrap.resolve().ok();
                }
                Bootstrap::Servers(s) => self.bootstrap = Some(s.clone()),
            }
        }
        for inst in &config.payments.instances {
            println!("==> payments {} (shard {}) on {}", inst.name, inst.shard, inst.listen);
            self.spawn(&inst.name, &bin.join("payments"), &["--instance", &inst.name]).await?;
        }
        for inst in &config.payments.instances {
            self.wait_serving(&inst.name, inst.listen).await?;
        }
        // The repair centre's services migrate their databases (outboxes included) before
        // their relays start.
        for (service, s) in config.repair.iter().flat_map(|r| r.services()) {
            for inst in &s.instances {
                println!("==> repair {service} {} on {}", inst.name, inst.listen);
                self.spawn(&inst.name, &bin.join(service), &["--instance", &inst.name]).await?;
            }
        }
        for (_, s) in config.repair.iter().flat_map(|r| r.services()) {
            for inst in &s.instances {
                self.wait_serving(&inst.name, inst.listen).await?;
            }
        }
        for inst in config.relay.iter().flat_map(|r| &r.instances) {
            println!("==> relay {} ({}), status on {}", inst.name, inst.source, inst.status_listen);
            self.spawn(&inst.name, &bin.join("relay"), &["--instance", &inst.name]).await?;
        }
        for inst in config.workers.iter().flat_map(|w| &w.instances) {
            println!("==> {} worker {}, status on {}", inst.kind.as_str(), inst.name, inst.status_listen);
            self.spawn(&inst.name, &bin.join("worker"), &["--instance", &inst.name]).await?;
        }
        for inst in config.query.iter().flat_map(|q| &q.instances) {
            println!("==> query {} on {}", inst.name, inst.listen);
            self.spawn(&inst.name, &bin.join("query"), &["--instance", &inst.name]).await?;
        }
        for r in config.relay.iter().flat_map(|r| &r.instances) {
            self.wait_http_ok(&r.name, r.status_listen, "/status").await?;
        }
        for w in config.workers.iter().flat_map(|w| &w.instances) {
            self.wait_http_ok(&w.name, w.status_listen, "/status").await?;
        }
        for q in config.query.iter().flat_map(|q| &q.instances) {
            self.wait_serving(&q.name, q.listen).await?;
        }
        if let Some(edge) = &config.edge {
            println!("==> edge on {} (admin {})", edge.listen, edge.admin_listen);
            self.spawn("edge", &bin.join("edge"), &[]).await?;
            self.wait_http_ok("edge", edge.admin_listen, "/ready").await?;
        }
        Ok(())
    }

    /// Starts a Paymesh binary with the mesh config, supervised.
    async fn spawn(&mut self, name: &str, binary: &Path, args: &[&str]) -> Result<(), String> {
        let mut program = Program::new(binary, args);
        program.args.extend(["--config".into(), self.config_path.clone().into()]);
        program.env = self.env.clone();
        program.log = self.log_dir.as_ref().map(|d| d.join(format!("{name}.log")));
        let launch: Launch = Box::new(move || Ok(program.clone()));
        self.procs.push(Supervised::start(name, launch, supervise::to_stdout()).await?);
        Ok(())
    }

    /// Starts a payments instance the config file has gained since the stack started
    /// (scaling out); the caller waits for it to serve.
    pub async fn add_payments_instance(&mut self, name: &str) -> Result<(), String> {
        if self.process(name).is_some() {
            return Err(format!("{name} is already running"));
        }
        let bin = self.bin.join("payments");
        self.spawn(name, &bin, &["--instance", name]).await
    }

    /// Starts `paymesh-mcp` (MCP over streamable HTTP and load tests on demand) on `listen`,
    /// supervised like the rest, minting its tokens with the local issuer's key in
    /// `issuer_dir` when the edge authenticates; waits until it answers.
    pub async fn add_ops(&mut self, listen: std::net::SocketAddr, issuer_dir: Option<&Path>) -> Result<(), String> {
        let listen_arg = listen.to_string();
        let mut args = vec!["--http", listen_arg.as_str()];
        let dir = issuer_dir.map(|d| d.display().to_string());
        if let Some(d) = &dir {
            args.extend(["--issuer-dir", d.as_str()]);
        }
        let bin = self.bin.join("paymesh-mcp");
        self.spawn("paymesh-mcp", &bin, &args).await?;
        self.wait_http_ok("paymesh-mcp", listen, "/loadtests").await
    }

    async fn wait_serving(&self, name: &str, addr: std::net::SocketAddr) -> Result<(), String> {
        let proc = self.process(name).ok_or_else(|| format!("no process {name}"))?;
        until(proc, &format!("{addr} reporting SERVING"), || self.serving(name, addr)).await
    }

    /// Whether the gRPC server `name` at `addr` reports SERVING (over mTLS, with xtask's
    /// certificate, when the mesh uses it).
    pub async fn serving(&self, name: &str, addr: std::net::SocketAddr) -> bool {
        let tls = self.operator_tls.as_ref().map(|t| (t.clone(), name.to_owned()));
        probe::check_with(addr, "", tls).await == Some(tonic_health::pb::health_check_response::ServingStatus::Serving)
    }

    /// xtask's client certificate, when the mesh uses mTLS.
    pub fn operator_tls(&self) -> Option<&paymesh_core::tls::MeshTls> {
        self.operator_tls.as_deref()
    }

    async fn wait_http_ok(&self, name: &str, addr: std::net::SocketAddr, path: &str) -> Result<(), String> {
        let proc = self.process(name).ok_or_else(|| format!("no process {name}"))?;
        until(proc, &format!("http://{addr}{path} answering 200"), || async move {
            matches!(probe::http(addr, "GET", path, None).await, Ok((200, _)))
        })
        .await
    }

    /// The directory holding the Paymesh binaries the stack runs.
    /// The environment every process of the stack gets (e.g. the config key).
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// Every supervised process: PostgreSQL servers (`postgres-shard-0`, `postgres-workers`),
    /// then the rest in start order (`broker`, `payments-0a`, ..., `edge`).
    pub fn processes(&self) -> impl Iterator<Item = &Supervised> {
        self.databases.iter().map(Database::process).chain(&self.procs)
    }

    /// The supervised process called `name`.
    pub fn process(&self, name: &str) -> Option<&Supervised> {
        self.processes().find(|p| p.name() == name)
    }

    /// The running pid of process `name`; `None` if there is no such process or it is
    /// waiting to be restarted.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.process(name).and_then(Supervised::pid)
    }

    /// Sends `signal` to process `name` (e.g. [`Signal::Kill`] for chaos). If it exits, its
    /// supervisor restarts it.
    pub fn signal(&self, name: &str, signal: Signal) -> Result<(), String> {
        self.process(name).ok_or_else(|| format!("the stack has no process {name}"))?.signal(signal)
    }

    /// The PostgreSQL server holding `shard`.
    pub fn database(&self, shard: u32) -> Option<&Database> {
        self.databases.iter().find(|d| d.shards.contains(&shard))
    }

    /// Restarts `shard`'s PostgreSQL in immediate mode (as a crash would: no checkpoint, every
    /// connection cut, crash recovery on start) and waits until it accepts connections.
    pub async fn restart_postgres(&self, shard: u32) -> Result<(), String> {
        self.database(shard).ok_or_else(|| format!("no PostgreSQL holds shard {shard}"))?.restart_immediate().await
    }

    /// Process ids of the edge and the payments instances (for CPU accounting).
    pub fn pids(&self) -> (Option<u32>, Vec<u32>) {
        (self.pid("edge"), self.config.payments.instances.iter().filter_map(|i| self.pid(&i.name)).collect())
    }

    /// Stops every process in reverse start order (the edge first), each with its stop signal
    /// and grace, then the databases. Errors if a process did not exit cleanly.
    pub async fn stop(mut self) -> Result<(), String> {
        println!("\n==> stopping");
        let grace = self.config.payments.shutdown_grace + Duration::from_secs(5);
        let mut problems = Vec::new();
        while let Some(p) = self.procs.pop() {
            let name = p.name().to_owned();
            record(&name, p.stop(grace).await, &mut problems);
        }
        while let Some(db) = self.databases.pop() {
            let name = format!("{} (port {})", db.process().name(), db.port());
            record(&name, db.stop().await, &mut problems);
        }
        if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
    }
}

fn record(name: &str, stopped: Stopped, problems: &mut Vec<String>) {
    match stopped {
        Stopped::Exited(s) if s.success() => println!("    {name} stopped"),
        Stopped::Exited(s) => problems.push(format!("{name} exited with {s}")),
        Stopped::Killed(grace) => problems.push(format!("{name} did not stop within {grace:?}; killed")),
        Stopped::NotRunning => println!("    {name} was not running (it was waiting to be restarted)"),
    }
}

/// Polls `probe` until it holds. Fails after [`STARTUP`], or early when `proc` keeps exiting
/// (three restarts while waiting).
async fn until<F, Fut>(proc: &Supervised, what: &str, mut probe: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + STARTUP;
    let restarts = proc.restarts();
    loop {
        if probe().await {
            return Ok(());
        }
        if proc.restarts() >= restarts + 3 {
            let last = proc.last_exit().unwrap_or_default();
            return Err(format!("{} keeps exiting (last: {last}) instead of {what}; see its log above", proc.name()));
        }
        if Instant::now() > deadline {
            return Err(format!("{}: no {what} within {STARTUP:?}", proc.name()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Builds the service binaries and returns the directory holding them.
async fn build(release: bool) -> Result<PathBuf, String> {
    let mut cmd = tokio::process::Command::new(env!("CARGO"));
    cmd.args(["build", "--quiet"]);
    for p in [
        "paymesh-payments",
        "paymesh-edge",
        "paymesh-kafka",
        "paymesh-relay",
        "paymesh-workers",
        "paymesh-query",
        "paymesh-ops",
        "paymesh-repair-requests",
        "paymesh-repair-desk",
        "paymesh-stock",
        "paymesh-repair-progress",
    ] {
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
