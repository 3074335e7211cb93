//! Per-method authorization rules over the wire: a method its rule refuses answers the
//! caller with ASP.NET Core's completion error, and nothing else changes: the caller's
//! connection stays and its other methods work, other connections see nothing of the
//! refused call, and the principals the rule allows call the method as usual.

mod hub_support;

use axum::http::request::Parts;
use hub_server::{AuthError, Principal, access_token};
use hub_support::{RawClient, TestServer, test_hub, wait_for_connections};
use serde_json::{Value, json};

/// Authenticates by name: the access token is the user id, and a name starting with
/// `admin` has the role `admin` (as a JWT's role claim would say); no token, anonymous.
fn by_name(request: &Parts) -> Result<Option<Principal>, AuthError> {
    Ok(access_token(request).map(|name| {
        let role = if name.starts_with("admin") {
            "admin"
        } else {
            "member"
        };
        let claims = json!({ "role": [role] }).as_object().unwrap().clone();
        Principal::new(Some(name)).with_claims(claims)
    }))
}

/// A JSON client of `server` connected as `name` (anonymous for `None`).
async fn client(server: &TestServer, name: Option<&str>) -> RawClient {
    let query = name
        .map(|name| format!("access_token={name}"))
        .unwrap_or_default();
    let mut client = RawClient::connect(&server.ws_url(&query)).await;
    client.handshake_json().await;
    client
}

/// The next frame that is not a Ping, parsed.
async fn next_message(client: &mut RawClient) -> Value {
    parse(&client.recv_text_skipping_pings().await)
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text.trim_end_matches('\u{1e}')).expect("a JSON hub message")
}

fn refused(id: &str, target: &str) -> Value {
    json!({
        "type": 3,
        "invocationId": id,
        "error": format!("Failed to invoke '{target}' because user is unauthorized"),
    })
}

#[tokio::test]
async fn a_method_refused_by_its_rule_fails_for_the_caller_only() {
    let server = TestServer::start_hub(
        test_hub()
            .authenticator(by_name)
            .authorize_method("Broadcast", |principal: &Principal| {
                principal.has_claim("role", "admin")
            }),
    )
    .await;
    let mut ann = client(&server, Some("ann")).await;
    let mut admin = client(&server, Some("admin-zoe")).await;
    let mut anonymous = client(&server, None).await;
    wait_for_connections(&server.hub, 3).await;

    // A member and an anonymous caller are refused, whatever the case of the name.
    let reply = ann.invoke_json("1", "Broadcast", "[\"from ann\"]").await;
    assert_eq!(parse(&reply), refused("1", "Broadcast"));
    let reply = ann
        .invoke_json("2", "broadcast", "[\"from ann again\"]")
        .await;
    assert_eq!(parse(&reply), refused("2", "broadcast"));
    let reply = anonymous
        .invoke_json("1", "Broadcast", "[\"from nobody\"]")
        .await;
    assert_eq!(parse(&reply), refused("1", "Broadcast"));
    // A refused non-blocking send (no invocation id) gets no answer at all, as in ASP.NET
    // Core: the next message ann receives answers her next invocation.
    ann.send_text("{\"type\":1,\"target\":\"Broadcast\",\"arguments\":[\"sneaked\"]}\u{1e}")
        .await;

    // Ann's connection stays, and her other methods work.
    let reply = ann.invoke_json("3", "Add", "[40,2]").await;
    assert_eq!(
        parse(&reply),
        json!({"type": 3, "invocationId": "3", "result": 42})
    );
    let reply = ann.invoke_json("4", "WhoAmI", "[]").await;
    assert_eq!(
        parse(&reply),
        json!({"type": 3, "invocationId": "4", "result": "ann"})
    );

    // The admin may: everyone receives the broadcast, and it is the first thing anyone
    // other than a refused caller receives (nothing of the refused calls went out).
    admin
        .send_text(
            "{\"type\":1,\"invocationId\":\"1\",\"target\":\"Broadcast\",\"arguments\":[\"from the admin\"]}\u{1e}",
        )
        .await;
    let broadcast = json!({"type": 1, "target": "Broadcast", "arguments": ["from the admin"]});
    let mut admin_got = vec![
        next_message(&mut admin).await,
        next_message(&mut admin).await,
    ];
    admin_got.sort_by_key(|message| message["type"].as_u64());
    assert_eq!(
        admin_got,
        [broadcast.clone(), json!({"type": 3, "invocationId": "1"})]
    );
    assert_eq!(next_message(&mut ann).await, broadcast);
    assert_eq!(next_message(&mut anonymous).await, broadcast);
    assert_eq!(
        server.hub.connection_count(),
        3,
        "no connection was dropped"
    );
}
