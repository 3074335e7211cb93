//! S4: many idle WebSocket connections on one instance, and the server memory they cost.
//!
//! Each connection negotiates, completes the handshake, then only reads (the chat hub
//! announces every new connection to everyone, and a client that stopped reading would be
//! disconnected once its send queue overflowed) and pings well inside the client
//! timeout (`chat-client`'s keep-alive); every message it reads is counted. The server's resident memory is read from `/proc/{pid}/status` before the
//! first connection (once it has stopped changing) and once all are open and the server
//! has gone quiet.
//!
//! The instance should be fresh (`hub-load` starts one for S4 when it starts the servers):
//! a server that already ran other scenarios has freed heap that new connections reuse
//! without growing its resident memory, which would bias the figure low.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chat_client::HubConnection;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::client::{ClientOptions, hub_connection};
use crate::report::{IdleReport, round3};
use crate::servers::rss_bytes;

/// The S4 settings.
#[derive(Debug, Clone)]
pub struct IdleScenario {
    /// Connections to open.
    pub connections: usize,
    /// Connections being opened at once.
    pub concurrency: usize,
    /// Longest wait for the server's memory to settle once all are open.
    pub settle_timeout: Duration,
    /// Connection settings (a small read buffer: this program holds them all too).
    pub client: ClientOptions,
    /// Whether the instance was started for S4 alone (reported as is).
    pub fresh_instance: bool,
}

/// Counters the connection tasks share.
#[derive(Debug, Default)]
struct Counters {
    frames: AtomicU64,
    dropped: AtomicUsize,
}

/// Open one connection that counts every message it reads, and counts itself as
/// dropped if it is lost before `stop`.
async fn open(
    server: &str,
    options: ClientOptions,
    shared: Arc<Counters>,
    stop: watch::Receiver<bool>,
) -> Result<HubConnection, String> {
    let counted = shared.clone();
    let connection = hub_connection(server, options)
        .observe_messages(move |_message| {
            counted.frames.fetch_add(1, Ordering::Relaxed);
        })
        .build()
        .map_err(|error| error.to_string())?;
    connection.on_closed(move |reason| {
        if reason.is_some() && !*stop.borrow() {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
    });
    connection
        .start()
        .await
        .map_err(|error| error.to_string())?;
    Ok(connection)
}

/// Wait until the server's memory stops growing (no change above 64 KiB over a second,
/// and the clients receive nothing new), or `timeout`; the last reading.
async fn settled_rss(pid: u32, shared: &Counters, timeout: Duration) -> u64 {
    let deadline = Instant::now() + timeout;
    let mut last = (
        rss_bytes(pid).unwrap_or(0),
        shared.frames.load(Ordering::Relaxed),
    );
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = (
            rss_bytes(pid).unwrap_or(0),
            shared.frames.load(Ordering::Relaxed),
        );
        let quiet = now.0.abs_diff(last.0) < 64 * 1024 && now.1 == last.1;
        last = now;
        if quiet || Instant::now() >= deadline {
            return last.0;
        }
    }
}

/// Run S4 against `server` (process `pid`).
///
/// # Errors
///
/// A message when the server's memory cannot be read.
pub async fn run(scenario: &IdleScenario, server: &str, pid: u32) -> Result<IdleReport, String> {
    rss_bytes(pid).ok_or_else(|| format!("cannot read the memory of process {pid}"))?;
    let shared = Arc::new(Counters::default());
    // A server that just started may still be settling (its backplane connections).
    let rss_before = settled_rss(pid, &shared, scenario.settle_timeout).await;
    let (stop_tx, stop) = watch::channel(false);
    let mut held = Vec::with_capacity(scenario.connections);
    let mut opening = JoinSet::new();
    let mut errors = Vec::new();
    let mut failures = 0usize;
    let mut connected = 0usize;
    let started = Instant::now();
    let mut launched = 0;
    while launched < scenario.connections || !opening.is_empty() {
        while launched < scenario.connections && opening.len() < scenario.concurrency.max(1) {
            let (server, options) = (server.to_owned(), scenario.client);
            let (shared, stop) = (shared.clone(), stop.clone());
            opening.spawn(async move { open(&server, options, shared, stop).await });
            launched += 1;
        }
        match opening.join_next().await {
            Some(Ok(Ok(connection))) => {
                connected += 1;
                held.push(connection);
            }
            Some(Ok(Err(error))) => {
                failures += 1;
                if errors.len() < 5 {
                    errors.push(error);
                }
            }
            Some(Err(error)) => {
                failures += 1;
                if errors.len() < 5 {
                    errors.push(format!("connection task: {error}"));
                }
            }
            None => break,
        }
    }
    let connect_s = started.elapsed().as_secs_f64();
    let rss_after = settled_rss(pid, &shared, scenario.settle_timeout).await;
    let dropped = shared.dropped.load(Ordering::Relaxed);
    let _ = stop_tx.send(true);
    let mut closing = JoinSet::new();
    for connection in held {
        closing.spawn(async move { connection.stop().await });
    }
    while closing.join_next().await.is_some() {}
    if failures > 0 {
        errors.insert(0, format!("{failures} connections failed"));
    }
    let held = connected.saturating_sub(dropped).max(1);
    let per_connection = rss_after.saturating_sub(rss_before) as f64 / held as f64;
    Ok(IdleReport {
        scenario: "S4".into(),
        description: format!(
            "{} idle WebSocket connections (negotiate + JSON handshake) on one {}instance; \
             server RSS delta per connection",
            scenario.connections,
            if scenario.fresh_instance {
                "freshly started "
            } else {
                ""
            }
        ),
        fresh_instance: scenario.fresh_instance,
        connections: scenario.connections,
        connected,
        dropped,
        connect_s: round3(connect_s),
        rss_before_bytes: rss_before,
        rss_after_bytes: rss_after,
        bytes_per_connection: per_connection.round(),
        kib_per_connection: round3(per_connection / 1024.0),
        frames_received: shared.frames.load(Ordering::Relaxed),
        connection_errors: errors,
        cpu: None,
    })
}
