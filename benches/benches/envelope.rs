//! Envelope encode/decode (postcard) for a small and a 16 KiB payload.
#![allow(missing_docs)]

use std::hint::black_box;

use backplane_core::{
    ConnectionId, Envelope, EnvelopeKind, NodeId, Protocol, SerializedMessage, Target,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn envelope(payload_len: usize) -> Envelope {
    let json: Vec<u8> = (0..payload_len).map(|i| b'a' + (i % 26) as u8).collect();
    let msgpack: Vec<u8> = (0..payload_len).map(|i| i as u8).collect();
    Envelope {
        origin: NodeId::random(),
        seq: 123_456,
        hub: "chathub".into(),
        destination: None,
        kind: EnvelopeKind::Invocation {
            target: Target::GroupExcept {
                group: "room-42".into(),
                excluded: vec![ConnectionId::from("Yf3kq0Q2rX1tYw9Zl4mVxA")],
            },
            message: SerializedMessage::new()
                .with(Protocol::Json, json)
                .with(Protocol::MessagePack, msgpack),
        },
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("envelope");
    for (name, len) in [("small", 64), ("16KiB", 16 * 1024)] {
        let envelope = envelope(len);
        let encoded = envelope.encode();
        group.throughput(Throughput::Bytes(encoded.len() as u64));
        let mut buf = Vec::with_capacity(encoded.len());
        group.bench_function(format!("encode/{name}"), |b| {
            b.iter(|| {
                buf.clear();
                black_box(&envelope).encode_into(&mut buf);
                black_box(buf.len())
            })
        });
        group.bench_function(format!("decode/{name}"), |b| {
            b.iter(|| Envelope::decode(black_box(&encoded)).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
