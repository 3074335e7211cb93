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
//!
//! With a cluster secret, the payload continues with a 32-byte tag over the origin, hub,
//! first and last numbers, and a tombstone whose tag fails is not believed (it could
//! otherwise make receivers skip a real node's envelopes).

use std::sync::Arc;

use backplane_core::sequencing::SkippedRun;
use backplane_core::{EnvelopeCodec, NodeId, TAG_LEN};

use crate::names::TableNames;

/// A run of sequence numbers of one hub whose batch failed, to be written as a
/// tombstone row in its table.
pub(crate) type Tombstone = SkippedRun<Arc<TableNames>>;

/// Domain of tombstone tags.
const DOMAIN: &str = "postgres tombstone";

/// A tombstone's place: whose numbers, of which hub, ending where.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Place<'a> {
    pub(crate) origin: NodeId,
    pub(crate) hub: &'a str,
    /// The row's sequence number: the last one the tombstone covers.
    pub(crate) last: u64,
}

/// What a tombstone's tag covers, as byte strings.
fn parts(place: Place<'_>, first: u64) -> [Vec<u8>; 4] {
    [
        place.origin.to_bytes().to_vec(),
        place.hub.as_bytes().to_vec(),
        first.to_be_bytes().to_vec(),
        place.last.to_be_bytes().to_vec(),
    ]
}

fn tag(codec: &EnvelopeCodec, place: Place<'_>, first: u64) -> Option<[u8; TAG_LEN]> {
    let parts = parts(place, first);
    codec.tag(DOMAIN, &parts.each_ref().map(Vec::as_slice))
}

/// The payload of a tombstone covering `first..=place.last`, signed if `codec` has a
/// secret.
pub(crate) fn encode_signed(codec: &EnvelopeCodec, place: Place<'_>, first: u64) -> Vec<u8> {
    let mut payload = encode(first);
    if let Some(tag) = tag(codec, place, first) {
        payload.extend_from_slice(&tag);
    }
    payload
}

/// What a row's payload is, as far as tombstones go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reading {
    /// Not a tombstone (an envelope, or junk).
    NotATombstone,
    /// A tombstone covering from this number to the row's.
    Covers(u64),
    /// Shaped like a tombstone, but its tag is missing or wrong (with a secret), or its
    /// range is impossible: not believed.
    Forged,
}

/// Read `payload` of the row at `place`, verifying its tag if `codec` has a secret.
pub(crate) fn read(codec: &EnvelopeCodec, place: Place<'_>, payload: &[u8]) -> Reading {
    let [MARKER, rest @ ..] = payload else {
        return Reading::NotATombstone;
    };
    if rest.len() < 8 {
        return Reading::Forged;
    }
    let (first, tag_bytes) = rest.split_at(8);
    let first = u64::from_be_bytes(first.try_into().expect("8 bytes"));
    if !(1..=place.last).contains(&first) {
        return Reading::Forged;
    }
    let genuine = if codec.is_signed() {
        codec.verify(
            DOMAIN,
            &parts(place, first).each_ref().map(Vec::as_slice),
            tag_bytes,
        )
    } else {
        tag_bytes.is_empty()
    };
    if genuine {
        Reading::Covers(first)
    } else {
        Reading::Forged
    }
}

/// The marker byte (envelopes start with their format byte, which is never 0).
const MARKER: u8 = 0;

/// The unsigned payload of a tombstone covering `first..=` the row's sequence number.
fn encode(first: u64) -> Vec<u8> {
    let mut payload = Vec::with_capacity(9);
    payload.push(MARKER);
    payload.extend_from_slice(&first.to_be_bytes());
    payload
}

#[cfg(test)]
mod tests {
    use super::*;
    use backplane_core::Envelope;

    #[test]
    fn round_trip_and_distinct_from_envelopes() {
        let plain = EnvelopeCodec::default();
        let place = Place {
            origin: NodeId::from_u128(5),
            hub: "h",
            last: 50,
        };
        assert_eq!(read(&plain, place, &encode(42)), Reading::Covers(42));
        assert_eq!(read(&plain, place, &[0, 1, 2]), Reading::Forged);
        assert_eq!(read(&plain, place, &encode(51)), Reading::Forged);
        assert_eq!(
            read(
                &plain,
                place,
                &[Envelope::FORMAT_VERSION, 0, 0, 0, 0, 0, 0, 0, 1]
            ),
            Reading::NotATombstone
        );
        assert_ne!(MARKER, Envelope::FORMAT_VERSION);
    }

    #[test]
    fn signed_tombstones_are_bound_to_their_place() {
        let codec = EnvelopeCodec::new(Some(
            backplane_core::ClusterSecret::new("0123456789abcdef").unwrap(),
        ));
        let place = Place {
            origin: NodeId::from_u128(5),
            hub: "h",
            last: 50,
        };
        let payload = encode_signed(&codec, place, 42);
        assert_eq!(read(&codec, place, &payload), Reading::Covers(42));
        assert_eq!(read(&codec, place, &encode(42)), Reading::Forged);
        let elsewhere = Place { last: 60, ..place };
        assert_eq!(read(&codec, elsewhere, &payload), Reading::Forged);
        assert_eq!(
            read(&EnvelopeCodec::default(), place, &payload),
            Reading::Forged
        );
    }
}
