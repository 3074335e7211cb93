//! The backplane conformance suite against real PostgreSQL, each cluster on a fresh schema.

use std::sync::Arc;

use backplane_core::Backplane;
use backplane_postgres::SynchronousCommit;
use tests::TestSchema;

/// A fresh cluster on its own schema. `synchronous_commit` is off: the suite checks
/// delivery semantics, not crash durability, and one of its cases awaits 10,000 commits
/// one after another, each of which would otherwise wait for a WAL flush on a busy disk.
/// The fault tests run with the default (on).
async fn cluster(nodes: usize) -> Vec<Arc<dyn Backplane>> {
    let schema = TestSchema::create("conformance").await;
    schema
        .nodes_with(nodes, |options| {
            options.synchronous_commit(SynchronousCommit::Off)
        })
        .await
        .into_iter()
        .map(|node| node as Arc<dyn Backplane>)
        .collect()
}

backplane_core::backplane_conformance_tests!(cluster);
