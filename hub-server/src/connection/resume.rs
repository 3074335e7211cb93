//! Stateful reconnect: a connection that outlives the transport it started on.
//!
//! When a client negotiated `useStatefulReconnect`, its connection does not end when its
//! WebSocket drops without a Close frame. The reader waits, up to
//! [`HubOptions::stateful_reconnect_window`](crate::HubOptions::stateful_reconnect_window),
//! for the client to open a new WebSocket with the same connection token; the writer
//! keeps every numbered message it sent until the client acknowledges it. On the new
//! transport the writer first sends Sequence (the id of the first message the client may
//! not have) and everything not acknowledged, and the reader drops what the client
//! resends that it already processed. Invocations keep running meanwhile, groups and the
//! registration stay, and the hub's connect and disconnect hooks do not run again.
//!
//! Both halves are wrappers around the transport's own [`Incoming`] and [`FrameSink`], so
//! the connection core reads and writes through them unchanged; only connections that
//! asked for stateful reconnect pay for them.

use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hub_protocol::{Protocol, TransferFormat, encode_ack, encode_sequence};
use tokio::sync::Notify;
use tokio::time::{Instant, MissedTickBehavior, interval};

use crate::transport::{FrameSink, Incoming, Received, TransportError};
use backplane_core::lock;
use hub_protocol::replay::{ReceiveTracker, ReplayBuffer, SequenceError};

/// How often the server acknowledges what it received, at most (the JavaScript client
/// acknowledges once a second too).
const ACK_INTERVAL: Duration = Duration::from_secs(1);

/// Where a resumable connection gets the transports its client opens after one dropped.
pub(crate) trait Reattach<I, S>: Send {
    /// The next transport the client opened with this connection's token; `None` when no
    /// more can come (the endpoint is gone).
    fn next(&mut self) -> impl Future<Output = Option<(I, S)>> + Send;
}

/// The bookkeeping the reader and the writer of a resumable connection share.
#[derive(Debug)]
pub(crate) struct ResumeState {
    /// What was sent and not acknowledged, and what was received.
    books: Mutex<Books>,
    /// Signalled when the client acknowledges messages: room in the replay buffer for a
    /// writer waiting for it.
    acknowledged: Notify,
}

#[derive(Debug)]
struct Books {
    /// Messages sent and not acknowledged, for a resend.
    sent: ReplayBuffer,
    /// Messages received, to acknowledge them and to drop a resend's duplicates.
    received: ReceiveTracker,
}

impl ResumeState {
    /// Books for a connection that keeps up to `buffer_bytes` of unacknowledged messages.
    pub(crate) fn new(buffer_bytes: usize) -> Self {
        Self {
            books: Mutex::new(Books {
                sent: ReplayBuffer::new(buffer_bytes),
                received: ReceiveTracker::default(),
            }),
            acknowledged: Notify::new(),
        }
    }

    fn books(&self) -> MutexGuard<'_, Books> {
        // Every operation on the books is a single call that leaves them consistent.
        lock(&self.books)
    }

    /// Count a numbered message from the client; whether to process it (`false`: a
    /// resent duplicate of one already processed).
    pub(crate) fn receive(&self) -> bool {
        self.books().received.receive()
    }

    /// The client acknowledged every message up to `id`.
    ///
    /// # Errors
    ///
    /// When `id` was never sent.
    pub(crate) fn ack(&self, id: u64) -> Result<(), SequenceError> {
        self.books().sent.ack(id)?;
        self.acknowledged.notify_waiters();
        Ok(())
    }

    /// The client resends from `id` on a new transport.
    ///
    /// # Errors
    ///
    /// When `id` skips messages the server never received.
    pub(crate) fn resume_at(&self, id: u64) -> Result<(), SequenceError> {
        self.books().received.resume_at(id)
    }
}

/// A place where the reader leaves a new transport's sending half for the writer.
struct SinkSlot<S> {
    /// The new sink, until the writer takes it.
    sink: Mutex<Option<S>>,
    /// Signalled when a sink is left in the slot.
    filled: Notify,
}

impl<S> SinkSlot<S> {
    fn take(&self) -> Option<S> {
        lock(&self.sink).take()
    }

    fn put(&self, sink: S) {
        *lock(&self.sink) = Some(sink);
        self.filled.notify_one();
    }
}

/// The reading half of a resumable connection.
pub(crate) struct ResumableIncoming<I, S, R> {
    /// The transport read now; `None` while waiting for the client to come back.
    current: Option<I>,
    /// Where new transports come from.
    reattach: R,
    /// Where a new transport's sending half goes.
    slot: Arc<SinkSlot<S>>,
    /// How long to wait for the client to come back.
    window: Duration,
}

/// The writing half of a resumable connection.
pub(crate) struct ResumableSink<S> {
    /// The transport written to now; `None` once it failed, until a new one comes.
    current: Option<S>,
    /// Where the reader leaves a new transport's sending half.
    slot: Arc<SinkSlot<S>>,
    /// The books shared with the reader.
    state: Arc<ResumeState>,
    /// The connection's protocol, to write Ack and Sequence messages in.
    protocol: Protocol,
    /// Ticks when an Ack may be sent.
    ack_timer: tokio::time::Interval,
}

/// Wrap a connection's first transport so it survives being lost.
pub(crate) fn wrap<I: Incoming, S: FrameSink, R: Reattach<I, S>>(
    incoming: I,
    sink: S,
    reattach: R,
    state: Arc<ResumeState>,
    protocol: Protocol,
    window: Duration,
) -> (ResumableIncoming<I, S, R>, ResumableSink<S>) {
    let slot = Arc::new(SinkSlot {
        sink: Mutex::new(None),
        filled: Notify::new(),
    });
    let mut ack_timer = interval(ACK_INTERVAL);
    ack_timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    (
        ResumableIncoming {
            current: Some(incoming),
            reattach,
            slot: slot.clone(),
            window,
        },
        ResumableSink {
            current: Some(sink),
            slot,
            state,
            protocol,
            ack_timer,
        },
    )
}

impl<I: Incoming, S: FrameSink, R: Reattach<I, S>> Incoming for ResumableIncoming<I, S, R> {
    async fn read(&mut self, buf: &mut BytesMut) -> Result<Received, TransportError> {
        let Self {
            current,
            reattach,
            slot,
            ..
        } = self;
        if let Some(incoming) = current {
            // A client may come back before this side noticed its old transport is gone
            // (a half-open TCP connection): a new transport replaces the old at once.
            tokio::select! {
                result = incoming.read(buf) => match result {
                    Ok(Received::Lost) | Err(TransportError::Io(_)) => {
                        tracing::debug!("transport lost; waiting for the client to reconnect");
                        *current = None;
                    }
                    other => return other,
                },
                next = reattach.next() => {
                    let Some((incoming, sink)) = next else {
                        return Ok(Received::Lost);
                    };
                    tracing::debug!("the client opened a new transport; the old one is dropped");
                    *current = Some(incoming);
                    slot.put(sink);
                    buf.clear();
                    return Ok(Received::Resumed);
                }
            }
        }
        let deadline = Instant::now() + self.window;
        match tokio::time::timeout_at(deadline, self.reattach.next()).await {
            Ok(Some((incoming, sink))) => {
                self.current = Some(incoming);
                self.slot.put(sink);
                // Half a message from the old transport is not completed by the new one:
                // the client resends whole messages.
                buf.clear();
                Ok(Received::Resumed)
            }
            // Not back in time (or no way back): the connection ends as if closed.
            Ok(None) | Err(_) => Ok(Received::Lost),
        }
    }
}

impl<S: FrameSink> ResumableSink<S> {
    /// Switch to a sink the reader left in the slot, if any: announce where the client's
    /// numbering resumes and resend what it has not acknowledged.
    async fn switch_if_new(&mut self) {
        let Some(sink) = self.slot.take() else {
            return;
        };
        let format = self.protocol.transfer_format();
        let (sequence, frames, bytes) = {
            let mut books = self.state.books();
            books.received.ack_again();
            let frames: Vec<Bytes> = books.sent.unacked().cloned().collect();
            (books.sent.first_unacked(), frames, books.sent.bytes())
        };
        let mut message = BytesMut::new();
        encode_sequence(self.protocol, &mut message, sequence);
        self.current = Some(sink);
        let result = async {
            let sink = self.current.as_mut().expect("just set");
            sink.feed(message.freeze(), format).await?;
            for frame in frames {
                sink.feed(frame, format).await?;
            }
            sink.flush().await
        }
        .await;
        match result {
            Ok(()) => tracing::debug!(sequence, resent_bytes = bytes, "resumed on a new transport"),
            Err(error) => self.lost(&error),
        }
    }

    fn lost(&mut self, error: &io::Error) {
        tracing::debug!(%error, "transport lost while writing; waiting for a new one");
        self.current = None;
    }

    /// Wait until there is a transport to write to.
    async fn ready(&mut self) {
        loop {
            self.switch_if_new().await;
            if self.current.is_some() {
                return;
            }
            let filled = self.slot.filled.notified();
            tokio::pin!(filled);
            filled.as_mut().enable();
            if lock(&self.slot.sink).is_some() {
                continue;
            }
            filled.await;
        }
    }

    /// Feed to the current transport; a failure loses the transport, not the connection.
    async fn feed_current(&mut self, frame: Bytes, format: TransferFormat) {
        if let Some(sink) = &mut self.current
            && let Err(error) = sink.feed(frame, format).await
        {
            self.lost(&error);
        }
    }
}

impl<S: FrameSink> FrameSink for ResumableSink<S> {
    const TRANSPORT: &'static str = S::TRANSPORT;

    async fn feed(&mut self, frame: Bytes, format: TransferFormat) -> io::Result<()> {
        // Pings and the final Close are not numbered: one lost with a transport is not
        // resent.
        self.ready().await;
        self.feed_current(frame, format).await;
        Ok(())
    }

    async fn feed_message(&mut self, frame: Bytes, format: TransferFormat) -> io::Result<()> {
        // Past the buffer's bound, wait for the client's Ack before sending more (as
        // ASP.NET Core does); the send queue behind the writer absorbs what arrives
        // meanwhile, up to its own bound.
        let state = self.state.clone();
        loop {
            let acknowledged = state.acknowledged.notified();
            tokio::pin!(acknowledged);
            acknowledged.as_mut().enable();
            if !self.state.books().sent.is_full() {
                break;
            }
            tokio::select! {
                () = acknowledged => {}
                _ = self.ack_timer.tick() => self.send_ack().await,
            }
            // A new transport while waiting: resend, so the client can acknowledge.
            self.switch_if_new().await;
        }
        // Switch to a new transport (which resends what is recorded) before recording
        // this frame: recorded first, it would go out twice, once in the resend and once
        // here, and the client would number everything after it one too high.
        self.ready().await;
        self.state.books().sent.record(frame.clone());
        self.feed_current(frame, format).await;
        Ok(())
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.switch_if_new().await;
        if let Some(sink) = &mut self.current
            && let Err(error) = sink.flush().await
        {
            self.lost(&error);
        }
        Ok(())
    }

    async fn close(&mut self) -> io::Result<()> {
        self.switch_if_new().await;
        match &mut self.current {
            Some(sink) => sink.close().await,
            None => Ok(()),
        }
    }

    async fn serve(&mut self) -> io::Result<()> {
        let slot = self.slot.clone();
        let filled = slot.filled.notified();
        tokio::pin!(filled);
        filled.as_mut().enable();
        self.switch_if_new().await;
        let transport_traffic = async {
            match &mut self.current {
                Some(sink) => sink.serve().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = transport_traffic => {
                if let Err(error) = result {
                    self.lost(&error);
                }
            }
            () = filled => self.switch_if_new().await,
            _ = self.ack_timer.tick() => self.send_ack().await,
        }
        Ok(())
    }
}

impl<S: FrameSink> ResumableSink<S> {
    /// Acknowledge what arrived since the last Ack, if anything did.
    async fn send_ack(&mut self) {
        if self.current.is_none() {
            return;
        }
        let Some(id) = self.state.books().received.take_ack() else {
            return;
        };
        let mut message = BytesMut::new();
        encode_ack(self.protocol, &mut message, id);
        let format = self.protocol.transfer_format();
        self.feed_current(message.freeze(), format).await;
        if let Some(sink) = &mut self.current
            && let Err(error) = sink.flush().await
        {
            self.lost(&error);
        }
    }
}

#[cfg(test)]
mod tests {
    use hub_protocol::{Decoder, HubMessage};

    use super::*;

    /// A transport's sending half that keeps what it was fed.
    #[derive(Default)]
    struct RecordingSink(Arc<Mutex<Vec<Bytes>>>);

    impl FrameSink for RecordingSink {
        const TRANSPORT: &'static str = "test";

        async fn feed(&mut self, frame: Bytes, _format: TransferFormat) -> io::Result<()> {
            lock(&self.0).push(frame);
            Ok(())
        }

        async fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }

        async fn close(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn invocation(n: u32) -> Bytes {
        Bytes::from(format!(
            "{{\"type\":1,\"target\":\"m\",\"arguments\":[{n}]}}\u{1e}"
        ))
    }

    /// Regression of 8b088dd: a message written while a new transport waits in the slot
    /// must go out once, after the resend, numbered right after it. Recorded before the
    /// switch, it was in the resend and then sent again.
    #[tokio::test]
    async fn a_message_written_as_a_new_transport_arrives_goes_out_once() {
        let state = Arc::new(ResumeState::new(100_000));
        let slot = Arc::new(SinkSlot {
            sink: Mutex::new(None),
            filled: Notify::new(),
        });
        let old = RecordingSink::default();
        let mut sink = ResumableSink {
            current: Some(old),
            slot: slot.clone(),
            state: state.clone(),
            protocol: Protocol::Json,
            ack_timer: interval(ACK_INTERVAL),
        };
        let format = TransferFormat::Text;
        sink.feed_message(invocation(1), format).await.unwrap();
        // The old transport dies; the client comes back on a new one.
        sink.current = None;
        let new = RecordingSink::default();
        let fed = new.0.clone();
        slot.put(new);
        sink.feed_message(invocation(2), format).await.unwrap();

        let fed = lock(&fed).clone();
        let mut decoder = Decoder::new(Protocol::Json, 1024);
        let messages: Vec<HubMessage> = fed
            .iter()
            .map(|frame| {
                let mut buf = BytesMut::from(&frame[..]);
                decoder.decode(&mut buf).unwrap().unwrap()
            })
            .collect();
        assert!(
            matches!(messages[0], HubMessage::Sequence(ref sequence) if sequence.sequence_id == 1),
            "{messages:?}"
        );
        assert_eq!(
            &fed[1..],
            [invocation(1), invocation(2)],
            "the resend, then the new message once"
        );
        // The client acknowledges both; nothing is left to resend.
        state.ack(2).unwrap();
        assert_eq!(state.books().sent.bytes(), 0);
    }
}
