//! The operator's tools against a running stack (part of `cargo xtask test`): the admin API's
//! changes need the `mesh:admin` scope, the load-test endpoint holds its bounds and reports a
//! finished run, the MCP server answers a real MCP client (the `mcp` package from PyPI) over
//! stdio and streamable HTTP, and the dashboard works in a real headless Chromium (driven by
//! Playwright), forcing a breaker open from the page.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use paymesh_core::shard::shard_for_merchant;
use serde_json::Value;

use crate::local_auth::LocalIssuer;
use crate::probe::{http, http_with};
use crate::stack::Stack;

/// Where the browser check saves its screenshots (under the repository root).
pub const SCREENSHOTS: &str = ".paymesh/ops-check/screenshots";

pub async fn run(chromium: &Path) -> Result<(), String> {
    let dir = crate::root().join(".paymesh/ops-check");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let auth_dir = dir.join("auth");
    let issuer = LocalIssuer::ensure(&auth_dir)?;
    let config = dir.join("paymesh.toml");
    let text = crate::stack::free_ports::config(crate::stack::free_ports::Shape {
        shard_pool: 4,
        workers: &[("ledger-1", "ledger"), ("view-1", "view")],
        relay: "",
        auth_jwks: Some(&issuer.jwks),
        shard_password: None,
        mesh_tls: Some(&dir.join("certs")),
    })?;
    std::fs::write(&config, text).map_err(|e| e.to_string())?;
    let logs = dir.join("logs");
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs).map_err(|e| format!("cannot create {}: {e}", logs.display()))?;

    let mut stack = Stack::start_logged(&config, &dir, false, Vec::new(), Some(logs.clone())).await?;
    let outcome = async {
        let ops = SocketAddr::from(([127, 0, 0, 1], paymesh_testkit::port::free_port_below_ephemeral().map_err(|e| e.to_string())?));
        stack.add_ops(ops, Some(&auth_dir)).await?;
        let edge = stack.config.edge.clone().ok_or("the ops check's config has no edge")?;
        let check = Check { stack: &stack, issuer: &issuer, admin: edge.admin_listen, edge: edge.listen, ops };
        check.admin_changes_need_the_admin_scope().await?;
        check.load_tests_on_demand().await?;
        check.mcp_client(&config, &auth_dir).await?;
        check.dashboard_in_chromium(chromium).await?;
        check.failures_are_listed().await
    }
    .await;
    let stopped = stack.stop().await;
    outcome.map_err(|e| format!("{e}\n(the processes' logs are in {})", logs.display()))?;
    stopped
}

struct Check<'a> {
    stack: &'a Stack,
    issuer: &'a LocalIssuer,
    admin: SocketAddr,
    edge: SocketAddr,
    ops: SocketAddr,
}

/// The breaker of the payments route for `shard`.
fn breaker(shard: u32) -> String {
    format!("payments.v1.Payments@shard-{shard}")
}

fn json(body: &str) -> Result<Value, String> {
    serde_json::from_str(body).map_err(|e| format!("not JSON ({e}): {body}"))
}

impl Check<'_> {
    fn token(&self, subject: &str, merchant: Option<&str>, scopes: &[&str]) -> Result<String, String> {
        let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
        Ok(format!("Bearer {}", self.issuer.mint(subject, merchant, &scopes, Duration::from_secs(3600))?))
    }

    /// A merchant whose payments live on `shard`.
    fn merchant_on(&self, shard: u32) -> String {
        let shards = self.stack.config.shard_count();
        (0..).map(|i| format!("ops-m{i}")).find(|m| shard_for_merchant(m, shards).0 == shard).unwrap_or_default()
    }

    async fn breaker_state(&self, name: &str) -> Result<String, String> {
        let (_, body) = http(self.admin, "GET", "/breakers", None).await?;
        let all = json(&body)?;
        let found = all["breakers"].as_array().and_then(|b| b.iter().find(|b| b["name"] == name)).cloned();
        found.and_then(|b| b["state"].as_str().map(str::to_owned)).ok_or_else(|| format!("no breaker {name} in {body}"))
    }

    /// Forcing a breaker or reloading the config through the admin API needs a credential
    /// with the `mesh:admin` scope; a refused request changes nothing.
    async fn admin_changes_need_the_admin_scope(&self) -> Result<(), String> {
        let name = breaker(0);
        let path = format!("/breakers/{name}?state=open");
        let merchant = self.token("ops-merchant", Some("ops-m0"), &["payments:write"])?;
        for (what, headers, want) in [
            ("no credential", vec![], 401),
            ("a merchant's token", vec![("authorization", merchant.as_str())], 403),
            ("a malformed token", vec![("authorization", "Bearer not-a-jwt")], 401),
        ] {
            let (status, body) = http_with(self.admin, "POST", &path, None, &headers).await?;
            if status != want {
                return Err(format!("POST {path} with {what}: want {want}, got {status}: {body}"));
            }
            let (status, _) = http_with(self.admin, "POST", "/config/reload", None, &headers).await?;
            if status != want {
                return Err(format!("POST /config/reload with {what}: want {want}, got {status}"));
            }
            if self.breaker_state(&name).await? != "closed" {
                return Err(format!("a refused POST with {what} changed breaker {name}"));
            }
        }
        let admin = self.token("ops-admin", None, &["mesh:admin"])?;
        let (status, body) = http_with(self.admin, "POST", &path, None, &[("authorization", &admin)]).await?;
        if status != 200 || self.breaker_state(&name).await? != "forced_open" {
            return Err(format!("an admin's POST {path} did not open the breaker: {status} {body}"));
        }
        let (status, _) =
            http_with(self.admin, "POST", &format!("/breakers/{name}?state=normal"), None, &[("authorization", &admin)]).await?;
        if status != 200 || self.breaker_state(&name).await? != "closed" {
            return Err(format!("an admin's POST state=normal did not close {name}"));
        }
        println!("    admin API: changes refused without a credential (401) and without mesh:admin (403); an admin's took effect");
        Ok(())
    }

    /// `POST /loadtests` refuses every out-of-bounds or malformed run, runs one at a time, and
    /// reports a finished run's figures.
    async fn load_tests_on_demand(&self) -> Result<(), String> {
        let post = |body: &'static str| http(self.ops, "POST", "/loadtests", Some(body));
        for (body, word) in [
            (r#"{"method":"authorize","rate":1000000,"duration_s":2,"concurrency":2}"#, "rate"),
            (r#"{"method":"authorize","rate":10,"duration_s":3600,"concurrency":2}"#, "duration_s"),
            (r#"{"method":"authorize","rate":10,"duration_s":2,"concurrency":100000}"#, "concurrency"),
            (r#"{"method":"authorize","rate":10,"duration_s":2,"concurrency":0}"#, "concurrency"),
            (r#"{"method":"drop_tables","rate":10,"duration_s":2,"concurrency":2}"#, "drop_tables"),
            (r#"{"method":"authorize","rate":10,"duration_s":2,"concurrency":2,"target":"10.0.0.1:80"}"#, "target"),
            (r#"{"method":"authorize","rate":"fast","duration_s":2,"concurrency":2}"#, "rate"),
            (r#"{"method":"authorize","rate":10,"#, "EOF"),
        ] {
            let (status, answer) = post(body).await?;
            if status != 400 || !answer.contains(word) {
                return Err(format!("POST /loadtests {body}: want 400 naming '{word}', got {status}: {answer}"));
            }
        }
        let huge = format!(r#"{{"method":"authorize","pad":"{}"}}"#, "x".repeat(20_000));
        let (status, answer) = http(self.ops, "POST", "/loadtests", Some(&huge)).await?;
        if status != 413 {
            return Err(format!("POST /loadtests with a 20 kB body: want 413, got {status}: {answer}"));
        }
        let (status, _) = http(self.ops, "DELETE", "/loadtests", None).await?;
        if status != 405 {
            return Err(format!("DELETE /loadtests: want 405, got {status}"));
        }
        let (_, list) = http(self.ops, "GET", "/loadtests", None).await?;
        if json(&list)?["runs"].as_array().is_none_or(|r| !r.is_empty()) {
            return Err(format!("a refused run was kept: {list}"));
        }
        let (status, started) = post(r#"{"method":"flow","rate":20,"duration_s":3,"concurrency":4}"#).await?;
        if status != 202 {
            return Err(format!("a bounded run was not started: {status} {started}"));
        }
        let id = json(&started)?["id"].as_str().ok_or("the started run has no id")?.to_owned();
        let (status, busy) = post(r#"{"method":"authorize","rate":5,"duration_s":1,"concurrency":1}"#).await?;
        if status != 409 || !busy.contains(&id) {
            return Err(format!("a second run while {id} runs: want 409 naming {id}, got {status}: {busy}"));
        }
        let (status, early) = http(self.ops, "GET", &format!("/loadtests/{id}/report"), None).await?;
        if status != 409 {
            return Err(format!("the report of a running run: want 409, got {status}: {early}"));
        }
        let deadline = Instant::now() + Duration::from_secs(90);
        let progress = loop {
            let (_, body) = http(self.ops, "GET", &format!("/loadtests/{id}"), None).await?;
            let p = json(&body)?;
            if p["state"] != "running" {
                break p;
            }
            if Instant::now() > deadline {
                return Err(format!("load test {id} still running after 90 s: {body}"));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        if progress["state"] != "finished" {
            return Err(format!("load test {id} did not finish: {progress}"));
        }
        let (status, body) = http(self.ops, "GET", &format!("/loadtests/{id}/report"), None).await?;
        let done = json(&body)?;
        let (report, analysis) = (&done["report"], &done["analysis"]);
        let count = report["count"].as_u64().unwrap_or(0);
        let ok = report["statusCodeDistribution"]["OK"].as_u64().unwrap_or(0);
        if status != 200 || count == 0 || ok != count || Some(count) != progress["calls"].as_u64() {
            return Err(format!("the report of {id}: want every call OK and counted, got {status}: {body}"));
        }
        for key in ["p50_ms", "p95_ms", "p99_ms", "error_rate", "throughput"] {
            if !analysis[key].is_number() {
                return Err(format!("the analysis of {id} has no {key}: {analysis}"));
            }
        }
        if analysis["grade"].as_str().is_none_or(str::is_empty)
            || analysis["summary"].as_str().is_none_or(|s| !s.contains(&count.to_string()))
        {
            return Err(format!("the analysis of {id} has no grade or summary with the call count: {analysis}"));
        }
        let (status, _) = http(self.ops, "GET", "/loadtests/lt-999999", None).await?;
        if status != 404 {
            return Err(format!("an unknown run: want 404, got {status}"));
        }
        println!(
            "    load tests: 8 bad runs and a 20 kB body refused, one at a time, {id}: {count} flows, grade {} ({})",
            analysis["grade"].as_str().unwrap_or(""),
            analysis["summary"].as_str().unwrap_or("")
        );
        Ok(())
    }

    /// The `mcp` package's client against paymesh-mcp over stdio and streamable HTTP.
    async fn mcp_client(&self, config: &Path, issuer_dir: &Path) -> Result<(), String> {
        let bin = self.stack.bin_dir().join("paymesh-mcp");
        let stdio = format!("{} --config {} --issuer-dir {}", bin.display(), config.display(), issuer_dir.display());
        python(
            "mcp_check.py",
            &["--stdio-command", &stdio, "--http-url", &format!("http://{}/mcp", self.ops), "--breaker", &breaker(0), "--process", "edge"],
        )
        .await
    }

    /// The dashboard in headless Chromium: instances and breakers shown, a breaker forced
    /// open from the page makes calls fail fast, and back.
    async fn dashboard_in_chromium(&self, chromium: &Path) -> Result<(), String> {
        let merchant = self.merchant_on(1);
        let screenshots = crate::root().join(SCREENSHOTS);
        std::fs::create_dir_all(&screenshots).map_err(|e| e.to_string())?;
        let endpoints: Vec<&str> = self.stack.config.payments.instances.iter().map(|i| i.name.as_str()).collect();
        let admin_token = self.token("ops-dashboard", None, &["mesh:admin"])?;
        let call_token = self.token("ops-dashboard-caller", Some(&merchant), &["payments:write"])?;
        python(
            "dashboard_check.py",
            &[
                "--admin",
                &format!("http://{}", self.admin),
                "--edge",
                &format!("http://{}", self.edge),
                "--admin-token",
                admin_token.trim_start_matches("Bearer "),
                "--call-token",
                call_token.trim_start_matches("Bearer "),
                "--merchant",
                &merchant,
                "--breaker",
                &breaker(1),
                "--endpoints",
                &endpoints.join(","),
                "--screenshots",
                &screenshots.display().to_string(),
                "--chromium",
                &chromium.display().to_string(),
            ],
        )
        .await?;
        println!("    dashboard: screenshots in {}", screenshots.display());
        Ok(())
    }

    /// The calls the forced-open breaker refused are in the dashboard's latest failures.
    async fn failures_are_listed(&self) -> Result<(), String> {
        let (status, body) = http(self.admin, "GET", "/dashboard/state", None).await?;
        let state = json(&body)?;
        let failures = state["failures"].as_array().cloned().unwrap_or_default();
        let refused = failures.iter().any(|f| {
            f["code"] == "UNAVAILABLE"
                && f["shard"] == 1
                && f["route"].as_str().is_some_and(|r| r.contains("Authorize"))
                && f["message"].as_str().is_some_and(|m| m.contains("breaker"))
        });
        if status != 200 || !refused {
            return Err(format!(
                "the dashboard's failures do not hold the refused Authorize on shard 1 with the breaker as its reason: {}",
                state["failures"]
            ));
        }
        let relays = state["relays"].as_array().map_or(0, |r| r.iter().filter(|r| r["ok"] == true && r["backlog"].is_number()).count());
        let workers = state["workers"].as_array().map_or(0, |w| w.iter().filter(|w| w["ok"] == true && w["lag"].is_number()).count());
        if relays != 2 || workers != 2 {
            return Err(format!("the dashboard state should read 2 relays and 2 workers: {} / {}", state["relays"], state["workers"]));
        }
        println!(
            "    dashboard state: {} latest failures (the breaker's refusals among them), 2 relays and 2 workers read",
            failures.len()
        );
        Ok(())
    }
}

/// Runs `ops/tests/python/<script>` with `args`; its output is shown when it fails.
async fn python(script: &str, args: &[&str]) -> Result<(), String> {
    let path: PathBuf = crate::root().join("ops/tests/python").join(script);
    let out = tokio::time::timeout(
        Duration::from_secs(300),
        tokio::process::Command::new("python3").arg(&path).args(args).kill_on_drop(true).output(),
    )
    .await
    .map_err(|_| format!("{script} did not finish within 300 s"))?
    .map_err(|e| format!("cannot run python3 {}: {e}", path.display()))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        return Err(format!("{script} failed ({}):\n{text}", out.status));
    }
    let oks = text.lines().filter(|l| l.starts_with("ok:")).count();
    println!("    {script}: {oks} checks passed");
    Ok(())
}
