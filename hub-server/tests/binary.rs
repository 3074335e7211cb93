//! The `hub-server` binary as an operator runs it: flags, the default in-memory backplane,
//! graceful shutdown on SIGTERM, and `hub-server doctor` against the real test database.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use support::{BINARY, PATIENCE, Server, request};
use tests::{TestSchema, hub_server_command};
use tokio_tungstenite::tungstenite::Message;

/// A WebSocket to the chat hub at `address` that has sent the JSON handshake of protocol
/// version `version` (the answer is left to read).
async fn chat_websocket(
    address: &str,
    version: u8,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{address}/chathub"))
        .await
        .expect("WebSocket");
    ws.send(Message::text(format!(
        "{{\"protocol\":\"json\",\"version\":{version}}}\u{1e}"
    )))
    .await
    .unwrap();
    ws
}

/// Run `hub-server` with `args` to completion; exit code and stdout, stderr.
async fn run(args: &[&str]) -> (i32, String, String) {
    run_with_env(args, &[]).await
}

/// Run `hub-server` with `args` and the environment variables `env` to completion.
async fn run_with_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let output = hub_server_command(BINARY)
        .args(args)
        .envs(env.iter().copied())
        .output();
    let output = tokio::time::timeout(PATIENCE, output)
        .await
        .expect("hub-server finishes")
        .expect("running hub-server");
    (
        output.status.code().expect("an exit code"),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn serves_chat_on_the_memory_backplane_and_shuts_down_gracefully_on_sigterm() {
    let mut server = Server::spawn(&["--server-name", "solo"], "info");
    let started = server.expect_log("backplane started").await;
    assert!(started.contains("backplane=memory"), "{started}");
    let address = server.wait_listening().await;

    let (status, _, body) = request(&address, "GET /health HTTP/1.1\r\n").await;
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["server"], "solo");
    assert_eq!(health["backplane"]["kind"], "memory");
    assert_eq!(health["backplane"]["status"], "connected");

    let mut ws = chat_websocket(&address, 2).await;
    let mut next_text = async || loop {
        let message = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("a frame in time");
        match message {
            Some(Ok(Message::Text(text))) => return Some(text.as_str().to_owned()),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => continue,
        }
    };
    assert_eq!(next_text().await.as_deref(), Some("{}\u{1e}"));
    let connected = next_text().await.expect("UserConnected");
    assert!(connected.starts_with("{\"type\":1,\"target\":\"UserConnected\",\"arguments\":[\""));
    server.expect_log("client connected").await;

    let pid = server.pid().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    assert_eq!(
        next_text().await.as_deref(),
        Some("{\"type\":7,\"allowReconnect\":true}\u{1e}")
    );
    // Then the WebSocket closes normally: status 1000, as ASP.NET Core sends (a close
    // frame without a status reads as 1005, "no status", on the client).
    let close = loop {
        match tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("the close frame in time")
        {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected the close frame, got {other:?}"),
        }
    };
    assert_eq!(
        close.map(|frame| u16::from(frame.code)),
        Some(1000),
        "close status"
    );
    let status = server.exit_status().await;
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn bad_flags_get_one_clear_error() {
    let (code, _, stderr) = run(&["--urls", "https://localhost:5001"]).await;
    assert_eq!(code, 1);
    assert_eq!(
        stderr.trim(),
        "error: \"https://localhost:5001\": https is not supported; terminate TLS in a reverse proxy"
    );
    let (code, _, stderr) = run(&["doctor"]).await;
    assert_eq!(code, 1);
    assert_eq!(
        stderr.trim(),
        "error: doctor needs a backplane to check: pass --database-url, --redis-url or --nats-url (or set DATABASE_URL, REDIS_URL or NATS_URL)"
    );
    let (code, _, stderr) = run(&[
        "--database-url",
        "postgres://nobody:hunter2@127.0.0.1:1/x",
        "--urls",
        "http://127.0.0.1:0",
    ])
    .await;
    assert_eq!(code, 1);
    assert!(
        stderr.starts_with("error: cannot start the PostgreSQL backplane: "),
        "{stderr}"
    );
    // Which server was tried, never the password.
    assert!(stderr.contains("(server 127.0.0.1:1)"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

/// Backplane URLs that contradict each other are refused before anything starts, naming
/// where each value came from; an empty `DATABASE_URL` counts as unset; the other
/// backplane's naming flag gets a warning.
#[tokio::test]
async fn contradicting_backplane_flags_are_refused_saying_where_they_came_from() {
    let nats = ["--nats-url", "nats://127.0.0.1:4222"];
    let (code, _, stderr) = run_with_env(&nats, &[("DATABASE_URL", "postgres://a@b/c")]).await;
    assert_eq!(code, 1);
    assert_eq!(
        stderr.trim(),
        "error: more than one backplane URL: DATABASE_URL (from the environment) and \
         --nats-url; give one (unset the environment variable of the backplane you do not mean)"
    );
    let both = [
        "--database-url",
        "postgres://a@b/c",
        "--redis-url",
        "redis://x",
    ];
    let (code, _, stderr) = run(&both).await;
    assert_eq!(code, 1);
    assert_eq!(
        stderr.trim(),
        "error: more than one backplane URL: --database-url and --redis-url; give one"
    );
    // The naming flag of the other backplane is ignored with a warning, not an error (a
    // launch template shared by instances on different backplanes may pass both).
    let (code, stdout, stderr) = run(&[
        "doctor",
        "--database-url",
        "postgres://nobody@127.0.0.1:1/x",
        "--prefix",
        "p",
    ])
    .await;
    assert_eq!(code, 1, "the database is unreachable: {stdout}");
    let output = format!("{stdout}{stderr}");
    assert!(
        output.contains(
            "--prefix is ignored: it names a Redis key prefix or NATS stream; PostgreSQL takes --schema"
        ),
        "{output}"
    );
    // The JWT key is checked before the backplane starts (nothing is created for a server
    // that cannot start): here a secret too short for HS256, with an unreachable database.
    let key = std::env::temp_dir().join(format!("short-jwt-key-{}", std::process::id()));
    std::fs::write(&key, "abc\n").unwrap();
    let key_path = key.display().to_string();
    let (code, _, stderr) = run(&[
        "--database-url",
        "postgres://nobody@127.0.0.1:1/x",
        "--jwt-key-file",
        &key_path,
        "--urls",
        "http://127.0.0.1:0",
    ])
    .await;
    let _ = std::fs::remove_file(&key);
    assert_eq!(code, 1);
    assert!(
        stderr.starts_with("error: invalid JWT key: an HS256 secret must be at least 32 bytes"),
        "{stderr}"
    );
    // Empty, as container tools often leave it: unset, so doctor has nothing to check.
    let (code, _, stderr) = run_with_env(&["doctor"], &[("DATABASE_URL", "")]).await;
    assert_eq!(code, 1);
    assert!(
        stderr.contains("doctor needs a backplane to check"),
        "{stderr}"
    );
}

#[tokio::test]
async fn doctor_checks_a_database_a_server_installed() {
    let schema = TestSchema::create("doctor").await;
    let url = schema.url();

    // Before any server ran: connected, no schema or table yet, and nothing wrong (a
    // node creates both at start): exit code 0.
    let (code, stdout, stderr) =
        run(&["doctor", "--database-url", url, "--schema", schema.name()]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert!(
        lines[0].starts_with("ok     connect: connected (PostgreSQL "),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("absent schema exists: ") && lines[1].contains("not created yet"),
        "{stdout}"
    );
    assert!(
        lines[2].starts_with("absent messages table exists: "),
        "{stdout}"
    );
    assert!(
        lines[3].starts_with("ok     notify round trip: "),
        "{stdout}"
    );

    // A server on that schema installs it; then every check passes.
    let mut server = Server::spawn(&["--database-url", url, "--schema", schema.name()], "info");
    server.expect_log("backplane connected").await;
    let (code, stdout, stderr) =
        run(&["--database-url", url, "--schema", schema.name(), "doctor"]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert_eq!(
        lines[1],
        format!("ok     schema exists: schema \"{}\"", schema.name())
    );
    assert!(
        lines[2].starts_with(&format!(
            "ok     messages table exists: table \"{}\".\"chathub_messages\"",
            schema.name()
        )),
        "{stdout}"
    );
    assert!(lines.iter().all(|line| line.starts_with("ok ")), "{stdout}");
    drop(server);

    // No database there at all: every check fails, saying why.
    let (code, stdout, _) = run(&[
        "doctor",
        "--database-url",
        "postgres://postgres@127.0.0.1:1/postgres",
    ])
    .await;
    assert_eq!(code, 1);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert!(lines[0].starts_with("FAILED connect: "), "{stdout}");
    assert!(
        lines[1..]
            .iter()
            .all(|line| line.ends_with("not checked: cannot connect")),
        "{stdout}"
    );
    schema.drop().await;
}

#[tokio::test]
async fn a_request_whose_headers_never_end_is_closed_and_the_rest_goes_on() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut server = Server::spawn(&["--request-headers-timeout", "1"], "info");
    let address = server.wait_listening().await;

    // A WebSocket opened before must outlive the timeout: it is no longer an HTTP request.
    let mut ws = chat_websocket(&address, 1).await;

    // Headers that never end: the server closes the connection after the timeout.
    let mut stalled = tokio::net::TcpStream::connect(&address).await.unwrap();
    stalled
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(PATIENCE, stalled.read_to_end(&mut answer))
        .await
        .expect("the server closes a request whose headers never end");
    let waited = started.elapsed();
    // Closed (a reset counts), with at most a 408 answer; never served.
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{read:?} {answer:?}"
    );
    assert!(
        waited >= Duration::from_millis(900),
        "closed after {waited:?}, before the timeout"
    );

    // A complete request is served as usual.
    let (status, _, body) = request(&address, "GET /health HTTP/1.1\r\n").await;
    assert_eq!(status, 200, "{body}");

    // And the WebSocket still works.
    ws.send(Message::text(
        "{\"type\":1,\"invocationId\":\"1\",\"target\":\"SendMessage\",\"arguments\":[\"a\",\"still here\"]}\u{1e}",
    ))
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("the WebSocket still answers")
            .expect("open")
            .expect("a frame");
        if let Message::Text(text) = frame
            && text.contains("\"target\":\"ReceiveMessage\"")
        {
            assert!(text.contains("still here"), "{text}");
            break;
        }
    }
}

/// `THP_enabled` of process `pid`: whether the kernel may back its memory with
/// transparent huge pages.
#[cfg(target_os = "linux")]
fn thp_enabled(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("THP_enabled:"))
        .expect("THP_enabled in /proc/<pid>/status (Linux 5.0 and later)")
        .trim()
        .to_owned()
}

/// Transparent huge pages are off in the serving process: mimalloc advises its arenas for
/// them, and a burst that touches memory given back since then would zero 2 MiB per fault
/// (tens of ms at a burst's start). An operator who wants them sets `MIMALLOC_ALLOW_THP`.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn transparent_huge_pages_are_off_unless_the_operator_allows_them() {
    let mut server = Server::spawn(&[], "info");
    server.wait_listening().await;
    assert_eq!(thp_enabled(server.pid()), "0", "the default: off");

    // Allowed, the process keeps what it inherited: normally on, unless whatever started
    // these tests had turned them off for itself and its children.
    let inherited = thp_enabled(std::process::id());
    let mut allowed = Server::spawn_with_env(&[], "info", &[("MIMALLOC_ALLOW_THP", "1")]);
    allowed.wait_listening().await;
    assert_eq!(
        thp_enabled(allowed.pid()),
        inherited,
        "MIMALLOC_ALLOW_THP=1 leaves the inherited setting"
    );
}
