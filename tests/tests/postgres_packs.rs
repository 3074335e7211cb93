//! The PostgreSQL backplane stores each hub's run of a batch as one *pack* row (keyed by
//! the run's last number). What users rely on: envelopes read back from the table — by
//! reference notifications, and by catch-up after the listener lost its connection —
//! arrive exactly once and in order, wherever they sit in a pack; the table holds a
//! row per run, not per envelope; large packs are compressed with LZ4 where the server
//! offers it; and nodes that compress notifications and nodes that do not (a cluster
//! being upgraded) read each other.

use backplane_core::{Backplane, BackplaneEvent, GapRepair};
use backplane_postgres::DEFAULT_INLINE_THRESHOLD;
use futures_util::StreamExt as _;
use tests::TestSchema;
use tests::events::{label_of, labelled, next_event, subscribed};
use tests::scene::TwoNodes;

const HUB: &str = "packs";

/// The byte that starts a pack row's payload.
const PACK_MARKER: u8 = 255;

/// `(rows, pack rows)` of `HUB`'s table in `schema`.
async fn row_counts(schema: &TestSchema) -> (i64, i64) {
    let admin = schema.admin().await;
    let row = admin
        .query_one(
            &format!(
                "SELECT count(*), count(*) FILTER (WHERE get_byte(payload, 0) = {PACK_MARKER})
                 FROM {}",
                schema.messages_table(HUB)
            ),
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// The compression method of each of `HUB`'s compressed payloads in `schema` (`pglz`,
/// `lz4`), and whether the server offers LZ4 at all.
async fn compression_methods(schema: &TestSchema) -> (Vec<String>, bool) {
    let admin = schema.admin().await;
    let methods = admin
        .query(
            &format!(
                "SELECT pg_column_compression(payload) FROM {}
                 WHERE pg_column_compression(payload) IS NOT NULL",
                schema.messages_table(HUB)
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let offered: bool = admin
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_settings
                 WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals))",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    (methods, offered)
}

/// Publish `count` envelopes from `sender` with up to `in_flight` at once (numbered in
/// first-poll order, so they form batches of many); every third is larger than the
/// inline threshold when `large` is set, so its notification is a reference and
/// receivers read it from a pack.
async fn publish_many(
    sender: &std::sync::Arc<backplane_postgres::PostgresBackplane>,
    count: u64,
    in_flight: usize,
    large: bool,
) {
    futures_util::stream::iter(0..count)
        .map(|i| {
            let sender = sender.clone();
            async move {
                let mut message = labelled(&i.to_string());
                if large && i % 3 == 0 {
                    message = labelled(&format!("{i}:{}", "x".repeat(DEFAULT_INLINE_THRESHOLD)));
                }
                sender.publish(HUB, message).await
            }
        })
        .buffered(in_flight)
        .for_each(|result| async move { result.expect("publish failed") })
        .await;
}

fn number(label: &str) -> u64 {
    label.split(':').next().unwrap().parse().unwrap()
}

/// Referenced envelopes (too large to go inline) are read from pack rows, wherever they
/// sit in their run: each arrives once, in order among the inline ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referenced_envelopes_are_read_from_packs_in_order() {
    const COUNT: u64 = 600;
    let scene = TwoNodes::start("packs_referenced").await;
    let (sender, receiver) = (scene.sender.clone(), scene.receiver.clone());
    let mut subscription = subscribed(&*receiver, HUB).await;

    let publishing = {
        let sender = sender.clone();
        tokio::spawn(async move { publish_many(&sender, COUNT, 200, true).await })
    };
    for expected in 0..COUNT {
        match next_event(&mut subscription, &format!("envelope {expected}")).await {
            BackplaneEvent::Envelope(envelope) => {
                assert_eq!(envelope.seq, expected + 1, "once each, in order");
                assert_eq!(number(&label_of(&envelope)), expected);
            }
            other => panic!("nothing but envelopes expected, got {other:?}"),
        }
    }
    publishing.await.unwrap();
    let (rows, packs) = row_counts(&scene.schema).await;
    assert!(packs >= 1, "no pack row among {rows} rows");
    assert!(
        u64::try_from(rows).unwrap() < COUNT / 2,
        "{rows} rows for {COUNT} envelopes published 200 at a time"
    );
    // Packs this large are compressed by PostgreSQL as they are inserted, inside the
    // publishing transaction: with LZ4 where the server has it (pglz costs ~4x the time).
    let (methods, lz4_offered) = compression_methods(&scene.schema).await;
    assert!(!methods.is_empty(), "no compressed pack among {rows} rows");
    if lz4_offered {
        assert!(
            methods.iter().all(|method| method == "lz4"),
            "packs compressed with {methods:?}, not LZ4"
        );
    }
    drop((sender, receiver));
    scene.finish().await;
}

/// A listener that loses its connection while batches are stored catches up from the
/// pack rows: every envelope once, in order, and the outage reported as repaired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_reads_packs_after_the_listener_was_killed() {
    const COUNT: u64 = 3_000;
    let scene = TwoNodes::start("packs_catch_up").await;
    let (sender, receiver) = (scene.sender.clone(), scene.receiver.clone());
    let mut subscription = subscribed(&*receiver, HUB).await;

    // The second half is published once the listener's backend is killed, so it is
    // stored while the listener is away (it waits at least 100 ms before reconnecting)
    // and must come from the table, however fast the first half was notified.
    let (killed_tx, killed_rx) = tokio::sync::oneshot::channel::<()>();
    let mut killed_tx = Some(killed_tx);
    let publishing = {
        let sender = sender.clone();
        tokio::spawn(async move {
            publish_many(&sender, COUNT / 2, 256, false).await;
            killed_rx.await.expect("the kill was never made");
            publish_many(&sender, COUNT / 2, 256, false).await;
        })
    };
    let mut received = 0u64;
    let mut killed = false;
    let mut reconnected = false;
    let mut from_the_table = 0;
    while received < COUNT || (killed && !reconnected) {
        match next_event(&mut subscription, &format!("envelope {received}")).await {
            BackplaneEvent::Envelope(envelope) => {
                received += 1;
                assert_eq!(envelope.seq, received, "once each, in order");
                if received == COUNT / 4 && !killed {
                    let killed_now = scene.schema.terminate("listener", receiver.node_id()).await;
                    assert!(killed_now > 0);
                    killed = true;
                    let _ = killed_tx.take().map(|tx| tx.send(()));
                }
            }
            BackplaneEvent::Disconnected { .. } => assert!(killed),
            BackplaneEvent::Reconnected { gap } => {
                let GapRepair::Repaired { recovered } = gap else {
                    panic!("nothing may be lost: {gap:?}");
                };
                from_the_table += recovered;
                reconnected = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    publishing.await.unwrap();
    assert!(reconnected, "the kill was not noticed");
    // The listener waits at least 100 ms before reconnecting while the sender goes on.
    assert!(from_the_table > 0, "nothing was caught up from the table");
    let (rows, packs) = row_counts(&scene.schema).await;
    assert!(packs >= 1, "no pack row among {rows} rows");
    assert!(
        u64::try_from(rows).unwrap() < COUNT / 4,
        "{rows} rows for {COUNT} envelopes"
    );
    drop((sender, receiver));
    scene.finish().await;
}

/// A cluster being upgraded: a node that writes plain notifications only
/// (`compress_notifications(false)`, as for older nodes) and one that compresses read each
/// other's envelopes, every one once and in order; and the modes really differ on the
/// wire (a plain client listening on the channel sees compressed notifications from one
/// node only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_and_compressing_nodes_read_each_other() {
    const COUNT: u64 = 400;
    let schema = TestSchema::create("packs_mixed").await;
    let plain = schema
        .nodes_with(1, |options| options.compress_notifications(false))
        .await
        .remove(0);
    let compressing = schema.nodes(1).await.remove(0);

    let (_watcher, mut notified) =
        tests::listen(schema.url(), &format!("{}.{HUB}", schema.name())).await;

    let mut at_plain = subscribed(&*plain, HUB).await;
    let mut at_compressing = subscribed(&*compressing, HUB).await;
    let from_plain = tokio::spawn({
        let plain = plain.clone();
        async move { publish_many(&plain, COUNT, 100, false).await }
    });
    let from_compressing = tokio::spawn({
        let compressing = compressing.clone();
        async move { publish_many(&compressing, COUNT, 100, false).await }
    });
    for (receiving, subscription) in [
        ("the compressing node", &mut at_compressing),
        ("the plain node", &mut at_plain),
    ] {
        for expected in 0..COUNT {
            match next_event(subscription, &format!("envelope {expected} at {receiving}")).await {
                BackplaneEvent::Envelope(envelope) => {
                    assert_eq!(
                        envelope.seq,
                        expected + 1,
                        "once each, in order, at {receiving}"
                    );
                    assert_eq!(number(&label_of(&envelope)), expected);
                }
                other => panic!("nothing but envelopes expected at {receiving}, got {other:?}"),
            }
        }
    }
    from_plain.await.unwrap();
    from_compressing.await.unwrap();

    // Each notification names its origin in its header (`<kind><32 hex digits>:`).
    let (plain_origin, compressing_origin) = (
        plain.node_id().to_string(),
        compressing.node_id().to_string(),
    );
    let mut kinds: std::collections::HashMap<(String, char), usize> = Default::default();
    let count = |kinds: &std::collections::HashMap<(String, char), usize>, origin: &str, kind| {
        kinds.get(&(origin.to_owned(), kind)).copied().unwrap_or(0)
    };
    // The watcher's copies may trail the nodes' deliveries: wait for a notification of
    // each kind (or time out), then take whatever else has come in a moment later.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut grace = None;
    loop {
        let until = grace.unwrap_or(deadline);
        let Ok(Some(notification)) = tokio::time::timeout_at(until, notified.recv()).await else {
            break;
        };
        let text = notification.payload();
        let kind = text.chars().next().unwrap_or(' ');
        *kinds
            .entry((text.get(1..33).unwrap_or("").to_owned(), kind))
            .or_default() += 1;
        if grace.is_none()
            && count(&kinds, &plain_origin, 'i') > 0
            && count(&kinds, &compressing_origin, 'z') > 0
        {
            grace = Some(tokio::time::Instant::now() + std::time::Duration::from_millis(300));
        }
    }
    let count = |origin: &str, kind| count(&kinds, origin, kind);
    assert!(
        count(&plain_origin, 'i') > 0,
        "no plain notification seen: {kinds:?}"
    );
    assert_eq!(
        count(&plain_origin, 'z'),
        0,
        "the plain node compressed: {kinds:?}"
    );
    assert!(
        count(&compressing_origin, 'z') > 0,
        "nothing compressed: {kinds:?}"
    );

    for node in [plain, compressing] {
        node.shutdown().await.unwrap();
    }
    schema.drop().await;
}
