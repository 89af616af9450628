//! Token-bucket rate limits: one bucket per route, and one per client key in a table that
//! never holds more than `max_keys` entries.
//!
//! A bucket holds up to `burst` tokens and refills at `rate` per second; a request takes one.
//! A bucket that has refilled completely behaves exactly like a new one, so dropping it loses
//! nothing: the keyed table evicts such idle buckets first, and only if the table is still full
//! the least recently used. A flood of distinct keys therefore costs bounded memory.
//!
//! Time is passed in; the arithmetic is unit-tested with a controlled clock.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use paymesh_core::config::Bucket;

/// What a request learned from a limiter (for the `RateLimit-*` headers).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quota {
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset: Duration,
}

/// A refused request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limited {
    pub quota: Quota,
    /// When one token will be available.
    pub retry_after: Duration,
}

/// Seconds as a duration, saturating (a tiny configured rate must not panic).
fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX)
}

#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    cfg: Bucket,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    pub fn new(cfg: Bucket, now: Instant) -> Self {
        Self { cfg, tokens: f64::from(cfg.burst), at: now }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.cfg.rate).min(f64::from(self.cfg.burst));
        self.at = now.max(self.at);
    }

    fn quota(&self) -> Quota {
        let missing = f64::from(self.cfg.burst) - self.tokens;
        Quota { limit: self.cfg.burst, remaining: self.tokens.floor() as u32, reset: secs((missing / self.cfg.rate).max(0.0)) }
    }

    /// Takes a token if one is there.
    pub fn take(&mut self, now: Instant) -> Result<Quota, Limited> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(self.quota())
        } else {
            let retry_after = secs((1.0 - self.tokens) / self.cfg.rate);
            Err(Limited { quota: self.quota(), retry_after })
        }
    }

    /// Whether the bucket has refilled completely by `now` (then it equals a fresh one).
    pub fn is_full(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens + elapsed * self.cfg.rate >= f64::from(self.cfg.burst)
    }
}

/// One bucket shared by every request of a route.
#[derive(Debug)]
pub struct RouteLimiter(Mutex<TokenBucket>);

impl RouteLimiter {
    pub fn new(cfg: Bucket, now: Instant) -> Self {
        Self(Mutex::new(TokenBucket::new(cfg, now)))
    }

    pub fn take(&self, now: Instant) -> Result<Quota, Limited> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take(now)
    }
}

/// A client key: the value of the route's client header, or a merchant id.
#[derive(Debug, Clone, Copy, Hash)]
pub enum KeyRef<'a> {
    Header(&'a str),
    Merchant(&'a str),
}

/// How often (in takes) the keyed table drops buckets that have refilled completely.
const SWEEP_EVERY: u32 = 1_024;

/// One bucket per client key, in a table bounded in bytes: keys are stored as a keyed
/// 64-bit hash (a client's megabyte header costs what a short one does), at most `max_keys`
/// of them, and idle keys are swept.
#[derive(Debug)]
pub struct KeyedLimiter {
    cfg: Bucket,
    max_keys: usize,
    hasher: std::collections::hash_map::RandomState,
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    buckets: HashMap<u64, (TokenBucket, Instant)>,
    takes: u32,
}

impl KeyedLimiter {
    pub fn new(cfg: Bucket, max_keys: usize) -> Self {
        Self { cfg, max_keys: max_keys.max(1), hasher: Default::default(), table: Mutex::new(Table::default()) }
    }

    pub fn take(&self, key: KeyRef<'_>, now: Instant) -> Result<Quota, Limited> {
        use std::hash::BuildHasher;
        let key = self.hasher.hash_one(key);
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        table.takes = table.takes.wrapping_add(1);
        if table.takes.is_multiple_of(SWEEP_EVERY) {
            // Full buckets are the same as absent ones: dropping them loses nothing.
            table.buckets.retain(|_, (b, _)| !b.is_full(now));
        }
        if !table.buckets.contains_key(&key) && table.buckets.len() >= self.max_keys {
            Self::evict(&mut table.buckets, self.max_keys, now);
        }
        let entry = table.buckets.entry(key).or_insert_with(|| (TokenBucket::new(self.cfg, now), now));
        entry.1 = now;
        entry.0.take(now)
    }

    /// Makes room in a full table. Lossless first: full buckets are the same as absent ones.
    /// If that frees less than a tenth, the least recently used tenth goes too, so the work
    /// of a scan is spread over many insertions (a flood of new keys stays cheap).
    fn evict(table: &mut HashMap<u64, (TokenBucket, Instant)>, max_keys: usize, now: Instant) {
        table.retain(|_, (b, _)| !b.is_full(now));
        let target = max_keys - max_keys.div_ceil(10);
        if table.len() > target {
            let mut used: Vec<Instant> = table.values().map(|(_, u)| *u).collect();
            let cut = table.len() - target;
            used.select_nth_unstable(cut - 1);
            let cutoff = used[cut - 1];
            let mut removed = 0;
            table.retain(|_, (_, u)| {
                let drop = *u <= cutoff && removed < cut;
                removed += usize::from(drop);
                !drop
            });
        }
    }

    pub fn len(&self) -> usize {
        self.table.lock().unwrap_or_else(|e| e.into_inner()).buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn b(rate: f64, burst: u32) -> Bucket {
        Bucket { rate, burst }
    }

    #[test]
    fn burst_then_refill_at_the_rate() {
        let t = Instant::now();
        let mut bucket = TokenBucket::new(b(2.0, 3), t);
        for left in [2, 1, 0] {
            assert_eq!(bucket.take(t).map(|q| q.remaining), Ok(left));
        }
        let limited = bucket.take(t).expect_err("empty");
        assert_eq!(limited.retry_after, Duration::from_millis(500), "one token every half second");
        assert_eq!(limited.quota, Quota { limit: 3, remaining: 0, reset: Duration::from_millis(1_500) });
        // Half a second later one token is back.
        assert!(bucket.take(t + Duration::from_millis(500)).is_ok());
        assert!(bucket.take(t + Duration::from_millis(500)).is_err());
        // Long idle: never more than the burst.
        let later = t + 100 * SEC;
        assert!(bucket.is_full(later));
        for _ in 0..3 {
            assert!(bucket.take(later).is_ok());
        }
        assert!(bucket.take(later).is_err());
    }

    #[test]
    fn a_tiny_rate_saturates_instead_of_panicking() {
        let t = Instant::now();
        let mut bucket = TokenBucket::new(b(1e-300, 1), t);
        assert!(bucket.take(t).is_ok());
        assert_eq!(bucket.take(t).expect_err("empty").retry_after, Duration::MAX);
    }

    #[test]
    fn fractional_rates() {
        let t = Instant::now();
        let mut bucket = TokenBucket::new(b(0.5, 1), t);
        assert!(bucket.take(t).is_ok());
        assert_eq!(bucket.take(t + SEC).expect_err("half a token").retry_after, SEC);
        assert!(bucket.take(t + 2 * SEC).is_ok());
    }

    #[test]
    fn keys_are_independent() {
        let t = Instant::now();
        let k = KeyedLimiter::new(b(1.0, 2), 100);
        assert!(k.take(KeyRef::Header("a"), t).is_ok());
        assert!(k.take(KeyRef::Header("a"), t).is_ok());
        assert!(k.take(KeyRef::Header("a"), t).is_err());
        assert!(k.take(KeyRef::Header("b"), t).is_ok(), "b has its own bucket");
    }

    #[test]
    fn the_table_stays_bounded_under_a_flood_of_keys() {
        let t = Instant::now();
        let k = KeyedLimiter::new(b(1.0, 5), 1_000);
        for i in 0..100_000 {
            let _ = k.take(KeyRef::Header(&format!("key-{i}")), t + Duration::from_micros(i));
        }
        assert!(k.len() <= 1_000, "{} keys kept", k.len());
    }

    #[test]
    fn eviction_prefers_idle_keys_and_keeps_active_limits() {
        let t = Instant::now();
        let k = KeyedLimiter::new(b(1.0, 2), 2);
        // "hot" is drained; "idle" took one token long ago and has refilled.
        assert!(k.take(KeyRef::Header("idle"), t).is_ok());
        let later = t + 10 * SEC;
        assert!(k.take(KeyRef::Header("hot"), later).is_ok());
        assert!(k.take(KeyRef::Header("hot"), later).is_ok());
        // A new key evicts the full "idle" bucket, not the drained "hot" one.
        assert!(k.take(KeyRef::Header("new"), later).is_ok());
        assert!(k.take(KeyRef::Header("hot"), later).is_err(), "hot keeps its empty bucket");
        assert_eq!(k.len(), 2);
    }

    #[test]
    fn idle_keys_are_swept_and_long_keys_cost_nothing_extra() {
        let t = Instant::now();
        let k = KeyedLimiter::new(b(1.0, 2), 1_000_000);
        let long = "x".repeat(1 << 20);
        assert!(k.take(KeyRef::Header(&long), t).is_ok());
        assert!(k.take(KeyRef::Header(&long), t).is_ok());
        assert!(k.take(KeyRef::Header(&long), t).is_err(), "a long key is still one client");
        assert!(k.take(KeyRef::Merchant(&long), t).is_ok(), "a merchant is not the header of the same text");
        for i in 0..SWEEP_EVERY {
            let _ = k.take(KeyRef::Header(&format!("k{i}")), t);
        }
        assert!(k.len() > 100);
        // Much later every bucket has refilled: the next sweep drops them all.
        let later = t + 3_600 * SEC;
        for i in 0..SWEEP_EVERY {
            let _ = k.take(KeyRef::Header("active"), later + Duration::from_millis(u64::from(i)));
        }
        assert!(k.len() <= 2, "{} keys kept after a sweep", k.len());
    }
}
