//! mTLS inside the mesh: every process has a certificate from the mesh CA; servers require
//! one from their clients, clients check the server's. Certificates are re-read when their
//! files change, so they rotate without a restart: new connections use the new ones, open
//! connections keep theirs.
//!
//! `[mesh_tls]` in the config names the CA and the directory of `<name>.pem` / `<name>.key`
//! files (`cargo xtask certs` makes them).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};

/// How often the files are looked at for changes (at most).
const RECHECK: Duration = Duration::from_secs(1);

/// The files one process uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// `<dir>/<name>.pem` and `<dir>/<name>.key`, trusting `ca`.
    pub fn for_name(ca: &Path, dir: &Path, name: &str) -> Self {
        Self { ca: ca.to_owned(), cert: dir.join(format!("{name}.pem")), key: dir.join(format!("{name}.key")) }
    }

    /// The three files, for watching.
    pub fn paths(&self) -> Vec<PathBuf> {
        vec![self.ca.clone(), self.cert.clone(), self.key.clone()]
    }

    /// The CA certificates, this process's chain and its key, as DER.
    pub fn load_der(&self) -> Result<DerFiles, String> {
        let (roots, chain, key) = self.load_parts()?;
        Ok(DerFiles {
            ca: roots.iter().map(|c| c.to_vec()).collect(),
            chain: chain.iter().map(|c| c.to_vec()).collect(),
            key: key.secret_der().to_vec(),
        })
    }

    fn load(&self) -> Result<(RootCertStore, Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
        let (cas, chain, key) = self.load_parts()?;
        let mut roots = RootCertStore::empty();
        for ca in cas {
            roots.add(ca).map_err(|e| format!("{}: {e}", self.ca.display()))?;
        }
        Ok((roots, chain, key))
    }

    /// The CA certificates, this process's chain and key.
    fn load_parts(&self) -> Result<(Vec<CertificateDer<'static>>, Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
        let read_certs = |path: &Path| -> Result<Vec<CertificateDer<'static>>, String> {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("cannot read {}: {e} (make the mesh's certificates with `cargo xtask certs`)", path.display()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{} holds a bad certificate: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!("{} holds no certificate", path.display()));
            }
            Ok(certs)
        };
        let cas = read_certs(&self.ca)?;
        let chain = read_certs(&self.cert)?;
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|e| format!("cannot read the key {}: {e}", self.key.display()))?;
        Ok((cas, chain, key))
    }
}

/// A process's TLS files as DER: the CA certificates, its chain (leaf first), its key.
pub struct DerFiles {
    pub ca: Vec<Vec<u8>>,
    pub chain: Vec<Vec<u8>>,
    pub key: Vec<u8>,
}

impl std::fmt::Debug for DerFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DerFiles").field("ca", &self.ca.len()).field("chain", &self.chain.len()).finish_non_exhaustive()
    }
}

/// A value built from files and rebuilt when they change: the files are looked at at most
/// once a second, and only by one caller at a time; every other read is a shared lock and an
/// `Arc` clone (this sits on the request path). A change that does not build (a half-written
/// rotation) keeps the previous value.
pub struct Reloading<T> {
    paths: Vec<PathBuf>,
    what: &'static str,
    build: Box<dyn Fn() -> Result<T, String> + Send + Sync>,
    started: Instant,
    /// Milliseconds after `started` when the files are next looked at.
    next_check: std::sync::atomic::AtomicU64,
    current: RwLock<(Vec<Option<SystemTime>>, Arc<T>)>,
}

impl<T> std::fmt::Debug for Reloading<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloading").field("what", &self.what).field("paths", &self.paths).finish_non_exhaustive()
    }
}

fn modified(paths: &[PathBuf]) -> Vec<Option<SystemTime>> {
    paths.iter().map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok()).collect()
}

impl<T> Reloading<T> {
    /// Builds the value now (a failure is a start-up error). `what` names it in logs.
    pub fn load(
        paths: Vec<PathBuf>,
        what: &'static str,
        build: impl Fn() -> Result<T, String> + Send + Sync + 'static,
    ) -> Result<Self, String> {
        let value = build()?;
        let stamp = modified(&paths);
        Ok(Self {
            paths,
            what,
            build: Box::new(build),
            started: Instant::now(),
            next_check: std::sync::atomic::AtomicU64::new(RECHECK.as_millis() as u64),
            current: RwLock::new((stamp, Arc::new(value))),
        })
    }

    /// The current value, rebuilt first if a file changed since the last look.
    pub fn get(&self) -> Arc<T> {
        use std::sync::atomic::Ordering;
        let now = self.started.elapsed().as_millis() as u64;
        let due = self.next_check.load(Ordering::Relaxed);
        // One caller wins the right to look; the others read what is there.
        if now >= due
            && self.next_check.compare_exchange(due, now + RECHECK.as_millis() as u64, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            let stamp = modified(&self.paths);
            let changed = self.current.read().unwrap_or_else(|p| p.into_inner()).0 != stamp;
            if changed {
                match (self.build)() {
                    Ok(value) => {
                        tracing::info!(what = self.what, "reloaded after its files changed");
                        *self.current.write().unwrap_or_else(|p| p.into_inner()) = (stamp, Arc::new(value));
                    }
                    Err(e) => tracing::warn!(what = self.what, error = %e, "files changed but do not load; keeping the previous ones"),
                }
            }
        }
        self.current.read().unwrap_or_else(|p| p.into_inner()).1.clone()
    }
}

/// A process's TLS settings, rebuilt when its files change.
#[derive(Debug)]
pub struct MeshTls {
    files: TlsFiles,
    configs: Reloading<(Arc<ServerConfig>, Arc<ClientConfig>)>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn build(files: &TlsFiles) -> Result<(Arc<ServerConfig>, Arc<ClientConfig>), String> {
    let (roots, chain, key) = files.load()?;
    let roots = Arc::new(roots);
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
        .build()
        .map_err(|e| format!("{}: {e}", files.ca.display()))?;
    let mut server = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(|e| format!("{} and {} do not make a certificate and its key: {e}", files.cert.display(), files.key.display()))?;
    server.alpn_protocols = vec![b"h2".to_vec()];
    let mut client = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| format!("{}: {e}", files.key.display()))?;
    client.alpn_protocols = vec![b"h2".to_vec()];
    Ok((Arc::new(server), Arc::new(client)))
}

impl MeshTls {
    /// Loads the files now (an unreadable or mismatched file is a start-up error).
    pub fn load(files: TlsFiles) -> Result<Self, String> {
        let paths = files.paths();
        let for_build = files.clone();
        let configs = Reloading::load(paths, "mesh certificate", move || build(&for_build))?;
        Ok(Self { files, configs })
    }

    fn current(&self) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
        let c = self.configs.get();
        (c.0.clone(), c.1.clone())
    }

    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.current().0
    }

    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.current().1
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }
}

/// A server connection that completed the mTLS handshake (tonic's connection type).
#[derive(Debug)]
pub struct TlsConn(tokio_rustls::server::TlsStream<tokio::net::TcpStream>);

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.get_ref().0.connect_info()
    }
}

impl tokio::io::AsyncRead for TlsConn {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TlsConn {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// The plaintext connections of `listener`, with TCP_NODELAY as on the TLS path: without it,
/// an answer the server writes in two pieces waits for the client's delayed ACK (a 40 ms
/// stall on one lone request in ten, measured on the payments service).
pub fn plain_incoming(listener: tokio::net::TcpListener) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    tokio_stream::StreamExt::map(tokio_stream::wrappers::TcpListenerStream::new(listener), |conn| {
        if let Ok(tcp) = &conn {
            let _ = tcp.set_nodelay(true);
        }
        conn
    })
}

/// Longest a client may take to finish the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The connections of `listener` that complete an mTLS handshake (a client certificate from
/// the mesh CA); the others are dropped (a plaintext client, an unknown CA, no certificate).
/// Handshakes run concurrently, so a slow client holds up nobody.
pub fn incoming(listener: tokio::net::TcpListener, tls: Arc<MeshTls>) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<TlsConn>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            // The server dropped the stream (it is shutting down): stop accepting.
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = tx.closed() => return,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config());
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(conn)) => {
                        let _ = tx.send(Ok(TlsConn(conn))).await;
                    }
                    Ok(Err(e)) => tracing::info!(%peer, error = %e, "refused a connection without a valid mesh certificate"),
                    Err(_) => tracing::info!(%peer, "a client did not finish the TLS handshake in time"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// A tonic channel connector that dials TCP and completes mTLS with the process's current
/// certificate, checking the server's certificate against `server_name`.
#[derive(Clone, Debug)]
pub struct MeshConnector {
    tls: Arc<MeshTls>,
    server_name: String,
}

impl MeshConnector {
    pub fn new(tls: Arc<MeshTls>, server_name: impl Into<String>) -> Self {
        Self { tls, server_name: server_name.into() }
    }
}

type Connecting = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = std::io::Result<hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>>>
            + Send,
    >,
>;

impl tower_service::Service<http::Uri> for MeshConnector {
    type Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;
    type Error = std::io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let (tls, name) = (self.tls.clone(), self.server_name.clone());
        Box::pin(async move {
            let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
            let host = uri.host().ok_or_else(|| bad(format!("{uri} names no host")))?.to_owned();
            let port = uri.port_u16().ok_or_else(|| bad(format!("{uri} names no port")))?;
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            let server_name =
                rustls_pki_types::ServerName::try_from(name.clone()).map_err(|_| bad(format!("{name} is not a server name")))?;
            let conn = tokio_rustls::TlsConnector::from(tls.client_config()).connect(server_name, tcp).await?;
            Ok(hyper_util::rt::TokioIo::new(conn))
        })
    }
}

#[cfg(test)]
mod tests {

    /// Accepted plaintext connections have TCP_NODELAY (lone requests through the payments
    /// service stalled 40 ms one time in ten without it: a delayed ACK behind Nagle).
    #[tokio::test]
    async fn plain_connections_are_accepted_with_nodelay() {
        use tokio_stream::StreamExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut incoming = Box::pin(super::plain_incoming(listener));
        let _client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let accepted = incoming.next().await.expect("a connection").expect("accepted");
        assert!(accepted.nodelay().expect("nodelay"), "TCP_NODELAY is off on an accepted connection");
    }
    use super::*;

    #[test]
    fn a_changed_file_is_reloaded_and_a_bad_change_keeps_the_old_value() {
        let dir = std::env::temp_dir().join(format!("paymesh-reloading-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("value");
        std::fs::write(&file, "1").expect("write");
        let f = file.clone();
        let r = Reloading::load(vec![file.clone()], "test value", move || {
            let text = std::fs::read_to_string(&f).map_err(|e| e.to_string())?;
            text.trim().parse::<u32>().map_err(|e| e.to_string())
        })
        .expect("load");
        assert_eq!(*r.get(), 1);
        let wait_for = |want: u32| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while *r.get() != want {
                assert!(Instant::now() < deadline, "never reloaded to {want}");
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        // A later mtime (file systems may keep whole seconds).
        let deadline = Instant::now() + Duration::from_secs(10);
        let before = modified(std::slice::from_ref(&file));
        while modified(std::slice::from_ref(&file)) == before {
            assert!(Instant::now() < deadline, "the mtime never changed");
            std::fs::write(&file, "2").expect("write");
            std::thread::sleep(Duration::from_millis(20));
        }
        wait_for(2);
        std::fs::write(&file, "not a number").expect("write");
        // Until the files have been looked at after the bad write (the next look is then
        // scheduled more than RECHECK after it).
        let written = r.started.elapsed().as_millis() as u64;
        let deadline = Instant::now() + Duration::from_secs(10);
        while r.next_check.load(std::sync::atomic::Ordering::Relaxed) <= written + RECHECK.as_millis() as u64 {
            assert_eq!(*r.get(), 2, "a change that does not build keeps the previous value");
            assert!(Instant::now() < deadline, "the files were never looked at again");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(*r.get(), 2, "a change that does not build keeps the previous value");
    }
}
