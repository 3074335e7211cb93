//! The binary's Prometheus metrics and backplane health, read as operators read them: two
//! `hub-server` processes on one PostgreSQL schema (and on Redis, and on NATS), Rust clients on three transports and
//! both protocols, `/metrics` scraped with plain HTTP GETs between the steps, and the
//! counters' moves checked against what the clients did. Also: `--metrics-listen`,
//! `--metrics false` and `--log-format json`.

mod support;

use std::time::Duration;

use chat_client::{HubConnection, HubConnectionBuilder, Protocol, TransportType};
use support::{PATIENCE, Server, request};
use tests::{TestBackend, TestSchema};
use tokio::sync::mpsc;

/// One sample line: name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// One scrape, line by line.
struct Scrape(Vec<Sample>);

impl Scrape {
    /// `GET /metrics` on `address`, checking the exposition format's content type.
    async fn take(address: &str) -> Self {
        let (status, head, body) = request(address, "GET /metrics HTTP/1.1\r\n").await;
        assert_eq!(status, 200, "{head}{body}");
        assert!(
            head.contains("content-type: text/plain; version=0.0.4"),
            "{head}"
        );
        Self::parse(&body)
    }

    fn parse(text: &str) -> Self {
        let mut samples = Vec::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (key, value) = line.rsplit_once(' ').expect("a sample line");
            let value: f64 = value.parse().expect("a number");
            let (name, labels) = match key.split_once('{') {
                Some((name, rest)) => {
                    let labels = rest
                        .trim_end_matches('}')
                        .split(',')
                        .filter(|pair| !pair.is_empty())
                        .map(|pair| {
                            let (k, v) = pair.split_once('=').expect("label=value");
                            (k.to_owned(), v.trim_matches('"').to_owned())
                        })
                        .collect();
                    (name.to_owned(), labels)
                }
                None => (key.to_owned(), Vec::new()),
            };
            samples.push((name, labels, value));
        }
        Self(samples)
    }

    /// The sample `name` carrying every label of `labels` (0 when absent: a counter
    /// nobody touched yet).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels).unwrap_or(0.0)
    }

    fn find(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.0
            .iter()
            .find(|(n, have, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| have.iter().any(|(hk, hv)| hk == k && hv == v))
            })
            .map(|(_, _, value)| *value)
    }
}

const WS_JSON: [(&str, &str); 2] = [("transport", "websockets"), ("protocol", "json")];
const SSE_JSON: [(&str, &str); 2] = [("transport", "server_sent_events"), ("protocol", "json")];
const LP_MSGPACK: [(&str, &str); 2] = [("transport", "long_polling"), ("protocol", "messagepack")];
const POSTGRES: [(&str, &str); 1] = [("backplane", "postgres")];
const CHAT: [(&str, &str); 1] = [("hub", "ChatHub")];

/// A started client on `transport` with `protocol`, and the chat messages it receives.
async fn client(
    server: &Server,
    transport: TransportType,
    protocol: Protocol,
) -> (HubConnection, mpsc::UnboundedReceiver<String>) {
    let connection = HubConnectionBuilder::new(format!("{}/chathub", server.base_url()))
        .transports([transport])
        .protocol(protocol)
        // No client Ping during the test, so every message the server counts is one the
        // test sent (the server's client timeout is 30 s).
        .keep_alive_interval(Duration::from_secs(25))
        .build()
        .expect("client");
    let (tx, rx) = mpsc::unbounded_channel();
    connection.on("ReceiveMessage", move |(_user, text): (String, String)| {
        let _ = tx.send(text);
    });
    tokio::time::timeout(PATIENCE, connection.start())
        .await
        .expect("connects in time")
        .expect("connects");
    (connection, rx)
}

/// Wait until `messages` has brought every one of `texts`, in any order, among others.
async fn receive(messages: &mut mpsc::UnboundedReceiver<String>, texts: &[&str]) {
    let mut missing: Vec<&str> = texts.to_vec();
    tokio::time::timeout(PATIENCE, async {
        while !missing.is_empty() {
            let received = messages.recv().await.expect("the client is running");
            missing.retain(|text| *text != received);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{texts:?} never all arrived"));
}

/// Scrape `address` until `check` holds (gauges settle asynchronously).
async fn scrape_until(address: &str, what: &str, check: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let scrape = Scrape::take(address).await;
        if check(&scrape) {
            return scrape;
        }
        if tokio::time::Instant::now() >= deadline {
            let lines: Vec<String> = (scrape.0.iter())
                .filter(|(name, _, _)| !name.ends_with("_bucket"))
                .map(|(name, labels, value)| format!("{name} {labels:?} {value}"))
                .collect();
            panic!("never {what}; last scrape:\n{}", lines.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn metrics_follow_connections_messages_and_the_backplane_over_postgres() {
    counts_on(TestBackend::Postgres, "postgres").await;
}

#[tokio::test]
async fn metrics_follow_connections_messages_and_the_backplane_over_redis() {
    counts_on(TestBackend::Redis, "redis").await;
}

#[tokio::test]
async fn metrics_follow_connections_messages_and_the_backplane_over_nats() {
    counts_on(TestBackend::Nats, "nats").await;
}

/// Two instances on `backend` (whose `backplane` label is `kind`), clients on three
/// transports and both protocols, and what their traffic does to the metrics.
async fn counts_on(backend: TestBackend, kind: &str) {
    let namespace = backend.process_namespace("metrics").await;
    let flags: Vec<&str> = namespace.flags.iter().map(String::as_str).collect();
    let on_kind = [("backplane", kind)];
    let mut a = Server::start(&flags).await;
    let mut b = Server::start(&flags).await;
    a.expect_log("backplane connected").await;
    b.expect_log("backplane connected").await;

    let (sender, mut on_a) = client(&a, TransportType::WebSockets, Protocol::Json).await;
    let (watcher, mut on_a_sse) = client(&a, TransportType::ServerSentEvents, Protocol::Json).await;
    let (poller, mut on_b) = client(&b, TransportType::LongPolling, Protocol::MessagePack).await;

    // Gauges: each connection under its transport and protocol, on its own instance.
    let scrape = scrape_until(&a.address, "counted A's connections", |s| {
        s.get("signalr_connections", &WS_JSON) == 1.0
            && s.get("signalr_connections", &SSE_JSON) == 1.0
    })
    .await;
    assert_eq!(scrape.get("signalr_connections", &LP_MSGPACK), 0.0);
    scrape_until(&b.address, "counted B's connection", |s| {
        s.get("signalr_connections", &LP_MSGPACK) == 1.0
            && s.get("signalr_connections", &WS_JSON) == 0.0
    })
    .await;

    // Settle the announcements of the connections (UserConnected) before counting: a
    // message from each instance that every client got comes after that instance's
    // announcements in its order.
    sender
        .invoke::<(), _>("SendMessage", ("ann", "sync a"))
        .await
        .expect("sync sent");
    poller
        .invoke::<(), _>("SendMessage", ("bob", "sync b"))
        .await
        .expect("sync sent");
    for messages in [&mut on_a, &mut on_a_sse, &mut on_b] {
        receive(messages, &["sync a", "sync b"]).await;
    }
    let before_a = Scrape::take(&a.address).await;
    let before_b = Scrape::take(&b.address).await;

    const SENT: usize = 5;
    for n in 0..SENT {
        sender
            .invoke::<(), _>("SendMessage", ("ann", format!("hello {n}")))
            .await
            .expect("sent");
    }
    for messages in [&mut on_a, &mut on_a_sse, &mut on_b] {
        receive(messages, &[&format!("hello {}", SENT - 1)]).await;
    }
    let n = SENT as f64;
    let after_a = scrape_until(&a.address, "counted A's deliveries", |s| {
        s.get("signalr_messages_sent_total", &SSE_JSON)
            - before_a.get("signalr_messages_sent_total", &SSE_JSON)
            == n
    })
    .await;
    let after_b = scrape_until(&b.address, "counted B's deliveries", |s| {
        s.get("signalr_messages_sent_total", &LP_MSGPACK)
            - before_b.get("signalr_messages_sent_total", &LP_MSGPACK)
            == n
    })
    .await;
    let moved = |after: &Scrape, before: &Scrape, name: &str, labels: &[(&str, &str)]| {
        after.get(name, labels) - before.get(name, labels)
    };

    // The sender's five invocations in, five completions and five broadcasts out.
    assert_eq!(
        moved(
            &after_a,
            &before_a,
            "signalr_messages_received_total",
            &WS_JSON
        ),
        n
    );
    assert_eq!(
        moved(&after_a, &before_a, "signalr_messages_sent_total", &WS_JSON),
        2.0 * n
    );
    // The watchers sent nothing.
    assert_eq!(
        moved(
            &after_a,
            &before_a,
            "signalr_messages_received_total",
            &SSE_JSON
        ),
        0.0
    );
    assert_eq!(
        moved(
            &after_b,
            &before_b,
            "signalr_messages_received_total",
            &LP_MSGPACK
        ),
        0.0
    );
    // Five method runs timed on A, none on B.
    assert_eq!(
        moved(
            &after_a,
            &before_a,
            "signalr_invocation_duration_seconds_count",
            &CHAT
        ),
        n
    );
    assert_eq!(
        moved(
            &after_b,
            &before_b,
            "signalr_invocation_duration_seconds_count",
            &CHAT
        ),
        0.0
    );
    assert!(
        after_a
            .find(
                "signalr_invocation_duration_seconds_bucket",
                &[("le", "+Inf")]
            )
            .is_some()
    );

    // The backplane: five envelopes out of A in batches whose sizes add up to five, and
    // five into B; nothing lost.
    assert_eq!(
        moved(
            &after_a,
            &before_a,
            "backplane_envelopes_published_total",
            &on_kind
        ),
        n
    );
    assert_eq!(
        moved(
            &after_a,
            &before_a,
            "backplane_publish_batch_size_sum",
            &on_kind
        ),
        n
    );
    let batches = moved(
        &after_a,
        &before_a,
        "backplane_publish_batch_size_count",
        &on_kind,
    );
    assert!((1.0..=n).contains(&batches), "{batches} batches");
    assert_eq!(
        moved(
            &after_a,
            &before_a,
            "backplane_commit_duration_seconds_count",
            &on_kind
        ),
        batches
    );
    assert_eq!(
        moved(
            &after_b,
            &before_b,
            "backplane_envelopes_received_total",
            &on_kind
        ),
        n
    );
    assert_eq!(
        moved(
            &after_b,
            &before_b,
            "backplane_envelopes_published_total",
            &on_kind
        ),
        0.0
    );
    for scrape in [&after_a, &after_b] {
        assert_eq!(scrape.get("backplane_envelopes_lost_total", &on_kind), 0.0);
        assert_eq!(scrape.get("backplane_reconnects_total", &on_kind), 0.0);
        let silence = scrape
            .find("backplane_seconds_since_last_heard", &on_kind)
            .expect("the silence gauge");
        assert!(
            (0.0..30.0).contains(&silence),
            "{silence} s since last heard"
        );
    }

    // A negotiate nobody follows up is outstanding until claimed or expired.
    let before = Scrape::take(&a.address).await;
    assert_eq!(
        before.get("signalr_negotiate_tokens_outstanding", &CHAT),
        0.0
    );
    let (status, _, _) = request(&a.address, &support::negotiate(None)).await;
    assert_eq!(status, 200);
    let scrape = Scrape::take(&a.address).await;
    assert_eq!(
        scrape.get("signalr_negotiate_tokens_outstanding", &CHAT),
        1.0
    );

    // /health: the link's state with the new details, the old fields kept.
    let (status, _, body) = request(&b.address, "GET /health HTTP/1.1\r\n").await;
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    let backplane = &health["backplane"];
    assert_eq!(backplane["status"], "connected", "{body}");
    assert!(
        backplane["envelopesReceived"].as_u64().unwrap() > SENT as u64,
        "{body}"
    );
    let silence = backplane["secondsSinceLastHeard"]
        .as_f64()
        .expect("secondsSinceLastHeard");
    assert!((0.0..30.0).contains(&silence), "{body}");
    assert!(backplane.get("disconnectedSince").is_none(), "{body}");

    // Disconnecting takes the gauges back down.
    for connection in [&sender, &watcher, &poller] {
        connection.stop().await;
    }
    scrape_until(&a.address, "uncounted A's connections", |s| {
        s.get("signalr_connections", &WS_JSON) == 0.0
            && s.get("signalr_connections", &SSE_JSON) == 0.0
    })
    .await;
    scrape_until(&b.address, "uncounted B's connection", |s| {
        s.get("signalr_connections", &LP_MSGPACK) == 0.0
    })
    .await;
    drop((a, b));
    namespace.remove().await;
}

#[tokio::test]
async fn metrics_can_move_to_their_own_port_or_be_turned_off() {
    let mut server = Server::start(&["--metrics-listen", "127.0.0.1:0"]).await;
    // Logged before the main port's "listening on".
    let log = server.drain_log().await;
    let metrics_address = log
        .split("metrics on http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap()
        .to_owned();
    let scrape = Scrape::take(&metrics_address).await;
    assert!(
        scrape
            .find("signalr_negotiate_tokens_outstanding", &CHAT)
            .is_some(),
        "the hub's metrics are on the metrics port"
    );
    let (status, _, _) = request(&server.address, "GET /metrics HTTP/1.1\r\n").await;
    assert_eq!(status, 404, "not on the main port any more");

    let off = Server::start(&["--metrics", "false"]).await;
    let (status, _, _) = request(&off.address, "GET /metrics HTTP/1.1\r\n").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn log_format_json_prints_one_json_object_per_line() {
    let mut server = Server::start(&["--log-format", "json"]).await;
    let (status, _, _) = request(&server.address, "GET /health HTTP/1.1\r\n").await;
    assert_eq!(status, 200);
    let log = server.drain_log().await;
    let mut listening = false;
    for line in log.lines() {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            event["level"].is_string() && event["timestamp"].is_string(),
            "{line}"
        );
        let message = event["fields"]["message"].as_str().unwrap_or_default();
        listening |= message.starts_with("listening on http://127.0.0.1:");
    }
    assert!(listening, "the listening line is among them:\n{log}");
}

#[tokio::test]
async fn health_and_metrics_show_an_outage_and_the_reconnect() {
    let schema = TestSchema::create("metrics_outage").await;
    let proxy = tests::CuttingProxy::start(schema.database_address().await).await;
    let config = schema.options().config;
    let url = format!(
        "postgres://{}@{}/{}",
        config.get_user().expect("a user"),
        proxy.address,
        config.get_dbname().expect("a database")
    );
    let mut server = Server::start(&["--database-url", &url, "--schema", schema.name()]).await;
    server.expect_log("backplane connected").await;
    // Another instance on the database directly, whose message A misses and repairs.
    let mut other =
        Server::start(&["--database-url", schema.url(), "--schema", schema.name()]).await;
    other.expect_log("backplane connected").await;
    let (sender, _) = client(&other, TransportType::WebSockets, Protocol::Json).await;
    let before = Scrape::take(&server.address).await;

    // The database's connections drop and no new one gets through.
    proxy.partition(true);
    proxy.cut();
    let outage = tokio::time::timeout(PATIENCE, async {
        loop {
            let (status, _, body) = request(&server.address, "GET /health HTTP/1.1\r\n").await;
            if status == 503 {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("/health reports the outage");
    let health: serde_json::Value = serde_json::from_str(&outage).unwrap();
    let backplane = &health["backplane"];
    assert_eq!(backplane["status"], "disconnected", "{outage}");
    let since = backplane["disconnectedSince"]
        .as_str()
        .expect("disconnectedSince");
    assert!(since.len() == 24 && since.ends_with('Z'), "{outage}");
    assert!(
        backplane["secondsDisconnected"].as_f64().is_some(),
        "{outage}"
    );
    assert!(backplane["reason"].is_string(), "{outage}");

    // Silence grows while nothing is heard.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let scrape = Scrape::take(&server.address).await;
    let silence = scrape.get("backplane_seconds_since_last_heard", &POSTGRES);
    assert!(
        silence >= 2.0,
        "{silence} s since last heard during the outage"
    );
    assert_eq!(scrape.get("backplane_reconnects_total", &POSTGRES), 0.0);
    sender
        .invoke::<(), _>("SendMessage", ("bob", "during the outage"))
        .await
        .expect("the other instance publishes");

    // The database is back: one reconnect, and /health is healthy without the outage's
    // fields.
    proxy.partition(false);
    proxy.cut();
    let after = scrape_until(&server.address, "counted the reconnect", |s| {
        s.get("backplane_reconnects_total", &POSTGRES) == 1.0
    })
    .await;
    // The catch-up read the missed message from the table: one gap repaired, nothing lost.
    let moved = |name: &str| after.get(name, &POSTGRES) - before.get(name, &POSTGRES);
    assert_eq!(moved("backplane_gaps_repaired_total"), 1.0);
    assert!(moved("backplane_envelopes_received_total") >= 1.0);
    assert_eq!(moved("backplane_envelopes_lost_total"), 0.0);
    let healthy = tokio::time::timeout(PATIENCE, async {
        loop {
            let (status, _, body) = request(&server.address, "GET /health HTTP/1.1\r\n").await;
            if status == 200 {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("healthy again");
    let health: serde_json::Value = serde_json::from_str(&healthy).unwrap();
    assert!(
        health["backplane"].get("disconnectedSince").is_none(),
        "{healthy}"
    );
    let silence = health["backplane"]["secondsSinceLastHeard"]
        .as_f64()
        .unwrap();
    assert!(silence < 2.0, "{healthy}");
    sender.stop().await;
    drop((server, other));
    schema.drop().await;
}

/// Run the official JavaScript client's `chat` scenario (`tests/js/official-client.js`)
/// against `server` with `protocol` on `transport` (`negotiate` picks WebSockets).
async fn official_chat(server: &Server, protocol: &str, transport: &str) {
    tests::ensure_js_packages().await;
    let output = tokio::process::Command::new("node")
        .args([
            "official-client.js",
            &server.base_url(),
            "chat",
            protocol,
            transport,
        ])
        .current_dir(tests::js_dir())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), output)
        .await
        .expect("the scenario ends in time")
        .expect("node runs (Node.js 18+ is needed)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn the_official_client_is_counted_under_its_transport_and_protocol() {
    let server = Server::start(&[]).await;
    let before = Scrape::take(&server.address).await;
    official_chat(&server, "messagepack", "negotiate").await;
    official_chat(&server, "json", "sse").await;
    // Both clients are gone; each scenario's two connections ran ten invocations.
    let ws_msgpack = [("transport", "websockets"), ("protocol", "messagepack")];
    let after = scrape_until(&server.address, "uncounted the clients", |s| {
        s.get("signalr_connections", &ws_msgpack) == 0.0
            && s.get("signalr_connections", &SSE_JSON) == 0.0
    })
    .await;
    let moved =
        |name: &str, labels: &[(&str, &str)]| after.get(name, labels) - before.get(name, labels);
    assert_eq!(
        moved("signalr_invocation_duration_seconds_count", &CHAT),
        20.0
    );
    for labels in [&ws_msgpack, &SSE_JSON] {
        assert!(moved("signalr_messages_received_total", labels) >= 10.0);
        // Each invocation's completion at least.
        assert!(moved("signalr_messages_sent_total", labels) >= 10.0);
    }
    assert_eq!(moved("signalr_messages_received_total", &WS_JSON), 0.0);
}
