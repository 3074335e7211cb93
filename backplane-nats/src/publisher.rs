//! The publishing side: one task per node writes the core's ordered batches, one hub
//! at a time, pipelined: every message of the hub's part is sent, then the
//! acknowledgements are awaited in order.
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
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage as Publish;
use backplane_core::sequencing::{Pending, PublishQueue, SkippedRun, runs_of};
use backplane_core::{BackplaneError, Jitter};
use tokio::time::Instant;

use crate::context::{NodeContext, backend};
use crate::wire;

/// Where an envelope goes: its hub's subject.
pub(crate) type Route = Arc<str>;

/// The most messages sent and not yet acknowledged. async-nats holds a permit (5,000
/// per connection) for each until its acknowledgement is awaited, so sending a larger
/// batch before awaiting any would wait for a permit forever.
const ACK_WINDOW: usize = 1024;

/// The node's publish queue, routed by subject.
pub(crate) type Queue = PublishQueue<Route>;

/// The task that writes batches.
pub(crate) struct Publisher {
    /// Identity, settings, connection.
    context: Arc<NodeContext>,
    /// Where publishes wait, numbered.
    queue: Arc<Queue>,
    /// Numbers of failed parts, written in front of their hub's next part.
    skipped: Vec<SkippedRun<Route>>,
    /// Spreads retries.
    jitter: Jitter,
}

/// Why sending stopped: how many messages were acknowledged first, and the error.
struct Failure {
    /// Messages acknowledged before the failure.
    acknowledged: usize,
    /// What failed.
    kind: PublishErrorKind,
    /// The error, for the caller.
    message: String,
}

impl Publisher {
    pub(crate) fn new(context: Arc<NodeContext>, queue: Arc<Queue>) -> Self {
        let jitter = Jitter::new(context.node);
        Self {
            context,
            queue,
            skipped: Vec::new(),
            jitter,
        }
    }

    /// Write batches until the queue is shut down and drained.
    pub(crate) async fn run(mut self) {
        let options = &self.context.options;
        let (items, bytes) = (options.publish_batch_size, options.publish_batch_bytes);
        while let Some(batch) = self.queue.next_batch(items, bytes, Duration::ZERO).await {
            let mut groups: Vec<(Route, Vec<Pending<Route>>)> = Vec::new();
            for pending in batch {
                match groups.iter_mut().find(|(route, _)| *route == pending.route) {
                    Some((_, group)) => group.push(pending),
                    None => groups.push((pending.route.clone(), vec![pending])),
                }
            }
            for (route, group) in groups {
                self.write(&route, group).await;
            }
        }
        tracing::debug!(node = %self.context.node, "[Publish] publisher stopped");
    }

    /// Write one hub's part of a batch (behind its skipped runs) and complete it.
    async fn write(&mut self, subject: &Route, group: Vec<Pending<Route>>) {
        let node = self.context.node;
        let (runs, others): (Vec<_>, Vec<_>) = std::mem::take(&mut self.skipped)
            .into_iter()
            .partition(|run| run.route == *subject);
        self.skipped = others;
        // The messages in order, and after which one each envelope is complete.
        let mut messages: Vec<Publish> = runs
            .iter()
            .map(|run| wire::skipped_message(subject, node, run.first, run.last))
            .collect();
        let chunk = self.context.chunk_bytes();
        let mut ends = Vec::with_capacity(group.len());
        for pending in &group {
            let encoded: bytes::Bytes = self.context.codec.encode(&pending.envelope).into();
            let seq = pending.envelope.seq;
            messages.extend(wire::envelope_messages(subject, node, seq, &encoded, chunk));
            ends.push(messages.len());
        }
        let timeout = self.context.options.command_timeout;
        let deadline = Instant::now() + timeout;
        let mut next = 0;
        let mut attempt = 0;
        let outcome = loop {
            let failure = match self.send(subject, &messages[next..], deadline).await {
                Ok(()) => break Ok(()),
                Err(failure) => failure,
            };
            next += failure.acknowledged;
            let now = Instant::now();
            let transient = !matches!(
                failure.kind,
                PublishErrorKind::MaxPayloadExceeded
                    | PublishErrorKind::WrongLastMessageId
                    | PublishErrorKind::WrongLastSequence
            );
            if !transient {
                break Err(backend("publishing to JetStream", &failure.message));
            }
            if now >= deadline {
                tracing::warn!(%node, error = failure.message, "[Publish] batch failed until the command timeout");
                break Err(BackplaneError::Timeout(timeout));
            }
            if failure.kind == PublishErrorKind::StreamNotFound
                && let Err(error) = self.context.ensure_stream().await
            {
                tracing::warn!(%node, %error, "[Publish] the stream is gone and could not be recreated");
            }
            let delay = self
                .context
                .backoff(attempt, self.jitter.next_fraction())
                .min(deadline - now);
            attempt += 1;
            tracing::debug!(%node, error = failure.message, ?delay, acknowledged = next, "[Publish] batch failed; retrying from the first unacknowledged message");
            tokio::time::sleep(delay).await;
        };
        let stored = match outcome {
            Ok(()) => messages.len(),
            Err(_) => next,
        };
        // Runs whose message was not acknowledged stay pending, ahead of everything.
        let runs_stored = stored.min(runs.len());
        self.skipped.extend(runs.into_iter().skip(runs_stored));
        let mut failed = Vec::new();
        for (pending, end) in group.into_iter().zip(ends) {
            if end <= stored {
                pending.finish(Ok(()));
            } else {
                failed.push(pending);
            }
        }
        if let Err(error) = outcome {
            self.skipped.extend(runs_of(&failed));
            let message = error.to_string();
            for pending in failed {
                let error = match &error {
                    BackplaneError::Timeout(timeout) => BackplaneError::Timeout(*timeout),
                    _ => BackplaneError::backend(message.clone()),
                };
                pending.finish(Err(error));
            }
        } else {
            tracing::debug!(%node, subject = &**subject, messages = messages.len(), "[Publish] batch written");
        }
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
