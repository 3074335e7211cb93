//! The Rust client (`chat-client`) on every transport against two chat servers on one
//! PostgreSQL schema: forced to each transport, every chat hub method round-trips (JSON on
//! Server-Sent Events, JSON and MessagePack on WebSockets and long polling); negotiate
//! falls back when a server does not offer WebSockets; and with stateful reconnect,
//! behind a TCP proxy that cuts its WebSocket three times during 3,000 messages from a
//! sender on the other server, it gets every message once, in order, and the app never
//! sees a reconnect.

mod hub_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chat_client::{HubConnection, HubConnectionBuilder, Protocol, TransportType};
use hub_server::chat;
use hub_server::{HubOptions, Transports};
use hub_support::cluster::ServedCluster;
use hub_support::rust_client::EVERY_TRANSPORT_AND_PROTOCOL;
use hub_support::{TestServer, assert_all_in_order};
use tests::CuttingProxy;
use tokio::sync::mpsc;

/// How long a test waits for something that should happen promptly (generous: the
/// machine may be busy).
const PATIENCE: Duration = Duration::from_secs(60);

/// Messages the sender sends in the stateful reconnect scenario.
const MESSAGES: usize = 3000;

fn hub_url(server: &TestServer) -> String {
    format!("http://{}{}", server.addr, chat::HUB_PATH)
}

/// Everything a chat client receives, as text lines.
fn record_chat(connection: &HubConnection) -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    let messages = tx.clone();
    connection.on("ReceiveMessage", move |(user, text): (String, String)| {
        let _ = messages.send(format!("message {user}: {text}"));
    });
    let groups = tx.clone();
    connection.on(
        "ReceiveGroupMessage",
        move |(group, user, text): (String, String, String)| {
            let _ = groups.send(format!("group {group} {user}: {text}"));
        },
    );
    let joined = tx.clone();
    connection.on(
        "UserJoinedGroup",
        move |(_user, group): (Option<String>, String)| {
            let _ = joined.send(format!("joined {group}"));
        },
    );
    connection.on(
        "UserLeftGroup",
        move |(_user, group): (Option<String>, String)| {
            let _ = tx.send(format!("left {group}"));
        },
    );
    // Connection announcements of other tests' clients are not what these tests check.
    connection.on("UserConnected", |_: (String,)| {});
    connection.on("UserDisconnected", |_: (String,)| {});
    rx
}

/// The next line `lines` receives that is not a connection announcement.
async fn next(lines: &mut mpsc::UnboundedReceiver<String>, what: &str) -> String {
    tokio::time::timeout(PATIENCE, lines.recv())
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing arrived in time"))
        .unwrap_or_else(|| panic!("{what}: the connection is gone"))
}

/// One client forced to `transport` on server 0, one on WebSockets on server 1: every
/// chat hub method, in both directions.
async fn round_trip(servers: &[TestServer], transport: TransportType, protocol: Protocol) {
    let label = format!("{transport}/{protocol:?}");
    let forced = HubConnectionBuilder::new(hub_url(&servers[0]))
        .transports([transport])
        .protocol(protocol)
        .build()
        .expect("builder");
    let mut forced_lines = record_chat(&forced);
    forced
        .start()
        .await
        .unwrap_or_else(|error| panic!("{label}: start: {error}"));
    assert_eq!(forced.transport(), Some(transport), "{label}");
    assert!(forced.connection_id().is_some(), "{label}");

    let other = HubConnectionBuilder::new(hub_url(&servers[1]))
        .protocol(protocol)
        .build()
        .expect("builder");
    let mut other_lines = record_chat(&other);
    other.start().await.expect("the other client starts");
    assert_eq!(other.transport(), Some(TransportType::WebSockets));

    // SendMessage from the forced client reaches both, across the backplane.
    forced
        .invoke::<(), _>("SendMessage", ("forced", format!("hello from {label}")))
        .await
        .unwrap_or_else(|error| panic!("{label}: SendMessage: {error}"));
    let expected = format!("message forced: hello from {label}");
    assert_eq!(next(&mut forced_lines, &label).await, expected);
    assert_eq!(next(&mut other_lines, &label).await, expected);

    // And back: a message from the other server arrives over the forced transport.
    other
        .send("SendMessage", ("other", "é ✓ \"quoted\"\nnew line"))
        .await
        .expect("send");
    let expected = "message other: é ✓ \"quoted\"\nnew line";
    assert_eq!(next(&mut forced_lines, &label).await, expected, "{label}");
    assert_eq!(next(&mut other_lines, &label).await, expected);

    // Groups: join, a group message from the other server, leave.
    forced
        .invoke::<(), _>("JoinGroup", ("room",))
        .await
        .expect("JoinGroup");
    assert_eq!(next(&mut forced_lines, &label).await, "joined room");
    other
        .invoke::<(), _>("SendMessageToGroup", ("room", "other", "to the room"))
        .await
        .expect("SendMessageToGroup");
    assert_eq!(
        next(&mut forced_lines, &label).await,
        "group room other: to the room"
    );
    forced
        .invoke::<(), _>("LeaveGroup", ("room",))
        .await
        .expect("LeaveGroup");
    other
        .invoke::<(), _>("SendMessageToGroup", ("room", "other", "nobody hears this"))
        .await
        .expect("SendMessageToGroup");
    other
        .invoke::<(), _>("SendMessage", ("other", "after leaving"))
        .await
        .expect("SendMessage");
    // The group message after leaving never arrives: the next line is the broadcast.
    assert_eq!(
        next(&mut forced_lines, &label).await,
        "message other: after leaving",
        "{label}"
    );

    // A hub error comes back as a value on every transport.
    let error = forced
        .invoke::<(), _>("JoinGroup", ("",))
        .await
        .expect_err("an empty group name is refused");
    assert!(
        error.to_string().contains("must not be empty"),
        "{label}: {error}"
    );

    forced.stop().await;
    other.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transport_round_trips_every_chat_method_across_two_servers() {
    let cluster = ServedCluster::chat(
        "client_transports",
        "ct",
        &[HubOptions::default(), HubOptions::default()],
    )
    .await;
    let servers = &cluster.servers;
    for (transport, protocol) in EVERY_TRANSPORT_AND_PROTOCOL {
        round_trip(servers, transport, protocol).await;
    }
    cluster.shut_down().await;
}

/// A server that does not offer WebSockets: the client falls back to Server-Sent Events
/// (JSON) or long polling (MessagePack, which Server-Sent Events cannot carry); one that
/// offers long polling only gets long polling; a client that insists on WebSockets gets a
/// clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negotiate_falls_back_when_websockets_are_not_offered() {
    let no_websockets = HubOptions::default().transports(Transports {
        websockets: false,
        ..Transports::ALL
    });
    let long_polling_only = HubOptions::default().transports(Transports {
        websockets: false,
        server_sent_events: false,
        long_polling: true,
    });
    let cluster =
        ServedCluster::chat("client_fallback", "ct", &[no_websockets, long_polling_only]).await;
    let servers = &cluster.servers;
    for (server, protocol, expected) in [
        (&servers[0], Protocol::Json, TransportType::ServerSentEvents),
        (
            &servers[0],
            Protocol::MessagePack,
            TransportType::LongPolling,
        ),
        (&servers[1], Protocol::Json, TransportType::LongPolling),
    ] {
        let connection = HubConnectionBuilder::new(hub_url(server))
            .protocol(protocol)
            .build()
            .expect("builder");
        let mut lines = record_chat(&connection);
        connection.start().await.expect("start falls back");
        assert_eq!(connection.transport(), Some(expected), "{protocol:?}");
        connection
            .invoke::<(), _>("SendMessage", ("fallback", "works"))
            .await
            .expect("SendMessage");
        assert_eq!(
            next(&mut lines, "fallback").await,
            "message fallback: works"
        );
        connection.stop().await;
    }

    let insisting = HubConnectionBuilder::new(hub_url(&servers[0]))
        .transports([TransportType::WebSockets])
        .build()
        .expect("builder");
    let error = insisting.start().await.expect_err("no WebSockets offered");
    assert!(
        error
            .to_string()
            .contains("offers no transport this client may use"),
        "{error}"
    );
    // Skipping negotiate goes straight to a WebSocket, which this server refuses.
    let skipping = HubConnectionBuilder::new(hub_url(&servers[0]))
        .skip_negotiation(true)
        .build()
        .expect("builder");
    let error = skipping.start().await.expect_err("WebSockets are refused");
    assert!(error.to_string().contains("404"), "{error}");
    cluster.shut_down().await;
}

/// Stateful reconnect: the receiver's WebSocket goes through a proxy that cuts it three
/// times while a sender on the other server sends 3,000 messages.
async fn stateful_reconnect_across_three_cuts(protocol: Protocol) {
    let cluster = ServedCluster::chat(
        "client_stateful",
        "ct",
        &[HubOptions::default(), HubOptions::default()],
    )
    .await;
    let servers = &cluster.servers;
    let proxy = CuttingProxy::start(servers[1].addr).await;
    let receiver = HubConnectionBuilder::new(format!("http://{}{}", proxy.address, chat::HUB_PATH))
        .protocol(protocol)
        .with_stateful_reconnect()
        // Were the connection lost for real, the app would see it reconnect: the test fails.
        .with_automatic_reconnect()
        .build()
        .expect("builder");
    let received = Arc::new(Mutex::new(Vec::with_capacity(MESSAGES)));
    let (done_tx, mut done) = mpsc::unbounded_channel();
    let sink = received.clone();
    receiver.on("ReceiveMessage", move |(user, text): (String, String)| {
        if user == "sender" {
            let mut received = sink.lock().expect("lock");
            received.push(text);
            if received.len() >= MESSAGES {
                let _ = done_tx.send(());
            }
        }
    });
    receiver.on("UserConnected", |_: (String,)| {});
    receiver.on("UserDisconnected", |_: (String,)| {});
    let events = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = events.clone();
    receiver.on_reconnecting(move |reason| {
        seen.lock()
            .expect("lock")
            .push(format!("reconnecting: {reason}"))
    });
    let seen = events.clone();
    receiver.on_reconnected(move |_| seen.lock().expect("lock").push("reconnected".to_owned()));
    let seen = events.clone();
    receiver.on_closed(move |reason| {
        seen.lock()
            .expect("lock")
            .push(format!("closed: {reason:?}"))
    });
    receiver.start().await.expect("the receiver starts");
    assert_eq!(receiver.transport(), Some(TransportType::WebSockets));
    let connection_id = receiver.connection_id();

    let sender = HubConnectionBuilder::new(hub_url(&servers[0]))
        .protocol(protocol)
        .build()
        .expect("builder");
    sender.on("ReceiveMessage", |_: (String, String)| {});
    sender.on("UserConnected", |_: (String,)| {});
    sender.on("UserDisconnected", |_: (String,)| {});
    sender.start().await.expect("the sender starts");
    let sending = tokio::spawn(async move {
        for n in 0..MESSAGES {
            sender
                .invoke::<(), _>("SendMessage", ("sender", n.to_string()))
                .await
                .expect("the sender's messages go out");
        }
        sender
    });
    // Cut while the messages flow, and make the receiver send too, so its own replay
    // buffer has something to resend.
    for cut in 0..3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        proxy.cut();
        receiver
            .send("SendMessage", ("receiver", format!("after cut {cut}")))
            .await
            .expect("sends go on across a cut");
    }
    let sender = tokio::time::timeout(Duration::from_secs(180), sending)
        .await
        .expect("the sender finished in time")
        .expect("the sender task");
    tokio::time::timeout(Duration::from_secs(120), done.recv())
        .await
        .expect("every message arrived in time");

    let received = received.lock().expect("lock").clone();
    assert_all_in_order(&format!("{protocol:?}"), &received, MESSAGES);
    assert_eq!(
        *events.lock().expect("lock"),
        Vec::<String>::new(),
        "{protocol:?}: the app saw the connection drop"
    );
    assert_eq!(
        receiver.connection_id(),
        connection_id,
        "the same connection throughout"
    );
    assert_eq!(receiver.state(), chat_client::HubConnectionState::Connected);
    receiver.stop().await;
    sender.stop().await;
    cluster.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateful_reconnect_loses_nothing_across_three_cuts_over_json() {
    stateful_reconnect_across_three_cuts(Protocol::Json).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateful_reconnect_loses_nothing_across_three_cuts_over_messagepack() {
    stateful_reconnect_across_three_cuts(Protocol::MessagePack).await;
}
