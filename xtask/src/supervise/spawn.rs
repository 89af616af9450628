//! Starting child processes that die with xtask, however xtask dies (SIGKILL included).
//!
//! Every child runs through util-linux's `setpriv --pdeathsig SIG -- PROGRAM ARGS`: setpriv
//! asks the kernel for a parent-death signal (PR_SET_PDEATHSIG) and execs the program, so the
//! program itself gets SIG when its parent goes, with no `unsafe` here. The kernel sends it
//! when the *thread* that forked the child exits, not the process, so every fork happens on
//! one thread that lives as long as xtask ([`spawn`]): never on a Tokio blocking-pool thread,
//! which exits when idle.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::sync::mpsc;

use tokio::process::{Child, Command};
use tokio::sync::oneshot;

/// The signals xtask sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// Stop gracefully (Paymesh processes); smart shutdown (PostgreSQL).
    Term,
    /// Ctrl-C; fast shutdown (PostgreSQL).
    Int,
    /// Immediate shutdown (PostgreSQL): no checkpoint, crash recovery on the next start.
    Quit,
    Kill,
}

impl Signal {
    pub fn name(self) -> &'static str {
        match self {
            Signal::Term => "TERM",
            Signal::Int => "INT",
            Signal::Quit => "QUIT",
            Signal::Kill => "KILL",
        }
    }
}

/// Sends `signal` to process `pid`.
pub fn kill(pid: u32, signal: Signal) -> Result<(), String> {
    let out = std::process::Command::new("kill")
        .args(["-s", signal.name(), &pid.to_string()])
        .output()
        .map_err(|e| format!("cannot run kill: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("kill -{} {pid}: {}", signal.name(), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// What to run, and how it is tied to xtask.
#[derive(Clone, Debug)]
pub struct Program {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(String, String)>,
    /// Run as this system user (PostgreSQL refuses root) instead of ourselves.
    pub user: Option<String>,
    /// What the process gets when xtask dies.
    pub parent_death: Signal,
    /// What asks it to stop gracefully.
    pub stop: Signal,
    /// Append stdout and stderr here; `None` shares xtask's.
    pub log: Option<PathBuf>,
}

impl Program {
    /// `program args...`, killed with xtask, stopped with SIGTERM, output on xtask's.
    pub fn new(program: impl AsRef<Path>, args: impl IntoIterator<Item = impl Into<OsString>>) -> Self {
        Self {
            program: program.as_ref().to_owned(),
            args: args.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            user: None,
            parent_death: Signal::Kill,
            stop: Signal::Term,
            log: None,
        }
    }

    /// The command line that runs it through setpriv, in its own process group (a terminal's
    /// Ctrl-C reaches only xtask, which stops everything in order), killed if dropped.
    pub fn command(&self) -> Result<Command, String> {
        let mut cmd = Command::new(setpriv()?);
        if let Some(user) = &self.user {
            cmd.arg(format!("--reuid={user}")).arg(format!("--regid={user}")).arg("--init-groups");
        }
        cmd.arg(format!("--pdeathsig={}", self.parent_death.name())).arg("--").arg(&self.program).args(&self.args);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v))).stdin(Stdio::null()).process_group(0).kill_on_drop(true);
        if let Some(log) = &self.log {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
            let copy = file.try_clone().map_err(|e| e.to_string())?;
            cmd.stdout(file).stderr(copy);
        }
        Ok(cmd)
    }

    /// Starts it (see the module's notes on which thread forks).
    pub async fn spawn(&self) -> Result<Child, String> {
        spawn(self.command()?).await.map_err(|e| format!("cannot start {}: {e}", self.program.display()))
    }
}

fn setpriv() -> Result<&'static Path, String> {
    static SETPRIV: OnceLock<Option<PathBuf>> = OnceLock::new();
    SETPRIV
        .get_or_init(|| ["/usr/bin/setpriv", "/bin/setpriv", "/usr/sbin/setpriv"].into_iter().map(PathBuf::from).find(|p| p.exists()))
        .as_deref()
        .ok_or_else(|| {
            "setpriv not found; it ties every process of the stack to xtask. Install util-linux: apt-get install -y util-linux".into()
        })
}

type Job = (Command, tokio::runtime::Handle, oneshot::Sender<std::io::Result<Child>>);

/// Spawns `cmd` from the spawner thread, which lives until xtask exits, inside the caller's
/// runtime (which then reaps the child).
pub async fn spawn(cmd: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Result<mpsc::Sender<Job>, String>> = OnceLock::new();
    let jobs = SPAWNER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Job>();
            std::thread::Builder::new()
                .name("xtask-spawner".into())
                .spawn(move || {
                    for (mut cmd, runtime, reply) in rx {
                        let _entered = runtime.enter();
                        let _ = reply.send(cmd.spawn());
                    }
                })
                .map(|_| tx)
                .map_err(|e| format!("cannot start the spawner thread: {e}"))
        })
        .as_ref()
        .map_err(|e| std::io::Error::other(e.clone()))?;
    let (reply, child) = oneshot::channel();
    jobs.send((cmd, tokio::runtime::Handle::current(), reply)).map_err(|_| std::io::Error::other("the spawner thread is gone"))?;
    child.await.map_err(|_| std::io::Error::other("the spawner thread dropped the request"))?
}
