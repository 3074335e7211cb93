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
//!
//! Until a tombstone is written, its node keeps it in [`PendingTombstones`].

use std::sync::Arc;

use backplane_core::sequencing::SkippedRun;
use backplane_core::{EnvelopeCodec, NodeId, TAG_LEN};

use crate::names::TableNames;

/// A run of sequence numbers of one hub whose batch failed, to be written as a
/// tombstone row in its table.
pub(crate) type Tombstone = SkippedRun<Arc<TableNames>>;

/// The tombstones a node has yet to write, in the order their batches failed: the next
/// batch that commits writes them ahead of its own rows (its table's share, when a
/// batch is written table by table), and a batch the database refuses with them is
/// tried once more without them, which gives them up.
#[derive(Debug, Default)]
pub(crate) struct PendingTombstones {
    /// The runs, oldest first.
    runs: Vec<Tombstone>,
}

impl PendingTombstones {
    /// The runs to write with the next batch.
    pub(crate) fn as_slice(&self) -> &[Tombstone] {
        &self.runs
    }

    /// How many runs wait.
    pub(crate) fn len(&self) -> usize {
        self.runs.len()
    }

    /// Whether none waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Remember `runs` (of a failed batch, of envelopes lost before their flush, or of
    /// queued envelopes failed at once), after those already waiting.
    pub(crate) fn extend(&mut self, runs: impl IntoIterator<Item = Tombstone>) {
        self.runs.extend(runs);
    }

    /// Move every run of `other` after these.
    pub(crate) fn append(&mut self, other: &mut PendingTombstones) {
        self.runs.append(&mut other.runs);
    }

    /// Written: nothing waits any more.
    pub(crate) fn clear(&mut self) {
        self.runs.clear();
    }

    /// Take out the runs stored in `table` (in their order), leaving the others.
    pub(crate) fn take_table(&mut self, table: &TableNames) -> PendingTombstones {
        let (mine, rest) = std::mem::take(&mut self.runs)
            .into_iter()
            .partition(|run| run.route.qualified == table.qualified);
        self.runs = rest;
        PendingTombstones { runs: mine }
    }
}

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

    fn run(table: &str, hub: &str, first: u64) -> Tombstone {
        let route = Arc::new(TableNames {
            slug: table.into(),
            qualified: format!("\"s\".\"{table}\""),
            table: table.into(),
            time_index: String::new(),
            channel: String::new(),
        });
        Tombstone {
            route,
            hub: hub.into(),
            first,
            last: first + 1,
        }
    }

    #[test]
    fn pending_tombstones_split_by_table_in_order() {
        let mut pending = PendingTombstones::default();
        pending.extend([run("a", "h1", 1), run("b", "h2", 5), run("a", "h3", 9)]);
        let table_a = pending.as_slice()[0].route.clone();
        let mut of_a = pending.take_table(&table_a);
        let firsts =
            |p: &PendingTombstones| p.as_slice().iter().map(|r| r.first).collect::<Vec<_>>();
        assert_eq!(firsts(&of_a), [1, 9]);
        assert_eq!(firsts(&pending), [5]);
        pending.append(&mut of_a);
        assert_eq!(firsts(&pending), [5, 1, 9]);
        assert!(of_a.is_empty());
        assert_eq!(pending.len(), 3);
        pending.clear();
        assert!(pending.is_empty());
    }

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
