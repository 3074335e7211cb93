//! Labelled envelopes and bounded waits on subscriptions, shared by the backplane tests:
//! the conformance suite's own vocabulary (`backplane_core::testkit::events`), and the
//! steps the PostgreSQL tests build their scenarios from.

use backplane_core::{Backplane, BackplaneEvent, GapRepair, Subscription};

pub use backplane_core::testkit::WAIT;
pub use backplane_core::testkit::events::{
    expect_connected, label_of, labelled, next_envelope, next_event,
};

/// `node`'s subscription to `hub`, past its `Connected` event.
///
/// # Panics
///
/// Panics if the subscription fails or does not connect in time.
pub async fn subscribed(node: &(impl Backplane + ?Sized), hub: &str) -> Subscription {
    let mut subscription = node.subscribe(hub).await.unwrap();
    expect_connected(&mut subscription).await;
    subscription
}

/// Publish `label` to `hub` from `sender` and see it arrive next on `subscription`.
///
/// # Panics
///
/// Panics if the publish fails or something else arrives first.
pub async fn crosses(
    sender: &(impl Backplane + ?Sized),
    hub: &str,
    label: &str,
    subscription: &mut Subscription,
) {
    sender.publish(hub, labelled(label)).await.unwrap();
    let envelope = next_envelope(subscription, label).await;
    assert_eq!(label_of(&envelope), label);
}

/// The next event on `subscription`, which must be `Disconnected`; returns its reason.
///
/// # Panics
///
/// Panics if another event comes first, or none in time.
pub async fn expect_disconnected(subscription: &mut Subscription) -> String {
    match next_event(subscription, "Disconnected").await {
        BackplaneEvent::Disconnected { reason } => reason,
        other => panic!("expected Disconnected, got {other:?}"),
    }
}

/// The events on `subscription` up to the envelope labelled `last`: an envelope as its
/// label, an unrepairable gap as `unrepairable:<missing>`, anything else as its `Debug`.
///
/// # Panics
///
/// Panics if an event does not arrive in time.
pub async fn events_until(subscription: &mut Subscription, last: &str) -> Vec<String> {
    let mut events = Vec::new();
    loop {
        let event = next_event(subscription, &format!("events up to {last:?}")).await;
        let done = matches!(&event, BackplaneEvent::Envelope(e) if label_of(e) == last);
        events.push(match event {
            BackplaneEvent::Envelope(e) => label_of(&e),
            BackplaneEvent::Reconnected {
                gap: GapRepair::Unrepairable { missing, .. },
            } => format!("unrepairable:{missing}"),
            other => format!("{other:?}"),
        });
        if done {
            return events;
        }
    }
}
