//! The mesh config of a throwaway local stack on free ports (below the ephemeral range), as
//! the smoke run and the chaos run start it: two shards with two payments instances each, a
//! relay per shard, the given workers, the query service and the edge.

use paymesh_testkit::port::free_port_below_ephemeral;

/// What differs between the stacks that use [`config`].
#[derive(Debug, Clone, Copy)]
pub struct Shape<'a> {
    /// `pool_size` of every shard.
    pub shard_pool: u32,
    /// `(name, kind)` of each worker instance.
    pub workers: &'a [(&'a str, &'a str)],
    /// Extra keys of `[relay]` (one per line).
    pub relay: &'a str,
    /// The local issuer's JWKS: the edge then authenticates callers (and the services scope
    /// them to their merchant), as in the shipped config.
    pub auth_jwks: Option<&'a std::path::Path>,
    /// An encrypted (`{cipher}`) password for shard 0's database, as a production config
    /// would carry it.
    pub shard_password: Option<&'a str>,
    /// The directory of the mesh's certificates: the services then serve mTLS only, and the
    /// edge and xtask's probes present their certificates.
    pub mesh_tls: Option<&'a std::path::Path>,
}

pub fn config(shape: Shape<'_>) -> Result<String, String> {
    let port = || free_port_below_ephemeral().map_err(|e| format!("no free port: {e}"));
    let mut text = String::new();
    for i in 0..2 {
        text += &format!(
            "[[shards]]\nid = {i}\ndatabase_url = \"postgres://postgres@127.0.0.1:{}/paymesh\"\npool_size = {}\n",
            port()?,
            shape.shard_pool
        );
        if let (0, Some(sealed)) = (i, shape.shard_password) {
            text += &format!("password = \"{sealed}\"\n");
        }
        text += "\n";
    }
    text += "[payments]\nshutdown_grace = \"5s\"\nhealth_check_interval = \"200ms\"\n\n";
    text += &format!("[workers]\ndatabase_url = \"postgres://postgres@127.0.0.1:{}/paymesh_workers\"\n", port()?);
    for (name, kind) in shape.workers {
        text += &format!("[[workers.instances]]\nname = \"{name}\"\nkind = \"{kind}\"\nstatus_listen = \"127.0.0.1:{}\"\n", port()?);
    }
    text += &format!(
        "[kafka]\nbootstrap = \"file:kafka.bootstrap\"\nmessage_timeout = \"5s\"\n[relay]\npoll_interval = \"50ms\"\n{}",
        shape.relay
    );
    for s in 0..2 {
        text += &format!("[[relay.instances]]\nname = \"relay-{s}\"\nshard = {s}\nstatus_listen = \"127.0.0.1:{}\"\n", port()?);
    }
    let query = port()?;
    text += &format!("[query]\n[[query.instances]]\nname = \"query-1\"\nlisten = \"127.0.0.1:{query}\"\n\n");
    for (i, name) in ["payments-0a", "payments-0b", "payments-1a", "payments-1b"].iter().enumerate() {
        text += &format!(
            "[[payments.instances]]\nname = \"{name}\"\nshard = {}\nlisten = \"127.0.0.1:{}\"\nstatus_listen = \"127.0.0.1:{}\"\n\n",
            i / 2,
            port()?,
            port()?
        );
    }
    text += &format!(
        r#"[edge]
listen = "127.0.0.1:{}"
admin_listen = "127.0.0.1:{}"

[edge.health]
interval = "200ms"

[[edge.clusters]]
name = "payments"
payments_instances = true

[[edge.routes]]
service = "payments.v1.Payments"
cluster = "payments"
shard_keys = [{{ field = "merchant_id", kind = "merchant", header = "x-merchant-id" }}, {{ field = "payment_id", kind = "sharded_id" }}]

[[edge.clusters]]
name = "query"
endpoints = [{{ address = "127.0.0.1:{query}" }}]

[[edge.routes]]
service = "query.v1.MerchantQueries"
cluster = "query"

[[edge.routes]]
service = "grpc.reflection.v1alpha.ServerReflection"
cluster = "payments"
auth = "public"
"#,
        port()?,
        port()?
    );
    if let Some(dir) = shape.mesh_tls {
        text += &format!("\n[mesh_tls]\nca = \"{}\"\ndir = \"{}\"\n", dir.join("ca.pem").display(), dir.display());
    }
    if let Some(jwks) = shape.auth_jwks {
        text += &crate::local_auth::edge_auth_section(jwks);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_is_valid_and_has_the_asked_workers() {
        let text = config(Shape {
            shard_pool: 8,
            workers: &[("ledger-1", "ledger"), ("view-1", "view")],
            relay: "retry_interval = \"500ms\"\n",
            auth_jwks: None,
            shard_password: None,
            mesh_tls: None,
        })
        .expect("config");
        let c = paymesh_core::config::MeshConfig::parse(std::path::Path::new("free-ports.toml"), &text, &|_| None)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.workers.map(|w| w.instances.len()), Some(2));
        assert_eq!(c.shards[0].database.pool_size, 8);
        assert_eq!(c.relay.map(|r| r.retry_interval), Some(std::time::Duration::from_millis(500)));
    }
}
