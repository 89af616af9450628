//! TLS on the edge's public listener (`[edge.tls]`): HTTPS, with HTTP/2 or HTTP/1.1 chosen
//! by ALPN. The certificate and key are re-read when their files change (at most once a
//! second), so a renewed certificate is served to new connections without a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;

const RECHECK: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Loaded {
    checked: Instant,
    modified: [Option<SystemTime>; 2],
    config: Arc<ServerConfig>,
}

#[derive(Debug)]
pub struct PublicTls {
    cert: PathBuf,
    key: PathBuf,
    loaded: Mutex<Loaded>,
}

fn modified(paths: [&Path; 2]) -> [Option<SystemTime>; 2] {
    paths.map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
}

fn build(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read {}: {e}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} holds a bad certificate: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{} holds no certificate", cert.display()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("cannot read the key {}: {e}", key.display()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| format!("{} and {} do not make a certificate and its key: {e}", cert.display(), key.display()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

impl PublicTls {
    /// Loads the files now; a missing or bad file is a start-up error.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, String> {
        let config = build(cert, key)?;
        let loaded = Loaded { checked: Instant::now(), modified: modified([cert, key]), config };
        Ok(Self { cert: cert.to_owned(), key: key.to_owned(), loaded: Mutex::new(loaded) })
    }

    /// The acceptor for a new connection, with the current certificate.
    pub fn acceptor(&self) -> pingora::listeners::tls::Acceptor {
        let mut l = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if l.checked.elapsed() >= RECHECK {
            l.checked = Instant::now();
            let now = modified([&self.cert, &self.key]);
            if now != l.modified {
                match build(&self.cert, &self.key) {
                    Ok(config) => {
                        tracing::info!(cert = %self.cert.display(), "public certificate reloaded");
                        l.config = config;
                        l.modified = now;
                    }
                    Err(e) => tracing::warn!(error = %e, "public certificate files changed but do not load; keeping the previous ones"),
                }
            }
        }
        pingora::listeners::tls::Acceptor::from_server_config(l.config.clone())
    }
}
