//! A backend-neutral check that a backplane works end to end: one node subscribes, the
//! other sends it an envelope, and it arrives. `hub-server doctor` runs it for backends
//! whose own diagnostics stop at "connected".

use std::time::{Duration, Instant};

use crate::backplane::{Backplane, BackplaneEvent};
use crate::envelope::{Ack, EnvelopeKind};

/// Subscribe `receiver` to `hub`, send it one envelope from `sender` (addressed to
/// `receiver` alone, so other nodes on the hub skip it), and wait for it.
///
/// # Errors
///
/// What failed (subscribe, send, or nothing arriving within `timeout`), for a human.
pub async fn round_trip(
    sender: &dyn Backplane,
    receiver: &dyn Backplane,
    hub: &str,
    timeout: Duration,
) -> Result<Duration, String> {
    let mut subscription = receiver
        .subscribe(hub)
        .await
        .map_err(|error| format!("subscribing failed: {error}"))?;
    let started = Instant::now();
    let ack_id = u64::from(sender.node_id().as_u128() as u32);
    sender
        .send_to(receiver.node_id(), hub, EnvelopeKind::Ack(Ack { ack_id }))
        .await
        .map_err(|error| format!("publishing failed: {error}"))?;
    let wait = async {
        while let Some(event) = subscription.recv().await {
            if let BackplaneEvent::Envelope(envelope) = event
                && envelope.origin == sender.node_id()
            {
                return Ok(started.elapsed());
            }
        }
        Err("the subscription ended".to_owned())
    };
    tokio::time::timeout(timeout, wait)
        .await
        .map_err(|_| format!("the envelope did not arrive within {timeout:?}"))?
}
