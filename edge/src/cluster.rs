//! Upstream clusters at run time: endpoints with their health and load, grouped by shard,
//! and the choice of one endpoint for a request.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use paymesh_core::ShardId;
use paymesh_core::config::{self, HealthCheck};

use crate::balance::{P2c, PeakEwma, Rng};
use crate::resilience::concurrency::ConcurrencyLimit;

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
    /// Shared with the same instance in the cluster's next configuration (a reload keeps
    /// what the checks and the traffic learned).
    pub health: Arc<Health>,
}

/// Health of one upstream, Envoy style: active checks decide `healthy` (an endpoint starts
/// unhealthy and receives traffic only after passing `healthy_threshold` checks), and outlier
/// detection on real traffic ejects it for a while after consecutive failures.
#[derive(Debug, Default)]
pub struct Health {
    healthy: AtomicBool,
    streaks: Mutex<Streaks>,
    outlier: Mutex<OutlierState>,
    ejections: AtomicU64,
}

#[derive(Debug, Default)]
struct Streaks {
    ok: u32,
    failed: u32,
}

#[derive(Debug, Default)]
struct OutlierState {
    consecutive_failures: u32,
    ejected_until: Option<Instant>,
    times_ejected: u32,
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

    /// The instance said it is NOT_SERVING (it drains, or has lost its database): it is out
    /// at once, not after `unhealthy_threshold` checks, and back only after
    /// `healthy_threshold` passing ones. Returns whether it was healthy until now.
    pub fn drain(&self) -> bool {
        let mut s = self.streaks.lock().unwrap_or_else(|e| e.into_inner());
        s.ok = 0;
        s.failed = s.failed.max(1);
        self.healthy.swap(false, Ordering::AcqRel)
    }

    /// Whether outlier detection has this endpoint out at `now`.
    pub fn is_ejected(&self, now: Instant) -> bool {
        self.outlier.lock().unwrap_or_else(|e| e.into_inner()).ejected_until.is_some_and(|u| now < u)
    }

    /// Healthy by active checks and not ejected.
    pub fn is_routable(&self, now: Instant) -> bool {
        self.is_healthy() && !self.is_ejected(now)
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
    pub limit: Arc<ConcurrencyLimit>,
    outlier: config::Outlier,
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
    pub fn new(cfg: &config::Cluster, outlier: &config::Outlier) -> Self {
        Self::following(cfg, outlier, None)
    }

    /// The cluster of a new configuration: an endpoint `previous` also has (same name,
    /// address and shard) keeps its health, ejection and latency state; a new one starts
    /// unhealthy, as at start, until its checks pass.
    pub fn following(cfg: &config::Cluster, outlier: &config::Outlier, previous: Option<&Cluster>) -> Self {
        let now = Instant::now();
        let endpoints = cfg
            .endpoints
            .iter()
            .enumerate()
            .map(|(id, e)| {
                let same =
                    previous.and_then(|p| p.endpoints.iter().find(|u| u.name == e.name && u.address == e.address && u.shard == e.shard));
                Arc::new(Upstream {
                    id,
                    name: e.name.clone(),
                    address: e.address,
                    shard: e.shard,
                    load: same.map_or_else(|| Arc::new(PeakEwma::new(DEFAULT_RTT, EWMA_DECAY, now)), |u| u.load.clone()),
                    health: same.map_or_else(Arc::default, |u| u.health.clone()),
                })
            })
            .collect();
        Self {
            name: cfg.name.clone(),
            shards: cfg.shards,
            endpoints,
            limit: match previous {
                Some(p) if p.limit.max_requests == cfg.max_requests && p.limit.max_pending == cfg.max_pending => p.limit.clone(),
                _ => Arc::new(ConcurrencyLimit::new(cfg.max_requests, cfg.max_pending)),
            },
            outlier: outlier.clone(),
            balancer: P2c::new(Rng::from_entropy()),
        }
    }

    /// Picks a healthy endpoint of `shard` (any shard when `None`), skipping `tried`, by
    /// power of two choices over peak-EWMA cost.
    pub fn pick(&self, shard: Option<ShardId>, tried: &[usize]) -> Result<Arc<Upstream>, NoEndpoint> {
        let now = Instant::now();
        let candidates: Vec<&Arc<Upstream>> = self
            .endpoints
            .iter()
            .filter(|e| shard.is_none_or(|s| e.shard == Some(s)) && e.health.is_routable(now) && !tried.contains(&e.id))
            .collect();
        match self.balancer.pick(&candidates, |e| e.load.cost(now)) {
            Some(i) => Ok(candidates[i].clone()),
            None => Err(match shard {
                Some(shard) => NoEndpoint::Shard { cluster: self.name.clone(), shard },
                None => NoEndpoint::Cluster { cluster: self.name.clone() },
            }),
        }
    }

    /// Reports a call's outcome for outlier detection: `failed` means a connection failure,
    /// a timeout or a server-side error status. Returns true if this ejected the endpoint.
    pub fn report(&self, up: &Upstream, failed: bool, now: Instant) -> bool {
        if !failed {
            up.health.outlier.lock().unwrap_or_else(|e| e.into_inner()).consecutive_failures = 0;
            return false;
        }
        let streak = {
            let mut o = up.health.outlier.lock().unwrap_or_else(|e| e.into_inner());
            o.consecutive_failures += 1;
            if o.consecutive_failures < self.outlier.consecutive_failures || o.ejected_until.is_some_and(|u| now < u) {
                return false;
            }
            o.consecutive_failures
        };
        // Never eject more than the configured share of the shard (but always allow one).
        let peers: Vec<&Arc<Upstream>> = self.endpoints.iter().filter(|e| e.shard == up.shard).collect();
        let ejected = peers.iter().filter(|e| e.health.is_ejected(now)).count();
        let allowed = (peers.len() * self.outlier.max_ejection_percent as usize / 100).max(1);
        if ejected >= allowed {
            tracing::warn!(upstream = %up.name, streak, ejected, allowed, "outlier not ejected: the shard is at its ejection limit");
            return false;
        }
        let mut o = up.health.outlier.lock().unwrap_or_else(|e| e.into_inner());
        o.times_ejected += 1;
        let time = self.outlier.base_ejection_time.saturating_mul(o.times_ejected).min(self.outlier.max_ejection_time);
        o.ejected_until = Some(now + time);
        o.consecutive_failures = 0;
        up.health.ejections.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(upstream = %up.name, ?time, times = o.times_ejected, "outlier ejected");
        true
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
        HealthCheck { interval: Duration::from_secs(1), timeout: Duration::from_secs(1), healthy_threshold: 2, unhealthy_threshold: 3 }
    }

    fn outlier() -> config::Outlier {
        config::Outlier {
            consecutive_failures: 3,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(75),
            max_ejection_percent: 50,
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
        let c =
            Cluster::new(&config::Cluster { name: "c".into(), shards: Some(2), endpoints, max_requests: 10, max_pending: 10 }, &outlier());
        let cfg = HealthCheck { healthy_threshold: 1, ..hc() };
        for e in &c.endpoints {
            e.health.record_check(true, &cfg);
        }
        c
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
    fn consecutive_failures_eject_for_a_growing_capped_time() {
        let c = cluster(&[Some(0), Some(0), Some(0), Some(0)]);
        let t = Instant::now();
        let e = &c.endpoints[0];
        assert!(!c.report(e, true, t));
        assert!(!c.report(e, false, t), "a success resets the streak");
        assert!(!c.report(e, true, t));
        assert!(!c.report(e, true, t));
        assert!(c.report(e, true, t), "third consecutive failure");
        assert!(!e.health.is_routable(t) && e.health.is_routable(t + Duration::from_secs(30)), "30 s the first time");
        let t2 = t + Duration::from_secs(31);
        for _ in 0..3 {
            c.report(e, true, t2);
        }
        assert!(
            e.health.is_ejected(t2 + Duration::from_secs(59)) && !e.health.is_ejected(t2 + Duration::from_secs(60)),
            "60 s the second time"
        );
        let t3 = t2 + Duration::from_secs(61);
        for _ in 0..3 {
            c.report(e, true, t3);
        }
        assert!(e.health.is_ejected(t3 + Duration::from_secs(74)) && !e.health.is_ejected(t3 + Duration::from_secs(75)), "capped at 75 s");
        assert_eq!(e.health.ejections(), 3);
    }

    #[test]
    fn never_ejects_more_than_the_share_of_a_shard() {
        let c = cluster(&[Some(0), Some(0), Some(1), Some(1)]);
        let t = Instant::now();
        for _ in 0..3 {
            c.report(&c.endpoints[0], true, t);
        }
        assert!(c.endpoints[0].health.is_ejected(t));
        for _ in 0..10 {
            c.report(&c.endpoints[1], true, t);
        }
        assert!(!c.endpoints[1].health.is_ejected(t), "50 % of a two-instance shard is one instance");
        for _ in 0..3 {
            c.report(&c.endpoints[2], true, t);
        }
        assert!(c.endpoints[2].health.is_ejected(t), "the other shard has its own share");
    }

    #[test]
    fn picks_only_routable_endpoints_of_the_shard() {
        let c = cluster(&[Some(0), Some(0), Some(1), Some(1)]);
        for _ in 0..200 {
            let e = c.pick(Some(ShardId(1)), &[]).expect("healthy");
            assert_eq!(e.shard, Some(ShardId(1)));
        }
        assert_eq!(c.pick(Some(ShardId(1)), &[2]).expect("other").id, 3);
        let err = c.pick(Some(ShardId(1)), &[2, 3]).expect_err("none left").to_string();
        assert_eq!(err, "shard 1 of cluster 'c' has no healthy instance");
        for _ in 0..3 {
            c.report(&c.endpoints[3], true, Instant::now());
        }
        assert_eq!(c.pick(Some(ShardId(1)), &[]).expect("the other").id, 2, "ejected endpoints get no traffic");
        assert_eq!(c.size(Some(ShardId(0))), 2);
        assert_eq!(c.size(None), 4);
    }

    #[test]
    fn prefers_the_endpoint_with_fewer_requests_in_flight() {
        let c = cluster(&[Some(0), Some(0)]);
        let _busy = c.endpoints[0].load.start();
        for _ in 0..100 {
            assert_eq!(c.pick(Some(ShardId(0)), &[]).expect("pick").id, 1);
        }
    }
}
