//! The chat application the `hub-server` binary serves (`hub_server::chat::router`), in
//! process: `GET /` (text or the chat page), the page's files, `GET /health`, and CORS as
//! browsers need it.

mod hub_support;

use hub_server::{HubOptions, chat};
use hub_support::cluster::ServedCluster;
use hub_support::{RawClient, TestServer, health, http, wait_for_connections};
use serde_json::{Value, json};

async fn chat_server() -> TestServer {
    // The origins the CORS tests use are listed (`--cors-origins`); by default only the
    // server's own origin is allowed (hub-server/tests/security.rs tests refusals).
    let options = hub_server::HubOptions::default().allowed_origins(
        hub_server::AllowedOrigins::parse("http://app.example:8080, http://example.com"),
    );
    let hub = chat::hub_builder()
        .options(options)
        .build()
        .await
        .expect("chat hub");
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
async fn root_answers_text_to_plain_text_clients_and_the_page_to_browsers() {
    let server = chat_server().await;
    let text = http(server.addr, "GET / HTTP/1.1", &["Accept: text/plain"]).await;
    assert_eq!(text.status, 200);
    assert!(text.body.starts_with("SignalR chat server (Rust)."));
    assert_eq!(text.header("vary"), Some("accept"));

    let accept = "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
    let page = http(server.addr, "GET / HTTP/1.1", &[accept]).await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(page.header("vary"), Some("accept"));
    assert!(page.body.contains("<title>Chat</title>"), "{}", page.body);
    let policy = page.header("content-security-policy").expect("a CSP");
    assert!(policy.contains("default-src 'self'"), "{policy}");
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert!(!policy.contains("unsafe-inline"), "{policy}");
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(page.header("cache-control"), Some("no-cache"));
    assert!(page.header("etag").is_some());
}

#[tokio::test]
async fn page_files_are_served_with_their_types_and_revalidated_by_etag() {
    let server = chat_server().await;
    let bundle = format!("/assets/signalr-{}.min.js", chat::SIGNALR_CLIENT_VERSION);
    let files = [
        (
            "/assets/chat.js",
            "text/javascript; charset=utf-8",
            "no-cache",
        ),
        ("/assets/chat.css", "text/css; charset=utf-8", "no-cache"),
        ("/assets/favicon.svg", "image/svg+xml", "no-cache"),
        (
            bundle.as_str(),
            "text/javascript; charset=utf-8",
            "public, max-age=31536000, immutable",
        ),
    ];
    for (path, content_type, cache_control) in files {
        let response = http(server.addr, &format!("GET {path} HTTP/1.1"), &[]).await;
        assert_eq!(response.status, 200, "{path}");
        assert_eq!(
            response.header("content-type"),
            Some(content_type),
            "{path}"
        );
        assert_eq!(
            response.header("cache-control"),
            Some(cache_control),
            "{path}"
        );
        assert_eq!(response.header("x-content-type-options"), Some("nosniff"));
        assert!(!response.body.is_empty(), "{path}");
        let etag = response.header("etag").expect("an ETag").to_owned();

        // The browser's copy is still good: no body.
        let again = http(
            server.addr,
            &format!("GET {path} HTTP/1.1"),
            &[&format!("If-None-Match: {etag}")],
        )
        .await;
        assert_eq!(again.status, 304, "{path}");
        assert_eq!(again.body, "", "{path}");
        assert_eq!(again.header("etag"), Some(etag.as_str()), "{path}");

        // An older copy gets the file.
        let stale = http(
            server.addr,
            &format!("GET {path} HTTP/1.1"),
            &["If-None-Match: \"0000000000000000\""],
        )
        .await;
        assert_eq!(stale.status, 200, "{path}");
    }
    // The bundle is the official client's, found under the name the page uses.
    let response = http(server.addr, &format!("GET {bundle} HTTP/1.1"), &[]).await;
    assert!(response.body.contains("HubConnectionBuilder"));
    let missing = http(server.addr, "GET /assets/nothing.js HTTP/1.1", &[]).await;
    assert_eq!(missing.status, 404);
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
                "envelopesLost": 0,
                "envelopesRejected": 0,
                "publishing": "ok"
            }
        })
    );
}

#[tokio::test]
async fn cors_allows_the_listed_origins_with_credentials() {
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
        &["Origin: http://app.example:8080"],
    )
    .await;
    assert_eq!(negotiate.status, 200);
    let refused = http(
        server.addr,
        "POST /chathub/negotiate?negotiateVersion=1 HTTP/1.1",
        &["Origin: http://other.example"],
    )
    .await;
    assert_eq!(refused.status, 403, "an origin not listed");
    assert_eq!(
        negotiate.header("access-control-allow-origin"),
        Some("http://app.example:8080")
    );
    assert_eq!(
        negotiate.header("access-control-allow-credentials"),
        Some("true")
    );
}

/// Invoke `target` and read frames until its completion; returns the frames that came
/// before it (pings left out) and the completion.
async fn invoke(
    client: &mut RawClient,
    id: &str,
    target: &str,
    arguments: Value,
) -> (Vec<Value>, Value) {
    client
        .send_text(&format!(
            "{}\u{1e}",
            json!({"type": 1, "invocationId": id, "target": target, "arguments": arguments})
        ))
        .await;
    let mut before = Vec::new();
    loop {
        let text = client.recv_text_skipping_pings().await;
        for frame in text.split_terminator('\u{1e}') {
            let frame: Value = serde_json::from_str(frame).expect("a JSON frame");
            if frame["type"] == 3 && frame["invocationId"] == id {
                return (before, frame);
            }
            before.push(frame);
        }
    }
}

/// [`invoke`], asserting that the invocation succeeded; returns the frames before it.
async fn invoke_ok(client: &mut RawClient, id: &str, target: &str, arguments: Value) -> Vec<Value> {
    let (before, completion) = invoke(client, id, target, arguments).await;
    assert!(
        completion.get("error").is_none(),
        "{target} ({id}): {completion}"
    );
    before
}

#[tokio::test]
async fn joining_more_groups_than_allowed_fails_with_a_message_and_changes_nothing() {
    let server = chat_server().await;
    let mut client = RawClient::connect(&format!("ws://{}{}", server.addr, chat::HUB_PATH)).await;
    client.handshake_json().await;
    let limit = chat::MAX_GROUPS_PER_CONNECTION;
    for i in 0..limit {
        invoke_ok(
            &mut client,
            &i.to_string(),
            "JoinGroup",
            json!([format!("g{i}")]),
        )
        .await;
    }

    let (before, completion) =
        invoke(&mut client, "over", "JoinGroup", json!(["one too many"])).await;
    assert_eq!(
        completion["error"],
        format!(
            "An unexpected error occurred invoking 'JoinGroup' on the server. HubException: cannot join group \"one too many\": the connection is already in {limit} groups, the most this server allows"
        )
    );
    assert!(
        before
            .iter()
            .all(|frame| frame["target"] != "UserJoinedGroup"),
        "a refused join announced itself: {before:?}"
    );
    // Not a member: a message to that group reaches nobody, and the connection goes on.
    let before = invoke_ok(
        &mut client,
        "to",
        "SendMessageToGroup",
        json!(["one too many", "me", "hello?"]),
    )
    .await;
    assert!(before.is_empty(), "{before:?}");

    // Joining a group it is in is no new group; leaving one makes room.
    invoke_ok(&mut client, "again", "JoinGroup", json!(["g7"])).await;
    invoke_ok(&mut client, "leave", "LeaveGroup", json!(["g0"])).await;
    let before = invoke_ok(&mut client, "now", "JoinGroup", json!(["one too many"])).await;
    assert!(
        before
            .iter()
            .any(|frame| frame["target"] == "UserJoinedGroup"
                && frame["arguments"][1] == "one too many"),
        "{before:?}"
    );
}

#[tokio::test]
async fn hub_paths_match_ignoring_case_and_trailing_slashes_as_in_asp_net_core() {
    let server = chat_server().await;
    // The ASP.NET Core chat sample's clients use `/chatHub`.
    for path in [
        "/chatHub/negotiate?negotiateVersion=1",
        "/CHATHUB/negotiate/?negotiateVersion=1",
        "/chathub/negotiate/?negotiateVersion=1",
    ] {
        let response = http(server.addr, &format!("POST {path} HTTP/1.1"), &[]).await;
        assert_eq!(response.status, 200, "{path}: {}", response.body);
        let body: Value = serde_json::from_str(&response.body).unwrap();
        assert_eq!(body["negotiateVersion"], 1, "{path}");
        assert!(body["connectionToken"].is_string(), "{path}: {body}");
    }
    let response = http(server.addr, "GET /Health/ HTTP/1.1", &[]).await;
    assert_eq!(response.status, 200, "{}", response.body);
    // Other paths are still unknown, and CORS still applies to the rewritten ones.
    let response = http(server.addr, "POST /chathubs/negotiate HTTP/1.1", &[]).await;
    assert_eq!(response.status, 404);
    let response = http(
        server.addr,
        "POST /chatHub/negotiate?negotiateVersion=1 HTTP/1.1",
        &["Origin: http://example.com"],
    )
    .await;
    assert_eq!(
        response.header("access-control-allow-origin"),
        Some("http://example.com")
    );

    // A WebSocket to `/chatHub` is the chat hub.
    let mut client = RawClient::connect(&format!("ws://{}/chatHub", server.addr)).await;
    client.handshake_json().await;
    let text = client.recv_text_skipping_pings().await;
    assert!(
        text.starts_with("{\"type\":1,\"target\":\"UserConnected\""),
        "{text}"
    );
}

/// Invoke `SendMessage` and return its completion (skipping the broadcast it may bring).
async fn send_message(client: &mut RawClient, id: &str) -> Value {
    let arguments = r#"["ann","hi"]"#;
    client
        .invoke_json_until_completion(id, "SendMessage", arguments)
        .await
        .0
}

/// `SendMessage` through `client` succeeds and `server`'s `/health` is 200 "healthy" with
/// its publishes going through.
async fn sends_and_is_healthy(server: &TestServer, client: &mut RawClient, id: &str) {
    assert_eq!(send_message(client, id).await.get("error"), None);
    let (status, body) = health(server.addr).await;
    assert_eq!(
        (status, &body["status"]),
        (200, &json!("healthy")),
        "{body}"
    );
    let backplane = &body["backplane"];
    assert_eq!(backplane["publishing"], "ok", "{body}");
    assert_eq!(backplane.get("lastPublishFailure"), None, "{body}");
}

/// A server that hears the others but cannot publish (its messages table refuses every
/// row) fails sends, and `/health` says so (503, "degraded", the last error) until a
/// publish goes through again: a load balancer takes it out while it is useless.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_degraded_while_publishes_fail() {
    let cluster = ServedCluster::chat("health_publish", "node", &[HubOptions::default()]).await;
    let server = &cluster.servers[0];
    let mut client = RawClient::connect(&format!("ws://{}/chathub", server.addr)).await;
    client.handshake_json().await;
    wait_for_connections(&server.hub, 1).await;
    sends_and_is_healthy(server, &mut client, "1").await;

    let admin = cluster.schema.admin().await;
    let table: String = admin
        .query_one(
            "SELECT format('%I.%I', table_schema, table_name) FROM information_schema.tables
             WHERE table_schema = $1 AND table_name LIKE '%messages'",
            &[&cluster.schema.name()],
        )
        .await
        .unwrap()
        .get(0);
    admin
        .batch_execute(&format!(
            "ALTER TABLE {table} ADD CONSTRAINT refuse_all CHECK (false) NOT VALID"
        ))
        .await
        .unwrap();
    let failed = send_message(&mut client, "2").await;
    assert!(failed["error"].is_string(), "the send must fail: {failed}");
    let (status, body) = health(server.addr).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "degraded", "{body}");
    let backplane = &body["backplane"];
    assert_eq!(
        backplane["status"], "connected",
        "it still hears the others: {body}"
    );
    assert_eq!(backplane["publishing"], "failing", "{body}");
    assert_eq!(backplane["lastPublishFailure"], "backend", "{body}");
    // Never the database's text: a constraint's message quotes the failing row.
    assert!(!body.to_string().contains("refuse_all"), "{body}");
    assert!(backplane["publishFailingSince"].is_string(), "{body}");

    admin
        .batch_execute(&format!("ALTER TABLE {table} DROP CONSTRAINT refuse_all"))
        .await
        .unwrap();
    sends_and_is_healthy(server, &mut client, "3").await;
    client.close().await;
    cluster.shut_down().await;
}
