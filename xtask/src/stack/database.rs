//! One PostgreSQL server of the stack: a fresh data directory on the config's port, and the
//! postmaster itself as a supervised child of xtask (foreground, no `pg_ctl`), so it is
//! restarted when it dies and gets a fast shutdown when xtask dies.
//!
//! Someone may restart it by hand (`pg_ctl -D DATADIR -m immediate -w restart`): the old
//! postmaster exits, pg_ctl starts a new one that is nobody's child. Before every restart the
//! supervisor looks at the data directory's `postmaster.pid`; when a live postmaster is there
//! it adopts it through a small watcher process instead of starting a second one. The watcher
//! exits when that postmaster does (so the supervisor starts its own again), forwards stop
//! requests to it, and dies with xtask (asking it for a fast shutdown first). A postmaster
//! that outlived everything anyway is stopped by the next `up` before it reuses the directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use paymesh_testkit::PgOptions;
use paymesh_testkit::postgres::{PgCluster, stop_stale_postmaster};

use crate::supervise::{DEFAULT_GRACE, Launch, Program, Report, Signal, Stopped, Supervised};

/// The adopted postmaster's watcher. $1: its pid. Exits 1 when the postmaster is gone (a
/// zombie counts as gone); INT and TERM ask it for a fast shutdown, QUIT for an immediate
/// one, and wait for it to finish before exiting 0.
const WATCH: &str = r#"
pid="$1"
alive() { read -r _ _ state _ 2>/dev/null </proc/"$pid"/stat && [ "$state" != Z ]; }
stop() { kill -"$1" "$pid" 2>/dev/null; while alive; do sleep 0.05; done; exit 0; }
trap 'stop INT' INT TERM
trap 'stop QUIT' QUIT
while alive; do sleep 0.2 & wait $!; done
exit 1
"#;

/// A PostgreSQL server of the stack.
#[derive(Debug)]
pub struct Database {
    /// Which shards' URLs point here (none for the workers' server).
    pub shards: Vec<u32>,
    /// The databases created on it.
    pub databases: Vec<String>,
    cluster: Arc<PgCluster>,
    proc: Supervised,
}

impl Database {
    /// Makes a fresh data directory in `dir` (stopping a server left running on it), starts
    /// the server on `port` as process `name`, and waits until it accepts connections.
    pub async fn start(name: &str, dir: PathBuf, port: u16, report: Report) -> Result<Self, String> {
        let data = dir.join("data");
        let stale = tokio::task::spawn_blocking(move || stop_stale_postmaster(&data)).await.map_err(|e| e.to_string())?;
        if let Some(pid) = stale.map_err(|e| e.to_string())? {
            println!("==> stopped a PostgreSQL server (pid {pid}) left running on {}", dir.display());
        }
        let opts = PgOptions { dir: Some(dir), port: Some(port), keep_data: true, durable: true, max_connections: 300 };
        let cluster = tokio::task::spawn_blocking(move || PgCluster::init(&opts)).await.map_err(|e| e.to_string())?;
        let cluster = Arc::new(cluster.map_err(|e| e.to_string())?);
        let proc = Supervised::start(name, launcher(name, cluster.clone()), report).await?;
        let db = Self { shards: Vec::new(), databases: Vec::new(), cluster, proc };
        db.wait_ready().await?;
        Ok(db)
    }

    pub fn process(&self) -> &Supervised {
        &self.proc
    }

    pub fn port(&self) -> u16 {
        self.cluster.port()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.cluster.data_dir()
    }

    /// PostgreSQL's programs (`pg_ctl`, `psql`, ...).
    pub fn bin_dir(&self) -> &Path {
        self.cluster.bin_dir()
    }

    /// The user the server runs as (`postgres` when xtask is root), for `runuser -u`.
    pub fn run_as(&self) -> Option<&'static str> {
        self.cluster.run_as()
    }

    pub fn url(&self, database: &str) -> String {
        self.cluster.url(database)
    }

    pub async fn create_database(&mut self, name: &str) -> Result<(), String> {
        let (cluster, db) = (self.cluster.clone(), name.to_owned());
        tokio::task::spawn_blocking(move || cluster.create_database(&db)).await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
        self.databases.push(name.to_owned());
        Ok(())
    }

    /// Polls until the server accepts connections (it may be restarting meanwhile).
    pub async fn wait_ready(&self) -> Result<(), String> {
        let cluster = self.cluster.clone();
        let ready = super::until(&self.proc, &format!("PostgreSQL on port {} accepting connections", self.port()), || {
            let c = cluster.clone();
            async move { tokio::task::spawn_blocking(move || c.is_ready().unwrap_or(false)).await.unwrap_or(false) }
        })
        .await;
        ready.map_err(|e| format!("{e}; its log ends:\n{}", self.cluster.log_tail()))
    }

    /// An immediate-mode restart under supervision: SIGQUIT (no checkpoint, every connection
    /// cut, crash recovery on start), started again at once; waits until it accepts
    /// connections again.
    pub async fn restart_immediate(&self) -> Result<(), String> {
        self.proc.restart(Signal::Quit).await?;
        self.wait_ready().await
    }

    /// Fast shutdown.
    pub async fn stop(self) -> Stopped {
        self.proc.stop(DEFAULT_GRACE).await
    }
}

/// Each (re)start: adopt a live postmaster on the data directory, else start our own.
fn launcher(name: &str, cluster: Arc<PgCluster>) -> Launch {
    let name = name.to_owned();
    Box::new(move || {
        if let Some(pid) = cluster.postmaster_pid() {
            println!(
                "==> {name}: a PostgreSQL server started outside xtask (pid {pid}, e.g. by pg_ctl restart) serves port {}; watching it, it stops with the stack",
                cluster.port()
            );
            let mut watcher = Program::new("sh", ["-c", WATCH, "paymesh-pg-watch", &pid.to_string()]);
            watcher.parent_death = Signal::Term;
            watcher.stop = Signal::Int;
            return Ok(watcher);
        }
        let (postgres, args) = cluster.server_command();
        let mut server = Program::new(postgres, args);
        server.user = cluster.run_as().map(str::to_owned);
        // Fast shutdown either way: when xtask stops the stack and when xtask dies.
        server.parent_death = Signal::Int;
        server.stop = Signal::Int;
        server.log = Some(cluster.log_file());
        Ok(server)
    })
}
