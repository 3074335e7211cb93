//! The publisher task: takes batches from the queue, writes them (retrying on a fresh
//! connection until the command timeout, one transaction in flight per node), completes
//! their publishes or hands them to the flusher, and keeps the sequence numbers of failed
//! batches as tombstones for the next one.

use std::sync::Arc;

use backplane_core::BackplaneError;
use backplane_core::sequencing::runs_of;
use tokio::time::Instant;
use tokio_postgres::Client;

use super::batch::{self, TableWrite};
use super::connection::{self, PublisherConnection};
use super::flush::{Committed, FlusherLink};
use super::queue::{Pending, PublishQueue};
use super::retry::{AttemptError, BatchError, Retries};
use crate::context::{NodeContext, lock};
use crate::names::TableNames;
use crate::tombstone::PendingTombstones;

/// The task that writes batches.
pub(crate) struct Publisher {
    shared: Arc<NodeContext>,
    queue: Arc<PublishQueue>,
    connection: Option<PublisherConnection>,
    /// Sequence numbers of failed batches, written before the next batch.
    tombstones: PendingTombstones,
    /// With [`SynchronousCommit::NotifyBeforeFlush`](crate::SynchronousCommit): where
    /// committed batches wait for their flush, and the sequence numbers of those lost
    /// before it.
    flusher: Option<FlusherLink>,
}

impl Publisher {
    pub(crate) fn new(
        shared: Arc<NodeContext>,
        queue: Arc<PublishQueue>,
        client: Option<Client>,
        flusher: Option<FlusherLink>,
    ) -> Self {
        Self {
            shared,
            queue,
            connection: client.map(PublisherConnection::new),
            tombstones: PendingTombstones::default(),
            flusher,
        }
    }

    /// Write batches until shut down and drained.
    pub(crate) async fn run(mut self) {
        let options = &self.shared.options;
        let (max_items, max_bytes, linger) = (
            options.publish_batch_size,
            options.publish_batch_bytes,
            options.publish_linger,
        );
        while let Some(batch) = self.queue.next_batch(max_items, max_bytes, linger).await {
            let started = Instant::now();
            if let Some(flusher) = &self.flusher {
                if flusher.committed.is_closed() {
                    // The flusher is gone (it panicked): nothing can be confirmed any
                    // more, so nothing is written either (receivers would deliver what
                    // publishers are told failed).
                    for pending in batch {
                        let _ = pending.done.send(Err(BackplaneError::Shutdown));
                    }
                    continue;
                }
                // Envelopes lost before their flush; they precede this batch.
                self.tombstones.extend(lock(&flusher.lost).drain(..));
            }
            let writes = batch::prepare(&self.shared, self.tombstones.as_slice(), &batch);
            let outcome = self.write(&writes).await;
            if writes.len() > 1 && matches!(outcome, Err(BatchError::Fatal(_))) {
                // A permanent error of one table (a revoked permission, a constraint)
                // must not fail the publishes of every other hub that shared the batch:
                // write each table's part in its own transaction. Order only matters
                // within a hub, and a hub's envelopes are all in one table.
                self.commit_tables_apart(batch, started).await;
            } else {
                self.settle(batch, writes, outcome, started).await;
            }
        }
        tracing::debug!(node = %self.shared.node, "[Publish] publisher stopped");
    }

    /// Write `batch` table by table, each with the pending tombstones of its table.
    async fn commit_tables_apart(&mut self, batch: Vec<Pending>, started: Instant) {
        let mut parts: Vec<(Arc<TableNames>, Vec<Pending>)> = Vec::new();
        for pending in batch {
            match parts
                .iter_mut()
                .find(|(table, _)| table.qualified == pending.route.qualified)
            {
                Some((_, part)) => part.push(pending),
                None => parts.push((pending.route.clone(), vec![pending])),
            }
        }
        // Tables with tombstones but no publishes in this batch get a part too, so
        // tombstones the database refuses are given up rather than retried forever.
        for tombstone in self.tombstones.as_slice() {
            if !parts
                .iter()
                .any(|(table, _)| table.qualified == tombstone.route.qualified)
            {
                parts.push((tombstone.route.clone(), Vec::new()));
            }
        }
        let mut tombstones = std::mem::take(&mut self.tombstones);
        let mut still_pending = PendingTombstones::default();
        for (table, part) in parts {
            self.tombstones = tombstones.take_table(&table);
            let writes = batch::prepare(&self.shared, self.tombstones.as_slice(), &part);
            let outcome = self.write(&writes).await;
            self.settle(part, writes, outcome, started).await;
            still_pending.append(&mut self.tombstones);
        }
        self.tombstones = still_pending;
    }

    /// Complete the publishes of `batch` after `outcome`, retrying once without
    /// tombstones when they may be what the database refused.
    async fn settle(
        &mut self,
        batch: Vec<Pending>,
        mut writes: Vec<TableWrite>,
        mut outcome: Result<(), BatchError>,
        started: Instant,
    ) {
        if matches!(outcome, Err(BatchError::Fatal(_))) && !self.tombstones.is_empty() {
            // Never let tombstones poison every later batch (their table may be gone
            // for good): if the batch goes through without them, they are given up
            // and receivers report those numbers as lost instead.
            let tombstones = std::mem::take(&mut self.tombstones);
            writes = batch::prepare(&self.shared, self.tombstones.as_slice(), &batch);
            outcome = self.write(&writes).await;
            if outcome.is_ok() {
                tracing::warn!(
                    node = %self.shared.node,
                    tombstones = tombstones.len(),
                    "[Publish] tombstones refused by the database; given up"
                );
            } else {
                self.tombstones = tombstones;
            }
        }
        match outcome {
            Ok(()) => {
                tracing::debug!(
                    node = %self.shared.node,
                    envelopes = batch.len(),
                    tombstones = self.tombstones.len(),
                    tables = writes.len(),
                    notifications = writes.iter().map(|w| w.notifications.len()).sum::<usize>(),
                    elapsed = ?started.elapsed(),
                    "[Publish] batch committed"
                );
                if !batch.is_empty() {
                    let metrics = &self.shared.publish_metrics;
                    metrics.batch_stored(batch.len(), started.elapsed());
                }
                self.tombstones.clear();
                if self.shared.circuit.reset() {
                    tracing::info!(node = %self.shared.node, "[Publish] the database answers again; circuit closed");
                }
                let Some(flusher) = &self.flusher else {
                    for pending in batch {
                        let _ = pending.done.send(Ok(()));
                    }
                    return;
                };
                if let Err(unconfirmed) = flusher.committed.send(Committed { started, batch }) {
                    // The flusher is gone (it panicked): nobody can confirm the flush.
                    for pending in unconfirmed.0.batch {
                        let _ = pending.done.send(Err(BackplaneError::Shutdown));
                    }
                }
            }
            Err(error) => {
                tracing::warn!(
                    node = %self.shared.node,
                    envelopes = batch.len(),
                    %error,
                    "[Publish] batch failed; its publishes return the error and its sequence numbers become tombstones"
                );
                // One tombstone per hub of this batch (a batch holds a contiguous run
                // of each hub's numbers).
                self.tombstones.extend(runs_of(&batch));
                for pending in batch {
                    let _ = pending.done.send(Err(error.to_backplane()));
                }
                if self.queue.is_shut_down() {
                    // Shutting down with the database failing: do not make every
                    // queued batch wait out its own timeout.
                    for pending in self.queue.take_all() {
                        let _ = pending.done.send(Err(BackplaneError::Shutdown));
                    }
                } else if let Some(unavailable) = self.shared.circuit.error() {
                    // The database does not answer: what is queued would only wait out
                    // its own timeout. Its numbers were never written (not even tried),
                    // so they become tombstones too.
                    let queued = self.queue.take_all();
                    if !queued.is_empty() {
                        tracing::warn!(node = %self.shared.node, envelopes = queued.len(), "[Publish] circuit open; failing the queued publishes at once");
                    }
                    self.tombstones.extend(runs_of(&queued));
                    for pending in queued {
                        pending.finish(Err(match &unavailable {
                            BackplaneError::Unavailable { reason } => BackplaneError::Unavailable {
                                reason: reason.clone(),
                            },
                            _ => BackplaneError::Shutdown,
                        }));
                    }
                }
            }
        }
    }

    /// Write one batch, retrying transient failures until the command timeout.
    async fn write(&mut self, writes: &[TableWrite]) -> Result<(), BatchError> {
        if writes.is_empty() {
            return Ok(());
        }
        let shared = self.shared.clone();
        let mut retries = Retries::new(shared.node, "batch", shared.options.command_timeout);
        loop {
            // A batch started while the circuit is open is a trial: one attempt. One
            // started while it is closed gives up the moment it opens (the listener
            // found the database unresponsive): nothing would get through in time.
            let trial = shared.circuit.is_open();
            let attempt = connection::attempt(&shared, &mut self.connection, writes, retries.retry);
            let failure = tokio::select! {
                outcome = tokio::time::timeout_at(retries.deadline(), attempt) => match outcome {
                    Ok(Ok(())) => return Ok(()),
                    Ok(Err(AttemptError::Fatal(error))) => Some(AttemptError::Fatal(error)),
                    Ok(Err(AttemptError::Unreachable(reason))) => {
                        self.connection = None;
                        shared.circuit.trip(reason.clone());
                        return Err(BatchError::Unavailable(reason));
                    }
                    Ok(Err(transient)) => {
                        self.connection = None;
                        Some(transient)
                    }
                    Err(_) => {
                        // The attempt may still commit on the server: the connection is
                        // dropped, and tombstones (ON CONFLICT DO NOTHING) settle it later.
                        self.connection = None;
                        None
                    }
                },
                () = shared.circuit.opened(), if !trial => {
                    // As for a timeout: the attempt may still commit.
                    self.connection = None;
                    let reason = shared.circuit.error().map_or_else(String::new, |e| e.to_string());
                    return Err(BatchError::Unavailable(reason));
                }
            };
            if trial && !matches!(failure, Some(AttemptError::Fatal(_))) {
                let reason = match &failure {
                    Some(AttemptError::Transient(reason)) => reason.clone(),
                    _ => format!("no answer within {:?}", shared.options.command_timeout),
                };
                return Err(BatchError::Unavailable(reason));
            }
            if let Err(error) = retries.failed(failure).await {
                if let BatchError::Timeout { .. } = &error {
                    shared.circuit.trip(format!("publishing: {error}"));
                }
                return Err(error);
            }
        }
    }
}
