//! The HTTP side of a hub: negotiate, the WebSocket endpoint, and clear refusals of the
//! transports this server does not offer.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::header::{ACCEPT, CONTENT_TYPE, UPGRADE};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use serde::{Deserialize, Serialize};

use crate::connection::Accepted;
use crate::hub::{Hub, HubShared};
use crate::tokens::{ClaimError, random_id};
use crate::transport::websocket::Upgrade;

impl Hub {
    /// The routes of this hub under `path` (for example `"/chathub"`): `POST
    /// {path}/negotiate` and the WebSocket endpoint `GET {path}`.
    ///
    /// The result is an ordinary axum [`Router`]: merge it with your own routes and wrap
    /// it in tower layers (CORS, authentication, tracing). A router with state merges it
    /// after `.with_state(...)`. Serve it with TCP_NODELAY on (axum's
    /// `ListenerExt::tap_io`), or small frames wait for delayed ACKs.
    ///
    /// Operators: negotiate hands out a connection token that only the node that issued it
    /// accepts, so behind a load balancer either route a client's negotiate and WebSocket
    /// requests to the same node (sticky sessions) or have clients skip negotiate
    /// (`skipNegotiation: true` with the WebSockets transport).
    ///
    /// # Panics
    ///
    /// If `path` does not start with `/` (axum's rule for routes).
    pub fn router(&self, path: &str) -> Router {
        let path = path.trim_end_matches('/');
        let hub_path = if path.is_empty() { "/" } else { path };
        Router::new()
            .route(&format!("{path}/negotiate"), post(negotiate))
            .route(hub_path, any(connect))
            .with_state(self.shared().clone())
    }
}

/// The query of a negotiate request.
#[derive(Debug, Deserialize)]
struct NegotiateQuery {
    /// The negotiate protocol version the client speaks; absent means 0.
    #[serde(rename = "negotiateVersion")]
    negotiate_version: Option<u32>,
}

/// A version 1 negotiate response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct NegotiateResponse<'a> {
    /// Always 1.
    negotiate_version: u32,
    /// The public connection id.
    connection_id: &'a str,
    /// The secret the WebSocket request presents as `?id=`.
    connection_token: &'a str,
    /// What this server offers: WebSockets only.
    available_transports: [AvailableTransport; 1],
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct AvailableTransport {
    transport: &'static str,
    transfer_formats: [&'static str; 2],
}

/// `POST {hub}/negotiate`.
async fn negotiate(
    State(hub): State<Arc<HubShared>>,
    query: Result<Query<NegotiateQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if hub.is_shutting_down() {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "The server is shutting down.",
        );
    }
    let version = match query {
        Ok(Query(query)) => query.negotiate_version.unwrap_or(0),
        Err(rejection) => {
            return plain(
                StatusCode::BAD_REQUEST,
                &format!("Invalid negotiate request: {rejection}"),
            );
        }
    };
    if version < 1 {
        // Clients older than version 1 would present the public connection id as the
        // token; refuse them in the negotiate error field, which clients report as is.
        return json(&serde_json::json!({
            "error": "This server requires negotiate version 1 or later (SignalR clients 3.1 and newer send negotiateVersion=1)."
        }));
    }
    let (connection_id, token) = hub.tokens.issue();
    tracing::debug!(hub = %hub.name, %connection_id, "negotiated");
    json(&NegotiateResponse {
        negotiate_version: 1,
        connection_id: connection_id.as_str(),
        connection_token: &token,
        available_transports: [AvailableTransport {
            transport: "WebSockets",
            transfer_formats: ["Text", "Binary"],
        }],
    })
}

/// The query of a request to the hub path.
#[derive(Debug, Deserialize)]
struct ConnectQuery {
    /// The connection token from negotiate; absent when negotiate was skipped.
    id: Option<String>,
}

/// Any request to `{hub}`: a WebSocket upgrade, or a transport this server refuses.
async fn connect(State(hub): State<Arc<HubShared>>, request: Request) -> Response {
    let (mut parts, _body) = request.into_parts();
    let wants_websocket = parts
        .headers
        .get(UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("websocket"));
    if !wants_websocket {
        return refuse_transport(&parts);
    }
    let upgrade = match Upgrade::from_parts(&mut parts) {
        Ok(upgrade) => upgrade,
        Err(refusal) => return refusal.into_response(),
    };
    if hub.is_shutting_down() {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "The server is shutting down.",
        );
    }
    let query = match Query::<ConnectQuery>::try_from_uri(&parts.uri) {
        Ok(Query(query)) => query,
        Err(rejection) => {
            return plain(
                StatusCode::BAD_REQUEST,
                &format!("Invalid connection request: {rejection}"),
            );
        }
    };
    let (connection_id, token) = match query.id.as_deref() {
        None | Some("") => (random_id().into(), None),
        Some(token) => match hub.tokens.claim(token) {
            Ok(lease) => (lease.connection_id().clone(), Some(lease)),
            Err(ClaimError::Unknown) => {
                return plain(
                    StatusCode::NOT_FOUND,
                    "No connection with that ID: the connection token is unknown, expired or already used.",
                );
            }
            Err(ClaimError::InUse) => {
                return plain(
                    StatusCode::CONFLICT,
                    "Connection ID already in use: another WebSocket is open for this connection token.",
                );
            }
        },
    };
    let user = hub.user_id.as_ref().and_then(|provider| provider(&parts));
    let accepted = Accepted {
        connection_id,
        user,
        token,
    };
    // Each hub message is limited by the decoder (`max_message_size`); a WebSocket
    // message of any size streams through.
    upgrade.accept(hub, accepted)
}

/// A clear answer for the transports this server does not offer.
fn refuse_transport(parts: &axum::http::request::Parts) -> Response {
    if parts.method == Method::POST || parts.method == Method::DELETE {
        // How Server-Sent Events and Long Polling clients send, and how Long Polling ends.
        return plain(
            StatusCode::BAD_REQUEST,
            "Only the WebSockets transport is supported by this server: Server-Sent Events and Long Polling requests are refused.",
        );
    }
    if parts.method != Method::GET {
        return plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "Connect with a WebSocket (GET with an upgrade).",
        );
    }
    let accepts_event_stream = parts
        .headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.contains("text/event-stream"));
    let transport = if accepts_event_stream {
        "Server-Sent Events"
    } else {
        "Long Polling"
    };
    plain(
        StatusCode::BAD_REQUEST,
        &format!(
            "The {transport} transport is not supported by this server: connect with the WebSockets transport."
        ),
    )
}

fn plain(status: StatusCode, text: &str) -> Response {
    (status, text.to_owned()).into_response()
}

fn json<T: Serialize>(body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (
            [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            bytes,
        )
            .into_response(),
        Err(error) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot serialize the negotiate response: {error}"),
        ),
    }
}
