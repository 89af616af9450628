//! Read deadlines on client connections, so a slow or stalled client cannot hold the edge.
//!
//! pingora waits up to a minute for a request head and does not bound the wait for the
//! first byte of a connection at all. Every accepted connection is wrapped in
//! [`ClientIo`]: while it is *armed*, a read may wait at most `timeout` for data (the
//! connection is then closed). It is armed while the edge expects the client to send (the
//! first bytes, a request head, a body) and disarmed while the client may rightly be
//! silent: waiting for an answer, and for the whole life of an HTTP/2 connection (a gRPC
//! channel idles between calls; HTTP/2 has its own idle timeout).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream, TimingDigest, UniqueID, UniqueIDType,
};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, BufWriter, ReadBuf};
use tokio::time::Sleep;

/// The HTTP/2 connection preface's first bytes.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// Whether reads of a connection are under the deadline.
#[derive(Debug)]
pub struct Armed(AtomicBool);

impl Armed {
    pub fn set(&self, armed: bool) {
        self.0.store(armed, Ordering::Relaxed);
    }

    fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Bytes of small writes gathered before they go out (one TCP segment's worth, as
/// pingora's own listener buffers): an HTTP/1 answer's head and body leave in one write.
const WRITE_BUFFER: usize = 1460;

/// A client connection with a read deadline while armed.
#[derive(Debug)]
pub struct ClientIo {
    inner: BufWriter<Stream>,
    timeout: Duration,
    armed: Arc<Armed>,
    /// When the current wait for data gives up.
    waiting: Option<Pin<Box<Sleep>>>,
    /// Whether the first bytes were seen (to tell HTTP/2 from HTTP/1).
    seen_first: bool,
}

impl ClientIo {
    pub fn new(inner: Stream, timeout: Duration) -> Self {
        Self {
            inner: BufWriter::with_capacity(WRITE_BUFFER, inner),
            timeout,
            armed: Arc::new(Armed(AtomicBool::new(true))),
            waiting: None,
            seen_first: false,
        }
    }

    /// The switch of this connection's deadline.
    pub fn armed(&self) -> &Arc<Armed> {
        &self.armed
    }

    fn timed_out(&self) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::TimedOut, format!("the client sent nothing for {:?}", self.timeout))
    }
}

impl AsyncRead for ClientIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                self.waiting = None;
                if !self.seen_first && buf.filled().len() > before {
                    self.seen_first = true;
                    // Only a whole preface says HTTP/2 (pingora decides the same way); a
                    // client sending "P" and stalling stays under the deadline.
                    if buf.filled()[before..].starts_with(H2_PREFACE) {
                        // HTTP/2: idle connections are normal, and h2 bounds them itself.
                        self.armed.set(false);
                    }
                }
                Poll::Ready(r)
            }
            Poll::Pending if !self.armed.get() => {
                self.waiting = None;
                Poll::Pending
            }
            Poll::Pending => {
                let timeout = self.timeout;
                let waiting = self.waiting.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if waiting.as_mut().poll(cx).is_ready() {
                    self.waiting = None;
                    return Poll::Ready(Err(self.timed_out()));
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[std::io::IoSlice<'_>]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for ClientIo {
    async fn shutdown(&mut self) {
        // What is still buffered goes out first.
        let _ = tokio::io::AsyncWriteExt::flush(&mut self.inner).await;
        self.inner.get_mut().shutdown().await;
    }
}

impl UniqueID for ClientIo {
    fn id(&self) -> UniqueIDType {
        self.inner.get_ref().id()
    }
}

/// TLS facts of the connection (none on plaintext): pingora picks HTTP/2 by ALPN from them.
impl Ssl for ClientIo {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ref().get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ref().get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<pingora::protocols::ALPN> {
        self.inner.get_ref().selected_alpn_proto()
    }
}

impl GetTimingDigest for ClientIo {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_ref().get_timing_digest()
    }
}

impl GetProxyDigest for ClientIo {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_ref().get_proxy_digest()
    }
}

impl GetSocketDigest for ClientIo {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_ref().get_socket_digest()
    }
}

#[async_trait]
impl Peek for ClientIo {
    /// pingora peeks for the HTTP/2 preface before anything else: the first bytes are under
    /// the deadline too.
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        match tokio::time::timeout(self.timeout, self.inner.get_mut().try_peek(buf)).await {
            Ok(r) => r,
            Err(_) => Err(self.timed_out()),
        }
    }
}

/// The switch of the client connection under a session, if it is one of ours.
pub fn armed_of(stream: Option<&Stream>) -> Option<Arc<Armed>> {
    stream.and_then(|s| s.as_any().downcast_ref::<ClientIo>()).map(|c| c.armed().clone())
}

/// A server app that wraps every accepted connection in [`ClientIo`] and hands it on.
pub struct WithClientDeadline<A> {
    pub app: Arc<A>,
    pub timeout: Duration,
}

impl<A> std::fmt::Debug for WithClientDeadline<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WithClientDeadline").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for WithClientDeadline<A> {
    async fn process_new(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        // A reused keepalive connection comes back already wrapped.
        let stream: Stream = if stream.as_any().is::<ClientIo>() { stream } else { Box::new(ClientIo::new(stream, self.timeout)) };
        self.app.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        self.app.cleanup().await;
    }
}
