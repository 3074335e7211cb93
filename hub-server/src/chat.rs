//! The chat server of the `hub-server` binary, as a library so tests and other programs can
//! run the very same thing in-process.
//!
//! The hub follows the contract of ASP.NET Core's classic chat sample, so existing chat
//! clients work against it:
//!
//! | client invokes | server sends |
//! |---|---|
//! | `SendMessage(user, message)` | `ReceiveMessage(user, message)` to all |
//! | `JoinGroup(group)` | adds the caller, then `UserJoinedGroup(user, group)` to the group (the caller included); fails with a message saying why when the caller is already in [`MAX_GROUPS_PER_CONNECTION`] groups |
//! | `LeaveGroup(group)` | removes the caller, then `UserLeftGroup(user, group)` to the group (so the leaver does not get it, as in the original sample) |
//! | `SendMessageToGroup(group, user, message)` | `ReceiveGroupMessage(group, user, message)` to the group |
//! | (on connect) | `UserConnected(connectionId)` to all |
//! | (on disconnect) | `UserDisconnected(connectionId)` to all |
//!
//! `user` in `UserJoinedGroup` / `UserLeftGroup` is the connection's user id, or null for
//! an anonymous connection. Without an authenticator the chat hub is anonymous with a
//! name: the user id is the *name* the client sends as its access token
//! (`accessTokenFactory`), which proves nothing and is documented as such; it is a display
//! name, not an identity. A token that looks like a JWT is never taken as a name (the
//! connection is anonymous and a warning is logged, without the token), so a deployment
//! that forgot to configure validation does not silently trust its users' tokens. With
//! [`HubBuilder::authenticator`] (the binary's `--jwt-*` flags) the user id is the
//! validated token's claim instead, and unauthenticated clients are refused.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use hub_server::chat;
//!
//! let hub = chat::hub_builder().build().await?;
//! let app = chat::router(&hub, chat::ServerInfo::new("node-a", "memory"));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:5000").await?;
//! axum::serve(listener, app).await?;
//! # Ok(())
//! # }
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use backplane_core::{BackplaneStatus, HubError, ManagerOptions};
use tower::ServiceExt;

use crate::{Caller, Clients, Groups, Hub, HubBuilder, MethodError, SendError, access_token};

mod page;

pub use page::SIGNALR_CLIENT_VERSION;

/// Where the chat hub is mounted.
pub const HUB_PATH: &str = "/chathub";

/// The chat hub's name on the backplane.
pub const HUB_NAME: &str = "ChatHub";

/// Longest group name the chat hub accepts, in characters, so a client cannot make every
/// node hold arbitrarily large group keys.
pub const MAX_GROUP_NAME_CHARS: usize = 256;

/// How many groups one connection may be in at once, by default: a client choosing group
/// names could otherwise make every node hold as many as it likes. The `hub-server`
/// binary's `--max-groups-per-connection` changes it; for the library, pass
/// [`ManagerOptions::max_groups_per_connection`] to [`HubBuilder::manager_options`].
pub const MAX_GROUPS_PER_CONNECTION: usize = 100;

/// The chat hub: its methods and hooks, the access token as user id, and at most
/// [`MAX_GROUPS_PER_CONNECTION`] groups per connection. Add options or a backplane, then
/// [`HubBuilder::build`]. [`HubBuilder::manager_options`] replaces the group limit too:
/// set [`ManagerOptions::max_groups_per_connection`] in what you pass.
pub fn hub_builder() -> HubBuilder {
    Hub::builder(HUB_NAME)
        .manager_options(
            ManagerOptions::default().max_groups_per_connection(MAX_GROUPS_PER_CONNECTION),
        )
        .method("SendMessage", send_message)
        .method("JoinGroup", join_group)
        .method("LeaveGroup", leave_group)
        .method("SendMessageToGroup", send_message_to_group)
        .on_connected(user_connected)
        .on_disconnected(user_disconnected)
        .user_id(unverified_name)
}

/// The chat hub's user id without an authenticator: the access token the client sent,
/// taken as a display name (see the module documentation), unless it looks like a JWT
/// (three dot-separated base64url parts), which is refused as a name: the connection is
/// anonymous.
pub fn unverified_name(request: &axum::http::request::Parts) -> Option<String> {
    let token = access_token(request)?;
    if looks_like_jwt(&token) {
        tracing::warn!(
            "a client sent a JWT, but this server validates no tokens (start it with --jwt-key-file or --jwt-key-env): the connection is anonymous"
        );
        return None;
    }
    Some(token)
}

/// Whether `token` has the shape of a JWS compact serialization.
fn looks_like_jwt(token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    parts.len() == 3
        && parts[..2].iter().all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        && parts[0].starts_with("eyJ")
}

async fn send_message(clients: Clients, user: String, message: String) -> Result<(), MethodError> {
    clients
        .all()
        .send("ReceiveMessage", (&user, &message))
        .await
        .map_err(|error| unsent("Message not sent", error))
}

/// A send that failed, as the caller sees it. When the backplane (the other servers) is
/// out of reach, saying so tells the user that trying again later is the remedy, and that
/// nobody connected here got the message (see `ClientProxy::send`); the cause goes to the
/// log only.
fn unsent(what: &str, error: SendError) -> MethodError {
    match error {
        SendError::Hub(HubError::Backplane(cause)) => {
            tracing::warn!(%cause, "{what}: the backplane refused it");
            MethodError::new(format!(
                "{what}: this server cannot reach the other servers right now, and nobody \
                 connected to it received it. Try again later."
            ))
        }
        SendError::Hub(HubError::LocalOnly(cause)) => {
            tracing::warn!(%cause, "{what}: the other servers are out of reach; delivered here only");
            MethodError::new(format!(
                "{what}: this server cannot reach the other servers right now; only the people \
                 connected to it received it. Sending it again would repeat it for them."
            ))
        }
        other => MethodError::from(other),
    }
}

async fn join_group(
    caller: Caller,
    groups: Groups,
    clients: Clients,
    group: String,
) -> Result<(), MethodError> {
    check_group_name(&group)?;
    groups
        .add(caller.connection_id(), &group)
        .await
        .map_err(|error| match error {
            // The caller's own doing, and what to do about it: tell them.
            HubError::GroupRefused { reason, .. } => {
                MethodError::new(format!("cannot join group {group:?}: {reason}"))
            }
            other => MethodError::from(other),
        })?;
    tracing::debug!(connection_id = %caller.connection_id(), %group, "joined group");
    clients
        .group(group.clone())
        .send("UserJoinedGroup", (caller.user(), &group))
        .await?;
    Ok(())
}

async fn leave_group(
    caller: Caller,
    groups: Groups,
    clients: Clients,
    group: String,
) -> Result<(), MethodError> {
    check_group_name(&group)?;
    groups.remove(caller.connection_id(), &group).await?;
    tracing::debug!(connection_id = %caller.connection_id(), %group, "left group");
    clients
        .group(group.clone())
        .send("UserLeftGroup", (caller.user(), &group))
        .await?;
    Ok(())
}

async fn send_message_to_group(
    clients: Clients,
    group: String,
    user: String,
    message: String,
) -> Result<(), MethodError> {
    check_group_name(&group)?;
    clients
        .group(group.clone())
        .send("ReceiveGroupMessage", (&group, &user, &message))
        .await
        .map_err(|error| unsent("Message not sent", error))
}

async fn user_connected(caller: Caller, clients: Clients) -> Result<(), MethodError> {
    // A connection that cannot be announced is refused (the client sees this reason in
    // the Close message) rather than kept on a server cut off from the others. Once the
    // backplane's circuit is open, the announcement reaches this server's connections
    // (`LocalOnly`): the connection is kept, as one more user of this server while it is
    // cut off (refusing it now would leave the others with a `UserConnected` that no
    // `UserDisconnected` ever follows).
    match clients
        .all()
        .send("UserConnected", (caller.connection_id(),))
        .await
    {
        Ok(()) => Ok(()),
        Err(SendError::Hub(HubError::LocalOnly(cause))) => {
            tracing::warn!(%cause, "a connection was announced on this server only: the others are out of reach");
            Ok(())
        }
        Err(error) => Err(unsent("Connection refused", error)),
    }
}

async fn user_disconnected(caller: Caller, clients: Clients) -> Result<(), MethodError> {
    clients
        .all()
        .send("UserDisconnected", (caller.connection_id(),))
        .await?;
    Ok(())
}

fn check_group_name(group: &str) -> Result<(), MethodError> {
    if group.is_empty() {
        return Err(MethodError::new("The group name must not be empty."));
    }
    if group.chars().count() > MAX_GROUP_NAME_CHARS {
        return Err(MethodError::new(format!(
            "The group name must not be longer than {MAX_GROUP_NAME_CHARS} characters."
        )));
    }
    Ok(())
}

/// What `GET /health` says about this server besides the backplane state.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// The name this instance reports, so an operator can tell instances apart.
    pub name: String,
    /// Which backplane it runs on (`memory`, `postgres`).
    pub backplane: String,
}

impl ServerInfo {
    /// Info for a server called `name` on the backplane `backplane`.
    pub fn new(name: impl Into<String>, backplane: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            backplane: backplane.into(),
        }
    }
}

/// The whole chat application: `GET /` (the chat page for browsers, a short text for
/// everyone else) and the page's files under `/assets/`, `GET /health` (JSON), the hub at
/// [`HUB_PATH`], and CORS for the hub's
/// [`HubOptions::allowed_origins`](crate::HubOptions::allowed_origins): by default none
/// (same-origin only; the chat page is served by this same server), or the listed
/// origins with credentials (the binary's `--cors-origins`).
pub fn router(hub: &Hub, info: ServerInfo) -> Router {
    let cors = hub.options().allowed_origins.cors_layer();
    let routes = Router::new()
        .route("/health", get(health))
        .with_state((hub.clone(), info))
        .merge(page::routes())
        .merge(hub.router(HUB_PATH));
    // ASP.NET Core matches routes ignoring case and a trailing slash, and clients follow
    // its chat sample's `/chatHub`: such paths are served as their canonical form.
    let canonical = routes.clone();
    routes
        .fallback(move |request: Request| serve_canonical(canonical.clone(), request))
        .layer(cors)
}

/// The paths `router` serves, in the form its routes are written.
const CANONICAL_PATHS: [&str; 3] = [HUB_PATH, "/chathub/negotiate", "/health"];

/// Serve `request` through `routes` if its path is one of [`CANONICAL_PATHS`] up to ASCII
/// case and trailing slashes; otherwise 404.
async fn serve_canonical(routes: Router, mut request: Request) -> Response {
    let Some(path) = canonical_path(request.uri().path()) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let path_and_query = match request.uri().query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    let mut parts = request.uri().clone().into_parts();
    match path_and_query.parse() {
        Ok(rewritten) => parts.path_and_query = Some(rewritten),
        Err(_) => return StatusCode::NOT_FOUND.into_response(),
    }
    match axum::http::Uri::from_parts(parts) {
        Ok(uri) => *request.uri_mut() = uri,
        Err(_) => return StatusCode::NOT_FOUND.into_response(),
    }
    match routes.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// The canonical form of `path`, if it names one of [`CANONICAL_PATHS`] differently.
fn canonical_path(path: &str) -> Option<&'static str> {
    let trimmed = path.trim_end_matches('/');
    CANONICAL_PATHS
        .into_iter()
        .find(|canonical| trimmed.eq_ignore_ascii_case(canonical))
        .filter(|canonical| *canonical != path)
}

async fn health(State((hub, info)): State<(Hub, ServerInfo)>) -> Response {
    let health = hub.health();
    let healthy = health.status == BackplaneStatus::Connected;
    let mut backplane = serde_json::json!({
        "kind": info.backplane,
        "status": health.status.as_str(),
        "envelopesReceived": health.envelopes_received,
        "reconnects": health.reconnects,
        "envelopesLost": health.envelopes_lost,
        "envelopesRejected": health.envelopes_rejected,
    });
    if let BackplaneStatus::Disconnected { reason } = &health.status {
        backplane["reason"] = reason.clone().into();
    }
    // How long the link has been down tells a blip from an outage; how long the backend
    // has been silent shows a link that looks up but hears nothing (the lag).
    if let Some(since) = health.disconnected_since {
        backplane["disconnectedSince"] = rfc3339(since).into();
        let down = SystemTime::now().duration_since(since).unwrap_or_default();
        backplane["secondsDisconnected"] = seconds(down).into();
    }
    if let Some(silence) = health.since_last_heard {
        backplane["secondsSinceLastHeard"] = seconds(silence).into();
    }
    let body = serde_json::json!({
        "status": if healthy { "healthy" } else { "degraded" },
        "server": info.name,
        "time": rfc3339(SystemTime::now()),
        "hub": hub.name(),
        "connections": hub.connection_count(),
        "backplane": backplane,
    });
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// Log every change of the hub's backplane state until the backplane stops, so operators
/// see disconnections and recoveries without polling `/health`.
pub async fn log_backplane_state(hub: Hub) {
    let mut last = None;
    let mut lost = 0;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        ticker.tick().await;
        let health = hub.health();
        if last.as_ref() != Some(&health.status) {
            match &health.status {
                BackplaneStatus::Connected => {
                    tracing::info!(
                        hub = hub.name(),
                        reconnects = health.reconnects,
                        "backplane connected"
                    );
                }
                BackplaneStatus::Connecting => {
                    tracing::info!(hub = hub.name(), "backplane connecting")
                }
                BackplaneStatus::Disconnected { reason } => {
                    tracing::warn!(hub = hub.name(), %reason, "backplane disconnected");
                }
                BackplaneStatus::Stopped => {
                    tracing::info!(hub = hub.name(), "backplane stopped");
                    return;
                }
                other => tracing::info!(
                    hub = hub.name(),
                    status = other.as_str(),
                    "backplane state changed"
                ),
            }
            last = Some(health.status.clone());
        }
        if health.envelopes_lost > lost {
            tracing::error!(
                hub = hub.name(),
                lost = health.envelopes_lost - lost,
                "backplane reported lost envelopes"
            );
            lost = health.envelopes_lost;
        }
    }
}

/// `duration` in seconds, to the millisecond.
fn seconds(duration: Duration) -> f64 {
    (duration.as_millis() as f64) / 1000.0
}

/// `time` as an RFC 3339 UTC timestamp with milliseconds, e.g. `2025-01-31T12:00:00.000Z`.
fn rfc3339(time: SystemTime) -> String {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (hour, minute, second) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{:03}Z",
        since_epoch.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_timestamps() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap_day = UNIX_EPOCH + Duration::from_millis(951_782_400_123);
        assert_eq!(rfc3339(leap_day), "2000-02-29T00:00:00.123Z");
        let late = UNIX_EPOCH + Duration::from_secs(4_102_444_799);
        assert_eq!(rfc3339(late), "2099-12-31T23:59:59.000Z");
    }

    #[test]
    fn jwts_are_never_taken_as_names() {
        let request = |token: &str| {
            axum::http::Request::get(format!("/chathub?access_token={token}"))
                .body(())
                .unwrap()
                .into_parts()
                .0
        };
        assert_eq!(unverified_name(&request("ann")).as_deref(), Some("ann"));
        assert_eq!(unverified_name(&request("a.b.c")).as_deref(), Some("a.b.c"));
        assert_eq!(
            unverified_name(&request("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbm4ifQ.c2ln")),
            None
        );
    }

    #[test]
    fn group_names_are_checked() {
        assert!(check_group_name("room").is_ok());
        assert!(check_group_name("").unwrap_err().is_for_caller());
        assert!(check_group_name(&"x".repeat(MAX_GROUP_NAME_CHARS)).is_ok());
        assert!(check_group_name(&"x".repeat(MAX_GROUP_NAME_CHARS + 1)).is_err());
    }
}
