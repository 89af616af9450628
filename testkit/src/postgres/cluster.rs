//! A PostgreSQL data directory (a "database cluster", in PostgreSQL's words) made by
//! `initdb`, and how to run its server in the foreground on one port. [`super::PgServer`]
//! runs that server under its own small supervisor; `cargo xtask up` runs it under xtask's,
//! which restarts it when it dies.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::system::{as_user, find_bindir, is_root, kill, run, user_exists};
use super::{PgError, PgOptions, io};
use crate::process::{command_name, is_running};

/// A data directory ready to serve, with the server's command line.
#[derive(Debug)]
pub struct PgCluster {
    /// Holds `data/`, the Unix socket and `server.log`.
    base: PathBuf,
    bin: PathBuf,
    pub(super) port: u16,
    /// `-c name=value` settings beyond the data directory, port and socket.
    settings: Vec<String>,
    as_root: bool,
}

impl PgCluster {
    /// Makes a fresh data directory at `opts.dir` (default: a new directory under the system
    /// temp dir). A server still running on that directory (left behind by an owner that died)
    /// is stopped first, and whatever was there is removed. The port is `opts.port`, else a
    /// free one.
    pub fn init(opts: &PgOptions) -> Result<Self, PgError> {
        let bin = find_bindir()?;
        let as_root = is_root();
        if as_root && !user_exists("postgres") {
            return Err(PgError::NoPostgresUser);
        }
        let base = match &opts.dir {
            Some(d) => d.clone(),
            None => unique_temp_dir(),
        };
        stop_stale_postmaster(&base.join("data"))?;
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

        let fsync = if opts.durable { "on" } else { "off" };
        let mut settings =
            vec![format!("fsync={fsync}"), format!("max_connections={}", opts.max_connections), "log_min_messages=warning".into()];
        if !opts.durable {
            settings.extend(["synchronous_commit=off".into(), "full_page_writes=off".into()]);
        }
        let port = match opts.port {
            Some(p) => p,
            None => crate::port::free_port().map_err(io("finding a free port"))?,
        };
        Ok(Self { base, bin, port, settings, as_root })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding `data/`, the socket and `server.log`.
    pub fn base_dir(&self) -> &Path {
        &self.base
    }

    pub fn data_dir(&self) -> PathBuf {
        self.base.join("data")
    }

    /// Where the server's output should go.
    pub fn log_file(&self) -> PathBuf {
        self.base.join("server.log")
    }

    /// The directory with PostgreSQL's programs (`postgres`, `pg_ctl`, `psql`, ...).
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// The system user the server must run as: `postgres` when we are root (PostgreSQL
    /// refuses to run as root), else `None` (ourselves).
    pub fn run_as(&self) -> Option<&'static str> {
        self.as_root.then_some("postgres")
    }

    /// The server in the foreground: `(program, arguments)`, listening on 127.0.0.1 only,
    /// its socket in [`PgCluster::base_dir`]. It must run as [`PgCluster::run_as`].
    pub fn server_command(&self) -> (PathBuf, Vec<OsString>) {
        let mut args: Vec<OsString> = vec!["-D".into(), self.data_dir().into(), "-p".into(), self.port.to_string().into()];
        args.extend(["-k".into(), self.base.clone().into(), "-c".into(), "listen_addresses=127.0.0.1".into()]);
        for s in &self.settings {
            args.extend(["-c".into(), s.into()]);
        }
        (self.bin.join("postgres"), args)
    }

    /// The pid of a live postmaster serving this data directory (from its `postmaster.pid`),
    /// whoever started it: the owner, or `pg_ctl restart` run by hand.
    pub fn postmaster_pid(&self) -> Option<u32> {
        live_postmaster(&self.data_dir())
    }

    /// Whether the server accepts connections (`pg_isready`).
    pub fn is_ready(&self) -> Result<bool, PgError> {
        let status = Command::new(self.bin.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-U", "postgres", "-p", &self.port.to_string()])
            .status()
            .map_err(io("running pg_isready"))?;
        Ok(status.success())
    }

    /// The last lines of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(self.log_file()) {
            let _ = f.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
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

    /// Runs SQL with `psql` and returns its unaligned, tuples-only output.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, PgError> {
        let port = self.port.to_string();
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
                &port,
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
}

/// The pid in `data/postmaster.pid` if that process is alive and is PostgreSQL (a stale file,
/// or a pid reused by another program, does not count).
fn live_postmaster(data: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(data.join("postmaster.pid")).ok()?;
    let pid: u32 = text.lines().next()?.trim().parse().ok()?;
    (command_name(pid).as_deref() == Some("postgres")).then_some(pid)
}

/// Stops a server still running on data directory `data` (one its owner left behind when it
/// died): a fast shutdown, then an immediate one, then SIGKILL, each given time to work.
/// Returns the pid it stopped, if there was one.
pub fn stop_stale_postmaster(data: &Path) -> Result<Option<u32>, PgError> {
    let Some(pid) = live_postmaster(data) else { return Ok(None) };
    for (signal, patience) in [("INT", Duration::from_secs(30)), ("QUIT", Duration::from_secs(10)), ("KILL", Duration::from_secs(5))] {
        kill(signal, pid);
        let deadline = Instant::now() + patience;
        while is_running(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if !is_running(pid) {
            return Ok(Some(pid));
        }
    }
    Err(PgError::Command {
        what: format!("stopping the PostgreSQL server (pid {pid}) left running on {}", data.display()),
        detail: "it survived SIGINT, SIGQUIT and SIGKILL".into(),
    })
}

fn unique_temp_dir() -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    std::env::temp_dir().join(format!("paymesh-pg-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)))
}

#[cfg(test)]
mod tests {
    use std::process::Stdio;

    use super::*;

    /// A server started with `pg_ctl` (daemonized, owned by nobody) is what an owner killed
    /// with SIGKILL used to leave behind; `init` on the same directory must stop it.
    #[test]
    fn init_stops_a_server_left_running_on_the_directory() {
        let first = PgCluster::init(&PgOptions::default()).expect("initdb");
        let (postgres, args) = first.server_command();
        let opts: Vec<String> = args.iter().skip(2).map(|a| a.to_string_lossy().into_owned()).collect();
        let mut pg_ctl = as_user(first.as_root, &first.bin.join("pg_ctl"));
        pg_ctl.arg("-D").arg(first.data_dir()).arg("-l").arg(first.log_file()).arg("-w").arg("-p").arg(&postgres);
        pg_ctl.arg("-o").arg(shell_words(&opts)).arg("start").stdout(Stdio::null());
        run(&mut pg_ctl, "pg_ctl start").expect("pg_ctl start");
        let orphan = first.postmaster_pid().expect("a live postmaster");
        assert!(first.is_ready().expect("pg_isready"));

        let dir = first.base_dir().to_owned();
        let again =
            PgCluster::init(&PgOptions { dir: Some(dir.clone()), port: Some(first.port()), ..PgOptions::default() }).expect("init again");
        assert!(!is_running(orphan), "the old postmaster {orphan} still runs");
        assert_eq!(again.postmaster_pid(), None);
        assert!(!again.is_ready().expect("pg_isready"));
        std::fs::remove_dir_all(&dir).expect("remove the data directory");
    }

    fn shell_words(words: &[String]) -> String {
        words.iter().map(|w| format!("'{w}'")).collect::<Vec<_>>().join(" ")
    }
}
