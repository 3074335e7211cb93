//! Keep-alive, the client timeout and the handshake timeout, with the ASP.NET Core defaults
//! (15 s, 30 s, 15 s), on tokio's paused clock: time only moves when every task waits, so
//! the tests take milliseconds and the instants they observe are exact. Clients connect
//! through in-memory pipes (see `TestServer::connect_in_memory`) so no I/O is in flight
//! when the clock moves.

mod hub_support;

use std::time::Duration;

use hub_server::HubOptions;
use hub_support::{Frame, TestServer, wait_for_connections};
use tokio::time::Instant;

const PING: &str = "{\"type\":6}\u{1e}";

#[tokio::test(start_paused = true)]
async fn an_idle_server_sends_a_ping_every_keep_alive_interval() {
    let server = TestServer::start(HubOptions::default()).await;
    let mut client = server.connect_in_memory("").await;
    client.handshake_json().await;
    let start = Instant::now();
    // Nothing before 15 s...
    let early = tokio::time::timeout(Duration::from_millis(14_900), client.recv()).await;
    assert!(
        early.is_err(),
        "nothing is sent before the keep-alive interval: {early:?}"
    );
    // ...then a Ping at 15 s, and again 15 s later while the client keeps pinging back.
    assert_eq!(client.recv().await, Frame::Text(PING.into()));
    assert_eq!(start.elapsed(), Duration::from_secs(15));
    client.send_text(PING).await;
    assert_eq!(client.recv().await, Frame::Text(PING.into()));
    assert_eq!(start.elapsed(), Duration::from_secs(30));
}

#[tokio::test(start_paused = true)]
async fn sending_resets_the_keep_alive_timer() {
    let server = TestServer::start(HubOptions::default()).await;
    let mut client = server.connect_in_memory("").await;
    client.handshake_json().await;
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    // A completion at 10 s is traffic: the next Ping comes 15 s after it.
    assert_eq!(
        client.invoke_json("1", "Add", "[1,1]").await,
        "{\"type\":3,\"invocationId\":\"1\",\"result\":2}\u{1e}"
    );
    assert_eq!(client.recv().await, Frame::Text(PING.into()));
    assert_eq!(start.elapsed(), Duration::from_secs(25));
}

#[tokio::test(start_paused = true)]
async fn a_silent_client_is_closed_after_the_client_timeout() {
    let server = TestServer::start(HubOptions::default()).await;
    let mut bystander = server.connect_in_memory("").await;
    bystander.handshake_json().await;
    let mut client = server.connect_in_memory("").await;
    client.handshake_json().await;
    let start = Instant::now();
    // The bystander keeps talking; the client says nothing after its handshake.
    let chatter = tokio::spawn(async move {
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(10)).await;
            bystander.send_text(PING).await;
        }
        bystander
    });
    assert_eq!(client.recv().await, Frame::Text(PING.into()));
    // The second Ping is due at the same instant as the timeout, so it may come first.
    assert_eq!(
        Frame::Text(client.recv_text_skipping_pings().await),
        Frame::Text(
            "{\"type\":7,\"error\":\"Connection closed with an error. No message was received from the client within the client timeout of 30s.\",\"allowReconnect\":true}\u{1e}"
                .into()
        )
    );
    assert_eq!(start.elapsed(), Duration::from_secs(30));
    assert_eq!(client.recv().await, Frame::Closed);
    let mut bystander = chatter.await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(50));
    // The bystander, which kept sending, is still connected.
    assert_eq!(
        bystander.invoke_json("1", "Add", "[2,2]").await,
        "{\"type\":3,\"invocationId\":\"1\",\"result\":4}\u{1e}"
    );
    wait_for_connections(&server.hub, 1).await;
}

#[tokio::test(start_paused = true)]
async fn timeouts_are_configurable() {
    let options = HubOptions::default()
        .keep_alive_interval(Duration::from_secs(2))
        .client_timeout(Duration::from_secs(5));
    let server = TestServer::start(options).await;
    let mut client = server.connect_in_memory("").await;
    client.handshake_json().await;
    let start = Instant::now();
    assert_eq!(client.recv().await, Frame::Text(PING.into()));
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(client.recv().await, Frame::Text(PING.into()));
    assert_eq!(start.elapsed(), Duration::from_secs(4));
    let close = client.recv_text().await;
    assert!(close.starts_with("{\"type\":7,\"error\":"), "{close}");
    assert!(close.contains("client timeout of 5s"), "{close}");
    assert_eq!(start.elapsed(), Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn a_client_that_never_handshakes_is_dropped_after_the_handshake_timeout() {
    let server = TestServer::start(HubOptions::default()).await;
    let mut client = server.connect_in_memory("").await;
    let start = Instant::now();
    assert_eq!(
        client.recv().await,
        Frame::Text(
            "{\"error\":\"Handshake was not received within the handshake timeout of 15s.\"}\u{1e}"
                .into()
        )
    );
    assert_eq!(start.elapsed(), Duration::from_secs(15));
    assert_eq!(client.recv().await, Frame::Closed);
    assert_eq!(server.hub.connection_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_partial_handshake_does_not_extend_the_handshake_timeout() {
    let server = TestServer::start(HubOptions::default()).await;
    let mut client = server.connect_in_memory("").await;
    let start = Instant::now();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(4)).await;
        client.send_text(" ").await;
    }
    assert!(
        client
            .recv_text()
            .await
            .starts_with("{\"error\":\"Handshake was not received")
    );
    assert_eq!(start.elapsed(), Duration::from_secs(15));
}
