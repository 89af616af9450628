//! Upstream clusters at run time: endpoints with their health and load, grouped by shard,
//! and the choice of one endpoint for a request.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use paymesh_core::ShardId;
use paymesh_core::config::{self, HealthCheck};

use crate::balance::{P2c, PeakEwma, Rng};

/// Latency assumed for an endpoint before it has answered anything.
const DEFAULT_RTT: Duration = Duration::from_millis(5);
/// Time constant of the latency estimate (linkerd's default).
const EWMA_DECAY: Duration = Duration::from_secs(10);

/// One upstream instance.
#[derive(Debug)]
pub struct Upstream {
    /// Index within its cluster.
    pub id: usize,
    pub name: String,
    pub address: SocketAddr,
    pub shard: Option<ShardId>,
    pub load: Arc<PeakEwma>,
    pub health: Health,
    /// The gRPC channel the transcoder uses (one multiplexed HTTP/2 connection, created on
    /// first use inside the proxy's runtime).
    pub channel: OnceLock<tonic::transport::Channel>,
}

/// Health of one upstream: active checks and passive ejection, Envoy style. An endpoint
/// starts unhealthy and receives traffic only after passing `healthy_threshold` checks.
#[derive(Debug, Default)]
pub struct Health {
    healthy: AtomicBool,
    streaks: Mutex<Streaks>,
    ejections: AtomicU64,
}

#[derive(Debug, Default)]
struct Streaks {
    ok: u32,
    failed: u32,
    connect_failures: u32,
}

impl Health {
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Records an active check. Returns the new state if it changed.
    pub fn record_check(&self, passed: bool, cfg: &HealthCheck) -> Option<bool> {
        let mut s = self.streaks.lock().unwrap_or_else(|e| e.into_inner());
        let was = self.is_healthy();
        if passed {
            s.ok += 1;
            s.failed = 0;
            if !was && s.ok >= cfg.healthy_threshold {
                s.connect_failures = 0;
                self.healthy.store(true, Ordering::Release);
                return Some(true);
            }
        } else {
            s.failed += 1;
            s.ok = 0;
            if was && s.failed >= cfg.unhealthy_threshold {
                self.healthy.store(false, Ordering::Release);
                return Some(false);
            }
        }
        None
    }

    /// Records a failed connection attempt by real traffic. Returns true if this ejected
    /// the endpoint (it stays out until active checks pass again).
    pub fn record_connect_failure(&self, cfg: &HealthCheck) -> bool {
        let mut s = self.streaks.lock().unwrap_or_else(|e| e.into_inner());
        s.connect_failures += 1;
        if self.is_healthy() && s.connect_failures >= cfg.passive_failures {
            s.ok = 0;
            self.healthy.store(false, Ordering::Release);
            self.ejections.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Records a successful exchange with the endpoint.
    pub fn record_success(&self) {
        let mut s = self.streaks.lock().unwrap_or_else(|e| e.into_inner());
        s.connect_failures = 0;
    }

    pub fn ejections(&self) -> u64 {
        self.ejections.load(Ordering::Relaxed)
    }
}

/// A cluster: endpoints, by shard when sharded.
#[derive(Debug)]
pub struct Cluster {
    pub name: String,
    pub shards: Option<u32>,
    pub endpoints: Vec<Arc<Upstream>>,
    balancer: P2c,
}

/// Why no endpoint could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoEndpoint {
    #[error("shard {shard} of cluster '{cluster}' has no healthy instance")]
    Shard { cluster: String, shard: ShardId },
    #[error("cluster '{cluster}' has no healthy instance")]
    Cluster { cluster: String },
}

impl Cluster {
    pub fn new(cfg: &config::Cluster) -> Self {
        let now = Instant::now();
        let endpoints = cfg
            .endpoints
            .iter()
            .enumerate()
            .map(|(id, e)| {
                Arc::new(Upstream {
                    id,
                    name: e.name.clone(),
                    address: e.address,
                    shard: e.shard,
                    load: Arc::new(PeakEwma::new(DEFAULT_RTT, EWMA_DECAY, now)),
                    health: Health::default(),
                    channel: OnceLock::new(),
                })
            })
            .collect();
        Self { name: cfg.name.clone(), shards: cfg.shards, endpoints, balancer: P2c::new(Rng::from_entropy()) }
    }

    /// Picks a healthy endpoint of `shard` (any shard when `None`), skipping `tried`, by
    /// power of two choices over peak-EWMA cost.
    pub fn pick(&self, shard: Option<ShardId>, tried: &[usize]) -> Result<Arc<Upstream>, NoEndpoint> {
        let now = Instant::now();
        let candidates: Vec<&Arc<Upstream>> = self
            .endpoints
            .iter()
            .filter(|e| shard.is_none_or(|s| e.shard == Some(s)) && e.health.is_healthy() && !tried.contains(&e.id))
            .collect();
        match self.balancer.pick(&candidates, |e| e.load.cost(now)) {
            Some(i) => Ok(candidates[i].clone()),
            None => Err(match shard {
                Some(shard) => NoEndpoint::Shard { cluster: self.name.clone(), shard },
                None => NoEndpoint::Cluster { cluster: self.name.clone() },
            }),
        }
    }

    /// How many endpoints could serve `shard` at all (for bounding retries).
    pub fn size(&self, shard: Option<ShardId>) -> usize {
        self.endpoints.iter().filter(|e| shard.is_none_or(|s| e.shard == Some(s))).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hc() -> HealthCheck {
        HealthCheck {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            passive_failures: 2,
        }
    }

    fn cluster(shards: &[Option<u32>]) -> Cluster {
        let endpoints = shards
            .iter()
            .enumerate()
            .map(|(i, s)| config::Endpoint {
                name: format!("e{i}"),
                address: SocketAddr::from(([127, 0, 0, 1], 1000 + i as u16)),
                shard: s.map(ShardId),
            })
            .collect();
        Cluster::new(&config::Cluster { name: "c".into(), shards: Some(2), endpoints })
    }

    #[test]
    fn health_needs_consecutive_checks_both_ways() {
        let h = Health::default();
        let cfg = hc();
        assert!(!h.is_healthy(), "starts unhealthy");
        assert_eq!(h.record_check(true, &cfg), None);
        assert_eq!(h.record_check(true, &cfg), Some(true));
        assert_eq!(h.record_check(false, &cfg), None);
        assert_eq!(h.record_check(false, &cfg), None);
        assert_eq!(h.record_check(true, &cfg), None, "a pass resets the failure streak");
        for _ in 0..2 {
            assert_eq!(h.record_check(false, &cfg), None);
        }
        assert_eq!(h.record_check(false, &cfg), Some(false));
        assert!(!h.is_healthy());
    }

    #[test]
    fn consecutive_connect_failures_eject_until_checks_pass() {
        let h = Health::default();
        let cfg = hc();
        h.record_check(true, &cfg);
        h.record_check(true, &cfg);
        assert!(!h.record_connect_failure(&cfg));
        h.record_success();
        assert!(!h.record_connect_failure(&cfg), "success reset the streak");
        assert!(h.record_connect_failure(&cfg));
        assert!(!h.is_healthy());
        assert_eq!(h.ejections(), 1);
        assert_eq!(h.record_check(true, &cfg), None);
        assert_eq!(h.record_check(true, &cfg), Some(true));
    }

    #[test]
    fn picks_only_healthy_endpoints_of_the_shard() {
        let c = cluster(&[Some(0), Some(0), Some(1), Some(1)]);
        let cfg = HealthCheck { healthy_threshold: 1, ..hc() };
        assert!(matches!(c.pick(Some(ShardId(0)), &[]), Err(NoEndpoint::Shard { .. })));
        for e in &c.endpoints {
            e.health.record_check(true, &cfg);
        }
        for _ in 0..200 {
            let e = c.pick(Some(ShardId(1)), &[]).expect("healthy");
            assert_eq!(e.shard, Some(ShardId(1)));
        }
        assert_eq!(c.pick(Some(ShardId(1)), &[2]).expect("other").id, 3);
        assert!(c.pick(Some(ShardId(1)), &[2, 3]).is_err());
        let err = c.pick(Some(ShardId(1)), &[2, 3]).expect_err("none left").to_string();
        assert_eq!(err, "shard 1 of cluster 'c' has no healthy instance");
        assert_eq!(c.size(Some(ShardId(0))), 2);
        assert_eq!(c.size(None), 4);
    }

    #[test]
    fn prefers_the_endpoint_with_fewer_requests_in_flight() {
        let c = cluster(&[Some(0), Some(0)]);
        let cfg = HealthCheck { healthy_threshold: 1, ..hc() };
        for e in &c.endpoints {
            e.health.record_check(true, &cfg);
        }
        let _busy = c.endpoints[0].load.start();
        for _ in 0..100 {
            assert_eq!(c.pick(Some(ShardId(0)), &[]).expect("pick").id, 1);
        }
    }
}
