//! Who is calling: JWTs from configured issuers, or API keys, checked before a call is
//! read or routed. A refused caller gets 401 (REST, with RFC 6750's `WWW-Authenticate`)
//! or UNAUTHENTICATED (gRPC), and nothing reaches an upstream.
//!
//! - `jwt`: signature (RS256, ES256 or EdDSA only, the algorithm bound to the key's type),
//!   `iss`, `aud`, `exp` and `nbf` with the configured leeway, then the identity claims.
//! - `jwks`: each issuer's public keys, from a file or an HTTP URL, cached and refreshed.
//! - `api_key`: `x-api-key: pmk_<id>_<secret>`, checked against the SHA-256 in the config.

mod api_key;
mod cache;
mod jwks;
mod jwt;

use std::collections::HashMap;
use std::sync::Arc;

use paymesh_core::config::Auth;

pub use jwks::{KeyRefresher, KeySet};

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub subject: String,
    pub merchant: Option<String>,
    pub scopes: Vec<String>,
    /// `jwt <issuer>` or `api-key <id>`.
    pub authenticated_by: String,
}

impl Identity {
    /// The key per-caller rate limits count under.
    pub fn limit_key(&self) -> String {
        format!("{} {}", self.authenticated_by, self.subject)
    }
}

/// Why a caller was refused. Every kind is a 401; the text never repeats the credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No credential at all.
    Missing,
    /// The request carries credentials in a shape the edge does not accept.
    Malformed(String),
    /// A credential that does not verify.
    Invalid(String),
}

impl Refusal {
    /// The `WWW-Authenticate` value (RFC 6750 section 3).
    pub fn www_authenticate(&self) -> String {
        match self {
            Refusal::Missing => "Bearer realm=\"paymesh\"".to_owned(),
            Refusal::Malformed(m) => format!("Bearer realm=\"paymesh\", error=\"invalid_request\", error_description=\"{}\"", quoted(m)),
            Refusal::Invalid(m) => format!("Bearer realm=\"paymesh\", error=\"invalid_token\", error_description=\"{}\"", quoted(m)),
        }
    }

    pub fn message(&self) -> String {
        match self {
            Refusal::Missing => "this route needs credentials: send `Authorization: Bearer <JWT>` or `x-api-key: <key>`".to_owned(),
            Refusal::Malformed(m) | Refusal::Invalid(m) => m.clone(),
        }
    }
}

/// A description safe inside a quoted-string (RFC 6750 allows printable ASCII but `"` and `\`).
fn quoted(m: &str) -> String {
    m.chars().map(|c| if c == '"' || c == '\\' || !(' '..='~').contains(&c) { '\'' } else { c }).collect()
}

/// The caller of a call to `service`: `Ok(None)` when the route is public (or the edge has
/// no `[edge.auth]`), the verified identity, or why the caller is refused. The one check
/// REST and gRPC calls both go through.
pub async fn check(
    state: &crate::state::EdgeState,
    service: &crate::catalog::ServiceRoute,
    session: &pingora::proxy::Session,
) -> Result<Option<Arc<Identity>>, Refusal> {
    let Some(auth) = state.auth.as_ref().filter(|_| !service.public) else { return Ok(None) };
    let headers = &session.req_header().headers;
    let values = |name| headers.get_all(name).iter().map(|v| v.as_bytes()).collect::<Vec<&[u8]>>();
    auth.authenticate(&values(http::header::AUTHORIZATION.as_str()), &values(API_KEY_HEADER)).await.map(Some)
}

/// The header API keys come in.
pub const API_KEY_HEADER: &str = "x-api-key";

/// The edge's authenticator, built once from `[edge.auth]`.
#[derive(Debug)]
pub struct Authenticator {
    config: Auth,
    issuers: Vec<jwt::Issuer>,
    api_keys: HashMap<String, paymesh_core::config::ApiKey>,
    verified: cache::TokenCache,
}

impl Authenticator {
    /// Loads every issuer's keys (a JWKS file must be readable now; a JWKS URL is fetched
    /// in the background when it cannot be reached yet).
    pub fn new(config: Auth) -> Result<Self, String> {
        let mut issuers = Vec::with_capacity(config.issuers.len());
        for i in &config.issuers {
            issuers.push(jwt::Issuer::new(i.clone(), Arc::new(KeySet::new(i)?)));
        }
        let api_keys = config.api_keys.iter().map(|k| (k.id.clone(), k.clone())).collect();
        let verified = cache::TokenCache::new(config.token_cache_entries, config.token_cache_max_age);
        Ok(Self { config, issuers, api_keys, verified })
    }

    /// Every issuer's key set (the background refresher walks them).
    pub fn key_sets(&self) -> Vec<Arc<KeySet>> {
        self.issuers.iter().map(|i| i.keys.clone()).collect()
    }

    /// Checks the request's credentials. `authorization` holds every `Authorization`
    /// header value, `api_keys` every `x-api-key` value.
    pub async fn authenticate(&self, authorization: &[&[u8]], api_keys: &[&[u8]]) -> Result<Arc<Identity>, Refusal> {
        let max = self.config.max_token_bytes;
        match (authorization, api_keys) {
            ([], []) => Err(Refusal::Missing),
            ([_, _, ..], _) | (_, [_, _, ..]) => Err(Refusal::Malformed("send one credential, not several".into())),
            ([_], [_]) => Err(Refusal::Malformed("send either Authorization or x-api-key, not both".into())),
            ([value], []) => {
                if value.len() > max + 7 {
                    return Err(Refusal::Malformed(format!("the token is longer than {max} bytes")));
                }
                let value = std::str::from_utf8(value).map_err(|_| Refusal::Malformed("the Authorization header is not text".into()))?;
                let Some((scheme, token)) = value.split_once(' ') else {
                    return Err(Refusal::Malformed("write the header as `Authorization: Bearer <JWT>`".into()));
                };
                if !scheme.eq_ignore_ascii_case("bearer") {
                    return Err(Refusal::Malformed(format!("the {scheme} scheme is not accepted; use Bearer")));
                }
                let token = token.trim();
                if token.is_empty() {
                    return Err(Refusal::Malformed("the bearer token is empty".into()));
                }
                let now = std::time::Instant::now();
                if let Some(identity) = self.verified.get(token, now) {
                    return Ok(identity);
                }
                let (identity, exp) = jwt::verify(&self.issuers, &self.config, token).await.map_err(Refusal::Invalid)?;
                let identity = Arc::new(identity);
                self.verified.put(token, &identity, exp.saturating_add(self.config.leeway.as_secs()), now);
                Ok(identity)
            }
            ([], [key]) => {
                if key.len() > max {
                    return Err(Refusal::Malformed(format!("the API key is longer than {max} bytes")));
                }
                api_key::verify(&self.api_keys, key).map(Arc::new).map_err(Refusal::Invalid)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_cannot_break_out_of_the_quoted_string() {
        let r = Refusal::Invalid("bad \"x\" \\ \n".into());
        assert_eq!(r.www_authenticate(), "Bearer realm=\"paymesh\", error=\"invalid_token\", error_description=\"bad 'x' ' '\"");
        assert_eq!(Refusal::Missing.www_authenticate(), "Bearer realm=\"paymesh\"");
    }
}
