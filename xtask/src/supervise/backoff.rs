//! The restart delay: exponential from 0.5 s, doubling to a 30 s cap, back to 0.5 s once a
//! process has run for 10 s (Docker's `restart: unless-stopped` works the same way).

use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    /// A run at least this long counts as healthy: the next delay starts over.
    reset_after: Duration,
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(Duration::from_millis(500), Duration::from_secs(30), Duration::from_secs(10))
    }
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration, reset_after: Duration) -> Self {
        Self { initial, max, reset_after, next: initial }
    }

    /// The delay before the next start of a process that ran for `ran_for`.
    pub fn after_run(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= self.reset_after {
            self.next = self.initial;
        }
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHORT: Duration = Duration::from_millis(100);

    #[test]
    fn doubles_up_to_the_cap() {
        let mut b = Backoff::default();
        let delays: Vec<u64> = (0..9).map(|_| b.after_run(SHORT).as_millis() as u64).collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
    }

    #[test]
    fn a_long_run_starts_over() {
        let mut b = Backoff::default();
        for _ in 0..5 {
            b.after_run(SHORT);
        }
        assert_eq!(b.after_run(Duration::from_secs(10)), Duration::from_millis(500));
        assert_eq!(b.after_run(SHORT), Duration::from_secs(1));
    }
}
