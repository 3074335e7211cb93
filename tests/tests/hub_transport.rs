//! The HTTP side of a hub: negotiate, connection tokens, identity, the transports this
//! server refuses, and graceful shutdown, against a real server over plain HTTP/1.1 and
//! real WebSockets.

mod hub_support;

use std::time::Duration;

use bytes::BytesMut;
use hub_protocol::{Decoder, HubMessage, Protocol};
use hub_server::HubOptions;
use hub_support::{Frame, HUB_PATH, RawClient, TestServer, http, wait_for_connections};

#[tokio::test]
async fn negotiate_offers_websockets_with_a_secret_token() {
    let server = TestServer::start(HubOptions::default()).await;
    let response = server.negotiate_response().await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/json"));
    let body: serde_json::Value = serde_json::from_str(&response.body).unwrap();
    let id = body["connectionId"].as_str().unwrap();
    let token = body["connectionToken"].as_str().unwrap();
    assert_ne!(id, token, "the token must not be the public id");
    // 128 random bits each, and the id names its node (`<22 characters>.<12 hex digits>`).
    assert_eq!((id.len(), token.len()), (35, 22));
    let tag = backplane_core::ConnectionId::from(id).node_tag();
    assert!(tag.is_some(), "{id} carries a node tag");
    assert_eq!(
        body,
        serde_json::json!({
            "negotiateVersion": 1,
            "connectionId": id,
            "connectionToken": token,
            "availableTransports": [
                {"transport": "WebSockets", "transferFormats": ["Text", "Binary"]},
                {"transport": "ServerSentEvents", "transferFormats": ["Text"]},
                {"transport": "LongPolling", "transferFormats": ["Text", "Binary"]},
            ]
        })
    );
    // Every negotiate issues fresh values.
    let (second_id, second_token) = server.negotiate().await;
    assert_ne!((second_id.as_str(), second_token.as_str()), (id, token));
}

#[tokio::test]
async fn negotiate_with_stateful_reconnect_off_says_nothing_about_it() {
    let server = TestServer::start(HubOptions::default().stateful_reconnect(false)).await;
    let response = http(
        server.addr,
        &format!("POST {HUB_PATH}/negotiate?negotiateVersion=1&useStatefulReconnect=true HTTP/1.1"),
        &[],
    )
    .await;
    assert_eq!(response.status, 200);
    let body: serde_json::Value = serde_json::from_str(&response.body).unwrap();
    assert!(body.get("useStatefulReconnect").is_none(), "{body}");
    assert!(body["connectionToken"].is_string());
}

#[tokio::test]
async fn negotiate_is_post_only() {
    // Negotiate versions (0, 1, newer, invalid) are tested in hub_negotiate_versions.rs.
    let server = TestServer::start(HubOptions::default()).await;
    let response = http(
        server.addr,
        &format!("GET {HUB_PATH}/negotiate?negotiateVersion=1 HTTP/1.1"),
        &[],
    )
    .await;
    assert_eq!(response.status, 405);
}

#[tokio::test]
async fn a_negotiated_connection_gets_the_negotiated_id() {
    let server = TestServer::start(HubOptions::default()).await;
    let (id, token) = server.negotiate().await;
    let mut client = RawClient::connect(&server.ws_url(&format!("id={token}"))).await;
    client.handshake_json().await;
    assert_eq!(
        client.invoke_json("1", "ConnectionId", "[]").await,
        format!("{{\"type\":3,\"invocationId\":\"1\",\"result\":\"{id}\"}}\u{1e}")
    );
    // Without negotiate, the server makes up an id of the same kind.
    let mut skipped = server.json_client().await;
    let reply = skipped.invoke_json("1", "ConnectionId", "[]").await;
    let value: serde_json::Value = serde_json::from_str(reply.trim_end_matches('\u{1e}')).unwrap();
    let skipped_id = value["result"].as_str().unwrap();
    assert_eq!(skipped_id.len(), 35);
    assert_eq!(
        backplane_core::ConnectionId::from(skipped_id).node_tag(),
        backplane_core::ConnectionId::from(id.as_str()).node_tag(),
        "ids of one server carry its tag"
    );
    assert_ne!(skipped_id, id);
}

#[tokio::test]
async fn unknown_tokens_get_404_and_tokens_in_use_get_409() {
    let server = TestServer::start(HubOptions::default()).await;
    let refused = RawClient::try_connect(&server.ws_url("id=not-a-token"), &[])
        .await
        .err()
        .expect("refused");
    assert!(
        refused.starts_with("404 No connection with that ID"),
        "{refused}"
    );
    // The public connection id is not a token.
    let (id, token) = server.negotiate().await;
    let refused = RawClient::try_connect(&server.ws_url(&format!("id={id}")), &[])
        .await
        .err()
        .expect("refused");
    assert!(refused.starts_with("404 "), "{refused}");

    let mut first = RawClient::connect(&server.ws_url(&format!("id={token}"))).await;
    first.handshake_json().await;
    let refused = RawClient::try_connect(&server.ws_url(&format!("id={token}")), &[])
        .await
        .err()
        .expect("refused");
    assert!(
        refused.starts_with("409 Connection ID already in use"),
        "{refused}"
    );
    // The first connection is undisturbed.
    assert_eq!(
        first.invoke_json("1", "Add", "[1,1]").await,
        "{\"type\":3,\"invocationId\":\"1\",\"result\":2}\u{1e}"
    );
    // Once its connection ended, the token is spent.
    first.close().await;
    wait_for_connections(&server.hub, 0).await;
    let refused = RawClient::try_connect(&server.ws_url(&format!("id={token}")), &[])
        .await
        .err()
        .expect("refused");
    assert!(refused.starts_with("404 "), "{refused}");
}

#[tokio::test]
async fn unclaimed_tokens_expire() {
    // Real time, but short: the expiry itself is unit-tested with paused time in hub-server.
    let options = HubOptions::default().negotiate_timeout(Duration::from_secs(1));
    let server = TestServer::start(options).await;
    let (_, fresh) = server.negotiate().await;
    let (_, stale) = server.negotiate().await;
    let mut client = RawClient::connect(&server.ws_url(&format!("id={fresh}"))).await;
    client.handshake_json().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let refused = RawClient::try_connect(&server.ws_url(&format!("id={stale}")), &[])
        .await
        .err()
        .expect("refused");
    assert!(refused.starts_with("404 "), "{refused}");
    // The connection that claimed its token in time is unaffected by the expiry.
    assert_eq!(
        client.invoke_json("1", "Add", "[1,1]").await,
        "{\"type\":3,\"invocationId\":\"1\",\"result\":2}\u{1e}"
    );
}

#[tokio::test]
async fn the_user_id_comes_from_the_bearer_header_or_the_access_token_query() {
    let server = TestServer::start(HubOptions::default()).await;
    let mut header =
        RawClient::try_connect(&server.ws_url(""), &[("Authorization", "Bearer alice")])
            .await
            .unwrap();
    header.handshake_json().await;
    assert_eq!(
        header.invoke_json("1", "WhoAmI", "[]").await,
        "{\"type\":3,\"invocationId\":\"1\",\"result\":\"alice\"}\u{1e}"
    );
    let (_, token) = server.negotiate().await;
    let mut query =
        RawClient::connect(&server.ws_url(&format!("id={token}&access_token=b%C3%B6b%20b"))).await;
    query.handshake_json().await;
    assert_eq!(
        query.invoke_json("1", "WhoAmI", "[]").await,
        "{\"type\":3,\"invocationId\":\"1\",\"result\":\"böb b\"}\u{1e}"
    );
    wait_for_connections(&server.hub, 2).await;

    // User targeting reaches every connection of that user, and only them.
    let mut alice_again = RawClient::try_connect(&server.ws_url("access_token=alice"), &[])
        .await
        .unwrap();
    alice_again.handshake_json().await;
    wait_for_connections(&server.hub, 3).await;
    assert_eq!(
        query
            .invoke_json("2", "SendToUser", "[\"alice\",\"psst\"]")
            .await,
        "{\"type\":3,\"invocationId\":\"2\"}\u{1e}"
    );
    let expected = "{\"type\":1,\"target\":\"Direct\",\"arguments\":[\"psst\"]}\u{1e}";
    assert_eq!(header.recv_text().await, expected);
    assert_eq!(alice_again.recv_text().await, expected);
    // Bob got only his completion: his next frame is the answer to this.
    assert_eq!(
        query.invoke_json("3", "Add", "[0,0]").await,
        "{\"type\":3,\"invocationId\":\"3\",\"result\":0}\u{1e}"
    );
}

/// Server-Sent Events and long polling have tests of their own (hub_http_transports.rs);
/// here, only that a request refused before any transport claimed the token leaves it
/// usable.
#[tokio::test]
async fn refused_requests_leave_the_token_usable() {
    let server = TestServer::start(HubOptions::default()).await;
    let (_, token) = server.negotiate().await;
    for request in [
        format!("POST {HUB_PATH}?id={token} HTTP/1.1"),
        format!("DELETE {HUB_PATH}?id={token} HTTP/1.1"),
    ] {
        let response = http(server.addr, &request, &[]).await;
        assert_eq!(response.status, 404, "{request}");
    }
    let other = http(
        server.addr,
        &format!("PUT {HUB_PATH} HTTP/1.1"),
        &["Content-Length: 0"],
    )
    .await;
    assert_eq!(other.status, 405);
    let mut client = RawClient::connect(&server.ws_url(&format!("id={token}"))).await;
    client.handshake_json().await;
}

#[tokio::test]
async fn graceful_shutdown_sends_close_to_every_client() {
    let server = TestServer::start(HubOptions::default()).await;
    let mut json = server.json_client().await;
    let mut msgpack = RawClient::connect(&server.ws_url("")).await;
    msgpack.handshake_msgpack().await;
    wait_for_connections(&server.hub, 2).await;

    tokio::time::timeout(Duration::from_secs(10), server.hub.shutdown())
        .await
        .expect("shutdown completes once every connection has closed");
    assert_eq!(server.hub.connection_count(), 0);

    assert_eq!(
        json.recv().await,
        Frame::Text("{\"type\":7,\"allowReconnect\":true}\u{1e}".into())
    );
    assert_eq!(json.recv().await, Frame::Closed);
    let mut buf = BytesMut::from(&msgpack.recv_binary().await[..]);
    let message = Decoder::new(Protocol::MessagePack, 1024)
        .decode(&mut buf)
        .unwrap()
        .unwrap();
    let HubMessage::Close(close) = message else {
        panic!("expected Close, got {message:?}");
    };
    assert_eq!((close.error, close.allow_reconnect), (None, true));
    assert_eq!(msgpack.recv().await, Frame::Closed);

    // A server that is shutting down takes no new connections.
    let response = server.negotiate_response().await;
    assert_eq!(response.status, 503);
    let refused = RawClient::try_connect(&server.ws_url(""), &[])
        .await
        .err()
        .expect("refused");
    assert!(refused.starts_with("503 "), "{refused}");
}
