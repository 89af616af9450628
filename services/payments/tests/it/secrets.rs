//! Encrypted secrets in config (issue 12): a shard's password written `{cipher}...` is
//! decrypted at start with the key from the environment and is what PostgreSQL checks. The
//! server here requires a SCRAM password from the application role, so the payments
//! instance only works with the right decrypted password.

use std::path::Path;
use std::time::{Duration, Instant};

use paymesh_core::config::MeshConfig;
use paymesh_core::config::cipher::{ConfigKey, KEY_ENV};
use paymesh_proto::payments::v1 as pb;
use paymesh_proto::payments::v1::payments_client::PaymentsClient;
use paymesh_testkit::PgServer;

const PASSWORD: &str = "pg-S3cret-42";

fn config(url: &str, sealed: &str) -> String {
    format!(
        "[[shards]]\nid = 0\ndatabase_url = \"{url}\"\npassword = \"{sealed}\"\npool_size = 4\n\
         [payments]\nhealth_check_interval = \"100ms\"\n\
         [[payments.instances]]\nname = \"payments-0\"\nshard = 0\nlisten = \"127.0.0.1:0\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_password_from_the_config_is_what_postgres_checks() {
    // A server of its own: its pg_hba.conf is changed to require passwords.
    let pg = tokio::task::spawn_blocking(PgServer::start).await.expect("join").expect("postgres");
    pg.psql("postgres", &format!("CREATE ROLE app LOGIN PASSWORD '{PASSWORD}'")).expect("role");
    pg.psql("postgres", "CREATE DATABASE appdb OWNER app").expect("database");
    let hba = pg.base_dir().join("data/pg_hba.conf");
    std::fs::write(&hba, "local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all app 127.0.0.1/32 scram-sha-256\n")
        .expect("pg_hba.conf");
    pg.psql("postgres", "SELECT pg_reload_conf()").expect("reload");
    let url = format!("postgres://app@127.0.0.1:{}/appdb", pg.port());
    // Without the password the role is refused, so the instance below can only work with it.
    assert!(tokio_postgres::connect(&url, tokio_postgres::NoTls).await.is_err(), "the server must require the password");

    let key = ConfigKey::generate().expect("key");
    let encoded = key.encoded();
    let env = move |name: &str| (name == KEY_ENV).then(|| encoded.clone());
    let text = config(&url, &key.encrypt(PASSWORD).expect("encrypt"));
    assert!(!text.contains(PASSWORD));
    let cfg = MeshConfig::parse(Path::new("secrets.toml"), &text, &env).unwrap_or_else(|e| panic!("{e}"));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        paymesh_payments::serve(listener, &cfg, "payments-0", async move {
            let _ = stopped.await;
        })
        .await
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let payment = loop {
        let attempt = async {
            let mut c = PaymentsClient::connect(format!("http://{addr}")).await.map_err(|e| e.to_string())?;
            let req =
                pb::AuthorizeRequest { merchant_id: "m-1".into(), amount: 100, currency: "USD".into(), idempotency_key: "s-1".into() };
            c.authorize(req).await.map_err(|e| e.to_string())
        };
        match attempt.await {
            Ok(p) => break p.into_inner(),
            Err(e) => assert!(Instant::now() < deadline, "no Authorize succeeded with the decrypted password: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(payment.merchant_id, "m-1");
    let _ = stop.send(());
    server.await.expect("join").expect("clean stop");
    // And the server's log never saw it in clear.
    assert!(!pg.log_tail().contains(PASSWORD));
}
