//! Active health checking over grpc.health.v1, one task per upstream instance; a reload
//! starts tasks for instances it adds and stops those of instances it removes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::cluster::Upstream;
use crate::live::LiveEdge;

#[derive(Debug)]
pub struct HealthChecker {
    pub live: Arc<LiveEdge>,
}

#[async_trait]
impl BackgroundService for HealthChecker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut reloads = self.live.subscribe();
        // One task per instance, keyed by its health record (shared by the instance's entries
        // in every configuration that keeps it, and alive while its task holds it).
        let mut tasks: HashMap<usize, tokio::task::JoinHandle<()>> = HashMap::new();
        loop {
            let state = self.live.load();
            let mut wanted = HashSet::new();
            for cluster in state.clusters_in_order() {
                for up in &cluster.endpoints {
                    let key = Arc::as_ptr(&up.health) as usize;
                    wanted.insert(key);
                    tasks.entry(key).or_insert_with(|| tokio::spawn(check_forever(self.live.clone(), cluster.name.clone(), up.clone())));
                }
            }
            // Instances a reload removed are no longer checked.
            tasks.retain(|key, task| {
                let keep = wanted.contains(key);
                if !keep {
                    task.abort();
                }
                keep
            });
            drop(state);
            tokio::select! {
                _ = shutdown.changed() => break,
                changed = reloads.changed() => if changed.is_err() { break },
            }
        }
        for task in tasks.values() {
            task.abort();
        }
    }
}

async fn check_forever(live: Arc<LiveEdge>, cluster: String, up: Arc<Upstream>) {
    let state = live.load();
    let timeout = state.config.health.timeout;
    let endpoint = match tonic::transport::Endpoint::from_shared(format!("http://{}", up.address)) {
        Ok(e) => e.connect_timeout(timeout),
        Err(_) => return,
    };
    let channel = match &state.upstream_tls {
        Some(tls) => endpoint.connect_with_connector_lazy(paymesh_core::tls::MeshConnector::new(
            tls.mesh.clone(),
            crate::upstream_tls::server_name(&up.name, up.address),
        )),
        None => endpoint.connect_lazy(),
    };
    drop(state);
    let mut client = HealthClient::new(channel);
    loop {
        // The settings of the moment: a reload changes interval, timeout and thresholds.
        let cfg = live.load().config.health.clone();
        let check = client.check(HealthCheckRequest { service: String::new() });
        let passed = matches!(tokio::time::timeout(cfg.timeout, check).await, Ok(Ok(r)) if r.get_ref().status() == ServingStatus::Serving);
        if let Some(healthy) = up.health.record_check(passed, &cfg) {
            if healthy {
                tracing::info!(%cluster, upstream = %up.name, address = %up.address, "instance healthy");
            } else {
                tracing::warn!(%cluster, upstream = %up.name, address = %up.address, "instance unhealthy");
            }
        }
        tokio::time::sleep(cfg.interval).await;
    }
}
