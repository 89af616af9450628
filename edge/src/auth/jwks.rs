//! An issuer's public keys (a JWKS document), from a file or an HTTP URL, cached.
//!
//! The set is fetched again every `refresh`, and when a token names a `kid` the set does
//! not hold (a key rotated in), at most once per `min_refresh` so that tokens with made-up
//! `kid`s cannot make the edge hammer the issuer. A fetch that fails keeps the keys it had.
//! Only RSA, P-256 and Ed25519 public keys are kept; each is bound to its one algorithm.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey};
use paymesh_core::config::{Issuer, KeySource};

/// Largest JWKS document read.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Longest wait for a JWKS URL.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// One verification key.
pub struct VerifyKey {
    pub kid: Option<String>,
    /// The only algorithm this key verifies.
    pub alg: Algorithm,
    pub key: DecodingKey,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey").field("kid", &self.kid).field("alg", &self.alg).finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Keys {
    all: Vec<Arc<VerifyKey>>,
    by_kid: HashMap<String, Arc<VerifyKey>>,
}

#[derive(Debug)]
pub struct KeySet {
    source: KeySource,
    /// The CA for an https JWKS URL, when not the system's.
    ca: Option<std::path::PathBuf>,
    keys: RwLock<Arc<Keys>>,
    /// One fetch at a time; holds when the last one was tried and the file's mtime.
    fetch: tokio::sync::Mutex<Fetched>,
    refresh: Duration,
    min_refresh: Duration,
}

#[derive(Debug, Default)]
struct Fetched {
    at: Option<Instant>,
    modified: Option<SystemTime>,
}

impl KeySet {
    /// Reads a JWKS file now (an unreadable file is a start-up error); a URL is fetched by
    /// the first refresh.
    pub fn new(issuer: &Issuer) -> Result<Self, String> {
        let set = Self {
            source: issuer.keys.clone(),
            ca: issuer.jwks_ca.clone(),
            keys: RwLock::new(Arc::new(Keys::default())),
            fetch: tokio::sync::Mutex::new(Fetched::default()),
            refresh: issuer.refresh,
            min_refresh: issuer.min_refresh,
        };
        if let KeySource::File(path) = &issuer.keys {
            let text = std::fs::read(path)
                .map_err(|e| format!("cannot read the JWKS file {} of issuer {}: {e}", path.display(), issuer.issuer))?;
            let keys = parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            *set.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
        }
        Ok(set)
    }

    /// How often the set is refreshed in the background.
    pub fn refresh_interval(&self) -> Duration {
        self.refresh
    }

    /// The key named `kid`; without a `kid`, the set's only key for `alg`.
    pub fn get(&self, kid: Option<&str>, alg: Algorithm) -> Lookup {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner()).clone();
        match kid {
            Some(k) => keys.by_kid.get(k).cloned().map_or(Lookup::Unknown, Lookup::Found),
            None => {
                let mut of_alg = keys.all.iter().filter(|k| k.alg == alg);
                match (of_alg.next(), of_alg.next()) {
                    (Some(k), None) => Lookup::Found(k.clone()),
                    (None, _) => Lookup::Unknown,
                    (Some(_), Some(_)) => Lookup::Ambiguous,
                }
            }
        }
    }

    /// Fetches the set again unless that was tried less than `min_refresh` ago (or, for a
    /// file, unless it changed). Returns whether the keys were replaced.
    pub async fn refresh(&self) -> bool {
        let mut fetched = self.fetch.lock().await;
        if fetched.at.is_some_and(|at| at.elapsed() < self.min_refresh) {
            return false;
        }
        fetched.at = Some(Instant::now());
        let text = match &self.source {
            KeySource::File(path) => {
                let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
                if modified.is_some() && modified == fetched.modified {
                    return false;
                }
                fetched.modified = modified;
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
            }
            KeySource::Url(url) => fetch(url, self.ca.as_deref()).await,
        };
        match text.and_then(|t| parse(&t)) {
            Ok(keys) => {
                tracing::info!(source = ?self.source, keys = keys.all.len(), "JWKS loaded");
                *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
                true
            }
            Err(e) => {
                tracing::warn!(source = ?self.source, error = %e, "JWKS refresh failed; keeping the keys already loaded");
                false
            }
        }
    }
}

#[derive(Debug)]
pub enum Lookup {
    Found(Arc<VerifyKey>),
    Unknown,
    /// No `kid`, and several keys could verify it.
    Ambiguous,
}

/// Keeps every key set fresh: a URL is fetched at once, then each set every `refresh`.
#[derive(Debug)]
pub struct KeyRefresher {
    pub sets: Vec<Arc<KeySet>>,
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for KeyRefresher {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let tasks: Vec<_> = self
            .sets
            .iter()
            .map(|set| {
                let set = set.clone();
                tokio::spawn(async move {
                    loop {
                        set.refresh().await;
                        tokio::time::sleep(set.refresh_interval()).await;
                    }
                })
            })
            .collect();
        let _ = shutdown.changed().await;
        for t in tasks {
            t.abort();
        }
    }
}

/// The usable keys of a JWKS document. Keys of other types (HMAC secrets, P-384, ...) are
/// skipped: the edge never verifies with them.
fn parse(text: &[u8]) -> Result<Keys, String> {
    #[derive(serde::Deserialize)]
    struct Doc {
        keys: Vec<serde_json::Value>,
    }
    let doc: Doc = serde_json::from_slice(text).map_err(|e| format!("not a JWKS document ({{\"keys\": [...]}}): {e}"))?;
    let mut keys = Keys::default();
    for value in doc.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else { continue };
        let Some(key) = verify_key(&jwk) else { continue };
        let key = Arc::new(key);
        if let Some(kid) = &key.kid {
            keys.by_kid.insert(kid.clone(), key.clone());
        }
        keys.all.push(key);
    }
    Ok(keys)
}

fn verify_key(jwk: &Jwk) -> Option<VerifyKey> {
    let alg = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => Algorithm::EdDSA,
        _ => return None,
    };
    // A key that declares another algorithm is not used for this one.
    if let Some(declared) = jwk.common.key_algorithm
        && declared.to_string() != format!("{alg:?}")
    {
        return None;
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(VerifyKey { kid: jwk.common.key_id.clone(), alg, key })
}

/// GET of an `http://` or `https://` URL, bounded in time and size. HTTPS verifies the
/// server against `ca` when given, else against the system's trusted roots.
async fn fetch(url: &str, ca: Option<&std::path::Path>) -> Result<Vec<u8>, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("bad JWKS URL {url}: {e}"))?;
    let authority = uri.authority().ok_or_else(|| format!("the JWKS URL {url} names no host"))?.clone();
    let https = uri.scheme_str() == Some("https");
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let work = async {
        let tcp =
            tokio::net::TcpStream::connect((authority.host(), port)).await.map_err(|e| format!("cannot connect to {authority}: {e}"))?;
        if !https {
            return get(hyper_util::rt::TokioIo::new(tcp), &authority, &path, url).await;
        }
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls_client(ca)?));
        let name = rustls_pki_types::ServerName::try_from(authority.host().to_owned())
            .map_err(|_| format!("{} is not a name a certificate can be checked against", authority.host()))?;
        let tls = connector.connect(name, tcp).await.map_err(|e| format!("TLS with {authority}: {e}"))?;
        get(hyper_util::rt::TokioIo::new(tls), &authority, &path, url).await
    };
    tokio::time::timeout(FETCH_TIMEOUT, work).await.map_err(|_| format!("{url} did not answer within {FETCH_TIMEOUT:?}"))?
}

/// The TLS client for JWKS URLs: roots from `ca`, or the system's.
fn tls_client(ca: Option<&std::path::Path>) -> Result<tokio_rustls::rustls::ClientConfig, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| format!("cannot read the CA file {}: {e}", path.display()))? {
                let cert = cert.map_err(|e| format!("{} holds a bad certificate: {e}", path.display()))?;
                roots.add(cert).map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    if roots.is_empty() {
        return Err("no trusted root certificates to check the JWKS server with (set jwks_ca)".into());
    }
    Ok(tokio_rustls::rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth())
}

async fn get<IO>(io: IO, authority: &http::uri::Authority, path: &str, url: &str) -> Result<Vec<u8>, String>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    use http_body_util::BodyExt;

    let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header(http::header::HOST, authority.as_str())
        .header(http::header::ACCEPT, "application/json")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("{url} answered {}", resp.status()));
    }
    let body = http_body_util::Limited::new(resp.into_body(), MAX_JWKS_BYTES);
    let bytes = body.collect().await.map_err(|e| format!("reading {url}: {e}"))?.to_bytes();
    Ok(bytes.to_vec())
}
