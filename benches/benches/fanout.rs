//! HubLifetimeManager fan-out: one `send_group` to a group of 1, 100 and 10,000 local
//! connections, including serializing the message once per hub protocol.
//!
//! Each connection is an in-process [`ConnectionSink`] shaped like the server's outbox: a
//! bounded queue of `Bytes` (capacity 1024 like `HubOptions::send_queue_capacity`) that
//! never waits (a full queue refuses), drained between timed blocks so it never fills.
//! Half the connections speak JSON, half MessagePack.
//!
//! The reported time is **per delivery**: criterion's "iteration" is one delivery to one
//! connection, so `time` reads directly as nanoseconds per delivery.
//!
//! The arguments carry a counting `Serialize` value; after each group the bench asserts
//! that every send serialized it exactly twice (once per protocol) whatever the group
//! size, and that every connection received every message, and prints the proof.
#![allow(missing_docs)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;
use std::time::{Duration, Instant};

use backplane_core::{
    Backplane, BackplaneHubLifetimeManager, ConnectionSink, DeliveryError, HubLifetimeManager,
    LocalConnection, Protocol, SerializedMessage,
};
use backplane_memory::MemoryBackplane;
use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hub_protocol::encode_invocation;
use serde::{Serialize, Serializer};

/// The server's default per-connection send queue capacity.
const QUEUE_CAPACITY: usize = 1024;

/// Most sends timed in one block before the queues are drained (stays under capacity).
const MAX_BLOCK: usize = 512;

const USER: &str = "User_4821";
const TEXT: &str = "The quick brown fox jumps over the lazy dog, twice, to be sure.";

/// A connection's sending side, shaped like the server's outbox (`hub-server`'s
/// `outbox.rs`): a bounded `VecDeque` of frames under a mutex in a block shared with the
/// writer, the parked writer's waker beside it, never waiting.
#[derive(Debug)]
struct QueueSink {
    protocol: Protocol,
    shared: Arc<QueueShared>,
}

#[derive(Debug)]
struct QueueShared {
    capacity: usize,
    state: Mutex<QueueState>,
}

#[derive(Debug, Default)]
struct QueueState {
    items: VecDeque<Bytes>,
    waiter: Option<Waker>,
    receiver_gone: bool,
}

impl ConnectionSink for QueueSink {
    fn deliver(&self, message: &SerializedMessage) -> Result<(), DeliveryError> {
        let frame = message
            .get(self.protocol)
            .ok_or(DeliveryError::MissingEncoding(self.protocol))?;
        let waiter = {
            let mut state = self.shared.state.lock().unwrap();
            if state.receiver_gone {
                return Err(DeliveryError::Closed);
            }
            if state.items.len() >= self.shared.capacity {
                return Err(DeliveryError::QueueFull);
            }
            state.items.push_back(frame.clone());
            state.waiter.take()
        };
        if let Some(waker) = waiter {
            waker.wake();
        }
        Ok(())
    }
}

/// A string argument that counts how often it is serialized.
struct Counted<'a> {
    text: &'a str,
    count: &'a AtomicUsize,
}

impl Serialize for Counted<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.count.fetch_add(1, Ordering::Relaxed);
        serializer.serialize_str(self.text)
    }
}

/// The hub's send path: encode once per protocol into one allocation, then `send_group`.
async fn send(
    manager: &BackplaneHubLifetimeManager,
    group: &str,
    count: &AtomicUsize,
) -> Result<(), Box<dyn std::error::Error>> {
    let arguments = (USER, Counted { text: TEXT, count });
    // As hub-server's `serialize_invocation` does.
    let mut buf = BytesMut::with_capacity(512 + 2 * "ReceiveMessage".len());
    encode_invocation(Protocol::Json, &mut buf, None, "ReceiveMessage", &arguments)?;
    let json = buf.split().freeze();
    buf.reserve(json.len() + 16);
    encode_invocation(
        Protocol::MessagePack,
        &mut buf,
        None,
        "ReceiveMessage",
        &arguments,
    )?;
    let message = SerializedMessage::new()
        .with(Protocol::Json, json)
        .with(Protocol::MessagePack, buf.freeze());
    manager.send_group(group, message).await?;
    Ok(())
}

/// A hub with `connections` members of the group "room", and their queues.
async fn hub_with(connections: usize) -> (BackplaneHubLifetimeManager, Vec<Arc<QueueShared>>) {
    let backplane: Arc<dyn Backplane> = Arc::new(MemoryBackplane::new());
    let manager = BackplaneHubLifetimeManager::new("bench", backplane)
        .await
        .expect("manager");
    let mut receivers = Vec::with_capacity(connections);
    for i in 0..connections {
        let protocol = if i % 2 == 0 {
            Protocol::Json
        } else {
            Protocol::MessagePack
        };
        let shared = Arc::new(QueueShared {
            capacity: QUEUE_CAPACITY,
            state: Mutex::new(QueueState::default()),
        });
        let id = format!("connection-{i}");
        manager
            .on_connected(LocalConnection::new(
                id.as_str(),
                None,
                Arc::new(QueueSink {
                    protocol,
                    shared: shared.clone(),
                }),
            ))
            .await
            .expect("register");
        manager
            .add_to_group(&id.as_str().into(), "room")
            .await
            .expect("join");
        receivers.push(shared);
    }
    (manager, receivers)
}

/// Empties every queue, as each connection's writer would; returns how many frames were
/// in them.
fn drain(receivers: &mut [Arc<QueueShared>]) -> usize {
    let mut frames = 0;
    for shared in receivers {
        let mut state = shared.state.lock().unwrap();
        frames += state.items.len();
        state.items.clear();
    }
    frames
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("fanout");
    // One criterion iteration is one delivery.
    group.throughput(Throughput::Elements(1));
    for connections in [1usize, 100, 10_000] {
        let (manager, mut receivers) = runtime.block_on(hub_with(connections));
        let serializations = AtomicUsize::new(0);
        let mut sends = 0usize;
        let mut delivered = 0usize;
        let block = (4096 / connections).clamp(1, MAX_BLOCK);
        group.bench_function(format!("send_group/{connections}"), |b| {
            b.iter_custom(|deliveries| {
                let wanted = usize::try_from(deliveries).unwrap_or(usize::MAX);
                let total_sends = wanted.div_ceil(connections).max(1);
                let mut elapsed = Duration::ZERO;
                let mut done = 0;
                while done < total_sends {
                    let this_block = block.min(total_sends - done);
                    let started = Instant::now();
                    runtime.block_on(async {
                        for _ in 0..this_block {
                            send(&manager, "room", &serializations).await.expect("send");
                        }
                    });
                    elapsed += started.elapsed();
                    done += this_block;
                    delivered += drain(&mut receivers);
                }
                sends += total_sends;
                // Scale to exactly `deliveries` deliveries.
                elapsed.mul_f64(deliveries as f64 / (total_sends * connections) as f64)
            })
        });
        let counted = serializations.load(Ordering::Relaxed);
        assert_eq!(
            counted,
            2 * sends,
            "expected exactly one serialization per protocol per send"
        );
        assert_eq!(
            delivered,
            sends * connections,
            "every connection receives every message"
        );
        eprintln!(
            "fanout/send_group/{connections}: {sends} sends, {counted} serializations \
             ({:.1} per send: one JSON + one MessagePack), {delivered} deliveries \
             ({connections} per send)",
            counted as f64 / sends as f64
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
