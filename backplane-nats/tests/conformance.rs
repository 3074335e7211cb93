//! The backplane conformance suite, repair cases included, against the NATS on
//! 127.0.0.1:4222 (or `BACKPLANE_TEST_NATS_URL`), each cluster on its own stream; every
//! node connects through a proxy of its own, which the repair cases' hook cuts.

mod support;

use std::sync::Arc;

use backplane_core::{Backplane, NodeId};

async fn cluster(nodes: usize) -> Vec<Arc<dyn Backplane>> {
    support::proxied_cluster("conformance", nodes).await
}

/// The repair cases' fault hook: drop the node's connection to NATS.
async fn cut_connection(node: NodeId) {
    support::cut(node);
}

backplane_core::backplane_conformance_tests!(cluster, cut = cut_connection);

/// The whole suite again with a cluster secret (signed envelopes).
mod with_cluster_secret {
    use super::*;

    async fn cluster(nodes: usize) -> Vec<Arc<dyn Backplane>> {
        let secret =
            backplane_core::ClusterSecret::new("conformance cluster secret, 32 b").unwrap();
        support::proxied_cluster_with("conformance", nodes, Some(secret)).await
    }

    async fn cut_connection(node: NodeId) {
        super::cut_connection(node).await;
    }

    backplane_core::backplane_conformance_tests!(cluster, cut = cut_connection);
}
