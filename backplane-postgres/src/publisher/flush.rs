//! Durability confirmation for [`SynchronousCommit::NotifyBeforeFlush`]: batches commit
//! with `synchronous_commit = off`, so their notifications leave at once, and their
//! publishes complete only once this task has seen the WAL flushed past them.
//!
//! # How a flush is confirmed
//!
//! The task owns its own connection with `synchronous_commit = on`. It takes every batch
//! the publisher committed so far and commits one small transaction that writes WAL (an
//! empty transactional `pg_logical_emit_message`). PostgreSQL flushes WAL in order, so
//! when that commit returns, every commit record written before it, the batches' among
//! them, is on disk. One confirmation covers all batches committed before it was sent;
//! batches committed meanwhile wait for the next, so there is one confirmation per flush,
//! not per batch.
//!
//! # Crashes
//!
//! A confirmation proves the batches durable only on the server that committed them. If
//! PostgreSQL crashed after a batch's commit, the confirming connection dies with it, and
//! a confirmation on a new connection flushes a server that may have lost the batch. So
//! whenever the confirming connection was opened after a batch started committing, the
//! confirmation also looks the batch's rows up (after flushing): a row that exists then is
//! durable, and a missing one was lost. Lost envelopes fail their publishes and their
//! sequence numbers go back to the publisher as tombstones, written with its next batch;
//! receivers still waiting for those numbers skip them, those that already gave up on the
//! gap (after `gap_wait`) have reported it unrepairable.
//!
//! Skipping the look-up on a connection that stayed open assumes that a server restart
//! closes it. Something between the node and PostgreSQL that keeps client connections
//! open across a server restart or failover (a pooler reconnecting behind them) would
//! break that assumption; such poolers are unsupported anyway (see the crate docs).
//!
//! [`SynchronousCommit::NotifyBeforeFlush`]: crate::SynchronousCommit::NotifyBeforeFlush

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use backplane_core::BackplaneError;
use backplane_core::sequencing::runs_of;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_postgres::Client;

use super::queue::Pending;
use super::retry::{AttemptError, BatchError, Retries};
use crate::connect::{self, PostgresError, Role};
use crate::context::{NodeContext, lock};
use crate::row::seq_i64;
use crate::tombstone::Tombstone;

/// What the confirmation commits: WAL, under a transaction id, so its synchronous commit
/// flushes. A transaction that only takes an id writes no WAL and would not wait.
const FLUSH_SQL: &str = "SELECT pg_logical_emit_message(true, 'signalr-backplane', '')";

/// A batch whose transaction committed without waiting for the flush.
#[derive(Debug)]
pub(crate) struct Committed {
    /// When the publisher started writing it: no commit of it happened earlier.
    pub(crate) started: Instant,
    /// Its publishes, completed by the flusher.
    pub(crate) batch: Vec<Pending>,
}

/// The publisher's side of the [`Flusher`].
pub(crate) struct FlusherLink {
    pub(crate) committed: mpsc::UnboundedSender<Committed>,
    pub(crate) lost: Arc<Mutex<Vec<Tombstone>>>,
}

/// The task confirming flushes.
pub(crate) struct Flusher {
    shared: Arc<NodeContext>,
    committed: mpsc::UnboundedReceiver<Committed>,
    /// Sequence numbers of lost envelopes, for the publisher to write as tombstones.
    lost: Arc<Mutex<Vec<Tombstone>>>,
    /// The confirming connection, and when it was open.
    connection: Option<(Client, Instant)>,
}

impl Flusher {
    pub(crate) fn new(
        shared: Arc<NodeContext>,
        committed: mpsc::UnboundedReceiver<Committed>,
        lost: Arc<Mutex<Vec<Tombstone>>>,
        client: Client,
    ) -> Self {
        Self {
            shared,
            committed,
            lost,
            connection: Some((client, Instant::now())),
        }
    }

    /// Confirm batches until the publisher is gone and every batch it handed over is
    /// settled.
    pub(crate) async fn run(mut self) {
        while let Some(first) = self.committed.recv().await {
            let mut waiting = vec![first];
            while let Ok(more) = self.committed.try_recv() {
                waiting.push(more);
            }
            let started = Instant::now();
            match self.confirm(&waiting).await {
                Ok(stored) => {
                    let lost = stored.iter().flatten().filter(|&&s| !s).count();
                    tracing::debug!(
                        node = %self.shared.node,
                        batches = waiting.len(),
                        lost,
                        elapsed = ?started.elapsed(),
                        "[Publish] flush confirmed"
                    );
                    if lost > 0 {
                        tracing::warn!(
                            node = %self.shared.node,
                            lost,
                            "[Publish] committed envelopes lost before their flush; their publishes fail and their sequence numbers become tombstones"
                        );
                    }
                    self.settle(waiting, &stored, || {
                        BackplaneError::backend(PostgresError::message(
                            "confirming that a batch was flushed",
                            "PostgreSQL restarted before the envelope's commit reached disk, and lost it \
                             (receivers listening at the time may have delivered it)",
                        ))
                    });
                }
                Err(error) => {
                    tracing::warn!(
                        node = %self.shared.node,
                        batches = waiting.len(),
                        %error,
                        "[Publish] flush not confirmed; these publishes return the error and their sequence numbers become tombstones"
                    );
                    let none: Vec<Vec<bool>> = waiting
                        .iter()
                        .map(|committed| vec![false; committed.batch.len()])
                        .collect();
                    self.settle(waiting, &none, || error.to_backplane());
                }
            }
        }
        tracing::debug!(node = %self.shared.node, "[Publish] flusher stopped");
    }

    /// Complete the publishes of `waiting`: `Ok` where `stored`, else the error `failed`
    /// makes, after handing their sequence numbers to the publisher as tombstones.
    fn settle(
        &self,
        waiting: Vec<Committed>,
        stored: &[Vec<bool>],
        failed: impl Fn() -> BackplaneError,
    ) {
        // Tombstones first: a caller told of the failure may publish again at once, and
        // that batch must carry them.
        let lost_runs: Vec<Tombstone> = waiting
            .iter()
            .zip(stored)
            .flat_map(|(committed, stored)| {
                runs_of(
                    committed
                        .batch
                        .iter()
                        .zip(stored)
                        .filter(|(_, stored)| !**stored)
                        .map(|(pending, _)| pending),
                )
            })
            .collect();
        lock(&self.lost).extend(lost_runs);
        for (committed, stored) in waiting.into_iter().zip(stored) {
            for (pending, &stored) in committed.batch.into_iter().zip(stored) {
                let _ = pending
                    .done
                    .send(if stored { Ok(()) } else { Err(failed()) });
            }
        }
    }

    /// Flush past `waiting`, retrying transient failures until the command timeout; which
    /// envelopes are stored, per batch.
    async fn confirm(&mut self, waiting: &[Committed]) -> Result<Vec<Vec<bool>>, BatchError> {
        let options = &self.shared.options;
        let mut retries = Retries::new(
            self.shared.node,
            "flush confirmation",
            options.command_timeout,
        );
        loop {
            let attempt = self.attempt(waiting);
            let failure = match tokio::time::timeout_at(retries.deadline(), attempt).await {
                Ok(Ok(stored)) => return Ok(stored),
                Ok(Err(error)) => Some(error),
                Err(_) => None,
            };
            // Whatever failed, the next attempt starts on a fresh connection; it then
            // looks rows up, since the server may have restarted.
            self.connection = None;
            retries.failed(failure).await?;
        }
    }

    /// One confirmation: flush, then, if this connection is younger than some batch,
    /// look that batch's rows up.
    async fn attempt(&mut self, waiting: &[Committed]) -> Result<Vec<Vec<bool>>, AttemptError> {
        if self
            .connection
            .as_ref()
            .is_none_or(|(client, _)| client.is_closed())
        {
            let client = open(&self.shared)
                .await
                .map_err(|e| AttemptError::Transient(e.to_string()))?;
            self.connection = Some((client, Instant::now()));
        }
        let (client, opened) = self.connection.as_ref().expect("connected above");
        let classify = AttemptError::classify;
        client
            .batch_execute(FLUSH_SQL)
            .await
            .map_err(|e| classify("confirming that a batch was flushed", &e))?;
        let mut stored: Vec<Vec<bool>> = waiting
            .iter()
            .map(|committed| vec![true; committed.batch.len()])
            .collect();
        // The rows of batches that may have committed on a server that has restarted
        // since, grouped by table: (batch, index) of each, and its key.
        let mut suspects: HashMap<&str, Suspects<'_>> = HashMap::new();
        for (b, committed) in waiting.iter().enumerate() {
            // Equal instants do not say which came first: look up.
            if committed.started > *opened {
                continue;
            }
            // A batch commits whole, and each hub's run in it ends in a row keyed by the
            // run's last number: that row stands for every envelope of the run.
            let runs = runs_of(&committed.batch);
            for (i, pending) in committed.batch.iter().enumerate() {
                let envelope = &pending.envelope;
                let key = runs
                    .iter()
                    .find(|run| {
                        run.hub == envelope.hub && (run.first..=run.last).contains(&envelope.seq)
                    })
                    .map_or(envelope.seq, |run| run.last);
                let suspects = suspects.entry(&pending.route.qualified).or_default();
                suspects.at.push((b, i));
                suspects.hubs.push(envelope.hub.as_str());
                suspects.seqs.push(seq_i64(key));
                stored[b][i] = false;
            }
        }
        if suspects.is_empty() {
            return Ok(stored);
        }
        let origin = self.shared.node.to_bytes();
        let origin: &[u8] = &origin;
        for (table, suspects) in suspects {
            let rows = client
                .query(
                    &format!(
                        "SELECT r.i FROM unnest($2::text[], $3::int8[]) WITH ORDINALITY AS r(hub, seq, i)
                         WHERE EXISTS (SELECT 1 FROM {table} t
                                       WHERE t.origin = $1::bytea AND t.hub = r.hub AND t.seq = r.seq)"
                    ),
                    &[&origin, &suspects.hubs, &suspects.seqs],
                )
                .await
                .map_err(|e| classify("looking up the rows of unconfirmed batches", &e))?;
            for row in rows {
                let ordinal: i64 = row.get(0);
                if let Some(&(b, i)) = usize::try_from(ordinal - 1)
                    .ok()
                    .and_then(|at| suspects.at.get(at))
                {
                    stored[b][i] = true;
                }
            }
        }
        tracing::debug!(node = %self.shared.node, "[Publish] rows of batches committed before a reconnect looked up");
        Ok(stored)
    }
}

/// Rows of one table to look up.
#[derive(Default)]
struct Suspects<'a> {
    at: Vec<(usize, usize)>,
    hubs: Vec<&'a str>,
    seqs: Vec<i64>,
}

/// The confirming connection: `synchronous_commit = on` whatever the server's default.
async fn open(shared: &NodeContext) -> Result<Client, PostgresError> {
    let client = connect::connect(&shared.options, Role::Flusher, shared.node).await?;
    client
        .batch_execute("SET synchronous_commit = on")
        .await
        .map_err(|e| PostgresError::new("setting synchronous_commit", &e))?;
    Ok(client)
}

/// The node's first confirming connection, with one confirmation run on it, so a database
/// that refuses the confirmation (a revoked `pg_logical_emit_message`) is reported by
/// `connect`, not by every publish. Reconnects skip the check: each attempt confirms
/// anyway.
pub(crate) async fn open_checked(shared: &NodeContext) -> Result<Client, PostgresError> {
    let client = open(shared).await?;
    client.batch_execute(FLUSH_SQL).await.map_err(|e| {
        PostgresError::new(
            "confirming a flush with pg_logical_emit_message (needed by SynchronousCommit::NotifyBeforeFlush; choose SynchronousCommit::On where it is not allowed)",
            &e,
        )
    })?;
    Ok(client)
}
