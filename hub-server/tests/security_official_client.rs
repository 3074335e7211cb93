//! The official SignalR JavaScript client (`@microsoft/signalr`, driven from Node by
//! `tests/js/auth-client.js`) against the `hub-server` binary with JWT authentication on:
//! `accessTokenFactory` tokens on every transport, tokens refused with 401, and tokens
//! that expire while connected, with and without `--close-on-token-expiry`.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::{JWT_FLAGS, PATIENCE, SECRET, Server, jwt, now};
use tokio_tungstenite::tungstenite::Message;

/// How long one Node run may take.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(60);

/// Seconds a short-lived token has left when minted: enough for Node to start and
/// connect on a loaded machine, short enough to wait for.
const SHORT_LIFETIME: u64 = 3;

/// Run `auth-client.js` `scenario` against `server` with `parameters`; what it printed.
async fn run_client(server: &Server, scenario: &str, parameters: &Value) -> Value {
    let mut node = tests::node_script("auth-client.js").await;
    node.arg(server.base_url())
        .arg(scenario)
        .arg(parameters.to_string());
    tests::json_result(&mut node, &format!("scenario {scenario}"), SCENARIO_TIMEOUT)
        .await
        .result
}

fn token_for(sub: &str, lifetime: u64) -> String {
    jwt(sub, "chat", now() + lifetime, SECRET)
}

fn now_ms() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    u64::try_from(since.as_millis()).unwrap()
}

#[tokio::test]
async fn the_official_client_connects_with_a_jwt_on_every_transport_as_its_sub() {
    let server = Server::start(&JWT_FLAGS).await;
    let transports = [
        ("WebSockets", "WebSocketTransport"),
        ("ServerSentEvents", "ServerSentEventsTransport"),
        ("LongPolling", "LongPollingTransport"),
    ];
    let tokens: serde_json::Map<String, Value> = transports
        .iter()
        .map(|(transport, _)| {
            let sub = format!("ann-{transport}");
            (transport.to_string(), token_for(&sub, 600).into())
        })
        .collect();
    let result = run_client(&server, "identity", &json!({ "tokens": tokens })).await;
    for (transport, class) in transports {
        assert_eq!(result[transport]["transport"], class, "{result}");
        // The chat announces the caller by its user id: the token's `sub`.
        assert_eq!(
            result[transport]["user"],
            format!("ann-{transport}"),
            "{result}"
        );
    }
}

#[tokio::test]
async fn the_official_client_cannot_start_with_a_forged_or_expired_token() {
    let server = Server::start(&JWT_FLAGS).await;
    let tokens = json!({
        "forged": jwt("ann", "chat", now() + 600, "not the server's secret"),
        "expired": jwt("ann", "chat", now() - 3600, SECRET),
        "valid": token_for("ann", 600),
    });
    let result = run_client(&server, "refused", &json!({ "tokens": tokens })).await;
    for refused in ["forged", "expired"] {
        assert_eq!(result[refused]["started"], false, "{result}");
        let error = result[refused]["error"].as_str().unwrap();
        assert!(
            error.contains("Status code '401'"),
            "{refused}: start() rejected with {error:?}"
        );
    }
    // The control: the same client with a good token starts.
    assert_eq!(result["valid"]["started"], true, "{result}");
}

/// With `--close-on-token-expiry`, a connection whose token expires is closed then, with
/// the Close message ASP.NET Core sends on authentication expiration: no error, reconnect
/// allowed (its `HubConnectionContext` aborts with `AbortAllowReconnect`, "a non-errored
/// closed message"), on the raw wire and as the official client sees it.
#[tokio::test]
async fn an_expiring_token_closes_its_connection_as_asp_net_core_does() {
    let server = Server::start(&[&JWT_FLAGS[..], &["--close-on-token-expiry"]].concat()).await;
    let exp = now() + SHORT_LIFETIME;
    let token = jwt("ann", "chat", exp, SECRET);

    // The raw frames, on a direct WebSocket.
    let url = format!("ws://{}/chathub?access_token={token}", server.address);
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("upgrade");
    ws.send(Message::text("{\"protocol\":\"json\",\"version\":1}\u{1e}"))
        .await
        .unwrap();
    let mut frames = Vec::new();
    let close = loop {
        let next = tokio::time::timeout(PATIENCE + Duration::from_secs(SHORT_LIFETIME), ws.next())
            .await
            .unwrap_or_else(|_| panic!("no Close message; frames so far: {frames:?}"));
        match next {
            Some(Ok(Message::Text(text))) if text.contains("\"type\":7") => {
                break text.as_str().to_owned();
            }
            Some(Ok(message)) => frames.push(message),
            other => {
                panic!("the connection ended without a Close message: {other:?} after {frames:?}")
            }
        }
    };
    let closed_at = now_ms();
    assert_eq!(close, "{\"type\":7,\"allowReconnect\":true}\u{1e}");
    // The handshake answer first; then the chat's own traffic (its UserConnected), never
    // an error.
    assert_eq!(
        frames.first(),
        Some(&Message::text("{}\u{1e}")),
        "before the Close: {frames:?}"
    );
    assert!(
        !frames
            .iter()
            .any(|f| f.to_text().is_ok_and(|t| t.contains("error"))),
        "before the Close: {frames:?}"
    );
    assert!(
        closed_at + 50 >= exp * 1000,
        "closed {} ms before the token expired",
        exp * 1000 - closed_at
    );
    // Then the WebSocket itself ends, with nothing after the Close message.
    match tokio::time::timeout(PATIENCE, ws.next())
        .await
        .expect("the socket ends")
    {
        None | Some(Err(_)) | Some(Ok(Message::Close(_))) => {}
        Some(Ok(other)) => panic!("after the Close message: {other:?}"),
    }

    // The official client, on a WebSocket and on long polling at once: onclose fires, with
    // no error (a non-errored Close).
    let client = |transport: &str| {
        let exp = now() + SHORT_LIFETIME;
        let parameters = json!({
            "transport": transport,
            "token": jwt("bob", "chat", exp, SECRET),
            "exp": exp,
            "expectClose": true,
        });
        let server = &server;
        async move { (exp, run_client(server, "expiry", &parameters).await) }
    };
    let (websocket, long_polling) = tokio::join!(client("WebSockets"), client("LongPolling"));
    for ((exp, result), class) in [
        (websocket, "WebSocketTransport"),
        (long_polling, "LongPollingTransport"),
    ] {
        assert_eq!(result["transport"], class, "{result}");
        assert_eq!(result["error"], Value::Null, "{result}");
        let closed_at = result["closedAtMs"].as_u64().unwrap();
        assert!(
            closed_at + 50 >= exp * 1000,
            "closed before expiry: {result}"
        );
    }
}

/// The Close allows reconnecting: the official client with automatic reconnect comes
/// back at once with the fresh token its `accessTokenFactory` now returns.
#[tokio::test]
async fn the_official_client_reconnects_with_a_fresh_token_after_expiry() {
    let server = Server::start(&[&JWT_FLAGS[..], &["--close-on-token-expiry"]].concat()).await;
    let exp = now() + SHORT_LIFETIME;
    let parameters = json!({
        "transport": "WebSockets",
        "token": jwt("carol", "chat", exp, SECRET),
        "renewToken": jwt("carol-renewed", "chat", now() + 600, SECRET),
        "exp": exp,
    });
    let result = run_client(&server, "expiry", &parameters).await;
    assert_eq!(result["reconnectingError"], Value::Null, "{result}");
    assert_eq!(result["userAfterReconnect"], "carol-renewed", "{result}");
    let reconnecting_at = result["reconnectingAtMs"].as_u64().unwrap();
    assert!(reconnecting_at + 50 >= exp * 1000, "{result}");
}

/// Without the flag (the default, as in ASP.NET Core) a token is checked when the
/// connection starts only: past its `exp`, the connection goes on.
#[tokio::test]
async fn without_close_on_token_expiry_a_connection_outlives_its_token() {
    let server = Server::start(&JWT_FLAGS).await;
    let exp = now() + SHORT_LIFETIME;
    let parameters = json!({
        "transport": "WebSockets",
        "token": jwt("dan", "chat", exp, SECRET),
        "exp": exp,
        "expectClose": false,
    });
    let result = run_client(&server, "expiry", &parameters).await;
    assert_eq!(result["closed"], false, "{result}");
    assert_eq!(result["userAfterExpiry"], "dan", "{result}");
}
