//! The smoke run of `cargo xtask test`: the stack that `up` starts, on free ports, driven by
//! grpcurl exactly as a user would (reflection, health, Authorize, GetPayment, a replay and a
//! wrong-shard call).

use std::path::Path;
use std::process::Command;

use paymesh_core::shard::shard_for_merchant;
use paymesh_testkit::port::free_port;

use crate::stack::Stack;

pub async fn run(grpcurl: &Path) -> Result<(), String> {
    let dir = crate::root().join(".paymesh/smoke");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let config = dir.join("paymesh.toml");
    std::fs::write(&config, smoke_config()?).map_err(|e| e.to_string())?;
    let stack = Stack::start(&config, &dir, false).await?;
    let outcome = drive(grpcurl, &stack);
    let stopped = stack.stop().await;
    outcome?;
    stopped
}

fn smoke_config() -> Result<String, String> {
    let port = || free_port().map_err(|e| format!("no free port: {e}"));
    let mut text = String::new();
    for i in 0..2 {
        text += &format!("[[shards]]\nid = {i}\ndatabase_url = \"postgres://postgres@127.0.0.1:{}/paymesh\"\npool_size = 4\n\n", port()?);
    }
    text += "[payments]\nshutdown_grace = \"5s\"\n\n";
    for i in 0..2 {
        text += &format!("[[payments.instances]]\nname = \"payments-{i}\"\nshard = {i}\nlisten = \"127.0.0.1:{}\"\n\n", port()?);
    }
    Ok(text)
}

fn drive(grpcurl: &Path, stack: &Stack) -> Result<(), String> {
    let addr =
        |shard: u32| stack.config.payments.instances.iter().find(|i| i.shard.0 == shard).map(|i| i.listen.to_string()).ok_or("no instance");
    let (a0, a1) = (addr(0)?, addr(1)?);

    let list = grpcurl_ok(grpcurl, &["-plaintext", &a0, "list"])?;
    expect(&list, "payments.v1.Payments", "grpcurl list")?;
    expect(&list, "grpc.health.v1.Health", "grpcurl list")?;
    let describe = grpcurl_ok(grpcurl, &["-plaintext", &a0, "describe", "payments.v1.Payments"])?;
    expect(&describe, "rpc Authorize", "grpcurl describe")?;
    let health = grpcurl_ok(grpcurl, &["-plaintext", &a1, "grpc.health.v1.Health/Check"])?;
    expect(&health, "SERVING", "health check")?;

    let merchant = (0..).map(|i| format!("smoke-{i}")).find(|m| shard_for_merchant(m, 2).0 == 1).ok_or("no merchant")?;
    let body = format!(r#"{{"merchantId":"{merchant}","amount":50000,"currency":"KRW","idempotencyKey":"smoke-1"}}"#);
    let first = grpcurl_ok(grpcurl, &["-plaintext", "-d", &body, &a1, "payments.v1.Payments/Authorize"])?;
    expect(&first, "PAYMENT_STATUS_AUTHORIZED", "Authorize")?;
    let id = json_string(&first, "paymentId").ok_or_else(|| format!("Authorize answer has no paymentId: {first}"))?;
    if !id.starts_with("pay_1_") {
        return Err(format!("merchant {merchant} is on shard 1 but got payment {id}"));
    }
    let replay = grpcurl_ok(grpcurl, &["-plaintext", "-d", &body, &a1, "payments.v1.Payments/Authorize"])?;
    if replay != first {
        return Err(format!("replay differs:\n{first}\nvs\n{replay}"));
    }
    let got = grpcurl_ok(grpcurl, &["-plaintext", "-d", &format!(r#"{{"paymentId":"{id}"}}"#), &a1, "payments.v1.Payments/GetPayment"])?;
    expect(&got, &id, "GetPayment")?;

    let wrong = Command::new(grpcurl)
        .args(["-plaintext", "-d", &body, &a0, "payments.v1.Payments/Authorize"])
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&wrong.stderr).into_owned() + &String::from_utf8_lossy(&wrong.stdout);
    if wrong.status.success() || !text.contains("FailedPrecondition") {
        return Err(format!("a wrong-shard Authorize should fail with FailedPrecondition, got: {text}"));
    }
    println!("    grpcurl: list, describe, health, Authorize, replay, GetPayment, wrong shard: all as expected");
    Ok(())
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

/// The value of a top-level `"key": "value"` in grpcurl's JSON output.
fn json_string(text: &str, key: &str) -> Option<String> {
    let after = &text[text.find(&format!("\"{key}\""))? + key.len() + 2..];
    let start = after.find('"')? + 1;
    let len = after[start..].find('"')?;
    Some(after[start..start + len].to_owned())
}
