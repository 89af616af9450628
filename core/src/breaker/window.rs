//! Sliding windows of call outcomes for circuit breakers (Resilience4j's two kinds): the last
//! N calls, or the calls of the last N seconds (in one-second buckets).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Totals over the window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub calls: u32,
    pub failures: u32,
    pub slow: u32,
}

#[derive(Debug)]
pub enum Window {
    Count { size: usize, ring: VecDeque<(bool, bool)>, totals: Totals },
    Time { seconds: u64, origin: Instant, buckets: VecDeque<(u64, Totals)> },
}

impl Window {
    pub fn count(size: usize) -> Self {
        Self::Count { size: size.max(1), ring: VecDeque::with_capacity(size.max(1)), totals: Totals::default() }
    }

    pub fn time(span: Duration, origin: Instant) -> Self {
        Self::Time { seconds: span.as_secs().max(1), origin, buckets: VecDeque::new() }
    }

    pub fn record(&mut self, failure: bool, slow: bool, now: Instant) {
        match self {
            Self::Count { size, ring, totals } => {
                if ring.len() == *size
                    && let Some((f, s)) = ring.pop_front()
                {
                    totals.calls -= 1;
                    totals.failures -= u32::from(f);
                    totals.slow -= u32::from(s);
                }
                ring.push_back((failure, slow));
                totals.calls += 1;
                totals.failures += u32::from(failure);
                totals.slow += u32::from(slow);
            }
            Self::Time { origin, buckets, seconds } => {
                let sec = now.saturating_duration_since(*origin).as_secs();
                Self::expire(buckets, *seconds, sec);
                match buckets.back_mut() {
                    Some((s, t)) if *s == sec => add(t, failure, slow),
                    _ => {
                        let mut t = Totals::default();
                        add(&mut t, failure, slow);
                        buckets.push_back((sec, t));
                    }
                }
            }
        }
    }

    pub fn totals(&mut self, now: Instant) -> Totals {
        match self {
            Self::Count { totals, .. } => *totals,
            Self::Time { origin, buckets, seconds } => {
                let sec = now.saturating_duration_since(*origin).as_secs();
                Self::expire(buckets, *seconds, sec);
                buckets.iter().fold(Totals::default(), |mut acc, (_, t)| {
                    acc.calls += t.calls;
                    acc.failures += t.failures;
                    acc.slow += t.slow;
                    acc
                })
            }
        }
    }

    pub fn clear(&mut self) {
        match self {
            Self::Count { ring, totals, .. } => {
                ring.clear();
                *totals = Totals::default();
            }
            Self::Time { buckets, .. } => buckets.clear(),
        }
    }

    /// Drops buckets that fell out of the last `seconds` seconds ending at `sec`.
    fn expire(buckets: &mut VecDeque<(u64, Totals)>, seconds: u64, sec: u64) {
        while buckets.front().is_some_and(|(s, _)| *s + seconds <= sec) {
            buckets.pop_front();
        }
    }
}

fn add(t: &mut Totals, failure: bool, slow: bool) {
    t.calls += 1;
    t.failures += u32::from(failure);
    t.slow += u32::from(slow);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_window_keeps_the_last_n() {
        let now = Instant::now();
        let mut w = Window::count(3);
        w.record(true, false, now);
        w.record(true, true, now);
        w.record(false, false, now);
        assert_eq!(w.totals(now), Totals { calls: 3, failures: 2, slow: 1 });
        w.record(false, false, now);
        assert_eq!(w.totals(now), Totals { calls: 3, failures: 1, slow: 1 });
        w.record(false, false, now);
        assert_eq!(w.totals(now), Totals { calls: 3, failures: 0, slow: 0 });
        w.clear();
        assert_eq!(w.totals(now), Totals::default());
    }

    #[test]
    fn time_window_forgets_old_seconds() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut w = Window::time(Duration::from_secs(3), t0);
        w.record(true, false, s(0));
        w.record(false, true, s(1));
        w.record(false, false, s(2));
        assert_eq!(w.totals(s(2)), Totals { calls: 3, failures: 1, slow: 1 });
        // At second 3 the first second has left the 3-second window.
        assert_eq!(w.totals(s(3)), Totals { calls: 2, failures: 0, slow: 1 });
        w.record(true, false, s(3));
        assert_eq!(w.totals(s(3)), Totals { calls: 3, failures: 1, slow: 1 });
        assert_eq!(w.totals(s(10)), Totals::default());
    }
}
