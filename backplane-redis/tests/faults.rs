//! Fault injection on the Redis backplane: a `redis-server` of the test's own killed and
//! restarted during 10,000 envelopes (without persistence: what it lost is reported,
//! nothing duplicated; with `appendfsync always`: nothing lost), connections cut through
//! a proxy (nothing lost), retention trimming, and a node restarted with a new id.

mod support;

use std::sync::Arc;
use std::time::Duration;

use backplane_core::testkit::CuttingProxy;
use backplane_core::testkit::events::{expect_connected, label_of, labelled};
use backplane_core::testkit::faults::{
    HUB, Published, Tally, assert_acknowledged_delivered, finished, publish_all, receive,
};
use backplane_core::{Backplane, BackplaneEvent, GapRepair};
use backplane_redis::{RedisBackplane, RedisOptions};
use support::server::TestServer;

async fn node(options: &RedisOptions) -> Arc<dyn Backplane> {
    Arc::new(
        RedisBackplane::connect(options.clone())
            .await
            .expect("starting a node"),
    )
}

async fn restart_during_10000(persistent: bool) -> (Tally, Published) {
    let mut server = if persistent {
        TestServer::start_persistent().await
    } else {
        TestServer::start().await
    };
    let options = support::options(&server.url(), "restart");
    let (publisher, receiver) = (node(&options).await, node(&options).await);
    let mut subscription = receiver.subscribe(HUB).await.unwrap();
    expect_connected(&mut subscription).await;
    let done = Arc::new(std::sync::Mutex::new(None));
    let publishing = publish_all(publisher.clone(), done.clone());
    let server_ref = &mut server;
    let tally = receive(
        &mut subscription,
        publisher.node_id(),
        finished(&done),
        3_000,
        async move || {
            server_ref.kill().await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            server_ref.restart().await;
        },
    )
    .await;
    let published = publishing.await.unwrap();
    publisher.shutdown().await.unwrap();
    receiver.shutdown().await.unwrap();
    (tally, published)
}

/// A Redis without persistence restarts mid-stream: entries not read yet are gone with
/// it. The receiver neither hangs nor duplicates; it reports exactly what it could not
/// recover, and receives everything published after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_without_persistence_reports_what_was_lost() {
    let (tally, published) = restart_during_10000(false).await;
    println!(
        "without persistence: {} numbered, {} ok; receiver: {tally:?}",
        published.numbered, published.ok
    );
    assert!(tally.disconnects >= 1, "{tally:?}");
    assert!(
        matches!(
            tally.reconnects.first(),
            Some(GapRepair::Unrepairable { .. })
        ),
        "the stream was lost with the server: the reconnect must not claim a full repair: {tally:?}"
    );
    // Each number is delivered, reported missing, or its publish failed (a failed
    // publish may have been stored and delivered too); the receiver never counts one
    // number twice.
    assert!(
        tally.delivered + tally.missing <= published.numbered
            && tally.delivered + tally.missing + (published.numbered - published.ok)
                >= published.numbered,
        "numbers unaccounted for: {published:?} {tally:?}"
    );
}

/// With `appendfsync always`, a killed Redis keeps every acknowledged entry: the
/// receiver resumes from its last id and loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_appendfsync_always_loses_nothing() {
    let (tally, published) = restart_during_10000(true).await;
    println!(
        "with appendfsync always: {} numbered, {} ok; receiver: {tally:?}",
        published.numbered, published.ok
    );
    assert!(tally.disconnects >= 1, "{tally:?}");
    assert_eq!(tally.missing, 0, "{tally:?}");
    assert_acknowledged_delivered(&published, &tally);
    assert!(
        tally
            .reconnects
            .iter()
            .all(|gap| matches!(gap, GapRepair::Repaired { .. })),
        "{tally:?}"
    );
}

/// Every connection of both nodes is cut five times during 10,000 envelopes: 0 lost,
/// 0 duplicated, in order, every reconnect repaired, every publish succeeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_cut_through_a_proxy_lose_nothing() {
    let server = TestServer::start().await;
    let target = format!("127.0.0.1:{}", server.port).parse().unwrap();
    let proxy = CuttingProxy::start(target).await;
    let options = support::options(&format!("redis://{}", proxy.address), "proxy");
    let (publisher, receiver) = (node(&options).await, node(&options).await);
    let mut subscription = receiver.subscribe(HUB).await.unwrap();
    expect_connected(&mut subscription).await;
    let done = Arc::new(std::sync::Mutex::new(None));
    let publishing = publish_all(publisher.clone(), done.clone());
    let cutter = {
        let proxy = &proxy;
        async move || {
            for _ in 0..5 {
                proxy.cut();
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        }
    };
    let tally = receive(
        &mut subscription,
        publisher.node_id(),
        finished(&done),
        2_000,
        cutter,
    )
    .await;
    let published = publishing.await.unwrap();
    assert_eq!(
        published.ok, published.numbered,
        "every publish must succeed across cuts: {published:?}"
    );
    assert_eq!(tally.delivered, published.numbered, "{tally:?}");
    assert_acknowledged_delivered(&published, &tally);
    assert_eq!(tally.missing, 0, "{tally:?}");
    assert!(tally.disconnects >= 1, "{tally:?}");
    assert!(
        tally
            .reconnects
            .iter()
            .all(|gap| matches!(gap, GapRepair::Repaired { .. })),
        "{tally:?}"
    );
    publisher.shutdown().await.unwrap();
    receiver.shutdown().await.unwrap();
}

/// `max_len` keeps a stream near its bound; `max_age` trims old entries and expires
/// the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_trims_by_length_and_age() {
    let server = TestServer::start().await;
    let mut admin = support::admin(&server.url()).await;
    let options = support::options(&server.url(), "retention").max_len(Some(100));
    let key = options.stream_key(HUB);
    let publisher = node(&options).await;
    for i in 0..1_000 {
        publisher
            .publish(HUB, labelled(&i.to_string()))
            .await
            .unwrap();
    }
    let length: u64 = redis::cmd("XLEN")
        .arg(&key)
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(
        (100..300).contains(&length),
        "MAXLEN ~ 100 left {length} entries"
    );
    publisher.shutdown().await.unwrap();

    let options = support::options(&server.url(), "retention")
        .max_len(None)
        .max_age(Some(Duration::from_millis(1_000)));
    let key = options.stream_key(HUB);
    let publisher = node(&options).await;
    for i in 0..500 {
        publisher
            .publish(HUB, labelled(&i.to_string()))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    publisher.publish(HUB, labelled("late")).await.unwrap();
    let length: u64 = redis::cmd("XLEN")
        .arg(&key)
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(length < 200, "MINID ~ by age left {length} of 501 entries");
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(
        (1..=1_000).contains(&ttl),
        "the stream must expire with max_age, PTTL {ttl}"
    );
    publisher.shutdown().await.unwrap();
}

/// A publisher restarts as a new node (new id, numbers from 1 again): the receiver
/// takes it as a new origin and delivers everything from both, reporting no loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_restarted_with_a_new_id() {
    let server = TestServer::start().await;
    let options = support::options(&server.url(), "new-id");
    let receiver = node(&options).await;
    let mut subscription = receiver.subscribe(HUB).await.unwrap();
    expect_connected(&mut subscription).await;
    let mut origins = Vec::new();
    for life in 0..2 {
        let publisher = node(&options).await;
        origins.push(publisher.node_id());
        for i in 0..100 {
            publisher
                .publish(HUB, labelled(&format!("{life}/{i}")))
                .await
                .unwrap();
        }
        publisher.shutdown().await.unwrap();
    }
    assert_ne!(origins[0], origins[1]);
    for (life, origin) in origins.iter().enumerate() {
        for i in 0..100u64 {
            match tokio::time::timeout(Duration::from_secs(30), subscription.recv()).await {
                Ok(Some(BackplaneEvent::Envelope(envelope))) => {
                    assert_eq!((envelope.origin, envelope.seq), (*origin, i + 1));
                    assert_eq!(label_of(&envelope), format!("{life}/{i}"));
                }
                other => panic!("expected envelope {life}/{i}, got {other:?}"),
            }
        }
    }
    receiver.shutdown().await.unwrap();
}

/// A node that cannot connect fails at start with an error that says what was being
/// done, and never repeats the password; `rediss://` without the `tls` feature says
/// which feature to enable.
#[tokio::test]
async fn connect_errors_are_clear_and_keep_the_password_out() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }; // closed again: nothing listens there
    let options = RedisOptions::new(&format!("redis://app:s3cr3t@127.0.0.1:{port}"))
        .unwrap()
        .command_timeout(Duration::from_secs(2));
    let error = RedisBackplane::connect(options)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("connecting to Redis"), "{error}");
    assert!(!error.contains("s3cr3t"), "{error}");
    if !cfg!(feature = "tls") {
        let error = RedisOptions::new("rediss://app:s3cr3t@127.0.0.1:6380")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("feature `tls`") && !error.contains("s3cr3t"),
            "{error}"
        );
    }
}
