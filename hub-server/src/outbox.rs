//! A connection's bounded outgoing queue, and how the lifetime manager fills it.

use std::fmt;

use backplane_core::{ConnectionSink, DeliveryError, SerializedMessage};
use bytes::Bytes;
use hub_protocol::Protocol;
use tokio::sync::{Notify, mpsc};

/// One item of a connection's outgoing queue.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// A complete hub message frame, shared with every other connection it was sent to.
    Frame(Bytes),
    /// Write this final frame (a Close message, if any), close the WebSocket and stop.
    Close(Option<Bytes>),
}

/// The sending side of one connection: a bounded queue of frames, and the alarm that
/// disconnects the connection when the queue overflows.
///
/// The lifetime manager calls [`ConnectionSink::deliver`] while fanning out, so delivering
/// must never wait: a full queue means the client stopped reading, and it is disconnected
/// rather than allowed to slow everyone else down or to grow memory without bound.
pub(crate) struct Outbox {
    /// The protocol whose encoding this connection takes from each message.
    protocol: Protocol,
    /// Frames waiting for the connection's writer.
    queue: mpsc::Sender<Outgoing>,
    /// Wakes the connection task to drop a client whose queue overflowed.
    overflow: Notify,
}

impl Outbox {
    /// An outbox for a connection speaking `protocol`, with room for `capacity` frames,
    /// and the receiving end its writer drains.
    pub(crate) fn new(protocol: Protocol, capacity: usize) -> (Self, mpsc::Receiver<Outgoing>) {
        let (queue, receiver) = mpsc::channel(capacity);
        let outbox = Self {
            protocol,
            queue,
            overflow: Notify::new(),
        };
        (outbox, receiver)
    }

    /// Queue a frame; on overflow, sound the alarm.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::QueueFull`] (the connection is being dropped) or
    /// [`DeliveryError::Closed`] (it is gone).
    pub(crate) fn push(&self, item: Outgoing) -> Result<(), DeliveryError> {
        match self.queue.try_send(item) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                // `notify_one` stores a permit, so the alarm is not lost if the connection
                // task is busy elsewhere at this instant.
                self.overflow.notify_one();
                Err(DeliveryError::QueueFull)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(DeliveryError::Closed),
        }
    }

    /// Completes when the queue has overflowed.
    pub(crate) async fn overflowed(&self) {
        self.overflow.notified().await;
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
            .field(
                "queued",
                &(self.queue.max_capacity() - self.queue.capacity()),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn overflow_refuses_and_raises_the_alarm() {
        let (outbox, mut receiver) = Outbox::new(Protocol::Json, 2);
        let message = SerializedMessage::new().with(Protocol::Json, &b"m\x1e"[..]);
        outbox.deliver(&message).unwrap();
        outbox.deliver(&message).unwrap();
        assert_eq!(outbox.deliver(&message), Err(DeliveryError::QueueFull));
        // The alarm was stored even though nobody was waiting.
        tokio::time::timeout(std::time::Duration::from_secs(1), outbox.overflowed())
            .await
            .expect("the overflow alarm is set");
        assert!(
            matches!(receiver.recv().await, Some(Outgoing::Frame(frame)) if &frame[..] == b"m\x1e")
        );
        drop(receiver);
        assert_eq!(outbox.deliver(&message), Err(DeliveryError::Closed));
    }

    #[test]
    fn missing_encoding_is_reported() {
        let (outbox, _receiver) = Outbox::new(Protocol::MessagePack, 2);
        let message = SerializedMessage::new().with(Protocol::Json, &b"m\x1e"[..]);
        assert_eq!(
            outbox.deliver(&message),
            Err(DeliveryError::MissingEncoding(Protocol::MessagePack))
        );
    }
}
