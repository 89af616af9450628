//! Calling an upstream gRPC method with an already-encoded request, for the transcoder.
//! Channels are tonic's: one multiplexed HTTP/2 connection per endpoint, reused.

use std::time::Duration;

use bytes::Bytes;
use tonic::Status;
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint};

use crate::cluster::Upstream;

pub use paymesh_proto::codec::BytesCodec;

/// The endpoint's channel, created on first use (inside the caller's runtime).
pub fn channel(up: &Upstream, connect_timeout: Duration) -> Channel {
    up.channel
        .get_or_init(|| {
            // The address is a SocketAddr, so the URI is always valid.
            Endpoint::from_shared(format!("http://{}", up.address))
                .map(|e| e.connect_timeout(connect_timeout).tcp_nodelay(true).http2_adaptive_window(true))
                .map(|e| e.connect_lazy())
                .unwrap_or_else(|_| unreachable_channel())
        })
        .clone()
}

fn unreachable_channel() -> Channel {
    Endpoint::from_static("http://127.0.0.1:1").connect_lazy()
}

/// The outcome of one unary call.
#[derive(Debug)]
pub enum CallError {
    /// The connection could not be made: the request never left, so another instance may
    /// be tried even for a non-idempotent call.
    Connect(Status),
    /// The upstream (or the transport after sending) answered with this status.
    Status(Status),
}

/// One unary call. `timeout` bounds the whole exchange and is sent as `grpc-timeout`.
pub async fn unary(
    channel: Channel,
    path: &str,
    body: Bytes,
    metadata: MetadataMap,
    timeout: Duration,
) -> Result<(MetadataMap, Bytes), CallError> {
    let path =
        http::uri::PathAndQuery::try_from(path).map_err(|e| CallError::Status(Status::internal(format!("bad gRPC path {path}: {e}"))))?;
    let mut grpc = tonic::client::Grpc::new(channel);
    let call = async {
        grpc.ready().await.map_err(|e| CallError::Connect(Status::unavailable(format!("cannot connect: {e}"))))?;
        let mut request = tonic::Request::from_parts(metadata, tonic::Extensions::default(), body);
        request.set_timeout(timeout);
        grpc.unary(request, path, BytesCodec).await.map_err(classify)
    };
    let started = std::time::Instant::now();
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(response)) => {
            let (md, body, _) = response.into_parts();
            Ok((md, body))
        }
        // The upstream enforces the grpc-timeout we sent and answers CANCELLED when it runs
        // out, a moment before our own timer would: that is our deadline passing.
        Ok(Err(CallError::Status(s))) if s.code() == tonic::Code::Cancelled && started.elapsed() >= timeout => {
            Err(CallError::Status(Status::deadline_exceeded(format!("the upstream did not answer within {timeout:?}"))))
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(CallError::Status(Status::deadline_exceeded(format!("the upstream did not answer within {timeout:?}")))),
    }
}

/// Connection refused (or similar, before any byte was sent) is distinguishable only by
/// looking at the error chain.
fn classify(status: Status) -> CallError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&status);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::AddrNotAvailable | std::io::ErrorKind::NotConnected
            )
        {
            return CallError::Connect(status);
        }
        if e.to_string().contains("tcp connect error") {
            return CallError::Connect(status);
        }
        source = e.source();
    }
    // The connection broke after the request left (the instance died mid-call): tonic says
    // UNKNOWN "transport error", gRPC calls a lost connection UNAVAILABLE.
    if status.code() == tonic::Code::Unknown && status.message() == "transport error" {
        return CallError::Status(Status::unavailable(format!("the connection to the upstream broke: {status}")));
    }
    CallError::Status(status)
}
