//! When a failed call may be tried again, how long to wait, and how many retries the route can
//! afford.
//!
//! - Only failures that did not process the request, or UNAVAILABLE for a request that is
//!   safe to repeat (a read, or a write carrying an idempotency key), are retried, and only to
//!   another instance of the same shard (the caller excludes instances already tried).
//! - Backoff is exponential with full jitter.
//! - A retry budget (as linkerd2-proxy and Finagle have) caps retries at `ratio` of the
//!   route's requests plus a small per-second allowance, so retries cannot multiply an outage.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use paymesh_core::config;

use crate::balance::Rng;

/// How an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connection could not be made: nothing was sent.
    Connect,
    /// The server refused the HTTP/2 stream: it did not process the request.
    RefusedStream,
    /// The upstream answered with this gRPC status code.
    Status(i32),
    /// No answer within the deadline.
    Timeout,
}

const UNAVAILABLE: i32 = 14;
const CANCELLED: i32 = 1;
const DEADLINE_EXCEEDED: i32 = 4;

/// What an attempt's outcome says about the instance and the route's breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Counted: `instance` toward the instance's ejection, `breaker` as a breaker failure.
    Counted { instance: bool, breaker: bool },
    /// The client's doing (its own deadline ran out, it cancelled or went away): counts
    /// against nobody.
    Client,
}

/// Judges an attempt's outcome. `client_deadline`: the deadline was the client's, shorter
/// than the route's; `client_gone`: the client went away before the answer;
/// `breaker_failure`: the route's breaker's failure codes.
pub fn judge(failure: Option<Failure>, client_deadline: bool, client_gone: bool, breaker_failure: impl Fn(i32) -> bool) -> Verdict {
    match failure {
        None => Verdict::Counted { instance: false, breaker: false },
        Some(Failure::Timeout | Failure::Status(DEADLINE_EXCEEDED)) if client_deadline => Verdict::Client,
        Some(Failure::Status(CANCELLED)) => Verdict::Client,
        Some(_) if client_gone => Verdict::Client,
        Some(Failure::Connect | Failure::RefusedStream | Failure::Timeout) => Verdict::Counted { instance: true, breaker: true },
        Some(Failure::Status(c)) => Verdict::Counted { instance: is_server_failure(c), breaker: breaker_failure(c) },
    }
}

/// Status codes that say the instance (not the request) is in trouble.
pub fn is_server_failure(code: i32) -> bool {
    matches!(
        tonic::Code::from_i32(code),
        tonic::Code::Unavailable | tonic::Code::Internal | tonic::Code::Unknown | tonic::Code::DataLoss | tonic::Code::DeadlineExceeded
    )
}

/// Whether `failure` may be retried for a request that is (or is not) safe to repeat.
pub fn retryable(failure: Failure, safe: bool) -> bool {
    match failure {
        Failure::Connect | Failure::RefusedStream => true,
        Failure::Status(UNAVAILABLE) => safe,
        Failure::Status(_) | Failure::Timeout => false,
    }
}

/// The wait before retry number `n` (1 for the first retry): uniformly random in
/// `[0, min(max, base x 2^(n-1))]`.
pub fn backoff(cfg: &config::Retry, n: u32, rng: &Rng) -> Duration {
    let exp = cfg.backoff_base.saturating_mul(1u32 << (n.saturating_sub(1)).min(16)).min(cfg.backoff_max);
    let nanos = exp.as_nanos() as u64;
    if nanos == 0 { Duration::ZERO } else { Duration::from_nanos(rng.next_u64() % (nanos + 1)) }
}

/// The retry budget of a route.
#[derive(Debug)]
pub struct Budget {
    ratio: f64,
    per_second: f64,
    state: Mutex<BudgetState>,
}

#[derive(Debug)]
struct BudgetState {
    /// Earned by requests (`ratio` each), spent by retries, capped.
    earned: f64,
    /// The per-second allowance, refilled with time, at most one second's worth.
    allowance: f64,
    at: Instant,
    retries: u64,
    refused: u64,
}

impl Budget {
    pub fn new(cfg: &config::Retry, now: Instant) -> Self {
        let per_second = f64::from(cfg.min_retries_per_second);
        Self {
            ratio: cfg.budget_ratio,
            per_second,
            state: Mutex::new(BudgetState { earned: 0.0, allowance: per_second, at: now, retries: 0, refused: 0 }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BudgetState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every request (not retry) earns `ratio` of a retry.
    pub fn deposit(&self) {
        let mut s = self.lock();
        // At most a hundred requests' worth saved up, so a long calm cannot fund a storm.
        s.earned = (s.earned + self.ratio).min(self.ratio * 100.0);
    }

    /// Spends one retry if the budget allows it.
    pub fn try_withdraw(&self, now: Instant) -> bool {
        let mut s = self.lock();
        let elapsed = now.saturating_duration_since(s.at).as_secs_f64();
        s.allowance = (s.allowance + elapsed * self.per_second).min(self.per_second);
        s.at = now.max(s.at);
        let ok = if s.allowance >= 1.0 {
            s.allowance -= 1.0;
            true
        } else if s.earned >= 1.0 {
            s.earned -= 1.0;
            true
        } else {
            false
        };
        if ok {
            s.retries += 1;
        } else {
            s.refused += 1;
        }
        ok
    }

    /// (retries made, retries the budget refused).
    pub fn counts(&self) -> (u64, u64) {
        let s = self.lock();
        (s.retries, s.refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> config::Retry {
        config::Retry {
            enabled: true,
            max_attempts: 3,
            backoff_base: Duration::from_millis(25),
            backoff_max: Duration::from_millis(250),
            budget_ratio: 0.2,
            min_retries_per_second: 10,
            idempotency_key_field: Some("idempotency_key".into()),
        }
    }

    #[test]
    fn only_safe_failures_are_retried() {
        assert!(retryable(Failure::Connect, false), "nothing was sent");
        assert!(retryable(Failure::RefusedStream, false), "nothing was processed");
        assert!(retryable(Failure::Status(14), true));
        assert!(!retryable(Failure::Status(14), false), "a write without an idempotency key is never sent twice");
        for code in [3, 4, 9, 13] {
            assert!(!retryable(Failure::Status(code), true), "code {code}");
        }
        assert!(!retryable(Failure::Timeout, true), "the upstream may still be working on it");
    }

    #[test]
    fn backoff_is_jittered_exponential_and_capped() {
        let rng = Rng::seeded(3);
        let c = cfg();
        for n in 1..=10 {
            let cap = Duration::from_millis(25 * (1 << (n - 1))).min(Duration::from_millis(250));
            for _ in 0..200 {
                assert!(backoff(&c, n, &rng) <= cap);
            }
        }
        let spread: std::collections::HashSet<_> = (0..50).map(|_| backoff(&c, 3, &rng)).collect();
        assert!(spread.len() > 10, "jittered");
    }

    #[test]
    fn the_budget_caps_retries_during_a_full_outage() {
        let t = Instant::now();
        let b = Budget::new(&cfg(), t);
        // 1000 requests within one second all fail and all want a retry.
        let mut retries = 0;
        for i in 0..1_000u64 {
            b.deposit();
            if b.try_withdraw(t + Duration::from_micros(i * 1_000)) {
                retries += 1;
            }
        }
        // 20 % of 1000 plus at most about two seconds' allowance of 10.
        assert!(retries <= 200 + 20, "{retries} retries");
        assert!(retries >= 190, "the budget still allows its share: {retries}");
        assert_eq!(b.counts(), (retries, 1_000 - retries));
    }

    #[test]
    fn a_quiet_route_can_still_retry_a_little() {
        let t = Instant::now();
        let b = Budget::new(&config::Retry { budget_ratio: 0.0, ..cfg() }, t);
        let granted = (0..20).filter(|_| b.try_withdraw(t)).count();
        assert_eq!(granted, 10, "the per-second allowance");
        assert!(b.try_withdraw(t + Duration::from_millis(100)), "refilled by a tenth of a second");
    }
}
