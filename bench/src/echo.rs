//! An upstream that does no work: `paymesh.bench.v1.Echo/Echo` answers every call with the
//! request's own bytes (its reply has the request's fields), plus grpc.health.v1 for the
//! edge's health checks. What a proxy in front of it costs per call is all there is to see.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use paymesh_proto::codec::BytesCodec;
use tonic::server::{NamedService, UnaryService};
use tonic::{Request, Response, Status};

/// The encoded FileDescriptorSet of `echo.proto` and its imports (`google.api.http` kept),
/// for the edge's `descriptor_sets` and the load generator's `--protoset`.
pub const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/echo_descriptor.bin"));

/// The service's full name.
pub const SERVICE: &str = "paymesh.bench.v1.Echo";

#[derive(Clone, Debug, Default)]
pub struct Echo;

impl NamedService for Echo {
    const NAME: &'static str = SERVICE;
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl tower_service::Service<http::Request<tonic::body::Body>> for Echo {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let known = req.uri().path() == "/paymesh.bench.v1.Echo/Echo";
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(BytesCodec);
            Ok(grpc.unary(Handler { known }, req).await)
        })
    }
}

struct Handler {
    known: bool,
}

impl UnaryService<Bytes> for Handler {
    type Response = Bytes;
    type Future = BoxFuture<Result<Response<Bytes>, Status>>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let known = self.known;
        Box::pin(async move {
            if !known {
                return Err(Status::unimplemented("paymesh.bench.v1.Echo has one method, Echo"));
            }
            Ok(Response::new(request.into_inner()))
        })
    }
}

/// Serves Echo and health on `listener` until `shutdown` resolves; over mTLS only when
/// `tls` is given (as a mesh service with `[mesh_tls]`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<std::sync::Arc<paymesh_core::tls::MeshTls>>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
    reporter.set_service_status(SERVICE, tonic_health::ServingStatus::Serving).await;
    let router = tonic::transport::Server::builder().add_service(health).add_service(Echo);
    match tls {
        Some(tls) => router.serve_with_incoming_shutdown(paymesh_core::tls::incoming(listener, tls), shutdown).await,
        None => router.serve_with_incoming_shutdown(paymesh_core::tls::plain_incoming(listener), shutdown).await,
    }
}
