//! Tombstones: rows that stand for sequence numbers whose publishing batch failed.
//!
//! A batch commits atomically, so when it fails for good each of its runs of sequence
//! numbers (one per hub) is covered by a single row at the run's *last* sequence number,
//! whose payload is the byte `0` (never a valid envelope format byte) followed by the
//! run's *first* sequence number as 8 big-endian bytes. It is written with `ON CONFLICT
//! DO NOTHING`: if the batch did commit after all (its acknowledgement was lost), the
//! real row wins and the real envelopes are delivered.
//!
//! Receivers treat `first..=last` as skipped: nothing is waited for, nothing reported
//! lost.

/// The marker byte (envelopes start with their format byte, which is never 0).
const MARKER: u8 = 0;

/// The payload of a tombstone covering `first..=` the row's sequence number.
pub(crate) fn encode(first: u64) -> Vec<u8> {
    let mut payload = Vec::with_capacity(9);
    payload.push(MARKER);
    payload.extend_from_slice(&first.to_be_bytes());
    payload
}

/// The first sequence number a tombstone payload covers, or `None` if `payload` is not a
/// tombstone.
pub(crate) fn decode(payload: &[u8]) -> Option<u64> {
    match payload {
        [MARKER, first @ ..] => Some(u64::from_be_bytes(first.try_into().ok()?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use backplane_core::Envelope;

    #[test]
    fn round_trip_and_distinct_from_envelopes() {
        assert_eq!(decode(&encode(42)), Some(42));
        assert_eq!(decode(&[0, 1, 2]), None);
        assert_eq!(
            decode(&[Envelope::FORMAT_VERSION, 0, 0, 0, 0, 0, 0, 0, 1]),
            None
        );
        assert_ne!(MARKER, Envelope::FORMAT_VERSION);
    }
}
