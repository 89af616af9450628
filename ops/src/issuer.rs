//! The local stack's token issuer: an Ed25519 key made on first use and its public half as
//! the JWKS the edge reads. `cargo xtask token` mints tokens with it, and `paymesh-mcp
//! --issuer-dir` mints the short-lived ones its load tests and admin changes carry.
//!
//! The private key lives in `.paymesh/auth/issuer.pk8` (mode 0600), never in the config; the
//! shipped config names the JWKS file next to it.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::signature::{Ed25519KeyPair, KeyPair};

/// The shipped config's issuer and audience.
pub const ISSUER: &str = "paymesh-local";
pub const AUDIENCE: &str = "paymesh";
const KID: &str = "local-1";

/// The local issuer's key.
pub struct LocalIssuer {
    pkcs8: Vec<u8>,
    pub jwks: PathBuf,
}

impl LocalIssuer {
    /// Loads the key in `dir`, or makes one (and its JWKS) when there is none.
    pub fn ensure(dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let key = dir.join("issuer.pk8");
        let pkcs8 = match std::fs::read(&key) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let doc = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).map_err(|_| "cannot make a key")?;
                write_private(&key, doc.as_ref())?;
                doc.as_ref().to_vec()
            }
            Err(e) => return Err(format!("cannot read {}: {e}", key.display())),
        };
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8)
            .map_err(|_| format!("{} is not an Ed25519 key; delete it and a new one is made", key.display()))?;
        let x = base64_url(pair.public_key().as_ref());
        let jwks = dir.join("jwks.json");
        let doc = serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": KID, "use": "sig", "alg": "EdDSA", "x": x}]});
        std::fs::write(&jwks, doc.to_string()).map_err(|e| format!("cannot write {}: {e}", jwks.display()))?;
        Ok(Self { pkcs8, jwks })
    }

    /// Loads the key in `dir`; never makes one.
    pub fn open(dir: &Path) -> Result<Self, String> {
        let key = dir.join("issuer.pk8");
        if !key.exists() {
            return Err(format!(
                "{} does not exist; `cargo xtask up` (or `cargo xtask token`) makes the local issuer's key",
                key.display()
            ));
        }
        Self::ensure(dir)
    }

    /// A token for `subject` acting for `merchant` with `scopes`, valid for `ttl`.
    pub fn mint(&self, subject: &str, merchant: Option<&str>, scopes: &[String], ttl: Duration) -> Result<String, String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_err(|e| e.to_string())?.as_secs();
        let mut claims = serde_json::json!({
            "iss": ISSUER, "aud": AUDIENCE, "sub": subject, "iat": now, "exp": now + ttl.as_secs().max(1),
            "scope": scopes.join(" "),
        });
        if let Some(m) = merchant {
            claims["merchant_id"] = serde_json::Value::String(m.to_owned());
        }
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(KID.to_owned());
        jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_ed_der(&self.pkcs8))
            .map_err(|e| format!("cannot sign: {e}"))
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    f.write_all(bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl std::fmt::Debug for LocalIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalIssuer").field("jwks", &self.jwks).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_token_verifies_with_the_published_key_and_the_key_is_kept() {
        let dir = std::env::temp_dir().join(format!("paymesh-local-auth-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let issuer = LocalIssuer::ensure(&dir).expect("issuer");
        let token = issuer.mint("u", Some("m-1"), &["payments:write".into()], Duration::from_secs(60)).expect("token");
        let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(&std::fs::read(&issuer.jwks).expect("jwks")).expect("parse");
        let key = jsonwebtoken::DecodingKey::from_jwk(&jwks.keys[0]).expect("key");
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
        v.set_audience(&[AUDIENCE]);
        v.set_issuer(&[ISSUER]);
        let data = jsonwebtoken::decode::<serde_json::Value>(&token, &key, &v).expect("verifies");
        assert_eq!(data.claims["merchant_id"], "m-1");
        // A second start keeps the key (tokens minted before stay valid).
        let again = LocalIssuer::ensure(&dir).expect("issuer again");
        assert_eq!(again.pkcs8, issuer.pkcs8);
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(dir.join("issuer.pk8")).expect("meta").permissions());
        assert_eq!(mode & 0o077, 0, "the private key is readable by others");
    }
}
