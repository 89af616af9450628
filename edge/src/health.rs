//! Active health checking over grpc.health.v1, one task per upstream instance; a reload
//! starts tasks for instances it adds and stops those of instances it removes.
//!
//! Each task polls `Check` every interval (a hung or unreachable instance fails it) and
//! holds a `Watch` stream open: an instance that says NOT_SERVING, by either, is taken out
//! at once, so a draining instance gets no new calls while it finishes its last ones.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::cluster::Upstream;
use crate::live::LiveEdge;
use crate::state::EdgeState;

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

/// A lazily connecting channel to the instance, over mTLS when the mesh has it.
fn channel(state: &EdgeState, up: &Upstream) -> Option<tonic::transport::Channel> {
    let endpoint =
        tonic::transport::Endpoint::from_shared(format!("http://{}", up.address)).ok()?.connect_timeout(state.config.health.timeout);
    Some(match &state.upstream_tls {
        Some(tls) => endpoint.connect_with_connector_lazy(paymesh_core::tls::MeshConnector::new(
            tls.mesh.clone(),
            crate::upstream_tls::server_name(&up.name, up.address),
        )),
        None => endpoint.connect_lazy(),
    })
}

/// Before an upgrading edge accepts its first call: checks every instance, again and again,
/// until it is healthy or `within` has passed, so the calls queued while the processes
/// change over find healthy instances instead of an edge that has checked nothing yet.
pub async fn warm_up(live: &LiveEdge, within: std::time::Duration) {
    let state = live.load();
    let cfg = state.config.health.clone();
    let deadline = tokio::time::Instant::now() + within;
    let mut tasks = Vec::new();
    for cluster in state.clusters_in_order() {
        for up in &cluster.endpoints {
            let Some(channel) = channel(&state, up) else { continue };
            let (up, cfg) = (up.clone(), cfg.clone());
            tasks.push(tokio::spawn(async move {
                let mut client = HealthClient::new(channel);
                while !up.health.is_healthy() && tokio::time::Instant::now() < deadline {
                    let check = client.check(HealthCheckRequest { service: String::new() });
                    let passed =
                        matches!(tokio::time::timeout(cfg.timeout, check).await, Ok(Ok(r)) if r.get_ref().status() == ServingStatus::Serving);
                    up.health.record_check(passed, &cfg);
                    if !up.health.is_healthy() {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                }
            }));
        }
    }
    for t in tasks {
        let _ = t.await;
    }
}

async fn check_forever(live: Arc<LiveEdge>, cluster: String, up: Arc<Upstream>) {
    let Some(channel) = channel(&live.load(), &up) else { return };
    let watching = tokio::spawn(watch_forever(live.clone(), cluster.clone(), up.clone(), HealthClient::new(channel.clone())));
    let _stop_watching = AbortOnDrop(watching);
    let mut client = HealthClient::new(channel);
    loop {
        // The settings of the moment: a reload changes interval, timeout and thresholds.
        let cfg = live.load().config.health.clone();
        let check = client.check(HealthCheckRequest { service: String::new() });
        let status = match tokio::time::timeout(cfg.timeout, check).await {
            Ok(Ok(r)) => Some(r.get_ref().status()),
            _ => None,
        };
        if status == Some(ServingStatus::NotServing) {
            drained(&cluster, &up);
            tokio::time::sleep(cfg.interval).await;
            continue;
        }
        let passed = status == Some(ServingStatus::Serving);
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

/// An instance that said NOT_SERVING: out at once.
fn drained(cluster: &str, up: &Upstream) {
    if up.health.drain() {
        tracing::warn!(%cluster, upstream = %up.name, address = %up.address, "instance NOT_SERVING (draining or without its database); no new calls");
    }
}

/// Holds a grpc.health.v1 `Watch` stream open to a healthy instance and takes it out the
/// moment it reports NOT_SERVING. The stream is then closed (an open stream would hold a
/// draining server's shutdown until its grace ran out) and opened again only once the polled
/// checks have found the instance healthy again; a broken stream is opened again after the
/// check interval, and every stream is replaced after a few intervals.
async fn watch_forever(live: Arc<LiveEdge>, cluster: String, up: Arc<Upstream>, mut client: HealthClient<tonic::transport::Channel>) {
    loop {
        while !up.health.is_healthy() {
            tokio::time::sleep(live.load().config.health.interval).await;
        }
        let interval = live.load().config.health.interval;
        // A stream lives a few intervals, then is opened again: a server that shuts down
        // gracefully without saying NOT_SERVING first waits for open streams to end, and
        // must not wait for this one for long.
        let lifetime = (interval * 5).clamp(std::time::Duration::from_secs(1), std::time::Duration::from_secs(10));
        let watched = tokio::time::timeout(lifetime, async {
            let Ok(stream) = client.watch(HealthCheckRequest { service: String::new() }).await else { return false };
            let mut stream = stream.into_inner();
            while let Ok(Some(answer)) = stream.message().await {
                if answer.status() != ServingStatus::Serving {
                    drained(&cluster, &up);
                    break;
                }
            }
            false
        })
        .await;
        // Its lifetime ran out with the instance still SERVING: open the next one at once.
        if watched.is_ok() {
            tokio::time::sleep(interval).await;
        }
    }
}

/// Aborts the task when dropped (the check task's end ends its watch).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
