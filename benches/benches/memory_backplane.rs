//! In-memory backplane: publish-to-delivery throughput across 3 nodes (one publisher, two
//! subscribed nodes; a delivery is one envelope arriving at one node).
#![allow(missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use backplane_core::{
    Backplane, BackplaneEvent, EnvelopeKind, Protocol, SerializedMessage, Target,
};
use backplane_memory::MemoryBus;
use benches::envelope_run::bench_runtime;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const BATCH: u64 = 10_000;

fn bench(c: &mut Criterion) {
    let runtime = bench_runtime();
    let message = SerializedMessage::new()
        .with(
            Protocol::Json,
            &br#"{"type":1,"target":"ReceiveMessage","arguments":["u","hello"]}"#[..],
        )
        .with(
            Protocol::MessagePack,
            &b"\x1b\x96\x01\x80\xc0\xaeReceiveMessage\x92\xa1u\xa5hello\x90"[..],
        );
    let mut group = c.benchmark_group("memory_backplane");
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function("publish_to_delivery/3_nodes", |b| {
        b.iter_custom(|iterations| {
            runtime.block_on(async {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iterations {
                    elapsed += run_batch(&message).await;
                }
                elapsed
            })
        })
    });
    group.finish();
}

/// Publish `BATCH` envelopes from node 0 and wait until nodes 1 and 2 both received all.
async fn run_batch(message: &SerializedMessage) -> Duration {
    let bus = MemoryBus::new();
    let nodes: Vec<Arc<dyn Backplane>> = (0..3)
        .map(|_| Arc::new(bus.node()) as Arc<dyn Backplane>)
        .collect();
    let mut receivers = Vec::new();
    for node in &nodes[1..] {
        let mut subscription = node.subscribe("bench").await.unwrap();
        receivers.push(tokio::spawn(async move {
            let mut received = 0;
            while received < BATCH {
                if let Some(BackplaneEvent::Envelope(_)) = subscription.recv().await {
                    received += 1;
                }
            }
        }));
    }
    let start = Instant::now();
    // Published from a runtime task, as a server's hub methods publish (not from
    // `block_on`'s thread, where every wake-up of a receiver would cross threads).
    let publisher = nodes[0].clone();
    let message = message.clone();
    tokio::spawn(async move {
        for _ in 0..BATCH {
            let kind = EnvelopeKind::Invocation {
                target: Target::All,
                message: message.clone(),
            };
            publisher.publish("bench", kind).await.unwrap();
        }
    })
    .await
    .unwrap();
    for receiver in receivers {
        receiver.await.unwrap();
    }
    start.elapsed()
}

criterion_group!(benches, bench);
criterion_main!(benches);
