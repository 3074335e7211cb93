//! `hub-server --cluster-secret-file` on every scale-out backplane the binary offers:
//! instances with the same secret talk, an instance with another secret neither delivers
//! their messages nor has its own delivered, and counts what it drops (`/health`'s
//! `envelopesRejected`). Real processes, real WebSocket clients.

mod hub_support;

use std::path::PathBuf;
use std::time::Duration;

use hub_support::RawClient;
use serde_json::Value;
use tests::{HubServerProcess, TestBackend};

const PATIENCE: Duration = Duration::from_secs(20);

/// A secret file of this test's own, holding `secret`.
fn secret_file(label: &str, secret: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("cluster-secret-{label}-{}", std::process::id()));
    std::fs::write(&path, secret).expect("writing the secret file");
    path
}

/// `GET /health` of the server at `url` (`http://host:port`), as JSON.
async fn health(url: &str) -> Value {
    let address = url
        .trim_start_matches("http://")
        .parse()
        .expect("host:port");
    hub_support::health(address).await.1
}

/// A JSON client of the chat hub at `url`, past its handshake.
async fn client(url: &str) -> RawClient {
    let ws = url.replacen("http://", "ws://", 1);
    let mut client = RawClient::connect(&format!("{ws}/chathub")).await;
    client.handshake_json().await;
    client
}

/// The next `ReceiveMessage` text `client` gets, skipping everything else.
async fn next_message(client: &mut RawClient) -> String {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let frame = client.next_json().await;
            if frame["target"] == "ReceiveMessage" {
                return frame["arguments"][1]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
            }
        }
    })
    .await
    .expect("a ReceiveMessage in time")
}

/// Send `text` as `SendMessage` from `client` and wait for its completion; the texts of
/// the `ReceiveMessage`s that came meanwhile (its own echo among them).
async fn send(client: &mut RawClient, text: &str) -> Vec<String> {
    let arguments = serde_json::json!(["u", text]).to_string();
    let (completion, before) = client
        .invoke_json_until_completion("s", "SendMessage", &arguments)
        .await;
    assert_eq!(completion.get("error"), None, "{completion}");
    before
        .iter()
        .filter(|frame| frame["target"] == "ReceiveMessage")
        .map(|frame| {
            frame["arguments"][1]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

async fn signed_cluster(backend: TestBackend, label: &str) {
    let namespace = backend.process_namespace(label).await;
    let binary = tests::workspace_binaries(&["hub-server"], &["hub-server"])["hub-server"].clone();
    let shared = secret_file(
        &format!("{label}-shared"),
        "the cluster's secret, 32 bytes!!",
    );
    let other = secret_file(
        &format!("{label}-other"),
        "another cluster's secret, 32 b!!",
    );
    let with = |file: &PathBuf| {
        let mut flags = namespace.flags.clone();
        flags.extend([
            "--cluster-secret-file".to_owned(),
            file.display().to_string(),
        ]);
        flags
    };
    let urls = "http://127.0.0.1:0";
    let a = HubServerProcess::start_with(&binary, &with(&shared), urls).await;
    let b = HubServerProcess::start_with(&binary, &with(&shared), urls).await;
    let stranger = HubServerProcess::start_with(&binary, &with(&other), urls).await;

    let mut on_stranger = client(&stranger.url).await;
    let mut on_b = client(&b.url).await;
    let mut on_a = client(&a.url).await;
    send(&mut on_a, "signed hello").await;
    assert_eq!(next_message(&mut on_b).await, "signed hello");
    let before_own = send(&mut on_stranger, "stranger's hello").await;
    assert!(
        before_own.iter().all(|text| text == "stranger's hello"),
        "a signed message reached the stranger: {before_own:?}"
    );
    send(&mut on_a, "after the stranger").await;
    assert_eq!(
        next_message(&mut on_b).await,
        "after the stranger",
        "the stranger's message is not delivered"
    );
    send(&mut on_a, "final").await;
    assert_eq!(next_message(&mut on_b).await, "final");
    // The stranger drops and counts what A and B sent: B's and A's connection
    // announcements and A's three messages (on PostgreSQL one notification may carry an
    // announcement and the message after it, so at least four).
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let rejected = health(&stranger.url).await["backplane"]["envelopesRejected"]
            .as_u64()
            .unwrap_or_default();
        if rejected >= 4 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stranger rejected {rejected}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Its own echo (taken by `send`) is all it delivered: anything else it got since is
    // still waiting in its socket and would be read here.
    let quiet = tokio::time::timeout(Duration::from_millis(300), next_message(&mut on_stranger));
    assert!(
        quiet.await.is_err(),
        "a signed message reached the stranger"
    );
    let rejected_by_b = health(&b.url).await["backplane"]["envelopesRejected"]
        .as_u64()
        .unwrap_or_default();
    assert!(rejected_by_b >= 1, "B counts the stranger's traffic");

    for server in [a, b, stranger] {
        server.stop().await;
    }
    namespace.remove().await;
    for file in [shared, other] {
        let _ = std::fs::remove_file(file);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_on_redis_share_a_secret_and_refuse_a_stranger() {
    signed_cluster(TestBackend::Redis, "secret_redis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_on_nats_share_a_secret_and_refuse_a_stranger() {
    signed_cluster(TestBackend::Nats, "secret_nats").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_on_postgres_share_a_secret_and_refuse_a_stranger() {
    signed_cluster(TestBackend::Postgres, "secret_pg").await;
}
