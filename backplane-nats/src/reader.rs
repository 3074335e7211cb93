//! The receiving side's transport: how one hub's subject of the stream is read, through
//! an ephemeral push consumer that starts after the last stream sequence read. The loop
//! around it (backoff, `Disconnected` / `Reconnected`, accounting, fan-out) is
//! `backplane_core::node`'s.
//!
//! Why this consumer: a push consumer without acknowledgements is the cheapest way to
//! stream a subject in order (no pull requests, no acks), and starting it *by sequence*
//! makes resuming explicit and ours. What it lacks, redelivery, is exactly what a
//! dropped connection needs, so the task never trusts a consumer across one: when the
//! connection drops (the client's `Disconnected` event), a delivery goes missing (the
//! consumer sequence skips) or the consumer falls silent (three heartbeats), the task
//! reports `Disconnected`, creates a new consumer from its last stream sequence + 1,
//! reads until the consumer has nothing pending, and reports `Reconnected` with what it
//! recovered. async-nats's ordered consumer does the re-creation by itself, but hides
//! it, and the contract wants the outage reported.

use std::sync::Arc;
use std::time::Duration;

use async_nats::StatusCode;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, ReplayPolicy, push};
use async_nats::jetstream::stream::State;
use backplane_core::node::{HubReading, LogReader, ReadStop};
use futures_util::StreamExt;
use tokio::sync::watch;

use crate::context::NodeContext;
use crate::publisher::Route;
use crate::wire::{self, Chunks};

/// Where missing envelopes should have been, for reports.
pub(crate) const STORAGE: &str = "the stream";

/// Why the stream may no longer reach back to the last message read.
pub(crate) const RESET_CAUSE: &str =
    "a server restarted with memory storage, or max_age/max_bytes/max_messages trimmed it";

/// A running consumer and its deliveries.
pub(crate) struct Feed {
    /// The deliveries (its deliver subject).
    messages: async_nats::Subscriber,
    /// Messages the consumer had pending when created (0: nothing to catch up).
    pending: u64,
    /// Changes when the connection drops.
    disconnects: watch::Receiver<u64>,
}

/// Reads one hub's subject.
pub(crate) struct SubjectReader {
    /// Identity, settings, connection.
    context: Arc<NodeContext>,
    /// The hub's subject, the consumer's filter.
    subject: Route,
    /// Stream sequence of the last message read: a new consumer starts after it.
    last_seq: u64,
    /// Chunked envelopes being reassembled.
    chunks: Chunks,
}

/// The stream's state, creating the stream if it is gone.
async fn stream_state(context: &NodeContext) -> Result<State, String> {
    let name = context.stream_name();
    match context.jetstream.get_stream(name).await {
        Ok(stream) => Ok(stream.cached_info().state.clone()),
        Err(_) => {
            context.ensure_stream().await.map_err(|e| e.to_string())?;
            let stream = context
                .jetstream
                .get_stream(name)
                .await
                .map_err(|e| format!("reading the stream's state: {e}"))?;
            Ok(stream.cached_info().state.clone())
        }
    }
}

impl SubjectReader {
    /// A reader of `subject` starting after the stream's current end, and its first
    /// consumer.
    ///
    /// # Errors
    ///
    /// A description if the stream cannot be read.
    pub(crate) async fn start(
        context: Arc<NodeContext>,
        subject: Route,
    ) -> Result<(Self, Feed), String> {
        let state = stream_state(&context).await?;
        let mut reader = Self {
            context,
            subject,
            last_seq: state.last_sequence,
            chunks: Chunks::default(),
        };
        let feed = reader.open(None).await?;
        Ok((reader, feed))
    }

    /// A new consumer starting after `last_seq`. While reconnecting (`hub` given),
    /// first check that the stream still reaches back to `last_seq`.
    async fn open(&mut self, hub: Option<&mut HubReading>) -> Result<Feed, String> {
        let context = &self.context;
        let options = &context.options;
        if let Some(hub) = hub {
            let state = stream_state(context).await?;
            if self.last_seq > state.last_sequence {
                // A new stream (the server lost the old one): read it from its start.
                hub.mark_reset();
                self.last_seq = 0;
            } else if self.last_seq > 0 && state.first_sequence > self.last_seq + 1 {
                hub.mark_reset();
            }
        }
        let mut disconnects = context.disconnects.clone();
        disconnects.borrow_and_update();
        let deliver_subject = context.client.new_inbox();
        let messages = context
            .client
            .subscribe(deliver_subject.clone())
            .await
            .map_err(|e| format!("subscribing to the consumer's subject: {e}"))?;
        let config = push::Config {
            deliver_subject,
            deliver_policy: match self.last_seq {
                0 => DeliverPolicy::All,
                last => DeliverPolicy::ByStartSequence {
                    start_sequence: last + 1,
                },
            },
            ack_policy: AckPolicy::None,
            replay_policy: ReplayPolicy::Instant,
            filter_subject: self.subject.to_string(),
            idle_heartbeat: options.heartbeat,
            inactive_threshold: (options.heartbeat * 3).max(Duration::from_secs(5)),
            memory_storage: true,
            ..push::Config::default()
        };
        let stream = context
            .jetstream
            .get_stream_no_info(context.stream_name())
            .await
            .map_err(|e| format!("opening the stream: {e}"))?;
        let consumer = stream
            .create_consumer(config)
            .await
            .map_err(|e| format!("creating a consumer: {e}"))?;
        Ok(Feed {
            messages,
            pending: consumer.cached_info().num_pending,
            disconnects,
        })
    }
}

impl LogReader for SubjectReader {
    type Link = Feed;

    async fn reconnect(&mut self, hub: &mut HubReading) -> Result<Feed, String> {
        self.open(Some(hub)).await
    }

    /// Read one consumer until it fails or there is nothing left to do.
    async fn serve(&mut self, mut feed: Feed, hub: &mut HubReading) -> ReadStop {
        let context = self.context.clone();
        let options = &context.options;
        let silence = options.heartbeat * 3;
        let retention = options.max_age.unwrap_or(Duration::from_secs(86_400));
        let mut expected = 1u64; // the next consumer sequence
        if feed.pending == 0 && hub.caught_up().await.is_err() {
            return ReadStop::Done;
        }
        let mut stop = hub.stop_signal();
        loop {
            if hub.prune() {
                let _ = feed.messages.unsubscribe().await;
                return ReadStop::Done;
            }
            let message = tokio::select! {
                biased;
                _ = stop.wait_for(|stop| *stop) => return ReadStop::Done,
                _ = feed.disconnects.changed() => return ReadStop::Lost("the connection to NATS dropped".into()),
                next = tokio::time::timeout(silence, feed.messages.next()) => match next {
                    Ok(Some(message)) => message,
                    Ok(None) => return ReadStop::Lost("the consumer's subscription ended".into()),
                    Err(_) => return ReadStop::Lost(format!("no message or heartbeat for {silence:?}")),
                },
            };
            hub.read_succeeded();
            match message.status {
                None => {}
                Some(StatusCode::IDLE_HEARTBEAT) => {
                    // The consumer has nothing pending.
                    if hub.caught_up().await.is_err() {
                        return ReadStop::Done;
                    }
                    continue;
                }
                Some(status) => {
                    let description = message.description.unwrap_or_default();
                    return ReadStop::Lost(format!("the consumer said {status} {description}"));
                }
            }
            let Some(delivery) = message.reply.as_deref().and_then(wire::delivery) else {
                return ReadStop::Lost("a delivery without JetStream metadata".into());
            };
            if delivery.consumer_seq != expected {
                return ReadStop::Lost(format!(
                    "the consumer skipped deliveries {expected}..{}",
                    delivery.consumer_seq
                ));
            }
            expected += 1;
            self.last_seq = delivery.stream_seq;
            if let Some(item) = self.chunks.item(message.headers.as_ref(), message.payload)
                && hub.deliver(item).await.is_err()
            {
                return ReadStop::Done;
            }
            if delivery.pending == 0 && hub.caught_up().await.is_err() {
                return ReadStop::Done;
            }
            hub.forget_idle(retention);
        }
    }
}
