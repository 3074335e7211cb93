//! The receiving side every log-based backend shares (Redis Streams, NATS JetStream):
//! what a stored item says, how one is accounted for, and where the result goes.
//!
//! A backend that reads its hub's log in order hands each item to [`HubInbox::accept`]
//! and sends the resulting events to the hub's [`HubSubscribers`]. The inbox drops the
//! node's own echoes, drops duplicates and notices gaps through the [`Tracker`], decodes
//! and checks the envelope, skips envelopes addressed to another node, and while a
//! catch-up after a reconnect is running counts into its [`Outage`] instead of
//! reporting each gap at once.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::{RepairTally, Tracker};
use crate::backplane::{BackplaneEvent, GapRepair};
use crate::envelope::{CodecError, Envelope};
use crate::id::NodeId;
use crate::sync::lock;
use crate::trust::EnvelopeCodec;

/// How often [`HubInbox::forget_idle`] lets the tracker drop origins silent for longer
/// than retention.
const FORGET_INTERVAL: Duration = Duration::from_secs(60);

/// One item read from a hub's log.
#[derive(Debug, Clone)]
pub enum Stored {
    /// An encoded envelope from `origin` numbered `seq`.
    Envelope {
        /// The node that published it (read from the item's own fields, so echoes are
        /// dropped without decoding).
        origin: NodeId,
        /// Its sequence number.
        seq: u64,
        /// The postcard encoding.
        bytes: Bytes,
    },
    /// Numbers `first..=last` of `origin` belong to a batch that failed for good: skip
    /// them instead of reporting them lost.
    Skipped {
        /// The node whose numbers are skipped.
        origin: NodeId,
        /// First skipped number.
        first: u64,
        /// Last skipped number.
        last: u64,
    },
    /// Not an item this backplane wrote (or corrupted); its number is unknown, so the
    /// origin's next item shows the gap. Says why, for logs.
    Malformed(&'static str),
}

/// What one item amounts to for the subscribers: a gap report, an envelope, both (the
/// report first), or nothing.
#[derive(Debug, Default)]
pub struct Accepted {
    /// Numbers before this item that nothing accounts for (outside a catch-up).
    pub gap: Option<GapRepair>,
    /// The envelope to deliver.
    pub envelope: Option<Envelope>,
}

impl Accepted {
    /// The events to send, in order.
    pub fn events(self) -> impl Iterator<Item = BackplaneEvent> {
        let gap = self.gap.map(|gap| BackplaneEvent::Reconnected { gap });
        let envelope = self
            .envelope
            .map(|envelope| BackplaneEvent::Envelope(Arc::new(envelope)));
        gap.into_iter().chain(envelope)
    }
}

/// What a reconnect found, until the catch-up read reaches the end of the log.
#[derive(Debug, Default)]
pub struct Outage {
    /// Envelopes recovered, numbers missing, corrupt items.
    pub tally: RepairTally,
    /// The log no longer reached back to the last item read (a server that lost its
    /// data, or retention): items may be gone that no later item of their origin has
    /// revealed yet.
    pub log_reset: bool,
}

impl Outage {
    /// The `Reconnected` report. `storage` names the log ("the stream"); `reset_cause`
    /// says why it may have lost items (used only if [`Outage::log_reset`]).
    pub fn report(self, storage: &str, reset_cause: &str) -> GapRepair {
        match self.tally.outcome("while disconnected", storage) {
            GapRepair::Repaired { recovered } if self.log_reset => GapRepair::Unrepairable {
                recovered,
                missing: 0,
                detail: format!(
                    "while disconnected: {storage} no longer reaches back to the last item read ({reset_cause}): envelopes may be lost; each origin's loss is counted when its next envelope arrives"
                ),
            },
            gap => gap,
        }
    }
}

/// The receiving state of one hub on one node.
#[derive(Debug)]
pub struct HubInbox {
    /// This node: its own echoes are dropped, and `send_to` envelopes for others skipped.
    node: NodeId,
    /// The hub, as envelopes name it (an envelope naming another is corrupt).
    hub: String,
    /// Where missing envelopes should have been, for reports ("the stream").
    storage: &'static str,
    /// Last sequence number delivered per origin: duplicates and gaps.
    tracker: Tracker,
    /// When the tracker last forgot idle origins.
    forgotten_at: Instant,
    /// Verifies envelopes (with a cluster secret) before they move the tracker.
    codec: EnvelopeCodec,
}

impl HubInbox {
    /// The inbox of `hub` on `node`, reading from `storage`.
    pub fn new(node: NodeId, hub: impl Into<String>, storage: &'static str) -> Self {
        Self {
            node,
            hub: hub.into(),
            storage,
            tracker: Tracker::default(),
            forgotten_at: Instant::now(),
            codec: EnvelopeCodec::default(),
        }
    }

    /// This inbox decoding (and, with a cluster secret, verifying) with `codec`.
    #[must_use]
    pub fn with_codec(mut self, codec: EnvelopeCodec) -> Self {
        self.codec = codec;
        self
    }

    /// The hub.
    pub fn hub(&self) -> &str {
        &self.hub
    }

    /// Account for one item and say what it amounts to. `outage` is set while catching
    /// up after a reconnect (counts go there); otherwise a gap is reported at once.
    pub fn accept(&mut self, item: Stored, outage: Option<&mut Outage>) -> Accepted {
        let (node, hub) = (self.node, self.hub.as_str());
        let (origin, first, last, bytes) = match item {
            Stored::Malformed(why) => {
                tracing::warn!(%node, hub, why, "[Processor] skipping a malformed item");
                return Accepted::default();
            }
            Stored::Envelope { origin, seq, bytes } => (origin, seq, seq, Some(bytes)),
            Stored::Skipped {
                origin,
                first,
                last,
            } => (origin, first, last, None),
        };
        if origin == node {
            return Accepted::default(); // our own echo
        }
        if self
            .tracker
            .last(origin, hub)
            .is_some_and(|seen| seen >= last)
        {
            return Accepted::default(); // already delivered or skipped
        }
        // Verified before it may move the tracker: a forged item naming a real node and a
        // far-ahead number would otherwise make every later envelope of that node look
        // like a duplicate.
        let decoded = bytes.map(|bytes| self.codec.decode(&bytes));
        if let Some(Err(CodecError::Unauthenticated)) = decoded {
            tracing::warn!(%node, %origin, hub, seq = last, "[Processor] dropping an envelope that failed verification against the cluster secret");
            return Accepted::default();
        }
        let Some(missing) = self.tracker.accept(origin, hub, first, last) else {
            return Accepted::default(); // already delivered or skipped
        };
        let mut found = RepairTally {
            missing,
            ..RepairTally::default()
        };
        let envelope = decoded.and_then(|decoded| match decoded {
            Ok(envelope) if envelope.origin == origin && envelope.seq == last && envelope.hub == hub => {
                Some(envelope)
            }
            _ => {
                tracing::warn!(%node, %origin, hub, seq = last, "[Processor] skipping a corrupt envelope");
                found.corrupt += 1;
                None
            }
        });
        let envelope = envelope.filter(|e| e.destination.is_none_or(|d| d == node));
        let mut gap = None;
        match outage {
            Some(outage) => {
                found.recovered += u64::from(envelope.is_some());
                outage.tally.add(found);
            }
            None if found.missing > 0 || found.corrupt > 0 => {
                let cause = format!(
                    "sequence numbers {}..={last} from node {origin}",
                    first - found.missing
                );
                let report = found.outcome(&cause, self.storage);
                tracing::warn!(%node, hub, gap = ?report, "[Processor] envelopes could not be recovered");
                gap = Some(report);
            }
            None => {}
        }
        if envelope.is_some() {
            tracing::debug!(%node, %origin, hub, seq = last, "[Processor] envelope received");
        }
        Accepted { gap, envelope }
    }

    /// Once a minute at most: forget origins silent for longer than `retention` (plus a
    /// margin): their items are gone, and node ids are never reused.
    pub fn forget_idle(&mut self, retention: Duration) {
        if self.forgotten_at.elapsed() >= FORGET_INTERVAL {
            self.forgotten_at = Instant::now();
            self.tracker.forget_older_than(retention + FORGET_INTERVAL);
        }
    }
}

/// The subscriptions of one hub on one node, shared by `subscribe` and the hub's
/// reading task.
#[derive(Debug, Default)]
pub struct HubSubscribers {
    /// Behind a lock taken briefly per delivery and per subscribe.
    state: Mutex<SubscriberList>,
}

#[derive(Debug, Default)]
struct SubscriberList {
    /// Where the hub's events go.
    senders: Vec<mpsc::Sender<BackplaneEvent>>,
    /// Set once the hub's task stopped (nobody left, or shutdown): a new subscription
    /// then needs a new task, which starts from the log's end.
    stopped: bool,
}

impl HubSubscribers {
    fn lock(&self) -> MutexGuard<'_, SubscriberList> {
        lock(&self.state)
    }

    /// Add `sender` unless the hub's task has stopped; `false` then.
    pub fn add(&self, sender: mpsc::Sender<BackplaneEvent>) -> bool {
        let mut list = self.lock();
        if !list.stopped {
            list.senders.push(sender);
        }
        !list.stopped
    }

    /// Drop every sender (their subscriptions end) and mark the task stopped.
    pub fn close(&self) {
        let mut list = self.lock();
        list.senders.clear();
        list.stopped = true;
    }

    /// Forget ended subscriptions; if none is left, mark the task stopped and return
    /// `true` (the task should end).
    pub fn prune(&self) -> bool {
        let mut list = self.lock();
        list.senders.retain(|sender| !sender.is_closed());
        if list.senders.is_empty() {
            list.stopped = true;
        }
        list.stopped
    }

    /// Send `event` to every subscription, waiting for room (backpressure: nothing is
    /// dropped), but not past `stop` turning true.
    ///
    /// # Errors
    ///
    /// `Err(())` if the node stops while waiting: the task should end.
    pub async fn send(
        &self,
        event: &BackplaneEvent,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), ()> {
        let senders = self.lock().senders.clone();
        for sender in senders {
            match sender.try_send(event.clone()) {
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
                Err(mpsc::error::TrySendError::Full(event)) => tokio::select! {
                    _ = sender.send(event) => {}
                    _ = stop.wait_for(|stop| *stop) => return Err(()),
                },
            }
        }
        Ok(())
    }

    /// Send every event of `accepted`, in order (see [`HubSubscribers::send`]).
    ///
    /// # Errors
    ///
    /// `Err(())` if the node stops while waiting.
    pub async fn deliver(
        &self,
        accepted: Accepted,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), ()> {
        for event in accepted.events() {
            self.send(&event, stop).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{Ack, EnvelopeKind};

    fn item(origin: NodeId, seq: u64, destination: Option<NodeId>) -> Stored {
        let envelope = Envelope {
            origin,
            seq,
            hub: "h".into(),
            destination,
            kind: EnvelopeKind::Ack(Ack { ack_id: seq }),
        };
        Stored::Envelope {
            origin,
            seq,
            bytes: envelope.encode().into(),
        }
    }

    #[test]
    fn echoes_duplicates_gaps_skips_and_destinations() {
        let (me, other) = (NodeId::from_u128(1), NodeId::from_u128(2));
        let mut inbox = HubInbox::new(me, "h", "the log");
        assert!(
            inbox.accept(item(me, 1, None), None).envelope.is_none(),
            "echo"
        );
        assert!(inbox.accept(item(other, 1, None), None).envelope.is_some());
        assert!(
            inbox.accept(item(other, 1, None), None).envelope.is_none(),
            "dup"
        );
        let skipped = Stored::Skipped {
            origin: other,
            first: 2,
            last: 3,
        };
        let accepted = inbox.accept(skipped, None);
        assert!(accepted.gap.is_none() && accepted.envelope.is_none());
        let gap = inbox.accept(item(other, 6, None), None);
        assert!(matches!(
            gap.gap,
            Some(GapRepair::Unrepairable { missing: 2, .. })
        ));
        assert_eq!(gap.events().count(), 2);
        let elsewhere = inbox.accept(item(other, 7, Some(NodeId::from_u128(3))), None);
        assert!(elsewhere.envelope.is_none() && elsewhere.gap.is_none());
        let mut outage = Outage::default();
        let corrupt = Stored::Envelope {
            origin: other,
            seq: 9,
            bytes: Bytes::from_static(b"junk"),
        };
        assert_eq!(inbox.accept(corrupt, Some(&mut outage)).events().count(), 0);
        assert_eq!((outage.tally.missing, outage.tally.corrupt), (1, 1));
    }

    #[test]
    fn with_a_secret_forgeries_never_move_the_tracker() {
        use crate::trust::ClusterSecret;
        let (me, other) = (NodeId::from_u128(1), NodeId::from_u128(2));
        let codec = EnvelopeCodec::new(Some(ClusterSecret::new("0123456789abcdef").unwrap()));
        let mut inbox = HubInbox::new(me, "h", "the log").with_codec(codec.clone());
        let signed = |seq| {
            let envelope = Envelope {
                origin: other,
                seq,
                hub: "h".into(),
                destination: None,
                kind: EnvelopeKind::Ack(Ack { ack_id: seq }),
            };
            Stored::Envelope {
                origin: other,
                seq,
                bytes: codec.encode(&envelope).into(),
            }
        };
        assert!(inbox.accept(signed(1), None).envelope.is_some());
        // Unsigned, far ahead: dropped, counted, and the tracker stays at 1.
        let forged = inbox.accept(item(other, u64::MAX - 1, None), None);
        assert!(forged.envelope.is_none() && forged.gap.is_none());
        assert_eq!(codec.rejected(), 1);
        let next = inbox.accept(signed(2), None);
        assert!(next.envelope.is_some() && next.gap.is_none());
    }

    #[test]
    fn a_reset_log_is_reported_even_with_nothing_missing_yet() {
        let clean = Outage::default();
        assert_eq!(
            clean.report("the log", "x"),
            GapRepair::Repaired { recovered: 0 }
        );
        let reset = Outage {
            log_reset: true,
            ..Outage::default()
        };
        assert!(matches!(
            reset.report("the log", "x"),
            GapRepair::Unrepairable { missing: 0, .. }
        ));
    }
}
