//! Counting what a repair recovered and lost, and reporting it.

use crate::backplane::GapRepair;

/// What happened to the envelopes of one gap or one catch-up after a reconnect.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RepairTally {
    /// Envelopes read back from storage (or resumed) and delivered.
    pub recovered: u64,
    /// Sequence numbers nothing in storage accounts for any more (trimmed by
    /// retention, lost with the server, or never stored).
    pub missing: u64,
    /// Stored envelopes that could not be decoded, skipped.
    pub corrupt: u64,
}

impl RepairTally {
    /// The [`GapRepair`] this tally amounts to. `cause` says what was repaired
    /// ("while disconnected", "sequence numbers 5..=9 from node ..."), `storage` where
    /// missing envelopes should have been ("the table", "the stream"); both end up in
    /// the `detail` of an unrepairable outcome.
    pub fn outcome(self, cause: &str, storage: &str) -> GapRepair {
        if self.missing == 0 && self.corrupt == 0 {
            GapRepair::Repaired {
                recovered: self.recovered,
            }
        } else {
            GapRepair::Unrepairable {
                recovered: self.recovered,
                missing: self.missing.saturating_add(self.corrupt),
                detail: format!(
                    "{cause}: {} envelopes no longer in {storage} (deleted by retention, lost by the server, or never stored) and {} corrupt",
                    self.missing, self.corrupt
                ),
            }
        }
    }

    /// Add `other`'s counts to this one.
    pub fn add(&mut self, other: RepairTally) {
        // Saturating: a forged sequence number can claim a gap of nearly 2^64.
        self.recovered = self.recovered.saturating_add(other.recovered);
        self.missing = self.missing.saturating_add(other.missing);
        self.corrupt = self.corrupt.saturating_add(other.corrupt);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_saturate() {
        let mut tally = RepairTally {
            missing: u64::MAX - 1,
            corrupt: 5,
            ..RepairTally::default()
        };
        tally.add(RepairTally {
            missing: 10,
            ..RepairTally::default()
        });
        assert_eq!(tally.missing, u64::MAX);
        assert!(matches!(
            tally.outcome("x", "y"),
            GapRepair::Unrepairable {
                missing: u64::MAX,
                ..
            }
        ));
    }

    #[test]
    fn clean_repairs_and_losses() {
        let clean = RepairTally {
            recovered: 3,
            ..RepairTally::default()
        };
        assert_eq!(
            clean.outcome("x", "the stream"),
            GapRepair::Repaired { recovered: 3 }
        );
        let mut lossy = clean;
        lossy.add(RepairTally {
            recovered: 1,
            missing: 2,
            corrupt: 1,
        });
        match lossy.outcome("while disconnected", "the stream") {
            GapRepair::Unrepairable {
                recovered: 4,
                missing: 3,
                detail,
            } => assert!(
                detail.starts_with("while disconnected: 2 envelopes no longer in the stream")
            ),
            other => panic!("{other:?}"),
        }
    }
}
