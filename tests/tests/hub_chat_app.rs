//! The chat application the `hub-server` binary serves (`hub_server::chat::router`), in
//! process: `GET /`, `GET /health`, and CORS as browsers need it.

mod hub_support;

use hub_server::chat;
use hub_support::{RawClient, TestServer, http, wait_for_connections};
use serde_json::Value;

async fn chat_server() -> TestServer {
    let hub = chat::hub_builder().build().await.expect("chat hub");
    let router = chat::router(&hub, chat::ServerInfo::new("node-7", "memory"));
    TestServer::serve(hub, router).await
}

#[tokio::test]
async fn root_answers_a_short_text() {
    let server = chat_server().await;
    let response = http(server.addr, "GET / HTTP/1.1", &[]).await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.body,
        "SignalR chat server (Rust). Hub: /chathub. Health: /health.\n"
    );
}

#[tokio::test]
async fn health_reports_server_time_connections_and_backplane() {
    let server = chat_server().await;
    let mut client = RawClient::connect(&format!("ws://{}/chathub", server.addr)).await;
    client.handshake_json().await;
    wait_for_connections(&server.hub, 1).await;
    let response = http(server.addr, "GET /health HTTP/1.1", &[]).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/json"));
    let mut body: Value = serde_json::from_str(&response.body).unwrap();
    let time = body["time"].take();
    let time = time.as_str().expect("a timestamp");
    // RFC 3339, UTC, milliseconds: 2025-01-31T12:00:00.000Z
    assert_eq!(time.len(), 24, "{time}");
    assert!(time.ends_with('Z') && time.as_bytes()[10] == b'T', "{time}");
    assert_eq!(
        body,
        serde_json::json!({
            "status": "healthy",
            "server": "node-7",
            "time": null,
            "hub": "ChatHub",
            "connections": 1,
            "backplane": {
                "kind": "memory",
                "status": "connected",
                "envelopesReceived": 0,
                "reconnects": 0,
                "envelopesLost": 0
            }
        })
    );
}

#[tokio::test]
async fn cors_mirrors_the_origin_and_allows_credentials() {
    let server = chat_server().await;
    // The preflight a browser sends before the official client's negotiate POST.
    let preflight = http(
        server.addr,
        "OPTIONS /chathub/negotiate?negotiateVersion=1 HTTP/1.1",
        &[
            "Origin: http://app.example:8080",
            "Access-Control-Request-Method: POST",
            "Access-Control-Request-Headers: x-requested-with, x-signalr-user-agent, authorization",
        ],
    )
    .await;
    assert_eq!(preflight.status, 200);
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("http://app.example:8080")
    );
    assert_eq!(
        preflight.header("access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(
        preflight.header("access-control-allow-methods"),
        Some("POST")
    );
    assert_eq!(
        preflight.header("access-control-allow-headers"),
        Some("x-requested-with, x-signalr-user-agent, authorization")
    );
    // And the request itself.
    let negotiate = http(
        server.addr,
        "POST /chathub/negotiate?negotiateVersion=1 HTTP/1.1",
        &["Origin: http://other.example"],
    )
    .await;
    assert_eq!(negotiate.status, 200);
    assert_eq!(
        negotiate.header("access-control-allow-origin"),
        Some("http://other.example")
    );
    assert_eq!(
        negotiate.header("access-control-allow-credentials"),
        Some("true")
    );
}
