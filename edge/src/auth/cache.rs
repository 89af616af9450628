//! Tokens verified recently, so a client sending the same JWT on every call pays for one
//! signature check, not one per call (Envoy's jwt_authn caches the same way).
//!
//! Keyed by the token's SHA-256 (a collision would have to be found in SHA-256 to reuse
//! another token's identity). An entry lives until the token expires (plus the leeway) or
//! `max_age` passes, whichever is first, so a key removed from its issuer's JWKS stops
//! authenticating within `max_age`. Only verified tokens are stored: refused tokens cost a
//! verification each time, but cannot fill the cache. The size is bounded: when full,
//! expired entries go first, then everything.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::Identity;

type Digest = [u8; 32];

#[derive(Debug)]
pub struct TokenCache {
    entries: RwLock<HashMap<Digest, (Arc<Identity>, Instant)>>,
    max_entries: usize,
    max_age: Duration,
}

fn digest(token: &str) -> Digest {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl TokenCache {
    /// `max_entries` 0 turns the cache off.
    pub fn new(max_entries: usize, max_age: Duration) -> Self {
        Self { entries: RwLock::new(HashMap::new()), max_entries, max_age }
    }

    /// The identity of `token` if it was verified recently and is still valid at `now`.
    /// A shared lock only: an expired entry is left for `put` to replace or sweep.
    pub fn get(&self, token: &str, now: Instant) -> Option<Arc<Identity>> {
        if self.max_entries == 0 {
            return None;
        }
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        entries.get(&digest(token)).filter(|(_, until)| *until > now).map(|(identity, _)| identity.clone())
    }

    /// Remembers a verified token until `expires` (its `exp` plus the leeway, in Unix
    /// seconds) or `max_age` from `now`.
    pub fn put(&self, token: &str, identity: &Arc<Identity>, expires: u64, now: Instant) {
        if self.max_entries == 0 {
            return;
        }
        let unix_now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let left = Duration::from_secs(expires.saturating_sub(unix_now)).min(self.max_age);
        if left.is_zero() {
            return;
        }
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.max_entries {
            entries.retain(|_, (_, until)| *until > now);
            if entries.len() >= self.max_entries {
                entries.clear();
            }
        }
        entries.insert(digest(token), (identity.clone(), now + left));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Arc<Identity> {
        Arc::new(Identity { subject: s.into(), merchant: None, scopes: vec![], authenticated_by: "jwt t".into() })
    }

    fn unix() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()
    }

    #[test]
    fn an_entry_lasts_until_the_token_expires_or_max_age_whichever_is_first() {
        let c = TokenCache::new(10, Duration::from_secs(60));
        let t0 = Instant::now();
        c.put("a", &id("a"), unix() + 3600, t0);
        c.put("b", &id("b"), unix() + 5, t0);
        assert_eq!(c.get("a", t0 + Duration::from_secs(59)), Some(id("a")));
        assert_eq!(c.get("a", t0 + Duration::from_secs(61)), None, "max_age bounds a long-lived token");
        assert_eq!(c.get("b", t0 + Duration::from_secs(4)), Some(id("b")));
        assert_eq!(c.get("b", t0 + Duration::from_secs(6)), None, "the token's expiry bounds the entry");
        assert_eq!(c.get("c", t0), None);
        c.put("expired", &id("x"), unix().saturating_sub(1), t0);
        assert_eq!(c.get("expired", t0), None, "an expired token is never stored");
    }

    #[test]
    fn the_cache_never_grows_past_its_bound_and_zero_turns_it_off() {
        let c = TokenCache::new(100, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..1_000 {
            c.put(&format!("token-{i}"), &id("x"), unix() + 600, t0);
            assert!(c.len() <= 100);
        }
        let off = TokenCache::new(0, Duration::from_secs(60));
        off.put("a", &id("a"), unix() + 600, t0);
        assert_eq!(off.get("a", t0), None);
    }
}
