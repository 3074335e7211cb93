//! The conformance cases. Each takes a [`ClusterFactory`] and panics on a violation.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::events::{expect_connected, label_of, labelled, next_envelope};
use super::{ClusterFactory, RecordingSink, WAIT};
use crate::backplane::{Backplane, BackplaneError, Subscription};
use crate::envelope::{EnvelopeKind, Target};
use crate::id::ConnectionId;
use crate::lifetime::{BackplaneHubLifetimeManager, ManagerOptions};
use crate::manager::{ConnectionSink, HubError, HubLifetimeManager, LocalConnection};
use crate::message::{Protocol, SerializedMessage};

const HUB: &str = "conformance";

async fn cluster(factory: &impl ClusterFactory, nodes: usize) -> Vec<Arc<dyn Backplane>> {
    let cluster = factory.cluster(nodes).await;
    assert_eq!(
        cluster.len(),
        nodes,
        "the factory must build exactly the requested number of nodes"
    );
    let mut ids: Vec<_> = cluster.iter().map(|node| node.node_id()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids.len(),
        nodes,
        "every node of a cluster must have its own id"
    );
    cluster
}

async fn shutdown_all(nodes: &[Arc<dyn Backplane>]) {
    for node in nodes {
        node.shutdown().await.expect("shutdown failed");
    }
}

async fn subscribe(node: &Arc<dyn Backplane>, hub: &str) -> Subscription {
    node.subscribe(hub).await.expect("subscribe failed")
}

/// Receive envelopes until one labelled `fence` arrives; return the labels before it.
async fn labels_until(subscription: &mut Subscription, fence: &str) -> Vec<String> {
    let mut labels = Vec::new();
    loop {
        let envelope = next_envelope(subscription, &format!("waiting for {fence:?}")).await;
        let label = label_of(&envelope);
        if label == fence {
            return labels;
        }
        labels.push(label);
    }
}

async fn publish(node: &Arc<dyn Backplane>, hub: &str, label: &str) {
    node.publish(hub, labelled(label))
        .await
        .unwrap_or_else(|error| panic!("publishing {label:?} failed: {error}"));
}

/// A subscription's first event is [`BackplaneEvent::Connected`](crate::BackplaneEvent::Connected).
pub async fn subscription_reports_connected_first(factory: impl ClusterFactory) {
    let nodes = cluster(&factory, 2).await;
    let mut subscription = subscribe(&nodes[1], HUB).await;
    expect_connected(&mut subscription).await;
    shutdown_all(&nodes).await;
}

/// An envelope published by one node reaches each of the other two exactly once.
pub async fn fan_out_to_three_nodes(factory: impl ClusterFactory) {
    let nodes = cluster(&factory, 3).await;
    let mut subs = Vec::new();
    for node in &nodes {
        subs.push(subscribe(node, HUB).await);
    }
    for i in 0..10 {
        publish(&nodes[0], HUB, &format!("m{i}")).await;
    }
    publish(&nodes[0], HUB, "end").await;
    let expected: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    for (index, sub) in subs.iter_mut().enumerate().skip(1) {
        assert_eq!(
            labels_until(sub, "end").await,
            expected,
            "node {index} must receive each envelope once, in order"
        );
    }
    // Node 0 must see node 1's fence and nothing of its own before it.
    publish(&nodes[1], HUB, "fence").await;
    assert_eq!(
        labels_until(&mut subs[0], "fence").await,
        Vec::<String>::new(),
        "the publisher must not receive its own envelopes"
    );
    shutdown_all(&nodes).await;
}

/// A node never receives what it published itself.
pub async fn no_self_echo(factory: impl ClusterFactory) {
    let nodes = cluster(&factory, 2).await;
    let mut own = subscribe(&nodes[0], HUB).await;
    let mut other = subscribe(&nodes[1], HUB).await;
    publish(&nodes[0], HUB, "mine-1").await;
    nodes[0]
        .send_to(nodes[1].node_id(), HUB, labelled("mine-2"))
        .await
        .expect("send_to failed");
    // Once the other node has both, an echo would already be on its way back.
    assert_eq!(
        labels_until(&mut other, "mine-2").await,
        vec!["mine-1".to_owned()]
    );
    publish(&nodes[1], HUB, "fence").await;
    let before_fence = labels_until(&mut own, "fence").await;
    assert!(
        before_fence.is_empty(),
        "node 0 received its own envelopes back: {before_fence:?}"
    );
    shutdown_all(&nodes).await;
}

/// `send_to` reaches its destination, stamped with it.
pub async fn send_to_reaches_the_destination(factory: impl ClusterFactory) {
    let nodes = cluster(&factory, 3).await;
    let mut destination = subscribe(&nodes[2], HUB).await;
    let mut bystander = subscribe(&nodes[1], HUB).await;
    nodes[0]
        .send_to(nodes[2].node_id(), HUB, labelled("direct"))
        .await
        .expect("send_to failed");
    publish(&nodes[0], HUB, "fence").await;
    let envelope = next_envelope(&mut destination, "direct envelope").await;
    assert_eq!(label_of(&envelope), "direct");
    assert_eq!(envelope.destination, Some(nodes[2].node_id()));
    assert_eq!(envelope.origin, nodes[0].node_id());
    // A bystander may see the envelope (it shares the sequence) but must see it addressed
    // to someone else.
    loop {
        let envelope = next_envelope(&mut bystander, "fence at the bystander").await;
        if label_of(&envelope) == "fence" {
            break;
        }
        assert_eq!(
            envelope.destination,
            Some(nodes[2].node_id()),
            "a direct envelope reached a bystander unmarked"
        );
    }
    shutdown_all(&nodes).await;
}

/// 10,000 envelopes from one node arrive in publish order, numbered 1, 2, 3, ... with no
/// hole and no duplicate.
pub async fn per_origin_ordering_of_10000_envelopes(factory: impl ClusterFactory) {
    const COUNT: u64 = 10_000;
    let nodes = cluster(&factory, 2).await;
    let mut receiver = subscribe(&nodes[1], HUB).await;
    let publisher = nodes[0].clone();
    let publishing = tokio::spawn(async move {
        for i in 0..COUNT {
            publish(&publisher, HUB, &i.to_string()).await;
        }
    });
    for i in 0..COUNT {
        let envelope = next_envelope(&mut receiver, &format!("envelope {i} of {COUNT}")).await;
        assert_eq!(envelope.origin, nodes[0].node_id());
        assert_eq!(
            label_of(&envelope),
            i.to_string(),
            "envelopes arrived out of publish order"
        );
        assert_eq!(
            envelope.seq,
            i + 1,
            "sequence numbers must start at 1 and have no holes"
        );
    }
    publishing.await.expect("publisher task panicked");
    shutdown_all(&nodes).await;
}

/// A 1 MiB message crosses intact, in both encodings.
pub async fn one_mib_payload(factory: impl ClusterFactory) {
    let nodes = cluster(&factory, 2).await;
    let mut receiver = subscribe(&nodes[1], HUB).await;
    let json: Bytes = (0..1024 * 1024)
        .map(|i: u32| b'a' + (i % 26) as u8)
        .collect::<Vec<u8>>()
        .into();
    let binary: Bytes = (0..1024 * 1024)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect::<Vec<u8>>()
        .into();
    let message = SerializedMessage::new()
        .with(Protocol::Json, json.clone())
        .with(Protocol::MessagePack, binary.clone());
    nodes[0]
        .publish(
            HUB,
            EnvelopeKind::Invocation {
                target: Target::Group("big".into()),
                message,
            },
        )
        .await
        .expect("publishing 1 MiB failed");
    let envelope = next_envelope(&mut receiver, "the 1 MiB envelope").await;
    let EnvelopeKind::Invocation { target, message } = &envelope.kind else {
        panic!("expected an invocation, got {:?}", envelope.kind);
    };
    assert_eq!(target, &Target::Group("big".into()));
    assert!(
        message.get(Protocol::Json) == Some(&json),
        "JSON payload corrupted in transit"
    );
    assert!(
        message.get(Protocol::MessagePack) == Some(&binary),
        "MessagePack payload corrupted in transit"
    );
    shutdown_all(&nodes).await;
}

/// Several tasks on two nodes publish at once: everything arrives exactly once, each
/// task's envelopes in that task's order, each origin's sequence without holes.
pub async fn concurrent_publishers(factory: impl ClusterFactory) {
    const TASKS: usize = 4;
    const PER_TASK: usize = 250;
    let nodes = cluster(&factory, 3).await;
    let mut receiver = subscribe(&nodes[2], HUB).await;
    let mut tasks = Vec::new();
    for (n, node) in nodes.iter().take(2).enumerate() {
        for t in 0..TASKS {
            let node = node.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..PER_TASK {
                    publish(&node, HUB, &format!("{n}/{t}/{i}")).await;
                }
            }));
        }
    }
    let total = 2 * TASKS * PER_TASK;
    let mut next_index: HashMap<(usize, usize), usize> = HashMap::new();
    let mut last_seq: HashMap<crate::id::NodeId, u64> = HashMap::new();
    for received in 0..total {
        let envelope =
            next_envelope(&mut receiver, &format!("envelope {received} of {total}")).await;
        let label = label_of(&envelope);
        let parts: Vec<usize> = label
            .split('/')
            .map(|p| p.parse().expect("unexpected label"))
            .collect();
        let expected = next_index.entry((parts[0], parts[1])).or_insert(0);
        assert_eq!(
            parts[2], *expected,
            "task {}/{} envelopes out of order or duplicated",
            parts[0], parts[1]
        );
        *expected += 1;
        let seq = last_seq.entry(envelope.origin).or_insert(0);
        assert_eq!(
            envelope.seq,
            *seq + 1,
            "origin {} sequence has a hole or a duplicate",
            envelope.origin
        );
        *seq = envelope.seq;
    }
    for task in tasks {
        task.await.expect("publisher task panicked");
    }
    assert!(next_index.values().all(|&count| count == PER_TASK));
    shutdown_all(&nodes).await;
}

/// After shutdown, publishing, sending and subscribing fail with
/// [`BackplaneError::Shutdown`], and existing subscriptions end.
pub async fn publish_after_shutdown_fails(factory: impl ClusterFactory) {
    let nodes = cluster(&factory, 2).await;
    let mut subscription = subscribe(&nodes[0], HUB).await;
    nodes[0].shutdown().await.expect("shutdown failed");
    let published = nodes[0].publish(HUB, labelled("late")).await;
    assert!(
        matches!(published, Err(BackplaneError::Shutdown)),
        "publish after shutdown must fail with Shutdown, got {published:?}"
    );
    let sent = nodes[0]
        .send_to(nodes[1].node_id(), HUB, labelled("late"))
        .await;
    assert!(
        matches!(sent, Err(BackplaneError::Shutdown)),
        "send_to after shutdown must fail with Shutdown, got {sent:?}"
    );
    let subscribed = nodes[0].subscribe(HUB).await;
    assert!(
        matches!(subscribed, Err(BackplaneError::Shutdown)),
        "subscribe after shutdown must fail with Shutdown"
    );
    let ended =
        tokio::time::timeout(WAIT, async { while subscription.recv().await.is_some() {} }).await;
    assert!(
        ended.is_ok(),
        "a subscription must end when its node shuts down"
    );
    nodes[1].shutdown().await.expect("shutdown failed");
}

/// A subscription to one hub never sees another hub's envelopes.
pub async fn other_hubs_are_not_delivered(factory: impl ClusterFactory) {
    let nodes = cluster(&factory, 2).await;
    let mut hub_a = subscribe(&nodes[1], "hub-a").await;
    let mut hub_b = subscribe(&nodes[1], "hub-b").await;
    publish(&nodes[0], "hub-b", "for-b").await;
    publish(&nodes[0], "hub-a", "fence").await;
    assert_eq!(
        labels_until(&mut hub_a, "fence").await,
        Vec::<String>::new(),
        "hub-a received hub-b's envelope"
    );
    let envelope = next_envelope(&mut hub_b, "hub-b's envelope").await;
    assert_eq!(label_of(&envelope), "for-b");
    assert_eq!(envelope.hub, "hub-b");
    shutdown_all(&nodes).await;
}

/// Managers over a cluster, with recording connections placed on nodes.
struct Scene {
    nodes: Vec<Arc<dyn Backplane>>,
    managers: Vec<BackplaneHubLifetimeManager>,
    sinks: Vec<(ConnectionId, usize, Arc<RecordingSink>)>,
    fences: usize,
}

impl Scene {
    async fn new(factory: &impl ClusterFactory, nodes: usize, options: ManagerOptions) -> Self {
        let nodes = cluster(factory, nodes).await;
        let mut managers = Vec::new();
        for node in &nodes {
            let manager =
                BackplaneHubLifetimeManager::with_options(HUB, node.clone(), options.clone())
                    .await
                    .expect("creating the lifetime manager failed");
            managers.push(manager);
        }
        Self {
            nodes,
            managers,
            sinks: Vec::new(),
            fences: 0,
        }
    }

    async fn connect(&mut self, node: usize, id: &str, user: Option<&str>) -> ConnectionId {
        let sink = Arc::new(RecordingSink::new());
        let id = ConnectionId::from(id);
        let connection = LocalConnection::new(
            id.clone(),
            user.map(str::to_owned),
            sink.clone() as Arc<dyn ConnectionSink>,
        );
        self.managers[node]
            .on_connected(connection)
            .await
            .expect("on_connected failed");
        self.sinks.push((id.clone(), node, sink));
        id
    }

    /// Send `target` from `node`, then check that exactly `expected` received it, once.
    async fn check(&mut self, node: usize, target: Target, expected: &[&ConnectionId]) {
        let label = format!("{target:?} from node {node}");
        self.managers[node]
            .send(target, RecordingSink::message(&label))
            .await
            .unwrap_or_else(|error| panic!("sending {label} failed: {error}"));
        self.fence(node, &label, expected).await;
    }

    /// Send a fence to everyone from `node` and check who got `label` before it.
    async fn fence(&mut self, node: usize, label: &str, expected: &[&ConnectionId]) {
        self.fences += 1;
        let fence = format!("fence {}", self.fences);
        self.managers[node]
            .send_all(RecordingSink::message(&fence))
            .await
            .expect("sending the fence failed");
        for (id, home, sink) in &self.sinks {
            let mut got = sink.take_until(&fence, WAIT).await;
            got.pop(); // the fence itself
            let want: Vec<String> = if expected.contains(&id) {
                vec![label.to_owned()]
            } else {
                Vec::new()
            };
            assert_eq!(
                got, want,
                "connection {id} on node {home}: wrong deliveries for {label}"
            );
        }
    }

    async fn finish(self) {
        drop(self.managers);
        shutdown_all(&self.nodes).await;
    }
}

/// Every target kind, sent from several nodes, reaches exactly the connections it
/// names, each exactly once, and nobody else.
pub async fn every_target_kind_across_nodes(factory: impl ClusterFactory) {
    let mut scene = Scene::new(&factory, 3, ManagerOptions::default()).await;
    let a0 = scene.connect(0, "a0", Some("alice")).await;
    let b0 = scene.connect(0, "b0", Some("bob")).await;
    let a1 = scene.connect(1, "a1", Some("alice")).await;
    let c1 = scene.connect(1, "c1", Some("carol")).await;
    let d2 = scene.connect(2, "d2", Some("dave")).await;
    let e2 = scene.connect(2, "e2", None).await;
    for (node, id, group) in [
        (0, &a0, "g1"),
        (1, &a1, "g1"),
        (1, &a1, "g2"),
        (1, &c1, "g2"),
        (2, &d2, "g1"),
    ] {
        scene.managers[node]
            .add_to_group(id, group)
            .await
            .expect("local add_to_group failed");
    }
    let everyone = [&a0, &b0, &a1, &c1, &d2, &e2];

    scene.check(0, Target::All, &everyone).await;
    scene.check(2, Target::All, &everyone).await;
    scene
        .check(
            0,
            Target::AllExcept(vec![a0.clone(), c1.clone()]),
            &[&b0, &a1, &d2, &e2],
        )
        .await;
    scene.check(0, Target::Connection(c1.clone()), &[&c1]).await;
    scene.check(0, Target::Connection(a0.clone()), &[&a0]).await;
    scene.check(1, Target::Connection(a0.clone()), &[&a0]).await;
    scene
        .check(0, Target::Connection("nobody".into()), &[])
        .await;
    let connections = vec![a0.clone(), c1.clone(), e2.clone(), c1.clone()];
    scene
        .check(0, Target::Connections(connections), &[&a0, &c1, &e2])
        .await;
    scene
        .check(0, Target::Group("g1".into()), &[&a0, &a1, &d2])
        .await;
    scene
        .check(2, Target::Group("g2".into()), &[&a1, &c1])
        .await;
    scene.check(0, Target::Group("empty".into()), &[]).await;
    let groups = vec!["g1".into(), "g2".into(), "g1".into()];
    scene
        .check(1, Target::Groups(groups), &[&a0, &a1, &c1, &d2])
        .await;
    let group_except = Target::GroupExcept {
        group: "g1".into(),
        excluded: vec![a1.clone()],
    };
    scene.check(0, group_except, &[&a0, &d2]).await;
    let group_except = Target::GroupExcept {
        group: "g2".into(),
        excluded: vec![c1.clone(), a0.clone()],
    };
    scene.check(2, group_except, &[&a1]).await;
    scene
        .check(2, Target::User("alice".into()), &[&a0, &a1])
        .await;
    let users = vec!["alice".into(), "carol".into(), "nobody".into()];
    scene.check(0, Target::Users(users), &[&a0, &a1, &c1]).await;

    // The named trait methods route to the same targets.
    let manager = &scene.managers[2];
    manager
        .send_group_except(
            "g1",
            RecordingSink::message("named"),
            std::slice::from_ref(&d2),
        )
        .await
        .expect("send failed");
    scene.fence(2, "named", &[&a0, &a1]).await;

    // A disconnected connection leaves every index on its node.
    scene.managers[1]
        .on_disconnected(&a1)
        .await
        .expect("on_disconnected failed");
    scene.sinks.retain(|(id, _, _)| id != &a1);
    scene
        .check(0, Target::Group("g1".into()), &[&a0, &d2])
        .await;
    scene.check(0, Target::User("alice".into()), &[&a0]).await;
    scene.finish().await;
}

/// A node adds a connection that lives on another node to a group, and removes it; both
/// return after the owner acknowledged, and membership takes effect everywhere.
pub async fn remote_group_add_and_remove_with_ack(factory: impl ClusterFactory) {
    let mut scene = Scene::new(&factory, 3, ManagerOptions::default()).await;
    let x = scene.connect(1, "x1", None).await;
    let y = scene.connect(2, "y2", None).await;
    scene.managers[0]
        .add_to_group(&x, "room")
        .await
        .expect("remote add_to_group failed");
    assert!(scene.managers[1].is_local(&x) && !scene.managers[0].is_local(&x));
    scene.check(2, Target::Group("room".into()), &[&x]).await;
    scene.check(0, Target::Group("room".into()), &[&x]).await;
    scene.managers[2]
        .add_to_group(&x, "room")
        .await
        .expect("repeated add must succeed");
    scene.check(0, Target::Group("room".into()), &[&x]).await;
    scene.managers[2]
        .remove_from_group(&x, "room")
        .await
        .expect("remote remove_from_group failed");
    scene.check(0, Target::Group("room".into()), &[]).await;
    scene.check(1, Target::Group("room".into()), &[]).await;
    scene.managers[0]
        .remove_from_group(&y, "room")
        .await
        .expect("removing a non-member must succeed");
    scene.finish().await;
}

/// A group change for a connection no node owns fails with [`HubError::NoOwner`] after
/// the configured timeout.
pub async fn group_change_for_unknown_connection_times_out(factory: impl ClusterFactory) {
    let timeout = Duration::from_millis(500);
    let scene = Scene::new(
        &factory,
        2,
        ManagerOptions::default().group_ack_timeout(timeout),
    )
    .await;
    let ghost = ConnectionId::from("ghost");
    let started = tokio::time::Instant::now();
    let result = scene.managers[0].add_to_group(&ghost, "room").await;
    assert!(
        matches!(&result, Err(HubError::NoOwner { connection_id, adding: true, .. }) if connection_id == &ghost),
        "expected NoOwner, got {result:?}"
    );
    assert!(
        started.elapsed() >= timeout,
        "NoOwner must come after the timeout, not before"
    );
    let message = result.unwrap_err().to_string();
    assert!(
        message.contains("ghost") && message.contains("room"),
        "the error must name the connection and group: {message}"
    );
    let result = scene.managers[0].remove_from_group(&ghost, "room").await;
    assert!(
        matches!(result, Err(HubError::NoOwner { adding: false, .. })),
        "expected NoOwner, got {result:?}"
    );
    scene.finish().await;
}

/// A user connected on two nodes receives a user-targeted message on both, once each.
pub async fn user_on_two_nodes(factory: impl ClusterFactory) {
    let mut scene = Scene::new(&factory, 3, ManagerOptions::default()).await;
    let alice0 = scene.connect(0, "alice-0", Some("alice")).await;
    let alice1 = scene.connect(1, "alice-1", Some("alice")).await;
    let alice1b = scene.connect(1, "alice-1b", Some("alice")).await;
    let _bob = scene.connect(2, "bob-2", Some("bob")).await;
    scene
        .check(
            2,
            Target::User("alice".into()),
            &[&alice0, &alice1, &alice1b],
        )
        .await;
    scene
        .check(
            0,
            Target::User("alice".into()),
            &[&alice0, &alice1, &alice1b],
        )
        .await;
    scene.check(1, Target::User("nobody".into()), &[]).await;
    scene.finish().await;
}
