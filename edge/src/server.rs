//! Assembling the pingora server: the proxy listener (REST over HTTP/1.1 and h2c, gRPC over
//! h2c), the admin listener, and the health checker; then running it until shutdown.

use std::sync::Arc;

use async_trait::async_trait;
use paymesh_core::config::MeshConfig;
use pingora::apps::HttpServerOptions;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::admin::Admin;
use crate::client_io::WithClientDeadline;
use crate::health::HealthChecker;
use crate::lanes::Lanes;
use crate::live::{LiveEdge, Reloader};
use crate::proxy::EdgeProxy;
use crate::state::EdgeState;

/// How long an HTTP/2 client connection may have no stream before it is closed.
const H2_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// Longest an upgrading edge checks its instances before it accepts calls.
const WARM_UP: std::time::Duration = std::time::Duration::from_secs(5);

/// Why the edge could not start.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("{0}: the mesh config has no [edge] section; see mesh-config/README.md")]
    NoEdgeSection(String),
    #[error("{file}: {source}")]
    Catalog {
        file: String,
        #[source]
        source: crate::catalog::CatalogError,
    },
    #[error("cannot start the proxy: {0}")]
    Pingora(String),
}

/// Validates the config and builds the shared state (descriptors, routes, clusters),
/// reloadable from the config's file.
pub fn prepare(config: &MeshConfig) -> Result<Arc<LiveEdge>, EdgeError> {
    let file = config.source.display().to_string();
    let edge = config.edge.clone().ok_or_else(|| EdgeError::NoEdgeSection(file.clone()))?;
    let state = EdgeState::build_with(edge, config.mesh_tls.as_ref()).map_err(|source| EdgeError::Catalog { file, source })?;
    Ok(LiveEdge::new(state, config))
}

/// Runs the edge until `shutdown` says to stop. Blocks the calling thread.
pub fn run(live: Arc<LiveEdge>, shutdown: Box<dyn ShutdownSignalWatch + Send + Sync>) -> Result<(), EdgeError> {
    run_with(live, shutdown, None)
}

/// [`run`], on a listening socket a running edge handed over (see [`crate::upgrade`]).
pub fn run_with(
    live: Arc<LiveEdge>,
    shutdown: Box<dyn ShutdownSignalWatch + Send + Sync>,
    inherited: Option<std::net::TcpListener>,
) -> Result<(), EdgeError> {
    // What a reload cannot change (listeners, threads, public TLS, the JWKS refresher) is
    // taken from the state at start.
    let state = live.load();
    let cfg = &state.config;
    let conf = ServerConf {
        threads: cfg.threads,
        // SIGTERM: stop accepting, let in-flight requests finish for up to this long.
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(10),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    // One proxy app per lane (its own upstream connections); see lanes.
    let make_app = || {
        let mut proxy = pingora::proxy::http_proxy(&server.configuration, EdgeProxy { live: live.clone() });
        let mut options = HttpServerOptions::default();
        options.h2c = true;
        // An HTTP/2 connection with no stream for this long is closed (clients reconnect).
        options.h2_idle_timeout = Some(H2_IDLE_TIMEOUT);
        proxy.server_options = Some(options);
        // Every client connection gets read deadlines (see client_io).
        WithClientDeadline { app: Arc::new(proxy), timeout: cfg.client_read_timeout }
    };
    let tls = match &cfg.tls {
        Some(t) => {
            Some(Arc::new(crate::public_tls::PublicTls::load(&t.cert, &t.key).map_err(|e| EdgeError::Pingora(format!("edge.tls: {e}")))?))
        }
        None => None,
    };
    if inherited.is_some() {
        // The running edge stops accepting once it has handed the socket over; connections
        // wait in the socket's queue while this one checks its instances.
        let warm = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| EdgeError::Pingora(format!("{e}")))?;
        warm.block_on(crate::health::warm_up(&live, WARM_UP));
    }
    let lanes = Lanes::start_on(cfg.listen, inherited, cfg.threads, tls, make_app).map_err(|e| EdgeError::Pingora(format!("{e}")))?;

    let mut admin = Service::new("paymesh admin".to_owned(), Admin { live: live.clone() });
    // SO_REUSEPORT: an upgrading edge binds it while this one still holds it.
    let mut admin_socket = pingora::listeners::TcpSocketOptions::default();
    admin_socket.so_reuseport = Some(true);
    admin.add_tcp_with_settings(&cfg.admin_listen.to_string(), admin_socket);

    let health = background_service("health checks", HealthChecker { live: live.clone() });
    let hangup = background_service("config reloads", Reloader { live: live.clone() });

    server.add_service(admin);
    server.add_service(health);
    server.add_service(hangup);
    if let Some(auth) = &state.auth {
        server.add_service(background_service("jwks refresh", crate::auth::KeyRefresher { sets: auth.key_sets() }));
    }
    tracing::info!(listen = %cfg.listen, admin = %cfg.admin_listen, "edge starting");
    server.run(RunArgs { shutdown_signal: lanes.drain_on(cfg.listen, shutdown) });
    lanes.stop();
    Ok(())
}

/// SIGTERM: graceful; SIGINT (Ctrl-C): graceful too (a local stack's Ctrl-C should drain);
/// SIGQUIT: graceful upgrade (hand the listening socket to a new edge started with
/// `--upgrade`, then drain; see [`crate::upgrade`]).
#[derive(Debug, Default)]
pub struct UnixSignals;

#[async_trait]
impl ShutdownSignalWatch for UnixSignals {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int), Ok(mut quit)) =
            (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::quit()))
        else {
            tracing::error!("cannot install signal handlers; the edge can only be killed");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => ShutdownSignal::GracefulTerminate,
            _ = int.recv() => ShutdownSignal::GracefulTerminate,
            _ = quit.recv() => ShutdownSignal::GracefulUpgrade,
        }
    }
}

/// A shutdown trigger for tests and embedders: resolves when the sender fires or drops.
#[derive(Debug)]
pub struct ShutdownOnSignal(tokio::sync::Mutex<tokio::sync::oneshot::Receiver<()>>);

impl ShutdownOnSignal {
    pub fn new() -> (tokio::sync::oneshot::Sender<()>, Self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (tx, Self(tokio::sync::Mutex::new(rx)))
    }
}

#[async_trait]
impl ShutdownSignalWatch for ShutdownOnSignal {
    async fn recv(&self) -> ShutdownSignal {
        let mut rx = self.0.lock().await;
        let _ = (&mut *rx).await;
        ShutdownSignal::GracefulTerminate
    }
}
