//! The `[edge.auth]` section: who may call the edge (JWT issuers, API keys) and how the
//! authenticated identity is read from a token.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::duration;

/// How the edge authenticates callers. Routes are authenticated unless they say
/// `auth = "public"`.
#[derive(Clone, Debug, PartialEq)]
pub struct Auth {
    pub issuers: Vec<Issuer>,
    pub api_keys: Vec<ApiKey>,
    /// Clock skew allowed when checking `exp` and `nbf`.
    pub leeway: Duration,
    /// The claim naming the caller's merchant (a string).
    pub merchant_claim: String,
    /// The claim listing the caller's scopes (a space-separated string, or an array).
    pub scopes_claim: String,
    /// Longest token (or API key) accepted, in bytes.
    pub max_token_bytes: usize,
    /// Verified tokens remembered (0: verify every call).
    pub token_cache_entries: usize,
    /// Longest a verified token is remembered (a key removed from a JWKS stops working
    /// within it).
    pub token_cache_max_age: Duration,
}

/// A JWT issuer and where its public keys are.
#[derive(Clone, Debug, PartialEq)]
pub struct Issuer {
    /// The `iss` a token must carry.
    pub issuer: String,
    /// A token's `aud` must name one of these.
    pub audiences: Vec<String>,
    pub keys: KeySource,
    /// For an `https://` JWKS URL: the CA that signs its server's certificate, when it is
    /// not one the system trusts (a private CA).
    pub jwks_ca: Option<PathBuf>,
    /// How often a JWKS URL is fetched again (also on a token whose `kid` is unknown, at most
    /// once per `min_refresh`).
    pub refresh: Duration,
    pub min_refresh: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// A JWKS file (re-read when it changes).
    File(PathBuf),
    /// A JWKS document over HTTP or HTTPS.
    Url(String),
}

/// A server-to-server caller's key. The key itself is never in the config, only its
/// SHA-256; callers send `x-api-key: pmk_<id>_<secret>`.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiKey {
    pub id: String,
    /// Lower-case hex SHA-256 of the whole key as sent.
    pub sha256: String,
    pub subject: String,
    pub merchant: Option<String>,
    pub scopes: Vec<String>,
    /// A revoked key is refused with its own message (so its owner learns why).
    pub revoked: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    #[serde(default)]
    issuers: Vec<RawIssuer>,
    #[serde(default)]
    api_keys: Vec<RawApiKey>,
    #[serde(default = "default_leeway")]
    leeway: String,
    #[serde(default = "default_merchant_claim")]
    merchant_claim: String,
    #[serde(default = "default_scopes_claim")]
    scopes_claim: String,
    #[serde(default = "default_max_token_bytes")]
    max_token_bytes: usize,
    #[serde(default = "default_token_cache_entries")]
    token_cache_entries: usize,
    #[serde(default = "default_token_cache_max_age")]
    token_cache_max_age: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIssuer {
    issuer: String,
    audiences: Vec<String>,
    #[serde(default)]
    jwks_file: Option<String>,
    #[serde(default)]
    jwks_url: Option<String>,
    #[serde(default)]
    jwks_ca: Option<String>,
    #[serde(default = "default_refresh")]
    refresh: String,
    #[serde(default = "default_min_refresh")]
    min_refresh: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApiKey {
    id: String,
    sha256: String,
    subject: String,
    #[serde(default)]
    merchant: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    revoked: bool,
}

fn default_leeway() -> String {
    "30s".into()
}
fn default_merchant_claim() -> String {
    "merchant_id".into()
}
fn default_scopes_claim() -> String {
    "scope".into()
}
fn default_max_token_bytes() -> usize {
    8 * 1024
}
fn default_token_cache_entries() -> usize {
    10_000
}
fn default_token_cache_max_age() -> String {
    "60s".into()
}
fn default_refresh() -> String {
    "10m".into()
}
fn default_min_refresh() -> String {
    "10s".into()
}

/// An API key id: what follows `pmk_` up to the next `_`.
pub fn valid_key_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

pub(super) fn validate(
    raw: RawAuth,
    base_dir: &Path,
    err: &dyn Fn(String, String) -> super::ConfigError,
) -> Result<Auth, super::ConfigError> {
    let dur = |key: String, v: &str| duration::parse(v).map_err(|m| err(key, m));
    let leeway = dur("edge.auth.leeway".into(), &raw.leeway)?;
    if leeway > Duration::from_secs(300) {
        return Err(err("edge.auth.leeway".into(), "is above 5 minutes; clock skew allowance should be seconds".into()));
    }
    if !(256..=64 * 1024).contains(&raw.max_token_bytes) {
        return Err(err("edge.auth.max_token_bytes".into(), format!("{} is out of range; use 256 to 65536", raw.max_token_bytes)));
    }
    if raw.token_cache_entries > 1_000_000 {
        return Err(err("edge.auth.token_cache_entries".into(), format!("{} is out of range; use 0 to 1000000", raw.token_cache_entries)));
    }
    let token_cache_max_age = dur("edge.auth.token_cache_max_age".into(), &raw.token_cache_max_age)?;
    if raw.issuers.is_empty() && raw.api_keys.is_empty() {
        return Err(err(
            "edge.auth".into(),
            "names no [[edge.auth.issuers]] and no [[edge.auth.api_keys]]: nobody could call an authenticated route; \
             add one, or remove [edge.auth] to leave every route public"
                .into(),
        ));
    }
    let mut issuers = Vec::with_capacity(raw.issuers.len());
    for (i, r) in raw.issuers.into_iter().enumerate() {
        let key = |k: &str| format!("edge.auth.issuers[{i}].{k}");
        if r.issuer.is_empty() {
            return Err(err(key("issuer"), "must not be empty".into()));
        }
        if r.audiences.is_empty() || r.audiences.iter().any(String::is_empty) {
            return Err(err(key("audiences"), "name at least one audience (a token's `aud` must match one)".into()));
        }
        let keys = match (r.jwks_file, r.jwks_url) {
            (Some(f), None) => KeySource::File(base_dir.join(f)),
            (None, Some(u)) if u.starts_with("http://") || u.starts_with("https://") => KeySource::Url(u),
            (None, Some(u)) => return Err(err(key("jwks_url"), format!("'{u}' is not an http:// or https:// URL"))),
            _ => return Err(err(key("jwks_file"), "give exactly one of jwks_file and jwks_url".into())),
        };
        let refresh = dur(key("refresh"), &r.refresh)?;
        let min_refresh = dur(key("min_refresh"), &r.min_refresh)?;
        if refresh.is_zero() || min_refresh.is_zero() || min_refresh > refresh {
            return Err(err(key("min_refresh"), "refresh and min_refresh must be above zero, min_refresh at most refresh".into()));
        }
        let jwks_ca = match (r.jwks_ca, &keys) {
            (None, _) => None,
            (Some(ca), KeySource::Url(u)) if u.starts_with("https://") => Some(base_dir.join(ca)),
            (Some(_), _) => return Err(err(key("jwks_ca"), "only goes with an https:// jwks_url".into())),
        };
        issuers.push(Issuer { issuer: r.issuer, audiences: r.audiences, keys, jwks_ca, refresh, min_refresh });
    }
    let mut api_keys: Vec<ApiKey> = Vec::with_capacity(raw.api_keys.len());
    for (i, k) in raw.api_keys.into_iter().enumerate() {
        let key = |f: &str| format!("edge.auth.api_keys[{i}].{f}");
        if !valid_key_id(&k.id) {
            return Err(err(key("id"), format!("'{}' is not a key id: 1 to 64 letters, digits or '-'", k.id)));
        }
        if api_keys.iter().any(|o| o.id == k.id) {
            return Err(err(key("id"), format!("'{}' is used by another key", k.id)));
        }
        let sha = k.sha256.to_ascii_lowercase();
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(err(
                key("sha256"),
                "must be the SHA-256 of the whole key as 64 hex digits (printf %s \"$KEY\" | sha256sum)".into(),
            ));
        }
        if k.subject.is_empty() {
            return Err(err(key("subject"), "must not be empty".into()));
        }
        api_keys.push(ApiKey { id: k.id, sha256: sha, subject: k.subject, merchant: k.merchant, scopes: k.scopes, revoked: k.revoked });
    }
    Ok(Auth {
        issuers,
        api_keys,
        leeway,
        merchant_claim: raw.merchant_claim,
        scopes_claim: raw.scopes_claim,
        max_token_bytes: raw.max_token_bytes,
        token_cache_entries: raw.token_cache_entries,
        token_cache_max_age,
    })
}
