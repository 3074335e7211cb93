//! Two hub-server instances (in this process, each with its own backplane node on a fresh
//! namespace of the real server) and raw WebSocket clients on each: every target kind
//! reaches the right connections on both instances, and nothing reaches the others.
//!
//! Each scenario is written once over a [`TestBackend`] and runs on every backend:
//! `postgres::<scenario>` (a schema of the test database), `redis::<scenario>` (a key
//! prefix on 127.0.0.1:6379) and `nats::<scenario>` (a stream on 127.0.0.1:4222).
//!
//! Delivery is ordered per origin node only, so "nothing else arrived" is checked with a
//! barrier sent from *both* nodes: once a client has both barriers, everything either node
//! sent it before them has arrived.

mod hub_support;

use std::sync::Arc;
use std::time::Duration;

use backplane_core::Backplane;
use hub_server::{ConnectionId, Hub};
use hub_support::{RawClient, TestServer, test_hub, wait_for_connections};
use serde_json::{Value, json};
use tests::{TestBackend, TestSchema};

/// One instance with a JSON client whose user is `user` (anonymous when `None`).
async fn client(server: &TestServer, user: Option<&str>) -> (RawClient, String) {
    let query = user
        .map(|user| format!("access_token={user}"))
        .unwrap_or_default();
    let mut client = RawClient::connect(&server.ws_url(&query)).await;
    client.handshake_json().await;
    let reply = client.invoke_json("id", "ConnectionId", "[]").await;
    let reply: Value = serde_json::from_str(reply.trim_end_matches('\u{1e}')).unwrap();
    let id = reply["result"]
        .as_str()
        .expect("a connection id")
        .to_owned();
    (client, id)
}

/// The `[target, ...arguments]` of every invocation `client` receives until it has the
/// barrier `n` of both nodes.
async fn received_until_barrier(client: &mut RawClient, n: u32) -> Vec<Value> {
    let mut seen = Vec::new();
    let mut barriers = 0;
    while barriers < 2 {
        let text = tokio::time::timeout(Duration::from_secs(20), client.recv_text_skipping_pings())
            .await
            .unwrap_or_else(|_| panic!("barrier {n} did not arrive; received so far: {seen:?}"));
        let message: Value = serde_json::from_str(text.trim_end_matches('\u{1e}')).unwrap();
        assert_eq!(message["type"], 1, "{text}");
        let mut entry = vec![message["target"].clone()];
        entry.extend(message["arguments"].as_array().unwrap().iter().cloned());
        if entry[0] == "Barrier" {
            assert_eq!(entry[2], n, "barriers arrive in order");
            barriers += 1;
        } else {
            seen.push(Value::Array(entry));
        }
    }
    seen
}

/// Check what four clients received up to barrier `n`, then move to the next barrier.
async fn step(a: &Hub, b: &Hub, n: &mut u32, clients: [&mut RawClient; 4], expected: [Value; 4]) {
    barrier(a, b, *n).await;
    let names = ["alice on A", "carol on A", "bob on B", "alice on B"];
    for ((client, expected), name) in clients.into_iter().zip(expected).zip(names) {
        let seen = received_until_barrier(client, *n).await;
        assert_eq!(Value::Array(seen), expected, "step {n}, {name}");
    }
    *n += 1;
}

/// Invoke a void method and expect its completion next.
async fn call(client: &mut RawClient, id: &str, target: &str, arguments: &str) {
    assert_eq!(
        client.invoke_json(id, target, arguments).await,
        format!("{{\"type\":3,\"invocationId\":\"{id}\"}}\u{1e}"),
        "{target}{arguments}"
    );
}

/// Send barrier `n` from both instances to everyone.
async fn barrier(a: &Hub, b: &Hub, n: u32) {
    for (name, hub) in [("A", a), ("B", b)] {
        hub.context()
            .clients()
            .all()
            .send("Barrier", (name, n))
            .await
            .expect("barrier sent");
    }
}

/// Generate one test per scenario for `backend`, in a module named after it.
macro_rules! on_backend {
    ($module:ident, $backend:ident; $($scenario:ident),* $(,)?) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::TestBackend::$backend).await;
                }
            )*
        }
    };
}

/// The scenarios every backend passes.
macro_rules! scale_out_scenarios {
    ($module:ident, $backend:ident) => {
        on_backend!($module, $backend;
            every_target_kind_reaches_connections_on_both_instances,
            group_changes_for_a_connection_no_instance_owns_fail_clearly,
            a_group_limit_is_enforced_by_the_owning_instance_for_requests_from_the_other,
        );
    };
}

scale_out_scenarios!(postgres, Postgres);
scale_out_scenarios!(redis, Redis);
scale_out_scenarios!(nats, Nats);

async fn every_target_kind_reaches_connections_on_both_instances(backend: TestBackend) {
    let nodes: Vec<Arc<dyn Backplane>> = backend.cluster("hub_scale_out", 2).await;
    let server_a = TestServer::start_hub(test_hub().backplane(nodes[0].clone())).await;
    let server_b = TestServer::start_hub(test_hub().backplane(nodes[1].clone())).await;
    let (a, b) = (&server_a.hub, &server_b.hub);

    // alice has a connection on each instance; bob is on B; carol (anonymous) on A.
    let (mut alice_a, alice_a_id) = client(&server_a, Some("alice")).await;
    let (mut carol_a, carol_a_id) = client(&server_a, None).await;
    let (mut bob_b, bob_b_id) = client(&server_b, Some("bob")).await;
    let (mut alice_b, alice_b_id) = client(&server_b, Some("alice")).await;
    wait_for_connections(a, 2).await;
    wait_for_connections(b, 2).await;

    let mut n = 0;
    // Barrier `n` from both nodes, then what each client received before it.
    macro_rules! step {
        ($alice_a:expr, $carol_a:expr, $bob_b:expr, $alice_b:expr) => {
            step(
                a,
                b,
                &mut n,
                [&mut alice_a, &mut carol_a, &mut bob_b, &mut alice_b],
                [$alice_a, $carol_a, $bob_b, $alice_b],
            )
            .await
        };
    }
    let none = || json!([]);
    let got = |target: &str, text: &str| json!([[target, text]]);

    // All, sent by a client on A.
    assert_eq!(
        alice_a.invoke_json("1", "Broadcast", "[\"to all\"]").await,
        "{\"type\":1,\"target\":\"Broadcast\",\"arguments\":[\"to all\"]}\u{1e}"
    );
    assert_eq!(
        alice_a.recv_text().await,
        "{\"type\":3,\"invocationId\":\"1\"}\u{1e}"
    );
    step!(
        none(), // alice on A got hers before the completion
        got("Broadcast", "to all"),
        got("Broadcast", "to all"),
        got("Broadcast", "to all")
    );

    // All except the caller, sent by a client on B.
    call(&mut bob_b, "2", "SendToOthers", "[\"not bob\"]").await;
    step!(
        got("Broadcast", "not bob"),
        got("Broadcast", "not bob"),
        none(),
        got("Broadcast", "not bob")
    );

    // A group joined on B, sent to from A.
    call(&mut bob_b, "3", "JoinGroup", "[\"room-b\"]").await;
    call(&mut carol_a, "4", "SendToGroup", "[\"room-b\",\"from A\"]").await;
    step!(none(), none(), got("GroupMessage", "from A"), none());

    // A group joined on A, sent to from B.
    call(&mut carol_a, "5", "JoinGroup", "[\"room-a\"]").await;
    call(&mut bob_b, "6", "SendToGroup", "[\"room-a\",\"from B\"]").await;
    step!(none(), got("GroupMessage", "from B"), none(), none());

    // A user with connections on both instances, sent to from B.
    call(&mut bob_b, "7", "SendToUser", "[\"alice\",\"for alice\"]").await;
    step!(
        got("Direct", "for alice"),
        none(),
        none(),
        got("Direct", "for alice")
    );

    // One connection on the other instance, each way.
    call(
        &mut carol_a,
        "8",
        "SendToConnection",
        &format!("[\"{alice_b_id}\",\"for alice on B\"]"),
    )
    .await;
    call(
        &mut bob_b,
        "9",
        "SendToConnection",
        &format!("[\"{carol_a_id}\",\"for carol on A\"]"),
    )
    .await;
    step!(
        none(),
        got("Direct", "for carol on A"),
        none(),
        got("Direct", "for alice on B")
    );

    // Group membership of a connection owned by the other instance: A adds alice's B
    // connection to a group (B applies and acknowledges), then both send to it.
    let alice_b_conn = ConnectionId::from(alice_b_id.as_str());
    a.context()
        .groups()
        .add(&alice_b_conn, "remote")
        .await
        .expect("B acknowledges the remote group add");
    a.context()
        .groups()
        .add(&ConnectionId::from(alice_a_id.as_str()), "remote")
        .await
        .unwrap();
    a.context()
        .clients()
        .group("remote")
        .send("GroupMessage", ("remote group",))
        .await
        .unwrap();
    step!(
        got("GroupMessage", "remote group"),
        none(),
        none(),
        got("GroupMessage", "remote group")
    );

    // The remaining kinds from a server context: groups, group-except, users, connections.
    let clients = b.context().clients().clone();
    clients
        .groups(["room-a", "room-b", "remote"])
        .send("Targeted", ("groups",))
        .await
        .unwrap();
    clients
        .group_except("remote", [ConnectionId::from(alice_b_id.as_str())])
        .send("Targeted", ("group except",))
        .await
        .unwrap();
    clients
        .users(["bob", "nobody"])
        .send("Targeted", ("users",))
        .await
        .unwrap();
    clients
        .clients([carol_a_id.as_str(), bob_b_id.as_str()])
        .send("Targeted", ("connections",))
        .await
        .unwrap();
    clients
        .all_except([carol_a_id.as_str(), alice_b_id.as_str()])
        .send("Targeted", ("all except",))
        .await
        .unwrap();
    step!(
        json!([
            ["Targeted", "groups"],
            ["Targeted", "group except"],
            ["Targeted", "all except"]
        ]),
        json!([["Targeted", "groups"], ["Targeted", "connections"]]),
        json!([
            ["Targeted", "groups"],
            ["Targeted", "users"],
            ["Targeted", "connections"],
            ["Targeted", "all except"]
        ]),
        json!([["Targeted", "groups"]])
    );

    // Leaving a group on A stops deliveries sent from B.
    call(&mut carol_a, "10", "LeaveGroup", "[\"room-a\"]").await;
    call(
        &mut bob_b,
        "11",
        "SendToGroup",
        "[\"room-a\",\"after leaving\"]",
    )
    .await;
    step!(none(), none(), none(), none());

    drop((alice_a, carol_a, bob_b, alice_b));
    drop((server_a, server_b));
    for node in &nodes {
        node.shutdown().await.expect("backplane shutdown");
    }
}

async fn group_changes_for_a_connection_no_instance_owns_fail_clearly(backend: TestBackend) {
    let nodes = backend.cluster("hub_no_owner", 2).await;
    let server_a = TestServer::start_hub(test_hub().backplane(nodes[0].clone()).manager_options(
        backplane_core::ManagerOptions::default().group_ack_timeout(Duration::from_millis(500)),
    ))
    .await;
    let _server_b = TestServer::start_hub(test_hub().backplane(nodes[1].clone())).await;
    let mut client = server_a.json_client().await;
    let reply = client.invoke_json("1", "Add", "[1,1]").await;
    assert_eq!(
        reply,
        "{\"type\":3,\"invocationId\":\"1\",\"result\":2}\u{1e}"
    );
    let error = server_a
        .hub
        .context()
        .groups()
        .add(&ConnectionId::from("no-such-connection"), "room")
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "no node acknowledged adding connection no-such-connection to group \"room\" within 500ms: no node owns that connection"
    );
    drop(client);
    for node in &nodes {
        node.shutdown().await.expect("backplane shutdown");
    }
}

async fn a_group_limit_is_enforced_by_the_owning_instance_for_requests_from_the_other(
    backend: TestBackend,
) {
    let nodes = backend.cluster("hub_group_limit", 2).await;
    let limited = || backplane_core::ManagerOptions::default().max_groups_per_connection(2);
    let server_a = TestServer::start_hub(
        test_hub()
            .backplane(nodes[0].clone())
            .manager_options(limited()),
    )
    .await;
    let server_b = TestServer::start_hub(
        test_hub()
            .backplane(nodes[1].clone())
            .manager_options(limited()),
    )
    .await;
    let (mut on_a, id) = client(&server_a, None).await;
    let id = ConnectionId::from(id);
    let context = server_b.hub.context();
    let groups_b = context.groups();
    groups_b.add(&id, "one").await.expect("first group");
    groups_b.add(&id, "two").await.expect("second group");
    groups_b.add(&id, "two").await.expect("a group it is in");

    // Answered by instance A through the backplane: refused at once, with A's reason.
    let started = std::time::Instant::now();
    let error = groups_b.add(&id, "three").await.unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "connection {id} was not added to group \"three\": the connection is already in 2 groups, the most this server allows"
        )
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the refusal took {:?}",
        started.elapsed()
    );

    // Nothing changed: a message to "three" does not reach it, one to "two" does.
    context
        .clients()
        .group("three")
        .send("Direct", ("not for you",))
        .await
        .unwrap();
    context
        .clients()
        .group("two")
        .send("Direct", ("for two",))
        .await
        .unwrap();
    let frame = on_a.recv_text_skipping_pings().await;
    assert!(
        frame.contains("for two") && !frame.contains("not for you"),
        "{frame}"
    );

    groups_b.remove(&id, "one").await.expect("leave one");
    groups_b
        .add(&id, "three")
        .await
        .expect("room after leaving");
    drop(on_a);
    drop((server_a, server_b));
    for node in &nodes {
        node.shutdown().await.expect("backplane shutdown");
    }
}

/// The next invocation `client` receives (pings skipped), as `[target, ...arguments]`.
async fn next_invocation(client: &mut RawClient) -> Value {
    let text = client.recv_text_skipping_pings().await;
    let message: Value = serde_json::from_str(text.trim_end_matches('\u{1e}')).unwrap();
    assert_eq!(message["type"], 1, "expected an invocation: {text}");
    let mut entry = vec![message["target"].clone()];
    entry.extend(message["arguments"].as_array().unwrap().iter().cloned());
    Value::Array(entry)
}

/// Invoke `SendMessage("alice", text)` with `id` and read until its completion: whether
/// the sender itself received the message first, and the completion.
async fn send_and_complete(client: &mut RawClient, id: &str, text: &str) -> (bool, Value) {
    let arguments = serde_json::to_string(&json!(["alice", text])).unwrap();
    let mut frame = client.invoke_json(id, "SendMessage", &arguments).await;
    let mut delivered = false;
    loop {
        let message: Value = serde_json::from_str(frame.trim_end_matches('\u{1e}')).unwrap();
        if message["type"] == 3 && message["invocationId"] == id {
            return (delivered, message);
        }
        if message["type"] == 1
            && message["target"] == "ReceiveMessage"
            && message["arguments"] == json!(["alice", text])
        {
            delivered = true;
        }
        frame = client.recv_text_skipping_pings().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_database_cannot_take_reaches_no_one_and_the_sender_is_told_why() {
    let schema = TestSchema::create("hub_cut_off").await;
    let proxy = tests::CuttingProxy::start(schema.database_address().await).await;
    let options = schema
        .options_through(&proxy)
        .command_timeout(Duration::from_secs(1));
    let backplane: Arc<dyn Backplane> = Arc::new(
        backplane_postgres::PostgresBackplane::connect(options)
            .await
            .unwrap(),
    );
    let hub = hub_server::chat::hub_builder()
        .backplane(backplane.clone())
        .build()
        .await
        .unwrap();
    let router = hub_server::chat::router(&hub, hub_server::chat::ServerInfo::new("cut", "pg"));
    let server = TestServer::serve(hub, router).await;
    let chat_url = format!("ws://{}/chathub", server.addr);

    let mut sender = RawClient::connect(&chat_url).await;
    sender.handshake_json().await;
    assert_eq!(next_invocation(&mut sender).await[0], "UserConnected");
    let mut watcher = RawClient::connect(&chat_url).await;
    watcher.handshake_json().await;
    assert_eq!(next_invocation(&mut watcher).await[0], "UserConnected");
    assert_eq!(next_invocation(&mut sender).await[0], "UserConnected");

    // The database is out of reach: the send fails, says why, and nobody here gets it.
    // The database did not answer in time, so this server cannot know whether the
    // message reached it (and the other servers): the sender is told so.
    proxy.partition(true);
    let reply = sender
        .invoke_json("1", "SendMessage", "[\"alice\",\"lost\"]")
        .await;
    let reply: Value = serde_json::from_str(reply.trim_end_matches('\u{1e}')).unwrap();
    assert_eq!(reply["type"], 3, "{reply}");
    assert_eq!(
        reply["error"],
        "An unexpected error occurred invoking 'SendMessage' on the server. HubException: \
         Message not confirmed: this server got no answer from the other servers in time. \
         Nobody connected to it received it; people connected to the others may have, so \
         sending it again may repeat it for them.",
    );
    // That timeout opened the backplane's circuit: sends now fail at once, and this
    // server's connections still get them; the sender is told only they did. (A send that
    // happens to be the circuit's trial waits for the timeout again and reaches no one:
    // try again, as a user would.)
    let mut local_only = None;
    for attempt in 0..5 {
        let (delivered_to_sender, completion) =
            send_and_complete(&mut sender, &format!("local{attempt}"), "local").await;
        let error = completion["error"].as_str().unwrap_or_default().to_owned();
        if error.contains("only the people connected to it received it") {
            assert!(
                delivered_to_sender,
                "the sender is connected here: {completion}"
            );
            local_only = Some(error);
            break;
        }
        assert!(
            !delivered_to_sender,
            "a send that failed whole reached the sender"
        );
        assert!(
            error.contains("nobody connected to it received it")
                || error.contains("Nobody connected to it received it"),
            "{completion}"
        );
    }
    assert_eq!(
        local_only.expect("a send while the circuit is open is delivered here"),
        "An unexpected error occurred invoking 'SendMessage' on the server. HubException: \
         Message not sent: this server cannot reach the other servers right now; only the \
         people connected to it received it. Sending it again would repeat it for them.",
    );
    assert_eq!(
        next_invocation(&mut watcher).await,
        json!(["ReceiveMessage", "alice", "local"])
    );
    // A connection opened meanwhile is announced here and kept.
    let mut late = RawClient::connect(&chat_url).await;
    late.handshake_json().await;
    assert_eq!(next_invocation(&mut late).await[0], "UserConnected");
    assert_eq!(next_invocation(&mut watcher).await[0], "UserConnected");
    assert_eq!(next_invocation(&mut sender).await[0], "UserConnected");

    // Back: the circuit closes by itself (a reconnect or a successful trial) and sends
    // reach everyone again. Sends made before it closed went to this server only.
    proxy.partition(false);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let text = format!("after{attempt}");
        let (delivered_to_sender, completion) =
            send_and_complete(&mut sender, &format!("after{attempt}"), &text).await;
        assert!(delivered_to_sender, "{completion}");
        assert_eq!(
            next_invocation(&mut watcher).await,
            json!(["ReceiveMessage", "alice", text])
        );
        if completion.get("error").is_none() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the circuit did not close within 30 s of the database's return: {completion}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    backplane.shutdown().await.unwrap();
    schema.drop().await;
}
