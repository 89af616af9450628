//! The repair centre's parts stock (seed 002's "재고", a supporting domain): parts by SKU,
//! one reservation per repair request (the correlation key) taken when an engineer accepts
//! the request, consumed when the repair is done. Its database is its own.
//!
//! - [`store`]: the database and every change as one transaction;
//! - [`grpc`]: the `repair.v1.Stock` service.

pub mod grpc;
pub mod store;

use std::future::Future;

use paymesh_core::config::MeshConfig;
use paymesh_repair_kit::serve::{Instance, run as serve};
use paymesh_repair_proto::repair::v1::stock_server::StockServer;

/// How long a starting instance waits for its database.
const DATABASE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs stock instance `name` of `config` until `shutdown`.
pub async fn run(config: &MeshConfig, name: &str, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), String> {
    let section = config.repair.as_ref().and_then(|r| r.stock.as_ref()).ok_or("the mesh config has no [repair.stock] section")?;
    let inst =
        section.instances.iter().find(|i| i.name == name).ok_or_else(|| format!("no [[repair.stock.instances]] is named '{name}'"))?;
    let listener = tokio::net::TcpListener::bind(inst.listen).await.map_err(|e| format!("cannot listen on {}: {e}", inst.listen))?;
    let pool = paymesh_repair_kit::db::pool(&section.database, &format!("paymesh-stock-{name}"))?;
    paymesh_repair_kit::db::migrate_when_up(&pool, "stock", store::MIGRATIONS, DATABASE_PATIENCE).await?;
    let api = grpc::StockApi::new(store::Store::new(pool.clone()), paymesh_core::identity::Policy::of(config));
    let instance =
        Instance { config, name, service: paymesh_repair_proto::services::STOCK, listener, status_listen: inst.status_listen, pool };
    serve(instance, tonic::service::Routes::new(StockServer::new(api)), std::sync::Arc::new(String::new), shutdown).await
}
