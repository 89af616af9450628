//! Throwaway PostgreSQL servers.
//!
//! Each server gets its own data directory made by `initdb` ([`PgCluster`]) and listens only
//! on 127.0.0.1. A [`PgServer`] runs it under a small `sh` supervisor whose stdin is a pipe
//! from this process: when the pipe closes (the [`PgServer`] is dropped, or this process exits
//! or is killed) the supervisor stops PostgreSQL with a fast shutdown and, unless asked to keep
//! it, removes the data directory. So no test leaves a server behind, even the shared one that
//! lives in a `static` and is never dropped.
//!
//! PostgreSQL refuses to run as root; when we are root, the server and `initdb` run as the
//! `postgres` system user (created by Debian's package), via `runuser`.

mod cluster;
mod system;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub use cluster::{PgCluster, stop_stale_postmaster};
pub use system::find_bindir;

/// What can go wrong starting PostgreSQL, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error(
        "PostgreSQL server binaries (initdb, postgres) were not found under /usr/lib/postgresql/*/bin or $PAYMESH_PG_BIN; install them with `apt-get install -y postgresql` (cargo xtask test does this when run as root)"
    )]
    NotInstalled,
    #[error(
        "running as root, but there is no `postgres` system user to run the server as; install Debian's postgresql package, which creates it"
    )]
    NoPostgresUser,
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("PostgreSQL on port {port} did not become ready within {timeout:?}; its log says:\n{log}")]
    NotReady { port: u16, timeout: Duration, log: String },
    #[error("I/O error while {doing}: {source}")]
    Io {
        doing: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(doing: impl Into<String>) -> impl FnOnce(std::io::Error) -> PgError {
    let doing = doing.into();
    move |source| PgError::Io { doing, source }
}

/// How to start a server.
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// Where the data directory goes. Default: a fresh directory under the system temp dir.
    pub dir: Option<PathBuf>,
    /// Port to listen on; `None` picks a free one.
    pub port: Option<u16>,
    /// Keep the data directory after the server stops (for `xtask up`, to read logs).
    pub keep_data: bool,
    /// `fsync` on (durable) or off (faster, for tests that never crash the machine).
    pub durable: bool,
    pub max_connections: u32,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self { dir: None, port: None, keep_data: false, durable: false, max_connections: 300 }
    }
}

/// A running PostgreSQL server. Dropping it stops the server.
#[derive(Debug)]
pub struct PgServer {
    cluster: PgCluster,
    supervisor: Child,
    stdin: Option<ChildStdin>,
}

const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The supervisor: start postgres, obey commands on stdin until it closes, stop postgres,
/// tidy up. Commands (one per line): `crash` stops the server the way a power cut would
/// (SIGQUIT: immediate shutdown, no checkpoint, crash recovery on the next start), `start`
/// starts it again on the same data directory and port.
/// Arguments: $1 base dir, $2 keep-data flag, $3.. the server's command line.
const SUPERVISOR: &str = r#"
base="$1"; keep="$2"; shift 2
launch() { "$@" >>"$base/server.log" 2>&1 & pid=$!; }
launch "$@"
while read cmd; do
  case "$cmd" in
    crash) kill -QUIT "$pid" 2>/dev/null; wait "$pid" ;;
    start) launch "$@" ;;
  esac
done
kill -INT "$pid" 2>/dev/null
wait "$pid"
[ "$keep" = keep ] || rm -rf "$base"
"#;

impl PgServer {
    /// Starts a server with default options (fresh temp dir, free port, fsync off).
    pub fn start() -> Result<Self, PgError> {
        Self::start_with(&PgOptions::default())
    }

    /// One server per test process, started on first use and stopped when the process exits.
    /// Tests isolate themselves with their own databases ([`PgServer::create_database`]).
    pub fn shared() -> Result<&'static PgServer, String> {
        static SHARED: OnceLock<Result<PgServer, String>> = OnceLock::new();
        SHARED.get_or_init(|| PgServer::start().map_err(|e| e.to_string())).as_ref().map_err(Clone::clone)
    }

    pub fn start_with(opts: &PgOptions) -> Result<Self, PgError> {
        let mut cluster = PgCluster::init(opts)?;
        // A port can be taken between choosing and binding; try a few.
        let mut last = None;
        for attempt in 0..5 {
            if attempt > 0 {
                cluster.port = crate::port::free_port().map_err(io("finding a free port"))?;
            }
            match launch(&cluster, opts.keep_data) {
                Ok((supervisor, stdin)) => return Ok(Self { cluster, supervisor, stdin }),
                Err(e) if opts.port.is_none() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(PgError::NotReady { port: 0, timeout: READY_TIMEOUT, log: String::new() }))
    }

    /// The last lines of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        self.cluster.log_tail()
    }

    pub fn port(&self) -> u16 {
        self.cluster.port()
    }

    /// The directory holding `data/`, the socket and `server.log`.
    pub fn base_dir(&self) -> &Path {
        self.cluster.base_dir()
    }

    /// A connection URL for `database` as the `postgres` superuser (trust auth, loopback only).
    pub fn url(&self, database: &str) -> String {
        self.cluster.url(database)
    }

    /// Creates an empty database.
    pub fn create_database(&self, name: &str) -> Result<(), PgError> {
        self.cluster.create_database(name)
    }

    /// Creates a database with a name no other caller in this process gets.
    pub fn fresh_database(&self, hint: &str) -> Result<String, PgError> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!("{hint}_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        self.create_database(&name)?;
        Ok(name)
    }

    /// Runs SQL with `psql` and returns its unaligned, tuples-only output.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, PgError> {
        self.cluster.psql(database, sql)
    }

    /// Stops the server at once, as a crash would (immediate shutdown: no checkpoint, every
    /// connection cut), and waits until it no longer answers. [`PgServer::start_again`]
    /// brings it back on the same port with crash recovery.
    pub fn crash(&mut self) -> Result<(), PgError> {
        self.command("crash")?;
        let deadline = Instant::now() + READY_TIMEOUT;
        while self.cluster.is_ready()? {
            if Instant::now() > deadline {
                return Err(PgError::Command { what: "crash".into(), detail: "the server still answers".into() });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Starts the server again after [`PgServer::crash`] and waits until it is ready.
    pub fn start_again(&mut self) -> Result<(), PgError> {
        self.command("start")?;
        wait_ready(&self.cluster, &mut self.supervisor)
    }

    /// An immediate-mode restart: [`PgServer::crash`] then [`PgServer::start_again`].
    pub fn restart_immediate(&mut self) -> Result<(), PgError> {
        self.crash()?;
        self.start_again()
    }

    fn command(&mut self, cmd: &str) -> Result<(), PgError> {
        use std::io::Write;
        let stdin = self.stdin.as_mut().ok_or_else(|| PgError::Command { what: cmd.into(), detail: "the server is stopped".into() })?;
        writeln!(stdin, "{cmd}").and_then(|()| stdin.flush()).map_err(io(format!("telling the PostgreSQL supervisor to {cmd}")))
    }

    /// Stops the server and waits for it (also what `Drop` does).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        stop_supervisor(self.stdin.take(), &mut self.supervisor);
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Starts the supervisor for `cluster` and waits until the server is ready.
fn launch(cluster: &PgCluster, keep_data: bool) -> Result<(Child, Option<ChildStdin>), PgError> {
    let (postgres, args) = cluster.server_command();
    let mut cmd = system::as_user(cluster.run_as().is_some(), Path::new("sh"));
    cmd.arg("-c").arg(SUPERVISOR).arg("paymesh-pg").arg(cluster.base_dir());
    cmd.arg(if keep_data { "keep" } else { "remove" }).arg(postgres).args(args);
    cmd.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::null());
    // Own process group, so a terminal's Ctrl-C does not kill the supervisor and orphan the
    // server; the owner stops it by closing the pipe.
    cmd.process_group(0);
    let mut supervisor = cmd.spawn().map_err(io("starting the PostgreSQL supervisor (sh)"))?;
    let stdin = supervisor.stdin.take();
    match wait_ready(cluster, &mut supervisor) {
        Ok(()) => Ok((supervisor, stdin)),
        Err(e) => {
            stop_supervisor(stdin, &mut supervisor);
            Err(e)
        }
    }
}

/// Polls `pg_isready` until the server answers, the supervisor dies, or the deadline passes.
fn wait_ready(cluster: &PgCluster, supervisor: &mut Child) -> Result<(), PgError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if cluster.is_ready()? {
            return Ok(());
        }
        let exited = supervisor.try_wait().map_err(io("checking the supervisor"))?.is_some();
        if exited || Instant::now() > deadline {
            return Err(PgError::NotReady { port: cluster.port(), timeout: READY_TIMEOUT, log: cluster.log_tail() });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Closing the pipe tells the supervisor to stop PostgreSQL; waits for it (30 s at most).
fn stop_supervisor(stdin: Option<ChildStdin>, supervisor: &mut Child) {
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match supervisor.try_wait() {
            Ok(Some(_)) | Err(_) => return,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let _ = supervisor.kill();
    let _ = supervisor.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_answers_and_cleans_up() {
        let server = PgServer::start().expect("PostgreSQL starts");
        let db = server.fresh_database("kit").expect("createdb");
        assert_eq!(server.psql(&db, "select 40 + 2").expect("query"), "42");
        let base = server.base_dir().to_owned();
        let port = server.port();
        server.stop();
        assert!(!base.exists(), "data directory {} was left behind", base.display());
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "server still listening");
    }
}
