//! The `hub-server` binary under attack and with authentication on: JWT validation on
//! negotiate and on a direct WebSocket connect, the negotiate-token cap (503 with
//! Retry-After, and the process's RSS bounded), origins, and no token in the log.

mod support;

use std::time::Duration;
use support::{
    JWT_FLAGS, PATIENCE, SECRET, Server, hammer, jwt, negotiate, now, request, websocket,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn only_valid_tokens_negotiate_or_connect_and_none_reaches_the_log() {
    let mut server = Server::start(&JWT_FLAGS).await;
    let address = server.address.clone();
    let good = jwt("ann", "chat", now() + 600, SECRET);
    let (status, _, body) = request(&address, &negotiate(Some(&good))).await;
    assert_eq!(status, 200, "{body}");
    let bad = [
        ("missing", None),
        ("expired", Some(jwt("ann", "chat", now() - 3600, SECRET))),
        (
            "wrong signature",
            Some(jwt("ann", "chat", now() + 600, "another secret entirely")),
        ),
        (
            "wrong audience",
            Some(jwt("ann", "other", now() + 600, SECRET)),
        ),
    ];
    for (what, token) in &bad {
        let (status, head, body) = request(&address, &negotiate(token.as_deref())).await;
        assert_eq!(status, 401, "negotiate with a {what} token: {body}");
        assert!(head.contains("www-authenticate: bearer"), "{head}");
        // A direct WebSocket connect (skipNegotiation): refused before any upgrade.
        let (status, _, body) = request(&address, &websocket(token.as_deref().unwrap_or(""))).await;
        assert_eq!(status, 401, "WebSocket with a {what} token: {body}");
    }
    let (status, _, _) = request(&address, &websocket(&good)).await;
    assert_eq!(status, 101, "a valid token upgrades");
    let log = server.drain_log().await;
    for token in std::iter::once(&good).chain(bad.iter().filter_map(|(_, t)| t.as_ref())) {
        assert!(
            !log.contains(token.as_str()),
            "a token reached the log:\n{log}"
        );
    }
}

#[tokio::test]
async fn origins_other_than_the_servers_own_and_the_listed_ones_are_refused() {
    let server = Server::start(&["--cors-origins", "https://app.example"]).await;
    let address = server.address.clone();
    let preflight = |origin: &str| {
        format!(
            "OPTIONS /chathub/negotiate HTTP/1.1\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: POST\r\n"
        )
    };
    let (_, head, _) = request(&address, &preflight("https://app.example")).await;
    assert!(
        head.contains("access-control-allow-origin: https://app.example"),
        "{head}"
    );
    assert!(
        head.contains("access-control-allow-credentials: true"),
        "{head}"
    );
    let (_, head, _) = request(&address, &preflight("https://evil.example")).await;
    assert!(!head.contains("access-control-allow-origin"), "{head}");
    let with_origin = |head: String, origin: &str| format!("{head}Origin: {origin}\r\n");
    for (origin, expected) in [
        ("https://app.example", 200),
        (&format!("http://{address}") as &str, 200),
        ("https://evil.example", 403),
    ] {
        let (status, _, body) = request(&address, &with_origin(negotiate(None), origin)).await;
        assert_eq!(status, expected, "negotiate from {origin}: {body}");
        let (status, _, body) = request(&address, &with_origin(websocket("ann"), origin)).await;
        let expected = if expected == 200 { 101 } else { 403 };
        assert_eq!(status, expected, "WebSocket from {origin}: {body}");
    }
}

/// The attack script: one client negotiates as fast as it can without ever connecting.
/// With the cap, negotiate turns to 503 + Retry-After and the server's RSS stays within
/// a bound that 100,000 held tokens (without the cap) would exceed.
#[tokio::test]
async fn negotiate_tokens_are_capped_and_the_memory_stays_bounded() {
    let server = Server::start(&[
        "--max-pending-negotiations",
        "2000",
        "--negotiate-timeout",
        "600",
    ])
    .await;
    let address = server.address.clone();
    let before = server.rss_kib();
    let mut refused = 0;
    let mut retry_after = false;
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let address = address.clone();
            tokio::spawn(async move { hammer(&address, 12_500).await })
        })
        .collect();
    for worker in workers {
        let (count, seen_retry_after) = worker.await.unwrap();
        refused += count;
        retry_after |= seen_retry_after.as_deref() == Some("600");
    }
    let after = server.rss_kib();
    let grown = after.saturating_sub(before);
    assert!(
        grown < 8 * 1024,
        "RSS grew by {grown} KiB ({before} -> {after})"
    );
    assert!(
        refused >= 95_000,
        "only {refused} negotiations were refused"
    );
    assert!(retry_after, "503 without Retry-After");
}

/// Tokens nobody uses are swept on the server's own timer, not only when someone
/// negotiates again: after a flood to the cap and the negotiate timeout, with no request
/// meanwhile, `/metrics` shows none outstanding, and the cap has room for a new flood.
#[tokio::test]
async fn expired_negotiate_tokens_are_swept_without_further_requests() {
    let server = Server::start(&[
        "--max-pending-negotiations",
        "500",
        "--negotiate-timeout",
        "2",
    ])
    .await;
    let address = server.address.clone();
    let (refused, _) = hammer(&address, 600).await;
    assert_eq!(refused, 100, "the cap holds 500");
    assert_eq!(outstanding_tokens(&address).await, 500);
    // Nothing negotiates now; the sweep runs twice per token lifetime.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while outstanding_tokens(&address).await != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "expired tokens were never swept"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (refused, _) = hammer(&address, 500).await;
    assert_eq!(refused, 0, "the swept tokens left room for as many again");
}

/// `signalr_negotiate_tokens_outstanding` of the chat hub, from `GET /metrics`.
async fn outstanding_tokens(address: &str) -> u64 {
    let (status, _, body) = request(address, "GET /metrics HTTP/1.1\r\n").await;
    assert_eq!(status, 200, "{body}");
    body.lines()
        .find(|line| line.starts_with("signalr_negotiate_tokens_outstanding{"))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse::<f64>().ok())
        .map(|value| value as u64)
        .unwrap_or_else(|| panic!("no token gauge in:\n{body}"))
}

#[tokio::test]
async fn connections_past_the_limit_are_refused() {
    let server = Server::start(&["--max-connections", "2"]).await;
    let address = server.address.clone();
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        let head = format!("{}Host: {address}\r\n\r\n", websocket("ann"));
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut buf = [0u8; 12];
        stream.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"HTTP/1.1 101");
        open.push(stream);
    }
    let (status, head, _) = request(&address, &websocket("bob")).await;
    assert_eq!(status, 503, "{head}");
    assert!(head.contains("retry-after"), "{head}");
    let (status, _, _) = request(&address, &negotiate(None)).await;
    assert_eq!(status, 503);
    drop(open);
    // Once they are gone, there is room again.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (status, _, _) = request(&address, &negotiate(None)).await;
        if status == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no room after the connections ended"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
