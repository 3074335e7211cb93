//! Attack scripts against the `hub-server` binary, with its resident memory read from
//! `/proc/<pid>/status` before and after: a negotiate flood until the cap and then until
//! the tokens expire and the sweep frees them, and user ids (from a JWT's `sub`, or the
//! unverified name of an anonymous chat) longer than `--max-user-id-bytes`; idle HTTP
//! connections beyond `--max-http-connections`, and request heads over 64 KiB.

mod support;

use std::time::Duration;

use support::{
    JWT_FLAGS, PATIENCE, SECRET, Server, hammer, jwt, negotiate, now, request, websocket,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// Negotiate tokens the flood server holds at most.
const CAP: usize = 100_000;

/// `--negotiate-timeout` of the flood server, in seconds: longer than the flood takes
/// (so it meets the cap, not expiries), short enough to wait for.
const NEGOTIATE_TIMEOUT: u64 = 90;

/// How far above its baseline the server's RSS may stay once every token of the flood
/// has been swept, in KiB. The flood's 100,000 tokens cost about 15 MiB while held (a
/// 22-byte token and a connection id per entry, plus the map's table of 131,072 buckets);
/// after the sweep the entries and, once the map is shrunk, the table are freed, but an
/// allocator keeps some freed pages (mimalloc purges lazily, and per thread) and the
/// process keeps what the HTTP connections' buffers touched. 6 MiB allows for that and is
/// still well below what the tokens or the unshrunk table alone would hold.
const RETAINED_BOUND_KIB: u64 = 6 * 1024;

// Not in the default run: 100,000 negotiates took 50-90 s on this 2-core machine while it
// built, longer than a negotiate timeout short enough to wait for; it has not passed here
// yet (see the issue note). Run it on a quiet machine with `-- --ignored`.
#[ignore = "slow: 100,000 negotiates, then the tokens' expiry; run with -- --ignored"]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_negotiate_flood_meets_the_cap_and_its_memory_returns_after_the_sweep() {
    let timeout = NEGOTIATE_TIMEOUT.to_string();
    let cap = CAP.to_string();
    let server = Server::start(&[
        "--max-pending-negotiations",
        &cap,
        "--negotiate-timeout",
        &timeout,
    ])
    .await;
    let address = server.address.clone();
    // One negotiate first, so the baseline includes a served request.
    assert_eq!(request(&address, &negotiate(None)).await.0, 200);
    let baseline = server.rss_kib();

    // The flood: more negotiates than the cap, from 8 keep-alive connections.
    const WORKERS: usize = 8;
    let per_worker = (CAP + 20_000) / WORKERS;
    let started = Instant::now();
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let address = address.clone();
            tokio::spawn(async move { hammer(&address, per_worker).await })
        })
        .collect();
    let mut refused = 0;
    let mut retry_after = None;
    for worker in workers {
        let (count, seen) = worker.await.unwrap();
        refused += count;
        retry_after = retry_after.or(seen);
    }
    let flood_took = started.elapsed();
    let peak = server.rss_kib();
    let accepted = per_worker * WORKERS - refused;
    assert!(
        flood_took < Duration::from_secs(NEGOTIATE_TIMEOUT),
        "the flood took {flood_took:?}: tokens expired during it, so it cannot show the cap"
    );
    // The first negotiate's token is pending too.
    assert_eq!(accepted, CAP - 1, "negotiates accepted during the flood");
    assert_eq!(
        retry_after.as_deref(),
        Some(timeout.as_str()),
        "503's Retry-After"
    );

    // Every token of the flood expires NEGOTIATE_TIMEOUT after it was issued; the sweep
    // runs every half timeout. Wait (bounded) for the memory to come back, making one
    // negotiate a second meanwhile: they are refused until the tokens are gone, and they
    // keep the allocator's threads busy enough to hand freed pages back.
    let deadline = started + flood_took + Duration::from_secs(NEGOTIATE_TIMEOUT * 2) + PATIENCE;
    let mut first_accepted = None;
    let swept = loop {
        let (status, head, body) = request(&address, &negotiate(None)).await;
        match status {
            200 => {
                first_accepted.get_or_insert_with(Instant::now);
            }
            503 => assert!(
                first_accepted.is_none(),
                "503 after a negotiate succeeded again: {head}"
            ),
            other => panic!("negotiate answered {other}: {body}"),
        }
        let rss = server.rss_kib();
        if first_accepted.is_some() && rss <= baseline + RETAINED_BOUND_KIB {
            break rss;
        }
        assert!(
            Instant::now() < deadline,
            "RSS did not come back: baseline {baseline} KiB, peak {peak} KiB, now {rss} KiB (negotiates accepted again: {})",
            first_accepted.is_some()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let reopened = first_accepted.unwrap() - started;
    eprintln!(
        "negotiate flood: {accepted} accepted, {refused} refused (503, Retry-After {timeout}) in {flood_took:?}; \
         RSS baseline {baseline} KiB, peak {peak} KiB (+{} KiB), after the sweep {swept} KiB (+{} KiB); negotiates accepted again {reopened:?} after the flood began",
        peak.saturating_sub(baseline),
        swept.saturating_sub(baseline),
    );
    assert!(
        peak > baseline + 8 * 1024,
        "the flood should have cost memory (baseline {baseline} KiB, peak {peak} KiB): the test measures nothing"
    );
}

/// A user id longer than `--max-user-id-bytes` gets 401 saying so, on negotiate and on a
/// direct WebSocket, and neither the token nor the user id reaches the log.
#[tokio::test]
async fn a_jwt_sub_longer_than_the_limit_is_refused_and_never_logged() {
    let mut server =
        Server::start(&[&JWT_FLAGS[..], &["--max-user-id-bytes", "64"]].concat()).await;
    let address = server.address.clone();
    let fits = jwt(&"a".repeat(64), "chat", now() + 600, SECRET);
    let (status, _, body) = request(&address, &negotiate(Some(&fits))).await;
    assert_eq!(status, 200, "a 64-byte user id: {body}");

    let long_sub = format!("{}-the-long-user-id", "x".repeat(20_000));
    let long = jwt(&long_sub, "chat", now() + 600, SECRET);
    for (what, head) in [
        ("negotiate", negotiate(Some(&long))),
        ("WebSocket", websocket(&long)),
    ] {
        let (status, head, body) = request(&address, &head).await;
        assert_eq!(status, 401, "{what}: {head}");
        assert_eq!(body, "The user id is longer than 64 bytes.", "{what}");
        assert!(head.contains("www-authenticate: bearer"), "{what}: {head}");
    }
    // The refusal is logged (at debug level, the most this server logs)...
    server.expect_log("request refused").await;
    let log = server.drain_log().await;
    // ...without the token or any long piece of the user id.
    assert!(!log.contains(&long), "the token reached the log");
    assert!(
        !log.contains(&"x".repeat(64)),
        "the user id reached the log"
    );
}

/// Without JWT validation the chat takes the access token as an unverified name: 100
/// WebSockets, each naming itself with 48 KiB (under hyper's 64 KiB URI limit, which
/// answers 414 before the hub sees the request), are refused with 401 before the
/// upgrade and nothing of the names is logged. (RSS is printed, not asserted: with the
/// sockets kept open it grows by ~90 KiB per connection, hyper's read buffer of a
/// kept-alive HTTP connection, whatever the name; see the issue note.)
#[tokio::test]
async fn long_anonymous_names_are_refused_before_the_upgrade() {
    let mut server = Server::start(&[]).await;
    let address = server.address.clone();
    let baseline = server.rss_kib();
    let mut sockets = Vec::new();
    for n in 0..100 {
        let name = format!("{n:03}{}", "n".repeat(48 * 1024));
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        let head = format!("{}Host: {address}\r\n\r\n", websocket(&name));
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut status = [0u8; 12];
        stream.read_exact(&mut status).await.unwrap();
        assert_eq!(&status, b"HTTP/1.1 401", "connection {n}");
        // Kept open, as an attacker would, so whatever the server kept for them stays.
        sockets.push(stream);
    }
    let after = server.rss_kib();
    server.expect_log("request refused").await;
    let log = server.drain_log().await;
    assert!(!log.contains(&"n".repeat(64)), "a name reached the log");
    let grown = after.saturating_sub(baseline);
    eprintln!("100 x 48 KiB names: RSS {baseline} -> {after} KiB (+{grown} KiB)");
    drop(sockets);
}

/// Idle kept-alive HTTP connections are what an attacker can open without limit
/// otherwise: at `--max-http-connections` the next connection is answered 503 (or reset)
/// and closed at once, a WebSocket does not count once upgraded, and a freed place is
/// taken again. The server logs the refusals.
#[tokio::test]
async fn idle_http_connections_are_capped_and_websockets_do_not_count() {
    let mut server = Server::start(&["--max-http-connections", "3"]).await;
    let address = server.address.clone();

    // Two WebSockets first: each was an HTTP connection until its upgrade.
    let mut sockets = Vec::new();
    for _ in 0..2 {
        let url = format!("ws://{address}/chathub");
        let (ws, _) = tokio_tungstenite::connect_async(&url).await.expect("ws");
        sockets.push(ws);
    }

    // Three kept-alive HTTP connections, each served once and left idle.
    let mut idle = Vec::new();
    for n in 0..3 {
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        let head = format!("GET /health HTTP/1.1\r\nHost: {address}\r\n\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut status = [0u8; 12];
        stream.read_exact(&mut status).await.unwrap();
        assert_eq!(&status, b"HTTP/1.1 200", "idle connection {n}");
        idle.push(stream);
    }

    // The fourth is refused at once: a 503 or a reset, never served.
    let (status, head, body) = refused_or_served(&address).await;
    assert!(status == Some(503) || status.is_none(), "{status:?} {head}");
    if status.is_some() {
        assert!(head.contains("retry-after: 1"), "{head}");
        assert_eq!(body, "The server has too many connections.\n");
    }
    server
        .expect_log("the server is at its connection cap")
        .await;

    // A freed place is taken again (the server notices the close at its next read).
    drop(idle.pop());
    let deadline = Instant::now() + PATIENCE;
    loop {
        match refused_or_served(&address).await {
            (Some(200), _, _) => break,
            other => assert!(Instant::now() < deadline, "still refused: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(sockets);
}

/// A request head over the 64 KiB default gets 431 and is not served.
#[tokio::test]
async fn a_request_head_over_the_limit_gets_431() {
    let server = Server::start(&[]).await;
    let big = "x".repeat(40 * 1024);
    let head = format!("GET /health HTTP/1.1\r\nX-One: {big}\r\nX-Two: {big}\r\n");
    let (status, _, _) = request(&server.address, &head).await;
    assert_eq!(status, 431);
    // Under the limit, the same headers are fine.
    let head = format!("GET /health HTTP/1.1\r\nX-One: {big}\r\n");
    let (status, _, _) = request(&server.address, &head).await;
    assert_eq!(status, 200);
}

/// A GET /health on a new connection: the status (`None` if the connection was reset or
/// closed without an answer), the head (lower case) and the body.
async fn refused_or_served(address: &str) -> (Option<u16>, String, String) {
    let Ok(mut stream) = tokio::net::TcpStream::connect(address).await else {
        return (None, String::new(), String::new());
    };
    let head = format!("GET /health HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    // The server may have closed the socket already: a failed write is a refusal too.
    let _ = stream.write_all(head.as_bytes()).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut response)).await;
    let response = String::from_utf8_lossy(&response).into_owned();
    let Some((head, body)) = response.split_once("\r\n\r\n") else {
        return (None, response, String::new());
    };
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok());
    (status, head.to_ascii_lowercase(), body.to_owned())
}
