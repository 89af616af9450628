//! The resilience guards of one route: its breakers (one per shard, so one sick shard does
//! not trip the others), its rate limits, and its retry policy and budget.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use paymesh_core::ShardId;
use paymesh_core::config;

use super::ratelimit::{KeyRef, KeyedLimiter, Limited, Quota, RouteLimiter};
use super::retry::Budget;
use paymesh_core::breaker::Breaker;

#[derive(Debug)]
pub struct RouteGuards {
    /// Index = shard; one breaker for an unsharded route.
    pub breakers: Vec<Arc<Breaker>>,
    route_limit: Option<RouteLimiter>,
    keyed_limit: Option<(KeyedLimiter, config::KeyedLimit)>,
    pub retry: config::Retry,
    pub budget: Budget,
    rate_limited: AtomicU64,
}

impl RouteGuards {
    pub fn new(route: &config::Route, shards: Option<u32>, now: Instant) -> Self {
        let breakers = match shards {
            Some(n) if !route.shard_keys.is_empty() => {
                (0..n).map(|s| Breaker::new(format!("{}@shard-{s}", route.service), route.breaker.clone(), now)).collect()
            }
            _ => vec![Breaker::new(route.service.clone(), route.breaker.clone(), now)],
        };
        Self {
            breakers,
            route_limit: route.rate_limit.route.map(|b| RouteLimiter::new(b, now)),
            keyed_limit: route.rate_limit.per_key.clone().map(|k| (KeyedLimiter::new(k.bucket, k.max_keys), k)),
            retry: route.retry.clone(),
            budget: Budget::new(&route.retry, now),
            rate_limited: AtomicU64::new(0),
        }
    }

    /// The breaker guarding `shard` of this route.
    pub fn breaker(&self, shard: Option<ShardId>) -> &Arc<Breaker> {
        let i = shard.map_or(0, |s| s.0 as usize);
        self.breakers.get(i).unwrap_or(&self.breakers[0])
    }

    /// The header naming the client for per-key limits, if any.
    pub fn client_header(&self) -> Option<&str> {
        self.keyed_limit.as_ref().and_then(|(_, k)| k.header.as_deref())
    }

    /// Takes a token from the client's bucket, then from the route's: a client refused by
    /// its own limit does not drain the route's bucket for everyone else. `client` is the
    /// header value; `merchant` the request's merchant id, used when the route keys by
    /// merchant and the header is absent.
    pub fn admit(&self, client: Option<&str>, merchant: Option<&str>, now: Instant) -> Result<Option<Quota>, Limited> {
        let mut quota = None;
        if let Some((l, k)) = &self.keyed_limit {
            let key =
                client.filter(|c| !c.is_empty()).map(KeyRef::Header).or_else(|| merchant.filter(|_| k.by_merchant).map(KeyRef::Merchant));
            if let Some(key) = key {
                quota = Some(l.take(key, now).inspect_err(|_| self.count_limited())?);
            }
        }
        if let Some(l) = &self.route_limit {
            let r = l.take(now).inspect_err(|_| self.count_limited())?;
            quota = Some(match quota {
                Some(q) if q.remaining < r.remaining => q,
                _ => r,
            });
        }
        Ok(quota)
    }

    fn count_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    pub fn rate_limited(&self) -> u64 {
        self.rate_limited.load(Ordering::Relaxed)
    }

    pub fn keys_tracked(&self) -> usize {
        self.keyed_limit.as_ref().map_or(0, |(l, _)| l.len())
    }
}

/// `Retry-After` and the `RateLimit-*` headers of a refusal.
pub fn limit_headers(l: &Limited) -> Vec<(&'static str, String)> {
    let secs = |d: std::time::Duration| d.as_secs_f64().ceil().max(0.0) as u64;
    vec![
        ("retry-after", secs(l.retry_after).max(1).to_string()),
        ("ratelimit-limit", l.quota.limit.to_string()),
        ("ratelimit-remaining", l.quota.remaining.to_string()),
        ("ratelimit-reset", secs(l.quota.reset).to_string()),
    ]
}
