//! The chat page: `GET /` for browsers, and the files it loads from `/assets/`.
//!
//! Every file is embedded in the binary at build time from `hub-server/assets/`, so
//! `cargo run -p hub-server` serves a working page on a machine without Node or a network.
//! Among them is the official SignalR browser client, `signalr.min.js` of the npm package
//! `@microsoft/signalr` at [`SIGNALR_CLIENT_VERSION`], committed with its license and
//! checked byte for byte against the package that `tests/js/package-lock.json` pins.
//!
//! `GET /` answers the page only to a client that asks for HTML by name (browsers do);
//! anything else, `curl` and `Accept: text/plain` included, still gets the short text.
//!
//! Caching: the SignalR bundle has its version in its path, so it is cached for a year
//! and never revalidated; the page's own files carry an `ETag` and `Cache-Control:
//! no-cache`, so a browser revalidates them on every load and gets a `304` until the
//! binary changes. The page is sent with a `Content-Security-Policy` that allows only
//! this origin: no inline script or style, no other host.

use axum::Router;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH, REFERRER_POLICY,
    VARY, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The version of `@microsoft/signalr` whose browser bundle the page loads; the same as
/// `tests/js/package-lock.json` pins (a test checks).
pub const SIGNALR_CLIENT_VERSION: &str = "10.0.11";

/// Where the SignalR bundle is served: versioned, so it can be cached forever.
const SIGNALR_PATH: &str = "/assets/signalr-10.0.11.min.js";

/// What `GET /` answers clients that do not ask for HTML.
const INDEX_TEXT: &str = "SignalR chat server (Rust). Hub: /chathub. Health: /health.\n";

/// Only this origin, for everything; the WebSocket to the hub is `'self'` too.
const CONTENT_SECURITY_POLICY_VALUE: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// How long a file may be reused without asking again.
#[derive(Debug, Clone, Copy)]
enum Caching {
    /// Revalidate on every use (with the `ETag`): the file changes with the binary.
    Revalidate,
    /// Keep for a year: the path changes when the content does.
    Immutable,
}

/// One embedded file and how it is served.
#[derive(Debug)]
struct Asset {
    /// The path it is served at.
    path: &'static str,
    /// Its `Content-Type`.
    content_type: &'static str,
    /// Its bytes, embedded at build time.
    body: &'static [u8],
    /// Its `Cache-Control`.
    caching: Caching,
    /// Whether the page's `Content-Security-Policy` goes with it (documents only).
    document: bool,
}

/// The page itself, served at `/` to browsers.
static PAGE: Asset = Asset {
    path: "/",
    content_type: "text/html; charset=utf-8",
    body: include_bytes!("../../assets/index.html"),
    caching: Caching::Revalidate,
    document: true,
};

/// The files the page loads.
static ASSETS: [Asset; 4] = [
    Asset {
        path: "/assets/chat.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../assets/chat.js"),
        caching: Caching::Revalidate,
        document: false,
    },
    Asset {
        path: "/assets/chat.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../assets/chat.css"),
        caching: Caching::Revalidate,
        document: false,
    },
    Asset {
        path: "/assets/favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../../assets/favicon.svg"),
        caching: Caching::Revalidate,
        document: false,
    },
    Asset {
        path: SIGNALR_PATH,
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../assets/signalr.min.js"),
        caching: Caching::Immutable,
        document: false,
    },
];

/// `GET /` (the page or the short text) and the page's files.
pub(super) fn routes() -> Router {
    let mut router = Router::new().route("/", get(index));
    for asset in &ASSETS {
        router = router.route(
            asset.path,
            get(move |headers: HeaderMap| async move { serve(asset, &headers) }),
        );
    }
    router
}

async fn index(headers: HeaderMap) -> Response {
    let mut response = if wants_html(&headers) {
        serve(&PAGE, &headers)
    } else {
        ([(CONTENT_TYPE, "text/plain; charset=utf-8")], INDEX_TEXT).into_response()
    };
    // Caches must keep the two answers apart.
    response
        .headers_mut()
        .insert(VARY, HeaderValue::from_static("accept"));
    response
}

/// `asset`, or `304 Not Modified` when the request already has this version of it.
fn serve(asset: &Asset, request: &HeaderMap) -> Response {
    let etag = format!("\"{:016x}\"", fnv1a(asset.body));
    let cache_control = match asset.caching {
        Caching::Revalidate => "no-cache",
        Caching::Immutable => "public, max-age=31536000, immutable",
    };
    let mut headers = HeaderMap::new();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(cache_control));
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(ETAG, value);
    }
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if asset.document {
        headers.insert(
            CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY_VALUE),
        );
        headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    }
    if has_etag(request, &etag) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    (headers, asset.body).into_response()
}

/// Whether `If-None-Match` names `etag` (or `*`). Weak comparison, as RFC 9110 asks for
/// this header.
fn has_etag(request: &HeaderMap, etag: &str) -> bool {
    request
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == "*" || tag == etag)
}

/// Whether the client asks for HTML by name, at least as much as for plain text. A bare
/// `*/*` (curl, scripts) keeps the text answer.
fn wants_html(headers: &HeaderMap) -> bool {
    let mut html = 0.0_f32;
    let mut text = 0.0_f32;
    let ranges = headers
        .get_all(axum::http::header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','));
    for range in ranges {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let quality = parts
            .filter_map(|parameter| parameter.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        match media.as_str() {
            "text/html" | "application/xhtml+xml" => html = html.max(quality),
            "text/plain" | "text/*" | "*/*" => text = text.max(quality),
            _ => {}
        }
    }
    html > 0.0 && html >= text
}

/// A 64-bit FNV-1a hash: enough to tell two versions of a file apart in an `ETag`, and
/// the same in every process built from the same sources (unlike `DefaultHasher`, whose
/// algorithm may change between Rust releases).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            axum::http::header::ACCEPT,
            HeaderValue::from_str(value).unwrap(),
        );
        headers
    }

    #[test]
    fn browsers_get_html_and_everyone_else_text() {
        let chromium = "text/html,application/xhtml+xml,application/xml;q=0.9,\
                        image/avif,image/webp,image/apng,*/*;q=0.8";
        assert!(wants_html(&accept(chromium)));
        assert!(wants_html(&accept("text/html")));
        assert!(!wants_html(&HeaderMap::new()));
        assert!(!wants_html(&accept("*/*")));
        assert!(!wants_html(&accept("text/plain")));
        assert!(!wants_html(&accept("text/plain, text/html;q=0.5")));
        assert!(!wants_html(&accept("text/html;q=0")));
    }

    #[test]
    fn if_none_match_is_compared_weakly_and_in_lists() {
        let etag = "\"0123\"";
        let request = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(IF_NONE_MATCH, HeaderValue::from_str(value).unwrap());
            headers
        };
        assert!(has_etag(&request("\"0123\""), etag));
        assert!(has_etag(&request("W/\"0123\""), etag));
        assert!(has_etag(&request("\"abc\", \"0123\""), etag));
        assert!(has_etag(&request("*"), etag));
        assert!(!has_etag(&request("\"abc\""), etag));
        assert!(!has_etag(&HeaderMap::new(), etag));
    }

    #[test]
    fn the_page_loads_the_bundle_at_its_versioned_path() {
        assert!(SIGNALR_PATH.contains(SIGNALR_CLIENT_VERSION));
        let page = std::str::from_utf8(PAGE.body).unwrap();
        assert!(page.contains(&format!("src=\"{SIGNALR_PATH}\"")), "{page}");
        for asset in &ASSETS[..3] {
            assert!(
                page.contains(asset.path),
                "{} is not loaded by the page",
                asset.path
            );
        }
        // Screen readers announce new lines and state changes.
        assert!(page.contains(r#"role="log" aria-live="polite""#), "{page}");
        assert!(page.contains(r#"id="status" role="status""#), "{page}");
        // No inline script or style: the Content-Security-Policy would block it.
        assert!(
            !page.contains("<script>") && !page.contains("<style"),
            "{page}"
        );
        let handlers: Vec<&str> = page
            .split_whitespace()
            .filter(|word| word.starts_with("on") && word.contains('='))
            .collect();
        assert!(handlers.is_empty(), "inline event handlers: {handlers:?}");
    }

    /// The workspace's `tests/js`, where the pinned npm packages are.
    fn js_dir() -> &'static Path {
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/js"))
    }

    #[test]
    fn the_bundle_version_is_the_one_the_package_lock_pins() {
        let lock = std::fs::read_to_string(js_dir().join("package-lock.json")).unwrap();
        let lock: serde_json::Value = serde_json::from_str(&lock).unwrap();
        assert_eq!(
            lock["packages"]["node_modules/@microsoft/signalr"]["version"], SIGNALR_CLIENT_VERSION,
            "update hub-server/assets/signalr.min.js and SIGNALR_CLIENT_VERSION together \
             with tests/js (see hub-server/README.md)"
        );
    }

    #[test]
    fn the_committed_bundle_is_the_pinned_packages_file() {
        let package = js_dir().join("node_modules/@microsoft/signalr");
        let Ok(installed) = std::fs::read(package.join("dist/browser/signalr.min.js")) else {
            eprintln!(
                "skipped: {} is not installed (run npm ci in tests/js)",
                package.display()
            );
            return;
        };
        let signalr = ASSETS
            .iter()
            .find(|asset| asset.path == SIGNALR_PATH)
            .unwrap();
        assert!(
            signalr.body == installed.as_slice(),
            "hub-server/assets/signalr.min.js differs from the installed package's \
             dist/browser/signalr.min.js: copy it again (see hub-server/README.md)"
        );
    }
}
