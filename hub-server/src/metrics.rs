//! Prometheus metrics: [`install`] the recorder once at start, then serve its text with
//! [`router`] (`GET /metrics`).
//!
//! Everything in this workspace records through the [`metrics`](::metrics) facade, which
//! does nothing until a recorder is installed: a library user who never calls
//! [`install`] pays an atomic load per recording site and nothing else, and one who
//! prefers another exporter installs that recorder instead and reads the same names.
//! The names, their labels and what they mean are listed in `hub-server/README.md`
//! ("Metrics").
//!
//! Install before building the backplane and the hubs: they register their metric
//! handles when they start (so that recording on the hot paths is an atomic add on a
//! handle, not a look-up by name), and a handle registered before the recorder existed
//! records nowhere.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use hub_server::{chat, metrics};
//!
//! let handle = metrics::install()?;
//! let hub = chat::hub_builder().build().await?;
//! let app = chat::router(&hub, chat::ServerInfo::new("node-a", "memory"))
//!     .merge(metrics::router(handle));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:5000").await?;
//! axum::serve(listener, app).await?;
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

use ::metrics::{Counter, Gauge, Unit, describe_counter, describe_gauge, describe_histogram};
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use hub_protocol::Protocol;

/// Gauge: open connections past their handshake, by `transport` and `protocol`.
pub const CONNECTIONS: &str = "signalr_connections";
/// Counter: hub messages received from clients (invocations, stream items, completions,
/// pings, acks...), by `transport` and `protocol`.
pub const MESSAGES_RECEIVED: &str = "signalr_messages_received_total";
/// Counter: hub messages written to clients (everything sent to them and the
/// completions of their invocations; not pings or the final Close), by `transport` and
/// `protocol`.
pub const MESSAGES_SENT: &str = "signalr_messages_sent_total";
/// Histogram: seconds a hub method ran, by `hub`.
pub const INVOCATION_DURATION: &str = "signalr_invocation_duration_seconds";
/// Counter: messages refused because a client's send queue was full (the client is then
/// disconnected). No labels: a queue does not know its hub, and this path is rare enough
/// to look the counter up by name each time.
pub const SEND_QUEUE_DROPS: &str = "signalr_send_queue_drops_total";
/// Gauge: connection tokens issued by negotiate and not claimed by a transport yet, by
/// `hub`.
pub const NEGOTIATE_TOKENS_OUTSTANDING: &str = "signalr_negotiate_tokens_outstanding";

/// The content type of Prometheus' text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Buckets for the `_seconds` histograms: 100 µs (a method that returns at once) to 10 s
/// (a commit waiting out a retry).
const SECONDS_BUCKETS: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0,
];

/// How often histogram samples are folded into their buckets when nobody scrapes, so
/// they never pile up in memory.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The installed recorder, to render what it holds. Cheap to clone.
#[derive(Debug, Clone)]
pub struct MetricsHandle {
    /// The Prometheus recorder's read side.
    prometheus: PrometheusHandle,
}

impl MetricsHandle {
    /// Everything recorded so far, in Prometheus' text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        backplane_core::metrics::refresh_gauges();
        self.prometheus.render()
    }
}

/// [`install`] failed: another recorder is installed already (one per process).
#[derive(Debug, thiserror::Error)]
#[error("cannot install the Prometheus recorder: {0}")]
pub struct InstallError(String);

/// Install a Prometheus recorder as this process's metrics recorder, with every metric
/// of the hub and the backplanes described, histograms with buckets (not summaries), and
/// a background thread that folds histogram samples into their buckets every few
/// seconds.
///
/// # Errors
///
/// [`InstallError`] if a recorder is installed already: call this once, at start.
pub fn install() -> Result<MetricsHandle, InstallError> {
    let prometheus = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
        .and_then(|builder| {
            builder.set_buckets_for_metric(
                Matcher::Full(backplane_core::metrics::PUBLISH_BATCH_SIZE.into()),
                &backplane_core::metrics::BATCH_SIZE_BUCKETS,
            )
        })
        .map_err(|error| InstallError(error.to_string()))?
        .install_recorder()
        .map_err(|error| InstallError(error.to_string()))?;
    describe();
    backplane_core::metrics::describe();
    let upkeep = prometheus.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                upkeep.run_upkeep();
            }
        })
        .map_err(|error| InstallError(format!("cannot start the upkeep thread: {error}")))?;
    Ok(MetricsHandle { prometheus })
}

/// `GET /metrics`: what `handle`'s recorder holds, as Prometheus scrapes it. Merge it
/// into the application's router, or serve it on a port of its own; it tells anyone who
/// can reach it how busy the server is and how its backplane fares, so keep it off the
/// public Internet.
pub fn router(handle: MetricsHandle) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(handle)
}

async fn scrape(State(handle): State<MetricsHandle>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], handle.render())
}

fn describe() {
    describe_gauge!(
        CONNECTIONS,
        Unit::Count,
        "Open connections past their handshake."
    );
    describe_counter!(MESSAGES_RECEIVED, "Hub messages received from clients.");
    describe_counter!(MESSAGES_SENT, "Hub messages written to clients.");
    describe_histogram!(
        INVOCATION_DURATION,
        Unit::Seconds,
        "Time a hub method took to run."
    );
    describe_counter!(
        SEND_QUEUE_DROPS,
        "Messages refused because a client's send queue was full."
    );
    describe_gauge!(
        NEGOTIATE_TOKENS_OUTSTANDING,
        Unit::Count,
        "Connection tokens issued by negotiate and not claimed yet."
    );
}

/// One connection's metrics: counted in [`CONNECTIONS`] while this lives, and its
/// message counters registered once, so counting a message is one atomic add.
#[derive(Debug)]
pub(crate) struct ConnectionMetrics {
    /// [`CONNECTIONS`] for this connection's labels, decremented on drop.
    open: Gauge,
    /// [`MESSAGES_RECEIVED`].
    pub(crate) received: Counter,
    /// [`MESSAGES_SENT`].
    pub(crate) sent: Counter,
}

impl ConnectionMetrics {
    /// A connection on `transport` (its label) speaking `protocol` is open.
    pub(crate) fn open(transport: &'static str, protocol: Protocol) -> Self {
        let protocol = protocol_label(protocol);
        let labels = [("transport", transport), ("protocol", protocol)];
        let open = ::metrics::gauge!(CONNECTIONS, &labels);
        open.increment(1.0);
        Self {
            open,
            received: ::metrics::counter!(MESSAGES_RECEIVED, &labels),
            sent: ::metrics::counter!(MESSAGES_SENT, &labels),
        }
    }
}

impl Drop for ConnectionMetrics {
    fn drop(&mut self) {
        self.open.decrement(1.0);
    }
}

/// The `protocol` label: the protocol's name in the handshake, lowercased.
fn protocol_label(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Json => "json",
        Protocol::MessagePack => "messagepack",
    }
}
