//! Every backplane on the same work: 10,000 envelopes published by one node (up to 256
//! publishes in flight) and received by another, each backplane with its defaults
//! (PostgreSQL: `notify-before-flush`, TLS as `sslmode` in the URL says, `prefer` when
//! it says nothing). A delivery is one envelope arriving at the other node.
//!
//! Servers: `BACKPLANE_TEST_DATABASE_URL` (else `postgres://postgres@127.0.0.1:5432/postgres`),
//! `BACKPLANE_TEST_REDIS_URL` (else `redis://127.0.0.1:6379`), `BACKPLANE_TEST_NATS_URL`
//! (else `nats://127.0.0.1:4222`, with JetStream). A backplane whose server does not
//! answer is skipped with a line saying why (this is a benchmark, not a test). Each works
//! in a fresh schema, key prefix or stream of its own, removed afterwards.
//!
//! `cargo bench -p benches --bench node_to_node` (all), or a filter after `--`, e.g.
//! `cargo bench -p benches --bench node_to_node -- redis`.
#![allow(missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use backplane_core::{Backplane, BackplaneError};
use backplane_memory::MemoryBus;
use backplane_nats::{NatsBackplane, NatsOptions};
use backplane_postgres::{PostgresBackplane, PostgresOptions};
use backplane_redis::{RedisBackplane, RedisOptions};
use benches::envelope_run::{BATCH, HUB, bench_runtime, chat_message, publish_and_receive};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// How long a backplane may take to connect before it is skipped.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Two nodes of one backplane, and how to remove what they stored.
struct Pair {
    sender: Arc<dyn Backplane>,
    receiver: Arc<dyn Backplane>,
}

fn bench(c: &mut Criterion) {
    let runtime = bench_runtime();
    let pg_url = test_services::database_url_from_env();
    let redis_url = test_services::redis_url_from_env();
    let nats_url = test_services::nats_url_from_env();
    let name = format!("bench_n2n_{}", std::process::id());
    let message = chat_message();
    let mut group = c.benchmark_group("node_to_node");
    group.throughput(Throughput::Elements(BATCH));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    for backend in ["memory", "postgres", "redis", "nats"] {
        let pair = runtime.block_on(async {
            let connect = async {
                match backend {
                    "memory" => {
                        let bus = MemoryBus::new();
                        Ok(Pair {
                            sender: Arc::new(bus.node()),
                            receiver: Arc::new(bus.node()),
                        })
                    }
                    "postgres" => {
                        let options = PostgresOptions::new(&pg_url)?.schema_name(name.clone());
                        Ok(Pair {
                            sender: Arc::new(PostgresBackplane::connect(options.clone()).await?),
                            receiver: Arc::new(PostgresBackplane::connect(options).await?),
                        })
                    }
                    "redis" => {
                        let options = RedisOptions::new(&redis_url)?.key_prefix(name.clone());
                        Ok(Pair {
                            sender: Arc::new(RedisBackplane::connect(options.clone()).await?),
                            receiver: Arc::new(RedisBackplane::connect(options).await?),
                        })
                    }
                    _ => {
                        let options = NatsOptions::new(&nats_url)?.prefix(name.clone());
                        Ok::<_, BackplaneError>(Pair {
                            sender: Arc::new(NatsBackplane::connect(options.clone()).await?),
                            receiver: Arc::new(NatsBackplane::connect(options).await?),
                        })
                    }
                }
            };
            let pair = tokio::time::timeout(CONNECT_TIMEOUT, connect)
                .await
                .map_err(|_| "no answer".to_owned())?
                .map_err(|error| error.to_string())?;
            let subscription = pair
                .receiver
                .subscribe(HUB)
                .await
                .map_err(|error| error.to_string())?;
            Ok::<_, String>((pair, subscription))
        });
        let (pair, mut subscription) = match pair {
            Ok(pair) => pair,
            Err(reason) => {
                eprintln!("node_to_node/{backend}: skipped, cannot start two nodes: {reason}");
                continue;
            }
        };
        group.bench_function(format!("{backend}/publish_to_delivery/2_nodes"), |b| {
            b.iter_custom(|iterations| {
                runtime.block_on(publish_and_receive(
                    &*pair.sender,
                    &mut subscription,
                    &message,
                    iterations,
                ))
            })
        });
        runtime.block_on(async {
            drop(subscription);
            let _ = pair.sender.shutdown().await;
            let _ = pair.receiver.shutdown().await;
            let removed = match backend {
                "postgres" => test_services::drop_schema(&pg_url, &name).await,
                "redis" => benches::purge::redis(&redis_url, &name).await.map(drop),
                "nats" => benches::purge::nats(&nats_url, &name).await,
                _ => Ok(()),
            };
            if let Err(error) = removed {
                eprintln!("node_to_node/{backend}: could not remove {name}: {error}");
            }
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
