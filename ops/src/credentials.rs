//! What the operator's tools present to the edge: nothing (an edge without `[edge.auth]`),
//! tokens minted by the local stack's issuer (`--issuer-dir`, `cargo xtask up`'s stack), or
//! one token given in the environment (`PAYMESH_OPS_TOKEN`, acting for one merchant).
//!
//! Tokens are never logged or returned by a tool.

use std::time::Duration;

use crate::issuer::LocalIssuer;

/// The environment variable holding a bearer token for `--token-merchant`.
pub const TOKEN_ENV: &str = "PAYMESH_OPS_TOKEN";

/// How the tools authenticate.
#[derive(Debug)]
pub enum Credentials {
    /// The edge does not authenticate.
    None,
    /// Mint a token per merchant (and an admin token) with the local issuer's key.
    Issuer(LocalIssuer),
    /// One token for everything; load tests act for `merchant` only.
    Token { token: String, merchant: String },
}

/// The load tests' merchants when the tools may pick them (spread over the shards).
const MERCHANTS: usize = 16;

impl Credentials {
    /// The merchants a load test's calls act for, with the `authorization` header of each.
    pub fn callers(&self, ttl: Duration) -> Result<Vec<(String, Option<String>)>, String> {
        match self {
            Self::None => Ok((0..MERCHANTS).map(|i| (format!("loadtest-m{i}"), None)).collect()),
            Self::Issuer(issuer) => (0..MERCHANTS)
                .map(|i| {
                    let merchant = format!("loadtest-m{i}");
                    // One caller per merchant (per-caller rate limits key on the subject).
                    let token = issuer.mint(&format!("paymesh-mcp-{merchant}"), Some(&merchant), &["payments:write".into()], ttl)?;
                    Ok((merchant, Some(format!("Bearer {token}"))))
                })
                .collect(),
            Self::Token { token, merchant } => Ok(vec![(merchant.clone(), Some(format!("Bearer {token}")))]),
        }
    }

    /// The `authorization` header of an admin change (scope `mesh:admin`), if any.
    pub fn admin(&self) -> Result<Option<String>, String> {
        match self {
            Self::None => Ok(None),
            Self::Issuer(issuer) => {
                let scopes = [paymesh_core::identity::MESH_ADMIN_SCOPE.to_owned()];
                Ok(Some(format!("Bearer {}", issuer.mint("paymesh-mcp", None, &scopes, Duration::from_secs(60))?)))
            }
            Self::Token { token, .. } => Ok(Some(format!("Bearer {token}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The claims of a token (its signature is the edge's to check).
    fn claims(authorization: &str) -> serde_json::Value {
        use base64::Engine;
        let token = authorization.trim_start_matches("Bearer ");
        let payload = token.split('.').nth(1).expect("a JWT");
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).expect("base64")).expect("json")
    }

    #[test]
    fn each_load_test_merchant_is_its_own_caller_and_the_admin_token_has_the_scope() {
        let dir = std::env::temp_dir().join(format!("paymesh-ops-credentials-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let issuer = LocalIssuer::ensure(&dir).expect("issuer");
        let c = Credentials::Issuer(LocalIssuer::open(&dir).expect("open"));
        let callers = c.callers(Duration::from_secs(60)).expect("callers");
        assert_eq!(callers.len(), MERCHANTS);
        let mut subjects = std::collections::BTreeSet::new();
        for (merchant, auth) in &callers {
            let claims = claims(auth.as_deref().expect("a token"));
            assert_eq!(claims["merchant_id"], merchant.as_str());
            subjects.insert(claims["sub"].as_str().expect("sub").to_owned());
        }
        assert_eq!(subjects.len(), MERCHANTS, "per-caller rate limits would count every merchant as one caller");
        let admin = claims(&c.admin().expect("admin").expect("a token"));
        assert_eq!(admin["scope"], paymesh_core::identity::MESH_ADMIN_SCOPE);
        drop(issuer);
        assert!(LocalIssuer::open(&dir.join("missing")).is_err(), "open never makes a key");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
