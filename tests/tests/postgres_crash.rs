//! Real PostgreSQL crashes and restarts, in a disposable cluster per test (never the
//! shared server): `pg_ctl -m immediate stop` in the middle of 10,000 publishes, and a
//! clean `-m fast` restart under load, for both `NotifyBeforeFlush` (the default) and
//! `On`.
//!
//! Needs `initdb`/`pg_ctl` (see `tests::cluster`). Each test takes a few seconds to
//! about half a minute and removes its cluster, also when it fails.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use backplane_core::testkit::RecordingSink;
use backplane_core::{
    Backplane, BackplaneEvent, BackplaneHubLifetimeManager, ConnectionId, GapRepair,
    HubLifetimeManager, LocalConnection, Target,
};
use backplane_postgres::{PostgresBackplane, PostgresOptions, SynchronousCommit};
use futures_util::StreamExt as _;
use tests::cluster::{Cluster, StopMode};
use tests::events::{label_of, labelled, subscribed};
use tokio::time::Instant;

const HUB: &str = "crash";

/// Options on `cluster` for tests: reconnects within half a second, a fast probe.
fn options(
    cluster: &Cluster,
    mode: SynchronousCommit,
    command_timeout: Duration,
) -> PostgresOptions {
    let mut options = PostgresOptions::new(&cluster.url(""))
        .expect("the cluster URL parses")
        .schema_name("crash")
        .synchronous_commit(mode)
        .command_timeout(command_timeout)
        .gap_wait(Duration::from_millis(500))
        .probe(Duration::from_millis(500), Duration::from_secs(2));
    options.reconnect_backoff.initial = Duration::from_millis(50);
    options.reconnect_backoff.max = Duration::from_millis(500);
    options
}

/// A started cluster (initdb and pg_ctl block, so off the runtime's workers).
async fn started_cluster(label: &'static str) -> Cluster {
    tokio::task::spawn_blocking(move || {
        let mut cluster = Cluster::new(label);
        cluster.start();
        cluster
    })
    .await
    .expect("starting the cluster")
}

/// Stop `cluster` with `mode`, wait `down`, start it again on the same port and data
/// directory; returns it and the moment it accepted connections again.
async fn restart(mut cluster: Cluster, mode: StopMode, down: Duration) -> (Cluster, Instant) {
    tokio::task::spawn_blocking(move || {
        cluster.stop(mode);
        std::thread::sleep(down);
        cluster.start();
        (cluster, Instant::now())
    })
    .await
    .expect("restarting the cluster")
}

/// Remove `cluster` off the runtime's workers.
async fn remove(cluster: Cluster) {
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .expect("removing the cluster");
}

/// One send of the load in [`fast_restart_under_load`].
#[derive(Debug)]
struct Sent {
    /// Its number, in its label.
    i: u64,
    /// When it started.
    started: Instant,
    /// How long until it returned.
    took: Duration,
    /// Whether it returned `Ok`.
    ok: bool,
}

/// What a subscription saw up to the fence envelope.
#[derive(Debug, Default)]
struct Received {
    /// Labels of the envelopes, in arrival order.
    labels: Vec<String>,
    /// `Disconnected` events.
    disconnects: u32,
    /// The `gap` of every `Reconnected` event.
    repairs: Vec<GapRepair>,
}

impl Received {
    /// Envelopes reported lost (`Unrepairable`), summed.
    fn unrepairable(&self) -> u64 {
        self.repairs
            .iter()
            .map(|gap| match gap {
                GapRepair::Unrepairable { missing, .. } => *missing,
                _ => 0,
            })
            .sum()
    }
}

/// `pg_ctl -m immediate stop` while one node publishes 10,000 envelopes to another; the
/// server is back after 4 s, longer than the 3 s command timeout, so the publishes in
/// flight fail. Every publish that returned `Ok` arrives exactly once,
/// in order; the rest either failed or arrived; nothing arrives twice; whatever the
/// receiver could not recover is reported as `Unrepairable`.
async fn immediate_stop_during_10000_publishes(mode: SynchronousCommit) {
    const COUNT: u64 = 10_000;
    const CRASH_AFTER: u64 = 2_500;
    tests::init_logging();
    let cluster = started_cluster("immediate").await;
    // Down for longer than the command timeout: publishes in flight at the crash fail.
    let options = options(&cluster, mode, Duration::from_secs(3));
    let sender = Arc::new(PostgresBackplane::connect(options.clone()).await.unwrap());
    let receiver = PostgresBackplane::connect(options).await.unwrap();
    let mut subscription = subscribed(&receiver, HUB).await;

    let receiving = tokio::spawn(async move {
        let mut received = Received::default();
        loop {
            let event = tokio::time::timeout(Duration::from_secs(60), subscription.recv())
                .await
                .expect("no event within 60 s")
                .expect("the subscription ended");
            match event {
                BackplaneEvent::Envelope(envelope) => {
                    let label = label_of(&envelope);
                    if label == "fence" {
                        return received;
                    }
                    received.labels.push(label);
                }
                BackplaneEvent::Disconnected { .. } => received.disconnects += 1,
                BackplaneEvent::Reconnected { gap } => received.repairs.push(gap),
                other => panic!("unexpected event {other:?}"),
            }
        }
    });

    let completed = Arc::new(AtomicU64::new(0));
    let publishing = {
        let (sender, completed) = (sender.clone(), completed.clone());
        tokio::spawn(async move {
            futures_util::stream::iter(0..COUNT)
                .then(|i| async move {
                    // Paced, so the stream is still running when the server dies.
                    if i % 200 == 0 {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    i
                })
                .map(|i| {
                    let sender = sender.clone();
                    async move { (i, sender.publish(HUB, labelled(&i.to_string())).await) }
                })
                .buffered(64)
                .inspect(|_| {
                    completed.fetch_add(1, Ordering::Relaxed);
                })
                .collect::<Vec<_>>()
                .await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while completed.load(Ordering::Relaxed) < CRASH_AFTER {
        assert!(
            Instant::now() < deadline,
            "publishing stalled before the crash"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let at_crash = completed.load(Ordering::Relaxed);
    let (cluster, _) = restart(cluster, StopMode::Immediate, Duration::from_secs(4)).await;
    let at_return = completed.load(Ordering::Relaxed);
    // With the circuit breaker, publishes made while the server is down fail at once
    // (`Unavailable`) instead of waiting for it: they may all have ended by now. What
    // matters is checked below: every publish that returned Ok is delivered exactly once.
    let results = tokio::time::timeout(Duration::from_secs(90), publishing)
        .await
        .expect("publishing did not finish within 90 s")
        .expect("the publishing task panicked");
    // A fence, retried until the node publishes again, marks the end of the stream.
    let fence_deadline = Instant::now() + Duration::from_secs(30);
    while let Err(error) = sender.publish(HUB, labelled("fence")).await {
        assert!(
            Instant::now() < fence_deadline,
            "no publish succeeds after the restart: {error}"
        );
    }
    let received = tokio::time::timeout(Duration::from_secs(90), receiving)
        .await
        .expect("the fence did not arrive within 90 s")
        .expect("the receiving task panicked");

    let succeeded: HashSet<String> = results
        .iter()
        .filter(|(_, result)| result.is_ok())
        .map(|(i, _)| i.to_string())
        .collect();
    let mut counts: HashMap<&str, u32> = HashMap::new();
    for label in &received.labels {
        *counts.entry(label).or_default() += 1;
    }
    let duplicated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicated.is_empty(), "delivered twice: {duplicated:?}");
    let lost: Vec<_> = succeeded
        .iter()
        .filter(|label| !counts.contains_key(label.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} publishes returned Ok but never arrived, e.g. {:?} ({:?})",
        lost.len(),
        lost.iter().take(5).collect::<Vec<_>>(),
        received.repairs
    );
    let order: Vec<u64> = received.labels.iter().map(|l| l.parse().unwrap()).collect();
    assert!(
        order.windows(2).all(|pair| pair[0] < pair[1]),
        "envelopes must arrive in publish order"
    );
    let failed = results.len() - succeeded.len();
    let failed_delivered = received
        .labels
        .iter()
        .filter(|label| !succeeded.contains(*label))
        .count();
    assert!(
        failed > 0,
        "no publish in flight during the 4 s outage failed"
    );
    assert!(
        received.disconnects >= 1,
        "the receiver must have noticed the crash"
    );
    eprintln!(
        "{mode:?}: crash after {at_crash} completed publishes ({at_return} when it was back); \
         {} ok (all delivered once), {failed} failed ({failed_delivered} of them delivered \
         anyway); {} disconnects, repairs {:?}, {} reported unrepairable",
        succeeded.len(),
        received.disconnects,
        received.repairs,
        received.unrepairable()
    );
    sender.shutdown().await.unwrap();
    receiver.shutdown().await.unwrap();
    remove(cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immediate_stop_during_10000_publishes_notify_before_flush() {
    immediate_stop_during_10000_publishes(SynchronousCommit::NotifyBeforeFlush).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immediate_stop_during_10000_publishes_synchronous_commit_on() {
    immediate_stop_during_10000_publishes(SynchronousCommit::On).await;
}

/// A clean restart (`pg_ctl -m fast`, down for two seconds) while two nodes' hub
/// lifetime managers (`BackplaneHubLifetimeManager`, what hub-server runs) send all the
/// time. While the database is down, messages to a connection of the sending node are
/// delivered at once, and broadcasts fail within the command timeout (2 s) instead of
/// hanging; within 5 s of the database's return broadcasts reach the other node again;
/// every broadcast that returned `Ok` reaches it exactly once.
async fn fast_restart_under_load(mode: SynchronousCommit) {
    const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
    tests::init_logging();
    let cluster = started_cluster("fast").await;
    let options = options(&cluster, mode, COMMAND_TIMEOUT);
    let node_a = Arc::new(PostgresBackplane::connect(options.clone()).await.unwrap());
    let node_b = Arc::new(PostgresBackplane::connect(options).await.unwrap());
    let manager_a = Arc::new(
        BackplaneHubLifetimeManager::new(HUB, node_a.clone())
            .await
            .unwrap(),
    );
    let manager_b = BackplaneHubLifetimeManager::new(HUB, node_b.clone())
        .await
        .unwrap();
    let (sink_a, sink_b) = (
        Arc::new(RecordingSink::new()),
        Arc::new(RecordingSink::new()),
    );
    let local = ConnectionId::from("a1");
    manager_a
        .on_connected(LocalConnection::new(local.clone(), None, sink_a.clone()))
        .await
        .unwrap();
    manager_b
        .on_connected(LocalConnection::new("b1", None, sink_b.clone()))
        .await
        .unwrap();

    // Load on node A: a broadcast started every 10 ms (each on its own task, so a
    // broadcast waiting out the outage does not hold back the next), and a message to
    // its local connection every 10 ms; each recorded with when it started, how long it
    // took and whether it returned Ok.
    let stop = Arc::new(AtomicBool::new(false));
    let broadcasting = {
        let (manager, stop) = (manager_a.clone(), stop.clone());
        tokio::spawn(async move {
            let mut sends = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let manager = manager.clone();
                sends.push(tokio::spawn(async move {
                    let started = Instant::now();
                    let message = RecordingSink::message(&format!("all-{i}"));
                    let ok = manager.send(Target::All, message).await.is_ok();
                    Sent {
                        i,
                        started,
                        took: started.elapsed(),
                        ok,
                    }
                }));
                i += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            futures_util::future::join_all(sends).await
        })
    };
    let local_sending = {
        let (manager, stop, local) = (manager_a.clone(), stop.clone(), local.clone());
        tokio::spawn(async move {
            let mut sends = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let message = RecordingSink::message(&format!("local-{i}"));
                manager
                    .send(Target::Connection(local.clone()), message)
                    .await
                    .expect("a message to a local connection needs no database");
                sends.push(Sent {
                    i,
                    started,
                    took: started.elapsed(),
                    ok: true,
                });
                i += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            sends
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stopping = Instant::now();
    let (cluster, back) = restart(cluster, StopMode::Fast, Duration::from_secs(2)).await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    stop.store(true, Ordering::Relaxed);
    let broadcasts: Vec<Sent> = broadcasting
        .await
        .expect("the broadcasting task panicked")
        .into_iter()
        .map(|sent| sent.expect("a broadcast task panicked"))
        .collect();
    let locals = local_sending
        .await
        .expect("the local sending task panicked");

    // Local delivery went on while the database was down: every message arrived at
    // a1, in order, and many were sent during the outage.
    let during = |sent: &&Sent| sent.started >= stopping && sent.started < back;
    let local_during = locals.iter().filter(during).count();
    assert!(
        local_during >= 50,
        "only {local_during} local messages were sent while the database was down"
    );
    let delivered: Vec<String> = sink_a
        .received()
        .into_iter()
        .filter(|l| l.starts_with("local-"))
        .collect();
    let expected: Vec<String> = locals.iter().map(|s| format!("local-{}", s.i)).collect();
    assert_eq!(
        delivered, expected,
        "local messages must all arrive, in order"
    );
    // Broadcasts failed fast: each failure within the command timeout (plus a margin).
    let failed: Vec<&Sent> = broadcasts.iter().filter(|s| !s.ok).collect();
    assert!(
        !failed.is_empty(),
        "no broadcast failed while the database was down"
    );
    let slowest = failed.iter().map(|s| s.took).max().unwrap();
    assert!(
        slowest <= COMMAND_TIMEOUT + Duration::from_secs(1),
        "a failing broadcast took {slowest:?}"
    );
    // Resumed within 5 s of the return: every broadcast started later succeeded.
    let resumed = back + Duration::from_secs(5);
    let late_failures: Vec<u64> = failed
        .iter()
        .filter(|s| s.started >= resumed)
        .map(|s| s.i)
        .collect();
    assert!(
        late_failures.is_empty(),
        "broadcasts started more than 5 s after the database returned failed: {late_failures:?}"
    );
    let first_ok_after = broadcasts
        .iter()
        .filter(|s| s.started >= back && s.ok)
        .map(|s| s.started + s.took - back)
        .min()
        .expect("no broadcast succeeded after the database returned");
    // Every broadcast that returned Ok reached b1 exactly once.
    let last_ok = broadcasts.iter().rev().find(|s| s.ok).unwrap().i;
    let mut received_b = sink_b
        .take_until(&format!("all-{last_ok}"), Duration::from_secs(10))
        .await;
    // Anything arriving later would be a duplicate or a failed broadcast delivered anyway.
    tokio::time::sleep(Duration::from_millis(500)).await;
    received_b.extend(sink_b.received());
    let mut seen = HashSet::new();
    for label in &received_b {
        assert!(seen.insert(label.as_str()), "{label} arrived twice at b1");
    }
    for sent in broadcasts.iter().filter(|s| s.ok) {
        let label = format!("all-{}", sent.i);
        assert!(
            seen.contains(label.as_str()),
            "{label} returned Ok but never reached b1"
        );
    }
    let slowest_any = broadcasts.iter().map(|s| s.took).max().unwrap();
    eprintln!(
        "{mode:?}: {} broadcasts, {} failed (slowest failure {slowest:?}, slowest of all {slowest_any:?}), {local_during} local messages delivered during the {:?} outage, first broadcast after the return done {first_ok_after:?} after it",
        broadcasts.len(),
        failed.len(),
        back - stopping,
    );
    drop(manager_a);
    drop(manager_b);
    node_a.shutdown().await.unwrap();
    node_b.shutdown().await.unwrap();
    remove(cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_restart_under_load_notify_before_flush() {
    fast_restart_under_load(SynchronousCommit::NotifyBeforeFlush).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_restart_under_load_synchronous_commit_on() {
    fast_restart_under_load(SynchronousCommit::On).await;
}
