//! The PostgreSQL backplane under connection faults: its listening, publishing and
//! reading connections killed, a silent partition, and subscriptions that end and begin
//! again. (Bad data and refused rows: `postgres_data_faults.rs`.)

use std::collections::HashSet;
use std::time::Duration;

use backplane_core::testkit::RecordingSink;
use backplane_core::{Backplane, BackplaneEvent, EnvelopeKind, GapRepair, Target};
use futures_util::StreamExt as _;
use tests::TestSchema;
use tests::events::{
    crosses, expect_disconnected, label_of, labelled, next_envelope, next_event, subscribed,
};
use tests::scene::{BehindProxy, TwoNodes, behind_proxy};

const HUB: &str = "faults";

/// Pass `i` on, pausing before every `every`-th: keeps a publishing stream running long
/// enough for faults to hit it. (The pause happens before the publish future exists,
/// so the publishes are still first polled in order.)
async fn pace(i: u64, every: u64, pause: Duration) -> u64 {
    if i.is_multiple_of(every) {
        tokio::time::sleep(pause).await;
    }
    i
}

/// The listener's backend is killed three times while another node publishes 10,000
/// envelopes: every one arrives exactly once, in order, and each outage is reported as
/// `Disconnected` then `Reconnected` with nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_killed_three_times_during_10000_envelopes() {
    const COUNT: u64 = 10_000;
    let nodes = TwoNodes::start("listener_killed").await;
    let (schema, sender, receiver) = (&nodes.schema, &nodes.sender, &nodes.receiver);
    let mut subscription = subscribed(receiver, HUB).await;

    let publisher = sender.clone();
    let publishing = tokio::spawn(async move {
        // Several publishes in flight at once (numbered in first-poll order), paced so
        // the stream is still running while the listener is killed.
        futures_util::stream::iter(0..COUNT)
            .then(|i| pace(i, 100, Duration::from_millis(10)))
            .map(|i| {
                let publisher = publisher.clone();
                async move { publisher.publish(HUB, labelled(&i.to_string())).await }
            })
            .buffered(16)
            .for_each(|result| async move { result.expect("publish failed") })
            .await;
    });

    let kill_after = [1_000, 4_000, 7_000];
    let (mut received, mut disconnects, mut reconnects, mut recovered) = (0u64, 0, 0, 0);
    while received < COUNT || reconnects < kill_after.len() {
        match next_event(&mut subscription, &format!("envelope {received}")).await {
            BackplaneEvent::Envelope(envelope) => {
                assert_eq!(envelope.origin, sender.node_id());
                assert_eq!(
                    envelope.seq,
                    received + 1,
                    "envelopes must arrive once each, in order"
                );
                assert_eq!(label_of(&envelope), received.to_string());
                received += 1;
                if kill_after.contains(&received) {
                    schema.terminate("listener", receiver.node_id()).await;
                }
            }
            BackplaneEvent::Disconnected { .. } => disconnects += 1,
            BackplaneEvent::Reconnected { gap } => {
                let GapRepair::Repaired { recovered: n } = gap else {
                    panic!("nothing may be lost across a reconnect: {gap:?}");
                };
                recovered += n;
                reconnects += 1;
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
    publishing.await.expect("publisher task panicked");
    assert_eq!((disconnects, reconnects), (3, 3), "each kill is one outage");
    // Nothing more (no duplicate) before a fence.
    sender.publish(HUB, labelled("fence")).await.unwrap();
    let fence = next_envelope(&mut subscription, "fence").await;
    assert_eq!(label_of(&fence), "fence");
    eprintln!("{recovered} envelopes were recovered from the table during the 3 outages");
    nodes.finish().await;
}

/// The publishing connection is killed mid-stream: every publish either succeeded, and
/// its envelope arrives exactly once, or returned an error; nothing vanishes silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_killed_mid_stream() {
    const COUNT: u64 = 5_000;
    let nodes = TwoNodes::start("publisher_killed").await;
    let (schema, sender, receiver) = (&nodes.schema, &nodes.sender, &nodes.receiver);
    let mut subscription = subscribed(receiver, HUB).await;

    let publisher = sender.clone();
    let publishing = tokio::spawn(async move {
        futures_util::stream::iter(0..COUNT)
            .then(|i| pace(i, 50, Duration::from_millis(5)))
            .map(|i| {
                let publisher = publisher.clone();
                async move { (i, publisher.publish(HUB, labelled(&i.to_string())).await) }
            })
            .buffered(16)
            .collect::<Vec<_>>()
            .await
    });
    let mut kills = 0;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        if publishing.is_finished() {
            break;
        }
        kills += schema.terminate("publisher", sender.node_id()).await;
    }
    let results = publishing.await.expect("publisher task panicked");
    assert!(
        kills >= 1,
        "the publisher finished before it could be killed"
    );
    sender.publish(HUB, labelled("end")).await.unwrap();

    let succeeded: HashSet<String> = results
        .iter()
        .filter(|(_, result)| result.is_ok())
        .map(|(i, _)| i.to_string())
        .collect();
    let failed = results.len() - succeeded.len();
    let mut seen = HashSet::new();
    let mut last_seq = 0;
    loop {
        match next_event(&mut subscription, "envelopes up to the end marker").await {
            BackplaneEvent::Envelope(envelope) => {
                let label = label_of(&envelope);
                assert!(envelope.seq > last_seq, "out of order");
                last_seq = envelope.seq;
                if label == "end" {
                    break;
                }
                assert!(seen.insert(label.clone()), "{label} arrived twice");
            }
            BackplaneEvent::Reconnected { gap } => {
                panic!("the receiver's connection was never cut, yet it reported {gap:?}")
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
    let lost: Vec<&String> = succeeded.difference(&seen).collect();
    assert!(
        lost.is_empty(),
        "publishes that returned Ok never arrived: {lost:?}"
    );
    eprintln!("{kills} kills, {} ok, {failed} failed", succeeded.len());
    nodes.finish().await;
}

/// A partition that leaves the listener's TCP connection established but silent is
/// noticed by the probe within seconds (TCP keepalive alone would not notice: the
/// proxy's kernel keeps acknowledging); after it heals, everything published meanwhile
/// is recovered from the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_partition_is_noticed_and_repaired() {
    let schema = TestSchema::create("partition").await;
    let sender = schema.nodes(1).await.remove(0);
    let BehindProxy {
        proxy,
        node: receiver,
        mut subscription,
    } = behind_proxy(&schema, HUB).await;
    crosses(&sender, HUB, "before", &mut subscription).await;

    proxy.partition(true);
    let cut = tokio::time::Instant::now();
    for i in 0..100 {
        sender.publish(HUB, labelled(&i.to_string())).await.unwrap();
    }
    let reason = expect_disconnected(&mut subscription).await;
    assert!(reason.contains("probe"), "{reason}");
    let noticed = cut.elapsed();
    assert!(
        noticed < Duration::from_secs(10),
        "a silent connection took {noticed:?} to notice"
    );
    proxy.partition(false);
    for i in 0..100 {
        let envelope = next_envelope(&mut subscription, &format!("envelope {i}")).await;
        assert_eq!(label_of(&envelope), i.to_string());
    }
    match next_event(&mut subscription, "Reconnected").await {
        BackplaneEvent::Reconnected {
            gap: GapRepair::Repaired { recovered },
        } => assert_eq!(recovered, 100),
        other => panic!("expected a repaired reconnect, got {other:?}"),
    }
    sender.shutdown().await.unwrap();
    receiver.shutdown().await.unwrap();
    schema.drop().await;
}

/// A hub subscribed again after its last subscription ended starts afresh: nothing
/// published in between is replayed (it was published before the new subscription).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_subscription_does_not_replay_the_past() {
    let nodes = TwoNodes::start("resubscribe").await;
    let (sender, receiver) = (&nodes.sender, &nodes.receiver);
    let mut first = subscribed(receiver, HUB).await;
    crosses(sender, HUB, "a", &mut first).await;
    // A second hub on the same node serves as a fence: notifications reach the listener
    // in commit order and are handled one at a time, so once the fence arrives, b, c and
    // d have been handled (while nobody subscribed to the hub).
    let mut fence = subscribed(receiver, "fence").await;
    drop(first);
    for label in ["b", "c", "d"] {
        sender.publish(HUB, labelled(label)).await.unwrap();
    }
    crosses(sender, "fence", "fence", &mut fence).await;
    let mut second = subscribed(receiver, HUB).await;
    sender.publish(HUB, labelled("e")).await.unwrap();
    let envelope = next_envelope(&mut second, "e").await;
    assert_eq!(label_of(&envelope), "e", "an old envelope was replayed");
    nodes.finish().await;
}

/// The connection that reads rows (large envelopes, gaps, catch-up) is killed: the next
/// read reopens it, and nothing is lost or reported lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_killed_is_reopened() {
    let nodes = TwoNodes::start("reader_killed").await;
    let (schema, sender, receiver) = (&nodes.schema, &nodes.sender, &nodes.receiver);
    let mut subscription = subscribed(receiver, HUB).await;
    let big = |label: &str| EnvelopeKind::Invocation {
        target: Target::All,
        message: RecordingSink::message(&format!("{label}{}", "x".repeat(10_000))),
    };
    for round in 0..3 {
        schema.terminate("reader", receiver.node_id()).await;
        sender.publish(HUB, big(&round.to_string())).await.unwrap();
        match next_event(&mut subscription, "a large envelope").await {
            BackplaneEvent::Envelope(e) => {
                assert!(label_of(&e).starts_with(&round.to_string()));
            }
            other => panic!("expected the envelope, got {other:?}"),
        }
    }
    let second = receiver.subscribe("another").await;
    assert!(
        second.is_ok(),
        "subscribing after a reader kill: {second:?}"
    );
    nodes.finish().await;
}
