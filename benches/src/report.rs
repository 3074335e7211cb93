//! What `hub-load` prints: one JSON object per line, one line per scenario (and per
//! driver), each labelled with the driver and the server flags it was measured with.

use serde::Serialize;

use crate::check::CheckTotals;
use crate::cpu::CpuUsage;
use crate::latency::LatencySummary;

/// The result of a message scenario (S1, S2, S3, the burst) or of the baseline.
#[derive(Debug, Clone, Serialize)]
pub struct MessageReport {
    /// Short name: `S1`, `S2`, `S3`, `burst`, `baseline`.
    pub scenario: String,
    /// What was measured, in words.
    pub description: String,
    /// Senders (each on instance A, or the publishing connection for the baseline).
    pub senders: u32,
    /// Receivers (each on instance B, or the LISTEN connection for the baseline).
    pub receivers: usize,
    /// Messages each sender sent.
    pub messages: u64,
    /// Length of each message's text, in bytes.
    pub payload_bytes: usize,
    /// How sending was paced: `window N` (at most N without a completion) or
    /// `open loop N/s`.
    pub pacing: String,
    /// From the first send to the last delivery, in seconds.
    pub duration_s: f64,
    /// From the first to the last send, in seconds (longer than planned when the server
    /// pushed back).
    pub send_duration_s: f64,
    /// Open-loop pacing only: how long after its scheduled time each message was
    /// actually written (median, 99th percentile, most). Latency is measured from the
    /// scheduled time, so this lag is part of it: the sender's own wake-up delay when
    /// small, the sender falling behind (a busy machine, or the server pushing back
    /// through TCP) when large.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule_lag: Option<LatencySummary>,
    /// Messages fully delivered per second (deliveries / receivers / duration).
    pub messages_per_s: f64,
    /// Deliveries (one message arriving at one receiver) per second.
    pub deliveries_per_s: f64,
    /// Latency from send to arrival, over every delivery (for open-loop pacing, from each
    /// message's scheduled time).
    pub latency: LatencySummary,
    /// Open-loop pacing only: latency from when the sender actually wrote each message
    /// instead of its scheduled time, so without the sender's own lateness
    /// (`schedule_lag`): the share of the servers (and of the receiving clients).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_from_write: Option<LatencySummary>,
    /// Loss, duplicates and order over every receiver.
    #[serde(flatten)]
    pub totals: CheckTotals,
    /// Invocations the server answered with an error (the sender saw each).
    pub refused: u64,
    /// The first such error, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_refusal: Option<String>,
    /// Connections that ended before the scenario did, and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub connection_errors: Vec<String>,
    /// S1 only: `deliveries_per_s` divided by the baseline's, measured in the same run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_to_baseline: Option<f64>,
    /// CPU used during the scenario (setup included), by process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuUsage>,
}

impl MessageReport {
    /// Whether every message arrived exactly once and in order, nothing was refused and
    /// no connection failed.
    pub fn clean(&self) -> bool {
        self.totals.lost == 0
            && self.totals.duplicated == 0
            && self.totals.out_of_order == 0
            && self.totals.unexpected == 0
            && self.refused == 0
            && self.connection_errors.is_empty()
    }
}

/// The result of S4: idle connections and server memory.
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    /// Always `S4`.
    pub scenario: String,
    /// What was measured, in words.
    pub description: String,
    /// Whether the instance was started for S4 alone (`hub-load` does that when it
    /// started the servers), so its memory before the connections is a fresh process's,
    /// not a heap that earlier scenarios grew and freed.
    pub fresh_instance: bool,
    /// Connections asked for.
    pub connections: usize,
    /// Connections that completed negotiate and handshake.
    pub connected: usize,
    /// Connections the server closed before the measurement ended.
    pub dropped: usize,
    /// Seconds to open them all.
    pub connect_s: f64,
    /// Server resident memory before opening them, in bytes.
    pub rss_before_bytes: u64,
    /// Server resident memory with all of them open and the server quiet, in bytes.
    pub rss_after_bytes: u64,
    /// (after - before) / connected, in bytes.
    pub bytes_per_connection: f64,
    /// The same in KiB.
    pub kib_per_connection: f64,
    /// Hub messages the idle clients received meanwhile (the chat hub announces every
    /// connection to everyone: `UserConnected`).
    pub frames_received: u64,
    /// Connection failures, with the first few reasons.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub connection_errors: Vec<String>,
    /// CPU used during the scenario, by process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuUsage>,
}

impl IdleReport {
    /// Whether every connection opened and stayed open.
    pub fn clean(&self) -> bool {
        self.connected == self.connections && self.dropped == 0 && self.connection_errors.is_empty()
    }
}

/// Print `report` as one JSON line on standard output.
pub fn emit(report: &impl Serialize) {
    match serde_json::to_string(report) {
        Ok(line) => println!("{line}"),
        Err(error) => eprintln!("error: cannot print a report: {error}"),
    }
}

/// Round to 3 decimals, for readable JSON.
pub fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

/// A report line with what it was measured with, so no figure can be taken for another
/// driver's or for the defaults when it was tuned.
#[derive(Debug, Serialize)]
pub struct Labelled<'a, T> {
    /// The scenario's figures.
    #[serde(flatten)]
    pub report: &'a T,
    /// Which client drove the scenario: `rust` (this program's) or `js` (the official
    /// `@microsoft/signalr` client in Node); absent where no SignalR client took part.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<&'a str>,
    /// The `hub-server` flags of the instances measured: `"defaults"` or the flags
    /// passed; absent where no instance took part (the baseline).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_flags: Option<&'a serde_json::Value>,
}
