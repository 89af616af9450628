//! Verifying a bearer JWT against the configured issuers.

use std::sync::Arc;

use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use paymesh_core::config::Auth;

use super::Identity;
use super::jwks::{KeySet, Lookup};

/// The only algorithms accepted: never `none`, never an HMAC (a public key is not a secret).
const ACCEPTED: [Algorithm; 3] = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

#[derive(Debug)]
pub struct Issuer {
    config: paymesh_core::config::Issuer,
    pub keys: Arc<KeySet>,
}

impl Issuer {
    pub fn new(config: paymesh_core::config::Issuer, keys: Arc<KeySet>) -> Self {
        Self { config, keys }
    }
}

/// The token's identity and its `exp` (Unix seconds).
pub async fn verify(issuers: &[Issuer], auth: &Auth, token: &str) -> Result<(Identity, u64), String> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
        ErrorKind::InvalidAlgorithmName | ErrorKind::Json(_) if token.split('.').count() == 3 => {
            "the token's algorithm is not accepted; use RS256, ES256 or EdDSA".to_owned()
        }
        _ => "the bearer token is not a JWT (header.payload.signature)".to_owned(),
    })?;
    if !ACCEPTED.contains(&header.alg) {
        return Err(format!("the token's algorithm {:?} is not accepted; use RS256, ES256 or EdDSA", header.alg));
    }
    // The issuer is read before the signature is checked, only to pick whose keys to use.
    let iss = unverified_issuer(token).ok_or("the token has no `iss` claim")?;
    let issuer = issuers.iter().find(|i| i.config.issuer == iss).ok_or_else(|| format!("the issuer {:?} is not trusted", clip(&iss)))?;
    let kid = header.kid.as_deref();
    let key = match issuer.keys.get(kid, header.alg) {
        Lookup::Found(k) => k,
        Lookup::Ambiguous => return Err("the token has no `kid` and its issuer has several keys".into()),
        Lookup::Unknown => {
            // A key may have been rotated in since the last fetch.
            issuer.keys.refresh().await;
            match issuer.keys.get(kid, header.alg) {
                Lookup::Found(k) => k,
                _ => return Err(format!("no key of the issuer has the token's key id {:?}", kid.map(clip).unwrap_or_default())),
            }
        }
    };
    if key.alg != header.alg {
        return Err(format!("the token says {:?} but its key is for {:?}", header.alg, key.alg));
    }
    let mut v = Validation::new(key.alg);
    v.leeway = auth.leeway.as_secs();
    v.validate_nbf = true;
    v.set_issuer(&[&issuer.config.issuer]);
    v.set_audience(&issuer.config.audiences);
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, &key.key, &v).map_err(|e| refusal(&e))?;
    let exp = data.claims.get("exp").and_then(serde_json::Value::as_u64).ok_or("the token's `exp` is not a number of seconds")?;
    Ok((identity(&data.claims, auth, &issuer.config.issuer)?, exp))
}

/// What a failed verification tells the caller.
fn refusal(e: &jsonwebtoken::errors::Error) -> String {
    match e.kind() {
        ErrorKind::InvalidSignature => "the token's signature does not verify".into(),
        ErrorKind::ExpiredSignature => "the token has expired".into(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".into(),
        ErrorKind::InvalidIssuer => "the token's issuer is not trusted".into(),
        ErrorKind::InvalidAudience => "the token is not meant for this audience".into(),
        ErrorKind::MissingRequiredClaim(c) => format!("the token has no `{c}` claim"),
        ErrorKind::InvalidAlgorithm => "the token's algorithm does not match its key".into(),
        _ => "the token is malformed".into(),
    }
}

/// The identity a verified token carries.
fn identity(claims: &serde_json::Map<String, serde_json::Value>, auth: &Auth, issuer: &str) -> Result<Identity, String> {
    let subject = match claims.get("sub") {
        Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err("the token's `sub` is not a non-empty string".into()),
    };
    let merchant = match claims.get(&auth.merchant_claim) {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(m)) if !m.is_empty() => Some(m.clone()),
        Some(_) => return Err(format!("the token's `{}` is not a non-empty string", auth.merchant_claim)),
    };
    let scopes = match claims.get(&auth.scopes_claim) {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(serde_json::Value::String(s)) => s.split_ascii_whitespace().map(str::to_owned).collect(),
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| format!("the token's `{}` holds a non-string", auth.scopes_claim))?,
        Some(_) => return Err(format!("the token's `{}` is neither a string nor a list", auth.scopes_claim)),
    };
    // They travel as gRPC metadata: printable ASCII only.
    let printable = |v: &str| !v.is_empty() && v.len() <= 256 && v.bytes().all(|b| (0x21..0x7f).contains(&b));
    if !printable(&subject) || merchant.as_deref().is_some_and(|m| !printable(m)) || !scopes.iter().all(|s| printable(s)) {
        return Err("the token's subject, merchant or scopes hold characters other than printable ASCII".into());
    }
    Ok(Identity { subject, merchant, scopes, authenticated_by: format!("jwt {issuer}") })
}

/// The `iss` of a token, read without checking anything.
fn unverified_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("iss")?.as_str().map(str::to_owned)
}

/// At most 64 characters of a client-chosen value, for messages.
fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}
