//! The chaos run's clients: the seeds' full flow (authorize -> capture -> partial refunds,
//! some voids) over gRPC through the edge, each call retried with its own idempotency key as
//! a real client would, until it is acknowledged. What was acknowledged is the truth the
//! checks hold the stores to; every failed attempt is kept with its time, for the report.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use paymesh_proto::payments::v1 as pb;
use paymesh_proto::payments::v1::payments_client::PaymentsClient;
use tokio::sync::Mutex;
use tonic::Code;
use tonic::transport::Channel;

/// How long one attempt may take, and how long a client keeps retrying one call.
const ATTEMPT: Duration = Duration::from_secs(5);
const GIVE_UP: Duration = Duration::from_secs(120);

/// What the clients saw.
#[derive(Debug, Default)]
pub struct Log {
    /// Every payment whose authorize was acknowledged, with the last acknowledged state.
    pub payments: Vec<Acked>,
    /// Failed attempts: when (since the run started) and with what code.
    pub errors: Vec<(Duration, Code, String)>,
    /// Calls given up on after [`GIVE_UP`] of retries (their outcome is unknown).
    pub abandoned: Vec<String>,
    /// Answers that are wrong whatever the faults (e.g. a refused capture of an authorized
    /// payment): each a description.
    pub wrong: Vec<String>,
}

/// A payment as its client last saw it acknowledged.
#[derive(Debug, Clone)]
pub struct Acked {
    pub payment: pb::Payment,
    /// Acknowledged mutations (authorize included).
    pub operations: u32,
}

/// The shared state of a run.
#[derive(Debug)]
pub struct Load {
    channel: Channel,
    started: Instant,
    stop: AtomicBool,
    pub calls: AtomicU64,
    pub log: Mutex<Log>,
}

impl Load {
    pub fn new(edge: std::net::SocketAddr, started: Instant) -> Result<Arc<Self>, String> {
        let channel = Channel::from_shared(format!("http://{edge}")).map_err(|e| e.to_string())?.connect_lazy();
        Ok(Arc::new(Self { channel, started, stop: AtomicBool::new(false), calls: AtomicU64::new(0), log: Mutex::new(Log::default()) }))
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// One client: flows back to back until stopped. `pace` between flows keeps the rate
    /// steady rather than maximal.
    pub async fn client(self: Arc<Self>, id: usize, pace: Duration) {
        let mut n = 0usize;
        while !self.stop.load(Ordering::Relaxed) {
            self.flow(id, n).await;
            n += 1;
            tokio::time::sleep(pace).await;
        }
    }

    /// authorize -> (void | capture -> 0..2 partial refunds), deterministic from `(id, n)`.
    async fn flow(&self, id: usize, n: usize) {
        let merchant = format!("chaos-m{}", (id * 7 + n) % 16);
        let tag = format!("chaos-{}-{id}-{n}", self.run_tag());
        let amount = 10_000 + ((id * 31 + n * 17) % 90) as i64 * 100;
        let auth = pb::AuthorizeRequest { merchant_id: merchant, amount, currency: "KRW".into(), idempotency_key: format!("{tag}-a") };
        let Some(mut p) = self
            .call(&tag, |mut c| {
                let r = auth.clone();
                async move { c.authorize(r).await.map(tonic::Response::into_inner) }
            })
            .await
        else {
            return;
        };
        let mut ops = 1;
        let id_ = p.payment_id.clone();
        if n % 10 == 3 {
            let req = pb::VoidRequest { payment_id: id_.clone(), idempotency_key: format!("{tag}-v") };
            if let Some(v) = self
                .call(&tag, |mut c| {
                    let r = req.clone();
                    async move { c.void(r).await.map(tonic::Response::into_inner) }
                })
                .await
            {
                (p, ops) = (v, ops + 1);
            }
        } else {
            let capture = if n.is_multiple_of(3) { Some(amount - 1_000) } else { None };
            let req = pb::CaptureRequest { payment_id: id_.clone(), amount: capture, idempotency_key: format!("{tag}-c") };
            if let Some(c) = self
                .call(&tag, |mut c| {
                    let r = req.clone();
                    async move { c.capture(r).await.map(tonic::Response::into_inner) }
                })
                .await
            {
                (p, ops) = (c, ops + 1);
                for r in 0..(n % 3) {
                    let req = pb::RefundRequest { payment_id: id_.clone(), amount: Some(1_000), idempotency_key: format!("{tag}-r{r}") };
                    match self
                        .call(&tag, |mut c| {
                            let r = req.clone();
                            async move { c.refund(r).await.map(tonic::Response::into_inner) }
                        })
                        .await
                    {
                        Some(resp) => {
                            if let Some(after) = resp.payment {
                                (p, ops) = (after, ops + 1);
                            }
                        }
                        None => break,
                    }
                }
            }
        }
        self.log.lock().await.payments.push(Acked { payment: p, operations: ops });
    }

    /// Calls until acknowledged, retrying what a client should retry with the same key.
    /// `None` if the call was refused for good (logged as wrong) or abandoned.
    async fn call<T, F, Fut>(&self, what: &str, f: F) -> Option<T>
    where
        F: Fn(PaymentsClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let first = Instant::now();
        let mut backoff = Duration::from_millis(50);
        loop {
            self.calls.fetch_add(1, Ordering::Relaxed);
            let attempt = tokio::time::timeout(ATTEMPT, f(PaymentsClient::new(self.channel.clone()))).await;
            let status = match attempt {
                Ok(Ok(v)) => return Some(v),
                Ok(Err(s)) => s,
                Err(_) => tonic::Status::deadline_exceeded("the client's own deadline"),
            };
            let at = self.started.elapsed();
            // What a client retries with the same key: the server's "try again", its own
            // deadline, and transport failures (a connection cut mid-call surfaces as Unknown
            // or as an h2 protocol error).
            let transport = status.code() == Code::Internal
                && (status.message().contains("h2 protocol error") || status.message().contains("transport"));
            let retriable = transport
                || matches!(
                    status.code(),
                    Code::Unavailable | Code::Aborted | Code::DeadlineExceeded | Code::Cancelled | Code::ResourceExhausted | Code::Unknown
                );
            self.log.lock().await.errors.push((at, status.code(), status.message().chars().take(160).collect()));
            if !retriable {
                self.log.lock().await.wrong.push(format!("{what}: {:?} {}", status.code(), status.message()));
                return None;
            }
            if first.elapsed() > GIVE_UP {
                self.log.lock().await.abandoned.push(what.to_owned());
                return None;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// A burst of clients sending the same authorize (same key) at once, as a client that
    /// times out and retries in parallel would: every answer must be the same payment.
    pub async fn same_key_burst(self: &Arc<Self>, clients: usize) -> Result<(), String> {
        let tag = format!("chaos-{}-burst-{}", self.run_tag(), self.started.elapsed().as_millis());
        let req =
            pb::AuthorizeRequest { merchant_id: "chaos-burst".into(), amount: 7_700, currency: "KRW".into(), idempotency_key: tag.clone() };
        let calls = (0..clients).map(|_| {
            let (me, req, tag) = (self.clone(), req.clone(), tag.clone());
            tokio::spawn(async move {
                me.call(&tag, |mut c| {
                    let r = req.clone();
                    async move { c.authorize(r).await.map(tonic::Response::into_inner) }
                })
                .await
            })
        });
        let answers: Vec<Option<pb::Payment>> = futures_util::future::join_all(calls).await.into_iter().flatten().collect();
        let ids: std::collections::BTreeSet<String> = answers.iter().flatten().map(|p| p.payment_id.clone()).collect();
        if ids.len() != 1 {
            return Err(format!("{clients} clients sending one idempotency key got {} different payments: {ids:?}", ids.len()));
        }
        if let Some(p) = answers.into_iter().flatten().next() {
            self.log.lock().await.payments.push(Acked { payment: p, operations: 1 });
        }
        Ok(())
    }

    /// A tag unique to this run (keys must not collide with an earlier run's on kept data).
    fn run_tag(&self) -> u64 {
        static TAG: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        *TAG.get_or_init(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0))
    }
}
