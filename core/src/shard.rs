//! The shard function: which database shard owns a merchant.
//!
//! `shard_for_merchant(id, n)` is jump consistent hashing (Lamping & Veach, 2014) over the
//! 64-bit FNV-1a hash of the merchant id's UTF-8 bytes. It is stable (the same id always lands
//! on the same shard for a given `n`), spreads ids evenly, and when shards grow from `n` to
//! `n + 1` only about `1 / (n + 1)` of merchants move, all of them to the new shard. The edge
//! and every service call this one function, so they always agree.
//!
//! Payments that already exist never move: their ids carry the shard (see [`crate::ids`]).

use std::fmt;

/// A shard's index, `0..shard_count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardId(pub u32);

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Returns the shard that owns `merchant_id` among `shard_count` shards.
///
/// # Panics
/// If `shard_count` is 0; validated configs always have at least one shard.
pub fn shard_for_merchant(merchant_id: &str, shard_count: u32) -> ShardId {
    assert!(shard_count > 0, "a mesh has at least one shard");
    ShardId(jump_consistent_hash(fnv1a_64(merchant_id.as_bytes()), shard_count))
}

/// FNV-1a, 64-bit: tiny, fast and fully specified, so other languages can reproduce it.
fn fnv1a_64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(PRIME))
}

/// Jump consistent hash: maps `key` to a bucket in `0..buckets` with minimal movement
/// when `buckets` grows.
fn jump_consistent_hash(mut key: u64, buckets: u32) -> u32 {
    let mut bucket: i64 = -1;
    let mut next: i64 = 0;
    while next < i64::from(buckets) {
        bucket = next;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        let scale = f64::from(1u32 << 31) / (((key >> 33) + 1) as f64);
        next = ((bucket + 1) as f64 * scale) as i64;
    }
    // `bucket` is in 0..buckets, which fits a u32.
    bucket as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn one_shard_takes_everything() {
        for id in ["a", "TEST", "merchant-42", ""] {
            assert_eq!(shard_for_merchant(id, 1), ShardId(0));
        }
    }

    #[test]
    fn results_are_in_range_and_stable() {
        for n in 1..=16 {
            for i in 0..500 {
                let id = format!("m-{i}");
                let s = shard_for_merchant(&id, n);
                assert!(s.0 < n);
                assert_eq!(s, shard_for_merchant(&id, n));
            }
        }
    }

    #[test]
    fn spreads_merchants_evenly() {
        let n = 4u32;
        let mut counts = [0u32; 4];
        for i in 0..40_000 {
            counts[shard_for_merchant(&format!("merchant-{i}"), n).0 as usize] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "uneven spread: {counts:?}");
        }
    }

    #[test]
    fn growing_moves_merchants_only_to_the_new_shard() {
        let mut moved = 0;
        for i in 0..10_000 {
            let id = format!("merchant-{i}");
            let before = shard_for_merchant(&id, 3);
            let after = shard_for_merchant(&id, 4);
            if before != after {
                assert_eq!(after, ShardId(3), "{id} moved between old shards");
                moved += 1;
            }
        }
        // About a quarter should move to the fourth shard.
        assert!((2_000..3_000).contains(&moved), "moved {moved}");
    }
}
