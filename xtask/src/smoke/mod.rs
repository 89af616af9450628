//! The smoke run of `cargo xtask test`: the stack that `up` starts (PostgreSQL shards, two
//! payments instances per shard, the edge), on free ports, driven as a user would: grpcurl
//! and plain HTTP through the edge, grpcurl straight at an instance; then [`faults`].

mod faults;

use std::path::Path;
use std::process::Command;

use std::sync::OnceLock;

use paymesh_core::shard::shard_for_merchant;

use crate::local_auth::LocalIssuer;
use crate::probe::http;
use crate::stack::Stack;

/// The smoke stack's token issuer (the stack authenticates callers, as `up`'s does).
static ISSUER: OnceLock<LocalIssuer> = OnceLock::new();

/// `Bearer <token>` for a caller acting for `merchant`.
fn bearer(merchant: &str) -> Result<String, String> {
    let issuer = ISSUER.get().ok_or("the smoke run's issuer is not set up")?;
    let token =
        issuer.mint(&format!("smoke-{merchant}"), Some(merchant), &["payments:write".into()], std::time::Duration::from_secs(3600))?;
    remember(&token);
    Ok(format!("Bearer {token}"))
}

/// Every secret the smoke run handed out, to look for in the processes' logs afterwards.
static SECRETS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn remember(secret: &str) {
    if let Ok(mut s) = SECRETS.lock() {
        s.push(secret.to_owned());
    }
}

/// [`http`] as a caller acting for `merchant`.
async fn http_as(
    merchant: &str,
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(u16, String), String> {
    crate::probe::http_with(addr, method, path, body, &[("authorization", &bearer(merchant)?)]).await
}

pub async fn run(grpcurl: &Path, rotel: &Path, prometheus: &Path) -> Result<(), String> {
    let dir = crate::root().join(".paymesh/smoke");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let issuer = LocalIssuer::ensure(&dir.join("auth"))?;
    let jwks = issuer.jwks.clone();
    let _ = ISSUER.set(issuer);
    // Shard 0's password is in the config encrypted, as a production config would carry it
    // (PostgreSQL here trusts local connections, so it is checked only by the payments tests).
    let key = paymesh_core::config::cipher::ConfigKey::generate()?;
    let password = format!("smoke-pw-{}", std::process::id());
    let sealed = key.encrypt(&password)?;
    remember(&password);
    remember(&key.encoded());
    let config = dir.join("paymesh.toml");
    // The services serve mTLS only; the stack issues the certificates (xtask certs).
    let certs = dir.join("certs");
    std::fs::write(&config, smoke_config(&jwks, &sealed, &certs)?).map_err(|e| e.to_string())?;
    let logs = dir.join("logs");
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs).map_err(|e| format!("cannot create {}: {e}", logs.display()))?;

    // A real OTLP receiver: rotel, writing the spans it gets to a file.
    let receiver = crate::observe::start_receiver(rotel, &dir).await?;
    let spans = receiver.spans.clone();
    let env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), receiver.endpoint.clone()),
        ("OTEL_BSP_SCHEDULE_DELAY".to_owned(), "200".to_owned()),
        (paymesh_core::config::cipher::KEY_ENV.to_owned(), key.encoded()),
    ];
    let stack = Stack::start_logged(&config, &dir, false, env, Some(logs.clone())).await?;
    let outcome = async {
        let trace_id = drive(grpcurl, &stack).await?;
        one_trace(&spans, &trace_id).await?;
        scrape(prometheus, &stack, &dir).await?;
        faults::run(&stack, &config).await
    }
    .await;
    let stopped = stack.stop().await;
    outcome?;
    stopped?;
    no_secret_in(&logs)
}

/// No log line of any process holds a secret the run handed out (tokens, the database
/// password, the config key).
fn no_secret_in(logs: &Path) -> Result<(), String> {
    let secrets = SECRETS.lock().map_err(|_| "poisoned")?.clone();
    let (mut files, mut lines) = (0, 0);
    for entry in std::fs::read_dir(logs).map_err(|e| format!("cannot read {}: {e}", logs.display()))? {
        let path = entry.map_err(|e| e.to_string())?.path();
        let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        files += 1;
        for (n, line) in text.lines().enumerate() {
            lines += 1;
            if let Some(s) = secrets.iter().find(|s| line.contains(s.as_str())) {
                let what = if s.starts_with("ey") { "a token" } else { "a secret" };
                return Err(format!("{}:{}: a log line holds {what} the smoke run handed out", path.display(), n + 1));
            }
        }
    }
    if files < 5 || lines == 0 || secrets.len() < 3 {
        return Err(format!(
            "the secret scan saw {files} log files, {lines} lines and {} secrets: too little to mean anything",
            secrets.len()
        ));
    }
    println!("    no secret in {lines} log lines of {files} processes ({} tokens, keys and passwords looked for)", secrets.len());
    Ok(())
}

/// Every port below the ephemeral range: servers here are killed and restarted on their port,
/// which an outgoing connection could take meanwhile, or a reconnecting client connect to itself.
fn smoke_config(jwks: &Path, shard_password: &str, certs: &Path) -> Result<String, String> {
    crate::stack::free_ports::config(crate::stack::free_ports::Shape {
        shard_pool: 4,
        workers: &[("ledger-1", "ledger"), ("view-1", "view")],
        relay: "",
        auth_jwks: Some(jwks),
        shard_password: Some(shard_password),
        mesh_tls: Some(certs),
    })
}

/// Debian's Prometheus, with a generated config, scrapes every process of the stack: all
/// targets must be up, and PromQL must see the edge's request counter.
async fn scrape(prometheus: &Path, stack: &Stack, dir: &Path) -> Result<(), String> {
    let prom = crate::observe::start_prometheus(prometheus, &stack.config, dir).await?;
    let (addr, targets) = (prom.addr, prom.targets);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let up = http(addr, "GET", "/api/v1/query?query=sum(up)", None).await.ok();
        let edge = http(addr, "GET", "/api/v1/query?query=sum(paymesh_edge_requests_total)", None).await.ok();
        let value = |r: &Option<(u16, String)>| {
            r.as_ref()
                .and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(b).ok())
                .and_then(|v| v["data"]["result"][0]["value"][1].as_str().and_then(|s| s.parse::<f64>().ok()))
        };
        if value(&up) == Some(targets as f64) && value(&edge).is_some_and(|n| n > 0.0) {
            println!(
                "    Prometheus: all {} targets up; PromQL sum(paymesh_edge_requests_total) = {}",
                targets,
                value(&edge).unwrap_or_default()
            );
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("Prometheus never saw every target up and the edge counter: up={:?} edge={:?}", value(&up), value(&edge)));
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// Waits until the spans file holds spans of `trace_id` from the edge, a payments instance,
/// a relay and a worker: one trace across every hop.
async fn one_trace(spans: &Path, trace_id: &str) -> Result<(), String> {
    let want = ["edge", "payments", "relay", "worker"];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(spans).unwrap_or_default();
        let services: std::collections::BTreeSet<String> = text
            .lines()
            .filter(|l| l.contains(&format!("\"trace_id\": \"{trace_id}\"")))
            .filter_map(|l| l.split("\"service\": \"").nth(1).and_then(|r| r.split('"').next()).map(str::to_owned))
            .collect();
        if want.iter().all(|w| services.contains(*w)) {
            println!("    one trace {trace_id} across {services:?}");
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("trace {trace_id} reached only {services:?} of {want:?} (spans in {})", spans.display()));
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Drives the stack; returns the trace id the client started, which must reach every hop.
async fn drive(grpcurl: &Path, stack: &Stack) -> Result<String, String> {
    let edge = stack.config.edge.as_ref().ok_or("the smoke config has an edge")?;
    let e = edge.listen.to_string();
    let instance = stack.config.payments.instances[2].listen.to_string();

    // grpcurl through the edge: reflection and a call.
    let list = grpcurl_ok(grpcurl, &["-plaintext", &e, "list"])?;
    expect(&list, "payments.v1.Payments", "grpcurl list via the edge")?;
    // Straight at an instance: over mTLS with xtask's certificate (a plaintext client is
    // refused).
    let tls = direct_tls(stack, &stack.config.payments.instances[2].name)?;
    let plain = Command::new(grpcurl).args(["-plaintext", &instance, "list"]).output().map_err(|e| e.to_string())?;
    if plain.status.success() {
        return Err("a plaintext grpcurl got an answer from an mTLS instance".into());
    }
    let describe = grpcurl_ok(
        grpcurl,
        &[&tls.iter().map(String::as_str).collect::<Vec<_>>()[..], &[&instance, "describe", "payments.v1.Payments"]].concat(),
    )?;
    expect(&describe, "rpc Authorize", "grpcurl describe on an instance")?;

    let merchant = (0..).map(|i| format!("smoke-{i}")).find(|m| shard_for_merchant(m, 2).0 == 1).ok_or("no merchant")?;
    let body = format!(r#"{{"merchantId":"{merchant}","amount":50000,"currency":"KRW","idempotencyKey":"smoke-1"}}"#);

    // REST through the edge, as curl would, continuing a trace the client started.
    let trace_id =
        format!("{:032x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(1));
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let auth = bearer(&merchant)?;
    let (status, first) = crate::probe::http_with(
        edge.listen,
        "POST",
        "/api/payments/authorize",
        Some(&body),
        &[("traceparent", &traceparent), ("authorization", &auth)],
    )
    .await?;
    if status != 200 {
        return Err(format!("POST /api/payments/authorize via the edge: {status} {first}"));
    }
    let id = json_string(&first, "paymentId").ok_or_else(|| format!("no paymentId in {first}"))?;
    if !id.starts_with("pay_1_") {
        return Err(format!("merchant {merchant} is on shard 1 but got payment {id}"));
    }
    let (status, replay) = http_as(&merchant, edge.listen, "POST", "/api/payments/authorize", Some(&body)).await?;
    if status != 200 || replay != first {
        return Err(format!("replay through the edge differs: {status} {replay} vs {first}"));
    }
    let capture = grpcurl_ok(
        grpcurl,
        &[
            "-plaintext",
            "-H",
            &format!("authorization: {auth}"),
            "-d",
            &format!(r#"{{"paymentId":"{id}","idempotencyKey":"smoke-2"}}"#),
            &e,
            "payments.v1.Payments/Capture",
        ],
    )?;
    expect(&capture, "PAYMENT_STATUS_CAPTURED", "grpcurl Capture via the edge")?;
    let (status, got) = http_as(&merchant, edge.listen, "GET", &format!("/api/payments/{id}"), None).await?;
    if status != 200 || !got.contains("PAYMENT_STATUS_CAPTURED") {
        return Err(format!("GET /api/payments/{id} via the edge: {status} {got}"));
    }
    let (status, bad) = http_as("m", edge.listen, "POST", "/api/payments/authorize", Some(r#"{"merchantId":"m","amount":"x"}"#)).await?;
    if status != 400 || !bad.contains("amount") {
        return Err(format!("a bad body should be 400 naming the field, got {status} {bad}"));
    }
    let (status, _) = http(edge.admin_listen, "GET", "/clusters", None).await?;
    if status != 200 {
        return Err(format!("admin /clusters answered {status}"));
    }

    // The event pipeline: relay -> Kafka -> ledger and view -> query, through the edge.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (status, balance) = http_as(&merchant, edge.listen, "GET", &format!("/api/merchants/{merchant}/balance"), None).await?;
        let (_, list) = http_as(&merchant, edge.listen, "GET", &format!("/api/merchants/{merchant}/payments"), None).await?;
        if status == 200 && balance.contains("\"balance\":\"50000\"") && list.contains("PAYMENT_STATUS_CAPTURED") {
            break;
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("the pipeline never reflected the capture: balance {status} {balance}; payments {list}"));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // Without a credential, through the edge: 401; another merchant's payment: 403.
    let (status, _) = http(edge.listen, "GET", &format!("/api/payments/{id}"), None).await?;
    if status != 401 {
        return Err(format!("GET without a token should be 401, got {status}"));
    }
    let (status, _) = http_as("someone-else", edge.listen, "GET", &format!("/api/payments/{id}"), None).await?;
    if status != 403 {
        return Err(format!("GET of another merchant's payment should be 403, got {status}"));
    }

    // Straight at an instance of the wrong shard (with the identity the edge would forward):
    // refused, naming the shard.
    let wrong = stack.config.payments.instances[0].listen.to_string();
    let identity = [
        "-H".to_owned(),
        format!("{}: smoke", paymesh_core::identity::SUBJECT),
        "-H".to_owned(),
        format!("{}: {merchant}", paymesh_core::identity::MERCHANT),
    ];
    let out = Command::new(grpcurl)
        .args(direct_tls(stack, &stack.config.payments.instances[0].name)?)
        .args(&identity)
        .args(["-d", &body, &wrong, "payments.v1.Payments/Authorize"])
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    if out.status.success() || !text.contains("FailedPrecondition") {
        return Err(format!("a wrong-shard Authorize should fail with FailedPrecondition, got: {text}"));
    }
    println!(
        "    via the edge: grpcurl list/Capture, REST authorize/replay/get/400/401/403, admin, the pipeline (balance and payments via query); direct: describe, wrong shard: all as expected"
    );
    Ok(trace_id)
}

/// grpcurl's flags for an mTLS call to instance `name` with xtask's certificate.
fn direct_tls(stack: &Stack, name: &str) -> Result<Vec<String>, String> {
    let files = stack.operator_tls().ok_or("the smoke stack talks mTLS")?.files();
    Ok(vec![
        "-cacert".into(),
        files.ca.display().to_string(),
        "-cert".into(),
        files.cert.display().to_string(),
        "-key".into(),
        files.key.display().to_string(),
        "-servername".into(),
        name.to_owned(),
    ])
}

fn grpcurl_ok(grpcurl: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(grpcurl).args(args).output().map_err(|e| format!("cannot run grpcurl: {e}"))?;
    if !out.status.success() {
        return Err(format!("grpcurl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn expect(text: &str, needle: &str, what: &str) -> Result<(), String> {
    if text.contains(needle) { Ok(()) } else { Err(format!("{what}: expected {needle:?} in:\n{text}")) }
}

/// The value of a top-level `"key": "value"` in JSON text.
fn json_string(text: &str, key: &str) -> Option<String> {
    let after = &text[text.find(&format!("\"{key}\""))? + key.len() + 2..];
    let start = after.find('"')? + 1;
    let len = after[start..].find('"')?;
    Some(after[start..start + len].to_owned())
}
