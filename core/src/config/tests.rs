use super::*;
use crate::config::ShardKeyKind;

const GOOD: &str = r#"
[[shards]]
id = 0
database_url = "postgres://postgres@127.0.0.1:5432/paymesh"

[[shards]]
id = 1
database_url = "postgres://app@127.0.0.1:5433/paymesh"
password_env = "SHARD1_PASSWORD"
pool_size = 4

[payments]
idempotency_retention = "48h"

[[payments.instances]]
name = "payments-0"
shard = 0
listen = "127.0.0.1:50061"

[[payments.instances]]
name = "payments-1"
shard = 1
listen = "127.0.0.1:50062"
"#;

fn env(name: &str) -> Option<String> {
    (name == "SHARD1_PASSWORD").then(|| "s3cret".to_owned())
}

fn parse(text: &str) -> Result<MeshConfig, ConfigError> {
    MeshConfig::parse(Path::new("mesh-config/test.toml"), text, &env)
}

fn problem(text: &str) -> String {
    parse(text).expect_err("config should be rejected").to_string()
}

#[test]
fn parses_a_good_file_with_defaults() {
    let c = parse(GOOD).expect("good config");
    assert_eq!(c.shard_count(), 2);
    assert_eq!(c.shards[0].database.pool_size, 16);
    assert_eq!(c.shards[0].database.connect_timeout, Duration::from_secs(2));
    assert_eq!(c.shards[1].database.pool_size, 4);
    assert_eq!(c.shards[1].database.password.as_ref().map(Secret::expose), Some("s3cret"));
    assert_eq!(c.payments.idempotency_retention, Duration::from_secs(48 * 3_600));
    assert_eq!(c.payments_instance("payments-1").expect("declared").shard, ShardId(1));
    assert!(c.payments_instance("nope").expect_err("undeclared").to_string().contains("payments-0"));
}

#[test]
fn secrets_never_print() {
    let c = parse(GOOD).expect("good config");
    let debug = format!("{c:?}");
    assert!(!debug.contains("s3cret"), "{debug}");
    assert!(debug.contains("<redacted>"));
}

#[test]
fn the_shipped_config_is_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../mesh-config");
    for entry in std::fs::read_dir(&root).expect("mesh-config exists") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).expect("readable");
            MeshConfig::parse(&path, &text, &|_| Some("x".into())).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

#[test]
fn errors_name_the_file_the_key_and_the_fix() {
    let cases: &[(&str, &str, &str)] = &[
        ("id = 0", "id = 3", "shards[0].id: expected 0, found 3"),
        ("[payments]", "[payments]\nbogus = 1", "unknown field `bogus`"),
        ("pool_size = 4", "pool_size = 0", "shards[1].pool_size: 0 is out of range"),
        ("pool_size = 4", "pool_size = \"many\"", "invalid type"),
        ("\"48h\"", "\"2h\"", "payments.idempotency_retention: must be at least 24h"),
        ("\"48h\"", "\"soon\"", "'soon' is not a duration"),
        ("listen = \"127.0.0.1:50062\"", "listen = \"127.0.0.1:50061\"", "payments.instances[1].listen: 127.0.0.1:50061 is used"),
        ("listen = \"127.0.0.1:50062\"", "listen = \"localhost\"", "'localhost' is not an address"),
        ("shard = 1", "shard = 7", "payments.instances[1].shard: shard 7 does not exist"),
        ("name = \"payments-1\"", "name = \"payments-0\"", "'payments-0' is declared twice"),
        ("password_env = \"SHARD1_PASSWORD\"", "password_env = \"MISSING\"", "environment variable MISSING is not set"),
        ("postgres://app@", "postgres://app:hunter2@", "contains a password"),
        ("5432/paymesh\"", "5432/paymesh?password=hunter2\"", "contains a password"),
        ("postgres://app@", "mysql://app@", "postgres://user@host:port/dbname"),
    ];
    for (from, to, expect) in cases {
        assert!(GOOD.contains(from), "fixture lacks {from}");
        let text = GOOD.replacen(from, to, 1);
        let msg = problem(&text);
        // file:line: the line of what was changed.
        let at = GOOD.find(from).expect("fixture has it");
        let line = GOOD[..at].matches('\n').count() + 1 + to.matches('\n').count();
        assert!(msg.starts_with(&format!("mesh-config/test.toml:{line}: ")), "expected line {line} in {msg:?}");
        assert!(msg.contains(expect), "expected {expect:?} in {msg:?}");
    }
}

#[test]
fn check_lists_a_problem_of_every_independent_section() {
    let base = format!("{GOOD}{EDGE}");
    let text = base.replacen("request_timeout = \"20s\"", "request_timeout = \"0s\"", 1)
        + "\n[kafka]\nbootstrap = \"127.0.0.1:9092\"\n\n[relay]\nbatch_size = 0\n";
    let problems = MeshConfig::check(Path::new("mesh-config/test.toml"), &text, &env);
    let mut keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["edge.request_timeout", "relay.batch_size"], "{problems:?}");
    assert!(problems.iter().all(|p| p.line.is_some()), "{problems:?}");
    assert!(MeshConfig::check(Path::new("x.toml"), &base, &env).is_empty(), "a good file has no problems");
    // A syntax error stops the check where it is.
    let broken = MeshConfig::check(Path::new("x.toml"), "[[shards]\nid = 0\n", &env);
    assert_eq!(broken.len(), 1);
    assert_eq!(broken[0].line, Some(1), "{broken:?}");
}

#[test]
fn the_log_level_is_checked() {
    let c = parse(&format!("log_level = \"info,paymesh_edge=debug\"\n{GOOD}")).expect("good");
    assert_eq!(c.log_level.as_deref(), Some("info,paymesh_edge=debug"));
    let msg = problem(&format!("log_level = \"loud=[\"\n{GOOD}"));
    assert!(msg.starts_with("mesh-config/test.toml:1: log_level: "), "{msg}");
}

#[test]
fn a_shard_without_an_instance_is_an_error() {
    let text = GOOD.replace("shard = 1", "shard = 0").replace("127.0.0.1:50062", "127.0.0.1:50063");
    assert!(problem(&text).contains("shard 1 has no payments instance"));
}

#[test]
fn no_shards_is_an_error() {
    assert!(problem("").contains("no shards are declared"));
}

#[test]
fn password_detection() {
    assert!(url_has_password("postgres://u:p@h/db"));
    assert!(!url_has_password("postgres://u@h/db"));
    assert!(!url_has_password("postgres://h:5432/db"));
    assert!(!url_has_password("postgres://u@h/db?x=a:b@c"));
    // Regression (issue 10, defect 11): a password as a query parameter passed validation.
    assert!(url_has_password("postgres://u@h/db?password=hunter2"));
    assert!(url_has_password("postgres://u@h/db?sslmode=require&PassWord=hunter2"));
    assert!(url_has_password("postgres://u@h/db?sslpassword=x"));
    assert!(!url_has_password("postgres://u@h/db?sslmode=require"));
}

#[test]
fn urls_are_redacted_for_logs() {
    assert_eq!(redact_url("postgres://u:p@h:5/db?password=x&sslmode=a"), "postgres://u:<redacted>@h:5/db?password=<redacted>&sslmode=a");
    assert_eq!(redact_url("postgres://u@h:5/db"), "postgres://u@h:5/db");
}

#[test]
fn database_timeouts_default_and_validate() {
    let c = MeshConfig::parse(Path::new("mesh-config/test.toml"), GOOD, &env).expect("valid");
    assert_eq!(
        (c.shards[0].database.lock_timeout, c.shards[0].database.statement_timeout),
        (Duration::from_secs(2), Duration::from_secs(10))
    );
    assert_eq!(c.shards[0].database.session_options(), "-c lock_timeout=2000 -c statement_timeout=10000");
    let bad = GOOD.replacen("pool_size = 4", "pool_size = 4\nlock_timeout = \"20s\"", 1);
    assert!(problem(&bad).contains("lock_timeout: 20s is longer than statement_timeout (10s)"), "{}", problem(&bad));
    let zero = GOOD.replacen("pool_size = 4", "pool_size = 4\nstatement_timeout = \"0s\"", 1);
    assert!(problem(&zero).contains("statement_timeout: must be more than 0"), "{}", problem(&zero));
}

const EDGE: &str = r#"
[edge]
listen = "127.0.0.1:8080"
admin_listen = "127.0.0.1:9901"
request_timeout = "20s"

[[edge.clusters]]
name = "payments"
payments_instances = true

[[edge.clusters]]
name = "other"
endpoints = [{ address = "127.0.0.1:7000" }, { address = "127.0.0.1:7001", name = "o2" }]

[[edge.routes]]
service = "payments.v1.Payments"
cluster = "payments"
shard_keys = [{ field = "merchant_id", kind = "merchant", header = "X-Merchant-Id" }, { field = "payment_id", kind = "sharded_id" }]

[[edge.routes]]
service = "other.v1.Other"
cluster = "other"
timeout = "3s"
"#;

#[test]
fn parses_the_edge_section() {
    let c = parse(&format!("{GOOD}{EDGE}")).expect("good config");
    let e = c.edge.expect("edge");
    assert_eq!(e.listen.port(), 8080);
    assert_eq!(e.max_body_bytes, 65_536);
    assert_eq!(e.health.unhealthy_threshold, 2);
    let p = e.cluster("payments").expect("payments cluster");
    assert_eq!(p.shards, Some(2));
    assert_eq!(
        p.endpoints.iter().map(|e| (e.name.as_str(), e.shard.map(|s| s.0))).collect::<Vec<_>>(),
        [("payments-0", Some(0)), ("payments-1", Some(1))]
    );
    let o = e.cluster("other").expect("other cluster");
    assert_eq!((o.shards, o.endpoints[0].name.as_str(), o.endpoints[1].name.as_str()), (None, "127.0.0.1:7000", "o2"));
    assert_eq!(e.routes[0].shard_keys[0].header.as_deref(), Some("x-merchant-id"), "headers are case-insensitive");
    assert_eq!(e.routes[0].shard_keys[1].kind, ShardKeyKind::ShardedId);
    assert_eq!(e.routes[1].timeout, Some(Duration::from_secs(3)));
    assert!(parse(GOOD).expect("no edge").edge.is_none());
}

#[test]
fn edge_errors_name_the_key() {
    let cases: &[(&str, &str, &str)] = &[
        ("cluster = \"other\"", "cluster = \"nowhere\"", "edge.routes[1].cluster: no cluster is named 'nowhere'"),
        (
            "service = \"other.v1.Other\"\ncluster = \"other\"",
            "service = \"other.v1.Other\"\ncluster = \"other\"\nshard_keys = [{ field = \"x\", kind = \"merchant\" }]",
            "is not sharded",
        ),
        ("kind = \"sharded_id\"", "kind = \"hash\"", "'hash' is not a key kind"),
        ("admin_listen = \"127.0.0.1:9901\"", "admin_listen = \"127.0.0.1:8080\"", "give the admin API its own port"),
        ("listen = \"127.0.0.1:8080\"", "listen = \"8080\"", "edge.listen: '8080' is not an address"),
        ("request_timeout = \"20s\"", "request_timeout = \"0s\"", "edge.request_timeout: must be above zero"),
        ("payments_instances = true", "payments_instances = false", "a cluster needs endpoints"),
        ("{ address = \"127.0.0.1:7000\" }", "{ address = \"127.0.0.1:7000\", shard = 1 }", "every endpoint needs one"),
        ("timeout = \"3s\"", "timeout = \"3 seconds\"", "edge.routes[1].timeout"),
        ("[edge]", "[edge]\nbogus = 1", "unknown field `bogus`"),
    ];
    let base = format!("{GOOD}{EDGE}");
    for (from, to, expect) in cases {
        assert!(base.contains(from), "fixture lacks {from}");
        let msg = problem(&base.replacen(from, to, 1));
        assert!(msg.contains(expect), "expected {expect:?} in {msg:?}");
    }
}

#[test]
fn explicit_shards_must_not_have_gaps() {
    let text = format!("{GOOD}{EDGE}").replace(
        "endpoints = [{ address = \"127.0.0.1:7000\" }, { address = \"127.0.0.1:7001\", name = \"o2\" }]",
        "endpoints = [{ address = \"127.0.0.1:7000\", shard = 0 }, { address = \"127.0.0.1:7001\", shard = 2 }]",
    );
    assert!(problem(&text).contains("shard 1 has no endpoint"));
}

const EDGE_ROUTE: &str = r#"
[edge]
[[edge.clusters]]
name = "payments"
payments_instances = true
[[edge.routes]]
service = "paymesh.payments.v1.Payments"
cluster = "payments"
"#;

fn with_auth(route_line: &str, auth: &str) -> String {
    format!("{GOOD}{EDGE_ROUTE}{route_line}\n{auth}")
}

const ISSUER: &str =
    "[edge.auth]\n[[edge.auth.issuers]]\nissuer = \"https://i.test/\"\naudiences = [\"paymesh\"]\njwks_file = \"jwks.json\"\n";

#[test]
fn routes_are_authenticated_when_the_edge_has_auth_and_public_only_when_said() {
    let edge = |text: &str| parse(text).expect("good config").edge.expect("edge");
    assert!(edge(&with_auth("", "")).routes[0].public, "no [edge.auth]: every route is public");
    let e = edge(&with_auth("", ISSUER));
    assert!(!e.routes[0].public, "[edge.auth]: routes need credentials by default");
    assert_eq!(e.auth.expect("auth").issuers[0].keys, KeySource::File(PathBuf::from("mesh-config/jwks.json")));
    assert!(edge(&with_auth("auth = \"public\"", ISSUER)).routes[0].public);
}

#[test]
fn auth_mistakes_are_named_with_their_key() {
    let cases = [
        (with_auth("auth = \"required\"", ""), "edge.routes[0].auth"),
        (with_auth("auth = \"maybe\"", ISSUER), "not an auth mode"),
        (with_auth("", "[edge.auth]\n"), "nobody could call"),
        (with_auth("", &ISSUER.replace("jwks_file = \"jwks.json\"", "jwks_url = \"ftp://i.test/jwks\"")), "not an http:// or https:// URL"),
        (
            with_auth("", &ISSUER.replace("jwks_file = \"jwks.json\"", "jwks_file = \"jwks.json\"\njwks_ca = \"ca.pem\"")),
            "only goes with an https://",
        ),
        (with_auth("", &ISSUER.replace("jwks_file = \"jwks.json\"", "")), "exactly one of jwks_file and jwks_url"),
        (with_auth("", &ISSUER.replace("[\"paymesh\"]", "[]")), "audiences"),
        (with_auth("", "[edge.auth]\n[[edge.auth.api_keys]]\nid = \"k_1\"\nsha256 = \"00\"\nsubject = \"s\"\n"), "not a key id"),
        (with_auth("", "[edge.auth]\n[[edge.auth.api_keys]]\nid = \"k1\"\nsha256 = \"00\"\nsubject = \"s\"\n"), "64 hex digits"),
    ];
    for (text, expected) in cases {
        let p = problem(&text);
        assert!(p.contains(expected), "expected {expected:?} in: {p}");
    }
}

#[test]
fn an_encrypted_password_is_decrypted_with_the_key_from_the_environment() {
    use crate::config::cipher::{ConfigKey, KEY_ENV};
    let key = ConfigKey::generate().expect("key");
    let sealed = key.encrypt("pg-s3cret").expect("encrypt");
    let text = GOOD.replace("password_env = \"SHARD1_PASSWORD\"", &format!("password = \"{sealed}\""));
    let encoded = key.encoded();
    let with_key = |name: &str| (name == KEY_ENV).then(|| encoded.clone());
    let c = MeshConfig::parse(Path::new("mesh-config/test.toml"), &text, &with_key).expect("config");
    assert_eq!(c.shards[1].database.password.as_ref().map(Secret::expose), Some("pg-s3cret"));
    assert!(!format!("{c:?}").contains("pg-s3cret"), "the password shows in Debug");

    let missing = MeshConfig::parse(Path::new("mesh-config/test.toml"), &text, &|_| None).expect_err("no key").to_string();
    for needle in ["mesh-config/test.toml", "shards[1].password", KEY_ENV, "PAYMESH_CONFIG_KEY_FILE"] {
        assert!(missing.contains(needle), "{needle:?} not in: {missing}");
    }
    let other = ConfigKey::generate().expect("key").encoded();
    let wrong = MeshConfig::parse(Path::new("mesh-config/test.toml"), &text, &|n: &str| (n == KEY_ENV).then(|| other.clone()))
        .expect_err("wrong key")
        .to_string();
    assert!(wrong.contains("shards[1].password") && wrong.contains("key is wrong") && !wrong.contains("pg-s3cret"), "{wrong}");

    let plain = GOOD.replace("password_env = \"SHARD1_PASSWORD\"", "password = \"pg-s3cret\"");
    let e = problem(&plain);
    assert!(e.contains("must be encrypted") && !e.contains("pg-s3cret"), "{e}");
    let both = GOOD.replace("password_env = \"SHARD1_PASSWORD\"", &format!("password_env = \"SHARD1_PASSWORD\"\npassword = \"{sealed}\""));
    assert!(problem(&both).contains("not both"));
}

#[test]
fn group_commit_is_on_by_default_and_its_limits_are_checked() {
    assert_eq!(parse(GOOD).expect("good").payments.group_commit, super::GroupCommit { enabled: true, max_batch: 128, committers: 1 });
    let off = GOOD.replace(
        "idempotency_retention = \"48h\"",
        "idempotency_retention = \"48h\"\ngroup_commit = { enabled = false, max_batch = 8, committers = 3 }",
    );
    assert_eq!(parse(&off).expect("off").payments.group_commit, super::GroupCommit { enabled: false, max_batch: 8, committers: 3 });
    let zero = GOOD.replace("idempotency_retention = \"48h\"", "idempotency_retention = \"48h\"\ngroup_commit = { max_batch = 0 }");
    assert!(problem(&zero).contains("payments.group_commit.max_batch"), "{}", problem(&zero));
    let typo = GOOD.replace("idempotency_retention = \"48h\"", "idempotency_retention = \"48h\"\ngroup_commit = { enable = false }");
    assert!(problem(&typo).contains("enable"), "{}", problem(&typo));
}

const REPAIR: &str = r#"
[repair]
merchant_id = "repair-centre"
[repair.stock]
database_url = "postgres://postgres@127.0.0.1:5435/repair_stock"
[[repair.stock.instances]]
name = "stock-1"
listen = "127.0.0.1:25091"
status_listen = "127.0.0.1:9941"
[repair.requests]
database_url = "postgres://postgres@127.0.0.1:5435/repair_requests"
[[repair.requests.instances]]
name = "requests-1"
listen = "127.0.0.1:25092"
"#;

#[test]
fn the_repair_centre_parses_with_a_database_per_service() {
    let c = parse(&format!("{GOOD}{REPAIR}")).unwrap_or_else(|e| panic!("{e}"));
    let r = c.repair.expect("[repair]");
    assert_eq!(r.merchant_id, "repair-centre");
    let stock = r.stock.as_ref().expect("stock");
    assert!(stock.database.url.ends_with("/repair_stock"));
    assert_eq!(stock.instances[0].status_listen, Some("127.0.0.1:9941".parse().expect("addr")));
    assert_eq!(r.services().map(|(n, _)| n).collect::<Vec<_>>(), ["requests", "stock"]);
    assert_eq!(r.instance("requests-1").map(|(s, _, i)| (s, i.listen.port())), Some(("requests", 25092)));
    assert!(r.desk.is_none() && r.progress.is_none());
}

#[test]
fn repair_mistakes_name_their_key() {
    for (from, to, key, fix) in [
        ("merchant_id = \"repair-centre\"", "merchant_id = \"bad id\"", "repair.merchant_id", "[A-Za-z0-9._-]"),
        ("name = \"stock-1\"", "name = \"payments-0\"", "repair.stock.instances[0].name", "declared twice"),
        ("name = \"requests-1\"", "name = \"stock-1\"", "repair.stock.instances[0].name", "declared twice"),
        ("listen = \"127.0.0.1:25091\"", "listen = \"nowhere\"", "repair.stock.instances[0].listen", "host:port"),
        (
            "postgres://postgres@127.0.0.1:5435/repair_stock",
            "postgres://u:pw@127.0.0.1:5435/repair_stock",
            "repair.stock.database_url",
            "password",
        ),
        ("[repair.stock]", "[repair.stock]\ncolour = \"red\"", "colour", "unknown field"),
    ] {
        let text = format!("{GOOD}{}", REPAIR.replacen(from, to, 1));
        let p = problem(&text);
        assert!(p.contains(key) && p.contains(fix), "{from} -> {to}: {p}");
    }
    let no_instances = format!("{GOOD}[repair.desk]\ndatabase_url = \"postgres://postgres@127.0.0.1:5435/d\"\n");
    assert!(problem(&no_instances).contains("repair.desk.instances"), "{}", problem(&no_instances));
}

#[test]
fn a_relay_publishes_a_shard_or_a_repair_services_outbox() {
    let relay = |line: &str| {
        format!(
            "{GOOD}{REPAIR}[kafka]\nbootstrap = \"127.0.0.1:9092\"\n[[relay.instances]]\nname = \"r\"\n{line}\nstatus_listen = \"127.0.0.1:9911\"\n"
        )
    };
    let c = parse(&relay("outbox = \"repair.requests\"")).unwrap_or_else(|e| panic!("{e}"));
    let source = &c.relay.expect("relay").instances[0].source;
    assert_eq!((source.label(), source.shard()), ("repair.requests".to_owned(), None));
    let c = parse(&relay("shard = 1")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.relay.expect("relay").instances[0].source.label(), "shard-1");
    for (line, key, fix) in [
        ("outbox = \"repair.desk\"", "relay.instances[0].outbox", "no [repair.desk] section"),
        ("outbox = \"repair.stock\"", "relay.instances[0].outbox", "has no outbox"),
        ("shard = 0\noutbox = \"repair.requests\"", "relay.instances[0].outbox", "not both"),
        ("", "relay.instances[0].shard", "outbox = "),
        ("shard = 7", "relay.instances[0].shard", "does not exist"),
    ] {
        let p = problem(&relay(line));
        assert!(p.contains(key) && p.contains(fix), "{line}: {p}");
    }
}

#[tokio::test]
async fn a_broker_address_file_is_waited_for_then_read() {
    let dir = std::env::temp_dir().join(format!("paymesh-bootstrap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("kafka.bootstrap");
    let _ = std::fs::remove_file(&file);
    let b = Bootstrap::File(file.clone());
    let e = b.wait(std::time::Duration::from_millis(200)).await.expect_err("no file yet");
    assert!(e.contains("kafka.bootstrap") && e.contains("start the broker"), "{e}");
    let writer = {
        let file = file.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(150)).await;
            std::fs::write(&file, "127.0.0.1:9092\n").expect("write");
        })
    };
    assert_eq!(b.wait(std::time::Duration::from_secs(30)).await.as_deref(), Ok("127.0.0.1:9092"));
    writer.await.expect("writer");
    let _ = std::fs::remove_dir_all(&dir);
}
