//! Active health checking over grpc.health.v1, one task per upstream instance.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::cluster::Upstream;
use crate::state::EdgeState;

#[derive(Debug)]
pub struct HealthChecker {
    pub state: Arc<EdgeState>,
}

#[async_trait]
impl BackgroundService for HealthChecker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tasks = Vec::new();
        for cluster in self.state.clusters_in_order() {
            for up in &cluster.endpoints {
                tasks.push(tokio::spawn(check_forever(self.state.clone(), cluster.name.clone(), up.clone())));
            }
        }
        let _ = shutdown.changed().await;
        for t in tasks {
            t.abort();
        }
    }
}

async fn check_forever(state: Arc<EdgeState>, cluster: String, up: Arc<Upstream>) {
    let cfg = &state.config.health;
    let endpoint = match tonic::transport::Endpoint::from_shared(format!("http://{}", up.address)) {
        Ok(e) => e.connect_timeout(cfg.timeout),
        Err(_) => return,
    };
    let channel = match &state.upstream_tls {
        Some(tls) => endpoint.connect_with_connector_lazy(paymesh_core::tls::MeshConnector::new(
            tls.mesh.clone(),
            crate::upstream_tls::server_name(&up.name, up.address),
        )),
        None => endpoint.connect_lazy(),
    };
    let mut client = HealthClient::new(channel);
    loop {
        let check = client.check(HealthCheckRequest { service: String::new() });
        let passed = matches!(tokio::time::timeout(cfg.timeout, check).await, Ok(Ok(r)) if r.get_ref().status() == ServingStatus::Serving);
        if let Some(healthy) = up.health.record_check(passed, cfg) {
            if healthy {
                tracing::info!(%cluster, upstream = %up.name, address = %up.address, "instance healthy");
            } else {
                tracing::warn!(%cluster, upstream = %up.name, address = %up.address, "instance unhealthy");
            }
        }
        tokio::time::sleep(cfg.interval).await;
    }
}
