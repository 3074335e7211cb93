//! The HTTP side of a hub: negotiate, and the hub path that every transport uses (the
//! WebSocket upgrade; Server-Sent Events and long-polling `GET`s, `POST` sends and
//! `DELETE`), answered as ASP.NET Core's `HttpConnectionDispatcher` answers.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::header::{ACCEPT, ALLOW, CONTENT_TYPE, RETRY_AFTER, UPGRADE};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use serde::{Deserialize, Serialize};

use crate::AllowedOrigins;
use crate::auth::Identity;
use crate::connection::Accepted;
use crate::hub::{Hub, HubShared};
use crate::options::Transports;
use crate::tokens::{ClaimError, TokenKind};
use crate::transport::http_connections::{Found, Opened, Transport};
use crate::transport::websocket::Upgrade;
use crate::transport::{long_polling, posted, sse};

impl Hub {
    /// The routes of this hub under `path` (for example `"/chathub"`): `POST
    /// {path}/negotiate` and `{path}` itself: a WebSocket upgrade, a Server-Sent Events
    /// stream or a long poll (`GET`), a send (`POST`) or the end of a long-polling
    /// connection (`DELETE`).
    ///
    /// The result is an ordinary axum [`Router`]: merge it with your own routes and wrap
    /// it in tower layers (CORS, authentication, tracing). A router with state merges it
    /// after `.with_state(...)`. Serve it with TCP_NODELAY on (axum's
    /// `ListenerExt::tap_io`), or small frames wait for delayed ACKs.
    ///
    /// Operators: negotiate hands out a connection token that only the node that issued it
    /// accepts, and a Server-Sent Events or long-polling connection lives on the node that
    /// opened it, so behind a load balancer route all of a client's requests (negotiate,
    /// then every GET, POST and DELETE) to the same node (sticky sessions). Only
    /// WebSocket clients that skip negotiate (`skipNegotiation: true`) need no
    /// stickiness.
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

/// The newest negotiate version this server speaks. Clients asking for a newer one get
/// this one, as ASP.NET Core answers.
const NEGOTIATE_VERSION: u32 = 1;

/// The negotiate version a request asks for, read from its `negotiateVersion` query
/// parameter as ASP.NET Core reads it: the name in any case, absent means 0, versions above
/// [`NEGOTIATE_VERSION`] are answered with it. The error is the text for the response's
/// `error` field.
fn requested_negotiate_version(pairs: &[(String, String)]) -> Result<u32, String> {
    let values: Vec<&str> = pairs
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("negotiateVersion"))
        .map(|(_, value)| value.as_str())
        .collect();
    if values.is_empty() {
        return Ok(0);
    }
    // ASP.NET Core joins repeated values with commas, which then fail to parse, and reads
    // a signed 32-bit number (`int.TryParse`, surrounding white space allowed).
    let value = values.join(",");
    match value.trim().parse::<i32>() {
        Ok(version) if version < 0 => Err(format!(
            "The client requested negotiate version '{version}', but the server does not support this version: send negotiateVersion=1 (or 0, or leave it out)."
        )),
        // Not negative here: the arm above took those.
        Ok(version) => Ok(version.unsigned_abs().min(NEGOTIATE_VERSION)),
        Err(_) => Err(format!(
            "The client requested an invalid negotiate version '{value}': negotiateVersion must be a whole number, 1 for a connection token (SignalR clients 3.1 and newer) or 0 (older clients)."
        )),
    }
}

/// A negotiate response, versions 0 and 1.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct NegotiateResponse<'a> {
    /// The version the client asked for, or [`NEGOTIATE_VERSION`] if it asked for newer:
    /// tells the client whether a connection token follows.
    negotiate_version: u32,
    /// The public connection id; with version 0 also what the client presents as `?id=`.
    connection_id: &'a str,
    /// Version 1 only: the secret the WebSocket request presents as `?id=`. Absent from
    /// version 0 responses, as ASP.NET Core writes them (version 0 clients read only
    /// `connectionId`).
    #[serde(skip_serializing_if = "Option::is_none")]
    connection_token: Option<&'a str>,
    /// What this server offers, in ASP.NET Core's order (the clients try them in the
    /// order listed).
    available_transports: Vec<&'static AvailableTransport>,
    /// Present (true) when the client asked for stateful reconnect and the hub allows it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    use_stateful_reconnect: bool,
}

/// One transport in a negotiate response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct AvailableTransport {
    /// Its name, as the clients spell it.
    transport: &'static str,
    /// What it carries: Server-Sent Events carry text only, so MessagePack clients skip it.
    transfer_formats: &'static [&'static str],
}

/// The transports this server offers.
const AVAILABLE_TRANSPORTS: [AvailableTransport; 3] = [
    AvailableTransport {
        transport: "WebSockets",
        transfer_formats: &["Text", "Binary"],
    },
    AvailableTransport {
        transport: "ServerSentEvents",
        transfer_formats: &["Text"],
    },
    AvailableTransport {
        transport: "LongPolling",
        transfer_formats: &["Text", "Binary"],
    },
];

/// The entries of [`AVAILABLE_TRANSPORTS`] the hub's options allow, in that order.
fn offered_transports(allowed: Transports) -> Vec<&'static AvailableTransport> {
    let [websockets, server_sent_events, long_polling] = &AVAILABLE_TRANSPORTS;
    [
        (allowed.websockets, websockets),
        (allowed.server_sent_events, server_sent_events),
        (allowed.long_polling, long_polling),
    ]
    .into_iter()
    .filter_map(|(allowed, transport)| allowed.then_some(transport))
    .collect()
}

/// The answer to a request for a transport the hub's options leave out (ASP.NET Core's
/// status and wording).
fn not_offered(transport: &str) -> Response {
    plain(
        StatusCode::NOT_FOUND,
        &format!("{transport} transport not supported by this end point type"),
    )
}

/// `POST {hub}/negotiate`.
async fn negotiate(State(hub): State<Arc<HubShared>>, request: Request) -> Response {
    let (parts, _body) = request.into_parts();
    if hub.is_shutting_down() {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "The server is shutting down.",
        );
    }
    if !hub.options.allowed_origins.allows(&parts) {
        return AllowedOrigins::refusal();
    }
    if let Err(refusal) = hub.identify(&parts).await {
        return refusal;
    }
    if hub.is_full() {
        return too_many_connections(&hub);
    }
    let pairs = match Query::<Vec<(String, String)>>::try_from_uri(&parts.uri) {
        Ok(Query(pairs)) => pairs,
        Err(rejection) => {
            return plain(
                StatusCode::BAD_REQUEST,
                &format!("Invalid negotiate request: {rejection}"),
            );
        }
    };
    let version = match requested_negotiate_version(&pairs) {
        Ok(version) => version,
        // In the response's error field with status 200, as ASP.NET Core answers: every
        // client reports that text to the application as is.
        Err(error) => return json(&serde_json::json!({ "error": error })),
    };
    let kind = if version == 0 {
        TokenKind::ConnectionId
    } else {
        TokenKind::Secret
    };
    // Stateful reconnect rests on the connection token: a version 0 client, whose id is
    // public, is not offered it (ASP.NET Core offers it only with version 1 as well).
    let stateful = hub.options.stateful_reconnect
        && version >= 1
        && pairs.iter().any(|(name, value)| {
            name.eq_ignore_ascii_case("useStatefulReconnect") && value.eq_ignore_ascii_case("true")
        });
    let Ok((connection_id, token)) = hub.tokens.issue(kind, stateful) else {
        tracing::debug!(hub = %hub.name, limit = hub.options.max_pending_negotiations, "negotiate refused: too many pending connection tokens");
        return retry_later(
            &hub,
            "Too many negotiations are waiting for their connections: try again shortly.",
        );
    };
    tracing::debug!(hub = %hub.name, %connection_id, negotiate_version = version, "negotiated");
    json(&NegotiateResponse {
        negotiate_version: version,
        connection_id: connection_id.as_str(),
        connection_token: (kind == TokenKind::Secret).then_some(token.as_str()),
        available_transports: offered_transports(hub.options.transports),
        use_stateful_reconnect: stateful,
    })
}

/// The query of a request to the hub path.
#[derive(Debug, Deserialize)]
struct ConnectQuery {
    /// The connection token from negotiate; absent when negotiate was skipped.
    id: Option<String>,
}

/// Any request to `{hub}`: a WebSocket upgrade, or a Server-Sent Events or long-polling
/// request.
async fn connect(State(hub): State<Arc<HubShared>>, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    if !hub.options.allowed_origins.allows(&parts) {
        return AllowedOrigins::refusal();
    }
    // Before anything is upgraded, claimed or opened: refused requests change nothing.
    let identity = match hub.identify(&parts).await {
        Ok(identity) => identity,
        Err(refusal) => return refusal,
    };
    let wants_websocket = parts
        .headers
        .get(UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("websocket"));
    if !wants_websocket {
        return http_transport(hub, parts, body, identity).await;
    }
    if !hub.options.transports.websockets {
        return not_offered("WebSockets");
    }
    let upgrade = match Upgrade::from_parts(&mut parts) {
        Ok(upgrade) => upgrade,
        Err(refusal) => return refusal.into_response(),
    };
    if hub.is_shutting_down() {
        return shutting_down();
    }
    let query = match connect_query(&parts) {
        Ok(query) => query,
        Err(response) => return *response,
    };
    let (connection_id, token) = match query.id.as_deref() {
        None | Some("") => (hub.tokens.new_connection_id(), None),
        Some(token) => {
            if let Found::Http(_) = hub.http_connections.find(&hub.tokens, token) {
                return cannot_change_transports();
            }
            match hub.tokens.claim(token) {
                Ok(lease) => (lease.connection_id().clone(), Some(lease)),
                Err(ClaimError::Unknown) => return unknown_id(),
                Err(ClaimError::InUse) => {
                    // A client with stateful reconnect comes back with its token on a
                    // new WebSocket: hand it to the live connection.
                    if let Some(connection) = hub.reattachments.find(token) {
                        return upgrade.reattach(connection);
                    }
                    return plain(
                        StatusCode::CONFLICT,
                        "Connection ID already in use: another WebSocket is open for this connection token.",
                    );
                }
            }
        }
    };
    let Some(count) = hub.admit() else {
        return too_many_connections(&hub);
    };
    let accepted = Accepted {
        connection_id,
        user: identity.user,
        token,
        principal: identity.principal,
        count,
    };
    // Each hub message is limited by the decoder (`max_message_size`); a WebSocket
    // message of any size streams through.
    upgrade.accept(hub, accepted)
}

/// The query of a request to the hub path, or the answer refusing it.
fn connect_query(parts: &Parts) -> Result<ConnectQuery, Box<Response>> {
    Query::<ConnectQuery>::try_from_uri(&parts.uri)
        .map(|Query(query)| query)
        .map_err(|rejection| {
            Box::new(plain(
                StatusCode::BAD_REQUEST,
                &format!("Invalid connection request: {rejection}"),
            ))
        })
}

/// A request of the Server-Sent Events or long-polling transport (`GET` opens a
/// connection or polls, `POST` sends, `DELETE` ends a long-polling connection), answered
/// as ASP.NET Core's `HttpConnectionDispatcher` answers.
async fn http_transport(
    hub: Arc<HubShared>,
    parts: Parts,
    body: Body,
    identity: Identity,
) -> Response {
    if ![Method::GET, Method::POST, Method::DELETE].contains(&parts.method) {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(ALLOW, HeaderValue::from_static("GET, POST, DELETE"))],
            "Use GET to connect (a WebSocket upgrade, an event stream or a poll), POST to send and DELETE to end a long-polling connection.",
        )
            .into_response();
    }
    let query = match connect_query(&parts) {
        Ok(query) => query,
        Err(response) => return *response,
    };
    let Some(token) = query.id.filter(|id| !id.is_empty()) else {
        return plain(
            StatusCode::BAD_REQUEST,
            "Connection ID required: negotiate first (POST {hub}/negotiate) and pass its connectionToken as ?id=, or connect with a WebSocket.",
        );
    };
    if parts.method == Method::GET {
        return open_or_poll(hub, &parts, &token, identity).await;
    }
    let connection = match hub.http_connections.find(&hub.tokens, &token) {
        Found::Http(connection) if connection.user != identity.user => return other_user(),
        Found::Http(connection) => connection,
        Found::WebSocket if parts.method == Method::POST => {
            return plain(
                StatusCode::METHOD_NOT_ALLOWED,
                "POST requests are not allowed for WebSocket connections: send over the WebSocket.",
            );
        }
        Found::WebSocket => {
            return plain(
                StatusCode::BAD_REQUEST,
                "Cannot terminate this connection using the DELETE endpoint: close the WebSocket instead.",
            );
        }
        Found::Unknown => return unknown_id(),
    };
    if parts.method == Method::POST {
        posted::send(&connection, body).await
    } else {
        long_polling::delete(&connection)
    }
}

/// `GET {hub}?id=` without an upgrade: opens a Server-Sent Events connection
/// (`Accept: text/event-stream`) or a long-polling one, or polls a long-polling one.
async fn open_or_poll(
    hub: Arc<HubShared>,
    parts: &Parts,
    token: &str,
    identity: Identity,
) -> Response {
    let event_stream = parts
        .headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.contains("text/event-stream"));
    let allowed = hub.options.transports;
    if event_stream && !allowed.server_sent_events {
        return not_offered("ServerSentEvents");
    }
    if !event_stream && !allowed.long_polling {
        return not_offered("LongPolling");
    }
    if hub.is_shutting_down() {
        return shutting_down();
    }
    let transport = || {
        if event_stream {
            Transport::ServerSentEvents
        } else {
            long_polling::transport()
        }
    };
    // A place under max_connections is taken before the token is claimed; a later
    // request of a live connection gives it back at once.
    let (opened, count) = match hub.admit() {
        Some(count) => (
            hub.http_connections
                .open(&hub.tokens, token, transport, identity.user.clone()),
            Some(count),
        ),
        None => match hub.http_connections.find(&hub.tokens, token) {
            Found::Http(connection) => (Ok(Opened::Existing(connection)), None),
            _ => return too_many_connections(&hub),
        },
    };
    match opened {
        Ok(Opened::Existing(connection)) if connection.user != identity.user => other_user(),
        Ok(Opened::Existing(connection)) => match (&connection.transport, event_stream) {
            (Transport::LongPolling(polls), false) => long_polling::poll(&hub, polls).await,
            (Transport::ServerSentEvents, true) => plain(
                StatusCode::CONFLICT,
                "Connection already active: an event stream is already open for this connection.",
            ),
            _ => cannot_change_transports(),
        },
        Ok(Opened::New {
            connection,
            chunks,
            lease,
            registration,
        }) => {
            let Some(count) = count else {
                return too_many_connections(&hub);
            };
            let accepted = Accepted {
                connection_id: lease.connection_id().clone(),
                user: identity.user,
                token: Some(lease),
                principal: identity.principal,
                count,
            };
            if event_stream {
                sse::start(hub, connection, chunks, accepted, registration)
            } else {
                long_polling::start(hub, connection, chunks, accepted, registration)
            }
        }
        Err(ClaimError::InUse) => cannot_change_transports(),
        Err(ClaimError::Unknown) => unknown_id(),
    }
}

/// 503 with `Retry-After`: a limit of this node is reached, and waiting helps.
fn retry_later(hub: &HubShared, text: &str) -> Response {
    let seconds = hub.options.negotiate_timeout.as_secs().max(1);
    let mut response = plain(StatusCode::SERVICE_UNAVAILABLE, text);
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(seconds));
    response
}

fn too_many_connections(hub: &HubShared) -> Response {
    tracing::debug!(hub = %hub.name, limit = hub.options.max_connections, "connection refused: the connection limit is reached");
    retry_later(
        hub,
        "This server is at its connection limit: try again shortly (or another server).",
    )
}

fn other_user() -> Response {
    plain(
        StatusCode::FORBIDDEN,
        "This connection belongs to another user: requests of a connection must carry the credentials it was opened with.",
    )
}

fn unknown_id() -> Response {
    plain(
        StatusCode::NOT_FOUND,
        "No connection with that ID: the connection token is unknown, expired or already used; negotiate again.",
    )
}

fn cannot_change_transports() -> Response {
    plain(
        StatusCode::BAD_REQUEST,
        "Cannot change transports mid-connection: this connection token is in use by another transport; negotiate again for a new connection.",
    )
}

fn shutting_down() -> Response {
    plain(
        StatusCode::SERVICE_UNAVAILABLE,
        "The server is shutting down.",
    )
}

pub(crate) fn plain(status: StatusCode, text: &str) -> Response {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn version(query: &[(&str, &str)]) -> Result<u32, String> {
        let pairs: Vec<(String, String)> = query
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        requested_negotiate_version(&pairs)
    }

    #[test]
    fn negotiate_versions_are_read_as_asp_net_core_reads_them() {
        assert_eq!(version(&[]), Ok(0));
        assert_eq!(version(&[("id", "x")]), Ok(0));
        assert_eq!(version(&[("negotiateVersion", "0")]), Ok(0));
        assert_eq!(version(&[("negotiateVersion", "1")]), Ok(1));
        assert_eq!(version(&[("NEGOTIATEVERSION", "1")]), Ok(1));
        // Newer clients get the newest version this server speaks.
        assert_eq!(version(&[("negotiateVersion", "2")]), Ok(1));
        assert_eq!(version(&[("negotiateVersion", "2147483647")]), Ok(1));
        assert_eq!(version(&[("negotiateVersion", " 1 ")]), Ok(1));
        for bad in ["abc", "", "1.0", "one", "2147483648"] {
            let error = version(&[("negotiateVersion", bad)]).unwrap_err();
            assert!(
                error.starts_with(&format!(
                    "The client requested an invalid negotiate version '{bad}': negotiateVersion must be a whole number"
                )),
                "{error}"
            );
        }
        assert!(
            version(&[("negotiateVersion", "-1")])
                .unwrap_err()
                .starts_with("The client requested negotiate version '-1', but the server does not support this version")
        );
        // Repeated, as ASP.NET Core sees them: "1,1" is not a number.
        assert!(
            version(&[("negotiateVersion", "1"), ("negotiateVersion", "1")])
                .unwrap_err()
                .contains("'1,1'")
        );
    }
}
