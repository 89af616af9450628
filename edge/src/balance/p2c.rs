//! Power of two choices: of the candidates, sample two distinct ones and keep the cheaper.
//! Never worse than random, and it never picks the single most loaded of three or more.

use std::sync::atomic::{AtomicU64, Ordering};

/// A tiny lock-free xorshift64* generator: fast, good enough for sampling, seedable for tests.
#[derive(Debug)]
pub struct Rng(AtomicU64);

impl Rng {
    pub fn seeded(seed: u64) -> Self {
        Self(AtomicU64::new(seed | 1))
    }

    /// Seeded from the clock and an address, so processes differ.
    pub fn from_entropy() -> Self {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        let local = 0u8;
        Self::seeded(t ^ (std::ptr::addr_of!(local) as u64).rotate_left(32))
    }

    pub fn next_u64(&self) -> u64 {
        let mut x = self.0.load(Ordering::Relaxed);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        // Races between threads only make the sequence less predictable, never wrong.
        self.0.store(x, Ordering::Relaxed);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

/// The selection rule, generic over how cost is computed.
#[derive(Debug)]
pub struct P2c {
    rng: Rng,
}

impl P2c {
    pub fn new(rng: Rng) -> Self {
        Self { rng }
    }

    /// Index of the chosen candidate, or `None` if there are none.
    pub fn pick<T>(&self, candidates: &[T], cost: impl Fn(&T) -> f64) -> Option<usize> {
        match candidates.len() {
            0 => None,
            1 => Some(0),
            n => {
                let a = self.rng.below(n);
                let mut b = self.rng.below(n - 1);
                if b >= a {
                    b += 1;
                }
                Some(if cost(&candidates[b]) < cost(&candidates[a]) { b } else { a })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_single() {
        let p = P2c::new(Rng::seeded(7));
        assert_eq!(p.pick::<f64>(&[], |c| *c), None);
        assert_eq!(p.pick(&[5.0], |c| *c), Some(0));
    }

    #[test]
    fn of_two_the_cheaper_always_wins() {
        let p = P2c::new(Rng::seeded(7));
        for _ in 0..1_000 {
            assert_eq!(p.pick(&[3.0, 1.0], |c| *c), Some(1));
        }
    }

    #[test]
    fn the_most_expensive_of_several_is_never_chosen_and_the_rest_share() {
        let p = P2c::new(Rng::seeded(42));
        let costs = [1.0, 2.0, 3.0, 100.0];
        let mut hits = [0u32; 4];
        for _ in 0..10_000 {
            hits[p.pick(&costs, |c| *c).expect("some")] += 1;
        }
        assert_eq!(hits[3], 0);
        // Expected shares: cheapest wins every pair it is in (3 of 6 pairs), and so on.
        assert!(hits[0] > hits[1] && hits[1] > hits[2] && hits[2] > 0, "{hits:?}");
    }

    #[test]
    fn samples_are_uniform_enough() {
        let r = Rng::seeded(1);
        let mut counts = [0u32; 5];
        for _ in 0..50_000 {
            counts[r.below(5)] += 1;
        }
        assert!(counts.iter().all(|c| (9_000..11_000).contains(c)), "{counts:?}");
    }
}
