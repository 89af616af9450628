//! The query service: `query.v1.MerchantQueries` over the workers' database. It reads the
//! read model and the ledger only; it never touches a payments shard.

use std::future::Future;
use std::time::SystemTime;

use paymesh_core::config::MeshConfig;
use paymesh_proto::payments::v1 as pb;
use paymesh_proto::query::v1 as q;
use tonic::{Request, Response, Status};

const DEFAULT_PAGE: i64 = 20;
const MAX_PAGE: i64 = 100;

#[derive(Debug, Clone)]
pub struct Queries {
    pool: deadpool_postgres::Pool,
    /// Whether callers must carry an identity and read only their own merchant (or any,
    /// with the admin scope).
    policy: paymesh_core::identity::Policy,
}

impl Queries {
    /// Refuses a caller who may not read `merchant`'s data.
    fn may_read(&self, metadata: &tonic::metadata::MetadataMap, merchant: &str) -> Result<(), Status> {
        let caller = self.policy.caller(|k| metadata.get(k).and_then(|v| v.to_str().ok())).map_err(Status::unauthenticated)?;
        match caller {
            Some(c) => c.may_read(merchant).map_err(Status::permission_denied),
            None => Ok(()),
        }
    }
}

fn unavailable(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("the query database is unavailable ({e}); retry"))
}

/// A page token: the last row's (created_at in microseconds, payment id), hex-encoded.
fn encode_token(created_us: i64, payment_id: &str) -> String {
    format!("{created_us}:{payment_id}").bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_token(t: &str) -> Result<(i64, String), Status> {
    let bad = || {
        Status::invalid_argument("page_token: is not a token this service issued; pass next_page_token from the previous page, or nothing")
    };
    if !t.len().is_multiple_of(2) {
        return Err(bad());
    }
    let bytes: Vec<u8> =
        (0..t.len()).step_by(2).map(|i| u8::from_str_radix(&t[i..i + 2], 16)).collect::<Result<_, _>>().map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (us, id) = text.split_once(':').ok_or_else(bad)?;
    Ok((us.parse().map_err(|_| bad())?, id.to_owned()))
}

/// Merchant ids follow the payments service's rule, so none can carry a pattern or separator.
fn check_merchant(m: &str) -> Result<(), Status> {
    paymesh_core::ids::check_merchant_id(m).map_err(|problem| Status::invalid_argument(format!("merchant_id: {problem}")))
}

#[tonic::async_trait]
impl q::merchant_queries_server::MerchantQueries for Queries {
    async fn list_merchant_payments(
        &self,
        request: Request<q::ListMerchantPaymentsRequest>,
    ) -> Result<Response<q::ListMerchantPaymentsResponse>, Status> {
        self.may_read(request.metadata(), &request.get_ref().merchant_id)?;
        let r = request.into_inner();
        check_merchant(&r.merchant_id)?;
        let size = match i64::from(r.page_size) {
            0 => DEFAULT_PAGE,
            n if (1..=MAX_PAGE).contains(&n) => n,
            n => {
                return Err(Status::invalid_argument(format!(
                    "page_size: {n} is out of range; use 1 to {MAX_PAGE} (0 for {DEFAULT_PAGE})"
                )));
            }
        };
        let (after_us, after_id) = if r.page_token.is_empty() { (i64::MAX, String::new()) } else { decode_token(&r.page_token)? };
        let client = self.pool.get().await.map_err(unavailable)?;
        let rows = client
            .query(
                "SELECT payment_id, merchant_id, amount, currency, status, captured_amount, refunded_amount, created_at, updated_at,
                        (extract(epoch from created_at) * 1000000)::bigint, version
                 FROM payments_view
                 WHERE merchant_id = $1 AND ($2 = 0 OR status = $2)
                   AND ((extract(epoch from created_at) * 1000000)::bigint, payment_id) < ($3, $4)
                 ORDER BY created_at DESC, payment_id DESC
                 LIMIT $5",
                &[&r.merchant_id, &r.status, &after_us, &after_id, &(size + 1)],
            )
            .await
            .map_err(unavailable)?;
        let more = rows.len() as i64 > size;
        let payments: Vec<pb::Payment> = rows
            .iter()
            .take(size as usize)
            .map(|row| pb::Payment {
                payment_id: row.get(0),
                merchant_id: row.get(1),
                amount: row.get(2),
                currency: row.get(3),
                status: row.get(4),
                captured_amount: row.get(5),
                refunded_amount: row.get(6),
                created_at: Some(row.get::<_, SystemTime>(7).into()),
                updated_at: Some(row.get::<_, SystemTime>(8).into()),
                version: row.get(10),
            })
            .collect();
        let next_page_token = match (more, rows.get(size as usize - 1)) {
            (true, Some(last)) => encode_token(last.get(9), last.get::<_, &str>(0)),
            _ => String::new(),
        };
        Ok(Response::new(q::ListMerchantPaymentsResponse { payments, next_page_token }))
    }

    async fn get_merchant_balance(&self, request: Request<q::GetMerchantBalanceRequest>) -> Result<Response<q::MerchantBalance>, Status> {
        self.may_read(request.metadata(), &request.get_ref().merchant_id)?;
        let m = request.into_inner().merchant_id;
        check_merchant(&m)?;
        let client = self.pool.get().await.map_err(unavailable)?;
        let balances = paymesh_workers::ledger::balances(&client, &m).await.map_err(|e| match e {
            paymesh_workers::ledger::BalanceError::Database(e) => unavailable(e),
            e @ paymesh_workers::ledger::BalanceError::OutOfRange { .. } => Status::out_of_range(e.to_string()),
        })?;
        Ok(Response::new(q::MerchantBalance {
            merchant_id: m,
            balances: balances.into_iter().map(|(currency, balance)| q::CurrencyBalance { currency, balance }).collect(),
        }))
    }
}

/// Serves instance `name` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: &MeshConfig,
    name: &str,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let w = config.workers.as_ref().ok_or("the query service reads the workers' database: the mesh config has no [workers] section")?;
    let pool = paymesh_workers::db::pool(&w.database, "paymesh-query")?;
    paymesh_workers::db::migrate(&pool).await?;
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
    reporter.set_service_status(q::SERVICE_NAME, tonic_health::ServingStatus::Serving).await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(paymesh_proto::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| e.to_string())?;
    let tls = config
        .mesh_tls
        .as_ref()
        .map(|t| paymesh_core::tls::MeshTls::load(t.files_for(name)))
        .transpose()
        .map_err(|e| format!("mesh_tls: {e}"))?;
    tracing::info!(query = name, addr = ?listener.local_addr().ok(), mtls = tls.is_some(), "query service serving");
    let policy = paymesh_core::identity::Policy::of(config);
    let router = tonic::transport::Server::builder()
        .add_service(health)
        .add_service(reflection)
        .add_service(q::merchant_queries_server::MerchantQueriesServer::new(Queries { pool, policy }));
    match tls {
        Some(tls) => router.serve_with_incoming_shutdown(paymesh_core::tls::incoming(listener, std::sync::Arc::new(tls)), shutdown).await,
        None => router.serve_with_incoming_shutdown(paymesh_core::tls::plain_incoming(listener), shutdown).await,
    }
    .map_err(|e| e.to_string())
}

/// Binds the instance's configured address and serves.
pub async fn run(config: &MeshConfig, name: &str, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), String> {
    let q = config.query.as_ref().ok_or("the mesh config has no [query] section")?;
    let inst = q.instances.iter().find(|i| i.name == name).ok_or_else(|| format!("no [[query.instances]] is named '{name}'"))?;
    let listener = tokio::net::TcpListener::bind(inst.listen).await.map_err(|e| format!("cannot listen on {}: {e}", inst.listen))?;
    // SIGHUP reloads the log level; everything else of the query service needs a restart.
    let me = name.to_owned();
    let live = paymesh_core::reload::Live::new(
        config,
        Box::new(move |old, new, changes| {
            let mine = |c: &MeshConfig| c.query.as_ref().and_then(|q| q.instances.iter().find(|i| i.name == me).map(|i| i.listen));
            changes.restart_if(&format!("query.instances[{me}]"), mine(old) != mine(new));
            changes.restart_if("workers.database", old.workers.as_ref().map(|w| &w.database) != new.workers.as_ref().map(|w| &w.database));
        }),
    );
    paymesh_core::reload::register(&live);
    serve(listener, config, name, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_reject_forgeries() {
        let t = encode_token(1_700_000_000_000_000, "pay_1_abc");
        assert_eq!(decode_token(&t).expect("own token"), (1_700_000_000_000_000, "pay_1_abc".to_owned()));
        for bad in ["zz", "abc", "3a", ""] {
            if !bad.is_empty() {
                assert!(decode_token(bad).is_err(), "{bad}");
            }
        }
    }
}
