//! Labelled envelopes and bounded waits on subscriptions, shared by the backplane tests.

use std::sync::Arc;
use std::time::Duration;

use backplane_core::testkit::RecordingSink;
use backplane_core::{BackplaneEvent, Envelope, EnvelopeKind, Protocol, Subscription, Target};

/// How long a test waits for an event it expects.
pub const WAIT: Duration = Duration::from_secs(30);

/// An invocation for everyone whose JSON encoding is `label`.
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
/// Panics if the envelope is not such an invocation.
pub fn label_of(envelope: &Envelope) -> String {
    match &envelope.kind {
        EnvelopeKind::Invocation { message, .. } => String::from_utf8_lossy(
            message
                .get(Protocol::Json)
                .expect("invocation without a JSON encoding"),
        )
        .into_owned(),
        other => panic!("expected a labelled invocation, got {other:?}"),
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
        Ok(None) => panic!("{what}: the subscription ended"),
        Err(_) => panic!("{what}: nothing within {WAIT:?}"),
    }
}

/// The next envelope of `subscription`, skipping lifecycle events.
///
/// # Panics
///
/// As [`next_event`].
pub async fn next_envelope(subscription: &mut Subscription, what: &str) -> Arc<Envelope> {
    loop {
        if let BackplaneEvent::Envelope(envelope) = next_event(subscription, what).await {
            return envelope;
        }
    }
}

/// Wait for the `Connected` event that starts every subscription.
///
/// # Panics
///
/// If the first event is anything else.
pub async fn expect_connected(subscription: &mut Subscription) {
    match next_event(subscription, "Connected").await {
        BackplaneEvent::Connected => {}
        other => panic!("the first event must be Connected, got {other:?}"),
    }
}
