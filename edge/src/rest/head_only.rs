//! A connection that holds only a request head, for starting the gRPC subrequest of a REST
//! call: pingora builds a subrequest from a parsed HTTP/1.1 session, and this is the
//! smallest one. Reads return the head, then never complete (a closed read would look
//! like a client that went away); writes are discarded (nothing is ever written to it).

use std::io::Cursor;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::{GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, TimingDigest, UniqueID};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

#[derive(Debug)]
pub struct HeadOnly(Cursor<Vec<u8>>);

impl HeadOnly {
    pub fn new(head: Vec<u8>) -> Self {
        Self(Cursor::new(head))
    }
}

impl AsyncRead for HeadOnly {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.0.position() < self.0.get_ref().len() as u64 { Pin::new(&mut self.0).poll_read(cx, buf) } else { Poll::Pending }
    }
}

impl AsyncWrite for HeadOnly {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl UniqueID for HeadOnly {
    fn id(&self) -> pingora::protocols::UniqueIDType {
        0
    }
}

impl Ssl for HeadOnly {}

impl GetTimingDigest for HeadOnly {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        Vec::new()
    }
}

impl GetProxyDigest for HeadOnly {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        None
    }
}

impl GetSocketDigest for HeadOnly {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        None
    }
}

impl Peek for HeadOnly {}

#[async_trait]
impl Shutdown for HeadOnly {
    async fn shutdown(&mut self) {}
}
