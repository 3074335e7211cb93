//! An in-process [`Backplane`]: several simulated nodes in one process.
//!
//! Use it for a single server instance (a one-node bus costs a few hundred nanoseconds
//! per publish and nothing else), and in tests that need several nodes without a
//! database. All nodes created from one [`MemoryBus`] see each other; buses are isolated.
//!
//! ```
//! use std::sync::Arc;
//! use backplane_core::{Backplane, BackplaneEvent, EnvelopeKind, Protocol, SerializedMessage, Target};
//! use backplane_memory::MemoryBus;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let bus = MemoryBus::new();
//! let (a, b) = (bus.node(), bus.node());
//! let mut from_a = b.subscribe("chat").await.unwrap();
//! assert!(matches!(from_a.recv().await, Some(BackplaneEvent::Connected)));
//!
//! let message = SerializedMessage::new().with(Protocol::Json, &b"hello\x1e"[..]);
//! a.publish("chat", EnvelopeKind::Invocation { target: Target::All, message }).await.unwrap();
//! match from_a.recv().await {
//!     Some(BackplaneEvent::Envelope(envelope)) => assert_eq!((envelope.origin, envelope.seq), (a.node_id(), 1)),
//!     other => panic!("unexpected {other:?}"),
//! }
//! # }
//! ```
//!
//! # Queue policy
//!
//! Each subscription has a bounded queue ([`MemoryBus::with_capacity`], default
//! [`DEFAULT_CAPACITY`]). When a subscriber's queue is full, `publish` waits for room:
//! nothing is dropped, and a slow node slows its publishers down. Publishes of one node
//! are serialized (that is what keeps per-origin order), so a node blocked on a full
//! queue holds back only its own publishers.
//!
//! # Memory
//!
//! A node keeps up to 128 of the envelopes it delivered, if each encodes to at most
//! 1 KiB ([`Envelope::size_hint`]), and overwrites one in place once no subscriber holds
//! it any more, instead of allocating a new one: subscribers usually drop envelopes on
//! another thread, and freeing there contends with the publisher's allocations for the
//! system allocator's lock. An envelope a subscriber still holds is never changed. So a
//! node keeps the last 128 small messages it published alive (about 128 KiB of encoded
//! bytes, more where a message's bytes share a larger buffer, as a hub server's
//! serialization buffers do) until later publishes overwrite them or it shuts down.

#![forbid(unsafe_code)]

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use backplane_core::sequencing::Sequencer;
use backplane_core::{
    Backplane, BackplaneError, BackplaneEvent, Envelope, EnvelopeKind, NodeId, Subscription, read,
    write,
};

use tokio::sync::{mpsc, watch};

/// Default capacity of each subscription's queue, in events.
pub const DEFAULT_CAPACITY: usize = 4096;

/// How many delivered envelopes a node keeps to reuse their allocations.
const RECYCLE_SLOTS: usize = 128;

/// Envelopes larger than this ([`Envelope::size_hint`]) are not kept for reuse, so an
/// idle node keeps at most `RECYCLE_SLOTS * RECYCLE_MAX_BYTES` of old encoded messages
/// alive (more memory where their bytes are slices of larger buffers).
const RECYCLE_MAX_BYTES: usize = 1024;

/// A set of in-process nodes that see each other.
///
/// Cloning gives another handle to the same bus.
#[derive(Clone)]
pub struct MemoryBus {
    shared: Arc<BusShared>,
}

/// State of the bus shared by its nodes.
struct BusShared {
    /// Subscribers per hub. Behind a lock read on every publish; written only when
    /// subscriptions come and go, so publishes clone an `Arc` and never wait long.
    subscribers: RwLock<HashMap<String, Arc<Vec<Subscriber>>>>,
    /// Capacity of each new subscription's queue.
    capacity: usize,
}

/// One subscription's sending end.
#[derive(Clone)]
struct Subscriber {
    /// The node that subscribed: it must not receive its own envelopes.
    node: NodeId,
    /// Into the subscription's bounded queue.
    events: mpsc::Sender<BackplaneEvent>,
}

impl MemoryBus {
    /// A bus whose subscriptions queue up to [`DEFAULT_CAPACITY`] events.
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }

    /// A bus whose subscriptions queue up to `capacity` events before publishers wait.
    ///
    /// # Panics
    ///
    /// Panics if `capacity` is 0.
    pub fn with_capacity(capacity: usize) -> Self {
        assert!(
            capacity > 0,
            "a memory bus needs a queue capacity of at least 1"
        );
        Self {
            shared: Arc::new(BusShared {
                subscribers: RwLock::new(HashMap::new()),
                capacity,
            }),
        }
    }

    /// A new node on this bus, with a fresh random id.
    pub fn node(&self) -> MemoryBackplane {
        MemoryBackplane {
            id: NodeId::random(),
            bus: self.shared.clone(),
            state: tokio::sync::Mutex::new(NodeState::default()),
            shut_down: AtomicBool::new(false),
            stopping: watch::Sender::new(false),
        }
    }

    /// `nodes` new nodes on a fresh bus, as `Arc<dyn Backplane>` (the shape servers and
    /// the conformance suite use).
    pub fn cluster(nodes: usize) -> Vec<Arc<dyn Backplane>> {
        let bus = Self::new();
        (0..nodes)
            .map(|_| Arc::new(bus.node()) as Arc<dyn Backplane>)
            .collect()
    }
}

impl Default for MemoryBus {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBus")
            .field("capacity", &self.shared.capacity)
            .finish_non_exhaustive()
    }
}

/// One node on a [`MemoryBus`].
pub struct MemoryBackplane {
    /// This node's id.
    id: NodeId,
    /// The bus it publishes on.
    bus: Arc<BusShared>,
    /// Sequence numbers and reusable envelopes. Held across delivery, so envelopes of one
    /// node enter every queue in sequence order.
    state: tokio::sync::Mutex<NodeState>,
    /// Set by shutdown; publishes fail afterwards.
    shut_down: AtomicBool,
    /// Tells a publish waiting for room in a full queue that shutdown has begun.
    stopping: watch::Sender<bool>,
}

/// What a node's publishes share, behind its publish lock.
#[derive(Default)]
struct NodeState {
    /// This node's numbering per hub (the core's).
    sequences: Sequencer,
    /// Envelopes this node delivered, roughly oldest first, kept to be overwritten once
    /// every subscriber has dropped its reference.
    ///
    /// Subscribers usually drop envelopes on another thread than the publisher's. With
    /// the system allocator, every such free then contends for the publisher's heap
    /// arena lock with the publisher's next allocation: in the 3-node benchmark about
    /// half of all CPU time went to that lock before envelopes were reused. Reusing the
    /// allocation on the publisher's side leaves the subscribers only a reference count
    /// to decrement.
    recycle: VecDeque<Arc<Envelope>>,
}

impl NodeState {
    /// An envelope with these contents: the first kept envelope, if no subscriber holds
    /// it any more, overwritten in place (its old contents are dropped here, on the
    /// publisher's side), or a new allocation.
    fn envelope(
        &mut self,
        origin: NodeId,
        seq: u64,
        hub: &str,
        destination: Option<NodeId>,
        kind: EnvelopeKind,
    ) -> Arc<Envelope> {
        if let Some(mut oldest) = self.recycle.pop_front() {
            if let Some(envelope) = Arc::get_mut(&mut oldest) {
                envelope.origin = origin;
                envelope.seq = seq;
                envelope.hub.clear();
                envelope.hub.push_str(hub);
                envelope.destination = destination;
                envelope.kind = kind;
                return oldest;
            }
            // Still held by a subscriber: allocate, and try the next one next time, so
            // one envelope held for long does not stop the reuse of the others.
            self.recycle.push_back(oldest);
        }
        Arc::new(Envelope {
            origin,
            seq,
            hub: hub.to_owned(),
            destination,
            kind,
        })
    }

    /// Keep `envelope` for reuse if it is small and there is room.
    fn keep(&mut self, envelope: &Arc<Envelope>) {
        if self.recycle.len() < RECYCLE_SLOTS && envelope.size_hint() <= RECYCLE_MAX_BYTES {
            self.recycle.push_back(envelope.clone());
        }
    }
}

impl MemoryBackplane {
    /// A single node on its own bus: the backplane of a server that does not scale out.
    pub fn new() -> Self {
        MemoryBus::new().node()
    }

    fn check_running(&self) -> Result<(), BackplaneError> {
        if self.shut_down.load(Ordering::Acquire) {
            Err(BackplaneError::Shutdown)
        } else {
            Ok(())
        }
    }

    async fn deliver(
        &self,
        hub: &str,
        destination: Option<NodeId>,
        kind: EnvelopeKind,
    ) -> Result<(), BackplaneError> {
        self.check_running()?;
        let mut state = self.state.lock().await;
        // Checked again under the lock: shutdown may have happened while waiting for it.
        self.check_running()?;
        let seq = state.sequences.next(hub);
        let envelope = state.envelope(self.id, seq, hub, destination, kind);
        let subscribers = self.bus.subscribers(hub);
        let mut closed = false;
        for subscriber in subscribers.iter().filter(|s| s.node != self.id) {
            let event = BackplaneEvent::Envelope(envelope.clone());
            match subscriber.events.try_send(event) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Closed(_)) => closed = true,
                // Full: wait for room (backpressure), but not past this node's shutdown,
                // which would otherwise wait for this publish forever.
                Err(mpsc::error::TrySendError::Full(event)) => {
                    let mut stopping = self.stopping.subscribe();
                    tokio::select! {
                        sent = subscriber.events.send(event) => closed |= sent.is_err(),
                        _ = stopping.wait_for(|stopping| *stopping) => return Err(BackplaneError::Shutdown),
                    }
                }
            }
        }
        state.keep(&envelope);
        drop(state);
        tracing::debug!(origin = %self.id, hub, seq = envelope.seq, "[Publish] envelope delivered in memory");
        if closed {
            self.bus.prune(hub);
        }
        Ok(())
    }
}

impl Default for MemoryBackplane {
    fn default() -> Self {
        Self::new()
    }
}

impl BusShared {
    fn subscribers(&self, hub: &str) -> Arc<Vec<Subscriber>> {
        read(&self.subscribers)
            .get(hub)
            .cloned()
            .unwrap_or_default()
    }

    fn update(&self, hub: &str, change: impl FnOnce(&mut Vec<Subscriber>)) {
        let mut all = write(&self.subscribers);
        let mut list: Vec<Subscriber> =
            all.get(hub).map(|l| l.as_ref().clone()).unwrap_or_default();
        change(&mut list);
        if list.is_empty() {
            all.remove(hub);
        } else {
            all.insert(hub.to_owned(), Arc::new(list));
        }
    }

    /// Forget subscriptions whose receiving end was dropped.
    fn prune(&self, hub: &str) {
        self.update(hub, |list| list.retain(|s| !s.events.is_closed()));
    }
}

#[async_trait]
impl Backplane for MemoryBackplane {
    fn node_id(&self) -> NodeId {
        self.id
    }

    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn publish(&self, hub: &str, kind: EnvelopeKind) -> Result<(), BackplaneError> {
        self.deliver(hub, None, kind).await
    }

    async fn send_to(
        &self,
        node: NodeId,
        hub: &str,
        kind: EnvelopeKind,
    ) -> Result<(), BackplaneError> {
        self.deliver(hub, Some(node), kind).await
    }

    async fn subscribe(&self, hub: &str) -> Result<Subscription, BackplaneError> {
        self.check_running()?;
        let (events, receiver) = mpsc::channel(self.bus.capacity);
        events
            .try_send(BackplaneEvent::Connected)
            .expect("a new queue with capacity >= 1 has room");
        let subscriber = Subscriber {
            node: self.id,
            events,
        };
        self.bus.update(hub, |list| list.push(subscriber));
        tracing::debug!(node = %self.id, hub, "[Listener] subscribed in memory");
        Ok(Subscription::new(hub, receiver))
    }

    async fn shutdown(&self) -> Result<(), BackplaneError> {
        self.shut_down.store(true, Ordering::Release);
        self.stopping.send_replace(true);
        // Wait for a publish in progress to finish (or give up on a full queue), so none
        // completes after shutdown.
        let mut state = self.state.lock().await;
        state.recycle.clear();
        let hubs: Vec<String> = read(&self.bus.subscribers).keys().cloned().collect();
        // Dropping this node's senders ends its subscriptions.
        for hub in hubs {
            self.bus
                .update(&hub, |list| list.retain(|s| s.node != self.id));
        }
        tracing::debug!(node = %self.id, "memory backplane shut down");
        Ok(())
    }
}

impl fmt::Debug for MemoryBackplane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBackplane")
            .field("node_id", &self.id)
            .field("shut_down", &self.shut_down.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}
