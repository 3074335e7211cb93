//! The backplane conformance suite, repair cases included, against the Redis on
//! 127.0.0.1:6379 (or `BACKPLANE_TEST_REDIS_URL`), each cluster on its own key prefix.

mod support;

use std::sync::Arc;

use backplane_core::{Backplane, NodeId};

async fn cluster(nodes: usize) -> Vec<Arc<dyn Backplane>> {
    let options = support::options(&support::redis_url(), "conformance");
    support::scoped_cluster(&options, nodes).await
}

/// The repair cases' fault hook: kill the node's reading connections on the server.
async fn cut_readers(node: NodeId) {
    support::kill_readers(&support::redis_url(), node).await;
}

backplane_core::backplane_conformance_tests!(cluster, cut = cut_readers);

/// The whole suite again with a cluster secret (signed envelopes).
mod with_cluster_secret {
    use super::*;

    async fn cluster(nodes: usize) -> Vec<Arc<dyn Backplane>> {
        let mut options = support::options(&support::redis_url(), "conformance");
        options.cluster_secret =
            Some(backplane_core::ClusterSecret::new("conformance cluster secret, 32 b").unwrap());
        support::scoped_cluster(&options, nodes).await
    }

    async fn cut_readers(node: NodeId) {
        super::cut_readers(node).await;
    }

    backplane_core::backplane_conformance_tests!(cluster, cut = cut_readers);
}
