//! One row of a messages table as Rust sees it: sequence numbers written as `bigint`, and
//! a row read back ([`StoredRow`]), with whether it is a tombstone.

use backplane_core::{EnvelopeCodec, NodeId};
use tokio_postgres::Row;

use crate::tombstone::{self, Reading};

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
    /// An encoded envelope, or a tombstone.
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

/// A row of a messages table, or `None` if its origin column is malformed.
pub(crate) fn stored_row(codec: &EnvelopeCodec, row: &Row) -> Option<StoredRow> {
    let origin: &[u8] = row.try_get(0).ok()?;
    let origin = NodeId::from_bytes(origin.try_into().ok()?);
    let hub: String = row.try_get(1).ok()?;
    let seq = u64::try_from(row.try_get::<_, i64>(2).ok()?).ok()?;
    let payload: Vec<u8> = row.try_get(3).ok()?;
    let place = tombstone::Place {
        origin,
        hub: &hub,
        last: seq,
    };
    let tombstone = tombstone::read(codec, place, &payload);
    Some(StoredRow {
        origin,
        hub,
        seq,
        payload,
        tombstone,
    })
}
