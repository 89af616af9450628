//! Live configuration for the services (payments, relay, workers, query), as the edge has it:
//! SIGHUP, or `POST /config/reload` on the instance's status listener, reads the mesh config
//! file again and checks all of it first; a file with any problem changes nothing and the
//! answer lists every problem (`file:line: key: problem`). A good file is handed to the
//! instance's own `apply`, which puts into effect what can change while it runs and names the
//! keys that need a restart (their running values stay). The log filter (`log_level`) is
//! applied here, for every service.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::config::{ConfigError, MeshConfig};

/// What a reload changed, and what it could not change without a restart.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Changes {
    /// Keys whose new values are in effect, e.g. `relay.batch_size`.
    pub applied: Vec<String>,
    /// Keys whose new values need a restart; the running values stay until then.
    pub restart_required: Vec<String>,
}

impl Changes {
    /// Records `key` as applied when `differs`.
    pub fn applied_if(&mut self, key: &str, differs: bool) {
        if differs {
            self.applied.push(key.to_owned());
        }
    }

    /// Records `key` as needing a restart when `differs`.
    pub fn restart_if(&mut self, key: &str, differs: bool) {
        if differs {
            self.restart_required.push(key.to_owned());
        }
    }
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Unreadable(String),
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<ConfigError>),
}

/// A reload that took effect.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Reloaded {
    /// Reloads that took effect since start.
    pub generation: u64,
    #[serde(flatten)]
    pub changes: Changes,
}

/// Applies a new config to a running instance: `(running, new, changes)`.
pub type Apply = Box<dyn Fn(&MeshConfig, &MeshConfig, &mut Changes) + Send + Sync>;

/// A running instance's config, reloadable from its file.
pub struct Live {
    source: PathBuf,
    current: Mutex<MeshConfig>,
    apply: Apply,
    generation: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").field("source", &self.source).field("generation", &self.generation).finish_non_exhaustive()
    }
}

impl Live {
    pub fn new(config: &MeshConfig, apply: Apply) -> Arc<Self> {
        Arc::new(Self {
            source: config.source.clone(),
            current: Mutex::new(config.clone()),
            apply,
            generation: AtomicU64::new(0),
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        })
    }

    /// The config in effect (with the running values of keys that need a restart).
    pub fn current(&self) -> MeshConfig {
        self.current.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reads the file again and applies it, or changes nothing and says why. One at a time.
    pub fn reload(&self) -> Result<Reloaded, ReloadError> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let outcome = self.reload_locked(&mut current);
        match &outcome {
            Ok(r) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                tracing::info!(generation = r.generation, applied = ?r.changes.applied, restart_required = ?r.changes.restart_required, "config reloaded");
            }
            Err(e) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(problem = %e, "config reload refused; the running config is unchanged");
            }
        }
        outcome
    }

    fn reload_locked(&self, current: &mut MeshConfig) -> Result<Reloaded, ReloadError> {
        let env = |name: &str| std::env::var(name).ok();
        let new = read(&self.source, &env)?;
        let mut changes = Changes::default();
        apply_log_level(&current.log_level, &new.log_level, &mut changes);
        (self.apply)(current, &new, &mut changes);
        *current = new;
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(Reloaded { generation, changes })
    }

    /// The answer to `POST /config/reload` on a status listener.
    pub fn answer(&self) -> crate::status::Reply {
        match self.reload() {
            Ok(done) => crate::status::Reply::json(serde_json::json!({"reloaded": true, "generation": done.generation, "applied": done.changes.applied, "restart_required": done.changes.restart_required}).to_string()),
            Err(ReloadError::Invalid(problems)) => {
                crate::status::Reply { status: 400, content_type: "application/json", body: refusal_of(&problems).to_string() }
            }
            Err(e) => crate::status::Reply { status: 400, content_type: "application/json", body: refusal(&e).to_string() },
        }
    }

    /// Reload counters in Prometheus text format.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = writeln!(out, "# HELP paymesh_config_reloads_total Config reloads, by outcome (error: refused, nothing changed).");
        let _ = writeln!(out, "# TYPE paymesh_config_reloads_total counter");
        let _ = writeln!(out, "paymesh_config_reloads_total{{outcome=\"ok\"}} {}", self.ok.load(Ordering::Relaxed));
        let _ = writeln!(out, "paymesh_config_reloads_total{{outcome=\"error\"}} {}", self.failed.load(Ordering::Relaxed));
    }
}

/// Reads and checks the config file: the config, or every problem of it.
pub fn read(source: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<MeshConfig, ReloadError> {
    let text =
        std::fs::read_to_string(source).map_err(|e| ReloadError::Unreadable(format!("{}: cannot read the file: {e}", source.display())))?;
    MeshConfig::parse_all(source, &text, env).map_err(ReloadError::Invalid)
}

/// Applies a changed `log_level` to this process (none: `RUST_LOG`, else `info`).
pub fn apply_log_level(old: &Option<String>, new: &Option<String>, changes: &mut Changes) {
    if old == new {
        return;
    }
    let filter = new.clone().unwrap_or_else(|| std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()));
    if let Err(e) = crate::telemetry::set_log_filter(&filter) {
        tracing::warn!(%e, "the new log filter was not applied");
    }
    changes.applied.push("log_level".into());
}

/// The JSON body of a refused reload (`code` 3, the message, and each problem's place).
pub fn refusal(e: &impl std::fmt::Display) -> serde_json::Value {
    serde_json::json!({"code": 3, "message": format!("the config was not reloaded; the running config is unchanged:\n{e}")})
}

/// [`refusal`], with every problem of an invalid file listed by file, line and key.
pub fn refusal_of(problems: &[ConfigError]) -> serde_json::Value {
    let list: Vec<_> = problems
        .iter()
        .map(|p| serde_json::json!({"file": p.file.display().to_string(), "line": p.line, "key": p.key, "problem": p.problem}))
        .collect();
    let mut body = refusal(&problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"));
    body["problems"] = serde_json::Value::Array(list);
    body
}

/// The process's reloadable config, for SIGHUP (one instance per process; the first wins).
static PROCESS: OnceLock<Arc<Live>> = OnceLock::new();

/// Makes `live` the one SIGHUP reloads.
pub fn register(live: &Arc<Live>) {
    let _ = PROCESS.set(live.clone());
}

/// Reloads on every SIGHUP until the process ends. `cli::run_instance` starts it.
pub fn on_hangup() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; reload with POST /config/reload on the status listener");
                return;
            }
        };
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                match PROCESS.get() {
                    Some(live) => {
                        let live = live.clone();
                        // The outcome is logged by the reload itself.
                        let _ = tokio::task::spawn_blocking(move || live.reload()).await;
                    }
                    None => tracing::warn!("SIGHUP: this instance has not started yet; nothing reloaded"),
                }
            }
        });
    }
}
