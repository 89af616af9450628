//! HTTPS on the edge's public listener (`[edge.tls]`, issue 12): HTTP/2 and HTTP/1.1 chosen
//! by ALPN, the certificate checked by the client, and plaintext refused on that port.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use paymesh_testkit::certs::MeshCa;

use crate::flaky::FlakyStack;

/// A GET over TLS with the given ALPN protocol; the status and the HTTP version used.
async fn get_over_tls(edge: std::net::SocketAddr, ca_pem: &str, alpn: &[u8], path: &str) -> Result<(u16, http::Version), String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    let mut config = tokio_rustls::rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = tokio::net::TcpStream::connect(edge).await.map_err(|e| e.to_string())?;
    let name = rustls_pki_types::ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.map_err(|e| format!("handshake: {e}"))?;
    let negotiated = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    if negotiated.as_deref() != Some(alpn) {
        return Err(format!("ALPN {:?} was not chosen (got {negotiated:?})", String::from_utf8_lossy(alpn)));
    }
    let io = hyper_util::rt::TokioIo::new(tls);
    let req = http::Request::get(format!("https://localhost{path}")).body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
    let resp = if alpn == b"h2" {
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        send.send_request(req).await.map_err(|e| e.to_string())?
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        send.send_request(req).await.map_err(|e| e.to_string())?
    };
    let (status, version) = (resp.status().as_u16(), resp.version());
    let _ = resp.into_body().collect().await;
    Ok((status, version))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_listener_serves_https_with_http2_or_http1_by_alpn() {
    let dir = std::env::temp_dir().join(format!("paymesh-public-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let ca = MeshCa::load_or_create(&dir, "Paymesh test public CA").expect("ca");
    ca.write_issued(&dir, "localhost").expect("issue");
    let tls =
        format!("[edge.tls]\ncert = \"{}\"\nkey = \"{}\"\n", dir.join("localhost.pem").display(), dir.join("localhost.key").display());
    let stack = FlakyStack::start("", "", &tls).await;
    let path = format!("/v1/flaky/{}", stack.account_on(0, 0));

    assert_eq!(get_over_tls(stack.edge, &ca.pem(), b"h2", &path).await, Ok((200, http::Version::HTTP_2)));
    assert_eq!(get_over_tls(stack.edge, &ca.pem(), b"http/1.1", &path).await, Ok((200, http::Version::HTTP_11)));
    // A client that does not trust the CA refuses the edge's certificate.
    let stranger = MeshCa::new("Somebody else").expect("ca");
    assert!(get_over_tls(stack.edge, &stranger.pem(), b"h2", &path).await.is_err(), "an unknown certificate was accepted");
    // Plaintext on the TLS port gets no HTTP answer.
    let plain = crate::http_client::try_send(stack.edge, crate::http_client::Version::Http1, "GET", &path, &[], Bytes::new()).await;
    assert!(plain.is_err(), "plaintext HTTP was answered on the TLS port: {plain:?}");
    stack.stop().await;
}
