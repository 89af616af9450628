//! Serving one instance of a repair service.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use paymesh_core::config::MeshConfig;
use paymesh_core::status::Reply;
use tonic_health::ServingStatus;

/// How often the database is pinged for health.
const PING_EVERY: Duration = Duration::from_secs(1);

/// Extra Prometheus text for the status listener's `/metrics`.
pub type Metrics = Arc<dyn Fn() -> String + Send + Sync>;

/// One instance: which service, its name, where it listens, its database pool.
#[derive(Debug)]
pub struct Instance<'a> {
    pub config: &'a MeshConfig,
    /// The instance's name (its certificate's too).
    pub name: &'a str,
    /// The gRPC service it serves, e.g. `repair.v1.Stock` (health is reported for it).
    pub service: &'static str,
    pub listener: tokio::net::TcpListener,
    pub status_listen: Option<SocketAddr>,
    pub pool: deadpool_postgres::Pool,
}

/// Serves `routes` with health, reflection and (with `[mesh_tls]`) mTLS until `shutdown`,
/// then drains: NOT_SERVING for `payments.drain_delay` while still serving, then stops
/// accepting and lets calls finish.
pub async fn run(
    inst: Instance<'_>,
    routes: tonic::service::Routes,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let tls = inst
        .config
        .mesh_tls
        .as_ref()
        .map(|t| paymesh_core::tls::MeshTls::load(t.files_for(inst.name)))
        .transpose()
        .map_err(|e| format!("mesh_tls: {e}"))?;
    let (reporter, health) = tonic_health::server::health_reporter();
    let watcher = tokio::spawn(watch_database(reporter.clone(), inst.pool.clone(), inst.service));
    let descriptors = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(paymesh_repair_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    // grpcurl 1.8 speaks only v1alpha.
    let routes = routes
        .add_service(health)
        .add_service(descriptors().build_v1().map_err(|e| e.to_string())?)
        .add_service(descriptors().build_v1alpha().map_err(|e| e.to_string())?);

    let (status_stop, status_rx) = tokio::sync::watch::channel(false);
    if let Some(addr) = inst.status_listen {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let (name, service, pool) = (inst.name.to_owned(), inst.service, inst.pool.clone());
        let mut rx = status_rx.clone();
        tokio::spawn(paymesh_core::status::serve(
            listener,
            move |path| {
                let (name, pool, metrics) = (name.clone(), pool.clone(), metrics.clone());
                async move {
                    let up = pool.get().await.is_ok();
                    match path.as_str() {
                        "/status" => Reply::json(format!("{{\"instance\":\"{name}\",\"service\":\"{service}\",\"database_up\":{up}}}")),
                        "/metrics" => Reply::metrics(format!(
                            "# HELP paymesh_repair_database_up 1 while the service's database answers.\n# TYPE paymesh_repair_database_up gauge\npaymesh_repair_database_up{{instance=\"{name}\",service=\"{service}\"}} {}\n{}",
                            u8::from(up),
                            metrics()
                        )),
                        _ => Reply::not_found(&path, "/status, /metrics"),
                    }
                }
            },
            async move {
                let _ = rx.changed().await;
            },
        ));
    }

    let drain = inst.config.payments.drain_delay;
    let (name, service) = (inst.name.to_owned(), inst.service);
    let watching = watcher.abort_handle();
    let signal = async move {
        shutdown.await;
        watching.abort();
        reporter.set_service_status("", ServingStatus::NotServing).await;
        reporter.set_service_status(service, ServingStatus::NotServing).await;
        tracing::info!(instance = %name, ?drain, "draining: NOT_SERVING, still serving until the delay is over");
        tokio::time::sleep(drain).await;
    };
    tracing::info!(instance = %inst.name, service = inst.service, addr = ?inst.listener.local_addr().ok(), mtls = tls.is_some(), "serving");
    let router = tonic::transport::Server::builder().add_routes(routes);
    let served = match tls {
        Some(tls) => router.serve_with_incoming_shutdown(paymesh_core::tls::incoming(inst.listener, Arc::new(tls)), signal).await,
        None => router.serve_with_incoming_shutdown(paymesh_core::tls::plain_incoming(inst.listener), signal).await,
    };
    watcher.abort();
    let _ = status_stop.send(true);
    inst.pool.close();
    served.map_err(|e| e.to_string())
}

/// SERVING while the database answers a ping, NOT_SERVING otherwise.
async fn watch_database(reporter: tonic_health::server::HealthReporter, pool: deadpool_postgres::Pool, service: &'static str) {
    let mut last = None;
    loop {
        let up = match pool.get().await {
            Ok(c) => c.simple_query("SELECT 1").await.is_ok(),
            Err(_) => false,
        };
        let status = if up { ServingStatus::Serving } else { ServingStatus::NotServing };
        if last != Some(up) {
            reporter.set_service_status("", status).await;
            reporter.set_service_status(service, status).await;
            if last.is_some() {
                tracing::warn!(up, "database health changed");
            }
            last = Some(up);
        }
        tokio::time::sleep(PING_EVERY).await;
    }
}
