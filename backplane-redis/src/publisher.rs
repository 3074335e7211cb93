//! The publishing side: one task per node writes the core's ordered batches, one
//! `MULTI`/`EXEC` pipeline per hub, one batch in flight.
//!
//! A batch that fails on a connection error is sent again on a fresh connection until
//! `command_timeout`. The transaction makes each attempt all or nothing; an attempt whose
//! reply was lost may have been applied, and then its entries are in the stream twice:
//! receivers drop the second copy by sequence number. A batch that finally fails leaves
//! holes in the numbering, written as skipped runs in front of the hub's next batch.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backplane_core::sequencing::{Pending, PublishQueue, SkippedRun, runs_of};
use backplane_core::{BackplaneError, Jitter};
use redis::aio::MultiplexedConnection;
use tokio::time::Instant;

use crate::context::{NodeContext, Role, backend, is_transient};
use crate::entry;

/// Where an envelope goes: its hub's stream key.
pub(crate) type StreamKey = Arc<str>;

/// The node's publish queue, routed by stream key.
pub(crate) type Queue = PublishQueue<StreamKey>;

/// The task that writes batches.
pub(crate) struct Publisher {
    /// Identity, settings, client.
    context: Arc<NodeContext>,
    /// Where publishes wait, numbered.
    queue: Arc<Queue>,
    /// The publishing connection; replaced after a connection error.
    connection: Option<MultiplexedConnection>,
    /// Numbers of failed batches, written in front of their hub's next batch.
    skipped: Vec<SkippedRun<StreamKey>>,
    /// Spreads retries.
    jitter: Jitter,
}

impl Publisher {
    pub(crate) fn new(
        context: Arc<NodeContext>,
        queue: Arc<Queue>,
        connection: MultiplexedConnection,
    ) -> Self {
        let jitter = Jitter::new(context.node);
        Self {
            context,
            queue,
            connection: Some(connection),
            skipped: Vec::new(),
            jitter,
        }
    }

    /// Write batches until the queue is shut down and drained.
    pub(crate) async fn run(mut self) {
        let options = &self.context.options;
        let (items, bytes) = (options.publish_batch_size, options.publish_batch_bytes);
        while let Some(batch) = self.queue.next_batch(items, bytes, Duration::ZERO).await {
            // One transaction per hub (a cluster slot each), in first-seen order; order
            // only matters within a hub.
            let mut groups: Vec<(StreamKey, Vec<Pending<StreamKey>>)> = Vec::new();
            for pending in batch {
                match groups.iter_mut().find(|(key, _)| *key == pending.route) {
                    Some((_, group)) => group.push(pending),
                    None => groups.push((pending.route.clone(), vec![pending])),
                }
            }
            for (key, group) in groups {
                self.write(&key, group).await;
            }
        }
        tracing::debug!(node = %self.context.node, "[Publish] publisher stopped");
    }

    /// Write one hub's part of a batch (behind its skipped runs) and complete it.
    async fn write(&mut self, key: &StreamKey, group: Vec<Pending<StreamKey>>) {
        let (runs, others): (Vec<_>, Vec<_>) = std::mem::take(&mut self.skipped)
            .into_iter()
            .partition(|run| run.route == *key);
        self.skipped = others;
        let pipeline = self.pipeline(key, &runs, &group);
        let timeout = self.context.options.command_timeout;
        let deadline = Instant::now() + timeout;
        let mut attempt = 0;
        let outcome = loop {
            let error = match self.attempt(&pipeline, deadline).await {
                Ok(()) => break Ok(()),
                Err(error) => error,
            };
            self.connection = None;
            let now = Instant::now();
            if !is_transient(&error) {
                break Err(backend("writing a batch to Redis", &error));
            }
            if now >= deadline {
                tracing::warn!(node = %self.context.node, %error, "[Publish] batch failed until the command timeout");
                break Err(BackplaneError::Timeout(timeout));
            }
            let delay = self
                .context
                .backoff(attempt, self.jitter.next_fraction())
                .min(deadline - now);
            attempt += 1;
            tracing::debug!(node = %self.context.node, %error, ?delay, "[Publish] batch failed; retrying on a fresh connection");
            tokio::time::sleep(delay).await;
        };
        match outcome {
            Ok(()) => {
                tracing::debug!(node = %self.context.node, key = &**key, envelopes = group.len(), "[Publish] batch written");
                for pending in group {
                    pending.finish(Ok(()));
                }
            }
            Err(error) => {
                // Skipped runs stay ahead of this batch's numbers, in order.
                self.skipped.extend(runs);
                self.skipped.extend(runs_of(&group));
                let message = error.to_string();
                for pending in group {
                    let error = match &error {
                        BackplaneError::Timeout(timeout) => BackplaneError::Timeout(*timeout),
                        _ => BackplaneError::backend(message.clone()),
                    };
                    pending.finish(Err(error));
                }
            }
        }
    }

    /// One try on the current (or a fresh) connection.
    async fn attempt(
        &mut self,
        pipeline: &redis::Pipeline,
        deadline: Instant,
    ) -> Result<(), redis::RedisError> {
        let timed_out =
            || redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
        let attempt = async {
            if self.connection.is_none() {
                self.connection = Some(self.context.connect(Role::Publisher).await?);
            }
            let connection = self.connection.as_mut().expect("connected above");
            pipeline.query_async::<()>(connection).await
        };
        tokio::time::timeout_at(deadline, attempt)
            .await
            .unwrap_or_else(|_| Err(timed_out()))
    }

    /// `MULTI`, the skipped runs, one `XADD` per envelope, the age trim and expiry, `EXEC`.
    fn pipeline(
        &self,
        key: &str,
        runs: &[SkippedRun<StreamKey>],
        group: &[Pending<StreamKey>],
    ) -> redis::Pipeline {
        let options = &self.context.options;
        let origin = self.context.node.to_bytes();
        let xadd = |pipeline: &mut redis::Pipeline| {
            let command = pipeline.cmd("XADD").arg(key);
            if let Some(max_len) = options.max_len {
                command.arg("MAXLEN").arg("~").arg(max_len);
            }
            command.arg("*").arg(entry::ORIGIN).arg(&origin[..]);
        };
        let mut pipeline = redis::pipe();
        pipeline.atomic();
        for run in runs {
            xadd(&mut pipeline);
            pipeline
                .arg(entry::SEQ)
                .arg(run.last)
                .arg(entry::SKIPPED_FROM)
                .arg(run.first)
                .ignore();
        }
        for pending in group {
            xadd(&mut pipeline);
            pipeline
                .arg(entry::SEQ)
                .arg(pending.envelope.seq)
                .arg(entry::ENVELOPE)
                .arg(self.context.codec.encode(&pending.envelope))
                .ignore();
        }
        if let Some(age) = options.max_age {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            let oldest = now.saturating_sub(age).as_millis();
            pipeline
                .cmd("XTRIM")
                .arg(key)
                .arg("MINID")
                .arg("~")
                .arg(oldest.to_string())
                .ignore();
            pipeline
                .cmd("PEXPIRE")
                .arg(key)
                .arg(age.as_millis().to_string())
                .ignore();
        }
        pipeline
    }
}
