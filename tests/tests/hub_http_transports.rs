//! Server-Sent Events and long polling spoken with raw HTTP requests: what negotiate
//! offers, each transport's life, and a clear status for every kind of bad input, with
//! no other connection noticing. The official JavaScript client over both transports is
//! in `hub_official_client.rs`; a browser on long polling in `chat_page_browser.rs`.

mod hub_support;

use std::net::SocketAddr;
use std::time::Duration;

use hub_server::HubOptions;
use hub_support::{
    HUB_PATH, HttpResponse, JSON_HANDSHAKE, MSGPACK_HANDSHAKE, TestServer, http, http_with_body,
    wait_for_connections,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const EVENT_STREAM: &str = "Accept: text/event-stream";

async fn get(server: &TestServer, token: &str) -> HttpResponse {
    http(
        server.addr,
        &format!("GET {HUB_PATH}?id={token} HTTP/1.1"),
        &[],
    )
    .await
}

async fn post(server: &TestServer, token: &str, body: &[u8]) -> HttpResponse {
    http_with_body(
        server.addr,
        &format!("POST {HUB_PATH}?id={token} HTTP/1.1"),
        &[],
        Some(body),
    )
    .await
}

async fn delete(server: &TestServer, token: &str) -> HttpResponse {
    http(
        server.addr,
        &format!("DELETE {HUB_PATH}?id={token} HTTP/1.1"),
        &[],
    )
    .await
}

/// A long-polling connection through its handshake: its token.
async fn long_polling_client(server: &TestServer) -> String {
    let (_, token) = server.negotiate().await;
    let first = get(server, &token).await;
    assert_eq!((first.status, first.body.as_str()), (200, ""));
    assert_eq!(first.header("cache-control"), Some("no-cache, no-store"));
    assert_eq!(
        post(server, &token, JSON_HANDSHAKE.as_bytes()).await.status,
        200
    );
    let handshake = get(server, &token).await;
    assert_eq!(
        (handshake.status, handshake.body.as_str()),
        (200, "{}\u{1e}")
    );
    token
}

#[tokio::test]
async fn negotiate_offers_the_three_transports_in_asp_net_core_order() {
    let server = TestServer::start(HubOptions::default()).await;
    let response = server.negotiate_response().await;
    let body: Value = serde_json::from_str(&response.body).expect("JSON");
    assert_eq!(
        body["availableTransports"],
        json!([
            {"transport": "WebSockets", "transferFormats": ["Text", "Binary"]},
            {"transport": "ServerSentEvents", "transferFormats": ["Text"]},
            {"transport": "LongPolling", "transferFormats": ["Text", "Binary"]},
        ])
    );
}

#[tokio::test]
async fn long_polling_sends_polls_and_ends_with_delete() {
    let server = TestServer::start(HubOptions::default()).await;
    let token = long_polling_client(&server).await;
    wait_for_connections(&server.hub, 1).await;

    // Several hub messages in one body, answered together on the next poll.
    let body = "{\"type\":1,\"invocationId\":\"1\",\"target\":\"Add\",\"arguments\":[1,2]}\u{1e}{\"type\":1,\"invocationId\":\"2\",\"target\":\"Echo\",\"arguments\":[\"hi\"]}\u{1e}";
    assert_eq!(post(&server, &token, body.as_bytes()).await.status, 200);
    let mut got = String::new();
    while got.matches('\u{1e}').count() < 2 {
        let poll = get(&server, &token).await;
        assert_eq!(poll.status, 200);
        got.push_str(&poll.body);
    }
    assert!(
        got.contains("{\"type\":3,\"invocationId\":\"1\",\"result\":3}"),
        "{got}"
    );
    assert!(
        got.contains("{\"type\":3,\"invocationId\":\"2\",\"result\":\"hi\"}"),
        "{got}"
    );

    // A poll waits; DELETE ends the connection and the waiting poll gets 204.
    let addr = server.addr;
    let waiting = tokio::spawn({
        let token = token.clone();
        async move { http(addr, &format!("GET {HUB_PATH}?id={token} HTTP/1.1"), &[]).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(delete(&server, &token).await.status, 202);
    assert_eq!(waiting.await.expect("poll").status, 204);
    wait_for_connections(&server.hub, 0).await;
    // Gone for good.
    assert_eq!(get(&server, &token).await.status, 404);
    assert_eq!(post(&server, &token, b"x").await.status, 404);
}

#[tokio::test]
async fn a_newer_poll_replaces_the_waiting_one_which_gets_204() {
    let server = TestServer::start(HubOptions::default()).await;
    let token = long_polling_client(&server).await;
    let addr = server.addr;
    let older = tokio::spawn({
        let token = token.clone();
        async move { http(addr, &format!("GET {HUB_PATH}?id={token} HTTP/1.1"), &[]).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let newer = tokio::spawn({
        let token = token.clone();
        async move { http(addr, &format!("GET {HUB_PATH}?id={token} HTTP/1.1"), &[]).await }
    });
    assert_eq!(older.await.expect("older poll").status, 204);
    // The newer poll gets what comes next.
    let invoke = "{\"type\":1,\"invocationId\":\"1\",\"target\":\"Add\",\"arguments\":[2,2]}\u{1e}";
    assert_eq!(post(&server, &token, invoke.as_bytes()).await.status, 200);
    let newer = newer.await.expect("newer poll");
    assert_eq!(newer.status, 200);
    assert!(newer.body.contains("\"result\":4"), "{}", newer.body);
}

#[tokio::test]
async fn a_poll_is_answered_empty_after_the_poll_timeout() {
    let options = HubOptions::default().long_polling_timeout(Duration::from_millis(300));
    let server = TestServer::start(options).await;
    let token = long_polling_client(&server).await;
    let poll = get(&server, &token).await;
    assert_eq!((poll.status, poll.body.as_str()), (200, ""));
    // And no Ping came instead: long polling needs none.
}

#[tokio::test]
async fn a_client_that_stops_polling_is_closed_after_the_disconnect_timeout() {
    let options = HubOptions::default()
        .long_polling_timeout(Duration::from_millis(200))
        .long_polling_disconnect_timeout(Duration::from_secs(2))
        .client_timeout(Duration::from_secs(60));
    let server = TestServer::start(options).await;
    let token = long_polling_client(&server).await;
    wait_for_connections(&server.hub, 1).await;
    // Polling keeps it alive past the disconnect timeout...
    for _ in 0..15 {
        assert_eq!(get(&server, &token).await.status, 200);
    }
    assert_eq!(server.hub.connection_count(), 1);
    // ...and not polling does not.
    wait_for_connections(&server.hub, 0).await;
}

#[tokio::test]
async fn a_second_send_while_one_is_in_flight_gets_409() {
    let server = TestServer::start(HubOptions::default()).await;
    let token = long_polling_client(&server).await;
    // A POST whose body has not all arrived yet.
    let mut slow = TcpStream::connect(server.addr).await.expect("connect");
    let invoke = "{\"type\":1,\"invocationId\":\"1\",\"target\":\"Add\",\"arguments\":[3,4]}\u{1e}";
    let head = format!(
        "POST {HUB_PATH}?id={token} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        invoke.len()
    );
    slow.write_all(head.as_bytes()).await.expect("write");
    slow.write_all(&invoke.as_bytes()[..10])
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = post(&server, &token, b"").await;
    assert_eq!(second.status, 409);
    assert!(
        second
            .body
            .starts_with("Another send request is already in progress")
    );
    // The first one completes normally.
    slow.write_all(&invoke.as_bytes()[10..])
        .await
        .expect("write");
    let mut answer = String::new();
    slow.read_to_string(&mut answer).await.expect("read");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let poll = get(&server, &token).await;
    assert!(poll.body.contains("\"result\":7"), "{}", poll.body);
}

#[tokio::test]
async fn an_oversize_hub_message_closes_the_connection_with_the_reason() {
    let options = HubOptions::default().max_message_size(1024);
    let server = TestServer::start(options).await;
    let token = long_polling_client(&server).await;
    let big = format!(
        "{{\"type\":1,\"target\":\"Echo\",\"arguments\":[\"{}\"]}}\u{1e}",
        "x".repeat(4096)
    );
    let _ = post(&server, &token, big.as_bytes()).await;
    let poll = get(&server, &token).await;
    assert_eq!(poll.status, 200);
    assert!(
        poll.body
            .contains("The maximum message size of 1024 bytes was exceeded"),
        "{}",
        poll.body
    );
    assert_eq!(get(&server, &token).await.status, 204);
}

#[tokio::test]
async fn bad_requests_get_clear_statuses_and_others_do_not_notice() {
    let server = TestServer::start(HubOptions::default()).await;
    let mut bystander = server.json_client().await;
    let addr = server.addr;

    // Missing id.
    for method in ["GET", "POST", "DELETE"] {
        let response = http(addr, &format!("{method} {HUB_PATH} HTTP/1.1"), &[]).await;
        assert_eq!(response.status, 400, "{method}");
        assert!(
            response.body.starts_with("Connection ID required"),
            "{}",
            response.body
        );
    }
    // Unknown id.
    for method in ["GET", "POST", "DELETE"] {
        let response = http(addr, &format!("{method} {HUB_PATH}?id=nope HTTP/1.1"), &[]).await;
        assert_eq!(response.status, 404, "{method}");
        assert!(
            response.body.starts_with("No connection with that ID"),
            "{}",
            response.body
        );
    }
    let sse = http(
        addr,
        &format!("GET {HUB_PATH}?id=nope HTTP/1.1"),
        &[EVENT_STREAM],
    )
    .await;
    assert_eq!(sse.status, 404);
    // Wrong method.
    let put = http(addr, &format!("PUT {HUB_PATH}?id=nope HTTP/1.1"), &[]).await;
    assert_eq!(put.status, 405);
    assert_eq!(put.header("allow"), Some("GET, POST, DELETE"));

    // One token, one transport: a long-polling token refuses a WebSocket and an event
    // stream...
    let token = long_polling_client(&server).await;
    let websocket =
        hub_support::RawClient::try_connect(&server.ws_url(&format!("id={token}")), &[]).await;
    match websocket {
        Ok(_) => panic!("a WebSocket took a long-polling connection's token"),
        Err(error) => assert!(error.contains("400"), "{error}"),
    }
    let sse = http(
        addr,
        &format!("GET {HUB_PATH}?id={token} HTTP/1.1"),
        &[EVENT_STREAM],
    )
    .await;
    assert_eq!(sse.status, 400);
    assert!(
        sse.body
            .starts_with("Cannot change transports mid-connection")
    );
    // ...and a WebSocket's token refuses polls, sends and DELETE.
    let (_, ws_token) = server.negotiate().await;
    let mut ws = hub_support::RawClient::connect(&server.ws_url(&format!("id={ws_token}"))).await;
    ws.handshake_json().await;
    assert_eq!(get(&server, &ws_token).await.status, 400);
    assert_eq!(post(&server, &ws_token, b"x").await.status, 405);
    assert_eq!(delete(&server, &ws_token).await.status, 400);

    // Nobody else noticed.
    assert_eq!(
        bystander.invoke_json("1", "Add", "[20,22]").await,
        "{\"type\":3,\"invocationId\":\"1\",\"result\":42}\u{1e}"
    );
    assert_eq!(
        ws.invoke_json("1", "Add", "[1,1]").await,
        "{\"type\":3,\"invocationId\":\"1\",\"result\":2}\u{1e}"
    );
    let poll_body =
        "{\"type\":1,\"invocationId\":\"9\",\"target\":\"Add\",\"arguments\":[4,5]}\u{1e}";
    assert_eq!(
        post(&server, &token, poll_body.as_bytes()).await.status,
        200
    );
    assert!(get(&server, &token).await.body.contains("\"result\":9"));
}

/// An open event stream: the response head, then events as they come.
struct EventStream {
    stream: TcpStream,
    /// Received and not yet consumed.
    buffered: String,
}

impl EventStream {
    async fn open(addr: SocketAddr, token: &str) -> (String, Self) {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let request =
            format!("GET {HUB_PATH}?id={token} HTTP/1.1\r\nHost: x\r\n{EVENT_STREAM}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut events = Self {
            stream,
            buffered: String::new(),
        };
        let head = events.until("\r\n\r\n").await;
        (head, events)
    }

    /// Everything up to and including `end`.
    async fn until(&mut self, end: &str) -> String {
        let read = async {
            loop {
                if let Some(at) = self.buffered.find(end) {
                    let rest = self.buffered.split_off(at + end.len());
                    return std::mem::replace(&mut self.buffered, rest);
                }
                let mut chunk = [0u8; 4096];
                let n = self.stream.read(&mut chunk).await.expect("read");
                assert!(n > 0, "the stream ended; got {:?}", self.buffered);
                self.buffered
                    .push_str(std::str::from_utf8(&chunk[..n]).expect("UTF-8"));
            }
        };
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("in time")
    }
}

#[tokio::test]
async fn server_sent_events_stream_frames_as_data_lines() {
    let server = TestServer::start(HubOptions::default()).await;
    let (_, token) = server.negotiate().await;
    let (head, mut events) = EventStream::open(server.addr, &token).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    assert!(head.contains("cache-control: no-cache"), "{head}");
    // The opening comment arrives before anything is sent (chunked: size, then bytes).
    assert!(events.until(":\r\n").await.ends_with(":\r\n"));
    assert_eq!(
        post(&server, &token, JSON_HANDSHAKE.as_bytes())
            .await
            .status,
        200
    );
    assert!(
        events
            .until("\r\n\r\n")
            .await
            .contains("data: {}\u{1e}\r\n")
    );
    let invoke = "{\"type\":1,\"invocationId\":\"1\",\"target\":\"Add\",\"arguments\":[5,6]}\u{1e}";
    assert_eq!(post(&server, &token, invoke.as_bytes()).await.status, 200);
    let event = events.until("\r\n\r\n").await;
    assert!(
        event.contains("data: {\"type\":3,\"invocationId\":\"1\",\"result\":11}\u{1e}\r\n"),
        "{event}"
    );
    // A second stream for the same connection is refused; DELETE is for long polling.
    let again = http(
        server.addr,
        &format!("GET {HUB_PATH}?id={token} HTTP/1.1"),
        &[EVENT_STREAM],
    )
    .await;
    assert_eq!(again.status, 409);
    assert_eq!(get(&server, &token).await.status, 400);
    assert_eq!(delete(&server, &token).await.status, 400);
    // Closing the stream ends the connection.
    wait_for_connections(&server.hub, 1).await;
    drop(events);
    wait_for_connections(&server.hub, 0).await;
}

#[tokio::test]
async fn server_sent_events_refuse_messagepack_as_asp_net_core_does() {
    let server = TestServer::start(HubOptions::default()).await;
    let (_, token) = server.negotiate().await;
    let (_, mut events) = EventStream::open(server.addr, &token).await;
    events.until(":\r\n").await;
    assert_eq!(
        post(&server, &token, MSGPACK_HANDSHAKE.as_bytes())
            .await
            .status,
        200
    );
    let event = events.until("\r\n\r\n").await;
    assert!(
        event.contains("Cannot use the 'messagepack' protocol on the current transport. The transport does not support 'Binary' transfer format"),
        "{event}"
    );
    assert_eq!(server.hub.connection_count(), 0);
}
