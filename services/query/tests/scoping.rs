//! Merchant scoping in the query service (issue 12), over the real workers database: when
//! the mesh authenticates at the edge, a caller reads only its own merchant's payments and
//! balance (any merchant's with the admin scope), and a call without the identity the edge
//! forwards is refused.

use std::path::Path;

use paymesh_core::config::MeshConfig;
use paymesh_core::identity;
use paymesh_proto::query::v1 as q;
use paymesh_proto::query::v1::merchant_queries_client::MerchantQueriesClient;
use paymesh_testkit::PgServer;
use tonic::Code;

/// The code of a refused call.
fn code<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> Code {
    r.expect_err("refused").code()
}

fn as_caller<T>(msg: T, who: &[(&'static str, &str)]) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    for (k, v) in who {
        r.metadata_mut().insert(*k, v.parse().expect("ascii"));
    }
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_reads_only_its_own_merchant_unless_it_is_an_admin() {
    let pg = PgServer::shared().expect("postgres");
    let workers_db = pg.url(&pg.fresh_database("qscope").expect("createdb"));
    let text = format!(
        r#"[[shards]]
id = 0
database_url = "postgres://unused@127.0.0.1:1/none"
[[payments.instances]]
name = "p0"
shard = 0
listen = "127.0.0.1:0"
[kafka]
bootstrap = "127.0.0.1:1"
[workers]
database_url = "{workers_db}"
[edge]
[edge.auth]
[[edge.auth.api_keys]]
id = "k1"
sha256 = "{sha}"
subject = "s"
"#,
        sha = "0".repeat(64)
    );
    let config = MeshConfig::parse(Path::new("scoping.toml"), &text, &|_| None).unwrap_or_else(|e| panic!("{e}"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        paymesh_query::serve(listener, &config, "q", async move {
            let _ = stopped.await;
        })
        .await
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut client = loop {
        match MerchantQueriesClient::connect(format!("http://{addr}")).await {
            Ok(c) => break c,
            Err(e) => assert!(std::time::Instant::now() < deadline, "the query service never listened: {e}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let alice = [(identity::SUBJECT, "alice"), (identity::MERCHANT, "m-a"), (identity::SCOPES, "payments:read")];
    let admin = [(identity::SUBJECT, "ops"), (identity::MERCHANT, "m-a"), (identity::SCOPES, "payments:admin")];
    let list = |m: &str| q::ListMerchantPaymentsRequest { merchant_id: m.into(), ..Default::default() };
    let balance = |m: &str| q::GetMerchantBalanceRequest { merchant_id: m.into() };

    client.list_merchant_payments(as_caller(list("m-a"), &alice)).await.expect("her own payments");
    client.get_merchant_balance(as_caller(balance("m-a"), &alice)).await.expect("her own balance");
    assert_eq!(code(client.list_merchant_payments(as_caller(list("m-b"), &alice)).await), Code::PermissionDenied);
    assert_eq!(code(client.get_merchant_balance(as_caller(balance("m-b"), &alice)).await), Code::PermissionDenied);
    client.list_merchant_payments(as_caller(list("m-b"), &admin)).await.expect("an admin reads across merchants");
    client.get_merchant_balance(as_caller(balance("m-b"), &admin)).await.expect("an admin reads across merchants");
    assert_eq!(code(client.get_merchant_balance(as_caller(balance("m-a"), &[])).await), Code::Unauthenticated, "no identity");
    let _ = stop.send(());
    server.await.expect("join").expect("clean stop");
}
