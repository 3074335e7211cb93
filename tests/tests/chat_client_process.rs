//! The terminal chat client as a user runs it: real `chat-client` processes driven through
//! standard input, talking to real `hub-server` processes that share one PostgreSQL
//! database (the flagship backplane), each line checked in the other client's output.
//! The two-server chat also runs with the servers on Redis (`--redis-url`) and on NATS
//! JetStream (`--nats-url`).
//!
//! The binaries are built and found by [`tests::workspace_binaries`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use tests::{HubServerProcess, TestBackend, lines_of};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

/// How long to wait for something that should happen promptly.
const PATIENCE: Duration = Duration::from_secs(20);

/// How long to keep listening for something that must not happen.
const QUIET: Duration = Duration::from_millis(300);

/// The workspace's executables, built once per test binary.
static BINARIES: OnceLock<HashMap<String, PathBuf>> = OnceLock::new();

/// The path of the workspace binary `name` (`chat-client` or `hub-server`).
fn binary(name: &str) -> PathBuf {
    BINARIES.get_or_init(|| {
        tests::workspace_binaries(
            &["hub-server", "chat-client"],
            &["hub-server", "chat-client"],
        )
    })[name]
        .clone()
}

/// A new schema labelled `label`, and a `hub-server` on a free port of 127.0.0.1 on it.
async fn start_server(label: &str) -> (tests::TestSchema, HubServerProcess) {
    let schema = tests::TestSchema::create(label).await;
    let database_url = tests::database_url().await;
    let server = HubServerProcess::start(&binary("hub-server"), database_url, schema.name()).await;
    (schema, server)
}

/// Two `hub-server` processes on free ports of 127.0.0.1, sharing a namespace of their
/// own on one backplane.
struct TwoServers {
    /// Where both servers keep their state; removed by [`TwoServers::stop`].
    namespace: tests::ProcessNamespace,
    /// The first server (Alice's).
    a: HubServerProcess,
    /// The second server (Bob's).
    b: HubServerProcess,
}

impl TwoServers {
    /// Two servers on a new namespace labelled `label` on `backend`.
    async fn start(backend: TestBackend, label: &str) -> TwoServers {
        let namespace = backend.process_namespace(label).await;
        let hub_server = binary("hub-server");
        let urls = "http://127.0.0.1:0";
        let a = HubServerProcess::start_with(&hub_server, &namespace.flags, urls).await;
        let b = HubServerProcess::start_with(&hub_server, &namespace.flags, urls).await;
        TwoServers { namespace, a, b }
    }

    /// Stop both servers, then remove the namespace.
    async fn stop(self) {
        self.a.stop().await;
        self.b.stop().await;
        self.namespace.remove().await;
    }
}

/// Runs `chat-client --url {url} --user {user}` with no input, asserts it fails, and
/// returns what it wrote on standard output and standard error.
async fn refused_run(url: &str, user: &str) -> (String, String) {
    let output = Command::new(binary("chat-client"))
        .args(["--url", url, "--user", user])
        .stdin(Stdio::null())
        .output()
        .await
        .expect("running chat-client");
    assert!(!output.status.success());
    (
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// A `chat-client` process driven through its standard input.
struct ChatProcess {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: mpsc::UnboundedReceiver<String>,
    stderr: mpsc::UnboundedReceiver<String>,
    /// Every line printed so far.
    seen: Vec<String>,
    /// The connection id it printed.
    connection_id: String,
}

impl ChatProcess {
    /// Starts `chat-client --url {url} --user {user}` and waits until it is connected.
    async fn start(url: &str, user: &str) -> ChatProcess {
        ChatProcess::start_with(url, user, &[]).await
    }

    /// [`ChatProcess::start`] with more command-line arguments.
    async fn start_with(url: &str, user: &str, extra: &[&str]) -> ChatProcess {
        let mut child = Command::new(binary("chat-client"))
            .args(["--url", url, "--user", user])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("starting chat-client");
        let mut process = ChatProcess {
            name: user.to_owned(),
            stdin: child.stdin.take(),
            stdout: lines_of(child.stdout.take().unwrap()),
            stderr: lines_of(child.stderr.take().unwrap()),
            child,
            seen: Vec::new(),
            connection_id: String::new(),
        };
        let connected = process.expect("Connected. Connection id: ").await;
        process.connection_id = connected["Connected. Connection id: ".len()..].to_owned();
        process
    }

    /// Types a line.
    async fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("input already closed");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("writing to chat-client");
        stdin.flush().await.unwrap();
    }

    /// Waits for a line that starts with `prefix` and returns it.
    async fn expect(&mut self, prefix: &str) -> String {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let line = tokio::time::timeout_at(deadline, self.stdout.recv())
                .await
                .ok()
                .flatten();
            let Some(line) = line else {
                let stderr = self.drain_stderr();
                panic!(
                    "{} never printed a line starting with {prefix:?}; it printed:\n{}\nstderr: {stderr:?}",
                    self.name,
                    self.seen.join("\n"),
                );
            };
            self.seen.push(line.clone());
            if line.starts_with(prefix) {
                return line;
            }
        }
    }

    /// Collects what it prints for a short while, and asserts no line contains `text`.
    async fn never_printed(&mut self, text: &str) {
        while let Ok(Some(line)) = tokio::time::timeout(QUIET, self.stdout.recv()).await {
            self.seen.push(line);
        }
        assert!(
            !self.seen.iter().any(|line| line.contains(text)),
            "{} printed {text:?}, which it must not have received:\n{}",
            self.name,
            self.seen.join("\n")
        );
    }

    /// Closes its input and asserts it exits with success and writes nothing to
    /// standard error.
    async fn finish_cleanly(self) {
        let name = self.name.clone();
        let (status, _, stderr) = self.finish().await;
        assert!(
            status.success(),
            "{name} exited with {status}; stderr: {stderr:?}"
        );
        assert!(stderr.is_empty(), "{name} wrote to stderr: {stderr:?}");
    }

    fn drain_stderr(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        while let Ok(line) = self.stderr.try_recv() {
            lines.push(line);
        }
        lines
    }

    /// Closes its input and waits for it to exit; returns the status and what it printed
    /// on standard error.
    async fn finish(mut self) -> (ExitStatus, Vec<String>, Vec<String>) {
        drop(self.stdin.take());
        let status = tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not exit at the end of its input", self.name))
            .unwrap();
        while let Some(line) = self.stdout.recv().await {
            self.seen.push(line);
        }
        let mut stderr = Vec::new();
        while let Some(line) = self.stderr.recv().await {
            stderr.push(line);
        }
        (status, self.seen, stderr)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_chat_through_two_servers_sharing_postgres() {
    two_clients_chat_through_two_servers(TestBackend::Postgres, "postgres (schema ").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_chat_through_two_servers_sharing_redis() {
    two_clients_chat_through_two_servers(TestBackend::Redis, "redis (prefix ").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_chat_through_two_servers_sharing_nats() {
    two_clients_chat_through_two_servers(TestBackend::Nats, "nats (stream ").await;
}

/// The backplane kind `GET /health` of the server at `url` reports.
async fn health_backplane_kind(url: &str) -> String {
    let address = url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connecting");
    stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: test\r\n\r\n")
        .await
        .expect("sending the request");
    let mut response = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut response)
        .await
        .expect("reading the response");
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    let health: serde_json::Value = serde_json::from_str(body).expect("JSON health");
    health["backplane"]["kind"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Alice and Bob chat through two servers on `backend`, whose /health names it
/// starting with `kind`.
/// The `--transport` and `--stateful-reconnect` flags: one client on Server-Sent Events,
/// one on long polling with MessagePack, chatting through two servers on PostgreSQL.
#[tokio::test]
async fn clients_forced_to_the_http_transports_chat_through_two_servers() {
    let servers = TwoServers::start(TestBackend::Postgres, "chat_client_http").await;
    let mut alice = ChatProcess::start_with(
        &servers.a.url,
        "alice",
        &["--transport", "server-sent-events", "--stateful-reconnect"],
    )
    .await;
    let mut bob = ChatProcess::start_with(
        &servers.b.url,
        "bob",
        &["--transport", "long-polling", "--protocol", "messagepack"],
    )
    .await;
    alice
        .expect(&format!("[SYSTEM] {} connected", bob.connection_id))
        .await;
    alice.type_line("hello over events").await;
    bob.expect("[ALL] alice: hello over events").await;
    bob.type_line("hi over polls").await;
    alice.expect("[ALL] bob: hi over polls").await;
    bob.finish_cleanly().await;
    alice.finish_cleanly().await;
    servers.stop().await;
}

async fn two_clients_chat_through_two_servers(backend: TestBackend, kind: &str) {
    let servers = TwoServers::start(backend, "chat_client").await;
    let reported = health_backplane_kind(&servers.a.url).await;
    assert!(reported.starts_with(kind), "/health says {reported:?}");

    let mut alice = ChatProcess::start(&servers.a.url, "alice").await;
    let mut bob = ChatProcess::start(&servers.b.url, "bob").await;
    // Connects: Bob's arrival on server B is announced to Alice on server A.
    alice
        .expect(&format!("[SYSTEM] {} connected", bob.connection_id))
        .await;

    // Broadcast, both ways.
    alice.type_line("hello from alice").await;
    bob.expect("[ALL] alice: hello from alice").await;
    bob.type_line("hi from bob").await;
    alice.expect("[ALL] bob: hi from bob").await;

    // A group message reaches members only: Alice is in the room, Bob is not.
    alice.type_line("/join room").await;
    alice.expect("[SYSTEM] alice joined group room").await;
    alice
        .type_line("/group room secret-before-bob-joined")
        .await;
    alice.expect("[room] alice: secret-before-bob-joined").await;
    // Messages from one sender arrive in order, so once Bob has the marker he would
    // already have had the group message.
    alice.type_line("marker-1").await;
    bob.expect("[ALL] alice: marker-1").await;
    bob.never_printed("secret-before-bob-joined").await;

    // A group join on server B is seen by the member on server A.
    bob.type_line("/join room").await;
    bob.expect("[SYSTEM] bob joined group room").await;
    alice.expect("[SYSTEM] bob joined group room").await;
    alice.type_line("/group room welcome bob").await;
    bob.expect("[room] alice: welcome bob").await;
    bob.type_line("/group room thanks").await;
    alice.expect("[room] bob: thanks").await;

    // A leave is announced to the remaining member, and the leaver gets no more.
    bob.type_line("/leave room").await;
    alice.expect("[SYSTEM] bob left group room").await;
    alice.type_line("/group room secret-after-bob-left").await;
    alice.expect("[room] alice: secret-after-bob-left").await;
    alice.type_line("marker-2").await;
    bob.expect("[ALL] alice: marker-2").await;
    bob.never_printed("secret-after-bob-left").await;

    // Usage lines and unknown commands, as a user would mistype them.
    bob.type_line("/join").await;
    bob.expect("Usage: /join <group>").await;
    bob.type_line("/dance").await;
    bob.expect("Unknown command: /dance").await;

    // The last line before the end of input is still delivered, and the client exits 0.
    bob.type_line("last words").await;
    let bob_id = bob.connection_id.clone();
    bob.finish_cleanly().await;
    alice.expect("[ALL] bob: last words").await;
    // Disconnects: announced across servers too.
    alice
        .expect(&format!("[SYSTEM] {bob_id} disconnected"))
        .await;
    alice.finish_cleanly().await;

    servers.stop().await;
}

#[tokio::test]
async fn unreachable_server_gives_one_error_line_and_a_failure_exit() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (stdout, stderr) = refused_run(&format!("http://127.0.0.1:{port}"), "x").await;
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one error line, got {stderr:?}");
    assert!(
        lines[0].starts_with(&format!("error: cannot connect to 127.0.0.1:{port}: ")),
        "{stderr:?}"
    );
    // Standard output has no stack of errors either: only the connecting notice.
    assert_eq!(
        stdout,
        format!("Connecting to http://127.0.0.1:{port}/chathub as x...\n")
    );
}

#[tokio::test]
async fn invalid_url_is_one_error_line() {
    let (_, stderr) = refused_run("https://localhost:5000", "x").await;
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(stderr.starts_with("error: invalid hub url"), "{stderr:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_are_joined_again_after_the_server_restarts() {
    let (schema, server) = start_server("chat_client_rejoin").await;
    let url = server.url.clone();

    let mut alice = ChatProcess::start(&url, "alice").await;
    alice.type_line("/join room").await;
    alice.expect("[SYSTEM] alice joined group room").await;
    alice.type_line("/join kitchen").await;
    alice.expect("[SYSTEM] alice joined group kitchen").await;
    // Leaving says so (the server only tells the members who stay), and a group left is
    // not joined again after the restart.
    alice.type_line("/leave kitchen").await;
    alice.expect("[SYSTEM] You left group kitchen").await;

    // The server goes away and comes back on the same address: the server has forgotten
    // every group, and the client puts its own back.
    server.stop().await;
    alice.expect("[SYSTEM] Connection lost").await;
    let database_url = tests::database_url().await;
    let server =
        HubServerProcess::start_at(&binary("hub-server"), database_url, schema.name(), &url).await;
    alice.expect("[SYSTEM] Reconnected").await;
    alice.expect("[SYSTEM] Rejoined group room").await;

    let mut bob = ChatProcess::start(&url, "bob").await;
    bob.type_line("/group room are you there alice?").await;
    alice.expect("[room] bob: are you there alice?").await;
    bob.type_line("/group kitchen not for alice").await;
    bob.type_line("marker").await;
    alice.expect("[ALL] bob: marker").await;
    alice.never_printed("not for alice").await;
    assert!(
        !alice
            .seen
            .iter()
            .any(|line| line.contains("Rejoined group kitchen")),
        "a group left was joined again:\n{}",
        alice.seen.join("\n")
    );

    alice.finish_cleanly().await;
    bob.finish().await;
    server.stop().await;
    schema.drop().await;
}

/// A line over the limit is refused with a note, the chat goes on, and the exit status
/// tells a script that not everything was sent.
#[tokio::test]
async fn a_line_over_the_message_limit_is_refused_and_the_chat_goes_on() {
    let (schema, server) = start_server("chat_client_long").await;
    let mut alice = ChatProcess::start(&server.url, "alice").await;
    let mut bob = ChatProcess::start(&server.url, "bob").await;

    alice.type_line(&"x".repeat(40_000)).await;
    alice
        .expect("[SYSTEM] Message not sent: it is too long (40112 bytes encoded")
        .await;
    alice
        .type_line(&format!("/group room {}", "y".repeat(40_000)))
        .await;
    alice
        .expect("[SYSTEM] Message not sent: it is too long")
        .await;
    // Still connected: the next line goes through.
    alice.type_line("still here").await;
    bob.expect("[ALL] alice: still here").await;

    // A script learns that two of its lines were not sent.
    let (status, _, stderr) = alice.finish().await;
    assert_eq!(status.code(), Some(1));
    assert_eq!(
        stderr,
        ["error: 2 lines could not be sent or done (see the [SYSTEM] lines)"]
    );
    bob.finish().await;
    server.stop().await;
    schema.drop().await;
}

#[tokio::test]
async fn an_empty_user_name_is_refused() {
    for user in ["", "   "] {
        let (stdout, stderr) = refused_run("http://127.0.0.1:9", user).await;
        assert_eq!(
            stderr,
            "error: the user name must not be empty (it is shown with every message you send)\n"
        );
        // Refused before connecting anywhere.
        assert_eq!(stdout, "");
    }
}
