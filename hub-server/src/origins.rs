//! Which web pages may talk to a hub: CORS for negotiate and the HTTP transports, and the
//! same list checked on every request that carries an `Origin` header (a browser's), the
//! WebSocket upgrade included, which CORS does not cover.
//!
//! The default is same-origin only, as ASP.NET Core has no CORS unless the application
//! adds it: pages served by the hub's own server work, pages elsewhere are refused. Clients
//! outside browsers send no `Origin` and are never refused here.

use std::fmt;

use axum::http::header::{HOST, ORIGIN};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowHeaders, AllowMethods, AllowOrigin, CorsLayer};

/// The origins (scheme, host and port, as browsers send them: `https://app.example`)
/// that may use a hub from a browser, besides the hub's own.
#[derive(Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum AllowedOrigins {
    /// Only pages served from the hub's own host (the `Origin`'s host and port equal the
    /// request's `Host`). The default.
    #[default]
    SameOrigin,
    /// The hub's own host and these origins; CORS answers them with credentials allowed
    /// (cookies and the `Authorization` header), and only them.
    List(Vec<String>),
    /// Every origin, without credentials (`Access-Control-Allow-Origin: *`): browsers
    /// then send no cookies, and a page must pass its token with `accessTokenFactory`.
    Any,
}

impl AllowedOrigins {
    /// Parse the `--cors-origins` form: origins separated by commas, `*` for any, empty
    /// for same-origin only. Trailing slashes are dropped.
    ///
    /// ```
    /// use hub_server::AllowedOrigins;
    ///
    /// assert_eq!(AllowedOrigins::parse(""), AllowedOrigins::SameOrigin);
    /// assert_eq!(AllowedOrigins::parse("*"), AllowedOrigins::Any);
    /// assert_eq!(
    ///     AllowedOrigins::parse("https://a.example/, http://localhost:3000"),
    ///     AllowedOrigins::List(vec!["https://a.example".into(), "http://localhost:3000".into()])
    /// );
    /// ```
    pub fn parse(list: &str) -> Self {
        let origins: Vec<String> = list
            .split(',')
            .map(|origin| origin.trim().trim_end_matches('/').to_owned())
            .filter(|origin| !origin.is_empty())
            .collect();
        if origins.iter().any(|origin| origin == "*") {
            Self::Any
        } else if origins.is_empty() {
            Self::SameOrigin
        } else {
            Self::List(origins)
        }
    }

    /// Whether a request with `parts` may proceed: it has no `Origin` (not a browser, or a
    /// same-origin GET), or its origin is the request's own host, or it is allowed.
    pub fn allows(&self, parts: &Parts) -> bool {
        let Some(origin) = parts.headers.get(ORIGIN) else {
            return true;
        };
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        if self == &Self::Any {
            return true;
        }
        let same_host = parts
            .headers
            .get(HOST)
            .and_then(|host| host.to_str().ok())
            .is_some_and(|host| {
                origin
                    .split_once("://")
                    .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host))
            });
        same_host
            || matches!(self, Self::List(origins)
                if origins.iter().any(|allowed| allowed.eq_ignore_ascii_case(origin)))
    }

    /// The 403 a refused origin gets.
    pub(crate) fn refusal() -> Response {
        (
            StatusCode::FORBIDDEN,
            "Origin not allowed: this server accepts browser requests from its own origin and the origins it was configured with (--cors-origins).",
        )
            .into_response()
    }

    /// The CORS layer for these origins, to wrap the hub's router in (the chat router
    /// does). Same-origin only: a layer that allows no other origin. A list: those origins
    /// with credentials. Any: `*`, no credentials. Methods and request headers are
    /// mirrored (the clients send `X-Requested-With`, `X-SignalR-User-Agent` and
    /// `Authorization`).
    pub fn cors_layer(&self) -> CorsLayer {
        let layer = CorsLayer::new()
            .allow_methods(AllowMethods::mirror_request())
            .allow_headers(AllowHeaders::mirror_request());
        match self {
            Self::SameOrigin => layer.allow_origin(AllowOrigin::list([])),
            Self::List(origins) => layer
                .allow_origin(AllowOrigin::list(
                    origins
                        .iter()
                        .filter_map(|origin| HeaderValue::from_str(origin).ok()),
                ))
                .allow_credentials(true),
            Self::Any => layer.allow_origin(AllowOrigin::any()),
        }
    }
}

impl fmt::Debug for AllowedOrigins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SameOrigin => f.write_str("SameOrigin"),
            Self::List(origins) => f.debug_tuple("List").field(origins).finish(),
            Self::Any => f.write_str("Any"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;

    fn request(origin: Option<&str>) -> Parts {
        let mut builder = Request::get("/chathub").header(HOST, "chat.example:5000");
        if let Some(origin) = origin {
            builder = builder.header(ORIGIN, origin);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn same_origin_and_listed_origins_pass() {
        let same = AllowedOrigins::SameOrigin;
        assert!(same.allows(&request(None)));
        assert!(same.allows(&request(Some("http://chat.example:5000"))));
        assert!(!same.allows(&request(Some("http://evil.example"))));
        assert!(!same.allows(&request(Some("http://chat.example:5001"))));
        let list = AllowedOrigins::parse("https://app.example");
        assert!(list.allows(&request(Some("https://app.example"))));
        assert!(list.allows(&request(Some("http://chat.example:5000"))));
        assert!(!list.allows(&request(Some("http://app.example"))));
        assert!(AllowedOrigins::Any.allows(&request(Some("http://evil.example"))));
    }
}
