//! The backplane conformance suite, run against the in-memory backplane.

use std::sync::Arc;

use backplane_core::Backplane;
use backplane_memory::MemoryBus;

async fn cluster(nodes: usize) -> Vec<Arc<dyn Backplane>> {
    MemoryBus::cluster(nodes)
}

backplane_core::backplane_conformance_tests!(cluster);

/// Shutdown must not wait forever for a publish blocked on a subscriber that never reads.
#[tokio::test]
async fn shutdown_is_not_blocked_by_a_full_subscriber_queue() {
    use backplane_core::{EnvelopeKind, Protocol, SerializedMessage, Target};

    let bus = MemoryBus::with_capacity(1);
    let (publisher, stalled) = (Arc::new(bus.node()), bus.node());
    let _never_read = stalled.subscribe("hub").await.unwrap(); // holds Connected: full
    let message = SerializedMessage::new().with(Protocol::Json, &b"x"[..]);
    let kind = EnvelopeKind::Invocation {
        target: Target::All,
        message,
    };
    let blocked = tokio::spawn({
        let publisher = publisher.clone();
        async move { publisher.publish("hub", kind).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(!blocked.is_finished(), "the publish should wait for room");
    tokio::time::timeout(std::time::Duration::from_secs(5), publisher.shutdown())
        .await
        .expect("shutdown waited for the blocked publish")
        .unwrap();
    let result = blocked.await.unwrap();
    assert!(
        matches!(result, Err(backplane_core::BackplaneError::Shutdown)),
        "got {result:?}"
    );
}
