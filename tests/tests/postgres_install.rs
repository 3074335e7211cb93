//! Installing the PostgreSQL backplane: concurrent starts, hostile names, clear errors,
//! and the diagnostics a `doctor` command shows.

use std::sync::Arc;
use std::time::Duration;

use backplane_core::{Backplane, BackplaneError};
use backplane_postgres::{CheckStatus, PostgresBackplane, PostgresOptions, diagnose};
use tests::TestSchema;
use tests::events::{expect_connected, label_of, labelled, next_envelope, subscribed};

/// `name` as a quoted identifier, for the test's own clean-up SQL.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Every node publishes once; every other node receives it.
async fn all_see_each_other(nodes: &[Arc<PostgresBackplane>], hub: &str) {
    let mut subscriptions = Vec::new();
    for node in nodes {
        let mut subscription = node.subscribe(hub).await.expect("subscribe failed");
        expect_connected(&mut subscription).await;
        subscriptions.push(subscription);
    }
    for (i, node) in nodes.iter().enumerate() {
        node.publish(hub, labelled(&format!("from {i}")))
            .await
            .expect("publish failed");
    }
    for (i, subscription) in subscriptions.iter_mut().enumerate() {
        let mut labels = Vec::new();
        for _ in 1..nodes.len() {
            let envelope = next_envelope(subscription, "a peer's envelope").await;
            labels.push(label_of(&envelope));
        }
        labels.sort();
        let expected: Vec<String> = (0..nodes.len())
            .filter(|&j| j != i)
            .map(|j| format!("from {j}"))
            .collect();
        assert_eq!(labels, expected, "node {i}");
    }
}

/// Four nodes start at the same moment on an empty schema, and subscribe at the same
/// moment to a hub whose table does not exist yet: all succeed and see each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_on_an_empty_schema_all_work() {
    let schema = TestSchema::create("together").await;
    let options = schema.options();
    let started =
        futures_util::future::join_all((0..4).map(|_| PostgresBackplane::connect(options.clone())))
            .await;
    let nodes: Vec<Arc<PostgresBackplane>> = started
        .into_iter()
        .map(|node| Arc::new(node.expect("a concurrent start failed")))
        .collect();
    let subscribed =
        futures_util::future::join_all(nodes.iter().map(|node| node.subscribe("together"))).await;
    for subscription in subscribed {
        subscription.expect("a concurrent subscribe failed");
    }
    all_see_each_other(&nodes, "together").await;
    for node in &nodes {
        node.shutdown().await.unwrap();
    }
    schema.drop().await;
}

/// Schema names and slugs full of quotes, semicolons, spaces and non-ASCII text work
/// as names and execute nothing; a slug too long for PostgreSQL is shortened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_are_inert() {
    let victim = TestSchema::create("h").await;
    let admin = victim.admin().await;
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA {v}; CREATE TABLE {v}.precious (x int)",
            v = quoted(victim.name())
        ))
        .await
        .unwrap();
    let attack = format!("DROP TABLE {}.precious", quoted(victim.name()));
    let hostile_schema = format!("x\"; {attack};-- ü");
    assert!(hostile_schema.len() <= 63, "{} bytes", hostile_schema.len());
    let slug_attack = attack.clone();
    let options = victim
        .options()
        .schema_name(hostile_schema.clone())
        .table_slug_generator(move |hub| {
            if hub == "long" {
                "ß".repeat(100)
            } else {
                format!("{hub}\"; {slug_attack}; -- 名前 ")
            }
        });
    let nodes = vec![
        Arc::new(PostgresBackplane::connect(options.clone()).await.unwrap()),
        Arc::new(PostgresBackplane::connect(options).await.unwrap()),
    ];
    all_see_each_other(&nodes, "chat").await;
    all_see_each_other(&nodes, "long").await;
    all_see_each_other(&nodes, "Évil\"'; SELECT pg_sleep(10); --").await;

    let precious: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = $1 AND tablename = 'precious'",
            &[&victim.name()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(precious, 1, "a hostile name executed SQL");
    let tables: Vec<String> = admin
        .query(
            "SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY tablename",
            &[&hostile_schema],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(tables.len(), 3, "{tables:?}");
    assert!(
        tables.iter().any(|t| t.starts_with("chat\"; DROP TABLE")),
        "the hostile slug is the table's name: {tables:?}"
    );
    assert!(tables.iter().all(|t| t.len() <= 63), "{tables:?}");
    for node in &nodes {
        node.shutdown().await.unwrap();
    }
    admin
        .batch_execute(&format!("DROP SCHEMA {} CASCADE", quoted(&hostile_schema)))
        .await
        .unwrap();
    victim.drop().await;
}

/// Names and settings PostgreSQL cannot take are refused up front with a clear error;
/// a connection string's password never appears in errors or debug output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_settings_are_rejected_clearly() {
    let error = PostgresOptions::new("postgres://app:supersecret@db:notaport/app").unwrap_err();
    assert!(matches!(error, BackplaneError::Config(_)), "{error:?}");
    assert!(!error.to_string().contains("supersecret"), "{error}");
    let options = PostgresOptions::new("postgres://app:supersecret@db/app").unwrap();
    assert!(!format!("{options:?}").contains("supersecret"));

    let schema = TestSchema::create("invalid").await;
    for (name, expected) in [
        ("s".repeat(64), "63"),
        (String::new(), "empty"),
        ("a\0b".to_owned(), "NUL"),
    ] {
        let error = PostgresBackplane::connect(schema.options().schema_name(name))
            .await
            .unwrap_err();
        assert!(
            matches!(&error, BackplaneError::Config(m) if m.contains(expected)),
            "{error}"
        );
    }
    let error = PostgresBackplane::connect(schema.options().inline_threshold(7000))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("inline_threshold"), "{error}");

    let node = PostgresBackplane::connect(schema.options().table_slug_generator(|_| String::new()))
        .await
        .unwrap();
    let error = node.publish("chat", labelled("x")).await.unwrap_err();
    assert!(error.to_string().contains("empty slug"), "{error}");
    let error = node.subscribe("").await.unwrap_err();
    assert!(matches!(error, BackplaneError::Config(_)), "{error}");
    node.shutdown().await.unwrap();

    let mut unreachable = schema.options();
    unreachable.config.port(1);
    unreachable = unreachable.command_timeout(Duration::from_secs(2));
    let error = PostgresBackplane::connect(unreachable).await.unwrap_err();
    assert!(
        error.to_string().contains("connecting to PostgreSQL"),
        "{error}"
    );
    schema.drop().await;
}

/// The diagnostics pass on a working installation and say what is missing otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diagnose_reports_each_check() {
    let schema = TestSchema::create("doctor").await;
    let names = |checks: &[backplane_postgres::Check]| {
        checks
            .iter()
            .map(|c| (c.name, c.status))
            .collect::<Vec<_>>()
    };

    // A fresh database: nothing is wrong, a node creates the schema and table at start.
    let checks = diagnose(&schema.options(), "chat").await;
    assert_eq!(
        names(&checks),
        [
            ("connect", CheckStatus::Passed),
            ("schema exists", CheckStatus::NotCreatedYet),
            ("messages table exists", CheckStatus::NotCreatedYet),
            ("notify round trip", CheckStatus::Passed)
        ],
        "{checks:#?}"
    );
    assert!(checks.iter().all(|c| c.ok), "{checks:#?}");
    assert!(
        checks[1].detail.contains("a node creates it"),
        "{checks:#?}"
    );

    // A role that may not create the schema: that would stop a node.
    let admin = schema.admin().await;
    let role = format!("doctor_{}", std::process::id());
    admin
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN"
        ))
        .await
        .unwrap();
    let mut limited = schema.options();
    limited.config.user(&role);
    let checks = diagnose(&limited, "chat").await;
    assert_eq!(
        names(&checks),
        [
            ("connect", CheckStatus::Passed),
            ("schema exists", CheckStatus::Failed),
            ("messages table exists", CheckStatus::Failed),
            ("notify round trip", CheckStatus::Passed)
        ],
        "{checks:#?}"
    );
    assert!(checks[1].detail.contains("may not create"), "{checks:#?}");
    admin
        .batch_execute(&format!("DROP ROLE {role}"))
        .await
        .unwrap();

    let node = PostgresBackplane::connect(schema.options()).await.unwrap();
    node.subscribe("chat").await.unwrap();
    let checks = diagnose(&schema.options(), "chat").await;
    assert!(checks.iter().all(|c| c.ok), "{checks:#?}");
    node.shutdown().await.unwrap();

    let mut unreachable = schema.options();
    unreachable.config.port(1);
    let checks = diagnose(&unreachable, "chat").await;
    assert_eq!(checks.len(), 4);
    assert!(checks.iter().all(|c| !c.ok), "{checks:#?}");
    assert!(checks[1].detail.contains("cannot connect"));
    schema.drop().await;
}

/// A messages table (or the whole schema) dropped while nodes run is installed again by
/// the next publish, and delivery goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_tables_are_reinstalled() {
    let schema = TestSchema::create("dropped").await;
    let nodes = schema.nodes(2).await;
    let mut subscription = subscribed(&nodes[1], "chat").await;
    let admin = schema.admin().await;
    for (label, sql) in [
        (
            "after the table was dropped",
            format!("DROP TABLE {}.chat_messages", quoted(schema.name())),
        ),
        (
            "after the schema was dropped",
            format!("DROP SCHEMA {} CASCADE", quoted(schema.name())),
        ),
    ] {
        admin.batch_execute(&sql).await.unwrap();
        nodes[0]
            .publish("chat", labelled(label))
            .await
            .unwrap_or_else(|error| panic!("publishing {label}: {error}"));
        let envelope = next_envelope(&mut subscription, label).await;
        assert_eq!(label_of(&envelope), label);
    }
    for node in &nodes {
        node.shutdown().await.unwrap();
    }
    schema.drop().await;
}

/// A custom notification channel: nodes notify on it (an outside LISTEN on it hears
/// them), and a generator that gives two tables one channel is refused with a clear
/// error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_channel_names_are_used_and_must_be_distinct() {
    let schema = TestSchema::create("custom_channel").await;
    let prefix = format!("app_{}", schema.name());
    let channel_of = {
        let prefix = prefix.clone();
        move |_: &str, slug: &str| format!("{prefix}_{slug}")
    };
    let nodes = schema
        .nodes_with(2, |options| {
            options.channel_name_generator(channel_of.clone())
        })
        .await;
    // An outside listener on the custom channel hears the backplane's notifications.
    let channel = format!("{prefix}_chat");
    let (_client, mut heard) = tests::listen(tests::database_url().await, &channel).await;
    all_see_each_other(&nodes, "chat").await;
    let got = tokio::time::timeout(Duration::from_secs(10), heard.recv())
        .await
        .expect("no notification on the custom channel")
        .unwrap();
    assert_eq!(got.channel(), channel);

    // Every hub on one channel: the second table is refused.
    let shared = schema
        .nodes_with(1, |options| {
            options.channel_name_generator(|_: &str, _: &str| "one".to_owned())
        })
        .await;
    shared[0]
        .publish("first", labelled("x"))
        .await
        .expect("the first table is fine");
    let refused = shared[0].publish("second", labelled("y")).await;
    match refused {
        Err(BackplaneError::Config(message)) => {
            assert!(
                message.contains("\"one\"") && message.contains("first_messages"),
                "{message}"
            );
        }
        other => panic!("expected a configuration error, got {other:?}"),
    }
    for node in nodes.iter().chain(&shared) {
        node.shutdown().await.unwrap();
    }
    schema.drop().await;
}
