//! Running one payments instance: pool, migrations, health, reflection, the gRPC server and
//! graceful shutdown.

use std::future::Future;
use std::time::{Duration, Instant};

use paymesh_core::config::{MeshConfig, PaymentsInstance};
use paymesh_proto::payments::v1::payments_server::PaymentsServer;
use tokio::net::TcpListener;
use tonic_health::ServingStatus;

use crate::grpc::PaymentsApi;
use crate::health;
use crate::store::{PaymentStore, connect_pool, schema};

/// How long start-up keeps trying to reach the database before giving up.
const STARTUP_DEADLINE: Duration = Duration::from_secs(30);
/// How often expired idempotency records are deleted.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(600);

/// Why an instance could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] paymesh_core::config::ConfigError),
    #[error("shard {shard}: {problem}")]
    Database { shard: u32, problem: String },
    #[error("cannot listen on {addr}: {source}; is another process using it?")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("mesh_tls: {0}")]
    Tls(String),
}

/// Binds the instance's configured address and serves until `shutdown` resolves.
pub async fn run(config: &MeshConfig, instance: &str, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
    let inst = config.payments_instance(instance)?;
    let listener = TcpListener::bind(inst.listen).await.map_err(|source| ServeError::Bind { addr: inst.listen, source })?;
    serve(listener, config, instance, shutdown).await
}

/// Serves instance `instance` of `config` on an already-bound listener (tests bind port 0).
pub async fn serve(
    listener: TcpListener,
    config: &MeshConfig,
    instance: &str,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let inst: PaymentsInstance = config.payments_instance(instance)?.clone();
    // mTLS: only clients with a certificate from the mesh CA get in.
    let tls =
        config.mesh_tls.as_ref().map(|t| paymesh_core::tls::MeshTls::load(t.files_for(instance))).transpose().map_err(ServeError::Tls)?;
    let shard = config.shard(inst.shard).ok_or_else(|| ServeError::Database { shard: inst.shard.0, problem: "not declared".into() })?;
    let db_err = |problem: String| ServeError::Database { shard: inst.shard.0, problem };
    let pool = connect_pool(&shard.database).map_err(db_err)?;
    migrate_with_retry(&pool, &shard.database.url).await.map_err(db_err)?;

    let (reporter, health_service) = tonic_health::server::health_reporter();
    health::set(&reporter, ServingStatus::NotServing).await;
    let watcher = tokio::spawn(health::watch_database(reporter.clone(), pool.clone(), config.payments.health_check_interval));

    let store =
        PaymentStore::new(pool.clone(), inst.shard, config.payments.idempotency_retention).with_group_commit(config.payments.group_commit);
    let metrics = std::sync::Arc::new(crate::metrics::RpcMetrics::default());
    // Reloads (SIGHUP, POST /config/reload on the status listener) change what they can.
    let live = {
        let (store, name, shard) = (store.clone(), inst.name.clone(), inst.shard);
        paymesh_core::reload::Live::new(
            config,
            Box::new(move |old, new, changes| crate::reload::apply(&store, &name, shard, old, new, changes)),
        )
    };
    paymesh_core::reload::register(&live);
    let (status_stop, status_rx) = tokio::sync::watch::channel(false);
    if let Some(addr) = inst.status_listen {
        let listener = TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr, source })?;
        let (metrics, pool, labels) = (metrics.clone(), pool.clone(), format!("instance=\"{}\",shard=\"{}\"", inst.name, inst.shard));
        let batches = store.clone();
        let mut rx = status_rx.clone();
        let reloads = live.clone();
        tokio::spawn(paymesh_core::status::serve_with(
            listener,
            move |path| {
                let (metrics, pool, labels, batches, reloads) =
                    (metrics.clone(), pool.clone(), labels.clone(), batches.clone(), reloads.clone());
                async move {
                    match path.as_str() {
                        "/metrics" => {
                            let mut out = metrics.render(&labels, &pool) + &crate::metrics::render_batches(batches.batch_stats(), &labels);
                            reloads.render_metrics(&mut out);
                            paymesh_core::status::Reply::metrics(out)
                        }
                        "/status" => paymesh_core::status::Reply::json(format!("{{{}}}", labels.replace('=', ":"))),
                        _ => paymesh_core::status::Reply::not_found(&path, "/metrics, /status, POST /config/reload"),
                    }
                }
            },
            Some(live.clone()),
            async move {
                let _ = rx.changed().await;
            },
        ));
    }
    let expiry = tokio::spawn(expire_keys(store.clone()));

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(paymesh_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| db_err(format!("reflection: {e}")))?;
    // grpcurl 1.8 speaks only v1alpha.
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(paymesh_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| db_err(format!("reflection: {e}")))?;

    let addr = listener.local_addr().ok();
    tracing::info!(instance = %inst.name, shard = %inst.shard, ?addr, "payments instance serving");

    // On shutdown: report NOT_SERVING and keep serving for the drain delay, so balancers
    // (the edge's health watch, a readiness probe) stop sending new calls first; then stop
    // accepting (HTTP/2 GOAWAY) and let in-flight calls finish, no longer than the grace.
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let drain_reporter = reporter.clone();
    let drain_delay = config.payments.drain_delay;
    let drain_name = inst.name.clone();
    // The database watch must not report SERVING again while draining.
    let watching = watcher.abort_handle();
    let signal = async move {
        shutdown.await;
        watching.abort();
        health::set(&drain_reporter, ServingStatus::NotServing).await;
        tracing::info!(instance = %drain_name, ?drain_delay, "draining: NOT_SERVING, still serving until the delay is over");
        tokio::time::sleep(drain_delay).await;
        let _ = stopping_tx.send(());
    };
    let server = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(PaymentsServer::new(PaymentsApi::new(
            store,
            config.shard_count(),
            paymesh_core::identity::Policy::of(config),
            metrics,
        )));
    type Serving = std::pin::Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>>;
    let server: Serving = match tls {
        Some(tls) => Box::pin(server.serve_with_incoming_shutdown(paymesh_core::tls::incoming(listener, std::sync::Arc::new(tls)), signal)),
        None => Box::pin(server.serve_with_incoming_shutdown(paymesh_core::tls::plain_incoming(listener), signal)),
    };
    let grace = config.payments.shutdown_grace;
    let result = tokio::select! {
        r = server => r.map_err(ServeError::from),
        () = async { if stopping_rx.await.is_ok() { tokio::time::sleep(grace).await } else { std::future::pending().await } } => {
            tracing::warn!(?grace, "in-flight calls did not finish within the shutdown grace; exiting anyway");
            Ok(())
        }
    };
    watcher.abort();
    expiry.abort();
    let _ = status_stop.send(true);
    pool.close();
    tracing::info!(instance = %inst.name, "payments instance stopped");
    result
}

async fn migrate_with_retry(pool: &deadpool_postgres::Pool, url: &str) -> Result<(), String> {
    let url = paymesh_core::config::redact_url(url);
    let deadline = Instant::now() + STARTUP_DEADLINE;
    loop {
        let attempt = async {
            let mut client = pool.get().await.map_err(|e| e.to_string())?;
            schema::migrate(&mut client).await.map_err(|e| e.to_string())
        };
        match attempt.await {
            Ok(applied) => {
                tracing::info!(applied, "schema is current");
                return Ok(());
            }
            Err(e) if Instant::now() < deadline => {
                tracing::warn!(error = %e, %url, "database not ready; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                return Err(format!("cannot prepare the database at {url} within {STARTUP_DEADLINE:?}: {e}; is PostgreSQL running there?"));
            }
        }
    }
}

async fn expire_keys(store: PaymentStore) {
    loop {
        tokio::time::sleep(EXPIRY_INTERVAL).await;
        match store.expire_idempotency_keys().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "expired idempotency keys"),
            Err(e) => tracing::warn!(error = %e, "cannot expire idempotency keys; will retry"),
        }
    }
}
