//! Shared by the Redis integration tests: where Redis is, a unique key prefix per
//! cluster (deleted when its last node shuts down), and the fault hook that cuts a
//! node's reading connections.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use backplane_core::{Backplane, NodeId};
use backplane_redis::{RedisBackplane, RedisOptions};

/// The shared Redis of this machine; `BACKPLANE_TEST_REDIS_URL` overrides it.
pub fn redis_url() -> String {
    test_services::redis_url_from_env()
}

/// Options on `url` with a fresh key prefix and test timings: quick reconnects, and a
/// short age so that keys a failed test leaves behind expire by themselves.
pub fn options(url: &str, label: &str) -> RedisOptions {
    let prefix = format!("test-{label}-{:032x}", NodeId::random().as_u128());
    let mut options = RedisOptions::new(url)
        .expect("valid test URL")
        .key_prefix(prefix)
        .max_age(Some(Duration::from_secs(300)))
        .block_timeout(Duration::from_secs(1))
        .command_timeout(Duration::from_secs(5));
    options.node.reconnect_backoff.initial = Duration::from_millis(20);
    options.node.reconnect_backoff.max = Duration::from_millis(500);
    options
}

/// A raw connection for inspecting and breaking things.
pub async fn admin(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("valid URL")
        .get_multiplexed_async_connection()
        .await
        .expect("connecting to Redis (is redis-server running on 127.0.0.1:6379?)")
}

/// Kill (`CLIENT KILL ID`) every reading connection of `node` on `url`, waiting up to
/// 10 s for one to exist (after a previous kill it may still be reconnecting).
pub async fn kill_readers(url: &str, node: NodeId) -> usize {
    let mut admin = admin(url).await;
    let name = format!("name=signalr-backplane-reader-{node}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut admin)
            .await
            .expect("CLIENT LIST");
        let ids: Vec<String> = list
            .lines()
            .filter(|line| line.split(' ').any(|field| field == name))
            .filter_map(|line| line.split(' ').find_map(|f| f.strip_prefix("id=")))
            .map(str::to_owned)
            .collect();
        for id in &ids {
            let _: redis::Value = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("ID")
                .arg(id)
                .query_async(&mut admin)
                .await
                .expect("CLIENT KILL");
        }
        if !ids.is_empty() {
            return ids.len();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reading connection of node {node} to kill"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Delete every key starting with `{prefix:`.
pub async fn delete_keys(url: &str, prefix: &str) {
    let mut admin = admin(url).await;
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg(format!("{{{prefix}:*"))
        .query_async(&mut admin)
        .await
        .expect("KEYS");
    if !keys.is_empty() {
        let _: redis::Value = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut admin)
            .await
            .expect("DEL");
    }
}

/// `nodes` nodes on `options`, as the suite wants them: the prefix's keys are deleted
/// when the last one shuts down.
pub async fn scoped_cluster(options: &RedisOptions, nodes: usize) -> Vec<Arc<dyn Backplane>> {
    let mut cluster = Vec::new();
    for _ in 0..nodes {
        let node = RedisBackplane::connect(options.clone())
            .await
            .expect("starting a Redis node");
        cluster.push(Arc::new(node) as Arc<dyn Backplane>);
    }
    let (url, prefix) = (redis_url(), options.key_prefix.clone());
    backplane_core::testkit::scoped(cluster, move || async move {
        delete_keys(&url, &prefix).await;
    })
}

pub mod server;
