//! The backplane conformance suite, run against the in-memory backplane.

use std::sync::Arc;

use backplane_core::Backplane;
use backplane_memory::MemoryBus;

async fn cluster(nodes: usize) -> Vec<Arc<dyn Backplane>> {
    MemoryBus::cluster(nodes)
}

backplane_core::backplane_conformance_tests!(cluster);
