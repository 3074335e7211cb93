//! PostgreSQL backplane: publish-to-delivery throughput between two nodes on the test
//! database (one node publishes with up to 256 publishes in flight, the other receives;
//! a delivery is one envelope arriving at the other node).
//!
//! The database is `BACKPLANE_TEST_DATABASE_URL`, or the local server at
//! `postgres://postgres@127.0.0.1:5432/postgres`. When neither answers, the bench prints
//! why and measures nothing (this is a benchmark, not a test). It works in a fresh schema
//! of its own and drops it afterwards.
#![allow(missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use backplane_core::Backplane;
use backplane_postgres::{PostgresBackplane, PostgresOptions, SynchronousCommit};
use benches::envelope_run::{BATCH, HUB, bench_runtime, chat_message, publish_and_receive};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let runtime = bench_runtime();
    let url = test_services::database_url_from_env();
    if let Err(reason) = runtime.block_on(test_services::answers(&url)) {
        eprintln!(
            "postgres_backplane: skipped, no database at {} ({reason}); set \
             BACKPLANE_TEST_DATABASE_URL to measure it",
            redact(&url)
        );
        return;
    }
    let schema = format!("bench_backplane_{}", std::process::id());
    let message = chat_message();
    let mut group = c.benchmark_group("postgres_backplane");
    group.throughput(Throughput::Elements(BATCH));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(15));
    for commit in [
        SynchronousCommit::NotifyBeforeFlush,
        SynchronousCommit::On,
        SynchronousCommit::Off,
    ] {
        let nodes = runtime.block_on(async {
            let options = PostgresOptions::new(&url)
                .expect("database URL")
                .schema_name(schema.clone())
                .synchronous_commit(commit);
            let sender = Arc::new(PostgresBackplane::connect(options.clone()).await?);
            let receiver = PostgresBackplane::connect(options).await?;
            let subscription = receiver.subscribe(HUB).await?;
            Ok::<_, backplane_core::BackplaneError>((sender, receiver, subscription))
        });
        let (sender, receiver, mut subscription) = match nodes {
            Ok(nodes) => nodes,
            Err(error) => {
                eprintln!("postgres_backplane: skipped, cannot start two nodes: {error}");
                break;
            }
        };
        let name = match commit {
            SynchronousCommit::Off => "publish_to_delivery/2_nodes/synchronous_commit_off",
            SynchronousCommit::On => "publish_to_delivery/2_nodes/synchronous_commit_on",
            _ => "publish_to_delivery/2_nodes/notify_before_flush",
        };
        group.bench_function(name, |b| {
            b.iter_custom(|iterations| {
                runtime.block_on(publish_and_receive(
                    &*sender,
                    &mut subscription,
                    &message,
                    iterations,
                ))
            })
        });
        runtime.block_on(async {
            drop(subscription);
            let _ = sender.shutdown().await;
            let _ = receiver.shutdown().await;
        });
    }
    group.finish();
    if let Err(error) = runtime.block_on(test_services::drop_schema(&url, &schema)) {
        eprintln!("postgres_backplane: could not drop schema {schema}: {error}");
    }
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
