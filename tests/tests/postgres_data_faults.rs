//! The PostgreSQL backplane under data faults: large and borderline envelopes, corrupt
//! and missing rows, batches the database refuses (tombstones), rows already there,
//! retention. (Killed connections and partitions: `postgres_faults.rs`.)

use std::sync::Arc;
use std::time::Duration;

use backplane_core::testkit::RecordingSink;
use backplane_core::{
    Backplane, BackplaneEvent, Envelope, EnvelopeKind, GapRepair, NodeId, Protocol,
    SerializedMessage, Target,
};
use backplane_postgres::DEFAULT_INLINE_THRESHOLD;
use tests::TestSchema;
use tests::events::{
    crosses, events_until, expect_disconnected, label_of, labelled, next_envelope, next_event,
    subscribed,
};
use tests::scene::{BehindProxy, TwoNodes, behind_proxy};

const HUB: &str = "faults";

/// Make `table` refuse every new row that fails `check` (rows already there stay).
async fn refuse_rows(admin: &tokio_postgres::Client, table: &str, check: &str) {
    admin
        .batch_execute(&format!(
            "ALTER TABLE {table} ADD CONSTRAINT refuse CHECK ({check}) NOT VALID"
        ))
        .await
        .unwrap();
}

/// Undo [`refuse_rows`].
async fn accept_rows(admin: &tokio_postgres::Client, table: &str) {
    admin
        .batch_execute(&format!("ALTER TABLE {table} DROP CONSTRAINT refuse"))
        .await
        .unwrap();
}

/// How many rows `table` holds.
async fn count_rows(admin: &tokio_postgres::Client, table: &str) -> i64 {
    admin
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

/// Write a row into a messages table behind the backplane's back, as a node would have.
async fn insert_row(
    admin: &tokio_postgres::Client,
    table: &str,
    origin: NodeId,
    hub: &str,
    seq: i64,
    payload: &[u8],
) {
    admin
        .execute(
            &format!("INSERT INTO {table} (origin, hub, seq, payload) VALUES ($1, $2, $3, $4)"),
            &[&origin.to_bytes().as_slice(), &hub, &seq, &payload],
        )
        .await
        .unwrap();
}

/// A message whose envelope encodes to exactly `size` bytes when `origin` publishes it
/// as sequence number `seq` of `hub`.
fn sized(size: usize, origin: NodeId, seq: u64, hub: &str) -> EnvelopeKind {
    let make = |payload: usize| EnvelopeKind::Invocation {
        target: Target::All,
        message: SerializedMessage::new()
            .with(Protocol::Json, format!("{size}").into_bytes())
            .with(
                Protocol::MessagePack,
                (0..payload).map(|i| (i % 251) as u8).collect::<Vec<u8>>(),
            ),
    };
    let encoded = |payload: usize| {
        Envelope {
            origin,
            seq,
            hub: hub.to_owned(),
            destination: None,
            kind: make(payload),
        }
        .encode()
        .len()
    };
    // The length prefix grows with the payload, so step down to the exact size.
    let mut payload = size.saturating_sub(encoded(0));
    while encoded(payload) > size {
        payload -= 1;
    }
    assert_eq!(
        encoded(payload),
        size,
        "cannot build an envelope of {size} bytes"
    );
    make(payload)
}

/// Envelopes right below, at and above the inline threshold, 7,990 bytes and 1 MiB all
/// cross intact; those up to the threshold travel inline in the notification (plain or
/// compressed), larger ones by reference.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelopes_of_every_size_cross_intact() {
    let nodes = TwoNodes::start("sizes").await;
    let (schema, sender, receiver) = (&nodes.schema, &nodes.sender, &nodes.receiver);
    let mut subscription = subscribed(receiver, "sizes").await;

    // Watch the channel as a plain client too, to see how each envelope travelled.
    let (_watcher, mut notified) =
        tests::listen(schema.url(), &format!("{}.sizes", schema.name())).await;

    let threshold = DEFAULT_INLINE_THRESHOLD;
    let sizes = [threshold - 1, threshold, threshold + 1, 7_990, 1024 * 1024];
    for (i, size) in sizes.into_iter().enumerate() {
        let seq = i as u64 + 1;
        let kind = sized(size, sender.node_id(), seq, "sizes");
        sender.publish("sizes", kind.clone()).await.unwrap();
        let envelope = next_envelope(&mut subscription, &format!("the {size}-byte envelope")).await;
        assert_eq!(envelope.seq, seq);
        assert_eq!(envelope.encode().len(), size);
        assert!(
            envelope.kind == kind,
            "the {size}-byte envelope was corrupted"
        );
        let text = tokio::time::timeout(Duration::from_secs(10), notified.recv())
            .await
            .expect("no notification seen by the watcher")
            .unwrap()
            .payload()
            .to_owned();
        assert!(text.len() <= 7999, "notification of {} bytes", text.len());
        // Inline: plain (`i`) or, where LZ4 makes it shorter, compressed (`z`).
        let expected_kinds: &[char] = if size <= threshold {
            &['i', 'z']
        } else {
            &['r']
        };
        let kind = text.chars().next().unwrap_or(' ');
        assert!(
            expected_kinds.contains(&kind),
            "a {size}-byte envelope travelled the wrong way ({kind:?})"
        );
    }
    nodes.finish().await;
}

/// Garbage notifications, rows that do not decode and rows that are missing are logged
/// and skipped; gaps they leave are reported as unrepairable, and the listener keeps
/// delivering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_and_missing_data_is_skipped_and_reported() {
    let nodes = TwoNodes::start("corrupt").await;
    let (schema, sender, receiver) = (&nodes.schema, &nodes.sender, &nodes.receiver);
    let mut subscription = subscribed(receiver, HUB).await;
    let admin = schema.admin().await;
    let table = schema.messages_table(HUB);
    let channel = format!("{}.{HUB}", schema.name());
    // A node that exists only as rows written here.
    let ghost = NodeId::random();
    let insert = |seq: i64, payload: Vec<u8>| {
        let (admin, table) = (&admin, &table);
        async move { insert_row(admin, table, ghost, HUB, seq, &payload).await }
    };
    let notify = |text: String| {
        let (admin, channel) = (&admin, &channel);
        async move {
            admin
                .execute("SELECT pg_notify($1, $2)", &[channel, &text])
                .await
                .unwrap();
        }
    };
    let envelope = |seq: u64| {
        Envelope {
            origin: ghost,
            seq,
            hub: HUB.into(),
            destination: None,
            kind: labelled(&format!("ghost-{seq}")),
        }
        .encode()
    };
    let reference = |seq: u64| format!("r{ghost}:{seq}:{seq}:{HUB}");

    insert(1, envelope(1)).await;
    notify(reference(1)).await;
    // Garbage of every kind.
    notify("hello".into()).await;
    notify(format!("i{ghost}:this is not base64!")).await;
    notify(format!("i{ghost}:AAECAwQ=")).await; // valid base64, not a pack of envelopes
    notify(format!("r{ghost}:9:3:{HUB}")).await; // backwards range
    notify(format!("x{ghost}:whatever")).await;
    // Seq 2 is corrupt and never notified, 3 is fine: the gap is read, 2 is skipped.
    insert(2, vec![1, 0xde, 0xad, 0xbe, 0xef]).await;
    insert(3, envelope(3)).await;
    notify(reference(3)).await;
    // Seq 4 is corrupt and referenced directly: skipped and reported, no gap follows.
    insert(4, b"\x01garbage".to_vec()).await;
    notify(reference(4)).await;
    insert(5, envelope(5)).await;
    notify(reference(5)).await;
    // Seq 6 does not exist at all (deleted): the gap cannot be repaired.
    insert(7, envelope(7)).await;
    notify(reference(7)).await;
    sender.publish(HUB, labelled("after")).await.unwrap();

    assert_eq!(
        events_until(&mut subscription, "after").await,
        [
            "ghost-1",
            "unrepairable:1", // 2: corrupt, found while repairing the gap before 3
            "ghost-3",
            "unrepairable:1", // 4: corrupt, referenced directly
            "ghost-5",
            "unrepairable:1", // 6: missing, found while repairing the gap before 7
            "ghost-7",
            "after"
        ]
    );
    nodes.finish().await;
}

/// A batch that fails for good (here: a constraint rejects every row) fails its
/// publishes; its sequence numbers become tombstones, so receivers neither wait for nor
/// report them as lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_batches_leave_tombstones_not_gaps() {
    let nodes = TwoNodes::start("tombstones").await;
    let (schema, sender, receiver) = (&nodes.schema, &nodes.sender, &nodes.receiver);
    let mut subscription = subscribed(receiver, HUB).await;
    let admin = schema.admin().await;
    let table = schema.messages_table(HUB);

    // A second receiver, cut off by a partition while the batches fail: it must skip
    // the tombstones when it catches up from the table, too.
    let BehindProxy {
        proxy,
        node: cut_off,
        subscription: mut cut_off_subscription,
    } = behind_proxy(schema, HUB).await;

    crosses(sender, HUB, "before", &mut cut_off_subscription).await;
    proxy.partition(true);
    refuse_rows(&admin, &table, "seq < 0").await;
    // Failed batches: three publishes at once (one or more batches), then one more.
    let refused = futures_util::future::join_all(
        ["refused-a", "refused-b", "refused-c"].map(|label| sender.publish(HUB, labelled(label))),
    )
    .await;
    for result in refused {
        let error = result.expect_err("a publish whose row was refused must fail");
        assert!(
            error.to_string().contains("refuse"),
            "the error names the cause: {error}"
        );
    }
    sender
        .publish(HUB, labelled("refused-d"))
        .await
        .expect_err("still refused");
    accept_rows(&admin, &table).await;
    sender.publish(HUB, labelled("after")).await.unwrap();

    let mut seen = Vec::new();
    loop {
        match next_event(&mut subscription, "before and after").await {
            BackplaneEvent::Envelope(e) => {
                seen.push((label_of(&e), e.seq));
                if label_of(&e) == "after" {
                    break;
                }
            }
            other => panic!("a failed publish must not surface as an event: {other:?}"),
        }
    }
    assert_eq!(seen, [("before".to_owned(), 1), ("after".to_owned(), 6)]);
    let rows: Vec<(i64, Vec<u8>)> = admin
        .query(
            &format!("SELECT seq, payload FROM {table} ORDER BY seq"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    // Between the two real rows, tombstones: each row is byte 0 and the first number
    // it covers; together they cover 2..=5 exactly, one row per failed batch.
    assert_eq!(rows.first().map(|r| r.0), Some(1));
    assert_eq!(rows.last().map(|r| r.0), Some(6));
    let mut next = 2;
    for (seq, payload) in &rows[1..rows.len() - 1] {
        assert_eq!(payload.len(), 9, "row {seq} is not a tombstone");
        assert_eq!(payload[0], 0, "row {seq} is not a tombstone");
        let first = u64::from_be_bytes(payload[1..].try_into().unwrap());
        assert_eq!(first, next, "tombstones must cover 2..=5 without holes");
        next = u64::try_from(*seq).unwrap() + 1;
    }
    assert_eq!(next, 6, "tombstones must cover 2..=5");

    expect_disconnected(&mut cut_off_subscription).await;
    proxy.partition(false);
    let after = next_envelope(&mut cut_off_subscription, "after, from the table").await;
    assert_eq!((label_of(&after).as_str(), after.seq), ("after", 6));
    match next_event(&mut cut_off_subscription, "Reconnected").await {
        BackplaneEvent::Reconnected {
            gap: GapRepair::Repaired { recovered: 1 },
        } => {}
        other => panic!("tombstones must not count as lost: {other:?}"),
    }
    cut_off.shutdown().await.unwrap();
    nodes.finish().await;
}

/// A batch's first attempt inserts without `ON CONFLICT` (its sequence numbers are
/// new); should one of its rows exist anyway, the publish must still succeed (retried
/// with `ON CONFLICT DO NOTHING`), be delivered once, and later publishes go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_attempt_meeting_an_existing_row_is_retried_not_failed() {
    let nodes = TwoNodes::start("conflict").await;
    let (schema, sender, receiver) = (&nodes.schema, &nodes.sender, &nodes.receiver);
    let mut subscription = subscribed(receiver, HUB).await;
    let admin = schema.admin().await;
    let table = schema.messages_table(HUB);

    sender.publish(HUB, labelled("one")).await.unwrap();
    // The row sequence number 2 of this node will take, already there.
    insert_row(
        &admin,
        &table,
        sender.node_id(),
        HUB,
        2,
        &[0, 0, 0, 0, 0, 0, 0, 0, 2],
    )
    .await;
    sender
        .publish(HUB, labelled("two"))
        .await
        .expect("a conflicting row must not fail the publish");
    sender.publish(HUB, labelled("three")).await.unwrap();

    let mut seen = Vec::new();
    while seen.len() < 3 {
        let envelope = next_envelope(&mut subscription, "one, two, three").await;
        seen.push((label_of(&envelope), envelope.seq));
    }
    assert_eq!(
        seen,
        [
            ("one".to_owned(), 1),
            ("two".to_owned(), 2),
            ("three".to_owned(), 3)
        ]
    );
    assert_eq!(
        count_rows(&admin, &table).await,
        3,
        "one row per sequence number"
    );
    nodes.finish().await;
}

/// Rows older than the retention are deleted, newer ones are kept, and tables in the
/// schema that are not messages tables are never touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_only_old_rows() {
    let schema = TestSchema::create("retention").await;
    let nodes = schema
        .nodes_with(1, |options| {
            options
                .retention(Duration::from_secs(600))
                .retention_interval(Duration::from_millis(200))
        })
        .await;
    let node = nodes[0].clone();
    for i in 0..10 {
        node.publish(HUB, labelled(&i.to_string())).await.unwrap();
    }
    let admin = schema.admin().await;
    let table = schema.messages_table(HUB);
    let other = schema.messages_table("audit");
    admin
        .batch_execute(&format!(
            "UPDATE {table} SET inserted_on = now() - interval '11 minutes' WHERE seq <= 4;
             CREATE TABLE {other} (id int, inserted_on timestamptz);
             INSERT INTO {other} VALUES (1, now() - interval '1 year');"
        ))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let remaining = loop {
        let seqs: Vec<i64> = admin
            .query(&format!("SELECT seq FROM {table} ORDER BY seq"), &[])
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        if seqs.len() <= 6 || tokio::time::Instant::now() > deadline {
            break seqs;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(remaining, (5..=10).collect::<Vec<i64>>());
    assert_eq!(
        count_rows(&admin, &other).await,
        1,
        "retention touched a table that is not its own"
    );
    node.shutdown().await.unwrap();
    schema.drop().await;
}

/// A subscription still works on a hub with a 1 MiB message and an empty message
/// mixed into one batch with small ones (inline, by reference, inline).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_batch_keeps_order() {
    let nodes = TwoNodes::start("mixed").await;
    let (sender, receiver) = (&nodes.sender, &nodes.receiver);
    let mut subscription = subscribed(receiver, HUB).await;
    let big = SerializedMessage::new()
        .with(Protocol::Json, b"big".to_vec())
        .with(Protocol::MessagePack, vec![7u8; 1024 * 1024]);
    let kinds: Vec<EnvelopeKind> = (0..200)
        .map(|i| {
            if i % 50 == 25 {
                EnvelopeKind::Invocation {
                    target: Target::All,
                    message: big.clone(),
                }
            } else {
                EnvelopeKind::Invocation {
                    target: Target::All,
                    message: RecordingSink::message(&i.to_string()),
                }
            }
        })
        .collect();
    let publisher = sender.clone();
    let sent = kinds.clone();
    let publishing = tokio::spawn(async move {
        let publisher: Arc<dyn Backplane> = publisher;
        futures_util::future::join_all(sent.into_iter().map(|kind| {
            let publisher = publisher.clone();
            async move { publisher.publish(HUB, kind).await }
        }))
        .await
    });
    for (i, kind) in kinds.iter().enumerate() {
        let envelope = next_envelope(&mut subscription, &format!("envelope {i}")).await;
        assert_eq!(envelope.seq, i as u64 + 1);
        assert!(&envelope.kind == kind, "envelope {i} differs");
    }
    for result in publishing.await.unwrap() {
        result.unwrap();
    }
    nodes.finish().await;
}

/// Tombstones the database keeps refusing never block other hubs: the batch is retried
/// without them, and their numbers are reported lost on their hub instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_tombstones_do_not_block_other_hubs() {
    let nodes = TwoNodes::start("poison").await;
    let (schema, sender, receiver) = (&nodes.schema, &nodes.sender, &nodes.receiver);
    let mut blocked = subscribed(receiver, "blocked").await;
    let mut open = subscribed(receiver, "open").await;
    sender.publish("blocked", labelled("b1")).await.unwrap();
    let admin = schema.admin().await;
    let table = schema.messages_table("blocked");
    refuse_rows(&admin, &table, "seq < 2").await;
    sender
        .publish("blocked", labelled("b2"))
        .await
        .expect_err("refused");
    // The next batch carries b2's tombstone, which the constraint refuses too.
    sender
        .publish("open", labelled("o1"))
        .await
        .expect("another hub must not be blocked by a refused tombstone");
    let o1 = next_envelope(&mut open, "o1").await;
    assert_eq!(label_of(&o1), "o1");
    // o1's publish returns as soon as its own table's part of the batch committed; the
    // tombstone's part is tried (and given up) after it. The publisher handles one batch
    // at a time, so once o2 is published that attempt is over; dropping the constraint
    // earlier could let the tombstone through, and receivers would skip b2's number
    // silently instead of reporting it.
    sender
        .publish("open", labelled("o2"))
        .await
        .expect("another hub must not be blocked by a refused tombstone");
    let o2 = next_envelope(&mut open, "o2").await;
    assert_eq!(label_of(&o2), "o2");
    accept_rows(&admin, &table).await;
    sender.publish("blocked", labelled("b3")).await.unwrap();
    assert_eq!(
        events_until(&mut blocked, "b3").await,
        ["b1", "unrepairable:1", "b3"]
    );
    nodes.finish().await;
}

/// One hub's table refusing rows for good must not fail the publishes of another hub
/// that shared their batches: every publish to the healthy hub succeeds and arrives in
/// order, every publish to the refused one fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_table_does_not_fail_other_hubs_in_the_same_batch() {
    const EACH: usize = 100;
    let nodes = TwoNodes::start("poison_batch").await;
    let (schema, sender, receiver) = (&nodes.schema, &nodes.sender, &nodes.receiver);
    let mut healthy = subscribed(receiver, "healthy").await;
    // Create both tables, then make one refuse every new row.
    sender.publish("refused", labelled("r0")).await.unwrap();
    crosses(sender, "healthy", "h-first", &mut healthy).await;
    let admin = schema.admin().await;
    let table = schema.messages_table("refused");
    refuse_rows(&admin, &table, "seq < 0").await;
    // Interleaved and all started at once, so batches mix the two tables.
    let publishes = (0..EACH).flat_map(|i| {
        let sender = sender.clone();
        let sender2 = sender.clone();
        [
            Box::pin(async move {
                (
                    "healthy",
                    sender.publish("healthy", labelled(&format!("h{i}"))).await,
                )
            }) as std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>,
            Box::pin(async move {
                (
                    "refused",
                    sender2.publish("refused", labelled(&format!("r{i}"))).await,
                )
            }),
        ]
    });
    let results = futures_util::future::join_all(publishes).await;
    for (hub, result) in &results {
        match *hub {
            "healthy" => assert!(result.is_ok(), "a healthy hub's publish failed: {result:?}"),
            _ => assert!(result.is_err(), "a refused row was reported stored"),
        }
    }
    for i in 0..EACH {
        let envelope = next_envelope(&mut healthy, "healthy envelopes").await;
        assert_eq!(label_of(&envelope), format!("h{i}"));
    }
    nodes.finish().await;
}
