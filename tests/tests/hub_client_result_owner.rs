//! A client result asked on one instance of a client on another, when that other
//! instance (the connection's owner) leaves the cluster after it took the call: the
//! asking side fails with `Timeout` once `client_result_timeout` has passed, never hangs,
//! and the answer the client sends to the dead owner afterwards changes nothing.
//! Two instances share a PostgreSQL schema; the owner's death is its backplane node
//! shutting down and its server stopping, as a crashed process looks to the others.

mod hub_support;

use std::time::{Duration, Instant};

use backplane_core::ManagerOptions;
use hub_server::{Caller, ClientResultError, InvokeError};
use hub_support::ask_double;
use hub_support::cluster::streaming_servers;
use tests::TestSchema;

/// The asking side's client-result timeout: short, so the test measures it.
const RESULT_TIMEOUT: Duration = Duration::from_secs(4);

/// Long enough that the owner's acceptance never races its own timeout under load.
const OWNER_TIMEOUT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_leaving_mid_call_fails_the_call_after_the_result_timeout() {
    let schema = TestSchema::create("client_result_owner").await;
    let nodes = schema.cluster(2).await;
    let mut servers = streaming_servers(&nodes, hub_support::HUB_PATH, |hub| {
        hub.method("MyId", |caller: Caller| async move {
            caller.connection_id().to_string()
        })
        .manager_options(
            ManagerOptions::default()
                .client_result_timeout(RESULT_TIMEOUT)
                .client_result_owner_timeout(OWNER_TIMEOUT),
        )
    })
    .await;

    // The client lives on B.
    let mut client = servers[1].json_client().await;
    let id = client.call_json("MyId").await;
    let id = id["result"].as_str().expect("a connection id").to_owned();

    // A asks it; B takes the call and hands the invocation to its client.
    let asked_at = Instant::now();
    let asked = ask_double(&servers[0].hub, &id);
    let invocation = tokio::time::timeout(Duration::from_secs(30), client.next_json())
        .await
        .expect("the owner hands the invocation to its client");
    assert_eq!(invocation["target"], "Double", "{invocation}");
    let invocation_id = invocation["invocationId"]
        .as_str()
        .expect("an invocation id")
        .to_owned();

    // B leaves the cluster: its backplane node shuts down, its server stops.
    nodes[1].shutdown().await.expect("B's node shuts down");
    let b = servers.pop().expect("B");
    drop(b);
    // The client answers all the same: the answer has no way back to A.
    client
        .send_text(&format!(
            "{{\"type\":3,\"invocationId\":\"{invocation_id}\",\"result\":42}}\u{1e}"
        ))
        .await;

    let result = tokio::time::timeout(RESULT_TIMEOUT * 4, asked)
        .await
        .expect("the call ends: it must not hang when the owner is gone")
        .expect("the asking task");
    let waited = asked_at.elapsed();
    match &result {
        Err(InvokeError::Call(ClientResultError::Timeout {
            connection_id,
            timeout,
        })) => {
            assert_eq!(connection_id.to_string(), id);
            assert_eq!(*timeout, RESULT_TIMEOUT);
        }
        other => panic!("expected a timeout once the owner is gone, got {other:?}"),
    }
    assert!(
        waited >= RESULT_TIMEOUT - Duration::from_millis(100) && waited < RESULT_TIMEOUT * 3,
        "the call fails at the result timeout ({RESULT_TIMEOUT:?}), it took {waited:?}"
    );

    // A is unharmed: it still answers its own clients.
    let mut other = servers[0].json_client().await;
    let own = other.invoke_json("id", "MyId", "[]").await;
    assert!(own.contains("\"result\""), "{own}");
}
