//! What a load generator needs from the client: invocations pipelined with
//! `begin_invoke`, every arriving message observed (and timed) as it is decoded, and
//! small WebSocket read buffers. Against a scripted server for exact frames and order,
//! and against a real hub-server for the whole path.

mod support;

use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use chat_client::{
    HubConnection, HubConnectionBuilder, HubConnectionState, HubMessage, InvokeError,
    PendingInvoke, Protocol,
};
use hub_protocol::{encode_completion_value, encode_invocation, encode_ping};
use hub_server::chat::{self, ServerInfo};
use support::{FakeServer, FakeSocket, PATIENCE};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Starts `connection` against `server` and accepts its handshake.
async fn connect(server: &mut FakeServer, connection: &HubConnection) -> FakeSocket {
    let (started, socket) = tokio::join!(connection.start(), async {
        let mut socket = server.next_socket().await;
        socket.accept_handshake(Protocol::Json).await;
        socket
    });
    started.expect("start failed");
    socket
}

/// The chat hub plus `Add`, served on 127.0.0.1; its hub URL.
async fn chat_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let hub = chat::hub_builder()
        .method("Add", |a: i64, b: i64| async move { a + b })
        .build()
        .await
        .expect("hub starts");
    let app = chat::router(&hub, ServerInfo::new("test", "memory"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}{}", chat::HUB_PATH)
}

#[tokio::test]
async fn begun_invocations_are_written_in_order_and_each_gets_its_own_completion() {
    let mut server = FakeServer::start().await;
    let connection = HubConnectionBuilder::new(&server.url).build().unwrap();
    let mut socket = connect(&mut server, &connection).await;

    let mut pending: Vec<PendingInvoke<String>> = Vec::new();
    for target in ["A", "B", "C"] {
        pending.push(connection.begin_invoke(target, ()).await.unwrap());
    }
    // Written in the order begun, before anything is awaited.
    let mut ids = Vec::new();
    for expected in ["A", "B", "C"] {
        let HubMessage::Invocation(invocation) = socket.message(Protocol::Json, true).await else {
            panic!("expected an invocation");
        };
        assert_eq!(invocation.target, expected);
        ids.push((invocation.invocation_id.unwrap(), expected));
    }
    // Completed in reverse: each pending call still gets the answer to its own id.
    for (id, target) in ids.iter().rev() {
        let mut frame = BytesMut::new();
        encode_completion_value(Protocol::Json, &mut frame, id, &format!("for {target}")).unwrap();
        socket.send(Protocol::Json, frame).await;
    }
    let mut results = Vec::new();
    for call in pending {
        results.push(tokio::time::timeout(PATIENCE, call).await.unwrap().unwrap());
    }
    assert_eq!(results, ["for A", "for B", "for C"]);
}

#[tokio::test]
async fn begin_invoke_fails_at_once_without_a_connection() {
    let connection = HubConnectionBuilder::new("http://127.0.0.1:9/hub")
        .build()
        .unwrap();
    let result = connection.begin_invoke::<(), _>("Add", (1, 2)).await;
    assert!(
        matches!(
            result,
            Err(InvokeError::NotConnected(HubConnectionState::Disconnected))
        ),
        "{result:?}"
    );
}

#[tokio::test]
async fn the_observer_sees_every_message_before_its_handler_runs() {
    let mut server = FakeServer::start().await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let observed = seen.clone();
    let connection = HubConnectionBuilder::new(&server.url)
        .observe_messages(move |message| {
            let what = match message {
                HubMessage::Ping => "ping".to_owned(),
                HubMessage::Invocation(invocation) => format!("invocation {}", invocation.target),
                HubMessage::Completion(completion) => {
                    format!("completion {}", completion.invocation_id)
                }
                other => format!("type {}", other.message_type()),
            };
            observed.lock().unwrap().push(what);
        })
        .build()
        .unwrap();
    let handled = seen.clone();
    connection.on("Notify", move |(text,): (String,)| {
        handled.lock().unwrap().push(format!("handler {text}"));
    });
    let mut socket = connect(&mut server, &connection).await;

    let (result, ()) = tokio::join!(connection.invoke::<i64, _>("Add", (1, 2)), async {
        let HubMessage::Invocation(invocation) = socket.message(Protocol::Json, true).await else {
            panic!("expected an invocation");
        };
        let mut frame = BytesMut::new();
        encode_ping(Protocol::Json, &mut frame);
        encode_invocation(Protocol::Json, &mut frame, None, "Notify", &("hi",)).unwrap();
        let id = invocation.invocation_id.unwrap();
        encode_completion_value(Protocol::Json, &mut frame, &id, &3).unwrap();
        socket.send(Protocol::Json, frame).await;
    });
    assert_eq!(result.unwrap(), 3);
    assert_eq!(
        *seen.lock().unwrap(),
        ["ping", "invocation Notify", "handler hi", "completion 0"]
    );
}

#[tokio::test]
async fn a_window_of_pipelined_invocations_against_hub_server_keeps_order() {
    let url = chat_server().await;
    let (tx, mut received) = mpsc::unbounded_channel();
    let receiver = HubConnectionBuilder::new(&url).build().unwrap();
    receiver.on("ReceiveMessage", move |(user, text): (String, String)| {
        if user == "pipeline" {
            let _ = tx.send(text.parse::<u32>().unwrap());
        }
    });
    receiver.start().await.unwrap();
    let sender = HubConnectionBuilder::new(&url).build().unwrap();
    sender.start().await.unwrap();

    // 2,000 messages with at most 64 invocations waiting for their completion, awaited
    // oldest first; every second one is dropped unawaited (the call still goes out).
    const MESSAGES: u32 = 2_000;
    let mut window = std::collections::VecDeque::new();
    for n in 0..MESSAGES {
        if window.len() == 64 {
            let oldest: PendingInvoke<()> = window.pop_front().unwrap();
            oldest.await.unwrap();
        }
        let pending = sender
            .begin_invoke("SendMessage", ("pipeline", n.to_string()))
            .await
            .unwrap();
        if n % 2 == 0 {
            window.push_back(pending);
        }
    }
    for pending in window {
        pending.await.unwrap();
    }
    let sum: i64 = sender
        .begin_invoke("Add", (40, 2))
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(sum, 42);
    for n in 0..MESSAGES {
        let got = tokio::time::timeout(PATIENCE, received.recv())
            .await
            .expect("every message arrives")
            .unwrap();
        assert_eq!(got, n, "messages arrive in the order they were begun");
    }
    sender.stop().await;
    receiver.stop().await;
}

#[tokio::test]
async fn a_small_websocket_read_buffer_still_carries_large_messages() {
    let url = chat_server().await;
    let (tx, mut received) = mpsc::unbounded_channel();
    let small = |url: &str| {
        HubConnectionBuilder::new(url)
            .websocket_read_buffer_size(256)
            .build()
            .unwrap()
    };
    let receiver = small(&url);
    receiver.on("ReceiveMessage", move |(_user, text): (String, String)| {
        let _ = tx.send(text);
    });
    receiver.start().await.unwrap();
    let sender = small(&url);
    sender.start().await.unwrap();
    // Far larger than the buffer, within the server's 32 KiB message limit.
    let text: String = (0..20_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    sender
        .invoke::<(), _>("SendMessage", ("big", &text))
        .await
        .unwrap();
    let got = tokio::time::timeout(PATIENCE, received.recv())
        .await
        .expect("the message arrives")
        .unwrap();
    assert_eq!(got, text);
}
