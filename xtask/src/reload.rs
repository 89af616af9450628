//! `cargo xtask reload [--config FILE]`: seed 004's bus refresh for the local stack. Checks
//! the mesh config (nothing is sent when it has a problem), then asks every process of it to
//! reload: the edge on its admin listener, each payments instance (with a status listener),
//! relay and worker on its status listener (`POST /config/reload`). Prints what each applied
//! and what needs a restart; fails if any process refused or could not be reached.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;

use paymesh_core::config::MeshConfig;

/// Every process of `config` that takes `POST /config/reload`, with its address.
fn targets(config: &MeshConfig) -> Vec<(String, SocketAddr)> {
    let mut out = Vec::new();
    if let Some(e) = &config.edge {
        out.push(("edge".to_owned(), e.admin_listen));
    }
    for i in &config.payments.instances {
        if let Some(s) = i.status_listen {
            out.push((i.name.clone(), s));
        }
    }
    for i in config.relay.iter().flat_map(|r| &r.instances) {
        out.push((i.name.clone(), i.status_listen));
    }
    for i in config.workers.iter().flat_map(|w| &w.instances) {
        out.push((i.name.clone(), i.status_listen));
    }
    // A wildcard listener is reached on loopback.
    out.into_iter()
        .map(|(n, mut a)| {
            if a.ip().is_unspecified() {
                a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            (n, a)
        })
        .collect()
}

pub async fn run(path: &Path) -> Result<(), String> {
    let env = |name: &str| std::env::var(name).ok();
    let config = paymesh_core::reload::read(path, &env).map_err(|e| format!("the config has problems; nothing was reloaded:\n{e}"))?;
    let mut table = String::from("| process | outcome | applied | needs a restart |\n|---|---|---|---|\n");
    let mut failed = 0;
    // An edge that authenticates takes admin changes only with the mesh:admin scope: the
    // local issuer mints a short-lived token for it.
    let admin = match config.edge.as_ref().and_then(|e| e.auth.as_ref()) {
        Some(_) => {
            let issuer = crate::local_auth::LocalIssuer::open(&crate::root().join(".paymesh/auth"))?;
            let scopes = [paymesh_core::identity::MESH_ADMIN_SCOPE.to_owned()];
            Some(format!("Bearer {}", issuer.mint("xtask-reload", None, &scopes, std::time::Duration::from_secs(60))?))
        }
        None => None,
    };
    for (name, addr) in targets(&config) {
        let headers: Vec<(&str, &str)> = match (&admin, name.as_str()) {
            (Some(token), "edge") => vec![("authorization", token.as_str())],
            _ => Vec::new(),
        };
        let (outcome, applied, restart) = match crate::probe::http_with(addr, "POST", "/config/reload", None, &headers).await {
            Ok((200, body)) => {
                let j: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                let list = |k: &str| {
                    j[k].as_array().map(|a| a.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>().join(", ")).unwrap_or_default()
                };
                (format!("reloaded (generation {})", j["generation"]), list("applied"), list("restart_required"))
            }
            Ok((status, body)) => {
                failed += 1;
                let j: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                (format!("refused ({status}): {}", j["message"].as_str().unwrap_or(&body).replace('\n', " ")), String::new(), String::new())
            }
            Err(e) => {
                failed += 1;
                (format!("unreachable at {addr}: {e}"), String::new(), String::new())
            }
        };
        let _ = writeln!(table, "| {name} | {outcome} | {applied} | {restart} |");
    }
    println!("{table}");
    for q in config.query.iter().flat_map(|q| &q.instances) {
        println!("{}: no status listener; send it SIGHUP to reload its log level", q.name);
    }
    if failed > 0 {
        return Err(format!("{failed} processes did not reload"));
    }
    Ok(())
}
