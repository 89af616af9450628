//! The repair centre's service desk (seed 002's "서비스", a core domain).
//!
//! Its list of requests is built only from the intake's events (`repair.requested`,
//! `repair.cancelled`), consumed exactly once in the consumer group `desk`: requests filed
//! while the desk was down are listed when it is back, and several desk instances share the
//! work without listing one twice. An engineer accepts a listed request only once its part is
//! reserved in stock (a synchronous call through the edge, behind the edge's breaker; stock
//! unreachable means the accept is refused, never done without a part); completing it
//! consumes the part and charges the repair through Paymesh with idempotency keys derived
//! from the request id. Each step appends its event to the desk's outbox.
//!
//! - [`store`]: the list's table and migrations;
//! - [`apply`]: the intake's events into the list;
//! - [`upstream`]: the calls through the edge;
//! - [`release`]: parts of requests cancelled after their accept, given back;
//! - [`grpc`]: the `repair.v1.ServiceDesk` service.

pub mod apply;
pub mod grpc;
pub mod release;
pub mod store;
pub mod upstream;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use paymesh_core::config::MeshConfig;
use paymesh_repair_proto::repair::v1::service_desk_server::ServiceDeskServer;
use paymesh_repair_proto::topics;

const DATABASE_PATIENCE: Duration = Duration::from_secs(60);

/// Runs desk instance `name` of `config` until `shutdown`: the API and the consumer.
pub async fn run(config: &MeshConfig, name: &str, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), String> {
    let repair = config.repair.as_ref().ok_or("the mesh config has no [repair] section")?;
    let section = repair.desk.as_ref().ok_or("the mesh config has no [repair.desk] section")?;
    let inst =
        section.instances.iter().find(|i| i.name == name).ok_or_else(|| format!("no [[repair.desk.instances]] is named '{name}'"))?;
    let edge = config.edge.as_ref().ok_or("the desk calls the stock and Paymesh through the edge: the mesh config has no [edge]")?;
    let credential = match (&repair.credential, &repair.credential_env) {
        (Some(c), _) => Some(c.expose().to_owned()),
        (None, Some(var)) if edge.auth.is_some() => {
            return Err(format!("[repair] credential_env names {var}, which is not set; set it to the desk's token or API key"));
        }
        (None, None) if edge.auth.is_some() => {
            return Err("the edge authenticates: set [repair] credential_env to a variable holding the desk's credential".into());
        }
        (None, _) => None,
    };
    let kafka = config.kafka.as_ref().ok_or("the desk reads the intake's events: the mesh config has no [kafka] section")?;
    let listener = tokio::net::TcpListener::bind(inst.listen).await.map_err(|e| format!("cannot listen on {}: {e}", inst.listen))?;
    let pool = paymesh_repair_kit::db::pool(&section.database, &format!("paymesh-desk-{name}"))?;
    paymesh_repair_kit::db::migrate_when_up(&pool, "desk", store::MIGRATIONS, DATABASE_PATIENCE).await?;
    let bootstrap = kafka.bootstrap.wait(paymesh_core::config::BROKER_PATIENCE).await?;
    let consumer = Arc::new(paymesh_repair_kit::consume::Consumer::new(
        name,
        "desk",
        &[topics::REQUESTED, topics::CANCELLED],
        &bootstrap,
        pool.clone(),
        apply::IntakeEvents,
    )?);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let consuming = tokio::spawn({
        let consumer = consumer.clone();
        async move { consumer.run(stop_rx).await }
    });
    let desk = grpc::Desk {
        pool: pool.clone(),
        edge: upstream::Edge::new(edge.listen, credential, repair.merchant_id.clone())?,
        policy: paymesh_core::identity::Policy::of(config),
    };
    let releasing = tokio::spawn(release::run(pool.clone(), desk.edge.clone(), stop_tx.subscribe()));
    let metrics = paymesh_repair_kit::consume::metrics("desk", name, consumer.counters.clone());
    let instance = paymesh_repair_kit::serve::Instance {
        config,
        name,
        service: paymesh_repair_proto::services::DESK,
        listener,
        status_listen: inst.status_listen,
        pool,
    };
    let served =
        paymesh_repair_kit::serve::run(instance, tonic::service::Routes::new(ServiceDeskServer::new(desk)), metrics, shutdown).await;
    let _ = stop_tx.send(true);
    let _ = consuming.await;
    let _ = releasing.await;
    served
}
