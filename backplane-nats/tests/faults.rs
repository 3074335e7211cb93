//! Fault injection on the NATS backplane, against a `nats-server -js` of the test's own
//! (file store in a temporary directory): the server killed and restarted during 10,000
//! envelopes (nothing lost; with memory storage, what was lost reported), connections cut through a proxy (nothing lost, duplicated
//! or reordered), retention trimming, a node restarted with a new id, hostile hub names,
//! and clear connect errors.

mod support;

use std::sync::Arc;
use std::time::Duration;

use backplane_core::testkit::CuttingProxy;
use backplane_core::testkit::events::{expect_connected, label_of, labelled, next_envelope};
use backplane_core::testkit::faults::{self, HUB, kill_and_restart};
use backplane_core::{Backplane, BackplaneError, GapRepair};
use backplane_nats::{NatsBackplane, NatsOptions, Storage};
use support::server;

async fn node(options: &NatsOptions) -> Arc<dyn Backplane> {
    Arc::new(
        NatsBackplane::connect(options.clone())
            .await
            .expect("starting a node"),
    )
}

/// How many messages the stream of `options` holds.
async fn stream_messages(url: &str, options: &NatsOptions) -> u64 {
    let client = async_nats::connect(url).await.expect("connecting");
    let mut stream = async_nats::jetstream::new(client)
        .get_stream(&options.prefix)
        .await
        .expect("the stream exists");
    stream.info().await.expect("stream info").state.messages
}

/// The server is killed (SIGKILL) after 3,000 of 10,000 envelopes and restarted on its
/// file store: the receiver resumes from its last stream sequence and loses nothing;
/// the publisher's retries are stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_and_restarted_during_10000_loses_nothing() {
    let mut server = server::start().await;
    let options = support::options(&server.url(), "restart");
    let (publisher, receiver) = (node(&options).await, node(&options).await);
    let (tally, published) =
        kill_and_restart("killed and restarted", &mut server, publisher, receiver).await;
    faults::assert_nothing_lost(&published, &tally);
}

/// With memory storage the stream dies with the server: the receiver neither hangs nor
/// duplicates, the reconnect says `Unrepairable` (never `Repaired`), and every number is
/// delivered, reported missing, or failed at the publisher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_memory_storage_reports_what_was_lost() {
    let mut server = server::start().await;
    let options = support::options(&server.url(), "memory").storage(Storage::Memory);
    let (publisher, receiver) = (node(&options).await, node(&options).await);
    let (tally, published) =
        kill_and_restart("memory storage", &mut server, publisher, receiver).await;
    assert!(
        tally
            .reconnects
            .iter()
            .any(|gap| matches!(gap, GapRepair::Unrepairable { .. })),
        "the stream was lost with the server: a reconnect must say so: {tally:?}"
    );
    faults::assert_every_number_accounted_for(&published, &tally);
}

/// Every connection of both nodes is cut five times during 10,000 envelopes: 0 lost,
/// 0 duplicated, in order, every reconnect repaired, every publish succeeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_cut_through_a_proxy_lose_nothing() {
    let server = server::start().await;
    let proxy = CuttingProxy::start(support::address_of(&server.url())).await;
    let options = support::options(&format!("nats://{}", proxy.address), "proxy");
    let (publisher, receiver) = (node(&options).await, node(&options).await);
    faults::connections_cut_through_a_proxy_lose_nothing(&proxy, publisher, receiver).await;
}

/// `max_messages` keeps the stream at its bound; `max_age` empties it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_trims_by_count_and_age() {
    let server = server::start().await;
    let options = support::options(&server.url(), "retention").max_messages(Some(100));
    let publisher = node(&options).await;
    faults::publish_numbered(&publisher, 1_000).await;
    let held = stream_messages(&server.url(), &options).await;
    assert_eq!(held, 100, "max_messages 100 left {held} messages");
    publisher.shutdown().await.unwrap();

    let options =
        support::options(&server.url(), "retention").max_age(Some(Duration::from_secs(1)));
    let publisher = node(&options).await;
    faults::publish_numbered(&publisher, 500).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let held = stream_messages(&server.url(), &options).await;
        if held == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "max_age 1 s still holds {held} messages after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    publisher.shutdown().await.unwrap();
}

/// A publisher restarts as a new node (new id, numbers from 1 again): the receiver
/// takes it as a new origin and delivers everything from both, reporting no loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_restarted_with_a_new_id() {
    let server = server::start().await;
    let options = support::options(&server.url(), "new-id");
    faults::node_restarted_with_a_new_id(async || node(&options).await).await;
}

/// Hub names that would be wildcards or several tokens as subjects stay apart: each
/// subscription receives its own hub's envelopes only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_hub_names_stay_apart() {
    let server = server::start().await;
    let options = support::options(&server.url(), "hostile");
    let (publisher, receiver) = (node(&options).await, node(&options).await);
    let hubs = ["a", "a.b", "*", ">", "a.>", "", " spaced\ttab "];
    let mut subscriptions = Vec::new();
    for hub in hubs {
        let mut subscription = receiver.subscribe(hub).await.unwrap();
        expect_connected(&mut subscription).await;
        subscriptions.push(subscription);
    }
    for hub in hubs {
        publisher.publish(hub, labelled(hub)).await.unwrap();
    }
    for (hub, subscription) in hubs.iter().zip(&mut subscriptions) {
        let envelope = next_envelope(subscription, hub).await;
        assert_eq!(
            (envelope.hub.as_str(), label_of(&envelope)),
            (*hub, hub.to_string())
        );
    }
    // Nothing else arrived for any of them.
    publisher.publish("fence", labelled("fence")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for subscription in &mut subscriptions {
        let extra = tokio::time::timeout(Duration::from_millis(10), subscription.recv()).await;
        assert!(
            extra.is_err(),
            "{:?} received more: {extra:?}",
            subscription.hub()
        );
    }
    publisher.shutdown().await.unwrap();
    receiver.shutdown().await.unwrap();
}

/// A node that cannot connect fails at start with an error that says what was being
/// done and never repeats the password; an envelope above `max_envelope_bytes` fails
/// with `TooLarge`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_clear_and_keep_the_password_out() {
    let options = NatsOptions::new(&faults::unreachable_url("nats"))
        .unwrap()
        .command_timeout(Duration::from_secs(2));
    let error = NatsBackplane::connect(options)
        .await
        .unwrap_err()
        .to_string();
    faults::assert_connect_error_is_clear(&error, "connecting to NATS");

    let server = server::start().await;
    let mut options = support::options(&server.url(), "too-large");
    options.node.max_envelope_bytes = 1000;
    let publisher = node(&options).await;
    let big = labelled(&"x".repeat(2000));
    assert!(matches!(
        publisher.publish(HUB, big).await,
        Err(BackplaneError::TooLarge { .. })
    ));
    publisher.shutdown().await.unwrap();
}

/// A batch of more messages than may wait for acknowledgement at once (6,000 envelopes
/// queued together, batches of up to 10,000; async-nats allows 5,000 unacknowledged) is sent in windows: every publish
/// succeeds, and the receiver gets all of them in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_larger_than_the_acknowledgement_window() {
    const MANY: u64 = 6_000;
    let server = server::start().await;
    let mut options = support::options(&server.url(), "window");
    options.node.publish_batch_size = 10_000;
    let (publisher, receiver) = (node(&options).await, node(&options).await);
    let mut subscription = receiver.subscribe(HUB).await.unwrap();
    expect_connected(&mut subscription).await;
    let publishes: Vec<_> = (0..MANY)
        .map(|i| {
            let publisher = publisher.clone();
            tokio::spawn(async move { publisher.publish(HUB, labelled(&i.to_string())).await })
        })
        .collect();
    for publish in publishes {
        publish.await.unwrap().expect("every publish succeeds");
    }
    for seq in 1..=MANY {
        let envelope = next_envelope(&mut subscription, "the window test").await;
        assert_eq!(envelope.seq, seq);
    }
    publisher.shutdown().await.unwrap();
    receiver.shutdown().await.unwrap();
}
