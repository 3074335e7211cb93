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
//!
//! The files, one concern each:
//! - `queue.rs`: numbering and queueing a publish;
//! - `task.rs`: the publisher task (batches, retries, when tombstones are written or
//!   given up; the list of those waiting is `tombstone::PendingTombstones`);
//! - `batch.rs`: a batch's rows and notifications per table;
//! - `connection.rs`: the publishing connection, its statements, one attempt;
//! - `retry.rs`: the retry policy and why an attempt or a batch failed;
//! - `flush.rs`: durability confirmation for `SynchronousCommit::NotifyBeforeFlush`.

mod batch;
mod connection;
pub(crate) mod flush;
mod queue;
mod retry;
mod task;

pub(crate) use connection::open;
pub(crate) use queue::{PublishQueue, publish};
pub(crate) use task::Publisher;
