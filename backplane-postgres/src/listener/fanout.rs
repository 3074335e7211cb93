//! Fan-out: envelopes and events handed to a hub's subscriptions (waiting for room:
//! backpressure), ended subscriptions pruned, `Disconnected` and `Reconnected` reported
//! to all.

use std::collections::HashMap;
use std::sync::Arc;

use backplane_core::{BackplaneEvent, Envelope, GapRepair};
use tokio::sync::mpsc;

use super::state::{Interrupt, Listener, Repair, STORAGE};

impl Listener {
    /// Hand an envelope to the hub's subscriptions (waiting for room: backpressure).
    pub(super) async fn deliver(
        &mut self,
        channel: &str,
        envelope: Envelope,
        repair: &mut Repair,
    ) -> Result<(), Interrupt> {
        let node = self.shared.node;
        if envelope.destination.is_some_and(|d| d != node) {
            return Ok(()); // addressed to another node; its sequence is tracked anyway
        }
        tracing::debug!(%node, origin = %envelope.origin, hub = envelope.hub, seq = envelope.seq, "[Processor] envelope received");
        repair.recovered += 1;
        let hub = envelope.hub.clone();
        self.send_to_hub(channel, &hub, BackplaneEvent::Envelope(Arc::new(envelope)))
            .await
    }

    /// Send `event` to every subscription of `hub`, dropping subscriptions that ended.
    pub(super) async fn send_to_hub(
        &mut self,
        channel: &str,
        hub: &str,
        event: BackplaneEvent,
    ) -> Result<(), Interrupt> {
        let Some(senders) = self
            .channels
            .get_mut(channel)
            .and_then(|c| c.hubs.get_mut(hub))
        else {
            return Ok(());
        };
        let mut closed = false;
        for sender in senders.iter() {
            match sender.try_send(event.clone()) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Closed(_)) => closed = true,
                // Full: wait for room (backpressure), but not past shutdown.
                Err(mpsc::error::TrySendError::Full(event)) => tokio::select! {
                    sent = sender.send(event) => closed |= sent.is_err(),
                    _ = self.shutdown.wait_for(|stop| *stop) => return Err(Interrupt::Shutdown),
                },
            }
        }
        if closed {
            senders.retain(|sender| !sender.is_closed());
            if senders.is_empty() {
                // Nobody listens to this hub on this node any more: stop decoding and
                // tracking its envelopes (the channel stays LISTENed; cheap).
                if let Some(channel) = self.channels.get_mut(channel) {
                    channel.hubs.remove(hub);
                }
                // A later subscription starts afresh, not with what was published
                // while nobody here listened.
                self.tracker.forget_hub(hub);
            }
        }
        Ok(())
    }

    /// Every (channel, hub) with subscriptions, copied out: sending to them needs the
    /// listener mutably (it prunes subscriptions that ended).
    fn subscribed_hubs(&self) -> Vec<(String, String)> {
        self.channels
            .iter()
            .flat_map(|(name, c)| c.hubs.keys().map(move |hub| (name.clone(), hub.clone())))
            .collect()
    }

    /// Send an event to every subscription of every hub.
    pub(super) async fn broadcast(&mut self, event: impl Fn() -> BackplaneEvent) {
        let targets = self.subscribed_hubs();
        for (channel, hub) in targets {
            if self.send_to_hub(&channel, &hub, event()).await.is_err() {
                return;
            }
        }
    }

    /// Report `Disconnected` once per outage.
    pub(super) async fn report_outage(&mut self, outage: &mut Option<String>, reason: String) {
        if outage.is_none() {
            self.broadcast(|| BackplaneEvent::Disconnected {
                reason: reason.clone(),
            })
            .await;
            *outage = Some(reason);
        }
    }

    pub(super) async fn report_reconnected(&mut self, repairs: HashMap<(String, String), Repair>) {
        let targets = self.subscribed_hubs();
        for (channel, hub) in targets {
            let repair = repairs
                .get(&(channel.clone(), hub.clone()))
                .copied()
                .unwrap_or_default();
            let gap = repair.outcome("while disconnected", STORAGE);
            if let GapRepair::Unrepairable { .. } = gap {
                tracing::warn!(node = %self.shared.node, hub, ?gap, "[Listener] reconnected with envelopes lost");
            }
            if self
                .send_to_hub(&channel, &hub, BackplaneEvent::Reconnected { gap })
                .await
                .is_err()
            {
                return;
            }
        }
    }
}
