//! Notifications as they arrive: verified, decoded (inline envelopes, references to
//! rows), checked against the sequence tracker; references and gaps go to the table.

use backplane_core::sequencing::Observation;
use backplane_core::{CodecError, Envelope};

use super::repair::Range;
use super::state::{Interrupt, Listener, Repair};
use crate::notification::{self, Notification};

impl Listener {
    /// Handle one notification.
    pub(super) async fn process(
        &mut self,
        notification: &tokio_postgres::Notification,
    ) -> Result<(), Interrupt> {
        let node = self.shared.node;
        let channel = notification.channel();
        if !self.channels.contains_key(channel) {
            return Ok(());
        }
        let text = notification.payload();
        if notification::origin_of(text) == Some(node) {
            return Ok(()); // our own echo
        }
        let codec = self.shared.codec.clone();
        let text = match notification::open(&codec, channel, text) {
            Ok(text) => text,
            Err(error) => {
                self.drop_unverified(channel, &error, text);
                return Ok(());
            }
        };
        match notification::parse(text) {
            Err(error) => {
                tracing::warn!(%node, channel, %error, payload_prefix = %prefix(text), "[Processor] skipping a corrupt notification");
            }
            Ok(Notification::Inline { origin, pack }) => {
                for entry in notification::entries(&pack) {
                    let bytes = match entry {
                        Ok(bytes) => bytes,
                        Err(error) => {
                            tracing::warn!(%node, channel, %origin, %error, "[Processor] skipping the rest of a corrupt notification");
                            break;
                        }
                    };
                    match codec.decode(bytes) {
                        Ok(envelope) if envelope.origin == origin => {
                            self.accept_live(channel, envelope).await?;
                        }
                        Err(error @ CodecError::Unauthenticated) => {
                            // Counted by the codec; it never reaches the tracker.
                            tracing::warn!(%node, channel, %origin, %error, "[Processor] dropping an envelope in a notification");
                        }
                        Ok(envelope) => {
                            tracing::warn!(%node, channel, %origin, claimed = %envelope.origin, "[Processor] skipping an envelope whose origin does not match its notification");
                        }
                        Err(error) => {
                            // Its sequence number is unknown: the next envelope from this
                            // origin shows a gap, which is repaired from the table.
                            tracing::warn!(%node, channel, %origin, %error, "[Processor] skipping a corrupt envelope in a notification");
                        }
                    }
                }
            }
            Ok(Notification::Reference {
                origin,
                from,
                to,
                hub,
            }) => {
                if !self.is_subscribed(channel, &hub) {
                    // A reference signed by a node with a cluster secret reaches a node
                    // without one with the tag glued to its hub name: say so and count it.
                    if notification::signed_reference_hub(&codec, &hub)
                        .is_some_and(|hub| self.is_subscribed(channel, hub))
                    {
                        let error = notification::NotificationError::SignedButNoSecret;
                        self.drop_unverified(channel, &error, text);
                    }
                    return Ok(());
                }
                if self
                    .tracker
                    .last(origin, &hub)
                    .is_some_and(|last| last >= to)
                {
                    return Ok(());
                }
                // Only a range the table holds is believed: a forged reference naming a
                // far-ahead range changes nothing.
                let table = self.channels[channel].table.clone();
                if !self.holds(&table, origin, &hub, from, to).await? {
                    self.shared.codec.reject();
                    tracing::warn!(%node, %origin, hub, from, to, "[Processor] dropping a reference to rows the table does not hold (forged?)");
                    return Ok(());
                }
                // A gap in front of the referenced rows is repaired (and reported) first,
                // as in front of an inline envelope.
                let start = self
                    .tracker
                    .last(origin, &hub)
                    .map_or(from, |last| last + 1);
                if start < from {
                    tracing::debug!(%node, %origin, hub, from = start, to = from - 1, "[Processor] sequence gap; reading the missing envelopes from the table");
                    self.read_and_apply(channel, origin, &hub, start, from - 1, Range::Gap)
                        .await?;
                }
                // Only rows found move the tracker (a reference may name more).
                self.read_and_apply(
                    channel,
                    origin,
                    &hub,
                    start.max(from),
                    to,
                    Range::Referenced,
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Deliver one envelope seen while connected. The next one of its origin is
    /// delivered as it is. The first one seen from its origin, or one after a sequence
    /// gap, could be a forged notification naming a real node and a far-ahead number
    /// (which would make every later envelope of that node look like a duplicate): the
    /// table must hold its row, or it is dropped and counted and the tracker does not
    /// move; then the gap is read from the table (and reported) before it is delivered.
    pub(super) async fn accept_live(
        &mut self,
        channel: &str,
        envelope: Envelope,
    ) -> Result<(), Interrupt> {
        let (origin, seq) = (envelope.origin, envelope.seq);
        if !self.is_subscribed(channel, &envelope.hub) {
            return Ok(());
        }
        let observation = self.tracker.observe(origin, &envelope.hub, seq);
        let gap = match observation {
            Observation::Duplicate => return Ok(()),
            Observation::Gap { from, to } => Some((from, to)),
            Observation::First | Observation::Next => None,
        };
        let first = observation == Observation::First;
        if gap.is_some() || first {
            let table = self.channels[channel].table.clone();
            // Its row committed before its notification left: there now, or never.
            if !self.holds(&table, origin, &envelope.hub, seq, seq).await? {
                self.shared.codec.reject();
                tracing::warn!(node = %self.shared.node, %origin, hub = %envelope.hub, seq, "[Processor] dropping a notified envelope the table does not hold (forged?)");
                return Ok(());
            }
        }
        if let Some((from, to)) = gap {
            tracing::debug!(node = %self.shared.node, %origin, hub = %envelope.hub, from, to, "[Processor] sequence gap; reading the missing envelopes from the table");
            self.read_and_apply(channel, origin, &envelope.hub, from, to, Range::Gap)
                .await?;
        }
        let mut repair = Repair::default();
        self.tracker.advance(origin, &envelope.hub, seq);
        self.deliver(channel, envelope, &mut repair).await
    }

    /// Count and log a notification dropped for `error`, which failed verification.
    fn drop_unverified(&self, channel: &str, error: &notification::NotificationError, text: &str) {
        self.shared.codec.reject();
        let node = self.shared.node;
        tracing::warn!(%node, channel, %error, payload_prefix = %prefix(text), "[Processor] dropping a notification");
    }
}

/// The start of a notification, for logs (never the whole of a large payload).
fn prefix(text: &str) -> &str {
    let mut end = text.len().min(80);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
