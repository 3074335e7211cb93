//! The backplane conformance suite against real PostgreSQL, each cluster on a fresh schema
//! that is dropped when the case shuts its last node down.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use backplane_core::{
    Backplane, BackplaneError, ClusterSecret, EnvelopeKind, NodeId, Subscription,
};
use backplane_postgres::{PostgresBackplane, SynchronousCommit};
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
        .await;
    let shared = Arc::new(ClusterSchema {
        running: AtomicUsize::new(started.len()),
        schema: tokio::sync::Mutex::new(Some(schema)),
    });
    started
        .into_iter()
        .map(|node| {
            Arc::new(SchemaScopedNode {
                node,
                cluster: shared.clone(),
                shut_down: AtomicBool::new(false),
            }) as Arc<dyn Backplane>
        })
        .collect()
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

/// The schema of one case's cluster, and how many of its nodes still run.
#[derive(Debug)]
struct ClusterSchema {
    running: AtomicUsize,
    schema: tokio::sync::Mutex<Option<TestSchema>>,
}

/// A node that drops its cluster's schema when it is the last to shut down, so passing
/// cases leave nothing behind (a failing case's schema is swept by a later run).
#[derive(Debug)]
struct SchemaScopedNode {
    node: Arc<PostgresBackplane>,
    cluster: Arc<ClusterSchema>,
    /// Counted once even if a case shuts the node down twice.
    shut_down: AtomicBool,
}

#[async_trait]
impl Backplane for SchemaScopedNode {
    fn node_id(&self) -> NodeId {
        self.node.node_id()
    }

    async fn publish(&self, hub: &str, kind: EnvelopeKind) -> Result<(), BackplaneError> {
        self.node.publish(hub, kind).await
    }

    async fn send_to(
        &self,
        node: NodeId,
        hub: &str,
        kind: EnvelopeKind,
    ) -> Result<(), BackplaneError> {
        self.node.send_to(node, hub, kind).await
    }

    async fn subscribe(&self, hub: &str) -> Result<Subscription, BackplaneError> {
        self.node.subscribe(hub).await
    }

    fn envelopes_rejected(&self) -> u64 {
        self.node.envelopes_rejected()
    }

    async fn shutdown(&self) -> Result<(), BackplaneError> {
        let result = self.node.shutdown().await;
        if !self.shut_down.swap(true, Ordering::AcqRel)
            && self.cluster.running.fetch_sub(1, Ordering::AcqRel) == 1
            && let Some(schema) = self.cluster.schema.lock().await.take()
        {
            schema.drop().await;
        }
        result
    }
}
