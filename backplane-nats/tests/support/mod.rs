//! Shared by the NATS integration tests: where NATS is, a unique stream (prefix) per
//! cluster (deleted when its last node shuts down), and the fault hook that cuts a
//! node's connection (each node connects through a proxy of its own).

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use backplane_core::testkit::CuttingProxy;
use backplane_core::{Backplane, NodeId};
use backplane_nats::{NatsBackplane, NatsOptions};

pub mod server;

/// The shared NATS of this machine; `BACKPLANE_TEST_NATS_URL` overrides it.
pub fn nats_url() -> String {
    test_services::nats_url_from_env()
}

/// `host:port` of a `nats://host:port` URL.
pub fn address_of(url: &str) -> SocketAddr {
    url.trim_start_matches("nats://")
        .parse()
        .expect("a nats://ip:port URL")
}

/// Options on `url` with a fresh prefix and test timings: quick reconnects, short
/// heartbeats, and a short age so a stream a failed test leaves behind empties itself.
pub fn options(url: &str, label: &str) -> NatsOptions {
    let prefix = format!("test-{label}-{:016x}", NodeId::random().as_u128() as u64);
    let mut options = NatsOptions::new(url)
        .expect("valid test URL")
        .prefix(prefix)
        .max_age(Some(Duration::from_secs(300)))
        .command_timeout(Duration::from_secs(10));
    options.heartbeat = Duration::from_millis(500);
    options.ack_timeout = Duration::from_secs(1);
    options.node.reconnect_backoff.initial = Duration::from_millis(20);
    options.node.reconnect_backoff.max = Duration::from_millis(500);
    options
}

/// The proxies the conformance cluster's nodes connect through, by node.
fn proxies() -> &'static Mutex<HashMap<NodeId, Arc<CuttingProxy>>> {
    static PROXIES: OnceLock<Mutex<HashMap<NodeId, Arc<CuttingProxy>>>> = OnceLock::new();
    PROXIES.get_or_init(Mutex::default)
}

/// Cut every connection of `node` (it must have been started by [`proxied_cluster`]).
pub fn cut(node: NodeId) {
    let proxy = proxies().lock().unwrap().get(&node).cloned();
    proxy.expect("the node has no proxy").cut();
}

/// Delete the stream of `prefix` on `url`.
pub async fn delete_stream(url: &str, prefix: &str) {
    let client = async_nats::connect(url).await.expect("connecting to NATS");
    let jetstream = async_nats::jetstream::new(client);
    let _ = jetstream.delete_stream(prefix).await;
}

/// `nodes` nodes on a fresh prefix of the shared NATS, each through a proxy of its own
/// (so [`cut`] drops one node's connection); the stream is deleted when the last one
/// shuts down.
pub async fn proxied_cluster(label: &str, nodes: usize) -> Vec<Arc<dyn Backplane>> {
    proxied_cluster_with(label, nodes, None).await
}

/// [`proxied_cluster`], its nodes sharing `secret` if given.
pub async fn proxied_cluster_with(
    label: &str,
    nodes: usize,
    secret: Option<backplane_core::ClusterSecret>,
) -> Vec<Arc<dyn Backplane>> {
    let url = nats_url();
    let mut base = options(&url, label);
    base.cluster_secret = secret;
    let mut cluster = Vec::new();
    for _ in 0..nodes {
        let proxy = Arc::new(CuttingProxy::start(address_of(&url)).await);
        let options = rebase(&base, &format!("nats://{}", proxy.address));
        let node = NatsBackplane::connect(options)
            .await
            .expect("starting a NATS node (is nats-server -js running on 127.0.0.1:4222?)");
        proxies().lock().unwrap().insert(node.node_id(), proxy);
        cluster.push(Arc::new(node) as Arc<dyn Backplane>);
    }
    let prefix = base.prefix.clone();
    backplane_core::testkit::scoped(cluster, move || async move {
        delete_stream(&url, &prefix).await;
    })
}

/// `options` pointed at another URL.
pub fn rebase(options: &NatsOptions, url: &str) -> NatsOptions {
    let mut rebased = NatsOptions::new(url).expect("valid URL");
    rebased.prefix.clone_from(&options.prefix);
    rebased.max_age = options.max_age;
    rebased.max_bytes = options.max_bytes;
    rebased.max_messages = options.max_messages;
    rebased.storage = options.storage;
    rebased.node = options.node.clone();
    rebased.ack_timeout = options.ack_timeout;
    rebased.heartbeat = options.heartbeat;
    rebased.cluster_secret.clone_from(&options.cluster_secret);
    rebased
}
