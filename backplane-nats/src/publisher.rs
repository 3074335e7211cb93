//! The publishing side's transport: how one hub's part of a batch is stored, pipelined:
//! every message of the part is sent, then the acknowledgements are awaited in order.
//! The loop around it (batching, retries until `command_timeout`, completion, skipped
//! runs) is `backplane_core::node`'s.
//!
//! Order: one connection carries the messages to the server in the order sent, and
//! JetStream stores them in arrival order, so a node's envelopes enter the stream in
//! sequence order without waiting for each acknowledgement (`Nats-Expected-Last-
//! Subject-Sequence` would force one round trip per envelope). When an acknowledgement
//! fails, the part is sent again from the first unacknowledged message (the client
//! reconnects by itself); JetStream drops the copies of messages it already stored by
//! their `Nats-Msg-Id`. After `command_timeout` the rest of the part fails, its numbers
//! are written as skipped runs in front of the hub's next part.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage as Publish;
use backplane_core::node::{BatchStore, WriteError};
use backplane_core::sequencing::{Pending, SkippedRun};
use tokio::time::Instant;

use crate::context::NodeContext;
use crate::wire;

/// Where an envelope goes: its hub's subject.
pub(crate) type Route = Arc<str>;

/// The most messages sent and not yet acknowledged. async-nats holds a permit (5,000
/// per connection) for each until its acknowledgement is awaited, so sending a larger
/// batch before awaiting any would wait for a permit forever.
const ACK_WINDOW: usize = 1024;

/// Writes a node's parts to JetStream.
pub(crate) struct SubjectWriter {
    /// Identity, settings, connection.
    context: Arc<NodeContext>,
}

/// One hub's part as messages, and how far the attempts so far got.
pub(crate) struct Messages {
    /// The hub's subject.
    subject: Route,
    /// The skipped runs' messages (one each), then the envelopes' (chunks: several).
    messages: Vec<Publish>,
    /// After which message each item (run, then envelope) is complete.
    ends: Vec<usize>,
    /// Messages acknowledged so far: the next attempt resends from here.
    acknowledged: usize,
}

/// Why sending stopped: how many messages were acknowledged first, and the error.
pub(crate) struct Failure {
    /// Messages acknowledged before the failure.
    acknowledged: usize,
    /// What failed.
    kind: PublishErrorKind,
    /// The error, for the caller.
    message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl SubjectWriter {
    pub(crate) fn new(context: Arc<NodeContext>) -> Self {
        Self { context }
    }

    /// Send `messages` and await their acknowledgements in order, at most
    /// [`ACK_WINDOW`] unacknowledged at a time.
    async fn send(
        &self,
        subject: &str,
        messages: &[Publish],
        deadline: Instant,
    ) -> Result<(), Failure> {
        let jetstream = &self.context.jetstream;
        let mut in_flight = VecDeque::with_capacity(messages.len().min(ACK_WINDOW));
        let mut acknowledged = 0;
        for message in messages {
            if in_flight.len() >= ACK_WINDOW {
                let ack = in_flight.pop_front().expect("a full window");
                acknowledge(ack, deadline, acknowledged).await?;
                acknowledged += 1;
            }
            match jetstream
                .send_publish(subject.to_owned(), message.clone())
                .await
            {
                Ok(ack) => in_flight.push_back(ack),
                Err(error) => {
                    // What was sent before may still be acknowledged: count it.
                    while let Some(ack) = in_flight.pop_front() {
                        acknowledge(ack, deadline, acknowledged).await?;
                        acknowledged += 1;
                    }
                    return Err(Failure {
                        acknowledged,
                        kind: error.kind(),
                        message: error.to_string(),
                    });
                }
            }
        }
        while let Some(ack) = in_flight.pop_front() {
            acknowledge(ack, deadline, acknowledged).await?;
            acknowledged += 1;
        }
        Ok(())
    }
}

/// Await one acknowledgement; `acknowledged` counts those before it, for the failure.
async fn acknowledge(
    ack: PublishAckFuture,
    deadline: Instant,
    acknowledged: usize,
) -> Result<(), Failure> {
    match tokio::time::timeout_at(deadline, ack).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(Failure {
            acknowledged,
            kind: error.kind(),
            message: error.to_string(),
        }),
        Err(_) => Err(Failure {
            acknowledged,
            kind: PublishErrorKind::TimedOut,
            message: "no acknowledgement before the command timeout".into(),
        }),
    }
}

impl BatchStore for SubjectWriter {
    type Route = Route;
    type Part = Messages;
    type Error = Failure;

    const ACTION: &'static str = "publishing to JetStream";

    fn prepare(
        &self,
        subject: &Route,
        runs: &[SkippedRun<Route>],
        envelopes: &[Pending<Route>],
    ) -> Messages {
        let node = self.context.node;
        let mut messages: Vec<Publish> = runs
            .iter()
            .map(|run| wire::skipped_message(subject, node, run.first, run.last))
            .collect();
        let mut ends: Vec<usize> = (1..=messages.len()).collect();
        let chunk = self.context.chunk_bytes();
        for pending in envelopes {
            let encoded: bytes::Bytes = self.context.codec.encode(&pending.envelope).into();
            let seq = pending.envelope.seq;
            messages.extend(wire::envelope_messages(subject, node, seq, &encoded, chunk));
            ends.push(messages.len());
        }
        Messages {
            subject: subject.clone(),
            messages,
            ends,
            acknowledged: 0,
        }
    }

    async fn write(
        &mut self,
        part: &mut Messages,
        deadline: Instant,
    ) -> Result<(), WriteError<Failure>> {
        let rest = &part.messages[part.acknowledged..];
        let failure = match self.send(&part.subject, rest, deadline).await {
            Ok(()) => return Ok(()),
            Err(failure) => failure,
        };
        part.acknowledged += failure.acknowledged;
        let transient = !matches!(
            failure.kind,
            PublishErrorKind::MaxPayloadExceeded
                | PublishErrorKind::WrongLastMessageId
                | PublishErrorKind::WrongLastSequence
        );
        Err(WriteError {
            stored: part.ends.partition_point(|&end| end <= part.acknowledged),
            transient,
            cause: failure,
        })
    }

    async fn before_retry(&mut self, failure: &Failure) {
        if failure.kind == PublishErrorKind::StreamNotFound
            && let Err(error) = self.context.ensure_stream().await
        {
            tracing::warn!(node = %self.context.node, %error, "[Publish] the stream is gone and could not be recreated");
        }
    }
}
