//! Stateful reconnect's bookkeeping for one side of a connection: what was sent and not
//! yet acknowledged (to resend it on a new transport), and what was received (to
//! acknowledge it and to drop what the peer resends). The server and the client keep the
//! same books, so both use these types.
//!
//! Both sides number the messages they send from 1, counting only Invocation,
//! StreamItem, Completion, StreamInvocation and CancelInvocation (Ping, Close, Ack and
//! Sequence are not numbered). An Ack `N` releases every sent message up to `N`. After a
//! dropped transport both sides send Sequence `S`, the id of their first message the
//! other may not have, and resend from there; the receiver drops the ids it already had.
//!
//! Nothing here does I/O or keeps time: the connection (`hub-server`'s, `chat-client`'s)
//! decides when to write, ack and
//! resend, so every rule is unit-tested on its own.

use std::collections::VecDeque;
use std::fmt;

use bytes::Bytes;

/// The messages sent to the peer and not yet acknowledged.
#[derive(Debug)]
pub struct ReplayBuffer {
    /// Numbered frames written and not acknowledged, oldest first, with their ids.
    unacked: VecDeque<(u64, Bytes)>,
    /// The id the next numbered frame gets (the first is 1).
    next_id: u64,
    /// Bytes of the frames in `unacked`.
    bytes: usize,
    /// Past this many bytes the writer stops sending numbered frames until the peer
    /// acknowledges some (ASP.NET Core's sends wait likewise), so what is kept for a
    /// resend stays bounded.
    limit: usize,
}

/// An Ack or Sequence from the peer that cannot be right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SequenceError {
    /// The peer acknowledged a message this side never sent.
    AckBeyondSent {
        /// The id acknowledged.
        acked: u64,
        /// The last id sent.
        sent: u64,
    },
    /// After a reconnect the peer resumes past messages this side never received:
    /// they are lost, so the connection cannot go on as if nothing happened.
    SequenceGap {
        /// The id the peer resumes from.
        resumes_at: u64,
        /// The id expected next.
        expected: u64,
    },
}

impl fmt::Display for SequenceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AckBeyondSent { acked, sent } => write!(
                f,
                "the peer acknowledged message {acked}, but only {sent} were sent"
            ),
            Self::SequenceGap {
                resumes_at,
                expected,
            } => write!(
                f,
                "the peer resumed at message {resumes_at}, but {expected} was expected: messages in between were lost"
            ),
        }
    }
}

impl std::error::Error for SequenceError {}

impl ReplayBuffer {
    /// An empty buffer that holds up to about `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            unacked: VecDeque::new(),
            next_id: 1,
            bytes: 0,
            limit: limit.max(1),
        }
    }

    /// Whether the writer must wait for an Ack before it sends another numbered frame.
    /// A buffer holding nothing is never full, so a single frame larger than the limit
    /// still goes out.
    pub fn is_full(&self) -> bool {
        !self.unacked.is_empty() && self.bytes >= self.limit
    }

    /// Keep `frame`, about to be written, for a resend; its id.
    pub fn record(&mut self, frame: Bytes) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.bytes += frame.len();
        self.unacked.push_back((id, frame));
        id
    }

    /// Release every frame up to `id`. Acks of what was already released are harmless
    /// (acks may cross a resend).
    ///
    /// # Errors
    ///
    /// [`SequenceError::AckBeyondSent`] when `id` was never sent.
    pub fn ack(&mut self, id: u64) -> Result<(), SequenceError> {
        let sent = self.next_id - 1;
        if id > sent {
            return Err(SequenceError::AckBeyondSent { acked: id, sent });
        }
        while let Some((first, frame)) = self.unacked.front() {
            if *first > id {
                break;
            }
            self.bytes -= frame.len();
            self.unacked.pop_front();
        }
        if self.unacked.is_empty() && self.unacked.capacity() > 64 {
            self.unacked = VecDeque::new();
        }
        Ok(())
    }

    /// The id of the first frame the peer may not have: what the Sequence message sent
    /// on a new transport announces before the resend.
    pub fn first_unacked(&self) -> u64 {
        self.unacked.front().map_or(self.next_id, |(id, _)| *id)
    }

    /// The frames to resend on a new transport, oldest first.
    pub fn unacked(&self) -> impl Iterator<Item = &Bytes> {
        self.unacked.iter().map(|(_, frame)| frame)
    }

    /// Bytes kept for a resend.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// What the peer sent: which numbered messages were received, which of them were
/// acknowledged, and which resent ones to drop.
#[derive(Debug, Default)]
pub struct ReceiveTracker {
    /// The id of the last numbered message processed.
    received: u64,
    /// The id the peer gave the last numbered message it sent, as counted from its
    /// last Sequence: after a resend it trails `received` until the resend catches up.
    current: u64,
    /// The id last acknowledged to the peer.
    acked: u64,
}

impl ReceiveTracker {
    /// Count one numbered message from the peer; whether to process it (`false` for a
    /// resent message that was processed before).
    pub fn receive(&mut self) -> bool {
        self.current += 1;
        if self.current <= self.received {
            return false;
        }
        self.received = self.current;
        true
    }

    /// The peer resumes at `id` (its Sequence message after a reconnect): the resent
    /// messages up to what was already processed will be dropped.
    ///
    /// # Errors
    ///
    /// [`SequenceError::SequenceGap`] when `id` skips messages never received.
    pub fn resume_at(&mut self, id: u64) -> Result<(), SequenceError> {
        let expected = self.received + 1;
        if id > expected || id == 0 {
            return Err(SequenceError::SequenceGap {
                resumes_at: id,
                expected,
            });
        }
        self.current = id - 1;
        Ok(())
    }

    /// Acknowledge everything received again at the next chance: an Ack sent on a
    /// transport that was then lost may never have arrived.
    pub fn ack_again(&mut self) {
        self.acked = 0;
    }

    /// The id to acknowledge, if anything arrived since the last Ack; marks it sent.
    pub fn take_ack(&mut self) -> Option<u64> {
        (self.received > self.acked).then(|| {
            self.acked = self.received;
            self.received
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(text: &'static str) -> Bytes {
        Bytes::from_static(text.as_bytes())
    }

    #[test]
    fn frames_are_numbered_from_one_and_released_by_acks() {
        let mut buffer = ReplayBuffer::new(1000);
        assert_eq!(buffer.first_unacked(), 1);
        assert_eq!(buffer.record(frame("a")), 1);
        assert_eq!(buffer.record(frame("bb")), 2);
        assert_eq!(buffer.record(frame("ccc")), 3);
        assert_eq!(buffer.bytes(), 6);
        buffer.ack(2).unwrap();
        assert_eq!(buffer.first_unacked(), 3);
        assert_eq!(buffer.unacked().collect::<Vec<_>>(), [&frame("ccc")]);
        assert_eq!(buffer.bytes(), 3);
        // An old ack (one that crossed a resend) changes nothing.
        buffer.ack(1).unwrap();
        assert_eq!(buffer.first_unacked(), 3);
        buffer.ack(3).unwrap();
        assert_eq!(buffer.first_unacked(), 4);
        assert_eq!(buffer.bytes(), 0);
    }

    #[test]
    fn an_ack_of_what_was_never_sent_is_an_error() {
        let mut buffer = ReplayBuffer::new(1000);
        buffer.record(frame("a"));
        assert_eq!(
            buffer.ack(2),
            Err(SequenceError::AckBeyondSent { acked: 2, sent: 1 })
        );
    }

    #[test]
    fn the_buffer_is_full_at_its_limit_but_never_when_empty() {
        let mut buffer = ReplayBuffer::new(4);
        assert!(!buffer.is_full());
        buffer.record(frame("abc"));
        assert!(!buffer.is_full());
        buffer.record(frame("d"));
        assert!(buffer.is_full());
        buffer.ack(1).unwrap();
        assert!(!buffer.is_full());
        buffer.ack(2).unwrap();
        // One frame over the limit still goes out into an empty buffer.
        buffer.record(frame("a frame larger than the limit"));
        assert!(buffer.is_full());
    }

    #[test]
    fn resent_messages_already_processed_are_dropped() {
        let mut tracker = ReceiveTracker::default();
        assert!(tracker.receive());
        assert!(tracker.receive());
        assert!(tracker.receive());
        assert_eq!(tracker.take_ack(), Some(3));
        assert_eq!(tracker.take_ack(), None);
        // The client did not see the Ack and resends from 2.
        tracker.resume_at(2).unwrap();
        assert!(!tracker.receive(), "2 again");
        assert!(!tracker.receive(), "3 again");
        assert!(tracker.receive(), "4 is new");
        assert_eq!(tracker.take_ack(), Some(4));
        tracker.ack_again();
        assert_eq!(
            tracker.take_ack(),
            Some(4),
            "acknowledged again after a new transport"
        );
    }

    #[test]
    fn resuming_past_what_was_received_is_a_gap() {
        let mut tracker = ReceiveTracker::default();
        tracker.receive();
        assert_eq!(
            tracker.resume_at(3),
            Err(SequenceError::SequenceGap {
                resumes_at: 3,
                expected: 2
            })
        );
        tracker.resume_at(2).unwrap();
        assert!(tracker.receive());
    }
}
