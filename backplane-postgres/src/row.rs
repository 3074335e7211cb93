//! One row of a messages table as Rust sees it: sequence numbers written as `bigint`, the
//! payload of a row holding a run of envelopes ([`RowPacker`]), and rows read back
//! ([`StoredRow`], one per envelope or tombstone they hold).
//!
//! A row's `seq` is the *last* sequence number it accounts for, and its payload is one of:
//! - an encoded envelope (its format byte first, never 0 or 255): that envelope alone;
//! - a *tombstone* (first byte 0, see the `tombstone` module): numbers skipped;
//! - a *pack* (first byte 255, [`PACK_MARKER`]): the envelopes numbered `first..=seq` of
//!   one hub, `first` as 8 big-endian bytes, then each encoded envelope preceded by its
//!   length as an unsigned LEB128 varint, in order, exactly as in an inline notification.
//!
//! A batch stores each hub's run of envelopes as packs of up to [`MAX_ROW_PACK`] bytes
//! (a run of one envelope as a plain envelope row), so a batch of hundreds of envelopes
//! costs the table a row and its index entries per run, not per envelope. Keying a row by
//! its last number keeps what tombstones rely on: a tombstone for a failed batch's run
//! and the run's last real row share their key, so whichever was written first wins.

use backplane_core::{EnvelopeCodec, NodeId};
use hub_protocol::varint;
use tokio_postgres::Row;

use crate::notification;
use crate::tombstone::{self, Reading};

/// The first byte of a pack row's payload (envelope format bytes count up from 1;
/// tombstones start with 0).
pub(crate) const PACK_MARKER: u8 = 255;

/// The largest pack a row holds, in bytes; a run that does not fit continues in the next
/// row (an envelope larger than this is a row of its own).
pub(crate) const MAX_ROW_PACK: usize = 1024 * 1024;

/// Sequence numbers start at 1 and grow by one per publish, so they fit a bigint for
/// any realistic lifetime of a node; saturate rather than wrap just in case.
pub(crate) fn seq_i64(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// A row read from a messages table.
#[derive(Debug)]
pub(crate) struct StoredRow {
    pub(crate) origin: NodeId,
    pub(crate) hub: String,
    pub(crate) seq: u64,
    /// An encoded envelope, a tombstone, or empty where a faulty pack ends.
    pub(crate) payload: Vec<u8>,
    /// Whether the payload is a tombstone (verified, with a cluster secret).
    pub(crate) tombstone: Reading,
}

impl StoredRow {
    /// The first sequence number this row accounts for.
    pub(crate) fn first_seq(&self) -> u64 {
        match self.tombstone {
            Reading::Covers(first) => first,
            Reading::NotATombstone | Reading::Forged => self.seq,
        }
    }
}

/// What a row of a messages table holds, one [`StoredRow`] per envelope or tombstone in
/// sequence order, or `None` if its origin column is malformed.
///
/// A pack that is corrupt, or whose envelopes do not number exactly `first..=seq`, yields
/// the envelopes read before the fault and then an empty payload at the row's `seq`,
/// which the listener counts as corrupt (and the numbers between as missing).
pub(crate) fn stored_rows(codec: &EnvelopeCodec, row: &Row) -> Option<Vec<StoredRow>> {
    let origin: &[u8] = row.try_get(0).ok()?;
    let origin = NodeId::from_bytes(origin.try_into().ok()?);
    let hub: String = row.try_get(1).ok()?;
    let seq = u64::try_from(row.try_get::<_, i64>(2).ok()?).ok()?;
    let payload: Vec<u8> = row.try_get(3).ok()?;
    Some(read_payload(codec, origin, hub, seq, payload))
}

/// [`stored_rows`] once the columns are read.
pub(crate) fn read_payload(
    codec: &EnvelopeCodec,
    origin: NodeId,
    hub: String,
    seq: u64,
    payload: Vec<u8>,
) -> Vec<StoredRow> {
    let entry = |hub: String, seq: u64, payload: Vec<u8>| StoredRow {
        origin,
        hub,
        seq,
        payload,
        tombstone: Reading::NotATombstone,
    };
    if let Some((first, pack)) = unpack(&payload) {
        let mut rows = Vec::new();
        // The number of the next entry; `None` past `u64::MAX`.
        let mut next = Some(first);
        let mut whole = true;
        for item in notification::entries(pack) {
            match (item, next) {
                (Ok(bytes), Some(at)) if at <= seq => {
                    rows.push(entry(hub.clone(), at, bytes.to_vec()));
                    next = at.checked_add(1);
                }
                _ => {
                    whole = false;
                    break;
                }
            }
        }
        if !whole || next != seq.checked_add(1) || rows.is_empty() {
            rows.push(entry(hub, seq, Vec::new()));
        }
        return rows;
    }
    let place = tombstone::Place {
        origin,
        hub: &hub,
        last: seq,
    };
    let tombstone = tombstone::read(codec, place, &payload);
    vec![StoredRow {
        origin,
        hub,
        seq,
        payload,
        tombstone,
    }]
}

/// The first number and the pack of a pack row's payload, or `None` for any other row.
fn unpack(payload: &[u8]) -> Option<(u64, &[u8])> {
    let [PACK_MARKER, rest @ ..] = payload else {
        return None;
    };
    let (first, pack) = rest.split_at_checked(8)?;
    Some((u64::from_be_bytes(first.try_into().ok()?), pack))
}

/// One row as written: its hub, its (last) sequence number and its payload.
#[derive(Debug)]
pub(crate) struct RowOut {
    pub(crate) hub: String,
    pub(crate) seq: u64,
    pub(crate) payload: Vec<u8>,
}

/// Groups one batch's encoded envelopes for one table into rows: a row per run of
/// consecutive numbers of a hub, up to [`MAX_ROW_PACK`] bytes each, in the order the runs
/// close.
#[derive(Debug, Default)]
pub(crate) struct RowPacker {
    /// The runs still open, one per hub at most.
    open: Vec<OpenRun>,
    /// Finished rows.
    rows: Vec<RowOut>,
}

#[derive(Debug)]
struct OpenRun {
    hub: String,
    first: u64,
    last: u64,
    /// Entries with their length prefixes.
    pack: Vec<u8>,
    /// The length of the first entry's prefix, to store a run of one as a plain row.
    first_prefix: usize,
}

impl OpenRun {
    fn into_row(self) -> RowOut {
        let payload = if self.first == self.last {
            self.pack[self.first_prefix..].to_vec()
        } else {
            let mut payload = Vec::with_capacity(9 + self.pack.len());
            payload.push(PACK_MARKER);
            payload.extend_from_slice(&self.first.to_be_bytes());
            payload.extend_from_slice(&self.pack);
            payload
        };
        RowOut {
            hub: self.hub,
            seq: self.last,
            payload,
        }
    }
}

impl RowPacker {
    /// Add the encoded envelope numbered `seq` of `hub`.
    pub(crate) fn push(&mut self, hub: &str, seq: u64, envelope: &[u8]) {
        let mut prefix = [0u8; varint::MAX_PREFIX_LEN];
        let n = varint::encode(envelope.len(), &mut prefix);
        if let Some(at) = self.open.iter().position(|run| run.hub == hub) {
            let run = &mut self.open[at];
            if run.last.checked_add(1) == Some(seq)
                && run.pack.len() + n + envelope.len() <= MAX_ROW_PACK
            {
                run.last = seq;
                run.pack.extend_from_slice(&prefix[..n]);
                run.pack.extend_from_slice(envelope);
                return;
            }
            let run = self.open.remove(at);
            self.rows.push(run.into_row());
        }
        let mut pack = Vec::with_capacity(n + envelope.len());
        pack.extend_from_slice(&prefix[..n]);
        pack.extend_from_slice(envelope);
        self.open.push(OpenRun {
            hub: hub.to_owned(),
            first: seq,
            last: seq,
            pack,
            first_prefix: n,
        });
    }

    /// The rows, every run closed.
    pub(crate) fn finish(mut self) -> Vec<RowOut> {
        let open = std::mem::take(&mut self.open);
        self.rows.extend(open.into_iter().map(OpenRun::into_row));
        self.rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use backplane_core::{Envelope, EnvelopeKind, NodeId, Protocol, SerializedMessage, Target};

    fn envelope(hub: &str, seq: u64, size: usize) -> Envelope {
        Envelope {
            origin: NodeId::from_u128(7),
            seq,
            hub: hub.into(),
            destination: None,
            kind: EnvelopeKind::Invocation {
                target: Target::All,
                message: SerializedMessage::new().with(Protocol::Json, vec![b'x'; size]),
            },
        }
    }

    fn read_back(codec: &EnvelopeCodec, rows: Vec<RowOut>) -> Vec<(String, u64, Envelope)> {
        rows.into_iter()
            .flat_map(|row| {
                read_payload(codec, NodeId::from_u128(7), row.hub, row.seq, row.payload)
            })
            .map(|stored| {
                assert_eq!(stored.tombstone, Reading::NotATombstone);
                let envelope = codec.decode(&stored.payload).expect("an envelope");
                (stored.hub, stored.seq, envelope)
            })
            .collect()
    }

    #[test]
    fn runs_become_one_row_each_and_read_back_in_order() {
        let codec = EnvelopeCodec::default();
        let sent: Vec<Envelope> = [
            ("a", 1),
            ("a", 2),
            ("b", 7),
            ("a", 3),
            ("b", 8),
            ("a", 5),
            ("c", 1),
        ]
        .into_iter()
        .map(|(hub, seq)| envelope(hub, seq, 40))
        .collect();
        let mut packer = RowPacker::default();
        for e in &sent {
            packer.push(&e.hub, e.seq, &codec.encode(e));
        }
        let rows = packer.finish();
        // a 1..=3 closes when a 5 does not follow it; then the runs still open, in the
        // order they opened: b 7..=8, a 5 alone, c 1 alone.
        let shape: Vec<(&str, u64, bool)> = rows
            .iter()
            .map(|r| (r.hub.as_str(), r.seq, r.payload[0] == PACK_MARKER))
            .collect();
        assert_eq!(
            shape,
            [
                ("a", 3, true),
                ("b", 8, true),
                ("a", 5, false),
                ("c", 1, false)
            ]
        );
        let mut back = read_back(&codec, rows);
        back.sort_by(|x, y| (&x.0, x.1).cmp(&(&y.0, y.1)));
        let mut expected: Vec<(String, u64, Envelope)> = sent
            .iter()
            .map(|e| (e.hub.clone(), e.seq, e.clone()))
            .collect();
        expected.sort_by(|x, y| (&x.0, x.1).cmp(&(&y.0, y.1)));
        assert_eq!(back, expected);
    }

    #[test]
    fn a_run_larger_than_a_row_continues_in_the_next() {
        let codec = EnvelopeCodec::default();
        let mut packer = RowPacker::default();
        let sent: Vec<Envelope> = (1..=5)
            .map(|seq| envelope("h", seq, MAX_ROW_PACK / 3))
            .collect();
        for e in &sent {
            packer.push(&e.hub, e.seq, &codec.encode(e));
        }
        let rows = packer.finish();
        assert!(rows.len() >= 2, "{} rows", rows.len());
        assert!(rows.iter().all(|r| r.payload.len() <= MAX_ROW_PACK + 9));
        assert_eq!(
            rows.last().map(|r| r.seq),
            Some(5),
            "the run's last row ends it"
        );
        let back: Vec<u64> = read_back(&codec, rows).iter().map(|x| x.1).collect();
        assert_eq!(back, [1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_corrupt_or_misnumbered_pack_ends_in_a_corrupt_entry_at_its_last_number() {
        let codec = EnvelopeCodec::default();
        let origin = NodeId::from_u128(7);
        let mut packer = RowPacker::default();
        for seq in 10..=12 {
            packer.push("h", seq, &codec.encode(&envelope("h", seq, 10)));
        }
        let row = packer.finish().pop().unwrap();
        // Claimed as ending at 13: three envelopes, then a corrupt entry at 13.
        let seqs = |rows: &[StoredRow]| {
            rows.iter()
                .map(|r| (r.seq, r.payload.is_empty()))
                .collect::<Vec<_>>()
        };
        let misnumbered = read_payload(&codec, origin, "h".into(), 13, row.payload.clone());
        assert_eq!(
            seqs(&misnumbered),
            [(10, false), (11, false), (12, false), (13, true)]
        );
        // Claimed as ending at 11: two envelopes, then the corrupt entry at 11's place.
        let short = read_payload(&codec, origin, "h".into(), 11, row.payload.clone());
        assert_eq!(seqs(&short), [(10, false), (11, false), (11, true)]);
        // Truncated: what was whole, then the corrupt entry.
        let cut = read_payload(
            &codec,
            origin,
            "h".into(),
            12,
            row.payload[..row.payload.len() - 3].to_vec(),
        );
        assert_eq!(seqs(&cut), [(10, false), (11, false), (12, true)]);
        // At the top of the number range: no overflow, the whole pack read.
        let mut top = RowPacker::default();
        for seq in u64::MAX - 1..=u64::MAX {
            top.push("h", seq, &codec.encode(&envelope("h", seq, 10)));
        }
        let top = top.finish().pop().unwrap();
        let read = read_payload(&codec, origin, "h".into(), u64::MAX, top.payload);
        assert_eq!(seqs(&read), [(u64::MAX - 1, false), (u64::MAX, false)]);
        // Too short to hold its first number.
        let stub = read_payload(&codec, origin, "h".into(), 12, vec![PACK_MARKER, 1, 2]);
        assert_eq!(seqs(&stub), [(12, false)]);
        assert_eq!(stub[0].tombstone, Reading::NotATombstone);
    }
}
