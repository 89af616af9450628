//! Supervised processes, as compose's `restart: unless-stopped` keeps containers: each runs
//! under a task of its own that logs its exit (name and status), restarts it after a
//! [`Backoff`] delay, and says so on stdout, until it is stopped. Every process dies with
//! xtask ([`spawn`]).

mod backoff;
mod spawn;

use std::process::ExitStatus;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::process::Child;
use tokio::sync::{mpsc, oneshot};

pub use backoff::Backoff;
pub use spawn::{Program, Signal, kill};

/// Decides what to run at each start (PostgreSQL's may change: see `stack::database`).
pub type Launch = Box<dyn FnMut() -> Result<Program, String> + Send>;

/// Where a supervisor says what happens (stdout, or a test's collector).
pub type Report = Arc<dyn Fn(String) + Send + Sync>;

/// Lines on stdout, as the rest of xtask prints.
pub fn to_stdout() -> Report {
    Arc::new(|line| println!("==> {line}"))
}

/// Returns on Ctrl-C or SIGTERM to xtask.
pub async fn stop_requested() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

/// How long a process that does not stop on its stop signal gets before SIGKILL.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// One process under supervision. [`Supervised::stop`] it; dropping it kills it.
#[derive(Debug)]
pub struct Supervised {
    name: String,
    state: Arc<State>,
    commands: mpsc::UnboundedSender<Command>,
    task: tokio::task::JoinHandle<()>,
}

/// What the supervisor shares with its handle.
#[derive(Debug, Default)]
struct State {
    /// The running process's pid; 0 while it is not running.
    pid: AtomicU32,
    /// How many times it was started.
    starts: AtomicU32,
    /// How its last run ended.
    last_exit: Mutex<Option<String>>,
}

enum Command {
    Stop {
        grace: Duration,
        done: oneshot::Sender<Stopped>,
    },
    /// Send `signal`, then start it again at once (no backoff) once it has exited.
    Restart {
        signal: Signal,
        done: oneshot::Sender<Result<u32, String>>,
    },
    /// Start a second copy with `arg` added, then send the running one `signal`; the copy
    /// is supervised from when the old one has exited.
    Upgrade {
        arg: String,
        signal: Signal,
        done: oneshot::Sender<Result<u32, String>>,
    },
}

/// How a stop went.
#[derive(Debug)]
pub enum Stopped {
    Exited(ExitStatus),
    /// It did not exit within the grace and got SIGKILL.
    Killed(Duration),
    /// It was waiting to be restarted.
    NotRunning,
}

impl Supervised {
    /// Starts `name` (a failure to start the first time is the caller's error) and keeps it
    /// running from then on.
    pub async fn start(name: &str, mut launch: Launch, report: Report) -> Result<Self, String> {
        let program = launch()?;
        let child = program.spawn().await?;
        let state = Arc::new(State::default());
        state.pid.store(child.id().unwrap_or(0), Ordering::SeqCst);
        state.starts.store(1, Ordering::SeqCst);
        let (commands, rx) = mpsc::unbounded_channel();
        let supervisor = Supervisor {
            name: name.to_owned(),
            launch,
            report,
            state: state.clone(),
            backoff: Backoff::default(),
            log: program.log.clone(),
        };
        let task = tokio::spawn(supervisor.run(child, program.stop, rx));
        Ok(Self { name: name.to_owned(), state, commands, task })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The running process's pid; `None` while it waits to be restarted.
    pub fn pid(&self) -> Option<u32> {
        Some(self.state.pid.load(Ordering::SeqCst)).filter(|&p| p != 0)
    }

    /// How many times it was restarted.
    pub fn restarts(&self) -> u32 {
        self.state.starts.load(Ordering::SeqCst).saturating_sub(1)
    }

    /// How its last run ended (`exit status: 1`, `signal: 9 (SIGKILL)`), if it ever ended.
    pub fn last_exit(&self) -> Option<String> {
        self.state.last_exit.lock().ok().and_then(|l| l.clone())
    }

    /// Sends `signal` to the running process. The supervisor restarts it if it exits.
    pub fn signal(&self, signal: Signal) -> Result<(), String> {
        let pid = self.pid().ok_or_else(|| format!("{} is not running (waiting to be restarted)", self.name))?;
        kill(pid, signal)
    }

    /// Sends `signal` and starts the process again as soon as it has exited, without backoff.
    /// Returns the new pid.
    pub async fn restart(&self, signal: Signal) -> Result<u32, String> {
        let (done, rx) = oneshot::channel();
        self.commands.send(Command::Restart { signal, done }).map_err(|_| format!("{}'s supervisor is gone", self.name))?;
        rx.await.map_err(|_| format!("{}'s supervisor is gone", self.name))?
    }

    /// A graceful upgrade (the edge's): starts a new copy with `arg` added (it waits for the
    /// running one's listening socket), sends the running one `signal` (it hands the socket
    /// over and drains), and supervises the copy once the old one has exited. If the copy
    /// exits first, the old one stays. Returns the new pid.
    pub async fn upgrade(&self, arg: &str, signal: Signal) -> Result<u32, String> {
        let (done, rx) = oneshot::channel();
        self.commands
            .send(Command::Upgrade { arg: arg.to_owned(), signal, done })
            .map_err(|_| format!("{}'s supervisor is gone", self.name))?;
        rx.await.map_err(|_| format!("{}'s supervisor is gone", self.name))?
    }

    /// Sends the stop signal, waits up to `grace` for the exit, then SIGKILL. No restart after.
    pub async fn stop(self, grace: Duration) -> Stopped {
        let (done, rx) = oneshot::channel();
        if self.commands.send(Command::Stop { grace, done }).is_err() {
            return Stopped::NotRunning;
        }
        rx.await.unwrap_or(Stopped::NotRunning)
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        // Dropping the task drops the child, which kills it (kill_on_drop). After a stop the
        // task has already ended.
        self.task.abort();
    }
}

struct Supervisor {
    name: String,
    launch: Launch,
    report: Report,
    state: Arc<State>,
    backoff: Backoff,
    /// Where the running process writes its output, if not to xtask's.
    log: Option<std::path::PathBuf>,
}

impl Supervisor {
    async fn run(mut self, mut child: Child, mut stop_signal: Signal, mut commands: mpsc::UnboundedReceiver<Command>) {
        loop {
            // Running: until it exits or we are told otherwise.
            let started = Instant::now();
            let mut pid = child.id().unwrap_or(0);
            let mut restart: Option<oneshot::Sender<Result<u32, String>>> = None;
            let status = loop {
                tokio::select! {
                    status = child.wait() => break status,
                    command = commands.recv() => match command {
                        Some(Command::Stop { grace, done }) => {
                            let _ = done.send(stop(&mut child, pid, stop_signal, grace).await);
                            self.state.pid.store(0, Ordering::SeqCst);
                            return;
                        }
                        None => return,
                        Some(Command::Upgrade { arg, signal, done }) => match self.upgrade(&mut child, pid, &arg, signal).await {
                            Ok(new) => {
                                pid = new;
                                self.state.pid.store(new, Ordering::SeqCst);
                                self.state.starts.fetch_add(1, Ordering::SeqCst);
                                (self.report)(format!("{} upgraded: pid {new} took over", self.name));
                                let _ = done.send(Ok(new));
                            }
                            Err(e) => {
                                let _ = done.send(Err(e));
                            }
                        },
                        Some(Command::Restart { signal, done }) => match kill(pid, signal) {
                            Err(e) => {
                                let _ = done.send(Err(e));
                            }
                            Ok(()) => {
                                restart = Some(done);
                                break match tokio::time::timeout(DEFAULT_GRACE, child.wait()).await {
                                    Ok(status) => status,
                                    Err(_) => {
                                        let _ = child.kill().await;
                                        child.wait().await
                                    }
                                };
                            }
                        },
                    },
                }
            };
            self.state.pid.store(0, Ordering::SeqCst);
            let status = status.map_or_else(|e| format!("unknown status: {e}"), |s| s.to_string());
            if let Ok(mut last) = self.state.last_exit.lock() {
                *last = Some(status.clone());
            }
            let mut delay = if restart.is_some() { Duration::ZERO } else { self.backoff.after_run(started.elapsed()) };
            if restart.is_some() {
                (self.report)(format!("{} (pid {pid}) exited ({status}) as asked; restarting now", self.name));
            } else {
                let said = self.log.as_deref().and_then(last_line).map(|l| format!("; its last words: {l}")).unwrap_or_default();
                (self.report)(format!("{} (pid {pid}) exited unexpectedly ({status}); restarting in {delay:?}{said}", self.name));
            }

            // Stopped: wait out the delay, then start it again, until that works.
            loop {
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    command = commands.recv() => match command {
                        Some(Command::Stop { done, .. }) => {
                            let _ = done.send(Stopped::NotRunning);
                            return;
                        }
                        None => return,
                        Some(Command::Restart { done, .. }) => {
                            restart = Some(done);
                            delay = Duration::ZERO;
                            continue;
                        }
                        Some(Command::Upgrade { done, .. }) => {
                            let _ = done.send(Err(format!("{} is not running (waiting to be restarted)", self.name)));
                            continue;
                        }
                    },
                }
                let next = match (self.launch)() {
                    Ok(program) => {
                        self.log.clone_from(&program.log);
                        program.spawn().await.map(|c| (c, program.stop))
                    }
                    Err(e) => Err(e),
                };
                match next {
                    Ok((c, signal)) => {
                        child = c;
                        stop_signal = signal;
                        let pid = child.id().unwrap_or(0);
                        self.state.pid.store(pid, Ordering::SeqCst);
                        let starts = self.state.starts.fetch_add(1, Ordering::SeqCst) + 1;
                        (self.report)(format!("{} restarted (pid {pid}, restart {})", self.name, starts - 1));
                        if let Some(done) = restart.take() {
                            let _ = done.send(Ok(pid));
                        }
                        break;
                    }
                    Err(e) => {
                        delay = self.backoff.after_run(Duration::ZERO);
                        (self.report)(format!("{}: {e}; trying again in {delay:?}", self.name));
                    }
                }
            }
        }
    }
}

impl Supervisor {
    /// Starts the new copy, signals the old one, and returns the new pid once the old one has
    /// exited (`child` is then the new one); the old one stays if the new one exits first.
    async fn upgrade(&mut self, child: &mut Child, pid: u32, arg: &str, signal: Signal) -> Result<u32, String> {
        let mut program = (self.launch)()?;
        program.args.push(arg.into());
        let mut new = program.spawn().await?;
        let new_pid = new.id().unwrap_or(0);
        // The new copy binds its side of the handover first; the old one retries meanwhile.
        kill(pid, signal)?;
        tokio::select! {
            old = tokio::time::timeout(DEFAULT_GRACE, child.wait()) => {
                match old {
                    Ok(Ok(status)) if status.success() => {}
                    Ok(Ok(status)) => (self.report)(format!("{} (pid {pid}) ended its upgrade with {status}", self.name)),
                    Ok(Err(e)) => (self.report)(format!("{} (pid {pid}): {e}", self.name)),
                    Err(_) => {
                        (self.report)(format!("{} (pid {pid}) did not finish its drain within {DEFAULT_GRACE:?}; killed", self.name));
                        let _ = child.kill().await;
                    }
                }
                self.log.clone_from(&program.log);
                *child = new;
                Ok(new_pid)
            }
            status = new.wait() => {
                let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                Err(format!("the new {} (pid {new_pid}) exited ({status}) before the old one handed over; the old one runs on", self.name))
            }
        }
    }
}

/// The last non-empty line of a process's log (at most 400 characters of it), so that a crash
/// in CI says why without the log at hand.
fn last_line(log: &std::path::Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(log).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(4096))).ok()?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).ok()?;
    let text = String::from_utf8_lossy(&tail);
    let line = text.lines().rev().map(str::trim).find(|l| !l.is_empty())?;
    Some(line.chars().take(400).collect())
}

/// Sends `signal`, waits up to `grace`, then SIGKILL.
async fn stop(child: &mut Child, pid: u32, signal: Signal, grace: Duration) -> Stopped {
    if let Ok(Some(status)) = child.try_wait() {
        return Stopped::Exited(status);
    }
    let _ = kill(pid, signal);
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(Ok(status)) => Stopped::Exited(status),
        _ => {
            let _ = child.kill().await;
            Stopped::Killed(grace)
        }
    }
}
