//! The `hub-server` binary under attack and with authentication on: JWT validation on
//! negotiate and on a direct WebSocket connect, the negotiate-token cap (503 with
//! Retry-After, and the process's RSS bounded), origins, and no token in the log.

use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use tests::lines_of;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

const BINARY: &str = env!("CARGO_BIN_EXE_hub-server");
const SECRET: &str = "the test secret, long enough for HS256";
const PATIENCE: Duration = Duration::from_secs(30);

struct Server {
    child: Child,
    log: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
    address: String,
}

impl Server {
    async fn start(args: &[&str]) -> Self {
        let mut child = Command::new(BINARY)
            .args(["--urls", "http://127.0.0.1:0"])
            .args(args)
            .env_remove("DATABASE_URL")
            .env("RUST_LOG", "debug")
            .env("TEST_JWT_SECRET", SECRET)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("starting hub-server");
        let (tx, log) = mpsc::unbounded_channel();
        for mut lines in [
            lines_of(child.stdout.take().unwrap()),
            lines_of(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Some(line) = lines.recv().await {
                    let _ = tx.send(line);
                }
            });
        }
        let mut server = Self {
            child,
            log,
            seen: Vec::new(),
            address: String::new(),
        };
        let line = server.expect_log("listening on http://").await;
        server.address = line
            .split("listening on http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap()
            .trim_end_matches("/chathub")
            .to_owned();
        server
    }

    async fn expect_log(&mut self, needle: &str) -> String {
        loop {
            let line = tokio::time::timeout(PATIENCE, self.log.recv())
                .await
                .ok()
                .flatten()
                .unwrap_or_else(|| panic!("never logged {needle:?}:\n{}", self.seen.join("\n")));
            self.seen.push(line.clone());
            if line.contains(needle) {
                return line;
            }
        }
    }

    /// Everything logged so far (waits a moment for stragglers).
    async fn drain_log(&mut self) -> String {
        tokio::time::sleep(Duration::from_millis(500)).await;
        while let Ok(line) = self.log.try_recv() {
            self.seen.push(line);
        }
        self.seen.join("\n")
    }

    /// Resident set size of the server process, in KiB.
    fn rss_kib(&self) -> u64 {
        let pid = self.child.id().expect("running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }
}

/// One HTTP/1.1 request on its own connection: status, head, body.
async fn request(address: &str, head: &str) -> (u16, String, String) {
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let request =
        format!("{head}Host: {address}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_owned())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn jwt(sub: &str, audience: &str, exp: u64, secret: &str) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &serde_json::json!({ "sub": sub, "aud": audience, "iss": "test-issuer", "exp": exp }),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn negotiate(token: Option<&str>) -> String {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    format!("POST /chathub/negotiate?negotiateVersion=1 HTTP/1.1\r\n{auth}")
}

fn websocket(token: &str) -> String {
    format!(
        "GET /chathub?access_token={token} HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    )
}

const JWT_FLAGS: [&str; 6] = [
    "--jwt-key-env",
    "TEST_JWT_SECRET",
    "--jwt-issuer",
    "test-issuer",
    "--jwt-audience",
    "chat",
];

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
        retry_after |= seen_retry_after;
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

/// `count` negotiates on one keep-alive connection; how many got 503, and whether they
/// said when to retry.
async fn hammer(address: &str, count: usize) -> (usize, bool) {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let mut refused = 0;
    let mut retry_after = false;
    let mut buf = vec![0u8; 64 * 1024];
    let request = format!(
        "POST /chathub/negotiate?negotiateVersion=1 HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\n\r\n"
    );
    let mut pending = Vec::new();
    for _ in 0..count {
        stream.write_all(request.as_bytes()).await.unwrap();
        // Read one response: head, then the body by Content-Length.
        loop {
            if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&pending[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length:"))
                    .map(|value| value.trim().parse().unwrap())
                    .unwrap_or(0);
                if pending.len() >= end + 4 + length {
                    if head.starts_with("http/1.1 503") {
                        refused += 1;
                        retry_after |= head.contains("retry-after: 600");
                    }
                    pending.drain(..end + 4 + length);
                    break;
                }
            }
            let read = stream.read(&mut buf).await.unwrap();
            assert!(read > 0, "the server closed the connection");
            pending.extend_from_slice(&buf[..read]);
        }
    }
    (refused, retry_after)
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
