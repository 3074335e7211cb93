//! The receiving side: one task per subscribed hub per node, reading the hub's subject
//! of the stream through an ephemeral push consumer that starts after the last stream
//! sequence the task read.
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
use backplane_core::sequencing::{HubInbox, HubSubscribers, Outage};
use backplane_core::{BackplaneEvent, GapRepair, Jitter};
use futures_util::StreamExt;
use tokio::sync::watch;

use crate::context::NodeContext;
use crate::publisher::Route;
use crate::wire::{self, Chunks};

/// Where missing envelopes should have been, for reports.
const STORAGE: &str = "the stream";

/// Why the stream may no longer reach back to the last message read.
const RESET_CAUSE: &str =
    "a server restarted with memory storage, or max_age/max_bytes/max_messages trimmed it";

/// Why reading stopped.
enum Stop {
    /// The node shuts down, or nobody subscribes to the hub any more.
    Done,
    /// The connection or the consumer failed; recreate it and resume.
    Lost(String),
}

/// A running consumer and its deliveries.
pub(crate) struct Feed {
    /// The deliveries (its deliver subject).
    messages: async_nats::Subscriber,
    /// Messages the consumer had pending when created (0: nothing to catch up).
    pending: u64,
    /// Changes when the connection drops.
    disconnects: watch::Receiver<u64>,
}

/// One hub's reading task.
pub(crate) struct HubReader {
    /// Identity, settings, connection.
    context: Arc<NodeContext>,
    /// The hub and what it delivered (the core's echo drop, tracker, decoding).
    inbox: HubInbox,
    /// The hub's subject, the consumer's filter.
    subject: Route,
    /// Who receives what is read.
    subscribers: Arc<HubSubscribers>,
    /// Stream sequence of the last message read: a new consumer starts after it.
    last_seq: u64,
    /// Chunked envelopes being reassembled.
    chunks: Chunks,
    /// Set when the node shuts down.
    stop: watch::Receiver<bool>,
    /// Spreads reconnect attempts.
    jitter: Jitter,
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

impl HubReader {
    /// A reader of `subject` for `hub` starting after the stream's current end.
    ///
    /// # Errors
    ///
    /// A description if the stream cannot be read.
    pub(crate) async fn start(
        context: Arc<NodeContext>,
        hub: &str,
        subject: Route,
        subscribers: Arc<HubSubscribers>,
        stop: watch::Receiver<bool>,
    ) -> Result<(Self, Feed), String> {
        let state = stream_state(&context).await?;
        let mut reader = Self {
            inbox: HubInbox::new(context.node, hub, STORAGE).with_codec(context.codec.clone()),
            jitter: Jitter::new(context.node),
            context,
            subject,
            subscribers,
            last_seq: state.last_sequence,
            chunks: Chunks::default(),
            stop,
        };
        let feed = reader.open(None).await?;
        Ok((reader, feed))
    }

    /// A new consumer starting after `last_seq`. While reconnecting (`outage`), first
    /// check that the stream still reaches back to `last_seq`.
    async fn open(&mut self, outage: Option<&mut Outage>) -> Result<Feed, String> {
        let context = &self.context;
        let options = &context.options;
        if let Some(outage) = outage {
            let state = stream_state(context).await?;
            if self.last_seq > state.last_sequence {
                // A new stream (the server lost the old one): read it from its start.
                outage.log_reset = true;
                self.last_seq = 0;
            } else if self.last_seq > 0 && state.first_sequence > self.last_seq + 1 {
                outage.log_reset = true;
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

    /// Read, deliver, reconnect; until the node shuts down or the hub has no subscriber.
    pub(crate) async fn run(mut self, feed: Feed) {
        let node = self.context.node;
        let mut feed = Some(feed);
        // While reconnecting and catching up: what the catch-up found so far.
        let mut outage: Option<Outage> = None;
        let mut attempt = 0u32;
        loop {
            let current = match feed.take() {
                Some(feed) => feed,
                None => {
                    let delay = self.context.backoff(attempt, self.jitter.next_fraction());
                    attempt = attempt.saturating_add(1);
                    let mut stop = self.stop.clone();
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.wait_for(|stop| *stop) => break,
                    }
                    match self.open(outage.as_mut()).await {
                        Ok(feed) => feed,
                        Err(error) => {
                            tracing::debug!(%node, hub = self.inbox.hub(), %error, attempt, "[Listener] reconnect failed");
                            continue;
                        }
                    }
                }
            };
            match self.serve(current, &mut outage, &mut attempt).await {
                Stop::Done => break,
                Stop::Lost(reason) => {
                    tracing::warn!(%node, hub = self.inbox.hub(), %reason, "[Listener] consumer lost");
                    if outage.is_none() {
                        outage = Some(Outage::default());
                        let event = BackplaneEvent::Disconnected { reason };
                        if self.subscribers.send(&event, &mut self.stop).await.is_err() {
                            break;
                        }
                    }
                }
            }
        }
        self.subscribers.close();
        tracing::debug!(%node, hub = self.inbox.hub(), "[Listener] stopped");
    }

    /// After a catch-up reached the end: report what it found.
    async fn caught_up(&mut self, outage: &mut Option<Outage>) -> Result<(), ()> {
        let Some(found) = outage.take() else {
            return Ok(());
        };
        let gap = found.report(STORAGE, RESET_CAUSE);
        if let GapRepair::Unrepairable { .. } = gap {
            tracing::warn!(node = %self.context.node, hub = self.inbox.hub(), ?gap, "[Listener] reconnected with envelopes lost");
        } else {
            tracing::info!(node = %self.context.node, hub = self.inbox.hub(), ?gap, "[Listener] reconnected and caught up");
        }
        self.subscribers
            .send(&BackplaneEvent::Reconnected { gap }, &mut self.stop)
            .await
    }

    /// Read one consumer until it fails or there is nothing left to do.
    async fn serve(
        &mut self,
        mut feed: Feed,
        outage: &mut Option<Outage>,
        attempt: &mut u32,
    ) -> Stop {
        let context = self.context.clone();
        let options = &context.options;
        let silence = options.heartbeat * 3;
        let retention = options.max_age.unwrap_or(Duration::from_secs(86_400));
        let mut expected = 1u64; // the next consumer sequence
        if feed.pending == 0 && self.caught_up(outage).await.is_err() {
            return Stop::Done;
        }
        let mut stop = self.stop.clone();
        loop {
            if self.subscribers.prune() {
                let _ = feed.messages.unsubscribe().await;
                return Stop::Done;
            }
            let message = tokio::select! {
                biased;
                _ = stop.wait_for(|stop| *stop) => return Stop::Done,
                _ = feed.disconnects.changed() => return Stop::Lost("the connection to NATS dropped".into()),
                next = tokio::time::timeout(silence, feed.messages.next()) => match next {
                    Ok(Some(message)) => message,
                    Ok(None) => return Stop::Lost("the consumer's subscription ended".into()),
                    Err(_) => return Stop::Lost(format!("no message or heartbeat for {silence:?}")),
                },
            };
            *attempt = 0;
            match message.status {
                None => {}
                Some(StatusCode::IDLE_HEARTBEAT) => {
                    // The consumer has nothing pending.
                    if self.caught_up(outage).await.is_err() {
                        return Stop::Done;
                    }
                    continue;
                }
                Some(status) => {
                    let description = message.description.unwrap_or_default();
                    return Stop::Lost(format!("the consumer said {status} {description}"));
                }
            }
            let Some(delivery) = message.reply.as_deref().and_then(wire::delivery) else {
                return Stop::Lost("a delivery without JetStream metadata".into());
            };
            if delivery.consumer_seq != expected {
                return Stop::Lost(format!(
                    "the consumer skipped deliveries {expected}..{}",
                    delivery.consumer_seq
                ));
            }
            expected += 1;
            self.last_seq = delivery.stream_seq;
            if let Some(item) = self.chunks.item(message.headers.as_ref(), message.payload) {
                let accepted = self.inbox.accept(item, outage.as_mut());
                if self
                    .subscribers
                    .deliver(accepted, &mut self.stop)
                    .await
                    .is_err()
                {
                    return Stop::Done;
                }
            }
            if delivery.pending == 0 && self.caught_up(outage).await.is_err() {
                return Stop::Done;
            }
            self.inbox.forget_idle(retention);
        }
    }
}
