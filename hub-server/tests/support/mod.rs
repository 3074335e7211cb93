//! Shared by the tests of the `hub-server` binary: the binary as a process with its log,
//! its exit and its memory in reach, plain HTTP/1.1 requests on their own sockets, and
//! HS256 tokens minted for the `--jwt-*` flags.

#![allow(dead_code, unreachable_pub)] // Each test binary uses a different part of it.

use std::process::ExitStatus;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use tests::{hub_server_command, output_lines};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Child;
use tokio::sync::mpsc;

/// The binary under test.
pub const BINARY: &str = env!("CARGO_BIN_EXE_hub-server");

/// The HS256 secret the servers of [`JWT_FLAGS`] verify with (passed in the environment,
/// as `--jwt-key-env` reads it).
pub const SECRET: &str = "the test secret, long enough for HS256";

/// How long anything that should happen promptly may take.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// JWT authentication on: HS256 with [`SECRET`], issuer `test-issuer`, audience `chat`.
pub const JWT_FLAGS: [&str; 6] = [
    "--jwt-key-env",
    "TEST_JWT_SECRET",
    "--jwt-issuer",
    "test-issuer",
    "--jwt-audience",
    "chat",
];

/// A running `hub-server` on a free port of 127.0.0.1, logging at debug level, with its
/// stdout and stderr forwarded line by line.
pub struct Server {
    /// The process: killed when dropped; its pid is where its RSS is read.
    child: Child,
    /// Lines of its stdout and stderr, in arrival order.
    log: mpsc::UnboundedReceiver<String>,
    /// Every line taken from `log` so far, for assertions and failure messages.
    seen: Vec<String>,
    /// `host:port` it listens on.
    pub address: String,
}

impl Server {
    /// Start the binary with `args`, logging at debug level, and wait until it listens.
    pub async fn start(args: &[&str]) -> Self {
        let mut server = Self::spawn(args, "debug");
        server.wait_listening().await;
        server
    }

    /// Start the binary on a free port of 127.0.0.1 with `args`, logging at `log_level`,
    /// without waiting for it: its [`address`](Self::address) is empty until
    /// [`Server::wait_listening`].
    pub fn spawn(args: &[&str], log_level: &str) -> Self {
        Self::spawn_with_env(args, log_level, &[])
    }

    /// [`Server::spawn`] with `env` added to its environment.
    pub fn spawn_with_env(args: &[&str], log_level: &str, env: &[(&str, &str)]) -> Self {
        let mut child = hub_server_command(BINARY)
            .args(["--urls", "http://127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", log_level)
            .env("TEST_JWT_SECRET", SECRET)
            // The binary's huge-page choice follows this variable; a runner's own setting
            // must not decide what the tests see.
            .env_remove("MIMALLOC_ALLOW_THP")
            .envs(env.iter().copied())
            .spawn()
            .expect("starting hub-server");
        Self {
            log: output_lines(&mut child),
            child,
            seen: Vec::new(),
            address: String::new(),
        }
    }

    /// Wait for the "listening on" line; sets and returns [`address`](Self::address).
    pub async fn wait_listening(&mut self) -> String {
        let line = self.expect_log("listening on http://").await;
        // Up to the path: the line may be text or JSON (`--log-format json`).
        self.address = line
            .split("listening on http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap()
            .to_owned();
        self.address.clone()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Wait for the process to exit, at most [`PATIENCE`].
    pub async fn exit_status(&mut self) -> ExitStatus {
        tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .expect("hub-server exits in time")
            .unwrap()
    }

    /// `http://host:port`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Wait for a log line containing `needle`; returns it.
    pub async fn expect_log(&mut self, needle: &str) -> String {
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
    pub async fn drain_log(&mut self) -> String {
        tokio::time::sleep(Duration::from_millis(500)).await;
        while let Ok(line) = self.log.try_recv() {
            self.seen.push(line);
        }
        self.seen.join("\n")
    }

    /// Resident set size of the server process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let pid = self.pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }
}

/// One HTTP/1.1 request on its own connection: status, head (lower case), body. `head`
/// is the request line and any headers, each ending in CRLF.
pub async fn request(address: &str, head: &str) -> (u16, String, String) {
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

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An HS256 token for `sub`, from `test-issuer` for `audience`, expiring at `exp`, signed
/// with `secret`.
pub fn jwt(sub: &str, audience: &str, exp: u64, secret: &str) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &serde_json::json!({ "sub": sub, "aud": audience, "iss": "test-issuer", "exp": exp }),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// The head of a negotiate request, with `token` as bearer when given.
pub fn negotiate(token: Option<&str>) -> String {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    format!("POST /chathub/negotiate?negotiateVersion=1 HTTP/1.1\r\n{auth}")
}

/// The head of a direct WebSocket upgrade (skipNegotiation) with `token` as
/// `access_token`.
pub fn websocket(token: &str) -> String {
    format!(
        "GET /chathub?access_token={token} HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    )
}

/// The attack script: `count` negotiates on one keep-alive connection, never connecting;
/// how many got 503, and the `Retry-After` of the last 503 (`None` if none said when to
/// retry).
pub async fn hammer(address: &str, count: usize) -> (usize, Option<String>) {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let mut refused = 0;
    let mut retry_after = None;
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
                        retry_after = head
                            .lines()
                            .find_map(|line| line.strip_prefix("retry-after:"))
                            .map(|value| value.trim().to_owned());
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
