//! From what the clients observed to a [`MessageReport`]: one computation for every
//! driver (the Rust client in [`crate::scenario`], the official JavaScript client in
//! [`crate::js_driver`]), so the figures of both mean the same thing.

use crate::check::{CheckTotals, DeliveryCheck};
use crate::latency::{Latencies, LatencySummary};
use crate::probe::Probe;
use crate::report::{MessageReport, round3};
use crate::scenario::{Delivery, MessageRun, MessageScenario, Pacing};

/// What one receiver saw.
#[derive(Debug)]
pub(crate) struct ReceiverOutcome {
    /// Loss, duplicates and order of the messages it got.
    pub(crate) check: DeliveryCheck,
    /// Latencies from when each message counts as sent.
    pub(crate) latencies: Latencies,
    /// Latencies from when each message was actually written.
    pub(crate) latencies_from_write: Latencies,
    /// Sequence number, send time and arrival time of each message, if kept.
    pub(crate) arrivals: Vec<(u64, u64, u64)>,
    /// Whether to keep `arrivals` (`--latency-log`).
    keep_arrivals: bool,
    /// When the last new message arrived (sender's clock).
    pub(crate) last_arrival: u64,
    /// Why the connection ended early, if it did.
    pub(crate) error: Option<String>,
}

impl ReceiverOutcome {
    /// Nothing seen yet, out of `messages` from each of `senders`.
    pub(crate) fn new(senders: u32, messages: u64, keep_arrivals: bool) -> Self {
        let capacity = usize::try_from(messages).unwrap_or(0);
        Self {
            check: DeliveryCheck::new(senders, messages),
            latencies: Latencies::with_capacity(capacity),
            latencies_from_write: Latencies::with_capacity(capacity),
            arrivals: Vec::with_capacity(if keep_arrivals { capacity } else { 0 }),
            keep_arrivals,
            last_arrival: 0,
            error: None,
        }
    }

    /// One message of the group arrived at `now`, carrying `probe` (`None`: text that
    /// carries none, counted as unexpected).
    pub(crate) fn record(&mut self, probe: Option<Probe>, now: u64) {
        let Some(probe) = probe else {
            self.check.record(&Probe {
                sender: u32::MAX,
                seq: 0,
                sent_micros: 0,
                written_micros: 0,
            });
            return;
        };
        if self.check.record(&probe) {
            self.latencies.record(now.saturating_sub(probe.sent_micros));
            self.latencies_from_write
                .record(now.saturating_sub(probe.written_micros));
            if self.keep_arrivals {
                self.arrivals.push((probe.seq, probe.sent_micros, now));
            }
            self.last_arrival = now;
        }
    }
}

/// What the sender did.
#[derive(Debug, Clone)]
pub(crate) struct Sent {
    /// When sending started (same clock as the probes).
    pub(crate) started: u64,
    /// When the last message was written.
    pub(crate) finished: u64,
    /// Open loop only: how long after its scheduled time each message was sent.
    pub(crate) schedule_lag: Option<LatencySummary>,
}

/// Everything a driver observed during one scenario.
#[derive(Debug)]
pub(crate) struct Observed {
    /// The sender's side.
    pub(crate) sent: Sent,
    /// One per receiver that reported.
    pub(crate) outcomes: Vec<ReceiverOutcome>,
    /// Invocations the server answered with an error (only a driver that waits for
    /// completions can see them).
    pub(crate) refused: u64,
    /// The first such error.
    pub(crate) first_refusal: Option<String>,
    /// Connections or sends that failed, and why.
    pub(crate) connection_errors: Vec<String>,
}

/// The scenario's report (and its deliveries, when kept) from what was observed.
pub(crate) fn tally(scenario: &MessageScenario, observed: Observed) -> MessageRun {
    let Observed {
        sent,
        outcomes,
        refused,
        first_refusal,
        mut connection_errors,
    } = observed;
    let started = sent.started;
    let mut totals = CheckTotals::default();
    let mut latencies = Latencies::default();
    let mut latencies_from_write = Latencies::default();
    let mut last_arrival = started;
    let mut deliveries = Vec::new();
    for (receiver, outcome) in outcomes.into_iter().enumerate() {
        deliveries.extend(
            outcome
                .arrivals
                .iter()
                .map(|&(seq, sent, arrived)| Delivery {
                    receiver,
                    seq,
                    sent_micros: sent,
                    arrived_micros: arrived,
                }),
        );
        totals += outcome.check.totals();
        latencies.merge(outcome.latencies);
        latencies_from_write.merge(outcome.latencies_from_write);
        last_arrival = last_arrival.max(outcome.last_arrival);
        connection_errors.extend(outcome.error);
    }
    // What should have arrived comes from the scenario, not from the receivers that
    // reported: a receiver that failed loses all it had.
    totals.expected = scenario.messages * scenario.receivers as u64;
    totals.lost = totals.expected.saturating_sub(totals.delivered);
    connection_errors.truncate(10);
    let duration = (last_arrival.saturating_sub(started)) as f64 / 1e6;
    let per_second = |count: f64| {
        if duration > 0.0 {
            count / duration
        } else {
            0.0
        }
    };
    let report = MessageReport {
        scenario: scenario.name.clone(),
        description: scenario.description.clone(),
        senders: 1,
        receivers: scenario.receivers,
        messages: scenario.messages,
        payload_bytes: scenario.payload_len,
        pacing: match scenario.pacing {
            Pacing::Window(window) => format!("window {window}"),
            Pacing::Rate(rate) => format!("open loop {rate}/s"),
        },
        duration_s: round3(duration),
        send_duration_s: round3(sent.finished.saturating_sub(started) as f64 / 1e6),
        schedule_lag: sent.schedule_lag,
        messages_per_s: per_second(totals.delivered as f64 / scenario.receivers.max(1) as f64)
            .round(),
        deliveries_per_s: per_second(totals.delivered as f64).round(),
        latency: latencies.summary(),
        latency_from_write: match scenario.pacing {
            Pacing::Rate(_) => Some(latencies_from_write.summary()),
            Pacing::Window(_) => None,
        },
        totals,
        refused,
        first_refusal,
        connection_errors,
        ratio_to_baseline: None,
        cpu: None,
    };
    MessageRun { report, deliveries }
}
