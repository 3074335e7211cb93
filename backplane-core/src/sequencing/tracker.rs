//! The last sequence number delivered per (origin, hub): how a receiver delivers
//! exactly once and notices a missed envelope.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::id::NodeId;

/// What an incoming sequence number means, given what was delivered before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    /// Nothing was seen from this origin for this hub yet: start tracking here.
    First,
    /// The next one, deliver it.
    Next,
    /// Already delivered (a duplicate from catch-up, a retried batch or a reference).
    Duplicate,
    /// Sequence numbers `from..=to` were skipped.
    Gap {
        /// First missing.
        from: u64,
        /// Last missing.
        to: u64,
    },
}

/// Last delivered sequence per hub and origin.
///
/// One per receiving node (or per receiving task); not shared between threads.
#[derive(Debug, Default)]
pub struct Tracker {
    /// hub -> origin -> last delivered; keyed by hub first so look-ups borrow `&str`.
    hubs: HashMap<String, HashMap<NodeId, Entry>>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Last delivered (or skipped) sequence number.
    seq: u64,
    /// When it advanced, to forget origins that went quiet for good.
    seen: Instant,
}

impl Tracker {
    /// Classify `seq` from `origin` for `hub`, without recording it.
    pub fn observe(&self, origin: NodeId, hub: &str, seq: u64) -> Observation {
        match self.last(origin, hub) {
            None => Observation::First,
            Some(last) if seq <= last => Observation::Duplicate,
            Some(last) if seq == last + 1 => Observation::Next,
            Some(last) => Observation::Gap {
                from: last + 1,
                to: seq - 1,
            },
        }
    }

    /// The last sequence delivered from `origin` for `hub`.
    pub fn last(&self, origin: NodeId, hub: &str) -> Option<u64> {
        self.hubs.get(hub)?.get(&origin).map(|entry| entry.seq)
    }

    /// Record that everything up to `seq` from `origin` for `hub` is done with.
    pub fn advance(&mut self, origin: NodeId, hub: &str, seq: u64) {
        let origins = match self.hubs.get_mut(hub) {
            Some(origins) => origins,
            None => self.hubs.entry(hub.to_owned()).or_default(),
        };
        let entry = origins.entry(origin).or_insert(Entry {
            seq,
            seen: Instant::now(),
        });
        if seq >= entry.seq {
            entry.seq = seq;
            entry.seen = Instant::now();
        }
    }

    /// Account for a stored item covering `first..=last` from `origin` for `hub` (an
    /// envelope: `first == last`; a skipped run: the numbers it covers), and record it.
    ///
    /// `None` if everything in it was delivered or skipped already (drop it); otherwise
    /// how many numbers before `first` nothing accounted for (0 for the next one, or the
    /// first seen from this origin): the caller counts them as missing, or reads them
    /// back first and calls again.
    pub fn accept(&mut self, origin: NodeId, hub: &str, first: u64, last: u64) -> Option<u64> {
        if self.last(origin, hub).is_some_and(|seen| seen >= last) {
            return None;
        }
        let missing = match self.observe(origin, hub, first) {
            Observation::Gap { from, to } => to - from + 1,
            Observation::First | Observation::Next | Observation::Duplicate => 0,
        };
        self.advance(origin, hub, last);
        Some(missing)
    }

    /// Every (origin, last) tracked for `hub`.
    pub fn known(&self, hub: &str) -> Vec<(NodeId, u64)> {
        self.hubs
            .get(hub)
            .map(|origins| origins.iter().map(|(o, e)| (*o, e.seq)).collect())
            .unwrap_or_default()
    }

    /// Forget everything about `hub`.
    pub fn forget_hub(&mut self, hub: &str) {
        self.hubs.remove(hub);
    }

    /// Forget origins not heard from for `age`: their envelopes are gone by retention, and
    /// node ids are never reused, so keeping them would only grow memory and catch-up
    /// queries.
    pub fn forget_older_than(&mut self, age: Duration) {
        let now = Instant::now();
        for origins in self.hubs.values_mut() {
            origins.retain(|_, entry| now.duration_since(entry.seen) < age);
        }
        self.hubs.retain(|_, origins| !origins.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_and_advances() {
        let a = NodeId::from_u128(1);
        let b = NodeId::from_u128(2);
        let mut tracker = Tracker::default();
        assert_eq!(tracker.observe(a, "h", 7), Observation::First);
        tracker.advance(a, "h", 7);
        assert_eq!(tracker.observe(a, "h", 7), Observation::Duplicate);
        assert_eq!(tracker.observe(a, "h", 8), Observation::Next);
        assert_eq!(
            tracker.observe(a, "h", 11),
            Observation::Gap { from: 8, to: 10 }
        );
        assert_eq!(tracker.observe(b, "h", 1), Observation::First);
        assert_eq!(tracker.observe(a, "other", 1), Observation::First);
        tracker.advance(a, "h", 5);
        assert_eq!(tracker.last(a, "h"), Some(7), "never moves backwards");
        assert_eq!(tracker.known("h"), vec![(a, 7)]);
        assert_eq!(tracker.accept(a, "h", 7, 7), None, "already delivered");
        assert_eq!(tracker.accept(a, "h", 10, 12), Some(2), "8 and 9 missing");
        assert_eq!(tracker.last(a, "h"), Some(12));
        assert_eq!(tracker.accept(a, "h", 13, 13), Some(0));
        assert_eq!(tracker.accept(b, "x", 40, 40), Some(0), "first from b");
        tracker.forget_older_than(Duration::ZERO);
        assert_eq!(tracker.last(a, "h"), None);
        assert_eq!(tracker.last(b, "x"), None);
    }
}
