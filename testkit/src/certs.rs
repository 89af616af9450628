//! A mesh certificate authority and the certificates it issues (ECDSA P-256), for
//! `cargo xtask certs` and for the tests: each process gets `<name>.pem` (its certificate)
//! and `<name>.key` (its private key, mode 0600), the CA `ca.pem`.

use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// A CA that signs the mesh's certificates.
pub struct MeshCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl std::fmt::Debug for MeshCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshCa").finish_non_exhaustive()
    }
}

impl MeshCa {
    fn params(common_name: &str) -> Result<CertificateParams, String> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        Ok(params)
    }

    /// A new CA named `common_name`.
    pub fn new(common_name: &str) -> Result<Self, String> {
        let params = Self::params(common_name)?;
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let pem = params.self_signed(&key).map_err(|e| e.to_string())?.pem();
        Ok(Self { issuer: Issuer::new(params, key), pem })
    }

    /// The CA kept in `dir` (`ca.pem`, `ca.key`), or a new one written there.
    pub fn load_or_create(dir: &Path, common_name: &str) -> Result<Self, String> {
        let (cert, key) = (dir.join("ca.pem"), dir.join("ca.key"));
        if cert.exists() && key.exists() {
            let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
            let pair = KeyPair::from_pem(&read(&key)?).map_err(|e| format!("{}: {e}", key.display()))?;
            return Ok(Self { issuer: Issuer::new(Self::params(common_name)?, pair), pem: read(&cert)? });
        }
        let ca = Self::new(common_name)?;
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        replace(&key, ca.issuer.key().serialize_pem().as_bytes(), 0o600)?;
        ca.write_ca(dir)?;
        Ok(ca)
    }

    /// The CA's certificate (PEM).
    pub fn pem(&self) -> String {
        self.pem.clone()
    }

    /// A certificate for `name` (its DNS name, plus `localhost` and 127.0.0.1), good as a
    /// server and as a client: `(certificate PEM, private key PEM)`.
    pub fn issue(&self, name: &str) -> Result<(String, String), String> {
        let mut params =
            CertificateParams::new(vec![name.to_owned(), "localhost".to_owned(), "127.0.0.1".to_owned()]).map_err(|e| e.to_string())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let cert = params.signed_by(&key, &self.issuer).map_err(|e| e.to_string())?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Writes `ca.pem` into `dir`.
    pub fn write_ca(&self, dir: &Path) -> Result<(), String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        replace(&dir.join("ca.pem"), self.pem().as_bytes(), 0o644)
    }

    /// Issues `name`'s certificate and writes `<name>.pem` and `<name>.key` into `dir`
    /// (each replaced at once, so a reader never sees half a file).
    pub fn write_issued(&self, dir: &Path, name: &str) -> Result<(), String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let (cert, key) = self.issue(name)?;
        replace(&dir.join(format!("{name}.key")), key.as_bytes(), 0o600)?;
        replace(&dir.join(format!("{name}.pem")), cert.as_bytes(), 0o644)
    }
}

/// Writes `path` through a temporary file and a rename.
fn replace(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    f.write_all(bytes).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot replace {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reloaded_ca_keeps_signing_for_the_same_trust_root() {
        let dir = std::env::temp_dir().join(format!("paymesh-ca-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = MeshCa::load_or_create(&dir, "test CA").expect("create");
        let again = MeshCa::load_or_create(&dir, "test CA").expect("load");
        assert_eq!(first.pem(), again.pem(), "the CA is kept");
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(dir.join("ca.key")).expect("meta").permissions());
        assert_eq!(mode & 0o077, 0, "the CA key is readable by others");
        // A certificate issued by the reloaded CA is signed by the same key: its issuer and
        // authority key id match the first CA's certificate (checked by rustls in the mTLS
        // tests; here the issue itself must work).
        again.write_issued(&dir, "svc").expect("issue");
        assert!(std::fs::read_to_string(dir.join("svc.pem")).expect("pem").contains("BEGIN CERTIFICATE"));
    }
}
