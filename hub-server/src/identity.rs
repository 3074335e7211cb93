//! Who a connection belongs to: the hook that derives a user id from the request.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::Query;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

/// Derives the user id of a connection from the request that opens its WebSocket (headers,
/// query, extensions set by your own tower layers). The id is what
/// [`Clients::user`](crate::Clients::user) targets and [`Caller::user`](crate::Caller::user)
/// reports; `None` means an anonymous connection.
pub type UserIdProvider = Arc<dyn Fn(&Parts) -> Option<String> + Send + Sync>;

/// The access token a SignalR client sent: the `Authorization: Bearer` header (non-browser
/// clients), or else the `access_token` query parameter (browsers, which cannot set headers
/// on WebSockets).
///
/// This only extracts the token; it proves nothing. Validate it (for example as a JWT) in
/// your [`UserIdProvider`] before trusting what it says.
///
/// ```
/// use axum::http::Request;
/// use hub_server::access_token;
///
/// let (parts, ()) = Request::get("/chathub?id=x&access_token=a%20b").body(()).unwrap().into_parts();
/// assert_eq!(access_token(&parts).as_deref(), Some("a b"));
/// let (parts, ()) = Request::get("/chathub").header("authorization", "Bearer t0k").body(()).unwrap().into_parts();
/// assert_eq!(access_token(&parts).as_deref(), Some("t0k"));
/// ```
pub fn access_token(parts: &Parts) -> Option<String> {
    let from_header = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, token) = value.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|token| !token.is_empty());
    if let Some(token) = from_header {
        return Some(token.to_owned());
    }
    let Query(mut query) = Query::<HashMap<String, String>>::try_from_uri(&parts.uri).ok()?;
    query
        .remove("access_token")
        .filter(|token| !token.is_empty())
}
