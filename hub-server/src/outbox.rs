//! A connection's bounded outgoing queue, and how the lifetime manager fills it.
//!
//! The queue is bounded by bytes, not by frame count: a healthy client that receives
//! thousands of tiny frames in a burst (every connect of a connect storm is broadcast to
//! everyone) must not be mistaken for one that stopped reading, while a client that stops
//! reading is still dropped before it can make the server hold more than the bound.
//!
//! The queue is a `VecDeque` under a mutex, with the parked writer's waker beside it.
//! Delivering one frame takes that one lock, touches one or two cache lines and wakes the
//! writer only when it is parked, which matters when the lifetime manager fans a message
//! out to thousands of connections in a row. The writer takes frames in batches (one lock
//! per batch), and when it runs out of work it gives back whatever a burst made the
//! buffers grow to, so an idle connection holds no queue memory at all.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use backplane_core::lock;
use backplane_core::{ConnectionSink, DeliveryError, SerializedMessage};
use bytes::Bytes;
use hub_protocol::Protocol;
use tokio::sync::Notify;
use tokio::sync::futures::Notified;

/// How many frames the writer takes out of the queue per lock: its batch size, so frames
/// taken but not yet written stay bounded.
const TAKE_LIMIT: usize = 64;

/// Buffers larger than this (in frames) are released when the writer goes idle.
const IDLE_RETAINED: usize = 8;

/// What one queued frame costs besides its bytes: its slot in the queue. Counting it means
/// a flood of empty frames is bounded too.
const FRAME_OVERHEAD: usize = std::mem::size_of::<Outgoing>();

/// One item of a connection's outgoing queue.
#[derive(Debug)]
pub enum Outgoing {
    /// A complete hub message frame, shared with every other connection it was sent to.
    Frame(Bytes),
    /// The answer to one of this client's own invocations. It is queued even past the
    /// bound: the connection stops reading while its queue is full, so these are bounded
    /// by the invocations it has running, and a client must never be dropped as a slow
    /// reader because of its own answers.
    Reply(Bytes),
    /// Write this final frame (a Close message, if any), close the WebSocket and stop.
    Close(Option<Bytes>),
}

/// The sending side of one connection: a bounded queue of frames, and the alarm that
/// disconnects the connection when the queue overflows.
///
/// The lifetime manager calls [`ConnectionSink::deliver`] while fanning out, so delivering
/// must never wait: a full queue means the client stopped reading, and it is disconnected
/// rather than allowed to slow everyone else down or to grow memory without bound.
pub struct Outbox {
    /// The protocol whose encoding this connection takes from each message.
    protocol: Protocol,
    /// The queue, shared with the connection's writer.
    shared: Arc<QueueState>,
    /// Wakes the connection task to drop a client whose queue overflowed.
    overflow: Notify,
}

/// The receiving side of one connection's queue, drained by its writer.
pub struct OutboxReceiver {
    /// The queue, shared with the [`Outbox`].
    shared: Arc<QueueState>,
    /// Frames taken out of the queue (in order, ahead of everything still in it) and not
    /// yet handed to the writer.
    taken: VecDeque<Outgoing>,
}

/// What the two ends share.
struct QueueState {
    /// Most bytes the queue holds, frames plus [`FRAME_OVERHEAD`] each (the writer's
    /// current batch, up to [`TAKE_LIMIT`] frames taken out but not yet written, is not
    /// counted).
    capacity: usize,
    /// The queue and its bookkeeping.
    state: Mutex<State>,
    /// Signalled whenever the writer takes frames out, for a reader waiting for room
    /// before it starts work whose completion will need a place in the queue.
    room: Notify,
}

#[derive(Default)]
struct State {
    /// Frames waiting for the writer, oldest first.
    items: VecDeque<Outgoing>,
    /// What the frames in `items` cost, as counted against the capacity.
    bytes: usize,
    /// The writer, when it is parked waiting for a frame.
    waiter: Option<Waker>,
    /// The receiving end was dropped: nothing will be written any more.
    receiver_gone: bool,
    /// The sending end was dropped: nothing will be queued any more.
    sender_gone: bool,
}

impl QueueState {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the queue inconsistent (every
        // operation on it is a single call), so carry on.
        lock(&self.state)
    }
}

impl Outbox {
    /// An outbox for a connection speaking `protocol`, with room for `capacity` bytes of
    /// frames, and the receiving end its writer drains.
    pub fn new(protocol: Protocol, capacity: usize) -> (Self, OutboxReceiver) {
        let shared = Arc::new(QueueState {
            capacity: capacity.max(1),
            state: Mutex::new(State::default()),
            room: Notify::new(),
        });
        let outbox = Self {
            protocol,
            shared: shared.clone(),
            overflow: Notify::new(),
        };
        let receiver = OutboxReceiver {
            shared,
            taken: VecDeque::new(),
        };
        (outbox, receiver)
    }

    /// Queue a frame; on overflow, sound the alarm. A frame that does not fit is refused,
    /// unless the queue is empty (a single message larger than the bound still reaches a
    /// client that keeps up). A reply or a Close is always queued (past the capacity): a
    /// reply is bounded by the invocations running, and the Close is the last item, and a
    /// busy but healthy client should still be told why the connection ends.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::QueueFull`] (the connection is being dropped) or
    /// [`DeliveryError::Closed`] (it is gone).
    pub(crate) fn push(&self, item: Outgoing) -> Result<(), DeliveryError> {
        let waiter = {
            let mut state = self.shared.state();
            if state.receiver_gone {
                return Err(DeliveryError::Closed);
            }
            let cost = cost(&item);
            if matches!(item, Outgoing::Frame(_))
                && !state.items.is_empty()
                && state.bytes + cost > self.shared.capacity
            {
                drop(state);
                ::metrics::counter!(crate::metrics::SEND_QUEUE_DROPS).increment(1);
                // `notify_one` stores a permit, so the alarm is not lost if the connection
                // task is busy elsewhere at this instant.
                self.overflow.notify_one();
                return Err(DeliveryError::QueueFull);
            }
            state.bytes += cost;
            state.items.push_back(item);
            state.waiter.take()
        };
        if let Some(waker) = waiter {
            waker.wake();
        }
        Ok(())
    }

    /// Completes when the queue has overflowed.
    pub(crate) async fn overflowed(&self) {
        self.overflow.notified().await;
    }

    /// Whether `bytes` more fit in the queue now without passing its capacity (with 0:
    /// whether it is below its capacity), so the connection may read and start more work
    /// whose answers will be queued.
    pub(crate) fn has_room_for(&self, bytes: usize) -> bool {
        let queued = self.shared.state().bytes;
        queued < self.shared.capacity && queued + bytes <= self.shared.capacity
    }

    /// Whether nothing waits in the queue.
    pub(crate) fn is_empty(&self) -> bool {
        self.shared.state().items.is_empty()
    }

    /// Queue the answer to one of this client's invocations (never refused for size; see
    /// [`Outgoing::Reply`]).
    pub(crate) fn reply(&self, frame: Bytes) {
        // An error means the connection is gone or closing: nobody is left to answer.
        let _ = self.push(Outgoing::Reply(frame));
    }

    /// Completes the next time the writer takes frames out of the queue. Create (and
    /// `enable`) it before checking [`Outbox::has_room_for`], so no signal is missed in
    /// between.
    pub(crate) fn room_freed(&self) -> Notified<'_> {
        self.shared.room.notified()
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let waiter = {
            let mut state = self.shared.state();
            state.sender_gone = true;
            state.waiter.take()
        };
        if let Some(waker) = waiter {
            waker.wake();
        }
    }
}

impl ConnectionSink for Outbox {
    fn deliver(&self, message: &SerializedMessage) -> Result<(), DeliveryError> {
        let frame = message
            .get(self.protocol)
            .ok_or(DeliveryError::MissingEncoding(self.protocol))?;
        self.push(Outgoing::Frame(frame.clone()))
    }
}

impl fmt::Debug for Outbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbox")
            .field("protocol", &self.protocol)
            .field("queued", &self.shared.state().items.len())
            .field("queued_bytes", &self.shared.state().bytes)
            .field("capacity", &self.shared.capacity)
            .finish()
    }
}

impl OutboxReceiver {
    /// The next frame, waiting for one if the queue is empty; `None` once the outbox is
    /// gone and everything queued was taken. Cancel-safe: a frame is only taken when it is
    /// returned.
    pub async fn recv(&mut self) -> Option<Outgoing> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next frame if one is queued, without waiting.
    pub fn try_recv(&mut self) -> Option<Outgoing> {
        if let Some(item) = self.taken.pop_front() {
            return Some(item);
        }
        if take_batch(&mut self.shared.state(), &mut self.taken) {
            self.shared.room.notify_waiters();
        }
        self.taken.pop_front()
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Outgoing>> {
        if let Some(item) = self.taken.pop_front() {
            return Poll::Ready(Some(item));
        }
        let mut state = self.shared.state();
        if take_batch(&mut state, &mut self.taken) {
            drop(state);
            self.shared.room.notify_waiters();
            return Poll::Ready(self.taken.pop_front());
        }
        if state.sender_gone {
            return Poll::Ready(None);
        }
        // Idle: give back what a burst made the buffers grow to, then park.
        release(&mut state.items);
        release(&mut self.taken);
        match &state.waiter {
            Some(waiter) if waiter.will_wake(cx.waker()) => {}
            _ => state.waiter = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl Drop for OutboxReceiver {
    fn drop(&mut self) {
        let mut state = self.shared.state();
        state.receiver_gone = true;
        state.items.clear();
        state.bytes = 0;
        state.waiter = None;
    }
}

impl fmt::Debug for OutboxReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboxReceiver")
            .field("taken", &self.taken.len())
            .finish_non_exhaustive()
    }
}

/// Move up to [`TAKE_LIMIT`] frames from the queue to `taken`; whether there were any.
fn take_batch(state: &mut State, taken: &mut VecDeque<Outgoing>) -> bool {
    let count = state.items.len().min(TAKE_LIMIT);
    for item in state.items.drain(..count) {
        state.bytes -= cost(&item);
        taken.push_back(item);
    }
    count > 0
}

/// What `item` counts against the queue's capacity.
fn cost(item: &Outgoing) -> usize {
    let bytes = match item {
        Outgoing::Frame(frame) | Outgoing::Reply(frame) => frame.len(),
        Outgoing::Close(frame) => frame.as_ref().map_or(0, Bytes::len),
    };
    bytes + FRAME_OVERHEAD
}

/// Free an empty buffer's memory if a burst made it large.
fn release(buffer: &mut VecDeque<Outgoing>) {
    if buffer.is_empty() && buffer.capacity() > IDLE_RETAINED {
        *buffer = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn frame(text: &str) -> SerializedMessage {
        SerializedMessage::new().with(Protocol::Json, Bytes::copy_from_slice(text.as_bytes()))
    }

    fn text(item: Option<Outgoing>) -> String {
        match item {
            Some(Outgoing::Frame(frame)) => String::from_utf8(frame.to_vec()).unwrap(),
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// The capacity, in bytes, that holds exactly `frames` frames of `len` bytes each.
    fn room_for(frames: usize, len: usize) -> usize {
        frames * (len + FRAME_OVERHEAD)
    }

    #[tokio::test]
    async fn overflow_refuses_and_raises_the_alarm() {
        let (outbox, mut receiver) = Outbox::new(Protocol::Json, room_for(2, 2));
        let message = frame("m\x1e");
        outbox.deliver(&message).unwrap();
        outbox.deliver(&message).unwrap();
        assert_eq!(outbox.deliver(&message), Err(DeliveryError::QueueFull));
        // The alarm was stored even though nobody was waiting.
        tokio::time::timeout(Duration::from_secs(1), outbox.overflowed())
            .await
            .expect("the overflow alarm is set");
        assert_eq!(text(receiver.recv().await), "m\x1e");
        drop(receiver);
        assert_eq!(outbox.deliver(&message), Err(DeliveryError::Closed));
    }

    #[test]
    fn the_bound_counts_bytes_not_frames() {
        // Room for 1,000 tiny frames is room for only a few large ones.
        let (outbox, _receiver) = Outbox::new(Protocol::Json, room_for(1_000, 2));
        for _ in 0..1_000 {
            outbox.deliver(&frame("m\x1e")).unwrap();
        }
        assert_eq!(
            outbox.deliver(&frame("m\x1e")),
            Err(DeliveryError::QueueFull)
        );

        let large = "x".repeat(1_000);
        let (outbox, _receiver) = Outbox::new(Protocol::Json, room_for(1_000, 2));
        let mut accepted = 0;
        while outbox.deliver(&frame(&large)).is_ok() {
            accepted += 1;
        }
        assert_eq!(accepted, room_for(1_000, 2) / (1_000 + FRAME_OVERHEAD));
    }

    #[test]
    fn a_message_larger_than_the_bound_goes_to_an_empty_queue_only() {
        let (outbox, _receiver) = Outbox::new(Protocol::Json, 100);
        let huge = frame(&"x".repeat(10_000));
        outbox.deliver(&huge).unwrap();
        assert_eq!(outbox.deliver(&huge), Err(DeliveryError::QueueFull));
    }

    #[tokio::test]
    async fn replies_are_queued_past_the_bound_and_count_against_it() {
        let (outbox, mut receiver) = Outbox::new(Protocol::Json, room_for(1, 2));
        outbox.deliver(&frame("m\x1e")).unwrap();
        assert!(!outbox.has_room_for(0));
        outbox.reply(Bytes::from_static(b"r\x1e"));
        outbox.reply(Bytes::from_static(b"s\x1e"));
        // No alarm: a client's own answers never make it a slow reader.
        let alarm = tokio::time::timeout(Duration::from_millis(20), outbox.overflowed()).await;
        assert!(alarm.is_err(), "replies raised the overflow alarm");
        assert_eq!(text(receiver.recv().await), "m\x1e");
        assert!(matches!(receiver.recv().await, Some(Outgoing::Reply(r)) if r == "r\x1e"));
        assert!(matches!(receiver.recv().await, Some(Outgoing::Reply(s)) if s == "s\x1e"));
        assert!(outbox.has_room_for(0));
    }

    #[test]
    fn missing_encoding_is_reported() {
        let (outbox, _receiver) = Outbox::new(Protocol::MessagePack, 2);
        assert_eq!(
            outbox.deliver(&frame("m\x1e")),
            Err(DeliveryError::MissingEncoding(Protocol::MessagePack))
        );
    }

    #[tokio::test]
    async fn frames_arrive_in_order_across_batches_and_room_frees_as_they_are_taken() {
        // Frames of 3 bytes each, so the bound is a frame count here.
        let count = 3 * TAKE_LIMIT + 5;
        let (outbox, mut receiver) = Outbox::new(Protocol::Json, room_for(count, 3));
        for i in 0..count {
            outbox.deliver(&frame(&format!("{i:03}"))).unwrap();
        }
        assert_eq!(outbox.deliver(&frame("x")), Err(DeliveryError::QueueFull));
        assert_eq!(text(receiver.recv().await), "000");
        // One batch left the queue, so there is room for that many again.
        for i in 0..TAKE_LIMIT {
            outbox.deliver(&frame(&format!("m{i:02}"))).unwrap();
        }
        assert_eq!(outbox.deliver(&frame("xxx")), Err(DeliveryError::QueueFull));
        for i in 1..count {
            assert_eq!(text(receiver.try_recv()), format!("{i:03}"));
        }
        for i in 0..TAKE_LIMIT {
            assert_eq!(text(receiver.recv().await), format!("m{i:02}"));
        }
        assert!(receiver.try_recv().is_none());
    }

    #[tokio::test]
    async fn a_parked_writer_is_woken_and_sees_the_end_when_the_outbox_goes() {
        let (outbox, mut receiver) = Outbox::new(Protocol::Json, 1024);
        let writer = tokio::spawn(async move {
            let first = text(receiver.recv().await);
            let end = receiver.recv().await;
            (first, end.is_none())
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        outbox.deliver(&frame("late")).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(outbox);
        let (first, ended) = tokio::time::timeout(Duration::from_secs(5), writer)
            .await
            .expect("the writer was woken")
            .unwrap();
        assert_eq!(first, "late");
        assert!(ended, "recv returns None once the outbox is gone");
    }

    #[tokio::test]
    async fn an_idle_writer_gives_back_what_a_burst_made_the_queue_grow_to() {
        let (outbox, mut receiver) = Outbox::new(Protocol::Json, 1024 * 1024);
        for i in 0..500 {
            outbox.deliver(&frame(&i.to_string())).unwrap();
        }
        while receiver.try_recv().is_some() {}
        // Going idle (a recv that has to wait) releases the buffers.
        let waiting = tokio::time::timeout(Duration::from_millis(10), receiver.recv()).await;
        assert!(waiting.is_err(), "nothing is queued");
        assert_eq!(outbox.shared.state().items.capacity(), 0);
        assert_eq!(receiver.taken.capacity(), 0);
        // And the queue works as before.
        outbox.deliver(&frame("after")).unwrap();
        assert_eq!(text(receiver.recv().await), "after");
    }
}
