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
use std::time::{Duration, Instant};

use backplane_core::{
    Backplane, BackplaneEvent, EnvelopeKind, Protocol, SerializedMessage, Subscription, Target,
};
use backplane_postgres::{PostgresBackplane, PostgresOptions, SynchronousCommit};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_util::StreamExt as _;

const BATCH: u64 = 10_000;
const IN_FLIGHT: usize = 256;
const HUB: &str = "bench";

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
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
                runtime.block_on(async {
                    let mut elapsed = Duration::ZERO;
                    for _ in 0..iterations {
                        elapsed += run_batch(&sender, &mut subscription, &message).await;
                    }
                    elapsed
                })
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

/// Publish `BATCH` envelopes from `sender` (up to `IN_FLIGHT` at once) and wait until the
/// other node received all of them.
async fn run_batch(
    sender: &Arc<PostgresBackplane>,
    subscription: &mut Subscription,
    message: &SerializedMessage,
) -> Duration {
    let started = Instant::now();
    let publishing = futures_util::stream::iter(0..BATCH)
        .map(|_| {
            let kind = EnvelopeKind::Invocation {
                target: Target::All,
                message: message.clone(),
            };
            async move { sender.publish(HUB, kind).await }
        })
        .buffered(IN_FLIGHT)
        .for_each(|result| async move { result.expect("publish failed") });
    let receiving = async {
        let mut received = 0;
        while received < BATCH {
            match subscription.recv().await {
                Some(BackplaneEvent::Envelope(_)) => received += 1,
                Some(_) => {}
                None => panic!("the subscription ended"),
            }
        }
    };
    tokio::join!(publishing, receiving);
    started.elapsed()
}

/// A chat message as the server sends it, encoded for both protocols.
fn chat_message() -> SerializedMessage {
    let arguments = ("alice", "hello everyone, this is a chat message");
    let mut message = SerializedMessage::new();
    for protocol in Protocol::ALL {
        let mut frame = hub_protocol::BytesMut::new();
        hub_protocol::encode_invocation(protocol, &mut frame, None, "ReceiveMessage", &arguments)
            .expect("encodable");
        message.set(protocol, frame.freeze());
    }
    message
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
