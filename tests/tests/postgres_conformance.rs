//! The backplane conformance suite against real PostgreSQL, each cluster on a fresh schema
//! that is dropped when the case shuts its last node down.

use std::sync::Arc;

use backplane_core::{Backplane, ClusterSecret, NodeId};
use backplane_postgres::SynchronousCommit;
use tests::TestSchema;

/// A fresh cluster on its own schema. `synchronous_commit` is off: the suite checks
/// delivery semantics, not crash durability, and one of its cases awaits 10,000 commits
/// one after another, each of which would otherwise wait for a WAL flush on a busy disk.
/// The fault tests run with the default (`NotifyBeforeFlush`).
async fn cluster(nodes: usize) -> Vec<Arc<dyn Backplane>> {
    cluster_with(nodes, None).await
}

/// A fresh cluster as [`cluster`] builds it, its nodes sharing `secret` if given.
async fn cluster_with(nodes: usize, secret: Option<ClusterSecret>) -> Vec<Arc<dyn Backplane>> {
    let schema = TestSchema::create("conformance").await;
    let started = schema
        .nodes_with(nodes, |options| {
            options
                .synchronous_commit(SynchronousCommit::Off)
                .cluster_secret(secret.clone())
        })
        .await
        .into_iter()
        .map(|node| node as Arc<dyn Backplane>)
        .collect();
    // Passing cases leave nothing behind (a failing case's schema is swept by a later run).
    backplane_core::testkit::scoped(started, move || schema.drop())
}

backplane_core::backplane_conformance_tests!(cluster, cut = cut_listener);

/// The whole suite again with a cluster secret: signed envelopes, tombstones and
/// notifications behave exactly as plain ones.
mod with_cluster_secret {
    use super::*;

    async fn cluster(nodes: usize) -> Vec<Arc<dyn Backplane>> {
        let secret = ClusterSecret::new("conformance cluster secret, 32 b").unwrap();
        cluster_with(nodes, Some(secret)).await
    }

    async fn cut_listener(node: NodeId) {
        super::cut_listener(node).await;
    }

    backplane_core::backplane_conformance_tests!(cluster, cut = cut_listener);
}

/// The repair cases' fault hook: terminate the node's LISTEN connection on the server.
async fn cut_listener(node: NodeId) {
    tests::terminate("listener", node).await;
}
