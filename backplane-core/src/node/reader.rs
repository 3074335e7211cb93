//! The receiving side of a log-based node: one task per subscribed hub reads the hub's
//! log from the last item it saw, through the backend's [`LogReader`].
//!
//! Resuming from the last item read *is* the repair: after a dropped connection the
//! task reports `Disconnected`, reconnects with backoff (forever), reads everything
//! after its last item until it has caught up, and reports `Reconnected` with what it
//! recovered. The core's [`HubInbox`] drops duplicates (a publish retried after a lost
//! reply) and notices numbers nothing accounts for (trimmed by retention before they
//! were read, or lost with a restarted server): those are reported as unrepairable,
//! since the log is the only copy.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::EnvelopeCodec;
use crate::backoff::{Jitter, ReconnectBackoff};
use crate::backplane::{BackplaneEvent, GapRepair};
use crate::id::NodeId;
use crate::metrics::ReceiveMetrics;
use crate::sequencing::{HubInbox, HubSubscribers, Outage, Stored};

/// Why a backend's [`LogReader::serve`] returned.
#[derive(Debug)]
pub enum ReadStop {
    /// The node shuts down, or nobody subscribes to the hub any more.
    Done,
    /// The connection (or the consumer) failed; reconnect and resume. Says why.
    Lost(String),
}

/// How a backend reads one hub's log: the transport half of the reader loop.
/// Backoff, the `Disconnected` / `Reconnected` reports, accounting and fan-out are
/// [`HubReading`]'s and [`run_reader`]'s.
pub trait LogReader: Send + 'static {
    /// A live read position: a connection, a consumer.
    type Link: Send;

    /// A new link resuming after the last item read. While an outage runs
    /// ([`HubReading::is_catching_up`]), check that the log still reaches back to that
    /// item and call [`HubReading::mark_reset`] if it does not.
    ///
    /// # Errors
    ///
    /// Why it failed, for logs; the loop tries again after a backoff.
    fn reconnect(
        &mut self,
        hub: &mut HubReading,
    ) -> impl Future<Output = Result<Self::Link, String>> + Send;

    /// Read from `link` and hand each item to [`HubReading::deliver`], until the link
    /// fails or there is nothing left to do. Call [`HubReading::read_succeeded`] after
    /// each successful read, [`HubReading::caught_up`] when a read reached the log's
    /// end, and stop (`Done`) when [`HubReading::prune`] says nobody listens or the stop
    /// signal turns true.
    fn serve(
        &mut self,
        link: Self::Link,
        hub: &mut HubReading,
    ) -> impl Future<Output = ReadStop> + Send;
}

/// The backend-neutral state of one hub's reader task.
pub struct HubReading {
    /// This node, for logs.
    node: NodeId,
    /// What the hub delivered (echo drop, duplicates, gaps, decoding).
    inbox: HubInbox,
    /// Who receives what is read.
    subscribers: Arc<HubSubscribers>,
    /// Turns true when the node shuts down.
    stop: watch::Receiver<bool>,
    /// While reconnecting and catching up: what the catch-up found so far.
    outage: Option<Outage>,
    /// Failed reconnect attempts since the last successful read.
    attempt: u32,
    /// Waits between reconnect attempts.
    backoff: ReconnectBackoff,
    /// Spreads reconnect attempts.
    jitter: Jitter,
    /// Where missing envelopes should have been, for reports ("the stream").
    storage: &'static str,
    /// Why the log may no longer reach back to the last item read, for reports.
    reset_cause: &'static str,
    /// The node's reconnects and when it last heard from the backend, once the backend
    /// names itself ([`HubReading::with_metrics`]).
    metrics: Option<ReceiveMetrics>,
}

impl fmt::Debug for HubReading {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubReading")
            .field("node", &self.node)
            .field("hub", &self.inbox.hub())
            .field("outage", &self.outage)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl HubReading {
    /// The reading state of `hub` on `node`, delivering to `subscribers` until `stop`.
    /// `storage` names the log in reports ("the stream"); `reset_cause` says why it may
    /// no longer reach back to the last item read.
    pub fn new(
        node: NodeId,
        hub: &str,
        subscribers: Arc<HubSubscribers>,
        stop: watch::Receiver<bool>,
        backoff: ReconnectBackoff,
        storage: &'static str,
        reset_cause: &'static str,
    ) -> Self {
        Self {
            node,
            inbox: HubInbox::new(node, hub, storage),
            subscribers,
            stop,
            outage: None,
            attempt: 0,
            backoff,
            jitter: Jitter::new(node),
            storage,
            reset_cause,
            metrics: None,
        }
    }

    /// This reading recording through the node's `metrics` (see [`crate::metrics`]).
    pub fn with_metrics(mut self, metrics: ReceiveMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// This reading decoding (and, with a cluster secret, verifying) with `codec`: what
    /// fails verification is dropped and counted before it can move a sequence.
    pub fn with_codec(mut self, codec: EnvelopeCodec) -> Self {
        self.inbox = self.inbox.with_codec(codec);
        self
    }

    /// The hub.
    pub fn hub(&self) -> &str {
        self.inbox.hub()
    }

    /// Whether a catch-up after a reconnect runs (read without waiting; an empty read
    /// means caught up).
    pub fn is_catching_up(&self) -> bool {
        self.outage.is_some()
    }

    /// During a catch-up: the log no longer reaches back to the last item read, so
    /// items may be gone that no later item of their origin has revealed yet.
    pub fn mark_reset(&mut self) {
        if let Some(outage) = &mut self.outage {
            outage.log_reset = true;
        }
    }

    /// A read succeeded: the next reconnect starts its backoff afresh.
    pub fn read_succeeded(&mut self) {
        self.attempt = 0;
        if let Some(metrics) = &self.metrics {
            metrics.heard();
        }
    }

    /// A copy of the stop signal, to select on while reading.
    pub fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop.clone()
    }

    /// Forget ended subscriptions; `true` if none is left (the task should end).
    pub fn prune(&self) -> bool {
        self.subscribers.prune()
    }

    /// Account for one item read and deliver it if it is news for this node.
    ///
    /// # Errors
    ///
    /// `Err(())` if the node stops while waiting for room: the task should end.
    pub async fn deliver(&mut self, item: Stored) -> Result<(), ()> {
        let accepted = self.inbox.accept(item, self.outage.as_mut());
        self.subscribers.deliver(accepted, &mut self.stop).await
    }

    /// A read reached the log's end: if a catch-up ran, report what it found.
    ///
    /// # Errors
    ///
    /// `Err(())` if the node stops while waiting for room: the task should end.
    pub async fn caught_up(&mut self) -> Result<(), ()> {
        let Some(outage) = self.outage.take() else {
            return Ok(());
        };
        let gap = outage.report(self.storage, self.reset_cause);
        if let Some(metrics) = &self.metrics {
            metrics.reconnected();
        }
        if let GapRepair::Unrepairable { .. } = gap {
            tracing::warn!(node = %self.node, hub = self.inbox.hub(), ?gap, "[Listener] reconnected with envelopes lost");
        } else {
            tracing::info!(node = %self.node, hub = self.inbox.hub(), ?gap, "[Listener] reconnected and caught up");
        }
        self.subscribers
            .send(&BackplaneEvent::Reconnected { gap }, &mut self.stop)
            .await
    }

    /// Let the tracker forget origins silent for longer than `retention` (checked at
    /// most once a minute).
    pub fn forget_idle(&mut self, retention: Duration) {
        self.inbox.forget_idle(retention);
    }

    /// The link was lost: report `Disconnected` unless an outage already runs.
    async fn lost(&mut self, reason: String) -> Result<(), ()> {
        tracing::warn!(node = %self.node, hub = self.inbox.hub(), %reason, "[Listener] connection lost");
        if self.outage.is_some() {
            return Ok(());
        }
        self.outage = Some(Outage::default());
        let event = BackplaneEvent::Disconnected { reason };
        self.subscribers.send(&event, &mut self.stop).await
    }

    /// Wait before the next reconnect attempt; `false` if the node stopped meanwhile.
    async fn wait_to_reconnect(&mut self) -> bool {
        let delay = self
            .backoff
            .delay(self.attempt, self.jitter.next_fraction());
        self.attempt = self.attempt.saturating_add(1);
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(delay) => true,
            _ = stop.wait_for(|stop| *stop) => false,
        }
    }
}

/// Read, deliver, reconnect; until the node shuts down or the hub has no subscriber.
/// `link` is the first link, opened by the caller before the subscription returned.
pub async fn run_reader<L: LogReader>(mut log: L, mut hub: HubReading, link: L::Link) {
    let mut link = Some(link);
    loop {
        let current = match link.take() {
            Some(current) => current,
            None => {
                if !hub.wait_to_reconnect().await {
                    break;
                }
                match log.reconnect(&mut hub).await {
                    Ok(current) => current,
                    Err(error) => {
                        tracing::debug!(node = %hub.node, hub = hub.hub(), %error, attempt = hub.attempt, "[Listener] reconnect failed");
                        continue;
                    }
                }
            }
        };
        match log.serve(current, &mut hub).await {
            ReadStop::Done => break,
            ReadStop::Lost(reason) => {
                if hub.lost(reason).await.is_err() {
                    break;
                }
            }
        }
    }
    hub.subscribers.close();
    tracing::debug!(node = %hub.node, hub = hub.hub(), "[Listener] stopped");
}
