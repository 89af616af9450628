//! The running configuration and its reload (SIGHUP, or `POST /config/reload` on the admin
//! listener).
//!
//! A reload reads the mesh config file again and checks all of it first: a file with any
//! problem changes nothing, and the answer lists every problem with its file, line and key.
//! A good file becomes a new [`EdgeState`] built next to the running one
//! ([`EdgeState::following`]) and is swapped in atomically: calls that started before keep
//! the state they hold, calls after it see only the new one. Reloads run one at a time.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use paymesh_core::config::{ConfigError, MeshConfig, MeshTlsConfig};

use crate::state::{Changes, EdgeState};

/// The edge's current state, replaceable while it runs.
#[derive(Debug)]
pub struct LiveEdge {
    current: ArcSwap<EdgeState>,
    /// The file reloads read; `None`: built in memory (reload refuses).
    source: Option<PathBuf>,
    /// Settings outside `[edge]` the edge started with.
    mesh_tls: Option<MeshTlsConfig>,
    log_level: Mutex<Option<String>>,
    /// Held for the whole of a reload.
    reloading: Mutex<()>,
    generation: tokio::sync::watch::Sender<u64>,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    /// The relays and workers the dashboard reads (from the mesh config, updated by reloads).
    peers: Mutex<Arc<Vec<crate::dashboard::pipeline::Peer>>>,
    started: std::time::Instant,
    /// A digest of the file's content when it was last read (at start or by a reload, good
    /// or bad), so a watch reloads on a change and never again for the same content.
    seen: Mutex<Option<u64>>,
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the edge was not started from a config file; there is nothing to reload")]
    NoFile,
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<ConfigError>),
    #[error("{0}: the new config has no [edge] section")]
    NoEdgeSection(String),
    #[error("{file}: {why}")]
    Catalog { file: String, why: String },
}

/// A reload that took effect.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Reloaded {
    /// Counts reloads that took effect since start (the start is 0).
    pub generation: u64,
    #[serde(flatten)]
    pub changes: Changes,
}

impl LiveEdge {
    /// The state of a config file, reloadable from it.
    pub fn new(state: Arc<EdgeState>, config: &MeshConfig) -> Arc<Self> {
        let live = Self::with_source(state, Some(config.source.clone()), config.mesh_tls.clone(), config.log_level.clone());
        *live.peers.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(crate::dashboard::pipeline::peers_of(config));
        live
    }

    /// A state built in memory (tests, embedders): it cannot be reloaded.
    pub fn fixed(state: Arc<EdgeState>) -> Arc<Self> {
        Self::with_source(state, None, None, None)
    }

    fn with_source(state: Arc<EdgeState>, source: Option<PathBuf>, mesh_tls: Option<MeshTlsConfig>, log: Option<String>) -> Arc<Self> {
        Arc::new(Self {
            current: ArcSwap::new(state),
            source,
            mesh_tls,
            log_level: Mutex::new(log),
            reloading: Mutex::new(()),
            generation: tokio::sync::watch::Sender::new(0),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            seen: Mutex::new(None),
            peers: Mutex::new(Arc::new(Vec::new())),
            started: std::time::Instant::now(),
        })
        .with_seen_now()
    }

    fn with_seen_now(self: Arc<Self>) -> Arc<Self> {
        let digest = self.source.as_ref().and_then(|p| std::fs::read(p).ok()).map(|b| digest(&b));
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = digest;
        self
    }

    /// Whether the file's content differs from what was last read.
    pub fn file_changed(&self) -> bool {
        let Some(now) = self.source.as_ref().and_then(|p| std::fs::read(p).ok()).map(|b| digest(&b)) else { return false };
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) != Some(now)
    }

    /// The state new calls use.
    pub fn load(&self) -> Arc<EdgeState> {
        self.current.load_full()
    }

    /// Reloads that took effect since start.
    pub fn generation(&self) -> u64 {
        *self.generation.borrow()
    }

    /// How long the edge has run.
    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// The relays and workers of the mesh config (what the dashboard reads).
    pub fn peers(&self) -> Arc<Vec<crate::dashboard::pipeline::Peer>> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Wakes on every reload that took effect.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Reads the config file again and applies it, or changes nothing and says why.
    pub fn reload(&self) -> Result<Reloaded, ReloadError> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        let outcome = self.reload_locked();
        match &outcome {
            Ok(r) => {
                self.reloads_ok.fetch_add(1, Ordering::Relaxed);
                tracing::info!(generation = r.generation, applied = ?r.changes.applied, restart_required = ?r.changes.restart_required, "config reloaded");
            }
            Err(e) => {
                self.reloads_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(problem = %e, "config reload refused; the running config is unchanged");
            }
        }
        outcome
    }

    fn reload_locked(&self) -> Result<Reloaded, ReloadError> {
        let source = self.source.as_ref().ok_or(ReloadError::NoFile)?;
        let env = |name: &str| std::env::var(name).ok();
        let text = std::fs::read_to_string(source)
            .map_err(|e| ReloadError::Catalog { file: source.display().to_string(), why: format!("cannot read the file: {e}") })?;
        let problems = MeshConfig::check(source, &text, &env);
        if !problems.is_empty() {
            return Err(ReloadError::Invalid(problems));
        }
        let mesh = MeshConfig::parse(source, &text, &env).map_err(|e| ReloadError::Invalid(vec![e]))?;
        let file = source.display().to_string();
        let edge = mesh.edge.clone().ok_or_else(|| ReloadError::NoEdgeSection(file.clone()))?;
        let (next, mut changes) = self.load().following(edge).map_err(|e| ReloadError::Catalog { file, why: e.0 })?;
        if mesh.mesh_tls != self.mesh_tls {
            changes.restart_required.push("mesh_tls".into());
        }
        {
            let mut log = self.log_level.lock().unwrap_or_else(|e| e.into_inner());
            paymesh_core::reload::apply_log_level(&log, &mesh.log_level, &mut changes);
            log.clone_from(&mesh.log_level);
        }
        self.current.store(next);
        *self.peers.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(crate::dashboard::pipeline::peers_of(&mesh));
        let mut generation = 0;
        self.generation.send_modify(|g| {
            *g += 1;
            generation = *g;
        });
        Ok(Reloaded { generation, changes })
    }

    /// Reload counters in Prometheus text format.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = writeln!(out, "# HELP paymesh_edge_config_reloads_total Config reloads, by outcome (error: refused, nothing changed).");
        let _ = writeln!(out, "# TYPE paymesh_edge_config_reloads_total counter");
        let _ = writeln!(out, "paymesh_edge_config_reloads_total{{outcome=\"ok\"}} {}", self.reloads_ok.load(Ordering::Relaxed));
        let _ = writeln!(out, "paymesh_edge_config_reloads_total{{outcome=\"error\"}} {}", self.reloads_failed.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP paymesh_edge_config_generation Reloads that took effect since start.");
        let _ = writeln!(out, "# TYPE paymesh_edge_config_generation gauge");
        let _ = writeln!(out, "paymesh_edge_config_generation {}", *self.generation.borrow());
    }
}

/// A digest of file content (change detection, not security).
fn digest(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// How often a watched config file is compared with what was last read.
const WATCH_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Reloads the config on SIGHUP (Envoy's and nginx's habit), and when the file's content
/// changes if the config says `reload_on_change` (a mounted ConfigMap, say).
#[derive(Debug)]
pub struct Reloader {
    pub live: Arc<LiveEdge>,
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for Reloader {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(%e, "cannot listen for SIGHUP; reload with POST /config/reload instead");
                None
            }
        };
        let mut watch = tokio::time::interval(WATCH_EVERY);
        watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let why = tokio::select! {
                _ = shutdown.changed() => return,
                got = async { match &mut hangup { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    if got.is_none() {
                        hangup = None;
                        continue;
                    }
                    "SIGHUP"
                }
                _ = watch.tick() => {
                    if !(self.live.load().config.reload_on_change && self.live.file_changed()) {
                        continue;
                    }
                    "the file changed"
                }
            };
            tracing::info!(why, "reloading the config");
            let live = self.live.clone();
            // The outcome is logged by the reload itself.
            let _ = tokio::task::spawn_blocking(move || live.reload()).await;
        }
    }
}
