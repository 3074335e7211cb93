//! The client against a scripted server: exact frames, negotiate answers, keep-alive,
//! timeouts, Close messages, reconnects. Everything a real server would rarely do on cue.

mod support;

use std::time::Duration;

use axum::http::StatusCode;
use bytes::BytesMut;
use chat_client::{
    ConnectError, DisconnectReason, HubConnection, HubConnectionBuilder, HubConnectionState,
    InvokeError, Protocol, ReconnectDelays,
};
use hub_protocol::{
    CompletionResult, HubMessage, encode_close, encode_completion_error, encode_completion_value,
    encode_completion_void, encode_invocation,
};
use support::{FakeServer, FakeSocket, Frame, PATIENCE, negotiate_ok};
use tokio::sync::mpsc;

/// A lifecycle event, as the callbacks saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Reconnecting(String),
    Reconnected(Option<String>),
    Closed(Option<String>),
}

fn record_events(connection: &HubConnection) -> mpsc::UnboundedReceiver<Event> {
    let (tx, rx) = mpsc::unbounded_channel();
    let sender = tx.clone();
    connection.on_reconnecting(move |reason| {
        let _ = sender.send(Event::Reconnecting(reason.to_string()));
    });
    let sender = tx.clone();
    connection.on_reconnected(move |id| {
        let _ = sender.send(Event::Reconnected(id.map(str::to_owned)));
    });
    connection.on_closed(move |reason| {
        let _ = tx.send(Event::Closed(reason.map(ToString::to_string)));
    });
    rx
}

async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .expect("nothing arrived in time")
        .expect("channel closed")
}

/// Starts `connection` against `server` and accepts its handshake.
async fn connect(server: &mut FakeServer, connection: &HubConnection) -> FakeSocket {
    let protocol = connection.protocol();
    let (started, mut socket) = tokio::join!(connection.start(), async {
        let mut socket = server.next_socket().await;
        socket.accept_handshake(protocol).await;
        socket
    });
    started.expect("start failed");
    // The client must not have sent anything but the handshake yet.
    let _ = &mut socket;
    socket
}

#[tokio::test]
async fn negotiate_then_websocket_carry_tokens_and_ids() {
    let mut server = FakeServer::start().await;
    let connection = HubConnectionBuilder::new(format!("{}?tenant=a", server.url))
        .access_token_provider(|| async { Ok("t0k+/=".to_owned()) })
        .build()
        .unwrap();
    assert_eq!(connection.state(), HubConnectionState::Disconnected);
    let socket = connect(&mut server, &connection).await;

    let negotiates = server.negotiates.lock().unwrap().clone();
    assert_eq!(negotiates.len(), 1);
    assert_eq!(negotiates[0].query["negotiateVersion"], "1");
    assert_eq!(negotiates[0].query["tenant"], "a");
    assert_eq!(
        negotiates[0].authorization.as_deref(),
        Some("Bearer t0k+/=")
    );

    // The secret token, not the public id, goes in `id`; the user's query is kept.
    assert_eq!(socket.query["id"], "token/0+x");
    assert_eq!(socket.query["tenant"], "a");
    assert_eq!(socket.query["access_token"], "t0k+/=");
    assert_eq!(socket.authorization.as_deref(), Some("Bearer t0k+/="));
    assert_eq!(connection.connection_id().as_deref(), Some("conn-0"));
    assert_eq!(connection.state(), HubConnectionState::Connected);
}

#[tokio::test]
async fn skip_negotiation_opens_the_websocket_directly() {
    let mut server = FakeServer::start().await;
    let connection = HubConnectionBuilder::new(&server.url)
        .skip_negotiation(true)
        .build()
        .unwrap();
    let socket = connect(&mut server, &connection).await;
    assert_eq!(server.negotiate_count(), 0);
    assert!(!socket.query.contains_key("id"));
    assert_eq!(connection.connection_id(), None);
}

#[tokio::test]
async fn negotiate_redirect_moves_to_the_new_url_with_its_token() {
    let mut target = FakeServer::start().await;
    let redirect = format!(r#"{{"url":"{}","accessToken":"redirected"}}"#, target.url);
    let origin = FakeServer::with_negotiate(move |_| (StatusCode::OK, redirect.clone())).await;
    let connection = HubConnectionBuilder::new(&origin.url)
        .access_token_provider(|| async { Ok("original".to_owned()) })
        .build()
        .unwrap();
    let socket = connect(&mut target, &connection).await;
    assert_eq!(
        origin.negotiates.lock().unwrap()[0]
            .authorization
            .as_deref(),
        Some("Bearer original")
    );
    assert_eq!(
        target.negotiates.lock().unwrap()[0]
            .authorization
            .as_deref(),
        Some("Bearer redirected")
    );
    assert_eq!(socket.query["access_token"], "redirected");
    assert_eq!(connection.connection_id().as_deref(), Some("conn-0"));
}

#[tokio::test]
async fn negotiate_failures_are_clear_errors() {
    let cases: Vec<(StatusCode, &str, &str)> = vec![
        (
            StatusCode::OK,
            r#"{"error":"go away"}"#,
            "the server refused the connection: go away",
        ),
        (
            StatusCode::NOT_FOUND,
            "",
            "failed with status 404 Not Found",
        ),
        // The server's explanation is shown, on one line, as the official clients show it.
        (
            StatusCode::UNAUTHORIZED,
            "Invalid bearer token:\nthe token is not a well-formed JWT.",
            "failed with status 401 Unauthorized: Invalid bearer token: the token is not a well-formed JWT.",
        ),
        (StatusCode::OK, "not json", "invalid negotiate response"),
        (
            StatusCode::OK,
            r#"{"connectionId":"a","connectionToken":"b","negotiateVersion":1,"availableTransports":[{"transport":"WebSockets","transferFormats":["Binary"]}]}"#,
            "offers no transport this client may use with the Text transfer format (client: WebSockets, ServerSentEvents, LongPolling; server: WebSockets (Binary))",
        ),
        (
            StatusCode::OK,
            r#"{"ProtocolVersion":"1.5","ConnectionId":"x"}"#,
            "ASP.NET SignalR server",
        ),
    ];
    for (status, body, expected) in cases {
        let server = FakeServer::with_negotiate(move |_| (status, body.to_owned())).await;
        let connection = HubConnectionBuilder::new(&server.url).build().unwrap();
        let error = connection.start().await.unwrap_err().to_string();
        assert!(error.contains(expected), "{body}: {error}");
        assert_eq!(connection.state(), HubConnectionState::Disconnected);
    }
}

#[tokio::test]
async fn negotiate_version_0_uses_the_connection_id_as_token() {
    let mut server = FakeServer::with_negotiate(|_| {
        (
            StatusCode::OK,
            r#"{"connectionId":"legacy","availableTransports":[{"transport":"WebSockets","transferFormats":["Text","Binary"]}]}"#.to_owned(),
        )
    })
    .await;
    let connection = HubConnectionBuilder::new(&server.url).build().unwrap();
    let socket = connect(&mut server, &connection).await;
    assert_eq!(socket.query["id"], "legacy");
}

#[tokio::test]
async fn handshake_rejection_is_reported() {
    let mut server = FakeServer::start().await;
    let connection = HubConnectionBuilder::new(&server.url).build().unwrap();
    let (result, ()) = tokio::join!(connection.start(), async {
        let mut socket = server.next_socket().await;
        socket.frame().await;
        socket
            .send_text("{\"error\":\"protocol not supported\"}\u{1e}")
            .await;
    });
    match result {
        Err(ConnectError::HandshakeRejected(reason)) => {
            assert_eq!(reason, "protocol not supported");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(connection.state(), HubConnectionState::Disconnected);
}

#[tokio::test]
async fn unreachable_server_fails_start_with_one_clear_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let connection = HubConnectionBuilder::new(format!("http://127.0.0.1:{port}/hub"))
        .with_automatic_reconnect()
        .build()
        .unwrap();
    let error = connection.start().await.unwrap_err();
    assert!(
        matches!(error, ConnectError::Unreachable { .. }),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .starts_with(&format!("cannot connect to 127.0.0.1:{port}: ")),
        "{error}"
    );
    // A failed start never reconnects on its own.
    assert_eq!(connection.state(), HubConnectionState::Disconnected);
}

#[tokio::test]
async fn invoke_and_send_write_exact_json_frames() {
    let mut server = FakeServer::start().await;
    let connection = HubConnectionBuilder::new(&server.url).build().unwrap();
    let mut socket = connect(&mut server, &connection).await;

    let (result, ()) = tokio::join!(connection.invoke::<i64, _>("Add", (40, 2)), async {
        assert_eq!(
            socket.frame().await,
            Frame::Text(
                "{\"type\":1,\"invocationId\":\"0\",\"target\":\"Add\",\"arguments\":[40,2]}\u{1e}"
                    .into()
            )
        );
        socket
            .send_text("{\"type\":3,\"invocationId\":\"0\",\"result\":42}\u{1e}")
            .await;
    });
    assert_eq!(result.unwrap(), 42);

    connection.send("Notify", ("hi",)).await.unwrap();
    assert_eq!(
        socket.frame().await,
        Frame::Text("{\"type\":1,\"target\":\"Notify\",\"arguments\":[\"hi\"]}\u{1e}".into())
    );

    // Void completions satisfy `()` and `Option`; errors come back as `InvokeError::Hub`.
    let (void, none, failed, ()) = tokio::join!(
        connection.invoke::<(), _>("A", ()),
        connection.invoke::<Option<String>, _>("B", ()),
        connection.invoke::<String, _>("C", ()),
        async {
            for _ in 0..3 {
                let HubMessage::Invocation(invocation) = socket.message(Protocol::Json, true).await
                else {
                    panic!("expected an invocation");
                };
                let id = invocation.invocation_id.unwrap();
                let mut frame = BytesMut::new();
                match invocation.target.as_str() {
                    "A" | "B" => encode_completion_void(Protocol::Json, &mut frame, &id).unwrap(),
                    _ => encode_completion_error(Protocol::Json, &mut frame, &id, "boom").unwrap(),
                }
                socket.send(Protocol::Json, frame).await;
            }
        }
    );
    void.unwrap();
    assert_eq!(none.unwrap(), None);
    assert!(matches!(failed, Err(InvokeError::Hub(message)) if message == "boom"));
}

#[tokio::test]
async fn wrong_result_type_is_a_typed_error() {
    let mut server = FakeServer::start().await;
    let connection = HubConnectionBuilder::new(&server.url).build().unwrap();
    let mut socket = connect(&mut server, &connection).await;
    let (result, ()) = tokio::join!(connection.invoke::<u32, _>("Name", ()), async {
        socket.frame().await;
        socket
            .send_text("{\"type\":3,\"invocationId\":\"0\",\"result\":\"bob\"}\u{1e}")
            .await;
    });
    let error = result.unwrap_err();
    assert!(matches!(error, InvokeError::InvalidResult(_)), "{error:?}");
    // The connection is fine afterwards.
    assert_eq!(connection.state(), HubConnectionState::Connected);
}

#[tokio::test]
async fn messagepack_uses_binary_frames_after_a_text_handshake() {
    let mut server = FakeServer::start().await;
    let connection = HubConnectionBuilder::new(&server.url)
        .protocol(Protocol::MessagePack)
        .build()
        .unwrap();
    let (tx, mut received) = mpsc::unbounded_channel();
    connection.on("Receive", move |(user, count): (String, u64)| {
        let _ = tx.send((user, count));
    });
    let mut socket = connect(&mut server, &connection).await;

    let (result, ()) = tokio::join!(connection.invoke::<String, _>("Echo", ("x",)), async {
        let Frame::Binary(frame) = socket.frame().await else {
            panic!("MessagePack must travel in binary frames");
        };
        let mut expected = BytesMut::new();
        encode_invocation(
            Protocol::MessagePack,
            &mut expected,
            Some("0"),
            "Echo",
            &("x",),
        )
        .unwrap();
        assert_eq!(frame, expected.freeze());
        let mut reply = BytesMut::new();
        encode_completion_value(Protocol::MessagePack, &mut reply, "0", "x!").unwrap();
        socket.send(Protocol::MessagePack, reply).await;
    });
    assert_eq!(result.unwrap(), "x!");

    let mut frame = BytesMut::new();
    encode_invocation(
        Protocol::MessagePack,
        &mut frame,
        None,
        "receive",
        &("ann", 7u8),
    )
    .unwrap();
    socket.send(Protocol::MessagePack, frame).await;
    assert_eq!(next(&mut received).await, ("ann".to_owned(), 7));
}

#[tokio::test]
async fn messages_after_the_handshake_in_the_same_frame_are_not_lost() {
    let mut server = FakeServer::start().await;
    let connection = HubConnectionBuilder::new(&server.url).build().unwrap();
    let (tx, mut received) = mpsc::unbounded_channel();
    connection.on("Hello", move |(text,): (String,)| {
        let _ = tx.send(text);
    });
    let (started, _socket) = tokio::join!(connection.start(), async {
        let mut socket = server.next_socket().await;
        socket.frame().await;
        socket
            .send_text("{}\u{1e}{\"type\":1,\"target\":\"Hello\",\"arguments\":[\"early\"]}\u{1e}")
            .await;
        socket
    });
    started.unwrap();
    assert_eq!(next(&mut received).await, "early");
}

#[tokio::test]
async fn handlers_skip_bad_arguments_and_answer_client_result_requests() {
    let mut server = FakeServer::start().await;
    let connection = HubConnectionBuilder::new(&server.url).build().unwrap();
    let (tx, mut received) = mpsc::unbounded_channel();
    connection.on("Count", move |(n,): (u32,)| {
        let _ = tx.send(n);
    });
    let mut socket = connect(&mut server, &connection).await;
    // Wrong type, wrong count, then a good one: only the good one reaches the handler.
    socket
        .send_text(
            "{\"type\":1,\"target\":\"Count\",\"arguments\":[\"x\"]}\u{1e}\
             {\"type\":1,\"target\":\"Count\",\"arguments\":[1,2]}\u{1e}\
             {\"type\":1,\"target\":\"count\",\"arguments\":[3]}\u{1e}",
        )
        .await;
    assert_eq!(next(&mut received).await, 3);

    // A server asking for a result (client results) gets an error completion, not silence.
    socket
        .send_text(
            "{\"type\":1,\"invocationId\":\"s1\",\"target\":\"Count\",\"arguments\":[4]}\u{1e}",
        )
        .await;
    assert_eq!(next(&mut received).await, 4);
    let HubMessage::Completion(completion) = socket.message(Protocol::Json, true).await else {
        panic!("expected a completion");
    };
    assert_eq!(completion.invocation_id, "s1");
    assert!(matches!(completion.result, CompletionResult::Error(_)));
    socket
        .send_text(
            "{\"type\":1,\"invocationId\":\"s2\",\"target\":\"Missing\",\"arguments\":[]}\u{1e}",
        )
        .await;
    let HubMessage::Completion(completion) = socket.message(Protocol::Json, true).await else {
        panic!("expected a completion");
    };
    assert_eq!(completion.invocation_id, "s2");
    // The same answer the official clients give when no handler returns a result.
    assert_eq!(
        completion.result,
        CompletionResult::Error("Client didn't provide a result.".into())
    );
    // Unknown message types are ignored; the connection stays up.
    socket.send_text("{\"type\":42}\u{1e}").await;
    assert_eq!(connection.state(), HubConnectionState::Connected);
}

#[tokio::test]
async fn keep_alive_pings_an_idle_server() {
    let mut server = FakeServer::start().await;
    let connection = HubConnectionBuilder::new(&server.url)
        .keep_alive_interval(Duration::from_millis(100))
        .build()
        .unwrap();
    let mut socket = connect(&mut server, &connection).await;
    assert_eq!(
        socket.frame().await,
        Frame::Text("{\"type\":6}\u{1e}".into())
    );
    assert_eq!(
        socket.frame().await,
        Frame::Text("{\"type\":6}\u{1e}".into())
    );
}

#[tokio::test]
async fn silent_server_times_out_and_pending_invokes_fail() {
    let mut server = FakeServer::start().await;
    let connection = HubConnectionBuilder::new(&server.url)
        .server_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let mut events = record_events(&connection);
    let _socket = connect(&mut server, &connection).await;
    let error = connection.invoke::<(), _>("Never", ()).await.unwrap_err();
    assert!(
        matches!(
            error,
            InvokeError::ConnectionLost(DisconnectReason::ServerTimeout(_))
        ),
        "{error:?}"
    );
    let Event::Closed(Some(reason)) = next(&mut events).await else {
        panic!("expected the closed event");
    };
    assert!(reason.contains("server timeout"), "{reason}");
    assert_eq!(connection.state(), HubConnectionState::Disconnected);
    let error = connection.send("After", ()).await.unwrap_err();
    assert!(
        matches!(
            error,
            InvokeError::NotConnected(HubConnectionState::Disconnected)
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn server_close_without_reconnect_permission_closes() {
    let mut server = FakeServer::start().await;
    let connection = HubConnectionBuilder::new(&server.url)
        .with_automatic_reconnect()
        .build()
        .unwrap();
    let mut events = record_events(&connection);
    let mut socket = connect(&mut server, &connection).await;
    let mut frame = BytesMut::new();
    encode_close(Protocol::Json, &mut frame, Some("shutting down"), false).unwrap();
    socket.send(Protocol::Json, frame).await;
    assert_eq!(
        next(&mut events).await,
        Event::Closed(Some(
            "the server closed the connection with an error: shutting down".into()
        ))
    );
    assert!(
        server
            .socket_within(Duration::from_millis(300))
            .await
            .is_none()
    );
    assert_eq!(server.negotiate_count(), 1);
}

#[tokio::test]
async fn reconnects_when_allowed_and_keeps_handlers() {
    let mut server = FakeServer::start().await;
    let connection = HubConnectionBuilder::new(&server.url)
        .reconnect_policy(ReconnectDelays::new([Duration::ZERO; 3]))
        .build()
        .unwrap();
    let (tx, mut received) = mpsc::unbounded_channel();
    connection.on("Hello", move |(text,): (String,)| {
        let _ = tx.send(text);
    });
    let mut events = record_events(&connection);
    let mut socket = connect(&mut server, &connection).await;

    let mut frame = BytesMut::new();
    encode_close(Protocol::Json, &mut frame, None, true).unwrap();
    socket.send(Protocol::Json, frame).await;
    assert_eq!(
        next(&mut events).await,
        Event::Reconnecting("the server closed the connection".into())
    );
    let mut socket = server.next_socket().await;
    socket.accept_handshake(Protocol::Json).await;
    assert_eq!(
        next(&mut events).await,
        Event::Reconnected(Some("conn-1".into()))
    );
    assert_eq!(connection.connection_id().as_deref(), Some("conn-1"));
    assert_eq!(socket.query["id"], "token/1+x");

    socket
        .send_text("{\"type\":1,\"target\":\"Hello\",\"arguments\":[\"again\"]}\u{1e}")
        .await;
    assert_eq!(next(&mut received).await, "again");
    let (echo, ()) = tokio::join!(connection.invoke::<String, _>("Echo", ("e",)), async {
        let HubMessage::Invocation(invocation) = socket.message(Protocol::Json, true).await else {
            panic!("expected an invocation");
        };
        let mut frame = BytesMut::new();
        encode_completion_value(
            Protocol::Json,
            &mut frame,
            &invocation.invocation_id.unwrap(),
            "e",
        )
        .unwrap();
        socket.send(Protocol::Json, frame).await;
    });
    assert_eq!(echo.unwrap(), "e");
}

#[tokio::test]
async fn dropped_connection_fails_pending_invokes_and_gives_up_after_the_policy() {
    // Connection 0 is accepted; every negotiate after it fails, so reconnect attempts fail.
    let mut server = FakeServer::with_negotiate(|n| {
        if n == 0 {
            negotiate_ok(n)
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, String::new())
        }
    })
    .await;
    let connection = HubConnectionBuilder::new(&server.url)
        .reconnect_policy(ReconnectDelays::new([
            Duration::ZERO,
            Duration::from_millis(10),
        ]))
        .build()
        .unwrap();
    let mut events = record_events(&connection);
    let mut socket = connect(&mut server, &connection).await;

    let (result, ()) = tokio::join!(connection.invoke::<(), _>("Slow", ()), async {
        socket.frame().await;
        drop(socket);
    });
    let error = result.unwrap_err();
    assert!(matches!(error, InvokeError::ConnectionLost(_)), "{error:?}");

    let Event::Reconnecting(_) = next(&mut events).await else {
        panic!("expected reconnecting");
    };
    let Event::Closed(Some(reason)) = next(&mut events).await else {
        panic!("expected closed");
    };
    assert!(
        reason.starts_with("gave up reconnecting after 2 attempt(s): negotiate request to"),
        "{reason}"
    );
    assert!(reason.contains("503"), "{reason}");
    assert_eq!(server.negotiate_count(), 3);
    assert_eq!(connection.state(), HubConnectionState::Disconnected);
}

#[tokio::test]
async fn stop_flushes_sends_closes_and_fires_closed_without_error() {
    let mut server = FakeServer::start().await;
    let connection = HubConnectionBuilder::new(&server.url)
        .with_automatic_reconnect()
        .build()
        .unwrap();
    let mut events = record_events(&connection);
    let mut socket = connect(&mut server, &connection).await;

    let pending = {
        let connection = connection.clone();
        tokio::spawn(async move { connection.invoke::<(), _>("Never", ()).await })
    };
    connection.send("Last", ("words",)).await.unwrap();
    let mut targets = Vec::new();
    for _ in 0..2 {
        let HubMessage::Invocation(invocation) = socket.message(Protocol::Json, true).await else {
            panic!("expected an invocation");
        };
        targets.push(invocation.target);
    }
    targets.sort();
    assert_eq!(targets, ["Last", "Never"]);

    connection.stop().await;
    assert_eq!(connection.state(), HubConnectionState::Disconnected);
    assert!(matches!(pending.await.unwrap(), Err(InvokeError::Stopped)));
    assert_eq!(next(&mut events).await, Event::Closed(None));
    assert_eq!(socket.recv().await, None, "the websocket must be closed");
    // No reconnect after a deliberate stop.
    assert!(
        server
            .socket_within(Duration::from_millis(300))
            .await
            .is_none()
    );
    // And it can be started again.
    let _socket = connect(&mut server, &connection).await;
    assert_eq!(connection.connection_id().as_deref(), Some("conn-1"));
}

#[tokio::test]
async fn start_only_from_disconnected_and_calls_only_when_connected() {
    let mut server = FakeServer::start().await;
    let connection = HubConnectionBuilder::new(&server.url).build().unwrap();
    let error = connection.send("Early", ()).await.unwrap_err();
    assert!(matches!(
        error,
        InvokeError::NotConnected(HubConnectionState::Disconnected)
    ));
    let _socket = connect(&mut server, &connection).await;
    let error = connection.start().await.unwrap_err();
    assert!(
        matches!(
            error,
            ConnectError::InvalidState(HubConnectionState::Connected)
        ),
        "{error}"
    );
}

#[tokio::test]
async fn stop_during_reconnect_wait_closes_at_once() {
    let mut server = FakeServer::start().await;
    let connection = HubConnectionBuilder::new(&server.url)
        .reconnect_policy(ReconnectDelays::new([Duration::from_secs(3600)]))
        .build()
        .unwrap();
    let mut events = record_events(&connection);
    let socket = connect(&mut server, &connection).await;
    drop(socket);
    let Event::Reconnecting(_) = next(&mut events).await else {
        panic!("expected reconnecting");
    };
    assert_eq!(connection.state(), HubConnectionState::Reconnecting);
    tokio::time::timeout(PATIENCE, connection.stop())
        .await
        .unwrap();
    assert_eq!(next(&mut events).await, Event::Closed(None));
    assert_eq!(connection.state(), HubConnectionState::Disconnected);
}

#[tokio::test]
async fn dropping_every_handle_stops_the_connection() {
    let mut server = FakeServer::start().await;
    let connection = HubConnectionBuilder::new(&server.url).build().unwrap();
    let mut events = record_events(&connection);
    let mut socket = connect(&mut server, &connection).await;
    drop(connection);
    assert_eq!(socket.recv().await, None);
    assert_eq!(next(&mut events).await, Event::Closed(None));
}

#[test]
fn invalid_urls_are_refused_at_build() {
    let error = HubConnectionBuilder::new("https://example.com/hub")
        .build()
        .unwrap_err();
    assert!(error.to_string().contains("TLS"), "{error}");
}
