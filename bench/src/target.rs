//! Sending one Authorize to a target. Each call gets a unique idempotency key and one of
//! `merchants` merchant ids, so calls really create payments (no replays) across shards.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use paymesh_core::shard::shard_for_merchant;
use paymesh_proto::payments::v1 as pb;
use paymesh_proto::payments::v1::payments_client::PaymentsClient;
use tonic::transport::Channel;

/// The request body of call `seq`.
pub fn authorize_request(run: &str, seq: u64, merchants: u64) -> pb::AuthorizeRequest {
    pb::AuthorizeRequest {
        merchant_id: format!("bench-m{}", seq % merchants.max(1)),
        amount: 1_000 + (seq % 9_000) as i64,
        currency: "KRW".into(),
        idempotency_key: format!("{run}-{seq}"),
    }
}

/// gRPC channels to one address (several connections, used round-robin).
pub async fn channels(addr: SocketAddr, connections: usize) -> Result<Vec<Channel>, String> {
    let mut out = Vec::with_capacity(connections);
    for _ in 0..connections.max(1) {
        let ch = Channel::from_shared(format!("http://{addr}"))
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        out.push(ch);
    }
    Ok(out)
}

/// Extra request headers (gRPC metadata), e.g. an API key.
pub type Headers = std::sync::Arc<Vec<(String, String)>>;

/// gRPC Authorize on `channel`; returns the status name.
pub async fn grpc_authorize(channel: Channel, req: pb::AuthorizeRequest, headers: &Headers) -> String {
    let mut request = tonic::Request::new(req);
    add_metadata(&mut request, headers);
    match PaymentsClient::new(channel).authorize(request).await {
        Ok(_) => "OK".into(),
        Err(s) => format!("{:?}", s.code()),
    }
}

/// Creates `n` payments through `channel` for a read benchmark; their ids.
pub async fn seed_payments(channel: &Channel, run: &str, n: u64, merchants: u64, headers: &Headers) -> Result<Vec<String>, String> {
    let mut ids = Vec::with_capacity(n as usize);
    for seq in 0..n {
        let mut request = tonic::Request::new(authorize_request(&format!("{run}-seed"), seq, merchants));
        add_metadata(&mut request, headers);
        let p = PaymentsClient::new(channel.clone()).authorize(request).await.map_err(|s| format!("seeding payment {seq}: {s}"))?;
        ids.push(p.into_inner().payment_id);
    }
    Ok(ids)
}

/// gRPC GetPayment on `channel`; returns the status name.
pub async fn grpc_get(channel: Channel, payment_id: String, headers: &Headers) -> String {
    let mut request = tonic::Request::new(pb::GetPaymentRequest { payment_id });
    add_metadata(&mut request, headers);
    match PaymentsClient::new(channel).get_payment(request).await {
        Ok(_) => "OK".into(),
        Err(s) => format!("{:?}", s.code()),
    }
}

fn add_metadata<T>(request: &mut tonic::Request<T>, headers: &Headers) {
    for (k, v) in headers.iter() {
        if let (Ok(k), Ok(v)) = (k.parse::<tonic::metadata::MetadataKey<tonic::metadata::Ascii>>(), v.parse()) {
            request.metadata_mut().insert(k, v);
        }
    }
}

/// Picks the direct channel for a merchant: the shard's instances, round-robin by `seq`.
pub fn direct_channel<'a>(by_shard: &'a [Vec<Channel>], merchant: &str, seq: u64) -> &'a Channel {
    let shard = shard_for_merchant(merchant, by_shard.len() as u32).0 as usize;
    let list = &by_shard[shard];
    &list[(seq as usize) % list.len()]
}

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).pool_max_idle_per_host(1024).build(connector)
}

/// POSTs a JSON body through the edge; the response body on 2xx, else `HTTP <status>` or
/// the transport error.
async fn rest_post(client: &HttpClient, url: String, body: String, headers: &Headers) -> Result<Bytes, String> {
    let mut builder = http::Request::post(url).header("content-type", "application/json");
    for (k, v) in headers.iter() {
        builder = builder.header(k.as_str(), v.as_str());
    }
    let request = builder.body(Full::new(Bytes::from(body))).map_err(|_| "bad request".to_owned())?;
    let resp = client.request(request).await.map_err(|e| format!("transport: {e}"))?;
    let status = resp.status();
    // Read the whole body so the connection is reused.
    let body = resp.into_body().collect().await.map(|b| b.to_bytes()).map_err(|e| format!("transport: {e}"))?;
    if status.is_success() { Ok(body) } else { Err(format!("HTTP {}", status.as_u16())) }
}

/// REST Authorize through the edge; returns `OK` or `HTTP <status>`.
pub async fn rest_authorize(client: HttpClient, edge: SocketAddr, req: pb::AuthorizeRequest, headers: &Headers) -> String {
    match rest_post(&client, format!("http://{edge}/api/payments/authorize"), authorize_json(&req), headers).await {
        Ok(_) => "OK".into(),
        Err(e) => e,
    }
}

fn authorize_json(req: &pb::AuthorizeRequest) -> String {
    format!(
        r#"{{"merchantId":"{}","amount":{},"currency":"{}","idempotencyKey":"{}"}}"#,
        req.merchant_id, req.amount, req.currency, req.idempotency_key
    )
}

/// The seeds' full flow as one unit, REST through the edge: authorize, capture the whole
/// amount, refund it. `OK`, or the failed step and its status (`capture HTTP 409`).
pub async fn rest_flow(client: HttpClient, edge: SocketAddr, req: pb::AuthorizeRequest, headers: &Headers) -> String {
    let key = req.idempotency_key.clone();
    let step = async {
        let body = rest_post(&client, format!("http://{edge}/api/payments/authorize"), authorize_json(&req), headers)
            .await
            .map_err(|e| format!("authorize {e}"))?;
        let id = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("paymentId").and_then(|i| i.as_str()).map(str::to_owned))
            .ok_or("authorize answered without a paymentId")?;
        for op in ["capture", "refund"] {
            let body = format!(r#"{{"idempotencyKey":"{key}-{op}"}}"#);
            rest_post(&client, format!("http://{edge}/api/payments/{id}/{op}"), body, headers).await.map_err(|e| format!("{op} {e}"))?;
        }
        Ok::<_, String>(())
    };
    match step.await {
        Ok(()) => "OK".into(),
        Err(e) => e,
    }
}
