//! Trusted backplane traffic and failing fast, against real PostgreSQL: forged
//! notifications sent on the real channel by a raw connection (as any role that can
//! connect could), and a partition through the TCP proxy.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backplane_core::testkit::RecordingSink;
use backplane_core::{
    Ack, Backplane, BackplaneError, BackplaneEvent, BackplaneHubLifetimeManager, ClusterSecret,
    Envelope, EnvelopeCodec, EnvelopeKind, HubError, HubLifetimeManager, LocalConnection, NodeId,
    Subscription, Target,
};
use forged::{inline_notification, notify};
use tests::{CuttingProxy, TestSchema};

mod forged;

const HUB: &str = "trust";
const WAIT: Duration = Duration::from_secs(30);

fn invocation(origin: NodeId, seq: u64, label: &str) -> Envelope {
    Envelope {
        origin,
        seq,
        hub: HUB.into(),
        destination: None,
        kind: EnvelopeKind::Invocation {
            target: Target::All,
            message: RecordingSink::message(label),
        },
    }
}

/// The labels of the envelopes `subscription` yields until (and with) `label`.
async fn envelopes_until(subscription: &mut Subscription, label: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let event = tokio::time::timeout_at(deadline, subscription.recv())
            .await
            .unwrap_or_else(|_| panic!("{label} did not arrive; got {seen:?}"))
            .expect("subscription open");
        if let BackplaneEvent::Envelope(envelope) = event
            && let EnvelopeKind::Invocation { message, .. } = &envelope.kind
        {
            let text =
                String::from_utf8_lossy(message.get(backplane_core::Protocol::Json).unwrap())
                    .into_owned();
            seen.push(text.clone());
            if text == label {
                return seen;
            }
        }
    }
}

async fn publish(node: &dyn Backplane, label: &str) {
    node.publish(
        HUB,
        EnvelopeKind::Invocation {
            target: Target::All,
            message: RecordingSink::message(label),
        },
    )
    .await
    .expect("publish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_secret_forged_notifications_are_dropped_counted_and_never_delivered() {
    let schema = TestSchema::create("trust_secret").await;
    let secret = ClusterSecret::new("trust test cluster secret 0123456").unwrap();
    let nodes = schema
        .nodes_with(2, |options| options.cluster_secret(secret.clone()))
        .await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut subscription = b.subscribe(HUB).await.unwrap();
    publish(a.as_ref(), "real-1").await;
    assert_eq!(
        envelopes_until(&mut subscription, "real-1").await,
        ["real-1"]
    );
    assert_eq!(b.envelopes_rejected(), 0);

    // In the name of node a: unsigned, signed with another secret, and a plain
    // envelope carried in a notification with a wrong tag appended.
    let origin = a.node_id();
    let unsigned = inline_notification(origin, &invocation(origin, 2, "forged-1").encode());
    let other = EnvelopeCodec::new(Some(
        ClusterSecret::new("some other secret 0123456").unwrap(),
    ));
    let wrong_key = inline_notification(origin, &other.encode(&invocation(origin, 2, "forged-2")));
    let wrong_tag = format!("{unsigned}.{}", "A".repeat(43));
    let reference = format!("r{origin}:2:{}:{HUB}", u64::MAX - 1);
    for payload in [&unsigned, &wrong_key, &wrong_tag, &reference] {
        notify(&schema, HUB, payload).await;
    }
    publish(a.as_ref(), "real-2").await;
    assert_eq!(
        envelopes_until(&mut subscription, "real-2").await,
        ["real-2"],
        "only the real envelope is delivered"
    );
    assert_eq!(b.envelopes_rejected(), 4, "each forgery is counted");
    for node in &nodes {
        node.shutdown().await.unwrap();
    }
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_secret_a_forged_far_ahead_sequence_does_not_silence_a_real_node() {
    let schema = TestSchema::create("trust_seq").await;
    let nodes = schema.nodes(2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut subscription = b.subscribe(HUB).await.unwrap();
    publish(a.as_ref(), "real-1").await;
    envelopes_until(&mut subscription, "real-1").await;

    // A well-formed envelope of node a numbered near u64::MAX, which the table does not
    // hold; and a reference naming a far-ahead range of rows that do not exist.
    let origin = a.node_id();
    let far = invocation(origin, u64::MAX - 1, "forged-far-ahead").encode();
    notify(&schema, HUB, &inline_notification(origin, &far)).await;
    notify(
        &schema,
        HUB,
        &format!("r{origin}:1000:{}:{HUB}", u64::MAX - 1),
    )
    .await;
    // A first envelope from a node nobody heard of, far ahead: also unconfirmed.
    let stranger = NodeId::random();
    let first = invocation(stranger, u64::MAX / 2, "forged-stranger").encode();
    notify(&schema, HUB, &inline_notification(stranger, &first)).await;

    for label in ["real-2", "real-3", "real-4"] {
        publish(a.as_ref(), label).await;
    }
    assert_eq!(
        envelopes_until(&mut subscription, "real-4").await,
        ["real-2", "real-3", "real-4"],
        "node a's later envelopes are not taken for duplicates"
    );
    // The reference's gap read may still be waiting for rows when real-2..4 commit (it
    // delivers them itself), so the stranger's envelope may be processed after real-4.
    let deadline = tokio::time::Instant::now() + WAIT;
    while b.envelopes_rejected() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the unconfirmed envelopes are counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        b.envelopes_rejected(),
        3,
        "the inline, the reference and the stranger's"
    );
    for node in &nodes {
        node.shutdown().await.unwrap();
    }
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_partitioned_publishes_fail_fast_local_deliveries_go_on_and_the_circuit_closes() {
    let schema = TestSchema::create("trust_circuit").await;
    let proxy = CuttingProxy::start(schema.database_address().await).await;
    let cut_off = Arc::new(
        backplane_postgres::PostgresBackplane::connect(
            schema
                .options_through(&proxy)
                .circuit_cooldown(Duration::from_millis(500)),
        )
        .await
        .unwrap(),
    );
    let other = schema.nodes(1).await.pop().unwrap();
    let here = BackplaneHubLifetimeManager::new(HUB, cut_off.clone() as Arc<dyn Backplane>)
        .await
        .unwrap();
    let there = BackplaneHubLifetimeManager::new(HUB, other.clone() as Arc<dyn Backplane>)
        .await
        .unwrap();
    let (local, remote) = (
        Arc::new(RecordingSink::new()),
        Arc::new(RecordingSink::new()),
    );
    here.on_connected(LocalConnection::new("here", None, local.clone()))
        .await
        .unwrap();
    there
        .on_connected(LocalConnection::new("there", None, remote.clone()))
        .await
        .unwrap();
    here.send_all(RecordingSink::message("before"))
        .await
        .unwrap();
    remote.take_until("before", WAIT).await;
    local.take_until("before", WAIT).await;

    proxy.partition(true);
    // The listener's probe (every 500 ms, 1 s timeout) notices and opens the circuit;
    // a send made before that may wait out the 2 s command timeout.
    let deadline = Instant::now() + WAIT;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let label = format!("during-{attempt}");
        let result = here.send_all(RecordingSink::message(&label)).await;
        if let Err(HubError::LocalOnly(BackplaneError::Unavailable { reason })) = &result {
            assert!(!reason.is_empty());
            local.take_until(&label, WAIT).await;
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the circuit never opened: {result:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // While it stays open, every send fails at once and still reaches this node.
    for i in 0..20 {
        let label = format!("open-{i}");
        let started = Instant::now();
        let result = here.send_all(RecordingSink::message(&label)).await;
        assert!(
            matches!(
                result,
                Err(HubError::LocalOnly(BackplaneError::Unavailable { .. }))
            ),
            "{result:?}"
        );
        // Generous for a loaded machine; without the circuit each would wait out the
        // command timeout behind the batches before it.
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
        local.take_until(&label, WAIT).await;
    }
    // The raw publish says the same, and numbers nothing.
    let direct = cut_off
        .publish(HUB, EnvelopeKind::Ack(Ack { ack_id: 1 }))
        .await;
    assert!(
        matches!(direct, Err(BackplaneError::Unavailable { .. })),
        "{direct:?}"
    );

    proxy.partition(false);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut healed = None;
    for attempt in 0.. {
        let label = format!("after-{attempt}");
        if here.send_all(RecordingSink::message(&label)).await.is_ok() {
            healed = Some(label);
            break;
        }
        assert!(Instant::now() < deadline, "the circuit never closed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let healed = healed.unwrap();
    let arrived = remote.take_until(&healed, WAIT).await;
    assert!(
        arrived.iter().all(|label| !label.starts_with("open-")),
        "nothing sent while the circuit was open reached the other node: {arrived:?}"
    );
    there
        .send_all(RecordingSink::message("back"))
        .await
        .unwrap();
    local.take_until("back", WAIT).await;
    drop((here, there));
    cut_off.shutdown().await.unwrap();
    other.shutdown().await.unwrap();
    schema.drop().await;
}

/// Wait until `node` has rejected `count` notifications or envelopes.
async fn rejected(node: &dyn Backplane, count: u64) {
    let deadline = Instant::now() + WAIT;
    while node.envelopes_rejected() < count {
        assert!(
            Instant::now() < deadline,
            "rejected {} of {count}",
            node.envelopes_rejected()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(node.envelopes_rejected(), count);
}

/// Instances configured with and without the cluster secret on one schema (a mistake
/// while rolling a secret out): neither delivers the other's envelopes, and each counts
/// what it drops as rejected, so `/health`'s `envelopesRejected` points at the cause on
/// both sides (the log says which side lacks the secret).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_with_and_without_the_secret_count_each_others_traffic_as_rejected() {
    let schema = TestSchema::create("trust_mismatch").await;
    let secret = ClusterSecret::new("trust test cluster secret 0123456").unwrap();
    let signed = schema
        .nodes_with(2, |options| options.cluster_secret(secret.clone()))
        .await;
    let unsigned = schema.nodes(2).await;
    let mut at_signed = signed[1].subscribe(HUB).await.unwrap();
    let mut at_unsigned = unsigned[1].subscribe(HUB).await.unwrap();
    publish(signed[0].as_ref(), "signed-1").await;
    publish(unsigned[0].as_ref(), "unsigned").await;
    publish(signed[0].as_ref(), "signed-2").await;
    assert_eq!(
        envelopes_until(&mut at_signed, "signed-2").await,
        ["signed-1", "signed-2"],
        "the unsigned envelope is not delivered with the secret"
    );
    rejected(signed[1].as_ref(), 1).await;
    publish(unsigned[0].as_ref(), "unsigned-2").await;
    assert_eq!(
        envelopes_until(&mut at_unsigned, "unsigned-2").await,
        ["unsigned", "unsigned-2"],
        "signed envelopes are not delivered without the secret"
    );
    rejected(unsigned[1].as_ref(), 2).await;
    for node in signed.iter().chain(&unsigned) {
        node.shutdown().await.unwrap();
    }
    schema.drop().await;
}
