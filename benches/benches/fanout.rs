//! HubLifetimeManager fan-out: one `send_group` to a group of 1, 100 and 10,000 local
//! connections, including serializing the message once per hub protocol, into the send
//! queues `hub-server` ships.
//!
//! Each connection is a real `hub-server` outbox (through its `bench_internals` module, which
//! exists for this) registered as the connection's `ConnectionSink`, with the server's
//! default capacity (1024 frames). Half the connections speak JSON, half MessagePack.
//! The message is encoded by the server's own `serialize_invocation`.
//!
//! Between timed blocks every connection's writer is **parked**: its receiver was polled
//! until it returned `Pending`, with a waker of its own, exactly as the server's write
//! loop waits for work. A timed block is one send, so every delivery finds its writer
//! parked and pays for waking it (taking the waker out of the queue and calling it). The
//! waker only counts its calls (`std::task::Wake`): what the scheduler then does to run
//! the woken writer is the writer's cost, not the fan-out's, and is not timed. After each
//! block the queues are drained untimed the way the write loop drains them (`recv`, then
//! `try_recv` until empty, then `recv` again until `Pending`), so each writer releases
//! what its buffers grew to and parks again, as in production.
//!
//! The reported time is **per delivery**: criterion's "iteration" is one delivery to one
//! connection, so `time` reads directly as nanoseconds per delivery. For the group of 1
//! that includes starting and stopping the clock once per send (tens of nanoseconds).
//!
//! The arguments carry a counting `Serialize` value; after each group the bench asserts
//! that every send serialized it exactly twice (once per protocol) whatever the group
//! size, that every connection received every message, and that every connection was
//! woken once per send, and prints the proof.
#![allow(missing_docs)]

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use backplane_core::{
    Backplane, BackplaneHubLifetimeManager, HubLifetimeManager, LocalConnection, Protocol,
};
use backplane_memory::MemoryBackplane;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hub_server::bench_internals::{Outbox, OutboxReceiver, Outgoing, serialize_invocation};
use serde::{Serialize, Serializer};

/// `HubOptions::send_queue_bytes`'s default (1 MiB).
const QUEUE_CAPACITY: usize = 1024 * 1024;

const USER: &str = "User_4821";
const TEXT: &str = "The quick brown fox jumps over the lazy dog, twice, to be sure.";

/// A writer's waker: counts how often the connection's writer was woken.
#[derive(Debug, Default)]
struct CountingWaker {
    wakes: AtomicUsize,
}

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::Relaxed);
    }
}

/// One connection's writer side: the outbox's receiving end and the writer's waker.
#[derive(Debug)]
struct Writer {
    receiver: OutboxReceiver,
    /// Counts the wakes; `waker` wakes it.
    counter: Arc<CountingWaker>,
    waker: Waker,
}

impl Writer {
    /// Take every queued frame as the server's write loop does (`recv`, then `try_recv`
    /// until empty), until `recv` returns `Pending`: the writer has then released what its
    /// buffers grew to and is parked, its waker stored in the outbox. How many frames it
    /// took.
    fn drain_and_park(&mut self) -> usize {
        let mut cx = Context::from_waker(&self.waker);
        let mut frames = 0;
        loop {
            match pin!(self.receiver.recv()).poll(&mut cx) {
                Poll::Ready(Some(item)) => frames += frame_count(&item),
                Poll::Ready(None) => panic!("the outbox is gone while the hub holds it"),
                Poll::Pending => return frames,
            }
            while let Some(item) = self.receiver.try_recv() {
                frames += frame_count(&item);
            }
        }
    }
}

/// 1 for a hub message frame; nothing else is ever queued here.
fn frame_count(item: &Outgoing) -> usize {
    match item {
        Outgoing::Frame(_) => 1,
        Outgoing::Reply(_) | Outgoing::Close(_) => {
            panic!("nothing but fanned-out frames is queued in this bench")
        }
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

/// The hub's send path: encode once per protocol (as the hub does), then `send_group`.
async fn send(
    manager: &BackplaneHubLifetimeManager,
    group: &str,
    count: &AtomicUsize,
) -> Result<(), Box<dyn std::error::Error>> {
    let message = serialize_invocation("ReceiveMessage", &(USER, Counted { text: TEXT, count }))?;
    manager.send_group(group, message).await?;
    Ok(())
}

/// A hub with `connections` members of the group "room", and their parked writers.
async fn hub_with(connections: usize) -> (BackplaneHubLifetimeManager, Vec<Writer>) {
    let backplane: Arc<dyn Backplane> = Arc::new(MemoryBackplane::new());
    let manager = BackplaneHubLifetimeManager::new("bench", backplane)
        .await
        .expect("manager");
    let mut writers = Vec::with_capacity(connections);
    for i in 0..connections {
        let protocol = if i % 2 == 0 {
            Protocol::Json
        } else {
            Protocol::MessagePack
        };
        let (outbox, receiver) = Outbox::new(protocol, QUEUE_CAPACITY);
        let id = format!("connection-{i}");
        manager
            .on_connected(LocalConnection::new(id.as_str(), None, Arc::new(outbox)))
            .await
            .expect("register");
        manager
            .add_to_group(&id.as_str().into(), "room")
            .await
            .expect("join");
        let counter = Arc::new(CountingWaker::default());
        let mut writer = Writer {
            receiver,
            waker: Waker::from(counter.clone()),
            counter,
        };
        assert_eq!(writer.drain_and_park(), 0, "nothing was sent yet");
        writers.push(writer);
    }
    (manager, writers)
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
        let (manager, mut writers) = runtime.block_on(hub_with(connections));
        let serializations = AtomicUsize::new(0);
        let mut sends = 0usize;
        let mut delivered = 0usize;
        group.bench_function(format!("send_group/{connections}"), |b| {
            b.iter_custom(|deliveries| {
                let wanted = usize::try_from(deliveries).unwrap_or(usize::MAX);
                let total_sends = wanted.div_ceil(connections).max(1);
                let mut elapsed = Duration::ZERO;
                for _ in 0..total_sends {
                    // One send per timed block: every writer is parked when it starts.
                    let started = Instant::now();
                    runtime.block_on(async {
                        send(&manager, "room", &serializations).await.expect("send");
                    });
                    elapsed += started.elapsed();
                    for writer in &mut writers {
                        delivered += writer.drain_and_park();
                    }
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
        let wakes: usize = writers
            .iter()
            .map(|writer| writer.counter.wakes.load(Ordering::Relaxed))
            .sum();
        assert_eq!(
            wakes,
            sends * connections,
            "every delivery woke its parked writer"
        );
        eprintln!(
            "fanout/send_group/{connections}: {sends} sends, {counted} serializations \
             ({:.1} per send: one JSON + one MessagePack), {delivered} deliveries \
             ({connections} per send), {wakes} writer wakes (one per delivery)",
            counted as f64 / sends as f64
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
