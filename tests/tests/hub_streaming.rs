//! Streaming both ways and client results with the official JavaScript client
//! (`tests/js/streaming.js`) against the example hub (`hub_server::examples::streaming`)
//! on two hub-server instances sharing a PostgreSQL backplane: a 10,000-item stream
//! arrives complete and in order, a cancelled stream's producer stops (checked on the
//! server through the hub's counters), an upload of 10,000 numbers is summed, and a client
//! result asked on instance A of a client on instance B comes back; the same call fails
//! when that client disconnects in mid-call, and for a connection no instance has: at once
//! when its id names an instance (as every id the servers issue does), at the owner timeout
//! when it names none.

mod hub_support;

use std::time::Duration;

use backplane_core::ManagerOptions;
use hub_server::examples::streaming;
use hub_support::cluster::ServedCluster;
use serde_json::Value;

/// How long the whole scenario may take.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(240);

/// The client-result timeout the servers use: long, so failing "within it" means the
/// failure was detected, not waited out.
const RESULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a call for an untagged id waits for an owner to accept: long enough that a
/// tagged id failing sooner cannot be the timeout.
const OWNER_TIMEOUT: Duration = Duration::from_secs(10);

async fn scenario(protocol: &str) {
    let cluster = ServedCluster::streaming("hub_streaming", streaming::PATH, |hub| {
        hub.manager_options(
            ManagerOptions::default()
                .client_result_timeout(RESULT_TIMEOUT)
                .client_result_owner_timeout(OWNER_TIMEOUT),
        )
    })
    .await;
    let servers = &cluster.servers;
    let mut node = tests::node_script("streaming.js").await;
    node.arg(format!("http://{}", servers[0].addr))
        .arg(format!("http://{}", servers[1].addr))
        .arg(protocol);
    let what = format!("streaming.js {protocol}");
    let result = tests::json_result(&mut node, &what, SCENARIO_TIMEOUT)
        .await
        .result;

    assert_eq!(result["streamCount"], 10_000, "{result}");
    assert_eq!(result["streamInOrder"], true);
    assert_eq!(result["streamError"], Value::Null);

    assert_eq!(result["failed"]["items"], serde_json::json!([0, 1, 2]));
    assert_eq!(
        result["failed"]["error"],
        "An unexpected error occurred invoking 'Fail' on the server. HubException: the stream failed on purpose"
    );

    let cancel = &result["cancel"];
    assert_eq!(
        cancel["runningAfterCancel"], 0,
        "the producer still runs: {cancel}"
    );
    assert_eq!(cancel["cancelledStreams"], 1, "{cancel}");
    assert_eq!(
        cancel["producedSinceStop"], 0,
        "the producer kept producing: {cancel}"
    );
    let produced = cancel["producedByCancelled"].as_u64().unwrap();
    assert!(
        (50..1_000_000).contains(&produced),
        "the cancelled stream produced {produced} items"
    );

    assert_eq!(result["sum"], 50_005_000);

    assert_eq!(result["answer"], 42);
    assert_eq!(result["later"], 42);
    let refused = result["refused"]["error"].as_str().unwrap_or_default();
    assert!(
        refused.contains("the client answered with an error")
            && refused.contains("no answer for you"),
        "{refused}"
    );

    let limit = RESULT_TIMEOUT.as_millis() as u64;
    let disconnected = &result["disconnected"];
    let error = disconnected["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("disconnected before it answered"),
        "{disconnected}"
    );
    assert!(
        disconnected["ms"].as_u64().unwrap() < limit,
        "the departure must be reported before the result timeout: {disconnected}"
    );
    // Ids the servers issued, of connections that left: no waiting for the owner timeout.
    let fast = OWNER_TIMEOUT.as_millis() as u64 / 2;
    for (case, instance) in [("departedOnB", "B"), ("departedOnA", "A")] {
        let gone = &result[case];
        let error = gone["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("does not exist"),
            "a departed connection of {instance} asked on A: {gone}"
        );
        assert!(
            gone["ms"].as_u64().unwrap() < fast,
            "a departed connection of {instance} must fail at once, not at the owner timeout: {gone}"
        );
    }
    let unknown = &result["unknown"];
    let error = unknown["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("connection no-such-connection does not exist"),
        "{unknown}"
    );
    assert!(
        unknown["ms"].as_u64().unwrap() < limit,
        "an unknown connection must fail long before the result timeout: {unknown}"
    );
    cluster.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_uploads_and_client_results_across_two_instances_over_json() {
    scenario("json").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_uploads_and_client_results_across_two_instances_over_messagepack() {
    scenario("messagepack").await;
}
