//! The chat application's router: the page, `GET /health`, the hub with CORS, and
//! ASP.NET Core's case- and trailing-slash-insensitive paths.

use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use backplane_core::BackplaneStatus;
use tower::ServiceExt;

use super::{HUB_PATH, page};
use crate::Hub;

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
    // Hearing the other servers is not enough: a server whose publishes fail refuses
    // every new connection and fails every send, so it is degraded too.
    let healthy = health.status == BackplaneStatus::Connected && health.publish_failing.is_none();
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
    match &health.publish_failing {
        None => backplane["publishing"] = "ok".into(),
        Some(failing) => {
            backplane["publishing"] = "failing".into();
            backplane["publishFailingSince"] = rfc3339(failing.since).into();
            // The kind only: a backend's text may quote stored data; the log has it.
            backplane["lastPublishFailure"] = failing.last_failure.as_str().into();
        }
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

/// `duration` in seconds, to the millisecond.
fn seconds(duration: Duration) -> f64 {
    (duration.as_millis() as f64) / 1000.0
}

/// `time` as an RFC 3339 UTC timestamp with milliseconds, e.g. `2025-01-31T12:00:00.000Z`
/// (the calendar from the `time` crate).
fn rfc3339(time: SystemTime) -> String {
    let at = time::OffsetDateTime::from(time);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    #[test]
    fn formats_timestamps() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap_day = UNIX_EPOCH + Duration::from_millis(951_782_400_123);
        assert_eq!(rfc3339(leap_day), "2000-02-29T00:00:00.123Z");
        let late = UNIX_EPOCH + Duration::from_secs(4_102_444_799);
        assert_eq!(rfc3339(late), "2099-12-31T23:59:59.000Z");
    }
}
