//! The official SignalR JavaScript client against hub-server: `@microsoft/signalr` and
//! `@microsoft/signalr-protocol-msgpack`, pinned by `tests/js/package-lock.json`, driven
//! from Node by `tests/js/official-client.js`.
//!
//! Each test starts the server in-process on 127.0.0.1:0 (the chat hub at `/chathub`, as
//! the `hub-server` binary serves it, and the test hub at `/hub`), runs one scenario, and
//! asserts on the JSON the script prints. The first test to run installs the packages with
//! `npm ci` when `tests/js/node_modules` is missing, so `cargo test` works on a clean
//! clone with Node and npm installed (and fails, saying so, without them).

mod hub_support;

use std::time::Duration;

use hub_server::{HubOptions, chat};
use hub_support::cluster::ServedCluster;
use hub_support::{HUB_PATH, TestServer, test_hub};
use serde_json::{Value, json};

/// How long one scenario may run, installing nothing.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(90);

/// The server the scenarios talk to: the chat application plus the test hub.
async fn start_server() -> TestServer {
    let chat_hub = chat::hub_builder().build().await.expect("chat hub");
    let test_hub = test_hub().build().await.expect("test hub");
    let router = chat::router(
        &chat_hub,
        chat::ServerInfo::new("official-client", "memory"),
    )
    .merge(test_hub.router(HUB_PATH));
    TestServer::serve(test_hub, router).await
}

/// Run `scenario` with `args` and return what the script printed, failing with its
/// stderr if it failed.
async fn run_scenario(server: &TestServer, scenario: &str, args: &[&str]) -> Value {
    let mut node = tests::node_script("official-client.js").await;
    node.arg(format!("http://{}", server.addr))
        .arg(scenario)
        .args(args);
    let what = format!("scenario {scenario} {args:?}");
    tests::json_result(&mut node, &what, SCENARIO_TIMEOUT)
        .await
        .result
}

/// Everything the hub scenario must observe, whatever the protocol and negotiation.
async fn hub_scenario(protocol: &str, negotiation: &str) {
    let server = start_server().await;
    let result = run_scenario(&server, "hub", &[protocol, negotiation]).await;
    let tag = format!("{protocol}-{negotiation}");
    assert_eq!(result["protocol"], protocol);
    if negotiation != "skip" {
        // The client learns its public id from negotiate, and the server agrees.
        // 22 characters of 128 random bits, a dot and the 12-hex-digit tag of the node.
        assert_eq!(result["connectionIdFromNegotiate"], 35);
        assert_eq!(result["connectionIdMatches"], true);
    } else {
        assert_eq!(result["connectionIdFromNegotiate"], Value::Null);
    }
    assert_eq!(result["add"], 42);
    assert_eq!(result["echo"], "héllo \"wörld\" ✓ \u{1}");
    // A void method resolves the invoke with no value.
    assert!(
        result["nothing"] == Value::Null || result["nothing"] == "undefined",
        "{}",
        result["nothing"]
    );
    assert_eq!(result["whoAmI"], format!("alice-{tag}"));
    assert_eq!(result["anonymousWhoAmI"], Value::Null);
    assert_eq!(
        result["fail"],
        "An unexpected error occurred invoking 'Fail' on the server. HubException: this method always fails"
    );
    assert_eq!(
        result["unknownMethod"],
        "Failed to invoke 'NoSuchMethod' due to an error on the server. HubException: Method does not exist."
    );
    assert_eq!(
        result["wrongArgumentCount"],
        "Failed to invoke 'Add' due to an error on the server. InvalidDataException: Invocation provides 1 argument(s) but target expects 2."
    );
    let wrong_type = result["wrongArgumentType"]
        .as_str()
        .expect("an error message");
    assert!(
        wrong_type.starts_with(
            "Failed to invoke 'Add' due to an error on the server. InvalidDataException: Error binding arguments."
        ),
        "{wrong_type}"
    );

    let broadcast = |text: &str| json!(["Broadcast", text]);
    let barrier = |n: u32| broadcast(&format!("barrier-{n}"));
    assert_eq!(
        result["logs"]["alice"],
        json!([
            broadcast("hello everyone"),
            broadcast("fire and forget"),
            barrier(0),
            barrier(1),
            barrier(2),
            barrier(3),
        ])
    );
    assert_eq!(
        result["logs"]["bob"],
        json!([
            broadcast("hello everyone"),
            broadcast("fire and forget"),
            broadcast("not for alice"),
            barrier(0),
            ["GroupMessage", "for the room"],
            barrier(1),
            barrier(2),
            ["Direct", "for bob the user"],
            ["Direct", "for bob's connection"],
            barrier(3),
        ])
    );
    assert_eq!(
        result["logs"]["carol"],
        json!([
            broadcast("hello everyone"),
            broadcast("fire and forget"),
            broadcast("not for alice"),
            barrier(0),
            barrier(1),
            barrier(2),
            barrier(3),
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_with_negotiate() {
    hub_scenario("json", "negotiate").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_skipping_negotiate() {
    hub_scenario("json", "skip").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messagepack_with_negotiate() {
    hub_scenario("messagepack", "negotiate").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messagepack_skipping_negotiate() {
    hub_scenario("messagepack", "skip").await;
}

async fn chat_scenario(protocol: &str) {
    chat_scenario_over(protocol, "negotiate", "WebSocketTransport").await;
}

/// The chat hub contract with `protocol` over the transport `negotiation` picks (see
/// official-client.js), which must be `transport` (the client's class name).
async fn chat_scenario_over(protocol: &str, negotiation: &str, transport: &str) {
    let server = start_server().await;
    let result = run_scenario(&server, "chat", &[protocol, negotiation]).await;
    assert_eq!(result["protocol"], protocol);
    assert_eq!(result["transport"], transport);
    assert_eq!(
        result["emptyGroup"],
        "An unexpected error occurred invoking 'JoinGroup' on the server. HubException: The group name must not be empty."
    );
    // `user` in joined/left is the access token (ann) or null (no token); a null `user`
    // or `message` sent is relayed as null.
    assert_eq!(
        result["logs"]["ann"],
        json!([
            ["UserConnected", "<ann>"],
            ["UserConnected", "<anonymous>"],
            ["ReceiveMessage", "ann", "hi all"],
            ["ReceiveMessage", null, "no name"],
            ["UserJoinedGroup", "ann", "room"],
            ["UserJoinedGroup", null, "room"],
            ["ReceiveGroupMessage", "room", "anon", "group hi"],
            ["ReceiveGroupMessage", "room", null, null],
            ["UserLeftGroup", null, "room"],
            ["ReceiveGroupMessage", "room", "ann", "only ann is left"],
            ["ReceiveMessage", "ann", "end"],
            ["UserDisconnected", "<anonymous>"],
        ])
    );
    // The leaver does not get its own UserLeftGroup: it is sent to the group after removal.
    assert_eq!(
        result["logs"]["anonymous"],
        json!([
            ["UserConnected", "<anonymous>"],
            ["ReceiveMessage", "ann", "hi all"],
            ["ReceiveMessage", null, "no name"],
            ["UserJoinedGroup", null, "room"],
            ["ReceiveGroupMessage", "room", "anon", "group hi"],
            ["ReceiveGroupMessage", "room", null, null],
            ["ReceiveMessage", "ann", "end"],
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_hub_contract_over_json() {
    chat_scenario("json").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_hub_contract_over_messagepack() {
    chat_scenario("messagepack").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_stateful_reconnect_invokes_and_stops_cleanly() {
    let server = start_server().await;
    for protocol in ["json", "messagepack"] {
        let result = run_scenario(&server, "stateful", &[protocol, "negotiate"]).await;
        assert_eq!(result, json!({"protocol": protocol, "add": 5}));
    }
}

/// The official client coalesces everything queued while a send is in flight into one
/// WebSocket message: 400 sends of 16 KiB in a loop become one of about 6.4 MiB. The
/// server reads it as a stream, hub message by hub message, so every message arrives,
/// complete and in order, and the connection stays up for the sends after it.
///
/// The server runs with its defaults: every message of the burst is echoed to the sender
/// too (`ReceiveMessage` to all), 6.4 MiB against a 1 MiB send queue, so the server must
/// pace the sender's invocations by how fast it reads its echoes rather than drop it as
/// a slow reader.
async fn burst_scenario(protocol: &str) {
    let chat_hub = chat::hub_builder().build().await.expect("chat hub");
    let router = chat::router(&chat_hub, chat::ServerInfo::new("burst", "memory"));
    let server = TestServer::serve(chat_hub, router).await;
    let result = run_scenario(&server, "burst", &[protocol, "negotiate"]).await;
    assert_eq!(result["protocol"], protocol);
    assert_eq!(result["expected"], 411);
    for name in ["sender", "receiver"] {
        assert_eq!(
            result[name],
            json!({"count": 411, "firstMismatch": -1}),
            "{name} got every message, complete and in order: {result}"
        );
    }
    assert_eq!(result["stateAfter"], "Connected");
    // The burst really went out as one (or a few) multi-megabyte WebSocket messages,
    // each far over the 32 KiB hub message limit.
    let largest = result["largestWebSocketMessage"].as_u64().expect("a size");
    assert!(
        largest > 4 * 1024 * 1024,
        "the client coalesced the burst: {result}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coalesced_burst_arrives_complete_and_in_order_over_json() {
    burst_scenario("json").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coalesced_burst_arrives_complete_and_in_order_over_messagepack() {
    burst_scenario("messagepack").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_hub_contract_over_server_sent_events() {
    chat_scenario_over("json", "sse", "ServerSentEventsTransport").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_hub_contract_over_long_polling_with_json() {
    chat_scenario_over("json", "longpolling", "LongPollingTransport").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_hub_contract_over_long_polling_with_messagepack() {
    chat_scenario_over("messagepack", "longpolling", "LongPollingTransport").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_over_server_sent_events() {
    hub_scenario("json", "sse").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_over_long_polling() {
    hub_scenario("json", "longpolling").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messagepack_over_long_polling() {
    hub_scenario("messagepack", "longpolling").await;
}

/// One client per transport across two instances on PostgreSQL: WebSockets on A, Server-
/// Sent Events on B (long polling on A with MessagePack), long polling on B. Everyone's
/// messages, to all and to a group, reach everyone exactly once.
async fn transports_across_instances(protocol: &str) {
    let cluster = ServedCluster::chat(
        &format!("transports_{protocol}"),
        "transports",
        &[HubOptions::default(), HubOptions::default()],
    )
    .await;
    let servers = &cluster.servers;
    let other = format!("http://{}", servers[1].addr);
    let result = run_scenario(
        &servers[0],
        "transports",
        &[protocol, "negotiate", other.as_str()],
    )
    .await;
    let second = if protocol == "json" {
        "ServerSentEventsTransport"
    } else {
        "LongPollingTransport"
    };
    for (name, transport) in [
        ("ws", "WebSocketTransport"),
        ("sse", second),
        ("lp", "LongPollingTransport"),
    ] {
        assert_eq!(result[name]["transport"], transport, "{name}");
        let log = result[name]["log"].as_array().expect("a log");
        let mut expected = Vec::new();
        for sender in ["ws", "sse", "lp"] {
            expected.push(json!([
                "ReceiveMessage",
                sender,
                format!("hello from {sender}")
            ]));
        }
        for sender in ["ws", "sse", "lp"] {
            expected.push(json!([
                "ReceiveGroupMessage",
                "room",
                sender,
                format!("room from {sender}")
            ]));
        }
        for message in &expected {
            assert!(log.contains(message), "{name} lacks {message}: {log:?}");
        }
        assert_eq!(log.len(), expected.len(), "{name}: {log:?}");
    }
    cluster.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transport_across_two_instances_on_postgres_with_json() {
    transports_across_instances("json").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polling_across_two_instances_on_postgres_with_messagepack() {
    transports_across_instances("messagepack").await;
}
