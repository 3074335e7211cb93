//! The backplane's metrics: their names, and the handles the backplanes record through.
//!
//! Recording goes through the [`metrics`] facade, which does nothing until the
//! application installs a recorder (`hub_server::metrics::install` installs a Prometheus
//! one), so a library user who wants no metrics pays for none. Handles are registered
//! once, when a backplane or a hub starts, and each recording is then an atomic add on a
//! handle: install the recorder before starting them, or what they record goes nowhere.
//!
//! Every metric carries a `backplane` label ([`Backplane::kind`](crate::Backplane::kind):
//! `postgres`, `redis`, `nats`, `memory`), so one dashboard serves every deployment.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use metrics::{Counter, Histogram, Unit};

use crate::backplane::GapRepair;
use crate::sync::lock;

/// Counter: envelopes this node published (each one once, whatever its batch).
pub const ENVELOPES_PUBLISHED: &str = "backplane_envelopes_published_total";
/// Counter: envelopes this node received from other nodes, summed over its hubs.
pub const ENVELOPES_RECEIVED: &str = "backplane_envelopes_received_total";
/// Counter: sequence gaps (or reconnect catch-ups) that recovered every missed envelope.
pub const GAPS_REPAIRED: &str = "backplane_gaps_repaired_total";
/// Counter: envelopes known to be lost for good (unrepairable gaps, a lagging subscriber).
pub const ENVELOPES_LOST: &str = "backplane_envelopes_lost_total";
/// Counter: times the receiving link came back after it was lost.
pub const RECONNECTS: &str = "backplane_reconnects_total";
/// Histogram: envelopes per published batch (one PostgreSQL transaction, one log append).
pub const PUBLISH_BATCH_SIZE: &str = "backplane_publish_batch_size";
/// Histogram: seconds one batch took to be stored (the commit, or the append's
/// acknowledgement).
pub const COMMIT_DURATION: &str = "backplane_commit_duration_seconds";
/// Gauge: seconds since the receiving side last heard anything from the backend (a
/// notification, a probe's answer, a read), set when metrics are rendered
/// ([`refresh_gauges`]).
pub const SECONDS_SINCE_LAST_HEARD: &str = "backplane_seconds_since_last_heard";

/// The buckets of [`PUBLISH_BATCH_SIZE`], for exporters that need them up front.
pub const BATCH_SIZE_BUCKETS: [f64; 12] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];

/// Describe every backplane metric to the installed recorder (help texts and units).
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(ENVELOPES_PUBLISHED, "Envelopes this node published.");
    describe_counter!(
        ENVELOPES_RECEIVED,
        "Envelopes this node received from other nodes."
    );
    describe_counter!(
        GAPS_REPAIRED,
        "Sequence gaps or reconnect catch-ups that recovered every missed envelope."
    );
    describe_counter!(
        ENVELOPES_LOST,
        "Envelopes known to be lost for good (unrepairable gaps, lag)."
    );
    describe_counter!(
        RECONNECTS,
        "Times the receiving link came back after it was lost."
    );
    describe_histogram!(
        PUBLISH_BATCH_SIZE,
        Unit::Count,
        "Envelopes per published batch."
    );
    describe_histogram!(
        COMMIT_DURATION,
        Unit::Seconds,
        "Time one published batch took to be stored."
    );
    describe_gauge!(
        SECONDS_SINCE_LAST_HEARD,
        Unit::Seconds,
        "Seconds since the receiving side last heard anything from the backend."
    );
}

/// The sending side's handles, registered once per backplane node.
#[derive(Debug, Clone)]
pub struct PublishMetrics {
    /// [`ENVELOPES_PUBLISHED`].
    published: Counter,
    /// [`PUBLISH_BATCH_SIZE`].
    batch_size: Histogram,
    /// [`COMMIT_DURATION`].
    commit_duration: Histogram,
}

impl PublishMetrics {
    /// Handles labelled `backplane = kind`.
    pub fn new(kind: &'static str) -> Self {
        Self {
            published: metrics::counter!(ENVELOPES_PUBLISHED, "backplane" => kind),
            batch_size: metrics::histogram!(PUBLISH_BATCH_SIZE, "backplane" => kind),
            commit_duration: metrics::histogram!(COMMIT_DURATION, "backplane" => kind),
        }
    }

    /// A batch of `envelopes` was stored in `took`.
    pub fn batch_stored(&self, envelopes: usize, took: Duration) {
        self.published.increment(envelopes as u64);
        self.batch_size.record(envelopes as f64);
        self.commit_duration.record(took.as_secs_f64());
    }
}

/// The receiving side of one node: its reconnects, and when it last heard anything.
///
/// Cheap to share (`Arc` inside); the listener calls [`ReceiveMetrics::heard`] on every
/// message, so that is a relaxed atomic store and nothing more.
#[derive(Debug, Clone)]
pub struct ReceiveMetrics {
    /// [`RECONNECTS`].
    reconnects: Counter,
    /// Read by [`refresh_gauges`] and by the backplane's `since_last_heard`.
    last_heard: Arc<LastHeard>,
}

/// When a node's receiving side last heard from its backend.
#[derive(Debug)]
struct LastHeard {
    /// The node kind, as the gauge's label.
    kind: &'static str,
    /// Milliseconds after [`epoch`] when something was last heard.
    at_millis: AtomicU64,
}

impl ReceiveMetrics {
    /// Handles labelled `backplane = kind`; the node counts as heard from now.
    pub fn new(kind: &'static str) -> Self {
        let last_heard = Arc::new(LastHeard {
            kind,
            at_millis: AtomicU64::new(millis_since_epoch()),
        });
        let mut nodes = lock(live_nodes());
        // Forget the nodes gone meanwhile, in case nothing ever renders.
        nodes.retain(|node| node.strong_count() > 0);
        nodes.push(Arc::downgrade(&last_heard));
        drop(nodes);
        Self {
            reconnects: metrics::counter!(RECONNECTS, "backplane" => kind),
            last_heard,
        }
    }

    /// The backend was heard from (a notification, a probe's answer, a read).
    pub fn heard(&self) {
        self.last_heard
            .at_millis
            .store(millis_since_epoch(), Ordering::Relaxed);
    }

    /// The link came back after it was lost.
    pub fn reconnected(&self) {
        self.reconnects.increment(1);
    }

    /// How long ago the backend was last heard from.
    pub fn since_last_heard(&self) -> Duration {
        self.last_heard.elapsed()
    }
}

impl LastHeard {
    fn elapsed(&self) -> Duration {
        let at = self.at_millis.load(Ordering::Relaxed);
        Duration::from_millis(millis_since_epoch().saturating_sub(at))
    }
}

/// What one hub's lifetime manager receives, recorded as it applies it.
#[derive(Debug, Clone)]
pub(crate) struct HubReceiveMetrics {
    /// [`ENVELOPES_RECEIVED`]: counted where every backend's envelopes end up, so no
    /// backend counts them itself.
    received: Counter,
    /// [`GAPS_REPAIRED`], from the `Reconnected` reports.
    gaps_repaired: Counter,
    /// [`ENVELOPES_LOST`], from the `Reconnected` and `Lagged` reports.
    lost: Counter,
}

impl HubReceiveMetrics {
    pub(crate) fn new(kind: &'static str) -> Self {
        Self {
            received: metrics::counter!(ENVELOPES_RECEIVED, "backplane" => kind),
            gaps_repaired: metrics::counter!(GAPS_REPAIRED, "backplane" => kind),
            lost: metrics::counter!(ENVELOPES_LOST, "backplane" => kind),
        }
    }

    pub(crate) fn received(&self) {
        self.received.increment(1);
    }

    /// A `Reconnected` report: a gap that recovered something counts as repaired.
    pub(crate) fn gap(&self, gap: &GapRepair) {
        match gap {
            GapRepair::Repaired { recovered } if *recovered > 0 => self.gaps_repaired.increment(1),
            GapRepair::Repaired { .. } => {}
            GapRepair::Unrepairable { missing, .. } => self.lost.increment(*missing),
        }
    }

    pub(crate) fn lost(&self, missed: u64) {
        self.lost.increment(missed);
    }
}

/// Set [`SECONDS_SINCE_LAST_HEARD`] for every running node kind (the longest silence
/// when several nodes of one kind run in this process). Call it just before rendering:
/// a gauge of elapsed time is only true when read.
pub fn refresh_gauges() {
    let mut longest: Vec<(&'static str, Duration)> = Vec::new();
    lock(live_nodes()).retain(|weak| {
        let Some(node) = weak.upgrade() else {
            return false;
        };
        let elapsed = node.elapsed();
        match longest.iter_mut().find(|(kind, _)| *kind == node.kind) {
            Some((_, worst)) => *worst = (*worst).max(elapsed),
            None => longest.push((node.kind, elapsed)),
        }
        true
    });
    for (kind, elapsed) in longest {
        metrics::gauge!(SECONDS_SINCE_LAST_HEARD, "backplane" => kind).set(elapsed.as_secs_f64());
    }
}

/// The receiving sides of the nodes alive in this process, for [`refresh_gauges`].
fn live_nodes() -> &'static Mutex<Vec<Weak<LastHeard>>> {
    static NODES: OnceLock<Mutex<Vec<Weak<LastHeard>>>> = OnceLock::new();
    NODES.get_or_init(Mutex::default)
}

/// Milliseconds since the first call in this process: a monotonic clock that fits an
/// atomic.
fn millis_since_epoch() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_is_measured_from_the_last_hearing() {
        let node = ReceiveMetrics::new("test");
        std::thread::sleep(Duration::from_millis(30));
        assert!(node.since_last_heard() >= Duration::from_millis(30));
        node.heard();
        assert!(node.since_last_heard() < Duration::from_millis(30));
        let weak = Arc::downgrade(&node.last_heard);
        drop(node);
        refresh_gauges();
        let forgotten = !lock(live_nodes()).iter().any(|live| live.ptr_eq(&weak));
        assert!(forgotten, "a dropped node is forgotten");
    }
}
