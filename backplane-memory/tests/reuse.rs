//! A node reuses the allocations of envelopes its subscribers have dropped; these tests
//! pin down that reuse never changes an envelope someone still holds, that it happens,
//! and what it keeps alive.

use std::sync::Arc;

use backplane_core::{
    Backplane, BackplaneEvent, Envelope, EnvelopeKind, Protocol, SerializedMessage, Subscription,
    Target,
};
use backplane_memory::MemoryBus;

fn message(text: &str) -> EnvelopeKind {
    EnvelopeKind::Invocation {
        target: Target::All,
        message: SerializedMessage::new().with(Protocol::Json, text.as_bytes().to_vec()),
    }
}

fn text_of(envelope: &Envelope) -> Vec<u8> {
    match &envelope.kind {
        EnvelopeKind::Invocation { message, .. } => {
            message.get(Protocol::Json).expect("a JSON frame").to_vec()
        }
        other => panic!("unexpected kind {other:?}"),
    }
}

async fn next(subscription: &mut Subscription) -> Arc<Envelope> {
    loop {
        match subscription.recv().await.expect("subscription ended") {
            BackplaneEvent::Envelope(envelope) => return envelope,
            BackplaneEvent::Connected => continue,
            other => panic!("unexpected event {other:?}"),
        }
    }
}

#[tokio::test]
async fn an_envelope_a_subscriber_holds_is_never_overwritten_nor_blocks_reuse() {
    let bus = MemoryBus::new();
    let (a, b) = (bus.node(), bus.node());
    let mut from_a = b.subscribe("hub").await.unwrap();
    a.publish("hub", message("first")).await.unwrap();
    let held = next(&mut from_a).await;
    // Blocks the size of an envelope's allocation, taken after each envelope is dropped,
    // so that an envelope whose block went back to the allocator is unlikely to come
    // back at the same address: repeated addresses mean reuse.
    let block = 2 * size_of::<usize>() + size_of::<Envelope>();
    let mut decoys: Vec<Vec<u8>> = Vec::new();
    let mut addresses = std::collections::HashSet::new();
    // Far more publishes than a node keeps for reuse, each received and dropped.
    for i in 0..1_000 {
        decoys.push(Vec::with_capacity(block));
        a.publish("hub", message(&format!("message {i}")))
            .await
            .unwrap();
        let envelope = next(&mut from_a).await;
        assert_eq!(envelope.seq, i + 2);
        assert_eq!(text_of(&envelope), format!("message {i}").into_bytes());
        assert!(!Arc::ptr_eq(&envelope, &held));
        addresses.insert(Arc::as_ptr(&envelope) as usize);
    }
    assert_eq!(
        (held.origin, held.seq, held.hub.as_str()),
        (a.node_id(), 1, "hub")
    );
    assert_eq!(text_of(&held), b"first");
    assert!(
        addresses.len() < 100,
        "{} distinct envelopes for 1,000 publishes: one held envelope stopped the reuse of the others",
        addresses.len()
    );
}

#[tokio::test]
async fn dropped_envelopes_are_reused_with_their_new_contents() {
    let bus = MemoryBus::new();
    let (a, b) = (bus.node(), bus.node());
    let mut from_a = b.subscribe("a hub").await.unwrap();
    a.publish("a hub", message("0")).await.unwrap();
    let mut previous = Arc::as_ptr(&next(&mut from_a).await);
    // Blocks the size of an `Arc<Envelope>`'s allocation, taken after each envelope is
    // dropped: had the envelope's block gone back to the allocator, one of these would
    // be likely to get it, and the next envelope would not be at the same address.
    let block = 2 * size_of::<usize>() + size_of::<Envelope>();
    let mut decoys: Vec<Vec<u8>> = Vec::new();
    for i in 1..100u64 {
        decoys.push(Vec::with_capacity(block));
        a.publish("a hub", message(&i.to_string())).await.unwrap();
        let envelope = next(&mut from_a).await;
        assert_eq!((envelope.seq, envelope.hub.as_str()), (i + 1, "a hub"));
        assert_eq!(text_of(&envelope), i.to_string().into_bytes());
        assert_eq!(
            Arc::as_ptr(&envelope),
            previous,
            "the envelope dropped before publish {i} was not reused"
        );
        previous = Arc::as_ptr(&envelope);
    }
}

#[tokio::test]
async fn large_envelopes_are_not_kept_and_shutdown_releases_the_rest() {
    let bus = MemoryBus::new();
    let (a, b) = (bus.node(), bus.node());
    let mut from_a = b.subscribe("hub").await.unwrap();

    a.publish("hub", message(&"x".repeat(64 * 1024)))
        .await
        .unwrap();
    let large = next(&mut from_a).await;
    assert_eq!(
        Arc::strong_count(&large),
        1,
        "a 64 KiB envelope was kept by the publishing node after delivery"
    );

    a.publish("hub", message("small")).await.unwrap();
    let small = next(&mut from_a).await;
    assert_eq!(
        Arc::strong_count(&small),
        2,
        "a small envelope is kept for reuse"
    );
    a.shutdown().await.unwrap();
    assert_eq!(
        Arc::strong_count(&small),
        1,
        "shutdown left the node holding a delivered envelope"
    );
}
