//! The chat page in a real browser: Debian's Chromium, headless, driven through
//! playwright-core (`tests/js/browser-driver.js`, pinned by `tests/js/package-lock.json`),
//! on real `hub-server` processes sharing one PostgreSQL schema.
//!
//! Each page is used as a person would: controls found by their labels, text typed, Enter
//! pressed; what the person would see (the message log, the connection state) is checked.
//! Screenshots for a person to look at go to `target/browser-screenshots/`: two pages
//! chatting (`two-pages.png`) and a page whose server is gone (`reconnecting.png`).
//!
//! Chromium must be at `/usr/bin/chromium` (`apt-get install -y chromium`; `.ci/run`
//! installs it when missing).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};
use tests::{HubServerProcess, lines_of};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

/// Where Debian's `chromium` package puts the browser.
const CHROMIUM: &str = "/usr/bin/chromium";

/// How long to wait in the page for something that should happen promptly.
const PATIENCE: Duration = Duration::from_secs(20);

/// How long the browser may take to start.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(60);

/// The workspace's executables, built once per test binary.
static BINARIES: OnceLock<HashMap<String, PathBuf>> = OnceLock::new();

fn hub_server_binary() -> PathBuf {
    BINARIES.get_or_init(|| tests::workspace_binaries(&["hub-server"], &["hub-server"]))
        ["hub-server"]
        .clone()
}

async fn start_server(database_url: &str, schema: &str) -> HubServerProcess {
    HubServerProcess::start(&hub_server_binary(), database_url, schema).await
}

/// Where screenshots go: `browser-screenshots/` in Cargo's target directory (the test
/// executable is `<target>/<profile>/deps/<name>`).
fn screenshot_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let target = exe
        .ancestors()
        .nth(3)
        .expect("the test executable lives in <target>/<profile>/deps");
    let dir = target.join("browser-screenshots");
    std::fs::create_dir_all(&dir).expect("creating the screenshot directory");
    dir
}

/// Headless Chromium with named pages, one JSON command at a time.
struct Browser {
    /// The Node driver; killed with the test.
    child: Child,
    /// Where commands go.
    stdin: ChildStdin,
    /// One answer per command.
    stdout: mpsc::UnboundedReceiver<String>,
    /// What Node and Chromium printed, shown when something fails.
    stderr: mpsc::UnboundedReceiver<String>,
    /// The id of the next command, matched against its answer.
    next_id: u64,
}

impl Browser {
    /// Starts the driver and Chromium; fails saying how to install what is missing.
    async fn launch() -> Browser {
        assert!(
            Path::new(CHROMIUM).exists(),
            "Chromium is not installed at {CHROMIUM}: install it with \
             `apt-get update && apt-get install -y chromium` (.ci/run does this when it is missing)"
        );
        tests::ensure_js_packages().await;
        let mut child = Command::new("node")
            .arg("browser-driver.js")
            .arg(CHROMIUM)
            .current_dir(tests::js_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot run node (Node.js 18+ is needed): {error}"));
        let mut browser = Browser {
            stdin: child.stdin.take().expect("piped stdin"),
            stdout: lines_of(child.stdout.take().expect("piped stdout")),
            stderr: lines_of(child.stderr.take().expect("piped stderr")),
            child,
            next_id: 1,
        };
        let ready = tokio::time::timeout(LAUNCH_TIMEOUT, browser.stdout.recv()).await;
        if !matches!(ready, Ok(Some(ref line)) if line.contains("\"ready\":true")) {
            panic!(
                "the browser did not start ({ready:?}); stderr:\n{}",
                browser.stderr_so_far()
            );
        }
        browser
    }

    fn stderr_so_far(&mut self) -> String {
        let mut lines = Vec::new();
        while let Ok(line) = self.stderr.try_recv() {
            lines.push(line);
        }
        lines.join("\n")
    }

    /// Runs `op` with `args` and returns its value; fails the test with the driver's
    /// error when it fails.
    async fn call(&mut self, op: &str, mut args: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        args["id"] = id.into();
        args["op"] = op.into();
        let line = format!("{args}\n");
        self.stdin
            .write_all(line.as_bytes())
            .await
            .expect("writing to the browser driver");
        let answer = tokio::time::timeout(PATIENCE * 2, self.stdout.recv()).await;
        let Ok(Some(answer)) = answer else {
            panic!(
                "the browser driver did not answer {line}; stderr:\n{}",
                self.stderr_so_far()
            );
        };
        let mut answer: Value = serde_json::from_str(&answer).expect("the driver answers JSON");
        assert_eq!(answer["id"], id, "answer to another command: {answer}");
        if answer["ok"] != true {
            panic!(
                "{op} failed: {}",
                answer["error"].as_str().unwrap_or("(no message)")
            );
        }
        answer["value"].take()
    }

    async fn open(&mut self, page: &str, url: &str) {
        self.call("open", json!({ "page": page, "url": url })).await;
    }

    /// Types `user` as the name, presses Enter, and waits until the page is connected.
    async fn connect_as(&mut self, page: &str, user: &str) {
        let args = json!({ "page": page, "label": "Your name", "value": user });
        self.call("fill", args).await;
        let args = json!({ "page": page, "label": "Your name", "key": "Enter" });
        self.call("press", args).await;
        assert_eq!(self.expect_state(page, "connected").await, "Connected");
    }

    /// Sends `text` to `to` ("Everyone" or "Group {name}", as the page lists them).
    async fn send(&mut self, page: &str, to: &str, text: &str) {
        let args = json!({ "page": page, "label": "To", "value": to });
        self.call("select", args).await;
        let args = json!({ "page": page, "label": "Message", "value": text });
        self.call("fill", args).await;
        let args = json!({ "page": page, "label": "Message", "key": "Enter" });
        self.call("press", args).await;
    }

    async fn say(&mut self, page: &str, text: &str) {
        self.send(page, "Everyone", text).await;
    }

    async fn join(&mut self, page: &str, group: &str) {
        let args = json!({ "page": page, "label": "Group", "value": group });
        self.call("fill", args).await;
        let args = json!({ "page": page, "label": "Group", "key": "Enter" });
        self.call("press", args).await;
    }

    /// Waits until the page's log shows exactly `text` as a line.
    async fn expect_line(&mut self, page: &str, text: &str) {
        let timeout = PATIENCE.as_millis() as u64;
        let args = json!({ "page": page, "text": text, "timeout": timeout });
        self.call("waitForLine", args).await;
    }

    /// Waits until the page shows `state`; returns the text it shows for it.
    async fn expect_state(&mut self, page: &str, state: &str) -> String {
        let timeout = PATIENCE.as_millis() as u64;
        let args = json!({ "page": page, "state": state, "timeout": timeout });
        let text = self.call("waitForState", args).await;
        text.as_str().expect("the state's text").to_owned()
    }

    async fn lines(&mut self, page: &str) -> Vec<String> {
        let lines = self.call("lines", json!({ "page": page })).await;
        serde_json::from_value(lines).expect("a list of lines")
    }

    /// The page's connection id, from the line it shows when it connects.
    async fn connection_id(&mut self, page: &str, user: &str) -> String {
        let prefix = format!("[SYSTEM] Connected as {user}. Connection id: ");
        let lines = self.lines(page).await;
        let line = lines
            .iter()
            .find(|line| line.starts_with(&prefix))
            .unwrap_or_else(|| panic!("{page} shows no connection id:\n{}", lines.join("\n")));
        line[prefix.len()..].to_owned()
    }

    /// Asserts the page never showed a line containing `text`.
    async fn never_showed(&mut self, page: &str, text: &str) {
        let lines = self.lines(page).await;
        assert!(
            !lines.iter().any(|line| line.contains(text)),
            "{page} shows {text:?}, which it must not have received:\n{}",
            lines.join("\n")
        );
    }

    /// Asserts the page logged no error on its console (a Content-Security-Policy
    /// violation, a failed load, an uncaught exception).
    async fn assert_no_console_errors(&mut self, page: &str) {
        let errors = self.call("errors", json!({ "page": page })).await;
        assert_eq!(errors, json!([]), "{page} logged errors");
    }

    async fn screenshot(&mut self, pages: &[&str], path: &Path) {
        let args = json!({ "pages": pages, "path": path.to_str().expect("a UTF-8 path") });
        self.call("screenshot", args).await;
    }

    async fn close(mut self) {
        drop(self.stdin);
        if tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.start_kill();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_on_two_servers_chat_and_group_messages_reach_members_only() {
    let schema = tests::TestSchema::create("chat_page").await;
    let database_url = tests::database_url().await;
    let server_a = start_server(database_url, schema.name()).await;
    let server_b = start_server(database_url, schema.name()).await;
    let mut browser = Browser::launch().await;

    browser.open("alice", &format!("{}/", server_a.url)).await;
    browser.open("bob", &format!("{}/", server_b.url)).await;
    browser.open("carol", &format!("{}/", server_a.url)).await;
    browser.connect_as("alice", "alice").await;
    browser.connect_as("bob", "bob").await;
    // Bob's arrival on server B is announced on server A.
    let bob_id = browser.connection_id("bob", "bob").await;
    browser
        .expect_line("alice", &format!("[SYSTEM] {bob_id} connected"))
        .await;
    browser.connect_as("carol", "carol").await;

    // Messages to everyone, both ways across the servers.
    browser.say("alice", "Hello Bob, I am on server A").await;
    browser
        .expect_line("bob", "[ALL] alice: Hello Bob, I am on server A")
        .await;
    browser.say("bob", "Hi Alice, server B here").await;
    browser
        .expect_line("alice", "[ALL] bob: Hi Alice, server B here")
        .await;

    // What people type is shown as text, never run as markup.
    let markup = "<img src=x onerror=\"document.title='owned'\"> & <b>bold</b>";
    browser.say("bob", markup).await;
    browser
        .expect_line("alice", &format!("[ALL] bob: {markup}"))
        .await;

    // Alice and Bob join a group; each join is shown to the members, across servers.
    browser.join("alice", "room").await;
    browser
        .expect_line("alice", "[SYSTEM] alice joined group room")
        .await;
    browser.join("bob", "room").await;
    browser
        .expect_line("alice", "[SYSTEM] bob joined group room")
        .await;
    browser
        .expect_line("bob", "[SYSTEM] bob joined group room")
        .await;

    browser
        .send("alice", "Group room", "Just for the room")
        .await;
    browser
        .expect_line("bob", "[room] alice: Just for the room")
        .await;
    browser.send("bob", "Group room", "Got it").await;
    browser.expect_line("alice", "[room] bob: Got it").await;
    // Carol is not in the group. Alice's messages reach Carol in the order sent, so once
    // Carol has the marker she would already have had the group message.
    browser.say("alice", "marker").await;
    browser.expect_line("carol", "[ALL] alice: marker").await;
    browser.never_showed("carol", "Just for the room").await;
    browser.never_showed("carol", "Got it").await;
    browser.never_showed("carol", "joined group room").await;

    browser
        .screenshot(&["alice", "bob"], &screenshot_dir().join("two-pages.png"))
        .await;
    for page in ["alice", "bob", "carol"] {
        browser.assert_no_console_errors(page).await;
    }

    browser.close().await;
    server_a.stop().await;
    server_b.stop().await;
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_reconnecting_and_recovers_when_its_server_returns() {
    let schema = tests::TestSchema::create("chat_page_reconnect").await;
    let database_url = tests::database_url().await;
    let server = start_server(database_url, schema.name()).await;
    let url = server.url.clone();
    let mut browser = Browser::launch().await;

    browser.open("alice", &format!("{url}/")).await;
    browser.connect_as("alice", "alice").await;
    browser.join("alice", "room").await;
    browser
        .expect_line("alice", "[SYSTEM] alice joined group room")
        .await;

    server.stop().await;
    assert_eq!(
        browser.expect_state("alice", "reconnecting").await,
        "Reconnecting…"
    );
    browser
        .expect_line("alice", "[SYSTEM] Connection lost. Reconnecting…")
        .await;
    browser
        .screenshot(&["alice"], &screenshot_dir().join("reconnecting.png"))
        .await;

    // The server comes back on the same address; the page reconnects by itself and joins
    // its group again (the new server knows no groups).
    let server =
        HubServerProcess::start_at(&hub_server_binary(), database_url, schema.name(), &url).await;
    assert_eq!(
        browser.expect_state("alice", "connected").await,
        "Connected"
    );

    browser.open("bob", &format!("{url}/")).await;
    browser.connect_as("bob", "bob").await;
    browser.say("alice", "Back again").await;
    browser.expect_line("bob", "[ALL] alice: Back again").await;
    browser.join("bob", "room").await;
    browser.send("bob", "Group room", "Welcome back").await;
    browser
        .expect_line("alice", "[room] bob: Welcome back")
        .await;

    // Leaving on purpose is the third state.
    let args = json!({ "page": "alice", "role": "button", "label": "Disconnect" });
    browser.call("click", args).await;
    assert_eq!(
        browser.expect_state("alice", "disconnected").await,
        "Disconnected"
    );
    browser.expect_line("alice", "[SYSTEM] Disconnected.").await;

    browser.close().await;
    server.stop().await;
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_forced_to_long_polling_chats_with_a_websocket_page() {
    let schema = tests::TestSchema::create("chat_page_long_polling").await;
    let database_url = tests::database_url().await;
    let server_a = start_server(database_url, schema.name()).await;
    let server_b = start_server(database_url, schema.name()).await;
    let mut browser = Browser::launch().await;

    // With one transport named, the client uses that one or fails to connect.
    let polling = format!("{}/?transport=longpolling", server_a.url);
    browser.open("alice", &polling).await;
    let websockets = format!("{}/?transport=websockets", server_b.url);
    browser.open("bob", &websockets).await;
    browser.connect_as("alice", "alice").await;
    browser.connect_as("bob", "bob").await;

    browser.say("alice", "polling here").await;
    browser
        .expect_line("bob", "[ALL] alice: polling here")
        .await;
    browser.say("bob", "websocket here").await;
    browser
        .expect_line("alice", "[ALL] bob: websocket here")
        .await;
    browser.join("alice", "room").await;
    browser.join("bob", "room").await;
    browser.send("bob", "Group room", "to the room").await;
    browser
        .expect_line("alice", "[room] bob: to the room")
        .await;
    browser.assert_no_console_errors("alice").await;

    browser.close().await;
    server_a.stop().await;
    server_b.stop().await;
    schema.drop().await;
}
