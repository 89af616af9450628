//! The repair centre's intake (seed 002's "요청", a core domain): customers file repair
//! requests and may cancel them. Intake depends on nothing else of the repair centre: a
//! filing is stored with its `repair.requested` event in one transaction, and the relay
//! publishes it to Kafka whenever it can, so requests are taken 24/7 even while the service
//! desk or stock is down.
//!
//! - [`store`]: the database, each change with its event;
//! - [`Intake`]: the `repair.v1.RepairRequests` service.

pub mod store;

use std::future::Future;

use paymesh_core::config::MeshConfig;
use paymesh_repair_kit::check;
use paymesh_repair_proto::repair::v1 as pb;
use paymesh_repair_proto::repair::v1::repair_requests_server::RepairRequestsServer;
use tonic::{Request, Response, Status};

use store::{IntakeError, Store};

const DATABASE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// `repair.v1.RepairRequests`.
#[derive(Debug, Clone)]
pub struct Intake {
    store: Store,
    policy: paymesh_core::identity::Policy,
}

fn status(e: IntakeError) -> Status {
    let msg = e.to_string();
    match e {
        IntakeError::NotFound(_) => Status::not_found(msg),
        IntakeError::AlreadyCancelled(_) => Status::failed_precondition(msg),
        IntakeError::KeyReused(_) => Status::already_exists(msg),
        IntakeError::Unavailable(_) => Status::unavailable(msg),
    }
}

#[tonic::async_trait]
impl pb::repair_requests_server::RepairRequests for Intake {
    async fn file_request(&self, request: Request<pb::FileRequestRequest>) -> Result<Response<pb::RepairRequest>, Status> {
        check::caller(self.policy, &request)?;
        let r = request.into_inner();
        check::id("customer_id", &r.customer_id)?;
        check::text("product", &r.product, true, 100)?;
        check::text("description", &r.description, false, 1000)?;
        check::idempotency_key(&r.idempotency_key)?;
        let filed = self.store.file(&r.customer_id, &r.product, &r.description, &r.idempotency_key).await.map_err(status)?;
        tracing::info!(request_id = %filed.request_id, "repair request filed");
        Ok(Response::new(filed.into()))
    }

    async fn cancel_request(&self, request: Request<pb::CancelRequestRequest>) -> Result<Response<pb::RepairRequest>, Status> {
        check::caller(self.policy, &request)?;
        let id = request.into_inner().request_id;
        check::id("request_id", &id)?;
        Ok(Response::new(self.store.cancel(&id).await.map_err(status)?.into()))
    }

    async fn get_request(&self, request: Request<pb::GetRequestRequest>) -> Result<Response<pb::RepairRequest>, Status> {
        check::caller(self.policy, &request)?;
        let id = request.into_inner().request_id;
        check::id("request_id", &id)?;
        Ok(Response::new(self.store.get(&id).await.map_err(status)?.into()))
    }
}

/// Runs intake instance `name` of `config` until `shutdown`.
pub async fn run(config: &MeshConfig, name: &str, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), String> {
    let section = config.repair.as_ref().and_then(|r| r.requests.as_ref()).ok_or("the mesh config has no [repair.requests] section")?;
    let inst =
        section.instances.iter().find(|i| i.name == name).ok_or_else(|| format!("no [[repair.requests.instances]] is named '{name}'"))?;
    let listener = tokio::net::TcpListener::bind(inst.listen).await.map_err(|e| format!("cannot listen on {}: {e}", inst.listen))?;
    let pool = paymesh_repair_kit::db::pool(&section.database, &format!("paymesh-requests-{name}"))?;
    paymesh_repair_kit::db::migrate_when_up(&pool, "requests", store::MIGRATIONS, DATABASE_PATIENCE).await?;
    let api = Intake { store: Store::new(pool.clone()), policy: paymesh_core::identity::Policy::of(config) };
    let instance = paymesh_repair_kit::serve::Instance {
        config,
        name,
        service: paymesh_repair_proto::services::REQUESTS,
        listener,
        status_listen: inst.status_listen,
        pool,
    };
    let routes = tonic::service::Routes::new(RepairRequestsServer::new(api));
    paymesh_repair_kit::serve::run(instance, routes, std::sync::Arc::new(String::new), shutdown).await
}
