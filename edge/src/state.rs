//! The edge's shared, immutable-after-start state: config, clusters and catalog.

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
    pub requests: crate::metrics::RequestMetrics,
    /// Present when the config has `[edge.auth]`.
    pub auth: Option<crate::auth::Authenticator>,
    /// mTLS to the upstreams, when the config has `[mesh_tls]`.
    pub upstream_tls: Option<crate::upstream_tls::UpstreamTls>,
}

impl EdgeState {
    pub fn build(config: EdgeConfig) -> Result<Arc<Self>, CatalogError> {
        Self::build_with(config, None)
    }

    /// [`EdgeState::build`], with the mesh's mTLS settings.
    pub fn build_with(config: EdgeConfig, mesh_tls: Option<&paymesh_core::config::MeshTlsConfig>) -> Result<Arc<Self>, CatalogError> {
        let upstream_tls = mesh_tls
            .map(|t| crate::upstream_tls::UpstreamTls::load(t.files_for("edge")))
            .transpose()
            .map_err(|e| CatalogError(format!("mesh_tls: {e}")))?;
        let clusters: HashMap<String, Arc<Cluster>> =
            config.clusters.iter().map(|c| (c.name.clone(), Arc::new(Cluster::new(c, &config.outlier)))).collect();
        let catalog = Catalog::build(&config, &clusters)?;
        let auth =
            config.auth.clone().map(crate::auth::Authenticator::new).transpose().map_err(|e| CatalogError(format!("edge.auth: {e}")))?;
        Ok(Arc::new(Self { config, clusters, catalog, requests: Default::default(), auth, upstream_tls }))
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
