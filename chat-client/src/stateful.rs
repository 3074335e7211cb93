//! Stateful reconnect on the client's side: the books of one connection (what was sent
//! and not acknowledged, what was received), the Ack timer, and what goes out on a new
//! WebSocket. The driver asks this on every message and does the I/O.
//!
//! The rules are the official clients' (the JavaScript client's `MessageBuffer`): numbered
//! messages (invocations, completions, stream messages) are kept until the server's Ack;
//! the client acknowledges what it received at most once a second; on a new WebSocket it
//! sends Sequence (its first unacknowledged id) and resends what is kept, drops what
//! arrives before the server's Sequence (the old transport's leftovers), and then drops
//! resent messages it already handled. The books themselves are the server's, from
//! `hub_protocol::replay`.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hub_protocol::replay::{ReceiveTracker, ReplayBuffer, SequenceError};
use hub_protocol::{HubMessage, Protocol, encode_ack, encode_sequence};
use tokio::time::{Interval, MissedTickBehavior};

use crate::transport::ResumeTicket;

/// How often the client acknowledges what it received, at most (the official clients'
/// interval).
const ACK_INTERVAL: Duration = Duration::from_secs(1);

/// The stateful reconnect state of one connection.
#[derive(Debug)]
pub(crate) struct StatefulReconnect {
    /// How to open a new WebSocket to the same connection.
    pub(crate) ticket: ResumeTicket,
    /// Numbered messages sent and not acknowledged.
    sent: ReplayBuffer,
    /// Numbered messages received: what to acknowledge and which resent ones to drop.
    received: ReceiveTracker,
    /// Set on a new WebSocket until the server's Sequence arrives: what arrives before it
    /// belongs to the old transport and is dropped.
    awaiting_sequence: bool,
    /// Ticks when an Ack may be sent.
    ack_timer: Interval,
    /// The protocol Ack and Sequence are written in.
    protocol: Protocol,
}

impl StatefulReconnect {
    pub(crate) fn new(ticket: ResumeTicket, buffer_bytes: usize, protocol: Protocol) -> Self {
        let mut ack_timer = tokio::time::interval(ACK_INTERVAL);
        ack_timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
        StatefulReconnect {
            ticket,
            sent: ReplayBuffer::new(buffer_bytes),
            received: ReceiveTracker::default(),
            awaiting_sequence: false,
            ack_timer,
            protocol,
        }
    }

    /// Whether sends must wait for an Ack: the replay buffer is at its bound.
    pub(crate) fn is_full(&self) -> bool {
        self.sent.is_full()
    }

    /// Keeps a numbered frame about to be sent, for a resend.
    pub(crate) fn record(&mut self, frame: Bytes) {
        self.sent.record(frame);
    }

    /// Applies a message from the server; whether the driver should still handle it
    /// (`false` for Ack, Sequence, leftovers of the old transport and resent duplicates).
    ///
    /// # Errors
    ///
    /// When the server acknowledges what was never sent or resumes past what it sent:
    /// messages would be lost, so the connection cannot go on.
    pub(crate) fn accept(&mut self, message: &HubMessage) -> Result<bool, SequenceError> {
        match message {
            HubMessage::Ack(ack) => self.sent.ack(ack.sequence_id).map(|()| false),
            HubMessage::Sequence(sequence) => {
                self.received.resume_at(sequence.sequence_id)?;
                self.awaiting_sequence = false;
                Ok(false)
            }
            HubMessage::Invocation(_)
            | HubMessage::StreamItem(_)
            | HubMessage::Completion(_)
            | HubMessage::StreamInvocation(_)
            | HubMessage::CancelInvocation(_) => {
                Ok(!self.awaiting_sequence && self.received.receive())
            }
            HubMessage::Ping | HubMessage::Close(_) => Ok(true),
        }
    }

    /// Waits for the next moment an Ack may go out. Cancel-safe.
    pub(crate) async fn ack_due(&mut self) {
        self.ack_timer.tick().await;
    }

    /// The Ack frame to send now, if anything arrived since the last one.
    pub(crate) fn ack(&mut self) -> Option<Bytes> {
        let id = self.received.take_ack()?;
        let mut frame = BytesMut::new();
        encode_ack(self.protocol, &mut frame, id);
        Some(frame.freeze())
    }

    /// A new WebSocket is open: what to send on it first (Sequence, then every frame not
    /// acknowledged), and from now on drop what arrives until the server's Sequence.
    pub(crate) fn resume(&mut self) -> (Vec<Bytes>, usize) {
        self.awaiting_sequence = true;
        // An Ack sent on the lost transport may never have arrived.
        self.received.ack_again();
        let mut sequence = BytesMut::new();
        encode_sequence(self.protocol, &mut sequence, self.sent.first_unacked());
        let mut frames = vec![sequence.freeze()];
        frames.extend(self.sent.unacked().cloned());
        (frames, self.sent.bytes())
    }
}

#[cfg(test)]
mod tests {
    use hub_protocol::{Ack, Decoder, Sequence};

    use super::*;
    use crate::url::HubUrl;

    fn stateful(buffer: usize) -> StatefulReconnect {
        let ticket = ResumeTicket::new(
            HubUrl::parse("http://127.0.0.1:1/hub").unwrap(),
            "token".to_owned(),
            None,
        );
        StatefulReconnect::new(ticket, buffer, Protocol::Json)
    }

    fn invocation() -> HubMessage {
        let mut frame = BytesMut::from(&b"{\"type\":1,\"target\":\"m\",\"arguments\":[]}\x1e"[..]);
        Decoder::new(Protocol::Json, 1024)
            .decode(&mut frame)
            .unwrap()
            .unwrap()
    }

    fn decode(frame: &Bytes) -> HubMessage {
        let mut buf = BytesMut::from(&frame[..]);
        Decoder::new(Protocol::Json, 1024)
            .decode(&mut buf)
            .unwrap()
            .unwrap()
    }

    #[tokio::test]
    async fn resends_what_was_not_acknowledged_after_a_sequence() {
        let mut state = stateful(1000);
        state.record(Bytes::from_static(b"one\x1e"));
        state.record(Bytes::from_static(b"two\x1e"));
        assert!(
            !state
                .accept(&HubMessage::Ack(Ack { sequence_id: 1 }))
                .unwrap()
        );
        let (frames, bytes) = state.resume();
        assert_eq!(bytes, 4);
        assert_eq!(frames.len(), 2);
        assert!(matches!(
            decode(&frames[0]),
            HubMessage::Sequence(Sequence { sequence_id: 2 })
        ));
        assert_eq!(frames[1], Bytes::from_static(b"two\x1e"));
    }

    #[tokio::test]
    async fn drops_leftovers_until_the_sequence_then_duplicates() {
        let mut state = stateful(1000);
        assert!(state.accept(&invocation()).unwrap());
        assert!(state.accept(&invocation()).unwrap());
        assert!(matches!(
            decode(&state.ack().unwrap()),
            HubMessage::Ack(Ack { sequence_id: 2 })
        ));
        assert!(state.ack().is_none(), "nothing new to acknowledge");
        state.resume();
        assert!(
            !state.accept(&invocation()).unwrap(),
            "old transport's leftover"
        );
        assert!(
            !state
                .accept(&HubMessage::Sequence(Sequence { sequence_id: 2 }))
                .unwrap()
        );
        assert!(!state.accept(&invocation()).unwrap(), "2 again");
        assert!(state.accept(&invocation()).unwrap(), "3 is new");
        assert!(matches!(
            decode(&state.ack().unwrap()),
            HubMessage::Ack(Ack { sequence_id: 3 })
        ));
        assert!(
            state
                .accept(&HubMessage::Sequence(Sequence { sequence_id: 9 }))
                .is_err(),
            "a gap loses messages"
        );
        assert!(
            state
                .accept(&HubMessage::Ack(Ack { sequence_id: 1 }))
                .is_err(),
            "nothing was sent"
        );
    }

    #[tokio::test]
    async fn the_buffer_is_bounded_by_bytes() {
        let mut state = stateful(8);
        state.record(Bytes::from_static(b"12345"));
        assert!(!state.is_full());
        state.record(Bytes::from_static(b"678"));
        assert!(state.is_full());
        state
            .accept(&HubMessage::Ack(Ack { sequence_id: 2 }))
            .unwrap();
        assert!(!state.is_full());
    }
}
