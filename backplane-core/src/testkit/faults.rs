//! The fault tests' shared vocabulary and scenarios: a publisher of 10,000 labelled
//! envelopes from concurrent tasks, a receiver that checks order and uniqueness while a
//! fault (a killed server, cut connections) runs, and the scenarios every log backend
//! runs (its server killed and restarted, its connections cut through a proxy, a node
//! restarted with a new id, a clear connect error). Networked backplanes'
//! `tests/faults.rs` run them with a [`DisposableServer`] of their own and say what
//! their backend promises of each.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use super::events::{expect_connected, label_of, labelled};
use super::{CuttingProxy, DisposableServer, ServerProgram, spare_port};
use crate::backplane::{Backplane, BackplaneEvent, GapRepair, Subscription};
use crate::id::NodeId;

/// The hub the fault tests publish on.
pub const HUB: &str = "faults";
/// Envelopes per publishing run (besides the fence).
pub const COUNT: usize = 10_000;
/// Concurrent publishing tasks.
pub const TASKS: usize = 8;

/// What a receiver saw from one origin.
#[derive(Debug, Default)]
pub struct Tally {
    /// Envelopes delivered.
    pub delivered: u64,
    /// The labels delivered (not printed: 10,000 of them).
    pub labels: Labels,
    /// Numbers reported unrepairable.
    pub missing: u64,
    /// `Disconnected` events.
    pub disconnects: usize,
    /// The `Reconnected` reports, in order.
    pub reconnects: Vec<GapRepair>,
}

/// How a publishing run went.
#[derive(Debug, Clone)]
pub struct Published {
    /// Sequence numbers handed out (envelopes and fences, failed or not).
    pub numbered: u64,
    /// Publishes that returned `Ok`.
    pub ok: u64,
    /// Labels whose publish returned an error (it may have been stored anyway: an error
    /// after a lost reply does not say it was not).
    pub failed: HashSet<String>,
}

/// Delivered labels, kept out of `Debug` output.
#[derive(Default)]
pub struct Labels(pub HashSet<String>);

impl std::fmt::Debug for Labels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} labels", self.0.len())
    }
}

/// Publish `COUNT` envelopes from `TASKS` concurrent tasks, then a fence until one
/// succeeds (it carries the skipped runs of any failed batch before it, so receivers
/// can account for every number); `done` gets the last sequence number.
pub fn publish_all(
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
///
/// # Panics
///
/// Panics on a duplicate, an envelope out of order, or after two minutes without the
/// end.
pub async fn receive(
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

/// The last sequence number a publisher handed out, once it has finished.
pub fn finished(done: &Arc<std::sync::Mutex<Option<u64>>>) -> impl Fn() -> Option<u64> + '_ {
    move || *done.lock().unwrap()
}

/// Every publish that returned `Ok` was delivered.
pub fn assert_acknowledged_delivered(published: &Published, tally: &Tally) {
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

/// `receiver` subscribes to [`HUB`], `publisher` publishes 10,000 envelopes
/// ([`publish_all`]), and `fault` runs once `fault_after` of them arrived; returns what
/// the receiver saw and what the publisher numbered once both are done. The nodes stay
/// running (the test shuts them down after its assertions).
///
/// # Panics
///
/// As [`receive`], or if subscribing fails.
pub async fn publish_through_fault(
    publisher: &Arc<dyn Backplane>,
    receiver: &Arc<dyn Backplane>,
    fault_after: u64,
    fault: impl AsyncFnOnce(),
) -> (Tally, Published) {
    let mut subscription = receiver.subscribe(HUB).await.unwrap();
    expect_connected(&mut subscription).await;
    let done = Arc::new(std::sync::Mutex::new(None));
    let publishing = publish_all(publisher.clone(), done.clone());
    let tally = receive(
        &mut subscription,
        publisher.node_id(),
        finished(&done),
        fault_after,
        fault,
    )
    .await;
    let published = publishing.await.unwrap();
    (tally, published)
}

/// Cut every connection through `proxy` five times, 150 ms apart.
pub async fn cut_five_times(proxy: &CuttingProxy) {
    for _ in 0..5 {
        proxy.cut();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// A publisher restarts as a new node (new id, numbers from 1 again): the receiver
/// takes it as a new origin and delivers everything from both, reporting no loss.
/// `start` starts a node of one cluster.
///
/// # Panics
///
/// If an envelope is missing, out of order or mislabelled.
pub async fn node_restarted_with_a_new_id(start: impl AsyncFn() -> Arc<dyn Backplane>) {
    let receiver = start().await;
    let mut subscription = receiver.subscribe(HUB).await.unwrap();
    expect_connected(&mut subscription).await;
    let mut origins = Vec::new();
    for life in 0..2 {
        let publisher = start().await;
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

/// `server` is killed (SIGKILL) once 3,000 of `publisher`'s 10,000 envelopes reached
/// `receiver`, and restarted 300 ms later; returns what the receiver saw and what the
/// publisher numbered (printed under `what`), both nodes shut down.
///
/// # Panics
///
/// As [`receive`], or if subscribing or shutting down fails.
pub async fn kill_and_restart<P: ServerProgram>(
    what: &str,
    server: &mut DisposableServer<P>,
    publisher: Arc<dyn Backplane>,
    receiver: Arc<dyn Backplane>,
) -> (Tally, Published) {
    let (tally, published) = publish_through_fault(&publisher, &receiver, 3_000, async move || {
        server.kill().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.restart().await;
    })
    .await;
    println!(
        "{what}: {} numbered, {} ok; receiver: {tally:?}",
        published.numbered, published.ok
    );
    publisher.shutdown().await.unwrap();
    receiver.shutdown().await.unwrap();
    (tally, published)
}

/// After a fault that lost nothing: the receiver was disconnected, every reconnect was
/// repaired, nothing was reported missing and every acknowledged publish was delivered.
///
/// # Panics
///
/// If any of that does not hold.
pub fn assert_nothing_lost(published: &Published, tally: &Tally) {
    assert_eq!(tally.missing, 0, "{tally:?}");
    assert_acknowledged_delivered(published, tally);
    assert!(tally.disconnects >= 1, "{tally:?}");
    assert!(
        tally
            .reconnects
            .iter()
            .all(|gap| matches!(gap, GapRepair::Repaired { .. })),
        "{tally:?}"
    );
}

/// After a fault that lost what the server held: the receiver was disconnected, and
/// each number is delivered, reported missing, or its publish failed (a failed publish
/// may have been stored and delivered too); the receiver never counts one number twice.
///
/// # Panics
///
/// If any of that does not hold.
pub fn assert_every_number_accounted_for(published: &Published, tally: &Tally) {
    assert!(tally.disconnects >= 1, "{tally:?}");
    assert!(
        tally.delivered + tally.missing <= published.numbered
            && tally.delivered + tally.missing + (published.numbered - published.ok)
                >= published.numbered,
        "numbers unaccounted for: {published:?} {tally:?}"
    );
}

/// Every connection of `publisher` and `receiver` (both connected through `proxy`) is
/// cut five times during 10,000 envelopes: every publish succeeds, and nothing is lost,
/// duplicated or reordered, every reconnect repaired. Both nodes are shut down after.
///
/// # Panics
///
/// If any of that does not hold.
pub async fn connections_cut_through_a_proxy_lose_nothing(
    proxy: &CuttingProxy,
    publisher: Arc<dyn Backplane>,
    receiver: Arc<dyn Backplane>,
) {
    let (tally, published) = publish_through_fault(&publisher, &receiver, 2_000, async || {
        cut_five_times(proxy).await
    })
    .await;
    assert_eq!(
        published.ok, published.numbered,
        "every publish must succeed across cuts: {published:?}"
    );
    assert_eq!(tally.delivered, published.numbered, "{tally:?}");
    assert_nothing_lost(&published, &tally);
    publisher.shutdown().await.unwrap();
    receiver.shutdown().await.unwrap();
}

/// Publish `count` envelopes on [`HUB`], labelled `0`, `1`, …, one after another.
///
/// # Panics
///
/// If a publish fails.
pub async fn publish_numbered(node: &Arc<dyn Backplane>, count: usize) {
    for i in 0..count {
        node.publish(HUB, labelled(&i.to_string())).await.unwrap();
    }
}

/// The password [`unreachable_url`] carries, which no error may repeat.
pub const PASSWORD: &str = "s3cr3t";

/// `scheme://app:PASSWORD@127.0.0.1:port`, on a port nothing listens on.
pub fn unreachable_url(scheme: &str) -> String {
    format!("{scheme}://app:{PASSWORD}@127.0.0.1:{}", spare_port())
}

/// The error of a node that could not connect to [`unreachable_url`] says what was
/// being done (`doing`, such as `"connecting to Redis"`) and never repeats the password.
///
/// # Panics
///
/// If it does not.
pub fn assert_connect_error_is_clear(error: &str, doing: &str) {
    assert!(error.contains(doing), "{error}");
    assert!(!error.contains(PASSWORD), "{error}");
}
