//! How a backend's receiving side waits between reconnect attempts: one policy and one
//! jitter source for every backplane.

use std::time::{Duration, SystemTime};

use crate::id::NodeId;

/// How a node retries after its connection dropped. It never gives up: a node whose
/// server is gone keeps trying, and reports `Disconnected` meanwhile.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct ReconnectBackoff {
    /// Wait before the first retry. Default: 100 ms (a killed connection is usually back
    /// at once; waiting long would only delay catch-up).
    pub initial: Duration,
    /// The wait doubles after each failed attempt up to this. Default: 10 s.
    pub max: Duration,
    /// Each wait is shortened by a random fraction of up to this much (0.0 to 1.0), so
    /// many nodes that lost the server together do not reconnect in lock step.
    /// Default: 0.25.
    pub jitter: f64,
}

impl Default for ReconnectBackoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
            jitter: 0.25,
        }
    }
}

impl ReconnectBackoff {
    /// The wait before reconnect attempt `attempt` (0-based): `initial` doubling up to
    /// `max`, shortened by `jitter × random` (`random` in `0.0..1.0`).
    pub fn delay(&self, attempt: u32, random: f64) -> Duration {
        let base = self
            .initial
            .saturating_mul(2u32.saturating_pow(attempt.min(20)))
            .min(self.max);
        base.mul_f64(1.0 - self.jitter * random.clamp(0.0, 1.0))
    }
}

/// A cheap source of jitter (xorshift64): spread, not cryptographic quality.
#[derive(Debug, Clone)]
pub struct Jitter {
    /// The generator's state; never 0.
    state: u64,
}

impl Jitter {
    /// A generator seeded from the clock and `node`, so nodes started together differ.
    pub fn new(node: NodeId) -> Self {
        let seed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ (node.as_u128() as u64)
            | 1;
        Self { state: seed }
    }

    /// The next number in `0.0..1.0`.
    pub fn next_fraction(&mut self) -> f64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        (self.state >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_jitters_down() {
        let settings = ReconnectBackoff::default(); // 100 ms .. 10 s, jitter 0.25
        assert_eq!(settings.delay(0, 0.0), Duration::from_millis(100));
        assert_eq!(settings.delay(3, 0.0), Duration::from_millis(800));
        assert_eq!(settings.delay(10, 0.0), Duration::from_secs(10));
        assert_eq!(settings.delay(u32::MAX, 0.0), Duration::from_secs(10));
        let jittered = settings.delay(10, 0.999);
        assert!(jittered >= Duration::from_millis(7500) && jittered < Duration::from_secs(10));
        let mut jitter = Jitter::new(NodeId::random());
        assert!((0..100).all(|_| (0.0..1.0).contains(&jitter.next_fraction())));
    }
}
