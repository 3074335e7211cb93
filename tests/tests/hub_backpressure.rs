//! A client that stops reading must not slow anyone else down or make the server hold
//! unbounded memory: its bounded send queue overflows and it alone is disconnected.

mod hub_support;

use std::time::Duration;

use hub_server::HubOptions;
use hub_support::{Frame, RawClient, TestServer, broadcast, wait_for_connections};

/// Bytes in each broadcast message: large, so the slow client's socket buffers (several
/// MiB on loopback) fill after a few hundred messages.
const PAYLOAD: usize = 16 * 1024;

/// Broadcasts sent: comfortably past what the slow client's socket buffers and queue hold.
const MESSAGES: usize = 800;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_disconnected_and_others_keep_receiving() {
    // The default bound (1 MiB): the broadcasts add up to 12.5 MiB. The reader only
    // reads, so it would trip the client timeout on a slow machine.
    let options = HubOptions::default().client_timeout(Duration::from_secs(600));
    // The only test of this binary that installs the (process-wide) metrics recorder.
    let metrics = hub_server::metrics::install().expect("the metrics recorder");
    let server = TestServer::start(options).await;
    let mut slow = RawClient::connect_with_small_buffer(server.addr, &server.ws_url("")).await;
    slow.handshake_json().await;
    let mut sender = server.json_client().await;
    let mut reader = server.json_client().await;
    wait_for_connections(&server.hub, 3).await;

    // The reader reads everything, in its own task, and reports what it saw.
    let reading = tokio::spawn(async move {
        let mut received = 0;
        while received < MESSAGES {
            let text = reader.recv_text_skipping_pings().await;
            let prefix =
                format!("{{\"type\":1,\"target\":\"Broadcast\",\"arguments\":[\"{received:04}");
            assert!(
                text.starts_with(&prefix),
                "message {received} out of order: {}",
                &text[..text.len().min(200)]
            );
            assert_eq!(text.len(), prefix.len() - 4 + PAYLOAD + "\"]}\u{1e}".len());
            received += 1;
        }
        (received, reader)
    });

    // The slow client never reads again. The sender broadcasts one message at a time,
    // each acknowledged by its completion: the server never waits for the slow client.
    let filler = "x".repeat(PAYLOAD - 4);
    for sequence in 0..MESSAGES {
        let reply = sender
            .invoke_json("b", "Broadcast", &format!("[\"{sequence:04}{filler}\"]"))
            .await;
        // The sender's own copy of each broadcast arrives before or after the completion.
        let reply = if reply.starts_with("{\"type\":1,") {
            sender.recv_text_skipping_pings().await
        } else {
            sender.recv_text_skipping_pings().await;
            reply
        };
        assert_eq!(reply, "{\"type\":3,\"invocationId\":\"b\"}\u{1e}");
    }

    let (received, _reader) = tokio::time::timeout(Duration::from_secs(60), reading)
        .await
        .expect("the reader receives every message")
        .expect("reader task");
    assert_eq!(received, MESSAGES);
    // The slow client was dropped; the other two are still there.
    wait_for_connections(&server.hub, 2).await;
    // What the slow client eventually reads is what fit in its buffers, then the end: the
    // server neither waited for it nor sent it everything.
    let mut slow_received = 0;
    loop {
        match slow.recv_within(Duration::from_secs(30)).await {
            Frame::Text(_) => slow_received += 1,
            Frame::Closed => break,
            Frame::Binary(_) => panic!("unexpected binary frame"),
        }
    }
    assert!(
        slow_received < MESSAGES,
        "the slow client got {slow_received} of {MESSAGES} messages"
    );
    // Operators see it: the refused message is counted.
    let scrape = metrics.render();
    let drops = scrape
        .lines()
        .find_map(|line| line.strip_prefix("signalr_send_queue_drops_total "))
        .and_then(|value| value.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no drops counter in:\n{scrape}"));
    assert!(drops >= 1.0, "{drops} drops");
    assert_eq!(
        sender.invoke_json("1", "Add", "[1,2]").await,
        "{\"type\":3,\"invocationId\":\"1\",\"result\":3}\u{1e}"
    );
}

#[tokio::test]
async fn a_method_bursting_to_its_caller_does_not_overflow_the_callers_queue() {
    // Far more messages than the queue holds, sent to the caller by one hub method in a
    // tight loop. The method runs in the caller's own connection task, so the caller's
    // writer only drains the queue because every send yields to it.
    let server = TestServer::start(HubOptions::default().send_queue_bytes(1024)).await;
    let mut caller = server.json_client().await;
    caller
        .send_text("{\"type\":1,\"invocationId\":\"f\",\"target\":\"FloodCaller\",\"arguments\":[2000,10]}\u{1e}")
        .await;
    for sequence in 0..2000 {
        let text = caller.recv_text_skipping_pings().await;
        let prefix = format!("{{\"type\":1,\"target\":\"Flood\",\"arguments\":[{sequence},");
        assert!(text.starts_with(&prefix), "{text}");
    }
    assert_eq!(
        caller.recv_text_skipping_pings().await,
        "{\"type\":3,\"invocationId\":\"f\",\"result\":2000}\u{1e}"
    );
    assert_eq!(server.hub.connection_count(), 1);
}

/// The connect storm case: thousands of tiny broadcasts in a burst to a client that reads
/// them a little later than they are sent. A queue bounded by frame count (1,024 in the
/// past) dropped such clients as slow readers; bounded by bytes, the default holds them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_tiny_frames_does_not_drop_a_client_that_reads_late() {
    const BURST: usize = 5_000;
    let server = TestServer::start(HubOptions::default()).await;
    let mut late = RawClient::connect_with_small_buffer(server.addr, &server.ws_url("")).await;
    late.handshake_json().await;
    let mut sender = server.json_client().await;
    wait_for_connections(&server.hub, 2).await;

    // Fire-and-forget broadcasts, many per WebSocket message, as a busy client sends.
    sender.send_broadcasts(BURST, 500).await;
    // The sender's own copies show the server has fanned out the whole burst while the
    // late client has not read a byte.
    for i in 0..BURST {
        let text = sender.recv_text_skipping_pings().await;
        assert!(
            text.contains(&format!("[\"{i}\"]")),
            "sender copy {i}: {text}"
        );
    }
    for i in 0..BURST {
        let text = tokio::time::timeout(Duration::from_secs(30), late.recv_text_skipping_pings())
            .await
            .unwrap_or_else(|_| panic!("the late reader got {i} of {BURST} and no more"));
        assert_eq!(text, broadcast(i));
    }
    assert_eq!(
        server.hub.connection_count(),
        2,
        "a healthy client was dropped"
    );
}
