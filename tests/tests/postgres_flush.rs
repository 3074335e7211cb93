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

use backplane_core::{Backplane, BackplaneError, BackplaneEvent, Envelope, Subscription};
use backplane_postgres::{PostgresBackplane, PostgresOptions, SynchronousCommit};
use futures_util::StreamExt as _;
use tests::TestSchema;
use tests::events::{label_of, labelled, next_envelope, next_event, subscribed};
use tokio::task::JoinHandle;

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

/// A sender node running as a role of its own (with `command_timeout`) and a receiver
/// node subscribed to the hub, on a fresh schema.
struct HeldOff {
    schema: TestSchema,
    role: SenderRole,
    sender: Arc<PostgresBackplane>,
    receiver: Arc<PostgresBackplane>,
    subscription: Subscription,
}

impl HeldOff {
    async fn start(label: &str, command_timeout: Duration) -> Self {
        let schema = TestSchema::create(label).await;
        let role = SenderRole::create(&schema).await;
        let sender = schema
            .nodes_with(1, |options| {
                role.options(options).command_timeout(command_timeout)
            })
            .await
            .remove(0);
        assert_eq!(
            sender.options().synchronous_commit,
            SynchronousCommit::NotifyBeforeFlush,
            "the default this file tests"
        );
        // The sender's role creates the table (so it owns it) before anyone subscribes.
        sender.publish(HUB, labelled("table")).await.unwrap();
        let receiver = schema.nodes(1).await.remove(0);
        let mut subscription = subscribed(&receiver, HUB).await;
        // The table exists, the publishing statements are prepared.
        sender.publish(HUB, labelled("warm-up")).await.unwrap();
        let warm_up = next_envelope(&mut subscription, "warm-up").await;
        assert_eq!(label_of(&warm_up), "warm-up");
        Self {
            schema,
            role,
            sender,
            receiver,
            subscription,
        }
    }

    /// Keep the sender's confirming connection out, publish `label`, and wait for the
    /// receiver to get it: the publish (still running), the envelope, and when the
    /// publish started.
    async fn publish_unconfirmed(
        &mut self,
        label: &'static str,
    ) -> (
        JoinHandle<Result<(), BackplaneError>>,
        Arc<Envelope>,
        tokio::time::Instant,
    ) {
        self.role.freeze_connections().await;
        self.schema
            .terminate("flusher", self.sender.node_id())
            .await;
        let started = tokio::time::Instant::now();
        let publishing = tokio::spawn({
            let sender = self.sender.clone();
            async move { sender.publish(HUB, labelled(label)).await }
        });
        let envelope = next_envelope(&mut self.subscription, "the envelope, unconfirmed").await;
        assert_eq!(label_of(&envelope), label);
        (publishing, envelope, started)
    }

    /// Publish `label` and expect it as the receiver's very next event, right after
    /// `previous`.
    async fn publish_next(&mut self, label: &str, previous: &Envelope) {
        self.sender.publish(HUB, labelled(label)).await.unwrap();
        match next_event(&mut self.subscription, label).await {
            BackplaneEvent::Envelope(envelope) => {
                assert_eq!(label_of(&envelope), label);
                assert_eq!(envelope.seq, previous.seq + 1);
            }
            other => panic!("expected the next envelope and nothing else, got {other:?}"),
        }
    }

    /// The quoted name of the hub's messages table.
    fn table(&self) -> String {
        self.schema.messages_table(HUB)
    }

    /// The payload of the sender's row at `seq`.
    async fn payload_at(&self, seq: u64) -> Vec<u8> {
        self.schema
            .admin()
            .await
            .query_one(
                &format!(
                    "SELECT payload FROM {} WHERE origin = $1 AND seq = $2",
                    self.table()
                ),
                &[
                    &self.sender.node_id().to_bytes().as_slice(),
                    &i64::try_from(seq).unwrap(),
                ],
            )
            .await
            .unwrap_or_else(|error| panic!("no row at {seq}: {error}"))
            .get(0)
    }

    async fn finish(self) {
        self.sender.shutdown().await.unwrap();
        self.receiver.shutdown().await.unwrap();
        self.schema.drop().await;
        self.role.drop().await;
    }
}

/// The confirming connection is held off: the envelope reaches the receiver anyway, its
/// publish waits, and once confirmation is possible again the publish returns `Ok` (its
/// row is there, so the node, having reconnected, finds it stored).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivers_get_an_envelope_before_its_flush_is_confirmed_and_publish_waits_for_it() {
    let mut held = HeldOff::start("flush_waits", Duration::from_secs(10)).await;
    let (publishing, early, _) = held.publish_unconfirmed("early").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !publishing.is_finished(),
        "publish returned before any flush could be confirmed: {:?}",
        publishing.await
    );

    held.role.allow_connections().await;
    let result = tokio::time::timeout(Duration::from_secs(10), publishing)
        .await
        .expect("publish still waiting 10 s after confirmation became possible")
        .unwrap();
    result.expect("the row exists and is flushed, so the publish succeeds");

    held.publish_next("later", &early).await;
    held.finish().await;
}

/// What a PostgreSQL crash between commit and flush does, played by deleting the row
/// while the confirmation is held off: the publish fails and says why, the number
/// becomes a tombstone, and the node goes on publishing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envelope_lost_before_its_flush_fails_its_publish_and_leaves_a_tombstone() {
    let mut held = HeldOff::start("flush_lost", Duration::from_secs(10)).await;

    let (publishing, lost, _) = held.publish_unconfirmed("lost").await;
    let deleted = held
        .schema
        .admin()
        .await
        .execute(
            &format!("DELETE FROM {} WHERE seq = $1", held.table()),
            &[&i64::try_from(lost.seq).unwrap()],
        )
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    held.role.allow_connections().await;
    let error = tokio::time::timeout(Duration::from_secs(10), publishing)
        .await
        .expect("publish still waiting 10 s after confirmation became possible")
        .unwrap()
        .expect_err("the row is gone: the publish must not succeed");
    assert!(
        error.to_string().contains("lost it"),
        "the error says the database lost the envelope: {error}"
    );

    held.publish_next("after", &lost).await;
    let payload = held.payload_at(lost.seq).await;
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
    held.finish().await;
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
    let mut subscription = subscribed(&receiver, HUB).await;

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

    let mut subscription = subscribed(&default, HUB).await;
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
    let mut held = HeldOff::start("flush_timeout", Duration::from_secs(2)).await;

    let (publishing, unconfirmed, started) = held.publish_unconfirmed("unconfirmed").await;
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

    held.role.allow_connections().await;
    held.publish_next("after", &unconfirmed).await;
    let payload = held.payload_at(unconfirmed.seq).await;
    assert_ne!(
        payload.first(),
        Some(&0),
        "the committed row stays; the tombstone for its number must yield to it"
    );
    held.finish().await;
}
