//! The desk's synchronous calls, all through the edge's gRPC path (so its routing, health
//! checks, breakers and retries apply): the stock's reserve and consume, and Paymesh's
//! authorize and capture. Each is idempotent by the request id, so a retried accept or
//! completion reserves one part and charges once.

use std::net::SocketAddr;
use std::time::Duration;

use paymesh_proto::payments::v1 as pay;
use paymesh_proto::payments::v1::payments_client::PaymentsClient;
use paymesh_repair_proto::repair::v1 as pb;
use paymesh_repair_proto::repair::v1::stock_client::StockClient;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// How long one call through the edge may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The edge, as the desk calls it.
#[derive(Debug, Clone)]
pub struct Edge {
    channel: Channel,
    /// `authorization` (a bearer token) or `x-api-key` (an API key), when the edge
    /// authenticates.
    credential: Option<(&'static str, tonic::metadata::MetadataValue<tonic::metadata::Ascii>)>,
    /// The Paymesh merchant repairs are charged to.
    pub merchant: String,
}

impl Edge {
    /// A lazy connection to the edge at `addr` (the desk starts while the edge is down).
    pub fn new(addr: SocketAddr, credential: Option<String>, merchant: String) -> Result<Self, String> {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(2))
            .timeout(CALL_TIMEOUT)
            .connect_lazy();
        let credential = credential
            .map(|c| {
                let header = if c.starts_with("pmk_") { "x-api-key" } else { "authorization" };
                c.parse().map(|v| (header, v)).map_err(|_| "the desk's credential is not a valid header value".to_owned())
            })
            .transpose()?;
        Ok(Self { channel, credential, merchant })
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut r = Request::new(message);
        r.set_timeout(CALL_TIMEOUT);
        if let Some((header, value)) = &self.credential {
            r.metadata_mut().insert(*header, value.clone());
        }
        r
    }

    pub async fn reserve(&self, sku: &str, request_id: &str) -> Result<pb::Reservation, Status> {
        let r = self.request(pb::ReserveRequest { sku: sku.to_owned(), request_id: request_id.to_owned() });
        Ok(StockClient::new(self.channel.clone()).reserve(r).await?.into_inner())
    }

    pub async fn consume(&self, request_id: &str) -> Result<pb::Reservation, Status> {
        let r = self.request(pb::ConsumeRequest { request_id: request_id.to_owned() });
        Ok(StockClient::new(self.channel.clone()).consume(r).await?.into_inner())
    }

    pub async fn release(&self, request_id: &str) -> Result<pb::Reservation, Status> {
        let r = self.request(pb::ReleaseRequest { request_id: request_id.to_owned() });
        Ok(StockClient::new(self.channel.clone()).release(r).await?.into_inner())
    }

    /// Authorizes and captures `amount` for the repair `request_id`; the payment's id. The
    /// idempotency keys come from the request id: a retry replays, never charges again.
    pub async fn charge(&self, request_id: &str, amount: i64, currency: &str) -> Result<String, Status> {
        let mut payments = PaymentsClient::new(self.channel.clone());
        let authorized = payments
            .authorize(self.request(pay::AuthorizeRequest {
                merchant_id: self.merchant.clone(),
                amount,
                currency: currency.to_owned(),
                idempotency_key: format!("repair-{request_id}-authorize"),
            }))
            .await?
            .into_inner();
        let captured = payments
            .capture(self.request(pay::CaptureRequest {
                payment_id: authorized.payment_id.clone(),
                amount: None,
                idempotency_key: format!("repair-{request_id}-capture"),
            }))
            .await?
            .into_inner();
        Ok(captured.payment_id)
    }
}
