//! Throwaway PostgreSQL servers.
//!
//! Each server gets its own data directory made by `initdb` and listens only on 127.0.0.1.
//! It runs under a small `sh` supervisor whose stdin is a pipe from this process: when the
//! pipe closes (the [`PgServer`] is dropped, or this process exits or is killed) the
//! supervisor stops PostgreSQL with a fast shutdown and, unless asked to keep it, removes the
//! data directory. So no test leaves a server behind, even the shared one that lives in a
//! `static` and is never dropped.
//!
//! PostgreSQL refuses to run as root; when we are root, the server and `initdb` run as the
//! `postgres` system user (created by Debian's package), via `runuser`.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

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
    port: u16,
    base: PathBuf,
    bin: PathBuf,
    supervisor: Child,
    stdin: Option<ChildStdin>,
}

const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The supervisor: start postgres, obey commands on stdin until it closes, stop postgres,
/// tidy up. Commands (one per line): `crash` stops the server the way a power cut would
/// (SIGQUIT: immediate shutdown, no checkpoint, crash recovery on the next start), `start`
/// starts it again on the same data directory and port.
/// Arguments: $1 postgres binary, $2 base dir, $3 port, $4 keep-data flag, $5.. extra -c settings.
const SUPERVISOR: &str = r#"
bin="$1"; base="$2"; port="$3"; keep="$4"; shift 4
launch() { "$bin" -D "$base/data" -p "$port" -k "$base" -c listen_addresses=127.0.0.1 "$@" >>"$base/server.log" 2>&1 & pid=$!; }
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
        let bin = find_bindir()?;
        let as_root = is_root();
        if as_root && !user_exists("postgres") {
            return Err(PgError::NoPostgresUser);
        }
        let base = match &opts.dir {
            Some(d) => d.clone(),
            None => unique_temp_dir(),
        };
        if base.exists() {
            std::fs::remove_dir_all(&base).map_err(io(format!("removing the old data directory {}", base.display())))?;
        }
        std::fs::create_dir_all(&base).map_err(io(format!("creating {}", base.display())))?;
        if as_root {
            run(Command::new("chown").arg("postgres:postgres").arg(&base), "chown of the data directory to postgres")?;
        }
        let mut initdb = as_user(as_root, &bin.join("initdb"));
        initdb.arg("-D").arg(base.join("data")).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        ]);
        run(&mut initdb, "initdb")?;

        // A port can be taken between choosing and binding; try a few.
        let mut last = None;
        for _ in 0..5 {
            let port = match opts.port {
                Some(p) => p,
                None => crate::port::free_port().map_err(io("finding a free port"))?,
            };
            match Self::launch(&bin, &base, port, opts, as_root) {
                Ok(server) => return Ok(server),
                Err(e) if opts.port.is_none() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(PgError::NotReady { port: 0, timeout: READY_TIMEOUT, log: String::new() }))
    }

    fn launch(bin: &Path, base: &Path, port: u16, opts: &PgOptions, as_root: bool) -> Result<Self, PgError> {
        let mut cmd = as_user(as_root, Path::new("sh"));
        cmd.arg("-c").arg(SUPERVISOR).arg("paymesh-pg").arg(bin.join("postgres")).arg(base).arg(port.to_string());
        cmd.arg(if opts.keep_data { "keep" } else { "remove" });
        let fsync = if opts.durable { "on" } else { "off" };
        for setting in [format!("fsync={fsync}"), format!("max_connections={}", opts.max_connections), "log_min_messages=warning".into()] {
            cmd.arg("-c").arg(setting);
        }
        if !opts.durable {
            cmd.args(["-c", "synchronous_commit=off", "-c", "full_page_writes=off"]);
        }
        cmd.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::null());
        // Own process group, so a terminal's Ctrl-C does not kill the supervisor and orphan
        // the server; the owner stops it by closing the pipe.
        cmd.process_group(0);
        let mut supervisor = cmd.spawn().map_err(io("starting the PostgreSQL supervisor (sh)"))?;
        let stdin = supervisor.stdin.take();
        let mut server = Self { port, base: base.to_owned(), bin: bin.to_owned(), supervisor, stdin };
        server.wait_ready()?;
        Ok(server)
    }

    /// Polls `pg_isready` until the server answers, the supervisor dies, or the deadline passes.
    fn wait_ready(&mut self) -> Result<(), PgError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if self.is_ready()? {
                return Ok(());
            }
            let exited = self.supervisor.try_wait().map_err(io("checking the supervisor"))?.is_some();
            if exited || Instant::now() > deadline {
                return Err(PgError::NotReady { port: self.port, timeout: READY_TIMEOUT, log: self.log_tail() });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(self.base.join("server.log")) {
            let _ = f.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding `data/`, the socket and `server.log`.
    pub fn base_dir(&self) -> &Path {
        &self.base
    }

    /// A connection URL for `database` as the `postgres` superuser (trust auth, loopback only).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates an empty database.
    pub fn create_database(&self, name: &str) -> Result<(), PgError> {
        run(
            Command::new(self.bin.join("createdb")).args(["-h", "127.0.0.1", "-U", "postgres", "-p", &self.port.to_string(), name]),
            &format!("createdb {name}"),
        )
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
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-p",
                &self.port.to_string(),
                "-d",
                database,
                "-c",
                sql,
            ])
            .output()
            .map_err(io("running psql"))?;
        if !out.status.success() {
            return Err(PgError::Command {
                what: format!("psql -c {sql:?}"),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Stops the server at once, as a crash would (immediate shutdown: no checkpoint, every
    /// connection cut), and waits until it no longer answers. [`PgServer::start_again`]
    /// brings it back on the same port with crash recovery.
    pub fn crash(&mut self) -> Result<(), PgError> {
        self.command("crash")?;
        let deadline = Instant::now() + READY_TIMEOUT;
        while self.is_ready()? {
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
        self.wait_ready()
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

    fn is_ready(&self) -> Result<bool, PgError> {
        let status = Command::new(self.bin.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-U", "postgres", "-p", &self.port.to_string()])
            .status()
            .map_err(io("running pg_isready"))?;
        Ok(status.success())
    }

    /// Stops the server and waits for it (also what `Drop` does).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        // Closing the pipe tells the supervisor to stop PostgreSQL.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            match self.supervisor.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        let _ = self.supervisor.kill();
        let _ = self.supervisor.wait();
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The directory with `initdb` and `postgres`: `$PAYMESH_PG_BIN`, else the newest
/// `/usr/lib/postgresql/<major>/bin`.
pub fn find_bindir() -> Result<PathBuf, PgError> {
    if let Some(dir) = std::env::var_os("PAYMESH_PG_BIN") {
        let dir = PathBuf::from(dir);
        return if dir.join("initdb").exists() { Ok(dir) } else { Err(PgError::NotInstalled) };
    }
    let mut best: Option<(u32, PathBuf)> = None;
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        for e in entries.flatten() {
            let Some(major) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            let bin = e.path().join("bin");
            if bin.join("initdb").exists() && bin.join("postgres").exists() && best.as_ref().is_none_or(|(m, _)| major > *m) {
                best = Some((major, bin));
            }
        }
    }
    best.map(|(_, b)| b).ok_or(PgError::NotInstalled)
}

fn unique_temp_dir() -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    std::env::temp_dir().join(format!("paymesh-pg-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)))
}

fn is_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| Command::new("id").arg("-u").output().map(|o| o.stdout.trim_ascii() == b"0").unwrap_or(false))
}

fn user_exists(name: &str) -> bool {
    Command::new("id").arg(name).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// `program` run as the `postgres` user when we are root.
fn as_user(as_root: bool, program: &Path) -> Command {
    if as_root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run(cmd: &mut Command, what: &str) -> Result<(), PgError> {
    let out = cmd.output().map_err(io(format!("running {what}")))?;
    if out.status.success() {
        Ok(())
    } else {
        let mut detail = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        if detail.is_empty() {
            detail = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        }
        Err(PgError::Command { what: what.to_owned(), detail })
    }
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
