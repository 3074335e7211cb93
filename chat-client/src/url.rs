//! The hub URL and the URLs derived from it (negotiate, WebSocket).
//!
//! The rules follow the official JavaScript client so that a URL that works there works
//! here: the negotiate URL is the hub path plus `/negotiate`, keeping the caller's query;
//! the WebSocket URL is the hub URL with `ws` for `http` and the connection token in `id`.

use hyper::Uri;

use crate::error::ConnectError;

/// A parsed `http://` (or `ws://`) hub URL, split into what the HTTP and WebSocket clients
/// need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HubUrl {
    /// `host:port` (port always present), what the TCP connection dials.
    pub(crate) address: String,
    /// The `Host` header value: the authority as the user wrote it.
    pub(crate) host_header: String,
    /// Path of the hub, never empty, without a trailing `?`.
    pub(crate) path: String,
    /// The query the caller put on the URL, without the `?`; kept on every derived URL.
    pub(crate) query: Option<String>,
}

impl HubUrl {
    /// Parses an absolute hub URL.
    ///
    /// `http` and `ws` are accepted (both mean plain TCP); `https` and `wss` are refused with
    /// a clear error because this build has no TLS.
    ///
    /// # Errors
    ///
    /// [`ConnectError::InvalidUrl`] when the URL is not absolute, has no host, or uses
    /// another scheme.
    pub(crate) fn parse(url: &str) -> Result<HubUrl, ConnectError> {
        let invalid = |reason: &str| ConnectError::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let absolute = || invalid("the URL must be absolute, e.g. http://localhost:5000/chathub");
        if !url.contains("://") {
            return Err(absolute());
        }
        let uri: Uri = url.parse().map_err(|_| invalid("not a valid URL"))?;
        let scheme = uri.scheme_str().ok_or_else(absolute)?;
        let default_port = match scheme.to_ascii_lowercase().as_str() {
            "http" | "ws" => 80,
            "https" | "wss" => {
                return Err(invalid(
                    "https and wss need TLS, which this client does not support; use http",
                ));
            }
            _ => return Err(invalid("the scheme must be http or ws")),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| invalid("the URL has no host"))?;
        if authority.as_str().contains('@') {
            return Err(invalid("credentials in the URL are not supported"));
        }
        let host = authority.host();
        if host.is_empty() {
            return Err(invalid("the URL has no host"));
        }
        let port = authority.port_u16().unwrap_or(default_port);
        // `Authority::host` keeps the brackets of an IPv6 literal, which is what dialing needs.
        let address = format!("{host}:{port}");
        let path = match uri.path() {
            "" => "/".to_owned(),
            path => path.to_owned(),
        };
        Ok(HubUrl {
            address,
            host_header: authority.as_str().to_owned(),
            path,
            query: uri
                .query()
                .filter(|query| !query.is_empty())
                .map(str::to_owned),
        })
    }

    /// The path and query of the negotiate request: `{path}/negotiate?{query}&negotiateVersion=1`,
    /// plus `&useStatefulReconnect=true` when the client asks for stateful reconnect.
    pub(crate) fn negotiate_target(&self, stateful_reconnect: bool) -> String {
        let mut target = self.path.clone();
        if !target.ends_with('/') {
            target.push('/');
        }
        target.push_str("negotiate");
        let mut query = self.query.clone().unwrap_or_default();
        if !query.contains("negotiateVersion") {
            append_pair(&mut query, "negotiateVersion", "1");
        }
        if stateful_reconnect {
            append_pair(&mut query, "useStatefulReconnect", "true");
        }
        target.push('?');
        target.push_str(&query);
        target
    }

    /// The full `ws://` URL of the WebSocket transport, with the connection token (absent
    /// when negotiate was skipped) and the access token as query parameters.
    pub(crate) fn websocket_url(
        &self,
        connection_token: Option<&str>,
        access_token: Option<&str>,
    ) -> String {
        let mut query = self.query.clone().unwrap_or_default();
        if let Some(token) = connection_token {
            append_pair(&mut query, "id", token);
        }
        if let Some(token) = access_token {
            append_pair(&mut query, "access_token", token);
        }
        let mut url = format!("ws://{}{}", self.host_header, self.path);
        if !query.is_empty() {
            url.push('?');
            url.push_str(&query);
        }
        url
    }

    /// The path and query of the HTTP transports' requests (Server-Sent Events, long
    /// polling, and their sends): `{path}?{query}&id={token}`, plus the access token when
    /// it must travel in the query (Server-Sent Events, as the official clients do).
    pub(crate) fn connection_target(
        &self,
        connection_token: &str,
        access_token: Option<&str>,
    ) -> String {
        let mut query = self.query.clone().unwrap_or_default();
        append_pair(&mut query, "id", connection_token);
        if let Some(token) = access_token {
            append_pair(&mut query, "access_token", token);
        }
        format!("{}?{query}", self.path)
    }

    /// The URL for messages: `http://host:port/path`, without the query (which may hold
    /// secrets the user passed in).
    pub(crate) fn display(&self) -> String {
        format!("http://{}{}", self.host_header, self.path)
    }
}

/// Appends `name=value` to a query string, percent-encoding the value.
fn append_pair(query: &mut String, name: &str, value: &str) {
    if !query.is_empty() {
        query.push('&');
    }
    query.push_str(name);
    query.push('=');
    percent_encode(query, value);
}

/// Percent-encodes everything but the unreserved characters of RFC 3986, so tokens with
/// `+`, `/`, `=` or `&` (base64, JWTs) survive the trip.
fn percent_encode(out: &mut String, value: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0F)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiate_url_keeps_query_and_adds_version() {
        let url = HubUrl::parse("http://localhost:5000/chathub").unwrap();
        assert_eq!(url.address, "localhost:5000");
        assert_eq!(
            url.negotiate_target(false),
            "/chathub/negotiate?negotiateVersion=1"
        );
        assert_eq!(
            url.negotiate_target(true),
            "/chathub/negotiate?negotiateVersion=1&useStatefulReconnect=true"
        );

        let url = HubUrl::parse("http://example.com/hubs/chat/?tenant=a%20b").unwrap();
        assert_eq!(url.address, "example.com:80");
        assert_eq!(
            url.negotiate_target(false),
            "/hubs/chat/negotiate?tenant=a%20b&negotiateVersion=1"
        );
        let url = HubUrl::parse("http://h:1/x?negotiateVersion=0").unwrap();
        assert_eq!(
            url.negotiate_target(false),
            "/x/negotiate?negotiateVersion=0"
        );
    }

    #[test]
    fn websocket_url_carries_tokens_encoded() {
        let url = HubUrl::parse("http://127.0.0.1:5000/chathub?x=1").unwrap();
        assert_eq!(
            url.websocket_url(Some("a+b/c="), Some("tok en&")),
            "ws://127.0.0.1:5000/chathub?x=1&id=a%2Bb%2Fc%3D&access_token=tok%20en%26"
        );
        let url = HubUrl::parse("ws://[::1]:5000/chathub").unwrap();
        assert_eq!(url.address, "[::1]:5000");
        assert_eq!(url.websocket_url(None, None), "ws://[::1]:5000/chathub");
    }

    #[test]
    fn http_transport_target_carries_the_token_encoded() {
        let url = HubUrl::parse("http://127.0.0.1:5000/chathub?x=1").unwrap();
        assert_eq!(url.connection_target("a+b", None), "/chathub?x=1&id=a%2Bb");
        assert_eq!(
            url.connection_target("t", Some("j w t")),
            "/chathub?x=1&id=t&access_token=j%20w%20t"
        );
    }

    #[test]
    fn bad_urls_are_refused_with_a_reason() {
        for (url, reason) in [
            ("localhost:5000/chathub", "absolute"),
            ("/chathub", "absolute"),
            ("https://localhost/chathub", "TLS"),
            ("ftp://localhost/chathub", "scheme"),
            ("http://user:pw@localhost/chathub", "credentials"),
            ("http://not a url", "valid"),
        ] {
            let error = HubUrl::parse(url).unwrap_err().to_string();
            assert!(error.contains(reason), "{url}: {error}");
        }
    }
}
