//! The publishing side: a queue that numbers envelopes, and one task per node that
//! writes them in batches.
//!
//! `publish` numbers its envelope and queues it synchronously, on its first poll (in
//! the core's `PublishQueue`), so a node's envelopes for a hub are numbered and queued in the order
//! their futures were first polled. The publisher task takes everything queued (up to
//! the batch limits), writes one multi-row `INSERT` per table and all notifications in
//! one transaction, and only then completes each publish. One transaction is in flight
//! per node, so a node's envelopes commit, and are notified, in sequence order.
//!
//! # Failures
//!
//! A batch that fails on a connection error is retried on a fresh connection until the
//! command timeout elapses; a retry's `INSERT` skips rows that already exist (`ON
//! CONFLICT DO NOTHING` on `(origin, hub, seq)`), so a retry after an unacknowledged
//! commit stores nothing twice, and repeated notifications are deduplicated by
//! receivers. A batch's first attempt is a plain `INSERT`: its sequence numbers are new,
//! so no row can exist yet, and PostgreSQL's speculative insertion (which `ON CONFLICT`
//! needs) costs about 40% more per row. Should a first attempt meet a conflict anyway, it
//! is retried with `ON CONFLICT DO NOTHING` like any other failed attempt. When a batch
//! finally fails, every publish in it returns the error, and its sequence numbers are
//! remembered: the next batch that commits first writes a *tombstone* row per hub of the
//! failed batch (see the `tombstone` module; again `ON CONFLICT DO NOTHING`), with a
//! reference notification. Receivers skip the numbers a tombstone covers, so they
//! neither wait for nor report as lost what was never stored; and if the failed batch
//! did commit after all, its real rows win the conflict and are delivered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backplane_core::sequencing::{SkippedRun, runs_of};
use backplane_core::{BackplaneError, EnvelopeKind, NodeId};
use postgres_types::ToSql;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_postgres::{Client, Statement};

use crate::connect::{self, PostgresError, Role, describe, is_transient};
use crate::flush::Committed;
use crate::names::TableNames;
use crate::notification::{self, Packer};
use crate::row::seq_i64;
use crate::shared::{Shared, lock};
use crate::tombstone;

/// Publishes waiting for the publisher task, numbered by the core's queue; each routed
/// to its hub's table.
pub(crate) type PublishQueue = backplane_core::sequencing::PublishQueue<Arc<TableNames>>;

/// A numbered envelope waiting to be written, with its table.
pub(crate) type Pending = backplane_core::sequencing::Pending<Arc<TableNames>>;

/// A run of sequence numbers of one hub whose batch failed, to be written as a
/// tombstone row in its table.
pub(crate) type Tombstone = SkippedRun<Arc<TableNames>>;

/// Number, queue and wait for the commit of one envelope (see
/// [`backplane_core::sequencing::PublishQueue::publish`]).
pub(crate) async fn publish(
    queue: &PublishQueue,
    shared: &Shared,
    hub: &str,
    destination: Option<NodeId>,
    kind: EnvelopeKind,
) -> Result<(), BackplaneError> {
    let table = shared.table_for(hub)?;
    // While the database does not answer, fail at once instead of queueing behind a
    // batch that waits out the command timeout.
    shared.circuit.admit()?;
    queue
        .publish(shared.node, hub, destination, kind, table)
        .await
}

/// The rows and notifications of one batch for one table.
#[derive(Debug)]
struct TableWrite {
    table: Arc<TableNames>,
    /// Whether tombstone rows are among the rows: their batch may have committed after
    /// all, so they must skip rows that exist.
    has_tombstones: bool,
    hubs: Vec<String>,
    seqs: Vec<i64>,
    payloads: Vec<Vec<u8>>,
    notifications: Vec<String>,
}

/// The publishing connection and its prepared statements.
struct PublisherConnection {
    client: Client,
    /// The batch INSERT+NOTIFY statements per table.
    statements: HashMap<String, TableStatements>,
}

/// The two forms of a table's batch INSERT+NOTIFY statement.
struct TableStatements {
    /// Plain `INSERT`, for rows that cannot exist yet.
    fresh: Statement,
    /// `INSERT ... ON CONFLICT DO NOTHING`, for retries and tombstones.
    idempotent: Statement,
}

impl TableStatements {
    /// The statement for `write`, in an attempt that is or is not a retry.
    fn for_write(&self, write: &TableWrite, retry: bool) -> &Statement {
        if retry || write.has_tombstones {
            &self.idempotent
        } else {
            &self.fresh
        }
    }
}

/// The task that writes batches.
pub(crate) struct Publisher {
    shared: Arc<Shared>,
    queue: Arc<PublishQueue>,
    connection: Option<PublisherConnection>,
    /// Sequence numbers of failed batches, written before the next batch.
    tombstones: Vec<Tombstone>,
    /// With [`SynchronousCommit::NotifyBeforeFlush`](crate::SynchronousCommit): where
    /// committed batches wait for their flush, and the sequence numbers of those lost
    /// before it.
    flusher: Option<FlusherLink>,
}

/// The publisher's side of the [`Flusher`](crate::flush::Flusher).
pub(crate) struct FlusherLink {
    pub(crate) committed: mpsc::UnboundedSender<Committed>,
    pub(crate) lost: Arc<Mutex<Vec<Tombstone>>>,
}

/// Why one attempt to write a batch (or to confirm a flush) failed.
pub(crate) enum AttemptError {
    /// Worth retrying on a fresh connection.
    Transient(String),
    /// Retrying cannot help (a permission or data error).
    Fatal(PostgresError),
    /// No connection could be opened: the database is unreachable (the publisher opens
    /// the circuit; the flusher retries like [`AttemptError::Transient`]).
    Unreachable(String),
}

impl AttemptError {
    /// `error` of an attempt at `context`: transient if retrying on a fresh connection
    /// can help.
    pub(crate) fn classify(context: &'static str, error: &tokio_postgres::Error) -> Self {
        if is_transient(error) {
            AttemptError::Transient(describe(error))
        } else {
            AttemptError::Fatal(PostgresError::new(context, error))
        }
    }
}

impl Publisher {
    pub(crate) fn new(
        shared: Arc<Shared>,
        queue: Arc<PublishQueue>,
        client: Option<Client>,
        flusher: Option<FlusherLink>,
    ) -> Self {
        Self {
            shared,
            queue,
            connection: client.map(|client| PublisherConnection {
                client,
                statements: HashMap::new(),
            }),
            tombstones: Vec::new(),
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
                self.tombstones.append(&mut lock(&flusher.lost));
            }
            let writes = self.prepare(&batch);
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
        for tombstone in &self.tombstones {
            if !parts
                .iter()
                .any(|(table, _)| table.qualified == tombstone.route.qualified)
            {
                parts.push((tombstone.route.clone(), Vec::new()));
            }
        }
        let mut tombstones = std::mem::take(&mut self.tombstones);
        let mut still_pending = Vec::new();
        for (table, part) in parts {
            let (mine, rest) = tombstones
                .into_iter()
                .partition(|tombstone| tombstone.route.qualified == table.qualified);
            tombstones = rest;
            self.tombstones = mine;
            let writes = self.prepare(&part);
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
            writes = self.prepare(&batch);
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

    /// Encode the batch (and any tombstones) into per-table rows and notifications.
    fn prepare(&self, batch: &[Pending]) -> Vec<TableWrite> {
        let node = self.shared.node;
        let codec = &self.shared.codec;
        let threshold = self.shared.options.inline_threshold;
        let mut writes: Vec<(TableWrite, Packer)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut slot = |writes: &mut Vec<(TableWrite, Packer)>, table: &Arc<TableNames>| -> usize {
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
                    Packer::new(node),
                ));
                writes.len() - 1
            })
        };
        // Tombstones first: they precede everything in this batch in sequence order.
        for tombstone in &self.tombstones {
            let at = slot(&mut writes, &tombstone.route);
            let (write, packer) = &mut writes[at];
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
            let (write, packer) = &mut writes[at];
            let bytes = codec.encode(envelope);
            if bytes.len() <= threshold {
                packer.inline(&bytes);
            } else if let Some(text) =
                notification::reference(node, envelope.seq, envelope.seq, &envelope.hub)
            {
                packer.reference(text);
            }
            write.hubs.push(envelope.hub.clone());
            write.seqs.push(seq_i64(envelope.seq));
            write.payloads.push(bytes);
        }
        writes
            .into_iter()
            .map(|(mut write, packer)| {
                write.notifications = packer
                    .finish()
                    .into_iter()
                    .map(|text| notification::seal(codec, &write.table.channel, text))
                    .collect();
                write
            })
            .collect()
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
            let attempt = self.attempt(writes, retries.retry);
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

    /// One attempt to write a batch; `retry` when an earlier attempt failed (it may have
    /// committed: rows are then inserted with `ON CONFLICT DO NOTHING`).
    async fn attempt(&mut self, writes: &[TableWrite], retry: bool) -> Result<(), AttemptError> {
        let shared = &self.shared;
        if self
            .connection
            .as_ref()
            .is_none_or(|c| c.client.is_closed())
        {
            let client = open(shared).await.map_err(|e| {
                if e.is_unreachable() {
                    AttemptError::Unreachable(e.to_string())
                } else {
                    AttemptError::Transient(e.to_string())
                }
            })?;
            self.connection = Some(PublisherConnection {
                client,
                statements: HashMap::new(),
            });
        }
        let connection = self.connection.as_mut().expect("connected above");
        let classify = AttemptError::classify;
        for write in writes {
            if !shared.installed.contains(&write.table) {
                connection.statements.remove(&write.table.qualified);
            }
            shared
                .installed
                .ensure(
                    &connection.client,
                    &shared.options.schema_name,
                    &write.table,
                )
                .await
                .map_err(|e| match e.code() {
                    Some(code) if !code.starts_with("08") && code != "57P01" => {
                        AttemptError::Fatal(e)
                    }
                    _ => AttemptError::Transient(e.to_string()),
                })?;
            if !connection.statements.contains_key(&write.table.qualified) {
                let prepare = async |idempotent| {
                    connection
                        .client
                        .prepare(&insert_sql(&write.table, idempotent))
                        .await
                        .map_err(|e| classify("preparing the publish statement", &e))
                };
                let statements = TableStatements {
                    fresh: prepare(false).await?,
                    idempotent: prepare(true).await?,
                };
                connection
                    .statements
                    .insert(write.table.qualified.clone(), statements);
            }
        }
        let origin = shared.node.to_bytes();
        let origin: &[u8] = &origin;
        let result = if let [write] = writes {
            let statement = connection.statements[&write.table.qualified].for_write(write, retry);
            connection
                .client
                .execute(statement, &params(&origin, write))
                .await
                .map(drop)
        } else {
            let PublisherConnection { client, statements } = connection;
            async {
                let transaction = client.transaction().await?;
                for write in writes {
                    let statement = statements[&write.table.qualified].for_write(write, retry);
                    transaction
                        .execute(statement, &params(&origin, write))
                        .await?;
                }
                transaction.commit().await
            }
            .await
        };
        result.map_err(|error| {
            let code = error.code();
            if code == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE)
                || code == Some(&tokio_postgres::error::SqlState::INVALID_SCHEMA_NAME)
            {
                // Someone dropped the table or schema: install it again on the retry.
                for write in writes {
                    shared.installed.forget(&write.table);
                }
            }
            if !retry && code == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
                // A row of this batch exists already (which fresh sequence numbers
                // should rule out): the retry skips existing rows.
                return AttemptError::Transient(describe(&error));
            }
            classify("publishing a batch", &error)
        })
    }
}

/// The retry policy of the publisher and the flusher: transient failures are retried
/// with a growing delay until the command timeout; anything else fails at once.
pub(crate) struct Retries {
    node: NodeId,
    what: &'static str,
    timeout: Duration,
    deadline: Instant,
    delay: Duration,
    last_error: Option<String>,
    /// Whether an attempt failed already.
    pub(crate) retry: bool,
}

impl Retries {
    pub(crate) fn new(node: NodeId, what: &'static str, timeout: Duration) -> Self {
        Self {
            node,
            what,
            timeout,
            deadline: Instant::now() + timeout,
            delay: Duration::from_millis(20),
            last_error: None,
            retry: false,
        }
    }

    /// When the attempts must have succeeded.
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// After a failed attempt (`None`: it ran out of time): the error to give up with,
    /// or `Ok` once it is time for the next attempt. The caller drops its connection on
    /// a transient failure or a timeout: an attempt cut short may still be running on
    /// the server.
    pub(crate) async fn failed(&mut self, failure: Option<AttemptError>) -> Result<(), BatchError> {
        let timed_out = |retries: &mut Self| BatchError::Timeout {
            timeout: retries.timeout,
            last_error: retries.last_error.take(),
        };
        match failure {
            None => return Err(timed_out(self)),
            Some(AttemptError::Fatal(error)) => return Err(BatchError::Fatal(error)),
            Some(AttemptError::Transient(reason) | AttemptError::Unreachable(reason)) => {
                tracing::debug!(node = %self.node, %reason, "[Publish] {} attempt failed; retrying on a fresh connection", self.what);
                self.last_error = Some(reason);
                self.retry = true;
            }
        }
        if Instant::now() + self.delay >= self.deadline {
            return Err(timed_out(self));
        }
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(Duration::from_secs(1));
        Ok(())
    }
}

/// A connection for publishing, with `synchronous_commit` applied.
pub(crate) async fn open(shared: &Shared) -> Result<Client, PostgresError> {
    let client = connect::connect(&shared.options, Role::Publisher, shared.node).await?;
    if let Some(mode) = shared.options.synchronous_commit.as_sql() {
        client
            .batch_execute(&format!("SET synchronous_commit = {mode}"))
            .await
            .map_err(|e| PostgresError::new("setting synchronous_commit", &e))?;
    }
    Ok(client)
}

fn params<'a>(origin: &'a &'a [u8], write: &'a TableWrite) -> [&'a (dyn ToSql + Sync); 6] {
    [
        origin,
        &write.hubs,
        &write.seqs,
        &write.payloads,
        &write.table.channel,
        &write.notifications,
    ]
}

/// One statement per table: the rows and the notifications, in order. `idempotent`
/// skips rows that exist (retries, tombstones).
fn insert_sql(table: &TableNames, idempotent: bool) -> String {
    format!(
        "WITH stored AS (
             INSERT INTO {table} (origin, hub, seq, payload)
             SELECT $1::bytea, r.hub, r.seq, r.payload
             FROM unnest($2::text[], $3::int8[], $4::bytea[]) AS r(hub, seq, payload)
             {on_conflict}
         )
         SELECT count(pg_notify($5::text, n)) FROM unnest($6::text[]) AS n",
        table = table.qualified,
        on_conflict = if idempotent {
            "ON CONFLICT (origin, hub, seq) DO NOTHING"
        } else {
            ""
        },
    )
}

/// Why a batch (or a flush confirmation) failed for good.
#[derive(Debug)]
pub(crate) enum BatchError {
    /// Retried until the command timeout.
    Timeout {
        timeout: Duration,
        last_error: Option<String>,
    },
    /// An error retrying cannot fix.
    Fatal(PostgresError),
    /// The database does not answer (the circuit is open); says why.
    Unavailable(String),
}

impl BatchError {
    pub(crate) fn to_backplane(&self) -> BackplaneError {
        match self {
            BatchError::Timeout { timeout, .. } => BackplaneError::Timeout(*timeout),
            BatchError::Fatal(error) => BackplaneError::backend(error.clone()),
            BatchError::Unavailable(reason) => BackplaneError::Unavailable {
                reason: reason.clone(),
            },
        }
    }
}

impl std::fmt::Display for BatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchError::Timeout {
                timeout,
                last_error: Some(error),
            } => write!(f, "timed out after {timeout:?}; last error: {error}"),
            BatchError::Timeout { timeout, .. } => write!(f, "timed out after {timeout:?}"),
            BatchError::Fatal(error) => error.fmt(f),
            BatchError::Unavailable(reason) => write!(f, "database unavailable: {reason}"),
        }
    }
}
