//! The Python SignalR clients `signalrcore` (threads) and `pysignalr` (asyncio), pinned with
//! their dependencies by `tests/python/requirements.txt`, against two hub-server instances on
//! PostgreSQL, driven by `tests/python/chat_scenario.py` and `pysignalr_scenario.py` (one
//! scenario, one output format).
//!
//! signalrcore negotiates without `negotiateVersion` (version 0), presents the connection id
//! as `?id=`, and sends its negotiate version as the handshake version (0) unless it is handed
//! a protocol object (1); it puts the HTTP headers it was given, `Authorization` included,
//! into every invocation's `headers`. Each test runs the chat hub contract with three such
//! clients, ann and carol on instance A and bob on B, and asserts everything each one
//! received, in order.
//!
//! The first test to run creates the virtual environment `tests/python/.venv` when it is
//! missing (`tests::ensure_python_clients`).

mod hub_support;

use std::time::Duration;

use hub_server::HubOptions;
use hub_support::cluster::ServedCluster;
use serde_json::{Value, json};
use tests::{PYTHON_KEEP_ALIVE_INTERVAL, PythonClient as Client};

/// How long one scenario may run, installing nothing.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(90);

/// Run `client`'s scenario against two chat hub URLs with the clients' `protocols` (ann,
/// bob, carol) and return what the script printed.
async fn run_scenario(client: Client, url_a: &str, url_b: &str, protocols: &str) -> Value {
    let mut python = tests::python_script(client.chat_script()).await;
    python.args([url_a, url_b, protocols]);
    let what = format!("{client:?} scenario {protocols}");
    tests::json_result(&mut python, &what, SCENARIO_TIMEOUT)
        .await
        .result
}

/// `log` without the `UserConnected` of connections made before its own, which it may
/// or may not get: each client starts once the one before it saw its own announcement,
/// but on a busy machine that announcement can reach the other instance's listener after
/// the next client has connected there, and the backplane then delivers it to that
/// client too (as every backplane does: an instance delivers to whoever is connected when
/// a message arrives). Only the leading announcements are looked at.
fn without_earlier_connects(log: &Value, earlier: &[&str]) -> Value {
    let entries = log.as_array().expect("a log is an array");
    let leading = entries
        .iter()
        .take_while(|entry| entry[0] == "UserConnected")
        .count();
    let kept = entries
        .iter()
        .enumerate()
        .filter(|(index, entry)| *index >= leading || !earlier.iter().any(|id| entry[1] == **id));
    Value::Array(kept.map(|(_, entry)| entry.clone()).collect())
}

/// `log` without one `entry`, if it holds it, for an announcement a client may or may not
/// get for the same reason: ann's `UserJoinedGroup` goes to the room before bob joins it
/// on the other instance, and reaches that instance's listener before or after bob's join
/// there (it is delivered to bob only after). More than one would still fail the test.
fn without_one(log: &Value, entry: &Value) -> Value {
    let mut entries = log.as_array().expect("a log is an array").clone();
    if let Some(at) = entries.iter().position(|e| e == entry) {
        entries.remove(at);
    }
    Value::Array(entries)
}

/// Run `client`'s scenario with `protocols` and check every client's view of it.
async fn chat_across_instances(client: Client, protocols: [&str; 3], handshakes: [(&str, u32); 3]) {
    let options = HubOptions::default().keep_alive_interval(PYTHON_KEEP_ALIVE_INTERVAL);
    let cluster = ServedCluster::chat("python_client", "python", &[options.clone(), options]).await;
    let result = run_scenario(
        client,
        &cluster.chat_url(0),
        &cluster.chat_url(1),
        &protocols.join(","),
    )
    .await;
    cluster.shut_down().await;

    let names = ["ann", "bob", "carol"];
    for (name, (protocol, version)) in names.into_iter().zip(handshakes) {
        assert_eq!(
            result[name]["handshake"],
            json!({"protocol": protocol, "version": version}),
            "{name}: the handshake {client:?} sent"
        );
    }
    let id = |name: &str| {
        let id = result[name]["connectionId"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has a connection id: {result}"));
        assert_eq!(id.len(), 22 + 1 + 12, "{name}: an id negotiate issued");
        id.to_owned()
    };
    let (ann, bob, carol) = (id("ann"), id("bob"), id("carol"));
    let all_hear = |user: &str, text: &str| json!(["ReceiveMessage", user, text]);
    let room = |user: &str, text: &str| json!(["ReceiveGroupMessage", "room", user, text]);

    // The connection id the client negotiated (version 0) is the one the server
    // announces: the id it presented as ?id= became the connection's id.
    assert_eq!(
        result["ann"]["log"],
        json!([
            ["UserConnected", ann],
            ["UserConnected", bob],
            ["UserConnected", carol],
            all_hear("ann", "hello from A"),
            all_hear("bob", "hello from B"),
            ["UserJoinedGroup", "ann", "room"],
            ["UserJoinedGroup", "bob", "room"],
            room("bob", "group hi from B"),
            room("ann", "group hi from A"),
            room("carol", "from outside"),
            all_hear("ann", "end from A"),
            all_hear("bob", "end from B"),
            ["UserDisconnected", bob],
        ]),
        "ann (instance A)"
    );
    // bob, on the other instance, gets everything sent on A to all or to the room, and
    // the UserLeftGroup ann's leaving sends to the room (ann is out of it by then).
    assert_eq!(
        without_one(
            &without_earlier_connects(&result["bob"]["log"], &[&ann]),
            &json!(["UserJoinedGroup", "ann", "room"])
        ),
        json!([
            ["UserConnected", bob],
            ["UserConnected", carol],
            all_hear("ann", "hello from A"),
            all_hear("bob", "hello from B"),
            ["UserJoinedGroup", "bob", "room"],
            room("bob", "group hi from B"),
            room("ann", "group hi from A"),
            room("carol", "from outside"),
            ["UserLeftGroup", "ann", "room"],
            room("bob", "only bob is left"),
            all_hear("ann", "end from A"),
            all_hear("bob", "end from B"),
        ]),
        "bob (instance B)"
    );
    // carol never joined the room: no group message and no joined/left reaches her, from
    // either instance.
    assert_eq!(
        without_earlier_connects(&result["carol"]["log"], &[&ann, &bob]),
        json!([
            ["UserConnected", carol],
            all_hear("ann", "hello from A"),
            all_hear("bob", "hello from B"),
            all_hear("ann", "end from A"),
            all_hear("bob", "end from B"),
            ["UserDisconnected", bob],
        ]),
        "carol (instance A, anonymous)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_clients_on_two_instances() {
    chat_across_instances(Client::Signalrcore, ["json"; 3], [("json", 0); 3]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messagepack_clients_on_two_instances() {
    chat_across_instances(
        Client::Signalrcore,
        ["messagepack"; 3],
        [("messagepack", 0); 3],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_protocols_and_handshake_versions_on_two_instances() {
    // bob hands signalrcore a MessagePackHubProtocol() object, which sends version 1.
    chat_across_instances(
        Client::Signalrcore,
        ["json", "messagepack-object", "messagepack"],
        [("json", 0), ("messagepack", 1), ("messagepack", 0)],
    )
    .await;
}

/// pysignalr (asyncio) negotiates version 0 too, and sends handshake version 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pysignalr_json_clients_on_two_instances() {
    chat_across_instances(Client::Pysignalr, ["json"; 3], [("json", 1); 3]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pysignalr_mixed_protocols_on_two_instances() {
    chat_across_instances(
        Client::Pysignalr,
        ["messagepack", "json", "messagepack"],
        [("messagepack", 1), ("json", 1), ("messagepack", 1)],
    )
    .await;
}
