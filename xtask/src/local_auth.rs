//! `cargo xtask token`, and the `[edge.auth]` section trusting the local issuer
//! ([`paymesh_ops::issuer::LocalIssuer`]: the key made on first use, the JWKS the edge reads).

use std::path::Path;
use std::time::Duration;

pub use paymesh_ops::issuer::{AUDIENCE, ISSUER, LocalIssuer};

/// `[edge.auth]` trusting the local issuer (`jwks` as the config should name it).
pub fn edge_auth_section(jwks: &Path) -> String {
    format!("[edge.auth]\n[[edge.auth.issuers]]\nissuer = \"{ISSUER}\"\naudiences = [\"{AUDIENCE}\"]\njwks_file = \"{}\"\n", jwks.display())
}

/// `cargo xtask token --merchant M [--subject S] [--scope S ...] [--ttl 1h]`.
pub fn token_command(root: &Path, args: &[String]) -> Result<(), String> {
    let (mut merchant, mut subject, mut scopes, mut ttl) = (None, None, Vec::new(), Duration::from_secs(3600));
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--merchant" => merchant = Some(value()?),
            "--subject" => subject = Some(value()?),
            "--scope" => scopes.push(value()?),
            "--ttl" => ttl = paymesh_core::duration::parse(&value()?)?,
            other => return Err(format!("unknown option '{other}' for token\n{}", crate::USAGE)),
        }
    }
    use paymesh_core::identity::{ADMIN_SCOPE, MESH_ADMIN_SCOPE};
    if merchant.is_none() && !scopes.iter().any(|s| s == ADMIN_SCOPE || s == MESH_ADMIN_SCOPE) {
        return Err(format!(
            "name the merchant the token acts for (--merchant M), or give --scope {ADMIN_SCOPE} (reads across merchants) or --scope {MESH_ADMIN_SCOPE} (the admin API's changes)"
        ));
    }
    if scopes.is_empty() {
        scopes = vec!["payments:read".into(), "payments:write".into()];
    }
    let issuer = LocalIssuer::ensure(&root.join(".paymesh/auth"))?;
    let subject = subject.unwrap_or_else(|| format!("local-{}", merchant.as_deref().unwrap_or("admin")));
    println!("{}", issuer.mint(&subject, merchant.as_deref(), &scopes, ttl)?);
    Ok(())
}
