//! Latency samples (microseconds) and their percentiles.

use serde::Serialize;

/// Every latency observed in a scenario, in microseconds.
#[derive(Debug, Clone, Default)]
pub struct Latencies {
    /// One sample per delivery; sorted by [`Latencies::summary`].
    samples: Vec<u32>,
}

/// Percentiles of a set of latencies, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl Latencies {
    /// Room for `capacity` samples.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            samples: Vec::with_capacity(capacity),
        }
    }

    /// Add one sample.
    pub fn record(&mut self, micros: u64) {
        self.samples.push(u32::try_from(micros).unwrap_or(u32::MAX));
    }

    /// Add every sample of `other`.
    pub fn merge(&mut self, other: Latencies) {
        self.samples.extend(other.samples);
    }

    /// How many samples there are.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Median, 99th percentile and maximum (nearest rank); zeros when empty.
    pub fn summary(&mut self) -> LatencySummary {
        if self.samples.is_empty() {
            return LatencySummary::default();
        }
        self.samples.sort_unstable();
        let at = |quantile: f64| {
            let rank = (quantile * self.samples.len() as f64).ceil() as usize;
            f64::from(self.samples[rank.clamp(1, self.samples.len()) - 1]) / 1000.0
        };
        LatencySummary {
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut latencies = Latencies::default();
        for micros in (1..=100).rev() {
            latencies.record(micros * 1000);
        }
        let summary = latencies.summary();
        assert_eq!(
            (summary.p50_ms, summary.p99_ms, summary.max_ms),
            (50.0, 99.0, 100.0)
        );
        assert_eq!(Latencies::default().summary(), LatencySummary::default());
    }
}
