//! One batch as it is written: per table, the rows (tombstones first, then the
//! envelopes, a row per hub's run: see the `row` module) and the notifications packed
//! from them.

use std::collections::HashMap;
use std::sync::Arc;

use super::queue::Pending;
use crate::context::NodeContext;
use crate::names::TableNames;
use crate::notification::{self, Packer};
use crate::row::{RowPacker, seq_i64};
use crate::tombstone::{self, Tombstone};

/// The rows and notifications of one batch for one table.
#[derive(Debug)]
pub(super) struct TableWrite {
    pub(super) table: Arc<TableNames>,
    /// Whether tombstone rows are among the rows: their batch may have committed after
    /// all, so they must skip rows that exist.
    pub(super) has_tombstones: bool,
    pub(super) hubs: Vec<String>,
    pub(super) seqs: Vec<i64>,
    pub(super) payloads: Vec<Vec<u8>>,
    pub(super) notifications: Vec<String>,
}

/// Encode the batch (and any tombstones) into per-table rows and notifications.
pub(super) fn prepare(
    shared: &NodeContext,
    tombstones: &[Tombstone],
    batch: &[Pending],
) -> Vec<TableWrite> {
    let node = shared.node;
    let codec = &shared.codec;
    let threshold = shared.options.inline_threshold;
    let mut writes: Vec<(TableWrite, Packer, RowPacker)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut slot =
        |writes: &mut Vec<(TableWrite, Packer, RowPacker)>, table: &Arc<TableNames>| -> usize {
            if let Some(&at) = index.get(&table.qualified) {
                return at;
            }
            *index.entry(table.qualified.clone()).or_insert_with(|| {
                writes.push((
                    TableWrite {
                        table: table.clone(),
                        has_tombstones: false,
                        hubs: Vec::new(),
                        seqs: Vec::new(),
                        payloads: Vec::new(),
                        notifications: Vec::new(),
                    },
                    Packer::new(node, shared.options.compress_notifications),
                    RowPacker::default(),
                ));
                writes.len() - 1
            })
        };
    // Tombstones first: they precede everything in this batch in sequence order.
    for tombstone in tombstones {
        let at = slot(&mut writes, &tombstone.route);
        let (write, packer, _) = &mut writes[at];
        write.has_tombstones = true;
        write.hubs.push(tombstone.hub.clone());
        write.seqs.push(seq_i64(tombstone.last));
        let place = tombstone::Place {
            origin: node,
            hub: &tombstone.hub,
            last: tombstone.last,
        };
        write
            .payloads
            .push(tombstone::encode_signed(codec, place, tombstone.first));
        if let Some(text) =
            notification::reference(node, tombstone.first, tombstone.last, &tombstone.hub)
        {
            packer.reference(text);
        }
    }
    for pending in batch {
        let envelope = &pending.envelope;
        let at = slot(&mut writes, &pending.route);
        let (_, packer, rows) = &mut writes[at];
        let bytes = codec.encode(envelope);
        if bytes.len() <= threshold {
            packer.inline(&bytes);
        } else if let Some(text) =
            notification::reference(node, envelope.seq, envelope.seq, &envelope.hub)
        {
            packer.reference(text);
        }
        rows.push(&envelope.hub, envelope.seq, &bytes);
    }
    writes
        .into_iter()
        .map(|(mut write, packer, rows)| {
            for row in rows.finish() {
                write.hubs.push(row.hub);
                write.seqs.push(seq_i64(row.seq));
                write.payloads.push(row.payload);
            }
            write.notifications = packer
                .finish()
                .into_iter()
                .map(|text| notification::seal(codec, &write.table.channel, text))
                .collect();
            write
        })
        .collect()
}
