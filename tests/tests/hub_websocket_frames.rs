//! The server's own WebSocket frame reader, byte by byte: large WebSocket messages stream
//! through hub message by hub message (memory: `hub_websocket_memory`), an unfinished
//! message cannot outlive the client timeout, and frames that break RFC 6455 close the
//! connection with the status code it prescribes.

mod hub_support;

use std::time::Duration;

use hub_server::HubOptions;
use hub_support::TestServer;
use hub_support::raw_socket::MASK;
use hub_support::raw_socket::{
    BINARY, CLOSE, CONTINUATION, PING, RawSocket, ServerFrame, TEXT, frame,
};
use tokio::io::DuplexStream;
use tokio::net::TcpStream;
use tokio::time::Instant;

const FIN: u8 = 0x80;

async fn tcp_socket(server: &TestServer) -> RawSocket<TcpStream> {
    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    tcp.set_nodelay(true).expect("TCP_NODELAY");
    RawSocket::upgrade(tcp).await
}

/// An in-memory WebSocket to `server`, past the JSON handshake.
async fn json_socket(server: &TestServer) -> RawSocket<DuplexStream> {
    let mut socket = RawSocket::upgrade(server.in_memory_connection()).await;
    socket.handshake_json().await;
    socket
}

/// A server whose client timeout is 10 s (its keep-alive Pings, every 60 s, never come
/// first), and an in-memory WebSocket to it past the JSON handshake.
async fn with_a_10s_client_timeout() -> (TestServer, RawSocket<DuplexStream>) {
    let options = HubOptions::default()
        .client_timeout(Duration::from_secs(10))
        .keep_alive_interval(Duration::from_secs(60));
    let server = TestServer::start(options).await;
    let socket = json_socket(&server).await;
    (server, socket)
}

/// Hub messages over `max_message_size` are refused with the usual Close message even
/// deep inside a large WebSocket message of acceptable ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_hub_message_inside_a_large_websocket_message_is_refused() {
    let server = TestServer::start(HubOptions::default()).await;
    let mut socket = tcp_socket(&server).await;
    socket.handshake_json().await;
    let small = "{\"type\":1,\"target\":\"Nothing\",\"arguments\":[]}\u{1e}".repeat(1000);
    socket.send(TEXT, small.as_bytes()).await;
    for _ in 0..40 {
        socket.send(CONTINUATION, small.as_bytes()).await;
    }
    let oversized = format!(
        "{{\"type\":1,\"target\":\"Echo\",\"arguments\":[\"{}\"]}}\u{1e}",
        "x".repeat(40 * 1024)
    );
    socket.send(FIN | CONTINUATION, oversized.as_bytes()).await;
    assert_eq!(
        socket.recv_skipping_pings().await,
        ServerFrame::text(
            "{\"type\":7,\"error\":\"Connection closed with an error. InvalidDataException: The maximum message size of 32768 bytes was exceeded.\"}\u{1e}"
        )
    );
    assert_eq!(socket.recv().await, ServerFrame::close(1000));
    assert_eq!(socket.recv().await, ServerFrame::End);
}

/// A message that was started and never finished: pings between its frames do not keep
/// it alive, so the connection closes one client timeout after its last data frame.
#[tokio::test(start_paused = true)]
async fn an_unfinished_message_followed_only_by_pings_is_closed_after_the_client_timeout() {
    let (_server, mut socket) = with_a_10s_client_timeout().await;
    // A complete hub message, then the start of another, in one unfinished WebSocket
    // message.
    let start = "{\"type\":6}\u{1e}{\"type\":1,\"target\":\"Echo\",\"arguments\":[\"";
    socket.send(TEXT, start.as_bytes()).await;
    let began = Instant::now();
    for second in 1..=9 {
        tokio::time::sleep_until(began + Duration::from_secs(second)).await;
        socket.send(FIN | PING, b"alive?").await;
        // Pings are still answered.
        assert_eq!(socket.recv().await, ServerFrame::pong(b"alive?"));
    }
    assert_eq!(
        socket.recv().await,
        ServerFrame::text(
            "{\"type\":7,\"error\":\"Connection closed with an error. No message was received from the client within the client timeout of 10s.\",\"allowReconnect\":true}\u{1e}"
        )
    );
    assert_eq!(began.elapsed(), Duration::from_secs(10));
    assert_eq!(socket.recv().await, ServerFrame::close(1000));
}

/// Between messages, WebSocket pings are activity like any other: a client that only
/// pings stays connected.
#[tokio::test(start_paused = true)]
async fn pings_between_messages_keep_the_connection_alive() {
    let (_server, mut socket) = with_a_10s_client_timeout().await;
    let began = Instant::now();
    for second in (5..=40).step_by(5) {
        tokio::time::sleep_until(began + Duration::from_secs(second)).await;
        socket.send(FIN | PING, b"").await;
        assert_eq!(socket.recv().await, ServerFrame::pong(b""));
    }
    socket
        .send_text(
            "{\"type\":1,\"invocationId\":\"1\",\"target\":\"Add\",\"arguments\":[1,1]}\u{1e}",
        )
        .await;
    assert_eq!(socket.recv().await, ServerFrame::completion("1", "2"));
}

/// Text split anywhere, even inside a character, and pings between fragments: the
/// message arrives whole.
#[tokio::test]
async fn fragments_split_inside_characters_and_interleaved_pings_are_reassembled() {
    let server = TestServer::start(HubOptions::default()).await;
    let mut socket = json_socket(&server).await;
    let message =
        "{\"type\":1,\"invocationId\":\"1\",\"target\":\"Echo\",\"arguments\":[\"é€😀\"]}\u{1e}";
    let bytes = message.as_bytes();
    // One byte per frame: every multi-byte character is split across frames.
    socket.send(TEXT, &bytes[..1]).await;
    for (i, byte) in bytes[1..].iter().enumerate() {
        let fin = if i == bytes.len() - 2 { FIN } else { 0 };
        socket.send(fin | CONTINUATION, &[*byte]).await;
        if i == 40 {
            socket.send(FIN | PING, b"mid").await;
        }
    }
    // The pong and the completion may leave in either order (both were asked for by
    // the same read).
    let mut frames = vec![socket.recv().await, socket.recv().await];
    frames.sort_by_key(|frame| format!("{frame:?}"));
    let mut expected = vec![
        ServerFrame::pong(b"mid"),
        ServerFrame::completion("1", "\"é€😀\""),
    ];
    expected.sort_by_key(|frame| format!("{frame:?}"));
    assert_eq!(frames, expected);
    // Empty frames, and a hub message split over two WebSocket messages, are fine too.
    socket.send(TEXT, b"").await;
    socket
        .send(FIN | CONTINUATION, b"{\"type\":1,\"invocationId\":\"2\",")
        .await;
    socket
        .send_text("\"target\":\"Add\",\"arguments\":[2,2]}\u{1e}")
        .await;
    assert_eq!(socket.recv().await, ServerFrame::completion("2", "4"));
}

/// Each protocol violation closes the connection with its RFC 6455 status code, and
/// nothing else.
#[tokio::test]
async fn protocol_violations_close_with_their_status_code() {
    let server = TestServer::start(HubOptions::default()).await;
    let invalid_utf8_split = {
        let mut bytes = frame(
            TEXT,
            b"{\"type\":1,\"target\":\"Echo\",\"arguments\":[\"\xE2\x82",
            Some(MASK),
        );
        bytes.extend(frame(FIN | CONTINUATION, b"\x28\"]}\x1e", Some(MASK)));
        bytes
    };
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "unmasked frame",
            frame(FIN | TEXT, b"{\"type\":6}\x1e", None),
            1002,
        ),
        (
            "invalid UTF-8 split across frames",
            invalid_utf8_split,
            1007,
        ),
        (
            "text ending inside a character",
            frame(FIN | TEXT, b"\xF0\x9F\x98", Some(MASK)),
            1007,
        ),
        (
            "reserved bit",
            frame(FIN | 0x40 | TEXT, b"{\"type\":6}\x1e", Some(MASK)),
            1002,
        ),
        ("unknown opcode", frame(FIN | 0x3, b"", Some(MASK)), 1002),
        (
            "continuation with no message",
            frame(FIN | CONTINUATION, b"{}", Some(MASK)),
            1002,
        ),
        (
            "new message inside a message",
            [
                frame(TEXT, b"{\"type\":6}", Some(MASK)),
                frame(FIN | BINARY, b"\x1e", Some(MASK)),
            ]
            .concat(),
            1002,
        ),
        ("fragmented ping", frame(PING, b"", Some(MASK)), 1002),
        (
            "ping over 125 bytes",
            frame(FIN | PING, &[b'p'; 126], Some(MASK)),
            1002,
        ),
        (
            "close with a one-byte payload",
            frame(FIN | CLOSE, b"\x03", Some(MASK)),
            1002,
        ),
    ];
    for (case, bytes, code) in cases {
        let mut socket = json_socket(&server).await;
        socket.send_raw(&bytes).await;
        assert_eq!(socket.recv().await, ServerFrame::close(code), "{case}");
        assert_eq!(socket.recv().await, ServerFrame::End, "{case}");
    }
    // Other connections never notice.
    let mut bystander = server.json_client().await;
    assert_eq!(
        bystander.invoke_json("1", "Add", "[1,2]").await,
        "{\"type\":3,\"invocationId\":\"1\",\"result\":3}\u{1e}"
    );
}

/// A client's Close frame is answered with a Close frame (1000), then the server ends.
#[tokio::test]
async fn a_close_frame_is_answered_and_the_connection_ends() {
    let server = TestServer::start(HubOptions::default()).await;
    let mut socket = json_socket(&server).await;
    socket
        .send(FIN | CLOSE, &[0x03, 0xE8, b'b', b'y', b'e'])
        .await;
    assert_eq!(socket.recv().await, ServerFrame::close(1000));
    assert_eq!(socket.recv().await, ServerFrame::End);
}
