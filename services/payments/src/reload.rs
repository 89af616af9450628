//! What a payments instance changes on a config reload ([`paymesh_core::reload`]): its pool
//! size, the idempotency retention and the group-commit batch limit take effect at once; the
//! rest of what concerns it (its addresses, its shard's database, group commit on/off and
//! committers, health checking, drain timings, mTLS) needs a restart and is reported so.

use paymesh_core::ShardId;
use paymesh_core::config::MeshConfig;
use paymesh_core::reload::Changes;

use crate::store::PaymentStore;

/// Applies `new` to the running instance `instance` of shard `shard`, recording what changed.
pub fn apply(store: &PaymentStore, instance: &str, shard: ShardId, old: &MeshConfig, new: &MeshConfig, changes: &mut Changes) {
    let (o, n) = (&old.payments, &new.payments);
    if o.idempotency_retention != n.idempotency_retention {
        store.set_retention(n.idempotency_retention);
        changes.applied.push("payments.idempotency_retention".into());
    }
    if o.group_commit.max_batch != n.group_commit.max_batch {
        store.set_max_batch(n.group_commit.max_batch);
        changes.applied.push("payments.group_commit.max_batch".into());
    }
    changes.restart_if("payments.group_commit.enabled", o.group_commit.enabled != n.group_commit.enabled);
    changes.restart_if("payments.group_commit.committers", o.group_commit.committers != n.group_commit.committers);
    changes.restart_if("payments.health_check_interval", o.health_check_interval != n.health_check_interval);
    changes.restart_if("payments.drain_delay", o.drain_delay != n.drain_delay);
    changes.restart_if("payments.shutdown_grace", o.shutdown_grace != n.shutdown_grace);
    match (old.payments_instance(instance), new.payments_instance(instance)) {
        (Ok(a), Ok(b)) => changes.restart_if(&format!("payments.instances[{instance}]"), a != b),
        (_, Err(_)) => changes.restart_required.push(format!("payments.instances[{instance}] (removed: stop this instance)")),
        (Err(_), Ok(_)) => {}
    }
    let key = format!("shards[{}]", shard.0);
    match (old.shard(shard), new.shard(shard)) {
        (Some(a), Some(b)) => {
            if a.database.pool_size != b.database.pool_size {
                store.pool().resize(b.database.pool_size);
                changes.applied.push(format!("{key}.pool_size"));
            }
            let same_but_pool = paymesh_core::config::DatabaseConfig { pool_size: a.database.pool_size, ..b.database.clone() };
            changes.restart_if(&format!("{key}.database"), same_but_pool != a.database);
        }
        (Some(_), None) => changes.restart_required.push(format!("{key} (removed)")),
        _ => {}
    }
    changes.restart_if("mesh_tls", old.mesh_tls != new.mesh_tls);
}
