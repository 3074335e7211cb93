//! The scale-out backends the hub tests run on, behind one factory: a cluster of nodes
//! on a fresh namespace of the real server (a PostgreSQL schema, a Redis key prefix, a
//! NATS JetStream stream), removed when the cluster's last node shuts down. A scenario
//! written once over [`TestBackend::cluster`] runs on every backend.

use std::sync::Arc;
use std::time::Duration;

use backplane_core::{Backplane, NodeId};
use backplane_nats::{NatsBackplane, NatsOptions};
use backplane_redis::{RedisBackplane, RedisOptions};

use crate::TestSchema;

/// The Redis the tests use; `BACKPLANE_TEST_REDIS_URL` overrides it.
pub use test_services::redis_url_from_env as redis_url;

/// The NATS (with JetStream) the tests use; `BACKPLANE_TEST_NATS_URL` overrides it.
pub use test_services::nats_url_from_env as nats_url;

/// A backplane to scale out over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestBackend {
    /// PostgreSQL, a schema per cluster.
    Postgres,
    /// Redis Streams, a key prefix per cluster.
    Redis,
    /// NATS JetStream, a stream per cluster.
    Nats,
}

impl TestBackend {
    /// `nodes` nodes that see each other and nothing else; their namespace is deleted
    /// when the last one shuts down (shut every node down at the end of a test).
    ///
    /// # Panics
    ///
    /// Panics if the server is unreachable, naming it.
    pub async fn cluster(self, label: &str, nodes: usize) -> Vec<Arc<dyn Backplane>> {
        crate::init_logging();
        let namespace = format!("test-{label}-{:016x}", NodeId::random().as_u128() as u64);
        match self {
            Self::Postgres => {
                let schema = TestSchema::create(label).await;
                let cluster = schema.cluster(nodes).await;
                backplane_core::testkit::scoped(cluster, move || schema.drop())
            }
            Self::Redis => {
                let url = redis_url();
                let options = RedisOptions::new(&url)
                    .expect("a valid Redis URL")
                    .key_prefix(namespace.as_str())
                    .max_age(Some(Duration::from_secs(300)));
                let mut cluster = Vec::new();
                for _ in 0..nodes {
                    let node = RedisBackplane::connect(options.clone())
                        .await
                        .unwrap_or_else(|e| {
                            panic!("Redis at {url} (is redis-server running?): {e}")
                        });
                    cluster.push(Arc::new(node) as Arc<dyn Backplane>);
                }
                backplane_core::testkit::scoped(cluster, move || delete_redis_keys(url, namespace))
            }
            Self::Nats => {
                let url = nats_url();
                let options = NatsOptions::new(&url)
                    .expect("a valid NATS URL")
                    .prefix(namespace.as_str())
                    .max_age(Some(Duration::from_secs(300)));
                let mut cluster = Vec::new();
                for _ in 0..nodes {
                    let node = NatsBackplane::connect(options.clone())
                        .await
                        .unwrap_or_else(|e| {
                            panic!("NATS at {url} (is nats-server -js running?): {e}")
                        });
                    cluster.push(Arc::new(node) as Arc<dyn Backplane>);
                }
                backplane_core::testkit::scoped(cluster, move || delete_nats_stream(url, namespace))
            }
        }
    }
}

/// A fresh namespace for `hub-server` processes: the flags that put a server on it, and
/// its removal afterwards.
#[derive(Debug)]
pub struct ProcessNamespace {
    /// `--database-url URL --schema S`, `--redis-url URL --prefix P` or `--nats-url URL
    /// --prefix P`.
    pub flags: Vec<String>,
    /// What to remove.
    namespace: Namespace,
}

/// The namespace behind a [`ProcessNamespace`].
#[derive(Debug)]
enum Namespace {
    /// A PostgreSQL schema.
    Schema(TestSchema),
    /// A Redis key prefix, with the Redis URL.
    RedisPrefix(String, String),
    /// A NATS stream, with the NATS URL.
    NatsStream(String, String),
}

impl TestBackend {
    /// A fresh namespace on this backend for `hub-server` processes.
    pub async fn process_namespace(self, label: &str) -> ProcessNamespace {
        let prefix = format!("test-{label}-{:016x}", NodeId::random().as_u128() as u64);
        let flags = |flag: &str, url: &str, name_flag: &str, name: &str| {
            [flag, url, name_flag, name].map(str::to_owned).to_vec()
        };
        match self {
            Self::Postgres => {
                let schema = TestSchema::create(label).await;
                let url = crate::database_url().await;
                ProcessNamespace {
                    flags: flags("--database-url", url, "--schema", schema.name()),
                    namespace: Namespace::Schema(schema),
                }
            }
            Self::Redis => ProcessNamespace {
                flags: flags("--redis-url", &redis_url(), "--prefix", &prefix),
                namespace: Namespace::RedisPrefix(redis_url(), prefix),
            },
            Self::Nats => ProcessNamespace {
                flags: flags("--nats-url", &nats_url(), "--prefix", &prefix),
                namespace: Namespace::NatsStream(nats_url(), prefix),
            },
        }
    }
}

impl ProcessNamespace {
    /// Remove the namespace (stop the servers first).
    pub async fn remove(self) {
        match self.namespace {
            Namespace::Schema(schema) => schema.drop().await,
            Namespace::RedisPrefix(url, prefix) => delete_redis_keys(url, prefix).await,
            Namespace::NatsStream(url, name) => delete_nats_stream(url, name).await,
        }
    }
}

/// Delete every key of `prefix` (`{prefix:hub}` streams).
async fn delete_redis_keys(url: String, prefix: String) {
    let Ok(client) = redis::Client::open(url) else {
        return;
    };
    let Ok(mut connection) = client.get_multiplexed_async_connection().await else {
        return;
    };
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg(format!("{{{prefix}:*"))
        .query_async(&mut connection)
        .await
        .unwrap_or_default();
    if !keys.is_empty() {
        let _: Result<redis::Value, _> = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut connection)
            .await;
    }
}

/// Delete the stream `name`.
async fn delete_nats_stream(url: String, name: String) {
    if let Ok(client) = async_nats::connect(url).await {
        let _ = async_nats::jetstream::new(client).delete_stream(name).await;
    }
}
