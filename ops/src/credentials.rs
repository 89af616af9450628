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
                    let token = issuer.mint("paymesh-mcp", Some(&merchant), &["payments:write".into()], ttl)?;
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
