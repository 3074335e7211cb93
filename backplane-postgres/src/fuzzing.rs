//! Entry points for the fuzz targets in `fuzz/` (the `fuzzing` feature; not a public API).
//!
//! The notification format is private to this crate; this module lets the fuzz harness
//! drive the parser, the pack iterator and the two writers without making them public.

use backplane_core::NodeId;

use crate::notification::{self, Notification, Packer};

/// PostgreSQL's limit on a notification payload, in bytes.
pub const MAX_NOTIFICATION: usize = notification::MAX_NOTIFICATION;

/// The largest encoded envelope that goes inline.
pub const MAX_INLINE_ENVELOPE: usize = notification::MAX_INLINE_ENVELOPE;

/// A parsed notification, with an inline pack already split into its entries.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// `i<origin>:<base64>` or, compressed, `z<origin>:<base64>`: the pack's entries in order; an `Err` (the parser's message)
    /// ends a corrupt pack.
    Inline {
        /// The publishing node.
        origin: NodeId,
        /// The entries, as the listener iterates them.
        entries: Vec<Result<Vec<u8>, String>>,
    },
    /// `r<origin>:<from>:<to>:<hub>`.
    Reference {
        /// The publishing node.
        origin: NodeId,
        /// First sequence number.
        from: u64,
        /// Last sequence number (inclusive).
        to: u64,
        /// The hub.
        hub: String,
    },
}

/// The origin read from the header alone, as the listener does to drop its own echoes.
pub fn origin_of(text: &str) -> Option<NodeId> {
    notification::origin_of(text)
}

/// Parse a notification as the listener does.
///
/// # Errors
///
/// The parser's message for a malformed notification.
pub fn parse(text: &str) -> Result<Parsed, String> {
    match notification::parse(text).map_err(|error| error.to_string())? {
        Notification::Inline { origin, pack } => Ok(Parsed::Inline {
            origin,
            entries: notification::entries(&pack)
                .map(|entry| entry.map(<[u8]>::to_vec).map_err(|e| e.to_string()))
                .collect(),
        }),
        Notification::Reference {
            origin,
            from,
            to,
            hub,
        } => Ok(Parsed::Reference {
            origin,
            from,
            to,
            hub,
        }),
    }
}

/// The inline notifications the publisher sends for `envelopes` (each at most
/// [`MAX_INLINE_ENVELOPE`] bytes) of `origin`, compressed where shorter if `compress`.
pub fn pack(origin: NodeId, envelopes: &[&[u8]], compress: bool) -> Vec<String> {
    let mut packer = Packer::new(origin, compress);
    for envelope in envelopes {
        packer.inline(envelope);
    }
    packer.finish()
}

/// The reference notification the publisher sends, `None` if it would not fit.
pub fn reference(origin: NodeId, from: u64, to: u64, hub: &str) -> Option<String> {
    notification::reference(origin, from, to, hub)
}

/// What the listener reads from one row of a messages table keyed by `seq` (the last
/// number it holds): per envelope or tombstone, its number, its payload and whether it is
/// a tombstone (unsigned: no cluster secret).
pub fn read_row(seq: u64, payload: &[u8]) -> Vec<(u64, Vec<u8>, bool)> {
    let codec = backplane_core::EnvelopeCodec::default();
    crate::row::read_payload(
        &codec,
        NodeId::from_u128(1),
        "h".into(),
        seq,
        payload.to_vec(),
    )
    .into_iter()
    .map(|row| {
        let tombstone = !matches!(row.tombstone, crate::tombstone::Reading::NotATombstone);
        (row.seq, row.payload, tombstone)
    })
    .collect()
}

/// The rows the publisher writes for `envelopes` numbered from `first` in one hub:
/// `(seq, payload)` per row.
pub fn write_rows(first: u64, envelopes: &[&[u8]]) -> Vec<(u64, Vec<u8>)> {
    let mut packer = crate::row::RowPacker::default();
    for (seq, envelope) in (first..=u64::MAX).zip(envelopes) {
        packer.push("h", seq, envelope);
    }
    packer
        .finish()
        .into_iter()
        .map(|row| (row.seq, row.payload))
        .collect()
}
