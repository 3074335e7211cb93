//! Stateful reconnect with the official JavaScript client (`withStatefulReconnect()`):
//! its WebSocket is cut three times by a TCP proxy while messages from a client on the
//! other server of the cluster keep arriving, and the app sees nothing of it: every
//! message once, in order, and no reconnect event.

mod hub_support;

use std::process::Stdio;
use std::time::Duration;

use hub_server::HubOptions;
use hub_support::cluster::ServedCluster;
use hub_support::{TestServer, assert_all_in_order, http};
use serde_json::Value;
use tests::CuttingProxy;
use tokio::io::{AsyncBufReadExt as _, BufReader};

/// Messages the client on the other server sends.
const MESSAGES: usize = 3000;

/// How long the whole scenario may take.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(120);

async fn cut_three_times_during_a_stream(protocol: &str) {
    let cluster = ServedCluster::chat(
        "hub_stateful",
        "sr",
        &[HubOptions::default(), HubOptions::default()],
    )
    .await;
    let servers = &cluster.servers;
    let proxy = CuttingProxy::start(servers[1].addr).await;
    let mut node = tests::node_script("stateful-reconnect.js")
        .await
        .arg(format!("http://{}", proxy.address))
        .arg(format!("http://{}", servers[0].addr))
        .arg(protocol)
        .arg(MESSAGES.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node (Node.js 18+ is needed)");
    let mut lines = BufReader::new(node.stdout.take().expect("stdout")).lines();
    let scenario = async {
        let ready = lines.next_line().await.expect("reading node's output");
        assert_eq!(ready.as_deref(), Some("ready"), "the clients did not start");
        // The sender needs about three seconds for its messages: cut while they flow.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(700)).await;
            proxy.cut();
        }
        lines
            .next_line()
            .await
            .expect("reading node's output")
            .expect("the scenario's result")
    };
    let result = tokio::time::timeout(SCENARIO_TIMEOUT, scenario)
        .await
        .expect("the scenario finished in time");
    let status = node.wait().await.expect("node exits");
    assert!(status.success(), "the scenario failed: {status}");
    let result: Value = serde_json::from_str(&result).expect("JSON result");

    let received: Vec<String> = result["received"]
        .as_array()
        .expect("received")
        .iter()
        .map(|text| text.as_str().expect("text").to_owned())
        .collect();
    assert_all_in_order(protocol, &received, MESSAGES);
    assert_eq!(
        result["events"],
        serde_json::json!([]),
        "{protocol}: the app saw the connection drop"
    );
    assert_eq!(result["state"], "Connected", "{protocol}");
    assert_eq!(
        result["resumes"], 3,
        "{protocol}: the client resumed on a new WebSocket once per cut"
    );

    cluster.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_or_seen_across_three_cuts_over_json() {
    cut_three_times_during_a_stream("json").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_or_seen_across_three_cuts_over_messagepack() {
    cut_three_times_during_a_stream("messagepack").await;
}

/// Negotiate offers stateful reconnect only to clients that ask for it, and only with a
/// connection token (negotiate version 1).
#[tokio::test]
async fn negotiate_offers_stateful_reconnect_to_clients_that_ask() {
    let server = TestServer::start(hub_server::HubOptions::default()).await;
    let body = |response: hub_support::HttpResponse| -> Value {
        serde_json::from_str(&response.body).expect("negotiate JSON")
    };
    let asked = body(
        http(
            server.addr,
            "POST /hub/negotiate?negotiateVersion=1&useStatefulReconnect=true HTTP/1.1",
            &[],
        )
        .await,
    );
    assert_eq!(asked["useStatefulReconnect"], true, "{asked}");
    let plain = body(
        http(
            server.addr,
            "POST /hub/negotiate?negotiateVersion=1 HTTP/1.1",
            &[],
        )
        .await,
    );
    assert!(plain.get("useStatefulReconnect").is_none(), "{plain}");
    let version_0 = body(
        http(
            server.addr,
            "POST /hub/negotiate?useStatefulReconnect=true HTTP/1.1",
            &[],
        )
        .await,
    );
    assert!(
        version_0.get("useStatefulReconnect").is_none(),
        "{version_0}"
    );

    let off = TestServer::start(hub_server::HubOptions::default().stateful_reconnect(false)).await;
    let refused = body(
        http(
            off.addr,
            "POST /hub/negotiate?negotiateVersion=1&useStatefulReconnect=true HTTP/1.1",
            &[],
        )
        .await,
    );
    assert!(refused.get("useStatefulReconnect").is_none(), "{refused}");
}
