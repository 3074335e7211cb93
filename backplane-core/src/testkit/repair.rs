//! The repair cases: a node's receiving connection is cut while others publish, and
//! nothing may be lost, duplicated or reordered across the reconnect.

use std::future::Future;
use std::sync::Arc;

use super::events::{expect_connected, label_of, labelled};
use super::{ClusterFactory, WAIT};
use crate::backplane::{Backplane, BackplaneEvent, GapRepair, Subscription};
use crate::id::NodeId;

const HUB: &str = "conformance-repair";

/// The fault hook the repair cases need: cut the connection(s) a node receives on, the
/// way a network failure or a server-side kill would (the node must notice, reconnect
/// and repair by itself).
///
/// Implemented for every `Fn(NodeId) -> impl Future<Output = ()>`. The future should
/// return once a connection was actually cut; after a previous cut the node may still be
/// reconnecting, so it should wait (boundedly) for the next connection to appear.
pub trait ConnectionCutter {
    /// The future [`ConnectionCutter::cut`] returns.
    type Future: Future<Output = ()>;

    /// Cut the receiving connection(s) of node `node`.
    fn cut(&self, node: NodeId) -> Self::Future;
}

impl<F, Fut> ConnectionCutter for F
where
    F: Fn(NodeId) -> Fut,
    Fut: Future<Output = ()>,
{
    type Future = Fut;

    fn cut(&self, node: NodeId) -> Fut {
        self(node)
    }
}

/// What a receiver saw: labels in arrival order and the lifecycle events between them.
#[derive(Debug, Default)]
struct Seen {
    labels: Vec<String>,
    disconnects: usize,
    reconnects: Vec<GapRepair>,
}

impl Seen {
    /// Receive until `count` envelopes arrived in total and every `Disconnected` was
    /// followed by a `Reconnected`.
    async fn until(&mut self, subscription: &mut Subscription, count: usize, what: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.labels.len() < count || self.reconnects.len() < self.disconnects {
            let event = match tokio::time::timeout_at(deadline, subscription.recv()).await {
                Ok(Some(event)) => event,
                Ok(None) => panic!("{what}: the subscription ended"),
                Err(_) => panic!(
                    "{what}: after {WAIT:?}, {} of {count} envelopes, {} disconnects, {} reconnects ({:?})",
                    self.labels.len(),
                    self.disconnects,
                    self.reconnects.len(),
                    self.reconnects
                ),
            };
            match event {
                BackplaneEvent::Envelope(envelope) => self.labels.push(label_of(&envelope)),
                BackplaneEvent::Disconnected { .. } => self.disconnects += 1,
                BackplaneEvent::Reconnected { gap } => self.reconnects.push(gap),
                other => panic!("{what}: unexpected {other:?}"),
            }
        }
    }

    /// Receive until at least `disconnects` were reported, each followed by its
    /// `Reconnected`: a cut connection may deliver everything it had already received
    /// before it notices the cut, so the report can come after the last envelope.
    async fn until_reported(
        &mut self,
        subscription: &mut Subscription,
        disconnects: usize,
        what: &str,
    ) {
        let count = self.labels.len();
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.disconnects < disconnects {
            match tokio::time::timeout_at(deadline, subscription.recv()).await {
                Ok(Some(BackplaneEvent::Disconnected { .. })) => self.disconnects += 1,
                Ok(Some(BackplaneEvent::Reconnected { gap })) => self.reconnects.push(gap),
                Ok(Some(BackplaneEvent::Envelope(envelope))) => {
                    self.labels.push(label_of(&envelope))
                }
                Ok(Some(other)) => panic!("{what}: unexpected {other:?}"),
                Ok(None) => panic!("{what}: the subscription ended"),
                Err(_) => panic!("{what}: no cut was reported as Disconnected within {WAIT:?}"),
            }
        }
        self.until(subscription, count, what).await;
    }

    fn assert_exactly(&self, expected: impl Iterator<Item = usize>, what: &str) {
        let expected: Vec<String> = expected.map(|i| i.to_string()).collect();
        if self.labels != expected {
            let first_difference = self
                .labels
                .iter()
                .zip(&expected)
                .position(|(got, want)| got != want);
            panic!(
                "{what}: envelopes lost, duplicated or out of order: got {} of {}, first difference at {first_difference:?}",
                self.labels.len(),
                expected.len()
            );
        }
        for gap in &self.reconnects {
            assert!(
                matches!(gap, GapRepair::Repaired { .. }),
                "{what}: a reconnect reported loss: {gap:?}"
            );
        }
    }
}

async fn two_nodes(factory: &impl ClusterFactory) -> (Vec<Arc<dyn Backplane>>, Subscription) {
    let nodes = factory.cluster(2).await;
    assert_eq!(nodes.len(), 2, "the factory must build two nodes");
    let mut subscription = nodes[1].subscribe(HUB).await.expect("subscribe failed");
    expect_connected(&mut subscription).await;
    (nodes, subscription)
}

async fn publish_range(node: &Arc<dyn Backplane>, range: std::ops::Range<usize>) {
    for i in range {
        node.publish(HUB, labelled(&i.to_string()))
            .await
            .unwrap_or_else(|error| panic!("publishing {i} failed: {error}"));
    }
}

async fn shutdown(nodes: &[Arc<dyn Backplane>]) {
    for node in nodes {
        node.shutdown().await.expect("shutdown failed");
    }
}

/// The receiving connection is cut; envelopes published while the node is down and
/// reconnecting are repaired: each delivered once, in order, then `Reconnected` reports
/// `Repaired`, and live delivery resumes.
pub async fn repair_after_dropped_subscription(
    factory: impl ClusterFactory,
    cutter: impl ConnectionCutter,
) {
    let (nodes, mut subscription) = two_nodes(&factory).await;
    let mut seen = Seen::default();
    publish_range(&nodes[0], 0..50).await;
    seen.until(&mut subscription, 50, "before the cut").await;
    cutter.cut(nodes[1].node_id()).await;
    publish_range(&nodes[0], 50..150).await;
    seen.until(&mut subscription, 150, "across the cut").await;
    seen.until_reported(&mut subscription, 1, "the cut").await;
    assert!(
        seen.disconnects >= 1,
        "a cut connection must be reported as Disconnected"
    );
    publish_range(&nodes[0], 150..160).await;
    seen.until(&mut subscription, 160, "after the reconnect")
        .await;
    seen.assert_exactly(0..160, "one cut");
    shutdown(&nodes).await;
}

/// A publisher keeps publishing while the receiver's connection is cut three times:
/// every envelope arrives exactly once, in order, and every reconnect reports `Repaired`.
pub async fn repair_across_repeated_cuts(
    factory: impl ClusterFactory,
    cutter: impl ConnectionCutter,
) {
    const COUNT: usize = 1_000;
    let (nodes, mut subscription) = two_nodes(&factory).await;
    let publisher = nodes[0].clone();
    let publishing = tokio::spawn(async move { publish_range(&publisher, 0..COUNT).await });
    let mut seen = Seen::default();
    for cut in 1..=3 {
        seen.until(&mut subscription, cut * COUNT / 5, "between cuts")
            .await;
        cutter.cut(nodes[1].node_id()).await;
    }
    seen.until(&mut subscription, COUNT, "after three cuts")
        .await;
    seen.until_reported(&mut subscription, 1, "three cuts")
        .await;
    publishing.await.expect("the publisher panicked");
    assert!(seen.disconnects >= 1, "no cut was reported as Disconnected");
    seen.assert_exactly(0..COUNT, "three cuts");
    shutdown(&nodes).await;
}
