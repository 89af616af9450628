//! mTLS to the upstreams (`[mesh_tls]`): the edge presents its certificate (`edge.pem`) and
//! checks each instance's against the mesh CA and the instance's name. The material is
//! parsed once and re-read when its files change (rotation without a restart); pingora
//! pools connections per certificate, so new connections use the new one.

use std::sync::Arc;

use paymesh_core::tls::TlsFiles;
use pingora::protocols::tls::CaType;
use pingora::utils::tls::{CertKey, WrappedX509, parse_x509};

/// The CA and the edge's certificate, as pingora's upstream peers take them.
pub struct Material {
    pub ca: Arc<CaType>,
    pub cert_key: Arc<CertKey>,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material").finish_non_exhaustive()
    }
}

#[derive(Debug)]
pub struct UpstreamTls {
    material: paymesh_core::tls::Reloading<Material>,
    /// The same files for the health checker's tonic channels.
    pub mesh: Arc<paymesh_core::tls::MeshTls>,
}

fn material(files: &TlsFiles) -> Result<Material, String> {
    let paymesh_core::tls::DerFiles { ca: cas, chain, key } = files.load_der()?;
    // pingora parses the certificates again and panics on one it cannot parse: contain it.
    std::panic::catch_unwind(move || {
        let ca: Vec<WrappedX509> = cas.into_iter().map(|der| WrappedX509::new(der, parse_x509)).collect();
        Material { ca: Arc::from(ca.into_boxed_slice()), cert_key: Arc::new(CertKey::new(chain, key)) }
    })
    .map_err(|_| format!("{} or {} holds a certificate that cannot be parsed", files.ca.display(), files.cert.display()))
}

impl UpstreamTls {
    /// Loads the files now; a missing or bad file is a start-up error.
    pub fn load(files: TlsFiles) -> Result<Self, String> {
        let mesh = Arc::new(paymesh_core::tls::MeshTls::load(files.clone())?);
        let paths = files.paths();
        let material = paymesh_core::tls::Reloading::load(paths, "edge mesh certificate", move || material(&files))?;
        Ok(Self { material, mesh })
    }

    /// The current material (re-read when a file changed).
    pub fn material(&self) -> Arc<Material> {
        self.material.get()
    }
}

/// The name an instance's certificate is checked against: its configured name when that is
/// a DNS name (`payments-0a`), else its IP address (an endpoint named by its address).
pub fn server_name(name: &str, addr: std::net::SocketAddr) -> String {
    if rustls_pki_types::DnsName::try_from(name).is_ok() { name.to_owned() } else { addr.ip().to_string() }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_instance_is_checked_by_its_name_or_else_its_address() {
        let addr: std::net::SocketAddr = "127.0.0.1:5000".parse().expect("addr");
        assert_eq!(super::server_name("payments-0a", addr), "payments-0a");
        assert_eq!(super::server_name("127.0.0.1:5000", addr), "127.0.0.1");
    }
}
