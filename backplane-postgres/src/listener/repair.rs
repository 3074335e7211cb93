//! Gap repair: a range of sequence numbers read from the table and applied in order
//! (waiting a bounded `gap_wait` for commits in flight), tombstones skipped, the outcome
//! reported.

use std::time::Duration;

use backplane_core::sequencing::Tracker;
use backplane_core::{BackplaneEvent, CodecError, GapRepair, NodeId};
use tokio::time::Instant;

use super::state::{Interrupt, Listener, Repair, STORAGE};
use crate::row::StoredRow;
use crate::tombstone::Reading;

/// What a range read by [`Listener::read_and_apply`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Range {
    /// A sequence gap in front of a row the table holds: report the outcome.
    Gap,
    /// Rows a reference notification names.
    Referenced,
}

impl Listener {
    /// Read `from..=to` of `origin`'s `hub` from the table and apply the rows in order,
    /// waiting up to `gap_wait` for rows whose commit may still be in flight. The outcome
    /// is reported as `Reconnected` when the range is a sequence gap, or whenever
    /// something in it could not be recovered. A gap's numbers that no row accounts for
    /// are counted missing (the caller confirmed a later row exists); a referenced range
    /// moves the tracker only as far as the rows found.
    pub(super) async fn read_and_apply(
        &mut self,
        channel: &str,
        origin: NodeId,
        hub: &str,
        from: u64,
        to: u64,
        range: Range,
    ) -> Result<(), Interrupt> {
        let node = self.shared.node;
        let table = self.channels[channel].table.clone();
        let deadline = Instant::now() + self.shared.options.gap_wait;
        let mut repair = Repair::default();
        let next = |tracker: &Tracker| {
            tracker
                .last(origin, hub)
                .map_or(from, |last| last.saturating_add(1))
        };
        loop {
            if !self.is_subscribed(channel, hub) {
                return Ok(()); // the last subscription ended meanwhile
            }
            if next(&self.tracker) > to {
                break;
            }
            let rows = self
                .read_range(&table, origin, hub, next(&self.tracker), to)
                .await?;
            let waited_enough = Instant::now() >= deadline;
            for row in rows {
                if row.first_seq() > next(&self.tracker) && !waited_enough {
                    break; // a hole: maybe in flight, wait and read again
                }
                self.apply_row(channel, row, &mut repair).await?;
            }
            if waited_enough {
                break;
            }
            if next(&self.tracker) <= to {
                tokio::time::sleep(Duration::from_millis(50).min(deadline - Instant::now())).await;
            }
        }
        if !self.is_subscribed(channel, hub) {
            return Ok(());
        }
        let last = self
            .tracker
            .last(origin, hub)
            .unwrap_or(from.saturating_sub(1));
        if range == Range::Gap && last < to {
            // A later row exists: these numbers were used and are gone.
            repair.missing = repair.missing.saturating_add(to - last);
            self.tracker.advance(origin, hub, to);
        }
        let outcome = repair.outcome(
            &format!("sequence numbers {from}..={to} from node {origin}"),
            STORAGE,
        );
        let lost = matches!(outcome, GapRepair::Unrepairable { .. });
        if lost {
            tracing::warn!(%node, %origin, hub, ?outcome, "[Processor] envelopes could not be recovered");
        }
        if range == Range::Gap || lost {
            self.send_to_hub(channel, hub, BackplaneEvent::Reconnected { gap: outcome })
                .await?;
        }
        Ok(())
    }

    /// Apply a stored row: deliver it, or skip a tombstone or a corrupt row.
    pub(super) async fn apply_row(
        &mut self,
        channel: &str,
        row: StoredRow,
        repair: &mut Repair,
    ) -> Result<(), Interrupt> {
        let node = self.shared.node;
        if !self.is_subscribed(channel, &row.hub) {
            return Ok(());
        }
        if self
            .tracker
            .last(row.origin, &row.hub)
            .is_some_and(|last| last >= row.seq)
        {
            return Ok(()); // already delivered or skipped
        }
        // Verified before the row may move the tracker (with a cluster secret).
        let decoded = match row.tombstone {
            Reading::Covers(_) => None,
            Reading::Forged => {
                self.shared.codec.reject();
                tracing::warn!(%node, origin = %row.origin, hub = row.hub, seq = row.seq, "[Processor] dropping a tombstone row that failed verification");
                return Ok(());
            }
            Reading::NotATombstone => match self.shared.codec.decode(&row.payload) {
                Err(error @ CodecError::Unauthenticated) => {
                    tracing::warn!(%node, origin = %row.origin, hub = row.hub, seq = row.seq, %error, "[Processor] dropping a row");
                    return Ok(());
                }
                other => Some(other),
            },
        };
        // Numbers between the last delivered and this row that no row accounts for.
        match self
            .tracker
            .accept(row.origin, &row.hub, row.first_seq(), row.seq)
        {
            None => return Ok(()), // already delivered or skipped
            Some(missing) => repair.missing = repair.missing.saturating_add(missing),
        }
        let Some(decoded) = decoded else {
            tracing::debug!(%node, origin = %row.origin, hub = row.hub, first = row.first_seq(), last = row.seq, "[Processor] tombstone (publish failed at its origin); numbers skipped");
            return Ok(());
        };
        match decoded {
            Ok(envelope)
                if envelope.origin == row.origin
                    && envelope.hub == row.hub
                    && envelope.seq == row.seq =>
            {
                self.deliver(channel, envelope, repair).await
            }
            Ok(_) => {
                tracing::warn!(%node, origin = %row.origin, hub = row.hub, seq = row.seq, "[Processor] skipping a row whose envelope does not match its columns");
                repair.corrupt += 1;
                Ok(())
            }
            Err(error) => {
                tracing::warn!(%node, origin = %row.origin, hub = row.hub, seq = row.seq, %error, "[Processor] skipping a corrupt row");
                repair.corrupt += 1;
                Ok(())
            }
        }
    }
}
