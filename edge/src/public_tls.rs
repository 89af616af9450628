//! TLS on the edge's public listener (`[edge.tls]`): HTTPS, with HTTP/2 or HTTP/1.1 chosen
//! by ALPN. The certificate and key are re-read when their files change (at most once a
//! second), so a renewed certificate is served to new connections without a restart.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;

#[derive(Debug)]
pub struct PublicTls {
    config: paymesh_core::tls::Reloading<ServerConfig>,
}

fn build(cert: &Path, key: &Path) -> Result<ServerConfig, String> {
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
    Ok(config)
}

impl PublicTls {
    /// Loads the files now; a missing or bad file is a start-up error.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, String> {
        let (c, k) = (cert.to_owned(), key.to_owned());
        let config = paymesh_core::tls::Reloading::load(vec![c.clone(), k.clone()], "public certificate", move || build(&c, &k))?;
        Ok(Self { config })
    }

    /// The acceptor for a new connection, with the current certificate.
    pub fn acceptor(&self) -> pingora::listeners::tls::Acceptor {
        pingora::listeners::tls::Acceptor::from_server_config(self.config.get())
    }
}
