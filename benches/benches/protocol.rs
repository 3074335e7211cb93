//! Hub protocol encode and decode, JSON and MessagePack: a chat invocation as the server
//! encodes it once per protocol, and as it decodes and binds a client's invocation.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hub_protocol::{BytesMut, Decoder, HubMessage, Protocol, encode_invocation};

const USER: &str = "User_4821";
const TEXT: &str = "The quick brown fox jumps over the lazy dog, twice, to be sure.";

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("hub_protocol");
    group.throughput(Throughput::Elements(1));
    for protocol in Protocol::ALL {
        let mut buf = BytesMut::with_capacity(256);
        group.bench_function(format!("encode_invocation/{protocol}"), |b| {
            b.iter(|| {
                buf.clear();
                encode_invocation(
                    protocol,
                    &mut buf,
                    None,
                    black_box("ReceiveMessage"),
                    black_box(&(USER, TEXT)),
                )
                .unwrap();
                black_box(buf.len())
            })
        });

        let mut frame = BytesMut::new();
        encode_invocation(
            protocol,
            &mut frame,
            Some("17"),
            "SendMessage",
            &(USER, TEXT),
        )
        .unwrap();
        let frame = frame.freeze();
        group.bench_function(format!("decode_and_bind/{protocol}"), |b| {
            let mut decoder = Decoder::new(protocol, 32 * 1024);
            b.iter(|| {
                let mut input = BytesMut::from(&frame[..]);
                let Some(HubMessage::Invocation(invocation)) = decoder.decode(&mut input).unwrap()
                else {
                    unreachable!("the frame is an invocation")
                };
                let user: String = invocation.arguments.deserialize(0).unwrap();
                let text: String = invocation.arguments.deserialize(1).unwrap();
                black_box((user, text))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
