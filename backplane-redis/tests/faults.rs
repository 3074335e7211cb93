//! Fault injection on the Redis backplane: a `redis-server` of the test's own killed and
//! restarted during 10,000 envelopes (without persistence: what it lost is reported,
//! nothing duplicated; with `appendfsync always`: nothing lost), connections cut through
//! a proxy (nothing lost), retention trimming, and a node restarted with a new id.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use backplane_core::testkit::CuttingProxy;
use backplane_core::testkit::events::{expect_connected, label_of, labelled};
use backplane_core::{Backplane, BackplaneEvent, GapRepair, NodeId, Subscription};
use backplane_redis::{RedisBackplane, RedisOptions};
use support::server::TestServer;

const HUB: &str = "faults";
const COUNT: usize = 10_000;
const TASKS: usize = 8;

/// What a receiver saw from one origin.
#[derive(Debug, Default)]
struct Tally {
    delivered: u64,
    /// The labels delivered (not printed: 10,000 of them).
    labels: Labels,
    /// Numbers reported unrepairable.
    missing: u64,
    disconnects: usize,
    reconnects: Vec<GapRepair>,
}

/// How a publishing run went.
#[derive(Debug, Clone)]
struct Published {
    /// Sequence numbers handed out (envelopes and fences, failed or not).
    numbered: u64,
    /// Publishes that returned `Ok`.
    ok: u64,
    /// Labels whose publish returned an error (it may have been stored anyway: an error
    /// after a lost reply does not say it was not).
    failed: HashSet<String>,
}

/// Delivered labels, kept out of `Debug` output.
#[derive(Default)]
struct Labels(HashSet<String>);

impl std::fmt::Debug for Labels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} labels", self.0.len())
    }
}

/// Publish `COUNT` envelopes from `TASKS` concurrent tasks, then a fence until one
/// succeeds (it carries the skipped runs of any failed batch before it, so receivers
/// can account for every number); `done` gets the last sequence number.
fn publish_all(
    node: Arc<dyn Backplane>,
    done: Arc<std::sync::Mutex<Option<u64>>>,
) -> tokio::task::JoinHandle<Published> {
    tokio::spawn(async move {
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let node = node.clone();
            tasks.push(tokio::spawn(async move {
                let mut failed = Vec::new();
                for i in 0..COUNT / TASKS {
                    let label = format!("{t}/{i}");
                    if node.publish(HUB, labelled(&label)).await.is_err() {
                        failed.push(label);
                    }
                }
                failed
            }));
        }
        let mut published = Published {
            numbered: COUNT as u64,
            ok: 0,
            failed: HashSet::new(),
        };
        for task in tasks {
            published
                .failed
                .extend(task.await.expect("publisher task panicked"));
        }
        published.ok = COUNT as u64 - published.failed.len() as u64;
        for attempt in 0..30 {
            published.numbered += 1;
            if node
                .publish(HUB, labelled(&format!("fence/{attempt}")))
                .await
                .is_ok()
            {
                published.ok += 1;
                *done.lock().unwrap() = Some(published.numbered);
                return published;
            }
        }
        panic!(
            "no fence could be published after {} failures",
            published.failed.len()
        );
    })
}

/// Receive until every number up to `last_seq` from `origin` is delivered or reported
/// missing, checking order and uniqueness (by sequence number and by per-task label);
/// `fault` runs once after `fault_after` envelopes.
async fn receive(
    subscription: &mut Subscription,
    origin: NodeId,
    last_seq: impl Fn() -> Option<u64>,
    fault_after: u64,
    fault: impl AsyncFnOnce(),
) -> Tally {
    let mut tally = Tally::default();
    let mut fault = Some(fault);
    let mut last = 0u64;
    let mut per_task: HashMap<String, u64> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        if last_seq().is_some_and(|end| last >= end) && tally.reconnects.len() >= tally.disconnects
        {
            return tally;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "stuck after {last} of {:?}: {tally:?}",
            last_seq()
        );
        // Short waits: the publisher may finish after the last envelope arrived.
        let Ok(event) = tokio::time::timeout(Duration::from_millis(100), subscription.recv()).await
        else {
            continue;
        };
        let event = event.expect("the subscription ended");
        match event {
            BackplaneEvent::Envelope(envelope) => {
                assert_eq!(envelope.origin, origin);
                assert!(
                    envelope.seq > last,
                    "seq {} after {last}: duplicated or out of order",
                    envelope.seq
                );
                last = envelope.seq;
                tally.delivered += 1;
                let label = label_of(&envelope);
                let (task, index) = label.split_once('/').expect("a task/index label");
                let index: u64 = index.parse().expect("an index");
                let previous = per_task.insert(task.to_owned(), index);
                tally.labels.0.insert(label.clone());
                assert!(
                    previous.is_none_or(|p| p < index),
                    "task {task}: {index} after {previous:?}"
                );
                if tally.delivered == fault_after
                    && let Some(fault) = fault.take()
                {
                    fault().await;
                }
            }
            BackplaneEvent::Disconnected { .. } => tally.disconnects += 1,
            BackplaneEvent::Reconnected { gap } => {
                if let GapRepair::Unrepairable { missing, .. } = &gap {
                    tally.missing += missing;
                }
                tally.reconnects.push(gap);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

async fn node(options: &RedisOptions) -> Arc<dyn Backplane> {
    Arc::new(
        RedisBackplane::connect(options.clone())
            .await
            .expect("starting a node"),
    )
}

/// The last sequence number a publisher handed out, once it has finished.
fn finished(done: &Arc<std::sync::Mutex<Option<u64>>>) -> impl Fn() -> Option<u64> + '_ {
    move || *done.lock().unwrap()
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

/// Every publish that returned `Ok` was delivered.
fn assert_acknowledged_delivered(published: &Published, tally: &Tally) {
    let lost: Vec<String> = (0..TASKS)
        .flat_map(|t| (0..COUNT / TASKS).map(move |i| format!("{t}/{i}")))
        .filter(|label| !published.failed.contains(label) && !tally.labels.0.contains(label))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged envelopes lost, first {:?}: {tally:?}",
        lost.len(),
        lost.first()
    );
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
