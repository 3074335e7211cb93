//! `HubOptions::max_parallel_invocations`: several invocations of a client at once by
//! default, one at a time when set to 1 (ASP.NET Core's default), and in both cases a
//! client's messages keep their order, on its own node and across the backplane.

mod hub_support;

use std::sync::Arc;
use std::time::Duration;

use backplane_core::Backplane;
use hub_server::HubOptions;
use hub_support::{RawClient, TestServer, broadcast, test_hub, wait_for_connections};
use serde_json::Value;
use tests::TestSchema;

/// The test hub plus `Sleep(ms)`, which answers `ms` after sleeping that long.
fn hub_with_sleep() -> hub_server::HubBuilder {
    test_hub().method("Sleep", |ms: u64| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    })
}

/// Send a slow and a fast invocation in one frame; return the invocation ids in the
/// order their completions arrive.
async fn completion_order(options: HubOptions) -> Vec<String> {
    let server = TestServer::start_hub(hub_with_sleep().options(options)).await;
    let mut client = RawClient::connect(&server.ws_url("")).await;
    client.handshake_json().await;
    client
        .send_text(concat!(
            "{\"type\":1,\"invocationId\":\"slow\",\"target\":\"Sleep\",\"arguments\":[300]}\u{1e}",
            "{\"type\":1,\"invocationId\":\"fast\",\"target\":\"Add\",\"arguments\":[1,2]}\u{1e}",
        ))
        .await;
    let mut order = Vec::new();
    for _ in 0..2 {
        let text = client.recv_text_skipping_pings().await;
        let completion: Value = serde_json::from_str(text.trim_end_matches('\u{1e}')).unwrap();
        assert_eq!(completion["type"], 3, "{text}");
        order.push(completion["invocationId"].as_str().unwrap().to_owned());
    }
    order
}

#[tokio::test]
async fn invocations_run_one_at_a_time_when_limited_to_one() {
    let options = HubOptions::default().max_parallel_invocations(1);
    assert_eq!(completion_order(options).await, ["slow", "fast"]);
}

#[tokio::test]
async fn by_default_invocations_do_not_wait_for_each_other() {
    assert_eq!(
        HubOptions::default().max_parallel_invocations,
        1024,
        "the documented default"
    );
    assert_eq!(
        completion_order(HubOptions::default()).await,
        ["fast", "slow"]
    );
}

/// A send queue far smaller than the invocations a client has running, or sends in one
/// WebSocket message: every completion still arrives, in a queue that never overflows
/// (the server stops reading instead of dropping its own caller as a slow reader).
#[tokio::test]
async fn completions_never_overflow_the_callers_own_queue() {
    for parallel in [1, 64] {
        let options = HubOptions::default()
            .send_queue_bytes(256)
            .max_parallel_invocations(parallel);
        let server = TestServer::start_hub(hub_with_sleep().options(options)).await;
        let mut client = RawClient::connect(&server.ws_url("")).await;
        client.handshake_json().await;
        let batch: String = (0..200)
            .map(|i| {
                let (target, arguments) = if i % 2 == 0 { ("Sleep", "[5]") } else { ("Add", "[1,1]") };
                format!("{{\"type\":1,\"invocationId\":\"{i}\",\"target\":\"{target}\",\"arguments\":{arguments}}}\u{1e}")
            })
            .collect();
        client.send_text(&batch).await;
        let mut completed = std::collections::BTreeSet::new();
        while completed.len() < 200 {
            let text =
                tokio::time::timeout(Duration::from_secs(30), client.recv_text_skipping_pings())
                    .await
                    .unwrap_or_else(|_| {
                        panic!(
                            "parallel {parallel}: only {} of 200 completions arrived",
                            completed.len()
                        )
                    });
            let completion: Value = serde_json::from_str(text.trim_end_matches('\u{1e}')).unwrap();
            assert_eq!(completion["type"], 3, "parallel {parallel}: {text}");
            let id: usize = completion["invocationId"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(
                completed.insert(id),
                "parallel {parallel}: completion {id} twice"
            );
        }
        assert_eq!(
            server.hub.connection_count(),
            1,
            "parallel {parallel}: the caller was dropped"
        );
    }
}

/// One client fires 500 broadcasts without waiting; a client on the other instance and
/// one on the sender's own instance receive all of them, in the order they were sent,
/// with the default parallel invocations sharing PostgreSQL commits (local delivery
/// follows each commit, so it must keep the order too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_invocations_keep_a_clients_order_across_postgres() {
    keeps_order_across_postgres(HubOptions::default()).await;
}

/// The same with all 500 invocations running at once: more than tokio's cooperative
/// budget (128 operations per poll of the connection task), which can make a commit that
/// has arrived look pending to some invocations, so they are resumed after later ones.
/// Before the lifetime manager released local deliveries in publish order, the last
/// broadcast reached the sender's own instance right after the 127th (3 of 3 runs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_holds_with_every_invocation_running_at_once() {
    keeps_order_across_postgres(HubOptions::default().max_parallel_invocations(100_000)).await;
}

async fn keeps_order_across_postgres(options: HubOptions) {
    const COUNT: usize = 500;
    let schema = TestSchema::create("hub_parallel").await;
    let nodes: Vec<Arc<dyn Backplane>> = schema.cluster(2).await;
    let server_a = TestServer::start_hub(
        test_hub()
            .options(options.clone())
            .backplane(nodes[0].clone()),
    )
    .await;
    let server_b =
        TestServer::start_hub(test_hub().options(options).backplane(nodes[1].clone())).await;
    let mut sender = RawClient::connect(&server_a.ws_url("")).await;
    sender.handshake_json().await;
    let mut receiver = RawClient::connect(&server_b.ws_url("")).await;
    receiver.handshake_json().await;
    let mut local = RawClient::connect(&server_a.ws_url("")).await;
    local.handshake_json().await;
    wait_for_connections(&server_a.hub, 2).await;
    wait_for_connections(&server_b.hub, 1).await;

    // Several invocations per WebSocket frame, as a busy client batches them.
    sender.send_broadcasts(COUNT, 25).await;
    for (name, client) in [("remote", &mut receiver), ("local", &mut local)] {
        for i in 0..COUNT {
            let text =
                tokio::time::timeout(Duration::from_secs(30), client.recv_text_skipping_pings())
                    .await
                    .unwrap_or_else(|_| panic!("{name}: broadcast {i} of {COUNT} did not arrive"));
            assert_eq!(
                text,
                broadcast(i),
                "{name}: broadcasts arrived out of order or were lost"
            );
        }
    }
    server_a.hub.shutdown().await;
    server_b.hub.shutdown().await;
    for node in &nodes {
        node.shutdown().await.expect("backplane shutdown");
    }
    schema.drop().await;
}
