//! The hub protocol on the wire: handshakes, invocations and completions in JSON and
//! MessagePack, and every kind of bad input, asserted byte for byte against a real server
//! over real WebSockets. Bad input must get a clear answer and leave other connections
//! alone, so those tests keep a bystander connection and check it still works afterwards.

mod hub_support;

use bytes::BytesMut;
use hub_protocol::{
    CompletionResult, Decoder, HubMessage, Protocol, encode_invocation, encode_stream_invocation,
};
use hub_server::HubOptions;
use hub_support::{
    Frame, JSON_HANDSHAKE, MSGPACK_HANDSHAKE, RawClient, TestServer, wait_for_connections,
};

/// The frame a JSON completion with `body` (the fields after the id) looks like.
fn completion(id: &str, rest: &str) -> String {
    format!("{{\"type\":3,\"invocationId\":\"{id}\"{rest}}}\u{1e}")
}

/// Check that a connection that saw nothing wrong still works.
async fn assert_still_serves(client: &mut RawClient) {
    assert_eq!(
        client.invoke_json("ok", "Add", "[1,2]").await,
        completion("ok", ",\"result\":3")
    );
}

#[tokio::test]
async fn json_handshake_versions_0_1_and_2_succeed() {
    // 0 from signalrcore (its negotiate version), 1 from older and Java clients, 2 from
    // current official clients.
    let server = TestServer::start(HubOptions::default()).await;
    for version in [0, 1, 2] {
        let mut client = RawClient::connect(&server.ws_url("")).await;
        client
            .send_text(&format!(
                "{{\"protocol\":\"json\",\"version\":{version}}}\u{1e}"
            ))
            .await;
        assert_eq!(client.recv().await, Frame::Text("{}\u{1e}".into()));
        assert_still_serves(&mut client).await;
    }
}

#[tokio::test]
async fn messagepack_handshake_is_answered_in_a_binary_frame() {
    let server = TestServer::start(HubOptions::default()).await;
    for version in [0, 1, 2] {
        let mut client = RawClient::connect(&server.ws_url("")).await;
        client
            .send_text(&format!(
                "{{\"protocol\":\"messagepack\",\"version\":{version}}}\u{1e}"
            ))
            .await;
        assert_eq!(client.recv().await, Frame::Binary(b"{}\x1e".to_vec()));
    }
}

#[tokio::test]
async fn handshake_may_arrive_in_pieces_or_with_the_first_invocation() {
    let server = TestServer::start(HubOptions::default()).await;
    let mut split = RawClient::connect(&server.ws_url("")).await;
    split.send_text("{\"protocol\":").await;
    split.send_text("\"json\",\"version\":2}\u{1e}").await;
    assert_eq!(split.recv_text().await, "{}\u{1e}");

    let mut batched = RawClient::connect(&server.ws_url("")).await;
    batched
        .send_text(&format!(
            "{JSON_HANDSHAKE}{{\"type\":1,\"invocationId\":\"1\",\"target\":\"Add\",\"arguments\":[2,3]}}\u{1e}"
        ))
        .await;
    assert_eq!(batched.recv_text().await, "{}\u{1e}");
    assert_eq!(batched.recv_text().await, completion("1", ",\"result\":5"));
}

#[tokio::test]
async fn bad_handshakes_get_an_error_response_then_close() {
    let server = TestServer::start(HubOptions::default()).await;
    let mut bystander = server.json_client().await;
    let cases = [
        (
            "{\"protocol\":\"blazorpack\",\"version\":1}\u{1e}",
            "{\"error\":\"The protocol 'blazorpack' is not supported.\"}\u{1e}",
        ),
        (
            "{\"protocol\":\"json\",\"version\":3}\u{1e}",
            "{\"error\":\"The server does not support version 3 of the 'json' protocol.\"}\u{1e}",
        ),
        (
            "{\"protocol\":\"json\"}\u{1e}",
            "{\"error\":\"The handshake request is invalid: missing required property 'version'.\"}\u{1e}",
        ),
        (
            // An invocation before the handshake is not a handshake.
            "{\"type\":1,\"invocationId\":\"1\",\"target\":\"Add\",\"arguments\":[1,2]}\u{1e}",
            "{\"error\":\"The handshake request is invalid: missing required property 'protocol'.\"}\u{1e}",
        ),
    ];
    for (request, response) in cases {
        let mut client = RawClient::connect(&server.ws_url("")).await;
        client.send_text(request).await;
        assert_eq!(
            client.recv().await,
            Frame::Text(response.into()),
            "{request}"
        );
        assert_eq!(client.recv().await, Frame::Closed, "{request}");
    }
    // Not JSON at all: the reason comes from the JSON parser; the framing is exact.
    let mut client = RawClient::connect(&server.ws_url("")).await;
    client.send_text("hello\u{1e}").await;
    let response = client.recv_text().await;
    assert!(
        response.starts_with("{\"error\":\"The handshake request is invalid: ")
            && response.ends_with("\"}\u{1e}"),
        "{response}"
    );
    assert_eq!(client.recv().await, Frame::Closed);
    assert_still_serves(&mut bystander).await;
    wait_for_connections(&server.hub, 1).await;
}

#[tokio::test]
async fn oversized_handshake_is_refused() {
    let server = TestServer::start(HubOptions::default().max_message_size(1024)).await;
    let mut client = RawClient::connect(&server.ws_url("")).await;
    // No record separator ever comes: the server must not keep buffering.
    client.send_text(&" ".repeat(700)).await;
    client.send_text(&" ".repeat(700)).await;
    assert_eq!(
        client.recv().await,
        Frame::Text(
            "{\"error\":\"The handshake request exceeds the maximum message size of 1024 bytes.\"}\u{1e}"
                .into()
        )
    );
    assert_eq!(client.recv().await, Frame::Closed);
}

#[tokio::test]
async fn json_invocations_complete_with_results_void_and_errors() {
    let server = TestServer::start(HubOptions::default()).await;
    let mut client = server.json_client().await;
    assert_eq!(
        client.invoke_json("1", "Add", "[40,2]").await,
        completion("1", ",\"result\":42")
    );
    assert_eq!(
        client
            .invoke_json("2", "Echo", "[\"h\\u00e9llo \\\"world\\\" ✓\"]")
            .await,
        completion("2", ",\"result\":\"héllo \\\"world\\\" ✓\"")
    );
    // A void method completes without a result.
    assert_eq!(
        client.invoke_json("3", "Nothing", "[]").await,
        completion("3", "")
    );
    // Anonymous connection: null is a value.
    assert_eq!(
        client.invoke_json("4", "WhoAmI", "[]").await,
        completion("4", ",\"result\":null")
    );
    assert_eq!(
        client.invoke_json("5", "Fail", "[]").await,
        completion(
            "5",
            ",\"error\":\"An unexpected error occurred invoking 'Fail' on the server. HubException: this method always fails\""
        )
    );
    // Internal errors are not shown to the caller.
    assert_eq!(
        client.invoke_json("6", "FailInternally", "[]").await,
        completion(
            "6",
            ",\"error\":\"An unexpected error occurred invoking 'FailInternally' on the server.\""
        )
    );
    // Method names match ignoring case, as in ASP.NET Core.
    assert_eq!(
        client.invoke_json("7", "aDD", "[1,1]").await,
        completion("7", ",\"result\":2")
    );
}

#[tokio::test]
async fn a_panicking_method_fails_its_invocation_and_nothing_else() {
    let server = TestServer::start(HubOptions::default()).await;
    let mut bystander = server.json_client().await;
    let mut client = server.json_client().await;
    wait_for_connections(&server.hub, 2).await;
    assert_eq!(
        client.invoke_json("1", "Panic", "[\"boom\"]").await,
        completion(
            "1",
            ",\"error\":\"An unexpected error occurred invoking 'Panic' on the server.\""
        )
    );
    // The connection, and its place in the hub, survive.
    assert_still_serves(&mut client).await;
    assert_eq!(server.hub.connection_count(), 2);
    server
        .hub
        .context()
        .clients()
        .all()
        .send("Broadcast", ("still here",))
        .await
        .unwrap();
    let expected = "{\"type\":1,\"target\":\"Broadcast\",\"arguments\":[\"still here\"]}\u{1e}";
    assert_eq!(client.recv_text().await, expected);
    assert_eq!(bystander.recv_text().await, expected);
}

#[tokio::test]
async fn detailed_errors_show_internal_failures() {
    let server = TestServer::start(HubOptions::default().detailed_errors(true)).await;
    let mut client = server.json_client().await;
    assert_eq!(
        client.invoke_json("1", "FailInternally", "[]").await,
        completion(
            "1",
            ",\"error\":\"An unexpected error occurred invoking 'FailInternally' on the server. secret detail for the server log\""
        )
    );
    assert_eq!(
        client.invoke_json("2", "Panic", "[\"kaboom\"]").await,
        completion(
            "2",
            ",\"error\":\"An unexpected error occurred invoking 'Panic' on the server. the hub method panicked: kaboom\""
        )
    );
}

#[tokio::test]
async fn unknown_methods_and_bad_arguments_get_completion_errors_and_the_connection_stays_open() {
    let server = TestServer::start(HubOptions::default()).await;
    let mut client = server.json_client().await;
    assert_eq!(
        client.invoke_json("1", "NoSuchMethod", "[]").await,
        completion(
            "1",
            ",\"error\":\"Failed to invoke 'NoSuchMethod' due to an error on the server. HubException: Method does not exist.\""
        )
    );
    assert_eq!(
        client.invoke_json("2", "Add", "[1]").await,
        completion(
            "2",
            ",\"error\":\"Failed to invoke 'Add' due to an error on the server. InvalidDataException: Invocation provides 1 argument(s) but target expects 2.\""
        )
    );
    assert_eq!(
        client.invoke_json("3", "Add", "[1,2,3]").await,
        completion(
            "3",
            ",\"error\":\"Failed to invoke 'Add' due to an error on the server. InvalidDataException: Invocation provides 3 argument(s) but target expects 2.\""
        )
    );
    let wrong_type = client.invoke_json("4", "Add", "[1,\"two\"]").await;
    assert_eq!(
        wrong_type,
        completion(
            "4",
            ",\"error\":\"Failed to invoke 'Add' due to an error on the server. InvalidDataException: Error binding arguments. Make sure that the types of the provided values match the types of the hub method being invoked. Argument at index 1 is invalid: invalid type: string \\\"two\\\", expected i64.\""
        )
    );
    assert_still_serves(&mut client).await;
}

#[tokio::test]
async fn invocations_without_an_id_get_no_reply() {
    let server = TestServer::start(HubOptions::default()).await;
    let mut client = server.json_client().await;
    // Succeeding, failing and unknown non-blocking invocations: none is answered...
    for (target, arguments) in [("Add", "[1,2]"), ("Fail", "[]"), ("Missing", "[]")] {
        client
            .send_text(&format!(
                "{{\"type\":1,\"target\":\"{target}\",\"arguments\":{arguments}}}\u{1e}"
            ))
            .await;
    }
    // ...so the next frame is the completion of this blocking one.
    assert_eq!(
        client.invoke_json("9", "Add", "[4,5]").await,
        completion("9", ",\"result\":9")
    );
    // A non-blocking invocation still runs: Broadcast reaches the caller too.
    client
        .send_text(
            "{\"type\":1,\"target\":\"Broadcast\",\"arguments\":[\"fire and forget\"]}\u{1e}",
        )
        .await;
    assert_eq!(
        client.recv_text_skipping_pings().await,
        "{\"type\":1,\"target\":\"Broadcast\",\"arguments\":[\"fire and forget\"]}\u{1e}"
    );
}

#[tokio::test]
async fn stream_mismatches_and_unknown_stream_ids_get_clear_errors() {
    let server = TestServer::start(HubOptions::default()).await;
    let mut client = server.json_client().await;
    client
        .send_text(
            "{\"type\":4,\"invocationId\":\"s1\",\"target\":\"Add\",\"arguments\":[1,2]}\u{1e}",
        )
        .await;
    assert_eq!(
        client.recv_text().await,
        completion(
            "s1",
            ",\"error\":\"The client attempted to invoke the non-streaming 'Add' method with a streaming invocation.\""
        )
    );
    client
        .send_text(
            "{\"type\":4,\"invocationId\":\"s2\",\"target\":\"Nope\",\"arguments\":[]}\u{1e}",
        )
        .await;
    assert_eq!(
        client.recv_text().await,
        completion(
            "s2",
            ",\"error\":\"Failed to invoke 'Nope' due to an error on the server. HubException: Method does not exist.\""
        )
    );
    client
        .send_text("{\"type\":1,\"invocationId\":\"u1\",\"target\":\"Echo\",\"arguments\":[],\"streamIds\":[\"0\"]}\u{1e}")
        .await;
    assert_eq!(
        client.recv_text().await,
        completion(
            "u1",
            ",\"error\":\"An unexpected error occurred invoking 'Echo' on the server. HubException: Client sent 1 stream(s), Hub method expects 0.\""
        )
    );
    // A stream item for a stream that is not open is answered with a completion error
    // naming it; the connection stays open.
    client
        .send_text("{\"type\":2,\"invocationId\":\"0\",\"item\":1}\u{1e}")
        .await;
    assert_eq!(
        client.recv_text().await,
        completion(
            "0",
            ",\"error\":\"Received a stream item for stream '0', which is not open (unknown, completed, or its method has returned).\""
        )
    );
    // Cancellations, client-result completions and stateful-reconnect messages for
    // nothing are ignored; unknown message types too (forward compatibility).
    for ignored in [
        "{\"type\":5,\"invocationId\":\"s1\"}",
        "{\"type\":3,\"invocationId\":\"x\",\"result\":1}",
        "{\"type\":8,\"sequenceId\":1}",
        "{\"type\":9,\"sequenceId\":1}",
        "{\"type\":42,\"whatever\":true}",
        "{\"type\":6}",
    ] {
        client.send_text(&format!("{ignored}\u{1e}")).await;
    }
    assert_still_serves(&mut client).await;
}

#[tokio::test]
async fn messagepack_invocations_round_trip() {
    let server = TestServer::start(HubOptions::default()).await;
    let mut client = RawClient::connect(&server.ws_url("access_token=mp-user")).await;
    client.handshake_msgpack().await;
    let mut decoder = Decoder::new(Protocol::MessagePack, 1 << 20);

    let mut frame = BytesMut::new();
    encode_invocation(
        Protocol::MessagePack,
        &mut frame,
        Some("1"),
        "Add",
        &(40, 2),
    )
    .unwrap();
    encode_invocation(Protocol::MessagePack, &mut frame, Some("2"), "WhoAmI", &()).unwrap();
    encode_invocation(Protocol::MessagePack, &mut frame, Some("3"), "Nope", &()).unwrap();
    encode_invocation(Protocol::MessagePack, &mut frame, Some("4"), "Nothing", &()).unwrap();
    // Several messages in one frame, as the protocol allows.
    client.send_binary(&frame).await;
    let mut results = Vec::new();
    while results.len() < 4 {
        let mut buf = BytesMut::from(&client.recv_binary().await[..]);
        while let Some(message) = decoder.decode(&mut buf).unwrap() {
            let HubMessage::Completion(completion) = message else {
                panic!("expected a completion, got {message:?}");
            };
            results.push((completion.invocation_id, completion.result));
        }
    }
    assert_eq!(results[0].0, "1");
    let CompletionResult::Value(value) = &results[0].1 else {
        panic!("{:?}", results[0]);
    };
    assert_eq!(value.deserialize::<i64>().unwrap(), 42);
    let CompletionResult::Value(value) = &results[1].1 else {
        panic!("{:?}", results[1]);
    };
    assert_eq!(value.deserialize::<String>().unwrap(), "mp-user");
    assert_eq!(
        results[2].1,
        CompletionResult::Error(
            "Failed to invoke 'Nope' due to an error on the server. HubException: Method does not exist."
                .into()
        )
    );
    assert_eq!(results[3].1, CompletionResult::Void);

    let mut frame = BytesMut::new();
    encode_stream_invocation(Protocol::MessagePack, &mut frame, "5", "Add", &(1, 2)).unwrap();
    client.send_binary(&frame).await;
    let mut buf = BytesMut::from(&client.recv_binary().await[..]);
    let Some(HubMessage::Completion(completion)) = decoder.decode(&mut buf).unwrap() else {
        panic!("expected a completion");
    };
    assert!(
        matches!(completion.result, CompletionResult::Error(error) if error.contains("non-streaming 'Add'"))
    );
}

#[tokio::test]
async fn messages_reach_clients_of_both_protocols_from_one_send() {
    let server = TestServer::start(HubOptions::default()).await;
    let mut json = server.json_client().await;
    let mut msgpack = RawClient::connect(&server.ws_url("")).await;
    msgpack.handshake_msgpack().await;
    wait_for_connections(&server.hub, 2).await;
    server
        .hub
        .context()
        .clients()
        .all()
        .send("Broadcast", ("to everyone",))
        .await
        .unwrap();
    assert_eq!(
        json.recv_text().await,
        "{\"type\":1,\"target\":\"Broadcast\",\"arguments\":[\"to everyone\"]}\u{1e}"
    );
    let mut buf = BytesMut::from(&msgpack.recv_binary().await[..]);
    let message = Decoder::new(Protocol::MessagePack, 1 << 20)
        .decode(&mut buf)
        .unwrap()
        .unwrap();
    let HubMessage::Invocation(invocation) = message else {
        panic!("expected an invocation, got {message:?}");
    };
    assert_eq!(invocation.target, "Broadcast");
    assert_eq!(invocation.invocation_id, None);
    assert_eq!(
        invocation.arguments.deserialize::<String>(0).unwrap(),
        "to everyone"
    );
}

#[tokio::test]
async fn invalid_json_closes_that_connection_with_an_error() {
    let server = TestServer::start(HubOptions::default()).await;
    let mut bystander = server.json_client().await;
    let mut client = server.json_client().await;
    client.send_text("{\"type\":1,\"target\":\u{1e}").await;
    let close = client.recv_text().await;
    assert!(
        close.starts_with(
            "{\"type\":7,\"error\":\"Connection closed with an error. InvalidDataException: invalid json hub message: "
        ) && close.ends_with("\"}\u{1e}"),
        "{close}"
    );
    assert_eq!(client.recv().await, Frame::Closed);
    // A message that is JSON but not a hub message is just as invalid.
    let mut client = server.json_client().await;
    client.send_text("[1,2,3]\u{1e}").await;
    assert!(
        client
            .recv_text()
            .await
            .starts_with("{\"type\":7,\"error\":")
    );
    assert_eq!(client.recv().await, Frame::Closed);
    assert_still_serves(&mut bystander).await;
    wait_for_connections(&server.hub, 1).await;
}

#[tokio::test]
async fn invalid_messagepack_closes_that_connection_with_an_error() {
    let server = TestServer::start(HubOptions::default()).await;
    let mut bystander = server.json_client().await;
    let mut client = RawClient::connect(&server.ws_url("")).await;
    client.handshake_msgpack().await;
    // Length 3, then a map where the message array belongs.
    client.send_binary(&[0x03, 0x81, 0xa1, 0x61]).await;
    let close = client.recv_binary().await;
    let mut buf = BytesMut::from(&close[..]);
    let message = Decoder::new(Protocol::MessagePack, 1 << 20)
        .decode(&mut buf)
        .unwrap()
        .unwrap();
    let HubMessage::Close(close) = message else {
        panic!("expected Close, got {message:?}");
    };
    assert!(!close.allow_reconnect);
    let error = close.error.expect("a reason");
    assert!(
        error.starts_with(
            "Connection closed with an error. InvalidDataException: invalid messagepack hub message"
        ),
        "{error}"
    );
    assert_eq!(client.recv().await, Frame::Closed);
    assert_still_serves(&mut bystander).await;
}

#[tokio::test]
async fn oversized_messages_close_the_connection_with_an_error() {
    let server = TestServer::start(HubOptions::default().max_message_size(1024)).await;
    let mut bystander = server.json_client().await;
    let expected = "{\"type\":7,\"error\":\"Connection closed with an error. InvalidDataException: The maximum message size of 1024 bytes was exceeded.\"}\u{1e}";

    // One 1 MiB WebSocket frame holding one hub message over the limit: the WebSocket
    // message streams in, and the hub message is refused once it passes the limit,
    // without being buffered whole.
    let mut client = server.json_client().await;
    let huge = format!(
        "{{\"type\":1,\"target\":\"Echo\",\"arguments\":[\"{}\"]}}\u{1e}",
        "x".repeat(1 << 20)
    );
    client.send_text(&huge).await;
    assert_eq!(client.recv_text().await, expected);
    assert_eq!(client.recv().await, Frame::Closed);

    // A message arriving in small frames that never ends within the limit.
    let mut client = server.json_client().await;
    client
        .send_text("{\"type\":1,\"target\":\"Echo\",\"arguments\":[\"")
        .await;
    for _ in 0..3 {
        client.send_text(&"y".repeat(500)).await;
    }
    assert_eq!(client.recv_text().await, expected);
    assert_eq!(client.recv().await, Frame::Closed);

    // Just under the limit is fine.
    let mut client = server.json_client().await;
    let overhead =
        "{\"type\":1,\"invocationId\":\"1\",\"target\":\"Echo\",\"arguments\":[\"\"]}".len();
    let text = "z".repeat(1024 - overhead);
    let reply = client
        .invoke_json("1", "Echo", &format!("[\"{text}\"]"))
        .await;
    assert_eq!(reply, completion("1", &format!(",\"result\":\"{text}\"")));
    assert_still_serves(&mut bystander).await;
}

#[tokio::test]
async fn a_close_message_from_the_client_ends_the_connection() {
    let server = TestServer::start(HubOptions::default()).await;
    let mut client = server.json_client().await;
    wait_for_connections(&server.hub, 1).await;
    client.send_text("{\"type\":7}\u{1e}").await;
    assert_eq!(client.recv().await, Frame::Closed);
    wait_for_connections(&server.hub, 0).await;
}

#[tokio::test]
async fn handshake_for_messagepack_is_json_text_even_in_a_binary_frame() {
    let server = TestServer::start(HubOptions::default()).await;
    let mut client = RawClient::connect(&server.ws_url("")).await;
    client.send_binary(MSGPACK_HANDSHAKE.as_bytes()).await;
    assert_eq!(client.recv_binary().await, b"{}\x1e");
}

/// The .NET client sends everything it has queued as one WebSocket message: many small
/// hub messages, together over `max_message_size`, must all be served.
#[tokio::test]
async fn many_small_messages_in_one_websocket_message_are_served() {
    let server = TestServer::start(HubOptions::default()).await;
    let mut client = server.json_client().await;
    // More invocations than the send queue holds (1,024): their completions must not
    // overflow the caller's own queue.
    let batch: String = (0..1500)
        .map(|i| {
            format!("{{\"type\":1,\"invocationId\":\"{i}\",\"target\":\"Add\",\"arguments\":[{i},1]}}\u{1e}")
        })
        .collect();
    assert!(
        batch.len() > 32 * 1024,
        "the batch must exceed the per-message limit"
    );
    client.send_text(&batch).await;
    for i in 0..1500 {
        assert_eq!(
            client.recv_text_skipping_pings().await,
            completion(&i.to_string(), &format!(",\"result\":{}", i + 1))
        );
    }
}

/// Options set through the public fields to values that cannot work are raised to the
/// smallest that can, instead of breaking every connection.
#[tokio::test]
async fn unusable_option_values_are_raised_to_working_ones() {
    let mut options = HubOptions::default();
    options.send_queue_bytes = 0;
    options.max_parallel_invocations = 0;
    options.keep_alive_interval = std::time::Duration::ZERO;
    let server = TestServer::start(options).await;
    let mut client = server.json_client().await;
    assert_still_serves(&mut client).await;
    assert_eq!(server.hub.options().send_queue_bytes, 1);
    assert_eq!(server.hub.options().max_parallel_invocations, 1);
    assert!(server.hub.options().keep_alive_interval >= std::time::Duration::from_millis(10));
}
