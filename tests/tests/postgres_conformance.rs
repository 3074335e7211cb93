//! The backplane conformance suite against real PostgreSQL, each cluster on a fresh schema.

use std::sync::Arc;

use backplane_core::Backplane;
use tests::TestSchema;

async fn cluster(nodes: usize) -> Vec<Arc<dyn Backplane>> {
    TestSchema::create("conformance").await.cluster(nodes).await
}

backplane_core::backplane_conformance_tests!(cluster);
