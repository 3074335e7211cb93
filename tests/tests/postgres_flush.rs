//! `SynchronousCommit::NotifyBeforeFlush`, the default: receivers get an envelope as soon
//! as its batch commits, while `publish` waits until a second connection confirmed the WAL
//! flush past it; an envelope the database loses before its flush fails its publish and
//! leaves a tombstone; a confirming connection that dies fails nothing.
//!
//! To hold a confirmation back, the sending node runs as a role of its own whose
//! connection limit is lowered to the connections it has besides the confirming one, and
//! its confirming backend is terminated: it cannot reconnect until the limit is lifted.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use backplane_core::{Backplane, BackplaneError, BackplaneEvent, Subscription};
use backplane_postgres::{PostgresBackplane, PostgresOptions, SynchronousCommit};
use futures_util::StreamExt as _;
use tests::TestSchema;
use tests::events::{expect_connected, label_of, labelled, next_envelope, next_event};

const HUB: &str = "flush";

/// Serializes the tests' grants on the database and their revocation: PostgreSQL fails
/// concurrent changes of one database's privileges ("tuple concurrently updated").
const ROLE_LOCK: i64 = 0x6270_7466;

/// A login role for the sending node, so its connections can be limited on their own.
struct SenderRole {
    name: String,
    admin: tokio_postgres::Client,
}

impl SenderRole {
    async fn create(schema: &TestSchema) -> Self {
        let admin = schema.admin().await;
        let name = format!("{}_sender", schema.name());
        let database: String = admin
            .query_one("SELECT current_database()", &[])
            .await
            .unwrap()
            .get(0);
        admin
            .batch_execute(&format!(
                "BEGIN; SELECT pg_advisory_xact_lock({ROLE_LOCK});
                 CREATE ROLE \"{name}\" LOGIN; GRANT CREATE ON DATABASE \"{database}\" TO \"{name}\";
                 COMMIT;"
            ))
            .await
            .unwrap();
        Self { name, admin }
    }

    /// `options` connecting as this role.
    fn options(&self, mut options: PostgresOptions) -> PostgresOptions {
        options.config.user(&self.name);
        options
    }

    /// Refuse new connections of the role beyond those it has now, not counting its
    /// confirming connection (about to be terminated, and then kept out).
    async fn freeze_connections(&self) {
        let open: i64 = self
            .admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE usename = $1 AND application_name NOT LIKE '% flusher %'",
                &[&self.name],
            )
            .await
            .unwrap()
            .get(0);
        self.admin
            .batch_execute(&format!(
                "ALTER ROLE \"{}\" CONNECTION LIMIT {open}",
                self.name
            ))
            .await
            .unwrap();
    }

    async fn allow_connections(&self) {
        self.admin
            .batch_execute(&format!("ALTER ROLE \"{}\" CONNECTION LIMIT -1", self.name))
            .await
            .unwrap();
    }

    /// Drop the role and what it owns (the schema, when it created it).
    async fn drop(self) {
        self.admin
            .batch_execute(&format!(
                "BEGIN; SELECT pg_advisory_xact_lock({ROLE_LOCK});
                 DROP OWNED BY \"{0}\" CASCADE; DROP ROLE \"{0}\"; COMMIT;",
                self.name
            ))
            .await
            .unwrap();
    }
}

/// A sender node running as `role` (with `command_timeout`) and a receiver node
/// subscribed to the hub.
async fn sender_and_receiver(
    schema: &TestSchema,
    role: &SenderRole,
    command_timeout: Duration,
) -> (Arc<PostgresBackplane>, Arc<PostgresBackplane>, Subscription) {
    let sender = schema
        .nodes_with(1, |options| {
            role.options(options).command_timeout(command_timeout)
        })
        .await;
    assert_eq!(
        sender[0].options().synchronous_commit,
        SynchronousCommit::NotifyBeforeFlush,
        "the default this file tests"
    );
    // The sender's role creates the table (so it owns it) before anyone subscribes.
    sender[0].publish(HUB, labelled("table")).await.unwrap();
    let receiver = schema.nodes(1).await;
    let mut subscription = receiver[0].subscribe(HUB).await.unwrap();
    expect_connected(&mut subscription).await;
    // The table exists, the publishing statements are prepared.
    sender[0].publish(HUB, labelled("warm-up")).await.unwrap();
    let warm_up = next_envelope(&mut subscription, "warm-up").await;
    assert_eq!(label_of(&warm_up), "warm-up");
    (sender[0].clone(), receiver[0].clone(), subscription)
}

/// The confirming connection is held off: the envelope reaches the receiver anyway, its
/// publish waits, and once confirmation is possible again the publish returns `Ok` (its
/// row is there, so the node, having reconnected, finds it stored).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivers_get_an_envelope_before_its_flush_is_confirmed_and_publish_waits_for_it() {
    let schema = TestSchema::create("flush_waits").await;
    let role = SenderRole::create(&schema).await;
    let (sender, receiver, mut subscription) =
        sender_and_receiver(&schema, &role, Duration::from_secs(10)).await;

    role.freeze_connections().await;
    schema.terminate("flusher", sender.node_id()).await;
    let publishing = tokio::spawn({
        let sender = sender.clone();
        async move { sender.publish(HUB, labelled("early")).await }
    });
    let early = next_envelope(&mut subscription, "the envelope, before its flush").await;
    assert_eq!(label_of(&early), "early");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !publishing.is_finished(),
        "publish returned before any flush could be confirmed: {:?}",
        publishing.await
    );

    role.allow_connections().await;
    let result = tokio::time::timeout(Duration::from_secs(10), publishing)
        .await
        .expect("publish still waiting 10 s after confirmation became possible")
        .unwrap();
    result.expect("the row exists and is flushed, so the publish succeeds");

    sender.publish(HUB, labelled("later")).await.unwrap();
    match next_event(&mut subscription, "later").await {
        BackplaneEvent::Envelope(envelope) => assert_eq!(label_of(&envelope), "later"),
        other => panic!("expected the next envelope and nothing else, got {other:?}"),
    }
    sender.shutdown().await.unwrap();
    receiver.shutdown().await.unwrap();
    schema.drop().await;
    role.drop().await;
}

/// What a PostgreSQL crash between commit and flush does, played by deleting the row
/// while the confirmation is held off: the publish fails and says why, the number
/// becomes a tombstone, and the node goes on publishing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envelope_lost_before_its_flush_fails_its_publish_and_leaves_a_tombstone() {
    let schema = TestSchema::create("flush_lost").await;
    let role = SenderRole::create(&schema).await;
    let (sender, receiver, mut subscription) =
        sender_and_receiver(&schema, &role, Duration::from_secs(10)).await;
    let table = format!("\"{}\".\"{HUB}_messages\"", schema.name());
    let admin = schema.admin().await;

    role.freeze_connections().await;
    schema.terminate("flusher", sender.node_id()).await;
    let publishing = tokio::spawn({
        let sender = sender.clone();
        async move { sender.publish(HUB, labelled("lost")).await }
    });
    let lost = next_envelope(&mut subscription, "the envelope, before its flush").await;
    assert_eq!(label_of(&lost), "lost");
    let deleted = admin
        .execute(
            &format!("DELETE FROM {table} WHERE seq = $1"),
            &[&i64::try_from(lost.seq).unwrap()],
        )
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    role.allow_connections().await;
    let error = tokio::time::timeout(Duration::from_secs(10), publishing)
        .await
        .expect("publish still waiting 10 s after confirmation became possible")
        .unwrap()
        .expect_err("the row is gone: the publish must not succeed");
    assert!(
        error.to_string().contains("lost it"),
        "the error says the database lost the envelope: {error}"
    );

    sender.publish(HUB, labelled("after")).await.unwrap();
    match next_event(&mut subscription, "after").await {
        BackplaneEvent::Envelope(envelope) => {
            assert_eq!(label_of(&envelope), "after");
            assert_eq!(envelope.seq, lost.seq + 1);
        }
        other => panic!("expected the next envelope and nothing else, got {other:?}"),
    }
    let payload: Vec<u8> = admin
        .query_one(
            &format!("SELECT payload FROM {table} WHERE seq = $1"),
            &[&i64::try_from(lost.seq).unwrap()],
        )
        .await
        .expect("a tombstone row for the lost number")
        .get(0);
    assert_eq!(
        payload.len(),
        9,
        "the row at the lost number is a tombstone"
    );
    assert_eq!(payload[0], 0);
    assert_eq!(
        u64::from_be_bytes(payload[1..].try_into().unwrap()),
        lost.seq
    );

    sender.shutdown().await.unwrap();
    receiver.shutdown().await.unwrap();
    schema.drop().await;
    role.drop().await;
}

/// The confirming connection is killed three times during 3,000 publishes: every
/// publish succeeds (nothing was lost, so the checks after each reconnect find every
/// row) and every envelope arrives exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_confirming_connection_fails_no_publish() {
    const COUNT: u64 = 3_000;
    let schema = TestSchema::create("flusher_killed").await;
    let nodes = schema.nodes(2).await;
    let (sender, receiver) = (nodes[0].clone(), nodes[1].clone());
    let mut subscription = receiver.subscribe(HUB).await.unwrap();
    expect_connected(&mut subscription).await;

    let publishing = tokio::spawn({
        let sender = sender.clone();
        async move {
            futures_util::stream::iter(0..COUNT)
                .map(|i| {
                    let sender = sender.clone();
                    async move {
                        if i.is_multiple_of(30) {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        (i, sender.publish(HUB, labelled(&i.to_string())).await)
                    }
                })
                .buffered(16)
                .collect::<Vec<_>>()
                .await
        }
    });
    let mut kills = 0;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(120)).await;
        if publishing.is_finished() {
            break;
        }
        kills += schema.terminate("flusher", sender.node_id()).await;
    }
    let results = publishing.await.unwrap();
    assert!(kills >= 1, "the publishes finished before a kill");
    let failed: Vec<_> = results
        .iter()
        .filter(|(_, result)| result.is_err())
        .collect();
    assert!(
        failed.is_empty(),
        "{} publishes failed although nothing was lost: {:?}",
        failed.len(),
        failed.first()
    );
    let mut seen = HashSet::new();
    let mut last_seq = 0;
    while seen.len() < usize::try_from(COUNT).unwrap() {
        match next_event(&mut subscription, "every envelope").await {
            BackplaneEvent::Envelope(envelope) => {
                assert!(envelope.seq > last_seq, "out of order");
                last_seq = envelope.seq;
                let label = label_of(&envelope);
                assert!(seen.insert(label.clone()), "{label} arrived twice");
            }
            other => panic!("the receiver was never cut off, yet got {other:?}"),
        }
    }
    eprintln!("{kills} kills of the confirming connection, {COUNT} publishes ok");
    for node in &nodes {
        node.shutdown().await.unwrap();
    }
    schema.drop().await;
}

/// `On` waits for the flush in the publishing transaction itself: no confirming
/// connection is opened, and envelopes still cross. The default opens exactly one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_notify_before_flush_opens_a_confirming_connection() {
    let schema = TestSchema::create("flush_modes").await;
    let admin = schema.admin().await;
    let confirming = async |node: &PostgresBackplane| -> i64 {
        admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                &[&format!("signalr-backplane flusher {}", node.node_id())],
            )
            .await
            .unwrap()
            .get(0)
    };
    let on = schema
        .nodes_with(1, |options| {
            options.synchronous_commit(SynchronousCommit::On)
        })
        .await
        .remove(0);
    let default = schema.nodes(1).await.remove(0);
    assert_eq!(confirming(&on).await, 0);
    assert_eq!(confirming(&default).await, 1);

    let mut subscription = default.subscribe(HUB).await.unwrap();
    expect_connected(&mut subscription).await;
    on.publish(HUB, labelled("from on")).await.unwrap();
    assert_eq!(
        label_of(&*next_envelope(&mut subscription, "from on").await),
        "from on"
    );
    on.shutdown().await.unwrap();
    default.shutdown().await.unwrap();
    // The backend leaves pg_stat_activity shortly after its client hung up.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while confirming(&default).await != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "shutdown must close the confirming connection"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    schema.drop().await;
}

/// A confirmation that cannot happen within the command timeout fails its publish with
/// `Timeout`, although the row was committed: the receiver delivered it, the row stays
/// (the tombstone written for its number yields to it), and publishing goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmation_that_times_out_fails_the_publish_and_keeps_the_row() {
    let schema = TestSchema::create("flush_timeout").await;
    let role = SenderRole::create(&schema).await;
    let (sender, receiver, mut subscription) =
        sender_and_receiver(&schema, &role, Duration::from_secs(2)).await;
    let table = format!("\"{}\".\"{HUB}_messages\"", schema.name());
    let admin = schema.admin().await;

    role.freeze_connections().await;
    schema.terminate("flusher", sender.node_id()).await;
    let started = tokio::time::Instant::now();
    let publishing = tokio::spawn({
        let sender = sender.clone();
        async move { sender.publish(HUB, labelled("unconfirmed")).await }
    });
    let unconfirmed = next_envelope(&mut subscription, "the envelope, unconfirmed").await;
    assert_eq!(label_of(&unconfirmed), "unconfirmed");
    let error = tokio::time::timeout(Duration::from_secs(10), publishing)
        .await
        .expect("the publish must give up at its command timeout")
        .unwrap()
        .expect_err("no flush could be confirmed");
    assert!(
        matches!(error, BackplaneError::Timeout(timeout) if timeout == Duration::from_secs(2)),
        "expected a timeout, got {error}"
    );
    // Retried rather than failed at once (the retries stop when the next one would
    // fall after the timeout: here after about 1.3 s of doubling delays).
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "gave up after {:?}",
        started.elapsed()
    );

    role.allow_connections().await;
    sender.publish(HUB, labelled("after")).await.unwrap();
    match next_event(&mut subscription, "after").await {
        BackplaneEvent::Envelope(envelope) => {
            assert_eq!(label_of(&envelope), "after");
            assert_eq!(envelope.seq, unconfirmed.seq + 1);
        }
        other => panic!("expected the next envelope and nothing else, got {other:?}"),
    }
    let payload: Vec<u8> = admin
        .query_one(
            &format!("SELECT payload FROM {table} WHERE seq = $1"),
            &[&i64::try_from(unconfirmed.seq).unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    assert_ne!(
        payload.first(),
        Some(&0),
        "the committed row stays; the tombstone for its number must yield to it"
    );

    sender.shutdown().await.unwrap();
    receiver.shutdown().await.unwrap();
    schema.drop().await;
    role.drop().await;
}
