//! Streams, upload streams and client results across stateful reconnects, with the
//! official JavaScript client (`withStatefulReconnect()`, WebSockets) driven by
//! `tests/js/streams-reconnect.js`, against the example hub
//! (`hub_server::examples::streaming`) on two instances sharing a PostgreSQL backplane.
//!
//! The resumable client reaches instance A through a [`CuttingProxy`]; whenever the
//! script asks, the proxy cuts every connection through it (both ends see the WebSocket
//! closed without a Close frame) and the client resumes on a new one. A server-to-client
//! stream cut three times arrives whole, once and in order, and its producer ran once
//! (counted on the server); an upload cut twice is summed exactly; client results asked
//! from instance B of the resumable client come back though its transport was cut while
//! they were in flight. The app sees no `onreconnecting` or `onclose` throughout.

mod hub_support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use backplane_core::ManagerOptions;
use hub_server::examples::streaming;
use hub_support::cluster::ServedCluster;
use serde_json::{Value, json};
use tests::CuttingProxy;

/// Items of the stream and numbers of the upload.
const ITEMS: u64 = 5_000;

/// Milliseconds between two stream items (and between two batches of 20 uploaded
/// numbers): the stream lasts a few seconds, long enough for three cuts.
const DELAY_MS: u64 = 1;

/// How long the whole scenario may take.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(180);

/// The client-result timeout the servers use: long, so a call that survives a cut was not
/// rescued by a retry of its own.
const RESULT_TIMEOUT: Duration = Duration::from_secs(60);

async fn across_cuts(protocol: &str) {
    let cluster = ServedCluster::streaming("hub_streams_reconnect", streaming::PATH, |hub| {
        hub.manager_options(ManagerOptions::default().client_result_timeout(RESULT_TIMEOUT))
    })
    .await;
    let servers = &cluster.servers;
    let proxy = CuttingProxy::start(servers[0].addr).await;
    let started = Instant::now();
    let mut node = tests::node_script("streams-reconnect.js")
        .await
        .arg(format!("http://{}", proxy.address))
        .arg(format!("http://{}", servers[1].addr))
        .arg(protocol)
        .arg(ITEMS.to_string())
        .arg(DELAY_MS.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node (Node.js 18+ is needed)");
    let mut stdout = tests::lines_of(node.stdout.take().expect("stdout"));
    let mut stderr = tests::lines_of(node.stderr.take().expect("stderr"));
    let scenario = async {
        let mut cuts = 0;
        while let Some(line) = stdout.recv().await {
            match line.as_str() {
                "ready" => {}
                "cut" => {
                    proxy.cut();
                    cuts += 1;
                }
                result => return Some((cuts, result.to_owned())),
            }
        }
        None
    };
    let outcome = tokio::time::timeout(SCENARIO_TIMEOUT, scenario).await;
    let status = tokio::time::timeout(Duration::from_secs(10), node.wait()).await;
    let mut errors = Vec::new();
    while let Ok(line) = stderr.try_recv() {
        errors.push(line);
    }
    let errors = errors.join("\n");
    let (cuts, result) = outcome
        .unwrap_or_else(|_| panic!("{protocol}: the scenario did not finish in time:\n{errors}"))
        .unwrap_or_else(|| panic!("{protocol}: the script printed no result:\n{errors}"));
    let status = status
        .expect("node exits after its result")
        .expect("node's status");
    assert!(
        status.success(),
        "{protocol}: the script failed ({status}):\n{errors}"
    );
    let result: Value = serde_json::from_str(&result)
        .unwrap_or_else(|error| panic!("{protocol}: not JSON ({error}): {result}\n{errors}"));
    eprintln!(
        "{protocol}: {cuts} cuts, scenario {:?}: {result}",
        started.elapsed()
    );

    // Every cut the script asked for happened, and the client resumed after each one.
    assert_eq!(result["cutsAsked"], cuts, "{protocol}: {result}");
    assert_eq!(
        result["resumes"], cuts,
        "{protocol}: one resume per cut: {result}"
    );
    assert_eq!(
        cuts, 7,
        "{protocol}: three cuts in the stream, two in the upload, two for the calls"
    );

    let stream = &result["stream"];
    assert_eq!(
        stream["error"],
        Value::Null,
        "{protocol}: the stream failed: {stream}"
    );
    assert_eq!(
        stream["count"], ITEMS,
        "{protocol}: items received: {stream}"
    );
    assert_eq!(
        stream["firstMismatch"], -1,
        "{protocol}: an item out of place (lost, repeated or reordered): {stream}"
    );
    assert_eq!(stream["cutsLeft"], 0, "{protocol}: {stream}");
    assert_eq!(result["streamResumes"], 3, "{protocol}: {result}");
    // On the server: the producer ran once, to its end, and nothing was restarted.
    assert_eq!(
        result["streamStats"],
        json!({ "started": 1, "produced": ITEMS, "cancelled": 0, "running": 0 }),
        "{protocol}: what the server's producer did"
    );

    assert_eq!(
        result["sum"],
        ITEMS * (ITEMS + 1) / 2,
        "{protocol}: the upload's sum"
    );
    assert_eq!(result["uploadResumes"], 2, "{protocol}: {result}");

    assert_eq!(
        result["results"],
        json!({ "afterCut": 42, "duringCut": 42, "answered": 1 }),
        "{protocol}: client results across cuts"
    );

    assert_eq!(result["state"], "Connected", "{protocol}");
    assert_eq!(
        result["events"],
        json!([]),
        "{protocol}: the app saw the connection drop"
    );

    drop(proxy);
    cluster.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_uploads_and_client_results_survive_cuts_over_json() {
    across_cuts("json").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_uploads_and_client_results_survive_cuts_over_messagepack() {
    across_cuts("messagepack").await;
}
