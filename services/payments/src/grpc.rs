//! The `payments.v1.Payments` gRPC service: validate, check the shard, call the store.
//!
//! This is the only place that sees `tonic` requests and the only place errors become
//! `tonic::Status`.

use paymesh_core::ShardId;
use paymesh_core::identity::{Caller, Policy};
use paymesh_core::ids::PaymentId;
use paymesh_core::shard::shard_for_merchant;
use paymesh_proto::payments::v1 as pb;
use prost::Message;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::error::PaymentError;
use crate::store::{Fingerprint, PaymentStore, TraceHeaders};
use crate::validate;

/// The service for one shard.
#[derive(Clone, Debug)]
pub struct PaymentsApi {
    store: PaymentStore,
    shard_count: u32,
    /// Whether calls must carry the caller's identity and stay within its merchant.
    policy: Policy,
    metrics: std::sync::Arc<crate::metrics::RpcMetrics>,
}

impl PaymentsApi {
    pub fn new(store: PaymentStore, shard_count: u32, policy: Policy, metrics: std::sync::Arc<crate::metrics::RpcMetrics>) -> Self {
        Self { store, shard_count, policy, metrics }
    }

    /// The caller the edge vouched for (`None` when the mesh does not authenticate).
    fn caller(&self, metadata: &MetadataMap) -> Result<Option<Caller>, PaymentError> {
        self.policy.caller(|k| metadata.get(k).and_then(|v| v.to_str().ok())).map_err(PaymentError::Unauthenticated)
    }

    fn observe<T>(&self, method: &'static str, started: std::time::Instant, result: Result<T, Status>) -> Result<T, Status> {
        self.metrics.record(method, result.as_ref().err().map_or(tonic::Code::Ok, Status::code), started.elapsed());
        result
    }

    fn shard(&self) -> ShardId {
        self.store.shard()
    }

    fn owns_merchant(&self, merchant_id: &str) -> Result<(), PaymentError> {
        let owner = shard_for_merchant(merchant_id, self.shard_count);
        if owner == self.shard() {
            return Ok(());
        }
        Err(PaymentError::Precondition(format!(
            "merchant {merchant_id} belongs to shard {owner}, but this instance serves shard {}; send the request to a shard {owner} instance (the edge routes it for you)",
            self.shard()
        )))
    }

    fn owns_payment(&self, id: &PaymentId) -> Result<(), PaymentError> {
        if id.shard() == self.shard() {
            return Ok(());
        }
        Err(PaymentError::Precondition(format!(
            "payment {id} is stored on shard {}, but this instance serves shard {}; send the request to a shard {} instance (the edge routes it for you)",
            id.shard(),
            self.shard(),
            id.shard()
        )))
    }
}

/// Runs a mutation on a task of its own, so that it finishes (commits or rolls back, and
/// hands a clean connection back to the pool) even when the caller goes away: a client's
/// deadline or a dropped connection cancels the gRPC handler's future, and cancelling a
/// transaction half-way would return a connection still busy with its statement (the next
/// caller's query would queue behind it). The answer is stored under the idempotency key,
/// so the client's retry gets it. `lock_timeout` and `statement_timeout` bound the task.
async fn to_completion<T, F>(work: F) -> Result<T, PaymentError>
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<T, PaymentError>> + Send + 'static,
{
    tokio::spawn(work.in_current_span()).await.unwrap_or_else(|e| Err(PaymentError::Internal(format!("the database task failed: {e}"))))
}

/// The request's identity for idempotency: its encoding with the key cleared.
fn fingerprint(method: &'static str, request: &impl Message) -> Fingerprint {
    Fingerprint { method, request: request.encode_to_vec() }
}

/// The span of one call, a child of the caller's trace (W3C `traceparent` in the metadata),
/// and this call's own context for the outbox, so the relay and the workers continue the
/// same trace.
fn rpc_span(method: &'static str, shard: ShardId, metadata: &MetadataMap) -> (tracing::Span, TraceHeaders) {
    let get = |k: &str| metadata.get(k).and_then(|v| v.to_str().ok()).filter(|v| v.len() <= 512).map(str::to_owned);
    let span = tracing::info_span!("rpc", otel.name = method, rpc.method = method, shard = %shard, merchant_id = tracing::field::Empty, payment_id = tracing::field::Empty);
    // Before the span is entered: the parent of a started span cannot change.
    paymesh_core::telemetry::continue_trace(&span, &get);
    let (traceparent, tracestate) = paymesh_core::telemetry::headers_of(&span);
    // Without a tracer there is no context of our own: pass the caller's on.
    let headers =
        TraceHeaders { traceparent: traceparent.or_else(|| get("traceparent")), tracestate: tracestate.or_else(|| get("tracestate")) };
    (span, headers)
}

#[tonic::async_trait]
impl pb::payments_server::Payments for PaymentsApi {
    async fn authorize(&self, request: Request<pb::AuthorizeRequest>) -> Result<Response<pb::Payment>, Status> {
        let started = std::time::Instant::now();
        let (span, trace) = rpc_span("Payments/Authorize", self.shard(), request.metadata());
        span.record("merchant_id", request.get_ref().merchant_id.as_str());
        let result = async move {
            let caller = self.caller(request.metadata())?;
            let req = request.into_inner();
            let cmd = validate::authorize(&req)?;
            if let Some(c) = &caller {
                c.may_write(&cmd.merchant_id).map_err(PaymentError::Forbidden)?;
            }
            self.owns_merchant(&cmd.merchant_id)?;
            let fp = fingerprint("Authorize", &pb::AuthorizeRequest { idempotency_key: String::new(), ..req });
            let store = self.store.clone();
            let payment = to_completion(async move { store.authorize(&cmd, &fp, &trace).await }).await?;
            tracing::Span::current().record("payment_id", payment.payment_id.as_str());
            Ok(Response::new(payment))
        }
        .instrument(span)
        .await;
        self.observe("Authorize", started, result)
    }

    async fn capture(&self, request: Request<pb::CaptureRequest>) -> Result<Response<pb::Payment>, Status> {
        let started = std::time::Instant::now();
        let (span, trace) = rpc_span("Payments/Capture", self.shard(), request.metadata());
        span.record("payment_id", request.get_ref().payment_id.as_str());
        let result = async move {
            let caller = self.caller(request.metadata())?;
            let req = request.into_inner();
            let cmd = validate::capture(&req)?;
            self.owns_payment(&cmd.payment_id)?;
            let fp = fingerprint("Capture", &pb::CaptureRequest { idempotency_key: String::new(), ..req });
            let store = self.store.clone();
            Ok(Response::new(to_completion(async move { store.capture(&cmd, caller.as_ref(), &fp, &trace).await }).await?))
        }
        .instrument(span)
        .await;
        self.observe("Capture", started, result)
    }

    async fn refund(&self, request: Request<pb::RefundRequest>) -> Result<Response<pb::RefundResponse>, Status> {
        let started = std::time::Instant::now();
        let (span, trace) = rpc_span("Payments/Refund", self.shard(), request.metadata());
        span.record("payment_id", request.get_ref().payment_id.as_str());
        let result = async move {
            let caller = self.caller(request.metadata())?;
            let req = request.into_inner();
            let cmd = validate::refund(&req)?;
            self.owns_payment(&cmd.payment_id)?;
            let fp = fingerprint("Refund", &pb::RefundRequest { idempotency_key: String::new(), ..req });
            let store = self.store.clone();
            Ok(Response::new(to_completion(async move { store.refund(&cmd, caller.as_ref(), &fp, &trace).await }).await?))
        }
        .instrument(span)
        .await;
        self.observe("Refund", started, result)
    }

    async fn void(&self, request: Request<pb::VoidRequest>) -> Result<Response<pb::Payment>, Status> {
        let started = std::time::Instant::now();
        let (span, trace) = rpc_span("Payments/Void", self.shard(), request.metadata());
        span.record("payment_id", request.get_ref().payment_id.as_str());
        let result = async move {
            let caller = self.caller(request.metadata())?;
            let req = request.into_inner();
            let cmd = validate::void(&req)?;
            self.owns_payment(&cmd.payment_id)?;
            let fp = fingerprint("Void", &pb::VoidRequest { idempotency_key: String::new(), ..req });
            let store = self.store.clone();
            Ok(Response::new(to_completion(async move { store.void(&cmd, caller.as_ref(), &fp, &trace).await }).await?))
        }
        .instrument(span)
        .await;
        self.observe("Void", started, result)
    }

    async fn get_payment(&self, request: Request<pb::GetPaymentRequest>) -> Result<Response<pb::Payment>, Status> {
        let started = std::time::Instant::now();
        let (span, trace) = rpc_span("Payments/GetPayment", self.shard(), request.metadata());
        span.record("payment_id", request.get_ref().payment_id.as_str());
        let result = async move {
            let _ = trace;
            let caller = self.caller(request.metadata())?;
            let id = validate::payment_id(&request.get_ref().payment_id)?;
            self.owns_payment(&id)?;
            let payment = self.store.get(&id).await?;
            if let Some(c) = &caller {
                c.may_read(&payment.merchant_id).map_err(PaymentError::Forbidden)?;
            }
            Ok(Response::new(payment))
        }
        .instrument(span)
        .await;
        self.observe("GetPayment", started, result)
    }
}
