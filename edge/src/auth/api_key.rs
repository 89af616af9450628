//! API keys for server-to-server callers: `x-api-key: pmk_<id>_<secret>`. The config holds
//! only each key's SHA-256 (keys are long random strings, so a fast hash is enough: there
//! is nothing to guess), compared in constant time.

use std::collections::HashMap;

use paymesh_core::config::{ApiKey, valid_key_id};

use super::Identity;

/// The prefix every Paymesh API key starts with.
pub const PREFIX: &str = "pmk_";

pub fn verify(keys: &HashMap<String, ApiKey>, sent: &[u8]) -> Result<Identity, String> {
    let sent = std::str::from_utf8(sent).map_err(|_| "the API key is not text".to_owned())?;
    let not_recognised = || "the API key is not recognised".to_owned();
    let rest = sent.strip_prefix(PREFIX).ok_or_else(|| format!("an API key starts with {PREFIX}"))?;
    let (id, secret) = rest.split_once('_').ok_or_else(not_recognised)?;
    if !valid_key_id(id) || secret.is_empty() {
        return Err(not_recognised());
    }
    let key = keys.get(id).ok_or_else(not_recognised)?;
    let digest = ring::digest::digest(&ring::digest::SHA256, sent.as_bytes());
    if !same(hex(digest.as_ref()).as_bytes(), key.sha256.as_bytes()) {
        return Err(not_recognised());
    }
    // Only a caller holding the key learns that it was revoked.
    if key.revoked {
        return Err(format!("the API key {id} is revoked"));
    }
    Ok(Identity {
        subject: key.subject.clone(),
        merchant: key.merchant.clone(),
        scopes: key.scopes.clone(),
        authenticated_by: format!("api-key {id}"),
    })
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Equal, in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(key: &str, revoked: bool) -> HashMap<String, ApiKey> {
        let sha256 = hex(ring::digest::digest(&ring::digest::SHA256, key.as_bytes()).as_ref());
        let k = ApiKey {
            id: "k1".into(),
            sha256,
            subject: "batch".into(),
            merchant: Some("m-1".into()),
            scopes: vec!["payments".into()],
            revoked,
        };
        HashMap::from([("k1".to_owned(), k)])
    }

    #[test]
    fn the_right_key_gives_its_identity_and_anything_else_is_refused() {
        let good = "pmk_k1_3b9f0c2a";
        let ks = keys(good, false);
        let id = verify(&ks, good.as_bytes()).expect("the key verifies");
        assert_eq!((id.subject.as_str(), id.merchant.as_deref(), id.authenticated_by.as_str()), ("batch", Some("m-1"), "api-key k1"));
        for bad in ["pmk_k1_3b9f0c2b", "pmk_k2_3b9f0c2a", "pmk_k1_", "pmk_k1", "k1_3b9f0c2a", "pmk__x", "pmk_k 1_x", ""] {
            assert!(verify(&ks, bad.as_bytes()).is_err(), "{bad:?} was accepted");
        }
        assert!(verify(&ks, &[0xff, 0xfe]).is_err());
    }

    #[test]
    fn a_revoked_key_says_so_only_to_its_holder() {
        let good = "pmk_k1_3b9f0c2a";
        let ks = keys(good, true);
        assert_eq!(verify(&ks, good.as_bytes()).expect_err("revoked"), "the API key k1 is revoked");
        assert_eq!(verify(&ks, b"pmk_k1_wrong").expect_err("wrong"), "the API key is not recognised");
    }
}
