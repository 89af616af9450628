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
}

impl EdgeState {
    pub fn build(config: EdgeConfig) -> Result<Arc<Self>, CatalogError> {
        let clusters: HashMap<String, Arc<Cluster>> =
            config.clusters.iter().map(|c| (c.name.clone(), Arc::new(Cluster::new(c, &config.outlier)))).collect();
        let catalog = Catalog::build(&config, &clusters)?;
        let auth =
            config.auth.clone().map(crate::auth::Authenticator::new).transpose().map_err(|e| CatalogError(format!("edge.auth: {e}")))?;
        Ok(Arc::new(Self { config, clusters, catalog, requests: Default::default(), auth }))
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
