//! The receiving side: one task per subscribed hub per node, reading the hub's stream
//! with `XREAD BLOCK` from the last id it saw, on a connection of its own.
//!
//! Resuming from the last id *is* the repair: after a dropped connection the task
//! reports `Disconnected`, reconnects with backoff (forever), reads everything after its
//! last id without blocking until it has caught up, and reports `Reconnected` with what
//! it recovered. The core's tracker drops duplicates (a publish batch retried after a
//! lost reply) and notices numbers nothing accounts for (trimmed by retention before
//! they were read, or lost with a restarted server): those are reported as
//! unrepairable, since the stream is the only copy.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use backplane_core::sequencing::{RepairTally, Tracker};
use backplane_core::{BackplaneEvent, Envelope, GapRepair, Jitter};
use redis::aio::MultiplexedConnection;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::context::{NodeContext, Role};
use crate::entry::{self, Body, StreamEntry};
use crate::publisher::StreamKey;

/// Where missing envelopes should have been, for reports.
const STORAGE: &str = "the stream";

/// How often the tracker forgets origins silent for longer than retention.
const FORGET_INTERVAL: Duration = Duration::from_secs(60);

/// The subscriptions of one hub on this node, shared by `subscribe` and the hub's task.
#[derive(Debug, Default)]
pub(crate) struct Subscribers {
    /// Behind a lock taken briefly per delivery and per subscribe.
    state: Mutex<SubscriberList>,
}

#[derive(Debug, Default)]
struct SubscriberList {
    /// Where the hub's envelopes go.
    senders: Vec<mpsc::Sender<BackplaneEvent>>,
    /// Set once the hub's task stopped (nobody left, or shutdown): a new subscription
    /// then needs a new task, which starts from the stream's end.
    stopped: bool,
}

impl Subscribers {
    fn lock(&self) -> std::sync::MutexGuard<'_, SubscriberList> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Add `sender` unless the hub's task has stopped; `false` then.
    pub(crate) fn add(&self, sender: mpsc::Sender<BackplaneEvent>) -> bool {
        let mut list = self.lock();
        if !list.stopped {
            list.senders.push(sender);
        }
        !list.stopped
    }

    /// Drop every sender (their subscriptions end) and mark the task stopped.
    pub(crate) fn close(&self) {
        let mut list = self.lock();
        list.senders.clear();
        list.stopped = true;
    }

    fn senders(&self) -> Vec<mpsc::Sender<BackplaneEvent>> {
        self.lock().senders.clone()
    }

    /// Forget ended subscriptions; if none is left, mark the task stopped and say so.
    fn prune(&self) -> bool {
        let mut list = self.lock();
        list.senders.retain(|sender| !sender.is_closed());
        if list.senders.is_empty() {
            list.stopped = true;
        }
        list.stopped
    }
}

/// What a reconnect found, until the catch-up read reaches the stream's end.
#[derive(Debug, Default)]
struct Outage {
    /// Envelopes recovered, numbers missing, corrupt entries.
    tally: RepairTally,
    /// The stream no longer reached back to the last entry read (a Redis restarted
    /// without persistence, or trimming): entries may be gone that no later entry of
    /// their origin has revealed yet.
    stream_reset: bool,
}

impl Outage {
    /// The `Reconnected` report.
    fn report(self) -> GapRepair {
        match self.tally.outcome("while disconnected", STORAGE) {
            GapRepair::Repaired { recovered } if self.stream_reset => GapRepair::Unrepairable {
                recovered,
                missing: 0,
                detail: "while disconnected: the stream no longer reaches back to the last entry read (Redis restarted without persistence, or max_len/max_age trimmed it): envelopes may be lost; each origin's loss is counted when its next envelope arrives".into(),
            },
            gap => gap,
        }
    }
}

/// Why reading stopped.
enum Stop {
    /// The node shuts down, or nobody subscribes to the hub any more.
    Done,
    /// The connection failed; reconnect and resume.
    Lost(String),
}

/// One hub's reading task.
pub(crate) struct HubReader {
    /// Identity, settings, client.
    context: Arc<NodeContext>,
    /// The hub, as envelopes name it.
    hub: String,
    /// Its stream.
    key: StreamKey,
    /// Who receives what is read.
    subscribers: Arc<Subscribers>,
    /// The id of the last entry read: the next read starts after it.
    last_id: String,
    /// Last sequence number delivered per origin: duplicates and gaps.
    tracker: Tracker,
    /// Set when the node shuts down.
    stop: watch::Receiver<bool>,
    /// Spreads reconnect attempts.
    jitter: Jitter,
}

impl HubReader {
    pub(crate) fn new(
        context: Arc<NodeContext>,
        hub: String,
        key: StreamKey,
        subscribers: Arc<Subscribers>,
        last_id: String,
        stop: watch::Receiver<bool>,
    ) -> Self {
        let jitter = Jitter::new(context.node);
        Self {
            context,
            hub,
            key,
            subscribers,
            last_id,
            tracker: Tracker::default(),
            stop,
            jitter,
        }
    }

    /// Read, deliver, reconnect; until the node shuts down or the hub has no subscriber.
    pub(crate) async fn run(mut self, connection: MultiplexedConnection) {
        let node = self.context.node;
        let mut connection = Some(connection);
        // While reconnecting and catching up: what the catch-up found so far.
        let mut outage: Option<Outage> = None;
        let mut attempt = 0u32;
        loop {
            let mut link = match connection.take() {
                Some(link) => link,
                None => {
                    let delay = self.context.backoff(attempt, self.jitter.next_fraction());
                    attempt = attempt.saturating_add(1);
                    let mut stop = self.stop.clone();
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.wait_for(|stop| *stop) => break,
                    }
                    let connected = match self.context.connect(Role::Reader).await {
                        Ok(mut link) => self
                            .reaches_back(&mut link)
                            .await
                            .map(|reaches| (link, reaches)),
                        Err(error) => Err(error),
                    };
                    match connected {
                        Ok((link, reaches_back)) => {
                            if let Some(outage) = &mut outage {
                                outage.stream_reset |= !reaches_back;
                            }
                            link
                        }
                        Err(error) => {
                            tracing::debug!(%node, hub = self.hub, %error, attempt, "[Listener] reconnect failed");
                            continue;
                        }
                    }
                }
            };
            match self.serve(&mut link, &mut outage, &mut attempt).await {
                Stop::Done => break,
                Stop::Lost(reason) => {
                    tracing::warn!(%node, hub = self.hub, %reason, "[Listener] connection lost");
                    if outage.is_none() {
                        outage = Some(Outage::default());
                        let event = BackplaneEvent::Disconnected { reason };
                        if self.send(&event).await.is_err() {
                            break;
                        }
                    }
                }
            }
        }
        self.subscribers.close();
        tracing::debug!(%node, hub = self.hub, "[Listener] stopped");
    }

    /// Whether the stream still holds the last entry read or older (false: the entries
    /// between may be gone, trimmed or lost with the server's data).
    async fn reaches_back(
        &self,
        link: &mut MultiplexedConnection,
    ) -> Result<bool, redis::RedisError> {
        let Some(last) = stream_id(&self.last_id) else {
            return Ok(true); // nothing read yet
        };
        let first: redis::Value = redis::cmd("XRANGE")
            .arg(&*self.key)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .query_async(link)
            .await?;
        let first = entry::first_id(first).map_err(|reason| {
            redis::RedisError::from((redis::ErrorKind::UnexpectedReturnType, "XRANGE", reason))
        })?;
        Ok(first
            .as_deref()
            .and_then(stream_id)
            .is_some_and(|first| first <= last))
    }

    /// Read until the connection fails or there is nothing left to do.
    async fn serve(
        &mut self,
        link: &mut MultiplexedConnection,
        outage: &mut Option<Outage>,
        attempt: &mut u32,
    ) -> Stop {
        let context = self.context.clone();
        let options = &context.options;
        let block = options.block_timeout.as_millis().max(1).to_string();
        let mut forgotten_at = Instant::now();
        let mut stop = self.stop.clone();
        loop {
            if self.subscribers.prune() {
                return Stop::Done;
            }
            let mut command = redis::cmd("XREAD");
            // Catching up: never block, so an empty reply means "caught up".
            if outage.is_none() {
                command.arg("BLOCK").arg(&block);
            }
            command
                .arg("COUNT")
                .arg(options.read_count)
                .arg("STREAMS")
                .arg(&*self.key)
                .arg(&self.last_id);
            let reply = tokio::select! {
                biased;
                _ = stop.wait_for(|stop| *stop) => return Stop::Done,
                reply = command.query_async::<redis::Value>(link) => reply,
            };
            let entries = match reply
                .map_err(|e| e.to_string())
                .and_then(entry::parse_xread)
            {
                Ok(entries) => entries,
                Err(reason) => return Stop::Lost(reason),
            };
            *attempt = 0;
            let count = entries.len();
            for entry in entries {
                if self
                    .apply(entry, outage.as_mut().map(|o| &mut o.tally))
                    .await
                    .is_err()
                {
                    return Stop::Done;
                }
            }
            if count < options.read_count
                && let Some(outage) = outage.take()
            {
                let gap = outage.report();
                if let GapRepair::Unrepairable { .. } = gap {
                    tracing::warn!(node = %self.context.node, hub = self.hub, ?gap, "[Listener] reconnected with envelopes lost");
                } else {
                    tracing::info!(node = %self.context.node, hub = self.hub, ?gap, "[Listener] reconnected and caught up");
                }
                if self
                    .send(&BackplaneEvent::Reconnected { gap })
                    .await
                    .is_err()
                {
                    return Stop::Done;
                }
            }
            if forgotten_at.elapsed() >= FORGET_INTERVAL {
                forgotten_at = Instant::now();
                let age = options.max_age.unwrap_or(Duration::from_secs(86_400));
                self.tracker.forget_older_than(age + FORGET_INTERVAL);
            }
        }
    }

    /// Account for one entry and deliver it if it is news for this node. `tally` is set
    /// while catching up after a reconnect; otherwise a gap is reported at once.
    async fn apply(
        &mut self,
        entry: StreamEntry,
        tally: Option<&mut RepairTally>,
    ) -> Result<(), ()> {
        let node = self.context.node;
        self.last_id = entry.id;
        let (origin, first, last, bytes) = match entry.body {
            Body::Malformed(why) => {
                // Its number is unknown: the origin's next entry shows the gap.
                tracing::warn!(%node, hub = self.hub, id = self.last_id, why, "[Processor] skipping a malformed entry");
                return Ok(());
            }
            Body::Envelope { origin, seq, bytes } => (origin, seq, seq, Some(bytes)),
            Body::Skipped {
                origin,
                first,
                last,
            } => (origin, first, last, None),
        };
        if origin == node {
            return Ok(()); // our own echo
        }
        let Some(missing) = self.tracker.accept(origin, &self.hub, first, last) else {
            return Ok(()); // already delivered or skipped
        };
        let mut found = RepairTally {
            missing,
            ..RepairTally::default()
        };
        let envelope = bytes.and_then(|bytes| match Envelope::decode(&bytes) {
            Ok(envelope)
                if envelope.origin == origin && envelope.seq == last && envelope.hub == self.hub =>
            {
                Some(envelope)
            }
            _ => {
                tracing::warn!(%node, %origin, hub = self.hub, seq = last, "[Processor] skipping a corrupt envelope");
                found.corrupt += 1;
                None
            }
        });
        let deliver = envelope.filter(|e| e.destination.is_none_or(|d| d == node));
        match tally {
            Some(tally) => {
                found.recovered += u64::from(deliver.is_some());
                tally.add(found);
            }
            None if found.missing > 0 || found.corrupt > 0 => {
                let cause = format!(
                    "sequence numbers {}..={last} from node {origin}",
                    first - found.missing
                );
                let gap = found.outcome(&cause, STORAGE);
                tracing::warn!(%node, hub = self.hub, ?gap, "[Processor] envelopes could not be recovered");
                self.send(&BackplaneEvent::Reconnected { gap }).await?;
            }
            None => {}
        }
        match deliver {
            Some(envelope) => {
                tracing::debug!(%node, %origin, hub = self.hub, seq = last, "[Processor] envelope received");
                self.send(&BackplaneEvent::Envelope(Arc::new(envelope)))
                    .await
            }
            None => Ok(()),
        }
    }

    /// Send `event` to every subscription of the hub, waiting for room (backpressure),
    /// but not past shutdown (`Err` then).
    async fn send(&mut self, event: &BackplaneEvent) -> Result<(), ()> {
        for sender in self.subscribers.senders() {
            match sender.try_send(event.clone()) {
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
                Err(mpsc::error::TrySendError::Full(event)) => tokio::select! {
                    _ = sender.send(event) => {}
                    _ = self.stop.wait_for(|stop| *stop) => return Err(()),
                },
            }
        }
        Ok(())
    }
}

/// A stream id (`<ms>-<seq>`) as comparable numbers; `None` for `0-0` (nothing read) or
/// anything else.
fn stream_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    let id = (ms.parse().ok()?, seq.parse().ok()?);
    (id != (0, 0)).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_compare_numerically() {
        assert_eq!(stream_id("0-0"), None);
        assert_eq!(stream_id("junk"), None);
        assert!(stream_id("999-5") < stream_id("1000-0"));
        assert!(stream_id("1000-2") < stream_id("1000-10"));
    }

    #[test]
    fn a_reset_stream_is_reported_even_with_nothing_missing_yet() {
        let clean = Outage::default();
        assert_eq!(clean.report(), GapRepair::Repaired { recovered: 0 });
        let reset = Outage {
            stream_reset: true,
            ..Outage::default()
        };
        assert!(matches!(
            reset.report(),
            GapRepair::Unrepairable { missing: 0, .. }
        ));
    }
}
