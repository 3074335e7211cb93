//! Labelled envelopes and bounded waits on subscriptions: the vocabulary of the
//! conformance cases, public so that a backplane's own tests can speak it too.

use std::sync::Arc;

use super::{RecordingSink, WAIT};
use crate::backplane::{BackplaneEvent, Subscription};
use crate::envelope::{Envelope, EnvelopeKind, Target};
use crate::message::Protocol;

/// An invocation for everyone whose JSON encoding is `label` (see
/// [`RecordingSink::message`]).
pub fn labelled(label: &str) -> EnvelopeKind {
    EnvelopeKind::Invocation {
        target: Target::All,
        message: RecordingSink::message(label),
    }
}

/// The label of an envelope made by [`labelled`].
///
/// # Panics
///
/// Panics if the envelope is not an invocation with a JSON encoding.
pub fn label_of(envelope: &Envelope) -> String {
    match &envelope.kind {
        EnvelopeKind::Invocation { message, .. } => String::from_utf8_lossy(
            message
                .get(Protocol::Json)
                .expect("invocation without a JSON encoding"),
        )
        .into_owned(),
        other => panic!("expected an invocation, received {other:?}"),
    }
}

/// The next event of `subscription`.
///
/// # Panics
///
/// Panics, naming `what`, if none arrives within [`WAIT`] or the subscription ends.
pub async fn next_event(subscription: &mut Subscription, what: &str) -> BackplaneEvent {
    match tokio::time::timeout(WAIT, subscription.recv()).await {
        Ok(Some(event)) => event,
        Ok(None) => panic!(
            "{what}: subscription to {:?} ended unexpectedly",
            subscription.hub()
        ),
        Err(_) => panic!(
            "{what}: nothing within {WAIT:?} on hub {:?}",
            subscription.hub()
        ),
    }
}

/// The next envelope of `subscription`, skipping lifecycle events.
///
/// # Panics
///
/// Panics, naming `what`, if none arrives within [`WAIT`] or the subscription ends.
pub async fn next_envelope(subscription: &mut Subscription, what: &str) -> Arc<Envelope> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, subscription.recv()).await {
            Err(_) => panic!(
                "{what}: no envelope within {WAIT:?} on hub {:?}",
                subscription.hub()
            ),
            Ok(None) => panic!(
                "{what}: subscription to {:?} ended unexpectedly",
                subscription.hub()
            ),
            Ok(Some(BackplaneEvent::Envelope(envelope))) => return envelope,
            Ok(Some(_lifecycle)) => continue,
        }
    }
}

/// Wait for the `Connected` event that starts every subscription.
///
/// # Panics
///
/// Panics if the first event is anything else, or none arrives within [`WAIT`].
pub async fn expect_connected(subscription: &mut Subscription) {
    match next_event(subscription, "Connected").await {
        BackplaneEvent::Connected => {}
        other => panic!("the first event of a subscription must be Connected, got {other:?}"),
    }
}
