//! Peak-EWMA load estimate of one endpoint.
//!
//! An observation slower than the estimate replaces it at once (so a sick endpoint is
//! avoided immediately); faster ones pull it down exponentially with time constant `decay`.
//! Between observations the estimate also decays toward zero, so an endpoint that was slow
//! long ago gets tried again. Cost = estimate x (in-flight + 1): busy endpoints look
//! proportionally worse, which spreads concurrent requests.
//!
//! Time is passed in, never read here, so the arithmetic is tested with a controlled clock.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct PeakEwma {
    decay_ns: f64,
    state: Mutex<Estimate>,
    in_flight: AtomicUsize,
}

#[derive(Debug, Clone, Copy)]
struct Estimate {
    rtt_ns: f64,
    at: Instant,
}

impl PeakEwma {
    /// `default_rtt` is the estimate before any observation; `decay` the time constant.
    pub fn new(default_rtt: Duration, decay: Duration, now: Instant) -> Self {
        Self {
            decay_ns: decay.as_nanos().max(1) as f64,
            state: Mutex::new(Estimate { rtt_ns: default_rtt.as_nanos() as f64, at: now }),
            in_flight: AtomicUsize::new(0),
        }
    }

    /// Records one request's latency, observed at `now`.
    pub fn observe(&self, rtt: Duration, now: Instant) {
        let rtt_ns = rtt.as_nanos() as f64;
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if rtt_ns > s.rtt_ns {
            s.rtt_ns = rtt_ns;
        } else {
            let w = self.weight(now.saturating_duration_since(s.at));
            s.rtt_ns = s.rtt_ns * w + rtt_ns * (1.0 - w);
        }
        s.at = now;
    }

    /// The current latency estimate (decayed to `now`), in nanoseconds.
    pub fn estimate_ns(&self, now: Instant) -> f64 {
        let s = *self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.rtt_ns * self.weight(now.saturating_duration_since(s.at))
    }

    /// Estimate x (in-flight + 1). Lower is better.
    pub fn cost(&self, now: Instant) -> f64 {
        self.estimate_ns(now) * (self.in_flight() as f64 + 1.0)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request as in flight until the guard is dropped.
    pub fn start(self: &std::sync::Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    fn weight(&self, elapsed: Duration) -> f64 {
        (-(elapsed.as_nanos() as f64) / self.decay_ns).exp()
    }
}

/// One in-flight request on an endpoint; dropping it ends the count.
#[derive(Debug)]
pub struct InFlight(std::sync::Arc<PeakEwma>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_slower_observation_is_taken_at_once() {
        let t0 = Instant::now();
        let e = PeakEwma::new(10 * MS, Duration::from_secs(10), t0);
        e.observe(500 * MS, t0);
        assert_eq!(e.estimate_ns(t0), 500e6);
    }

    #[test]
    fn faster_observations_pull_the_estimate_down_by_elapsed_time() {
        let t0 = Instant::now();
        let e = PeakEwma::new(Duration::from_millis(100), Duration::from_secs(1), t0);
        // One time constant later, the old value keeps weight e^-1.
        e.observe(Duration::ZERO, t0 + Duration::from_secs(1));
        let expected = 100e6 * (-1.0f64).exp();
        assert!((e.estimate_ns(t0 + Duration::from_secs(1)) - expected).abs() < 1.0);
        // An observation at the same instant barely moves it (weight 1).
        e.observe(Duration::ZERO, t0 + Duration::from_secs(1));
        assert!((e.estimate_ns(t0 + Duration::from_secs(1)) - expected).abs() < 1.0);
    }

    #[test]
    fn idle_estimates_decay_toward_zero() {
        let t0 = Instant::now();
        let e = PeakEwma::new(Duration::from_millis(100), Duration::from_secs(1), t0);
        assert!(e.estimate_ns(t0 + Duration::from_secs(10)) < 100e6 * 1e-4);
    }

    #[test]
    fn cost_grows_with_requests_in_flight() {
        let t0 = Instant::now();
        let e = Arc::new(PeakEwma::new(10 * MS, Duration::from_secs(10), t0));
        let base = e.cost(t0);
        let a = e.start();
        let b = e.start();
        assert_eq!(e.in_flight(), 2);
        assert_eq!(e.cost(t0), base * 3.0);
        drop((a, b));
        assert_eq!(e.in_flight(), 0);
        assert_eq!(e.cost(t0), base);
    }
}
