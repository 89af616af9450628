//! The edge's state: config, clusters and catalog, immutable once built. A reload builds a
//! new one next to it (see [`crate::live`]); each call keeps the one it started with.

use std::collections::HashMap;
use std::sync::Arc;

use paymesh_core::config::EdgeConfig;

use crate::catalog::{Catalog, CatalogError};
use crate::cluster::Cluster;

#[derive(Debug)]
pub struct EdgeState {
    pub config: EdgeConfig,
    pub clusters: HashMap<String, Arc<Cluster>>,
    pub catalog: Catalog,
    /// Request counters and latencies; one set for the process's life, across reloads.
    pub requests: Arc<crate::metrics::RequestMetrics>,
    /// The latest failed calls (the dashboard's list), kept across reloads too.
    pub failures: Arc<crate::failures::RecentFailures>,
    /// Present when the config has `[edge.auth]`.
    pub auth: Option<Arc<crate::auth::Authenticator>>,
    /// mTLS to the upstreams, when the config has `[mesh_tls]`.
    pub upstream_tls: Option<Arc<crate::upstream_tls::UpstreamTls>>,
}

pub use paymesh_core::reload::Changes;

impl EdgeState {
    pub fn build(config: EdgeConfig) -> Result<Arc<Self>, CatalogError> {
        Self::build_with(config, None)
    }

    /// [`EdgeState::build`], with the mesh's mTLS settings.
    pub fn build_with(config: EdgeConfig, mesh_tls: Option<&paymesh_core::config::MeshTlsConfig>) -> Result<Arc<Self>, CatalogError> {
        let upstream_tls = mesh_tls
            .map(|t| crate::upstream_tls::UpstreamTls::load(t.files_for("edge")).map(Arc::new))
            .transpose()
            .map_err(|e| CatalogError(format!("mesh_tls: {e}")))?;
        let clusters: HashMap<String, Arc<Cluster>> =
            config.clusters.iter().map(|c| (c.name.clone(), Arc::new(Cluster::new(c, &config.outlier)))).collect();
        let catalog = Catalog::build(&config, &clusters)?;
        let auth = config
            .auth
            .clone()
            .map(|a| crate::auth::Authenticator::new(a).map(Arc::new))
            .transpose()
            .map_err(|e| CatalogError(format!("edge.auth: {e}")))?;
        Ok(Arc::new(Self { config, clusters, catalog, requests: Default::default(), failures: Default::default(), auth, upstream_tls }))
    }

    /// The state of `new`, built next to this one: unchanged clusters and routes are carried
    /// over whole (health, ejections, breakers, buckets, slots), changed clusters keep the
    /// state of the instances they still have. Listeners, threads, public TLS and
    /// authentication need a restart: they keep their running values and are reported.
    pub fn following(&self, mut new: EdgeConfig) -> Result<(Arc<Self>, Changes), CatalogError> {
        let old = &self.config;
        let mut changes = Changes::default();
        let c = &mut changes;
        c.restart_if("edge.listen", new.listen != old.listen);
        c.restart_if("edge.admin_listen", new.admin_listen != old.admin_listen);
        c.restart_if("edge.threads", new.threads != old.threads);
        c.restart_if("edge.tls", new.tls != old.tls);
        c.restart_if("edge.auth", new.auth != old.auth);
        (new.listen, new.admin_listen, new.threads) = (old.listen, old.admin_listen, old.threads);
        new.tls.clone_from(&old.tls);
        new.auth.clone_from(&old.auth);

        c.applied_if("edge.max_body_bytes", new.max_body_bytes != old.max_body_bytes);
        c.applied_if("edge.connect_timeout", new.connect_timeout != old.connect_timeout);
        c.applied_if("edge.request_timeout", new.request_timeout != old.request_timeout);
        c.applied_if("edge.client_read_timeout", new.client_read_timeout != old.client_read_timeout);
        c.applied_if("edge.body_read_deadline", new.body_read_deadline != old.body_read_deadline);
        c.applied_if("edge.descriptor_sets", new.descriptor_sets != old.descriptor_sets);
        c.applied_if("edge.health", new.health != old.health);
        c.applied_if("edge.outlier", new.outlier != old.outlier);
        c.applied_if("edge.transcoding", new.transcoding != old.transcoding);
        c.applied_if("edge.reload_on_change", new.reload_on_change != old.reload_on_change);
        for cl in &new.clusters {
            c.applied_if(&format!("edge.clusters[{}]", cl.name), old.cluster(&cl.name) != Some(cl));
        }
        for cl in old.clusters.iter().filter(|cl| new.cluster(&cl.name).is_none()) {
            c.applied.push(format!("edge.clusters[{}] (removed)", cl.name));
        }
        let route = |cfg: &EdgeConfig, service: &str| cfg.routes.iter().find(|r| r.service == service).cloned();
        for r in &new.routes {
            c.applied_if(&format!("edge.routes[{}]", r.service), route(old, &r.service).as_ref() != Some(r));
        }
        for r in old.routes.iter().filter(|r| route(&new, &r.service).is_none()) {
            c.applied.push(format!("edge.routes[{}] (removed)", r.service));
        }

        let clusters: HashMap<String, Arc<Cluster>> = new
            .clusters
            .iter()
            .map(|c| {
                let before = self.clusters.get(&c.name);
                let cluster = match before {
                    Some(b) if old.cluster(&c.name) == Some(c) && old.outlier == new.outlier => b.clone(),
                    _ => Arc::new(Cluster::following(c, &new.outlier, before.map(|b| &**b))),
                };
                (c.name.clone(), cluster)
            })
            .collect();
        let catalog = Catalog::following(&new, &clusters, Some((old, &self.catalog)))?;
        let state = Self {
            config: new,
            clusters,
            catalog,
            requests: self.requests.clone(),
            failures: self.failures.clone(),
            auth: self.auth.clone(),
            upstream_tls: self.upstream_tls.clone(),
        };
        Ok((Arc::new(state), changes))
    }

    /// Routes in config order.
    pub fn routes_in_order(&self) -> impl Iterator<Item = &Arc<crate::catalog::ServiceRoute>> {
        self.config.routes.iter().filter_map(|r| self.catalog.services.get(&r.service))
    }

    /// Clusters in config order.
    pub fn clusters_in_order(&self) -> impl Iterator<Item = &Arc<Cluster>> {
        self.config.clusters.iter().filter_map(|c| self.clusters.get(&c.name))
    }
}
