//! The repair centre's progress view (seed 002's CQRS view): a customer reads where a
//! request is without the view touching any other service's data. Every repair event
//! (requested, cancelled, accepted, out of stock, repaired, paid) becomes a step of its
//! request, applied exactly once (consumer group `progress`); the request's status is its
//! furthest step, so events of different topics may arrive in any order.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use paymesh_core::config::MeshConfig;
use paymesh_repair_kit::consume::{Apply, Failure};
use paymesh_repair_proto::repair::v1 as pb;
use paymesh_repair_proto::repair::v1::repair_progress_server::RepairProgressServer;
use paymesh_repair_proto::topics;
use prost::Message;
use tonic::{Request, Response, Status};

const DATABASE_PATIENCE: Duration = Duration::from_secs(60);

/// The view's migrations.
pub const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        "CREATE TABLE progress_step (
            request_id text        NOT NULL,
            event      text        NOT NULL,
            at         timestamptz NOT NULL,
            detail     text        NOT NULL DEFAULT '',
            PRIMARY KEY (request_id, event, at)
        );",
    ),
    (2, paymesh_repair_kit::consume::DDL),
];

/// The statuses, furthest last: a request's status is the furthest of its steps.
/// A cancellation after an accept still counts (the desk gives the part back); after the
/// repair it is too late.
const ORDER: [(&str, &str); 6] = [
    (topics::REQUESTED, "requested"),
    (topics::OUT_OF_STOCK, "out_of_stock"),
    (topics::ACCEPTED, "accepted"),
    (topics::CANCELLED, "cancelled"),
    (topics::REPAIRED, "repaired"),
    (topics::PAID, "paid"),
];

/// The status of a request whose steps are `events`.
pub fn status_of<'a>(events: impl IntoIterator<Item = &'a str>) -> &'static str {
    let rank = |e: &str| ORDER.iter().position(|(t, _)| *t == e);
    events.into_iter().filter_map(rank).max().map_or("unknown", |i| ORDER[i].1)
}

/// Every repair event into a step.
#[derive(Debug, Clone, Copy)]
pub struct Steps;

fn at(t: Option<prost_types::Timestamp>) -> SystemTime {
    t.and_then(|t| SystemTime::try_from(t).ok()).unwrap_or_else(SystemTime::now)
}

impl Apply for Steps {
    fn apply<'a>(
        &'a self,
        tx: &'a tokio_postgres::Transaction<'a>,
        topic: &'a str,
        payload: &'a [u8],
    ) -> Pin<Box<dyn Future<Output = Result<(), Failure>> + Send + 'a>> {
        Box::pin(async move {
            let bad = |e: prost::DecodeError| Failure::Poison(format!("{topic}: {e}"));
            let (request_id, when, detail) = match topic {
                topics::REQUESTED => {
                    let e = pb::RepairRequested::decode(payload).map_err(bad)?;
                    (e.request_id, at(e.at), format!("{} for {}", e.product, e.customer_id))
                }
                topics::CANCELLED => {
                    let e = pb::RepairCancelled::decode(payload).map_err(bad)?;
                    (e.request_id, at(e.at), String::new())
                }
                topics::ACCEPTED => {
                    let e = pb::RepairAccepted::decode(payload).map_err(bad)?;
                    (e.request_id, at(e.at), format!("engineer {}, part {}", e.engineer_id, e.part_sku))
                }
                topics::OUT_OF_STOCK => {
                    let e = pb::RepairOutOfStock::decode(payload).map_err(bad)?;
                    (e.request_id, at(e.at), format!("no {} part in stock", e.part_sku))
                }
                topics::REPAIRED => {
                    let e = pb::RepairRepaired::decode(payload).map_err(bad)?;
                    (e.request_id, at(e.at), format!("part {} used", e.part_sku))
                }
                topics::PAID => {
                    let e = pb::RepairPaid::decode(payload).map_err(bad)?;
                    (e.request_id, at(e.at), format!("{} {} paid ({})", e.amount, e.currency, e.payment_id))
                }
                other => return Err(Failure::Poison(format!("the progress view does not read topic {other}"))),
            };
            tx.execute(
                "INSERT INTO progress_step (request_id, event, at, detail) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                &[&request_id, &topic, &when, &detail],
            )
            .await?;
            Ok(())
        })
    }
}

/// `repair.v1.RepairProgress`.
#[derive(Debug, Clone)]
pub struct View {
    pool: deadpool_postgres::Pool,
    policy: paymesh_core::identity::Policy,
}

#[tonic::async_trait]
impl pb::repair_progress_server::RepairProgress for View {
    async fn get_progress(&self, request: Request<pb::GetProgressRequest>) -> Result<Response<pb::Progress>, Status> {
        paymesh_repair_kit::check::caller(self.policy, &request)?;
        let id = request.into_inner().request_id;
        paymesh_repair_kit::check::id("request_id", &id)?;
        let c = self.pool.get().await.map_err(|e| Status::unavailable(format!("the view's database is unavailable ({e}); retry")))?;
        let rows = c
            .query("SELECT event, at, detail FROM progress_step WHERE request_id = $1 ORDER BY at, event", &[&id])
            .await
            .map_err(|e| Status::unavailable(format!("the view's database: {}; retry", paymesh_repair_kit::db::describe(&e))))?;
        if rows.is_empty() {
            return Err(Status::not_found(format!("no progress for '{id}' yet; a filed request shows here a moment after filing")));
        }
        let steps: Vec<pb::Step> =
            rows.iter().map(|r| pb::Step { event: r.get(0), at: Some(r.get::<_, SystemTime>(1).into()), detail: r.get(2) }).collect();
        let status = status_of(steps.iter().map(|s| s.event.as_str())).to_owned();
        Ok(Response::new(pb::Progress { request_id: id, status, steps }))
    }
}

/// Runs view instance `name` of `config` until `shutdown`: the API and the consumer.
pub async fn run(config: &MeshConfig, name: &str, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), String> {
    let section = config.repair.as_ref().and_then(|r| r.progress.as_ref()).ok_or("the mesh config has no [repair.progress] section")?;
    let inst =
        section.instances.iter().find(|i| i.name == name).ok_or_else(|| format!("no [[repair.progress.instances]] is named '{name}'"))?;
    let kafka = config.kafka.as_ref().ok_or("the view reads the repair events: the mesh config has no [kafka] section")?;
    let listener = tokio::net::TcpListener::bind(inst.listen).await.map_err(|e| format!("cannot listen on {}: {e}", inst.listen))?;
    let pool = paymesh_repair_kit::db::pool(&section.database, &format!("paymesh-progress-{name}"))?;
    paymesh_repair_kit::db::migrate_when_up(&pool, "progress", MIGRATIONS, DATABASE_PATIENCE).await?;
    let bootstrap = kafka.bootstrap.wait(paymesh_core::config::BROKER_PATIENCE).await?;
    let consumer = Arc::new(paymesh_repair_kit::consume::Consumer::new(name, "progress", &topics::ALL, &bootstrap, pool.clone(), Steps)?);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let consuming = tokio::spawn({
        let consumer = consumer.clone();
        async move { consumer.run(stop_rx).await }
    });
    let metrics = paymesh_repair_kit::consume::metrics("progress", name, consumer.counters.clone());
    let view = View { pool: pool.clone(), policy: paymesh_core::identity::Policy::of(config) };
    let instance = paymesh_repair_kit::serve::Instance {
        config,
        name,
        service: paymesh_repair_proto::services::PROGRESS,
        listener,
        status_listen: inst.status_listen,
        pool,
    };
    let served =
        paymesh_repair_kit::serve::run(instance, tonic::service::Routes::new(RepairProgressServer::new(view)), metrics, shutdown).await;
    let _ = stop_tx.send(true);
    let _ = consuming.await;
    served
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_is_the_furthest_step_whatever_the_order() {
        assert_eq!(status_of([topics::REQUESTED]), "requested");
        assert_eq!(status_of([topics::PAID, topics::REQUESTED, topics::ACCEPTED, topics::REPAIRED]), "paid");
        assert_eq!(status_of([topics::CANCELLED, topics::REQUESTED]), "cancelled");
        assert_eq!(status_of([topics::REQUESTED, topics::OUT_OF_STOCK, topics::ACCEPTED]), "accepted");
        assert_eq!(status_of([topics::REQUESTED, topics::ACCEPTED, topics::CANCELLED]), "cancelled");
        assert_eq!(status_of([topics::REQUESTED, topics::ACCEPTED, topics::REPAIRED, topics::CANCELLED]), "repaired");
        assert_eq!(status_of(["something.else"]), "unknown");
    }
}
