//! Negotiate versions as ASP.NET Core answers them, over plain HTTP/1.1 and real
//! WebSockets: version 0 (no `negotiateVersion`: older .NET and Java clients, the Python
//! `signalrcore`), version 1, newer versions, and versions that are not numbers.

mod hub_support;

use hub_server::HubOptions;
use hub_support::{HUB_PATH, RawClient, TestServer, http, wait_for_connections};
use serde_json::{Value, json};

/// `POST {hub}/negotiate{query}`: the status and the JSON body.
async fn negotiate(server: &TestServer, query: &str) -> Value {
    let response = http(
        server.addr,
        &format!("POST {HUB_PATH}/negotiate{query} HTTP/1.1"),
        &[],
    )
    .await;
    assert_eq!(response.status, 200, "{query}: {}", response.body);
    assert_eq!(
        response.header("content-type"),
        Some("application/json"),
        "{query}"
    );
    serde_json::from_str(&response.body).expect("negotiate answers JSON")
}

const TRANSPORTS: &str = r#"[{"transport":"WebSockets","transferFormats":["Text","Binary"]},{"transport":"ServerSentEvents","transferFormats":["Text"]},{"transport":"LongPolling","transferFormats":["Text","Binary"]}]"#;

#[tokio::test]
async fn version_0_answers_the_connection_id_which_works_as_the_id_exactly_once() {
    let server = TestServer::start(HubOptions::default()).await;
    for query in ["", "?negotiateVersion=0"] {
        let body = negotiate(&server, query).await;
        let id = body["connectionId"]
            .as_str()
            .expect("connectionId")
            .to_owned();
        assert_eq!(id.len(), 22 + 1 + 12, "128 random bits and the node tag");
        // No connectionToken: a version 0 client would not read it.
        assert_eq!(
            body,
            json!({
                "negotiateVersion": 0,
                "connectionId": id,
                "availableTransports": serde_json::from_str::<Value>(TRANSPORTS).unwrap(),
            }),
            "{query}"
        );

        let url = server.ws_url(&format!("id={id}"));
        let mut client = RawClient::connect(&url).await;
        client.handshake_json().await;
        // The connection has the id negotiate announced.
        assert_eq!(
            client.invoke_json("1", "ConnectionId", "[]").await,
            format!("{{\"type\":3,\"invocationId\":\"1\",\"result\":\"{id}\"}}\u{1e}")
        );
        // A second WebSocket with the same id while the first is open: 409.
        let refused = RawClient::try_connect(&url, &[])
            .await
            .err()
            .expect("a second WebSocket for the id is refused");
        assert!(
            refused.starts_with("409 Connection ID already in use"),
            "{refused}"
        );
        // The first connection is undisturbed.
        assert_eq!(
            client.invoke_json("2", "Add", "[2,3]").await,
            "{\"type\":3,\"invocationId\":\"2\",\"result\":5}\u{1e}"
        );
        // Once it ended, the id is spent: 404.
        client.close().await;
        wait_for_connections(&server.hub, 0).await;
        let refused = RawClient::try_connect(&url, &[])
            .await
            .err()
            .expect("a spent id is refused");
        assert!(
            refused.starts_with("404 No connection with that ID"),
            "{refused}"
        );
    }
}

#[tokio::test]
async fn a_connection_id_that_negotiate_did_not_issue_is_refused() {
    // Version 0 tokens are connection ids, but only ones this server issued and nobody
    // claimed: an id made up by the client, or one that came from a version 1 negotiate
    // (whose token is a separate secret), gets 404.
    let server = TestServer::start(HubOptions::default()).await;
    let made_up = RawClient::try_connect(&server.ws_url("id=AAAAAAAAAAAAAAAAAAAAAA"), &[])
        .await
        .err()
        .expect("refused");
    assert!(made_up.starts_with("404 "), "{made_up}");
    let version_1 = negotiate(&server, "?negotiateVersion=1").await;
    let id = version_1["connectionId"].as_str().unwrap();
    let refused = RawClient::try_connect(&server.ws_url(&format!("id={id}")), &[])
        .await
        .err()
        .expect("refused");
    assert!(refused.starts_with("404 "), "{refused}");
}

#[tokio::test]
async fn versions_1_and_newer_get_a_version_1_answer_with_a_secret_token() {
    let server = TestServer::start(HubOptions::default()).await;
    // The parameter's name is matched in any case, as ASP.NET Core matches it.
    for query in [
        "?negotiateVersion=1",
        "?negotiateVersion=2",
        "?NegotiateVersion=7",
        "?negotiateversion=1",
    ] {
        let body = negotiate(&server, query).await;
        let id = body["connectionId"].as_str().expect("connectionId");
        let token = body["connectionToken"].as_str().expect("connectionToken");
        assert_ne!(id, token, "{query}");
        assert_eq!(body["negotiateVersion"], 1, "{query}");
        let mut client = RawClient::connect(&server.ws_url(&format!("id={token}"))).await;
        client.handshake_json().await;
        client.close().await;
    }
}

#[tokio::test]
async fn versions_that_are_not_numbers_get_a_clear_error() {
    let server = TestServer::start(HubOptions::default()).await;
    // Status 200 with an error field, as ASP.NET Core answers: every client shows the
    // application that text.
    for (query, value) in [
        ("?negotiateVersion=abc", "abc"),
        ("?negotiateVersion=", ""),
        ("?negotiateVersion=1.5", "1.5"),
        ("?negotiateVersion=1&negotiateVersion=1", "1,1"),
    ] {
        assert_eq!(
            negotiate(&server, query).await,
            json!({"error": format!(
                "The client requested an invalid negotiate version '{value}': negotiateVersion must be a whole number, 1 for a connection token (SignalR clients 3.1 and newer) or 0 (older clients)."
            )}),
            "{query}"
        );
    }
    assert_eq!(
        negotiate(&server, "?negotiateVersion=-1").await,
        json!({"error": "The client requested negotiate version '-1', but the server does not support this version: send negotiateVersion=1 (or 0, or leave it out)."})
    );
}
