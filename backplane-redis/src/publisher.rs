//! The publishing side's transport: how one hub's part of a batch is stored, as one
//! `MULTI`/`XADD`.../`EXEC` pipeline. The loop around it (batching, retries until
//! `command_timeout`, completion, skipped runs) is `backplane_core::node`'s.
//!
//! A failed attempt is sent again on a fresh connection. The transaction makes each
//! attempt all or nothing; an attempt whose reply was lost may have been applied, and
//! then its entries are in the stream twice: receivers drop the second copy by sequence
//! number. A part that finally fails leaves holes in the numbering, written as skipped
//! runs in front of the hub's next part.

use std::sync::Arc;
use std::time::SystemTime;

use backplane_core::node::{BatchStore, WriteError};
use backplane_core::sequencing::{Pending, SkippedRun};
use redis::aio::MultiplexedConnection;
use tokio::time::Instant;

use crate::context::{NodeContext, Role, is_transient};
use crate::entry;

/// Where an envelope goes: its hub's stream key.
pub(crate) type StreamKey = Arc<str>;

/// Writes a node's parts to Redis.
pub(crate) struct StreamWriter {
    /// Identity, settings, client.
    context: Arc<NodeContext>,
    /// The publishing connection; replaced after a connection error.
    connection: Option<MultiplexedConnection>,
}

impl StreamWriter {
    pub(crate) fn new(context: Arc<NodeContext>, connection: MultiplexedConnection) -> Self {
        Self {
            context,
            connection: Some(connection),
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

impl BatchStore for StreamWriter {
    type Route = StreamKey;
    type Part = redis::Pipeline;
    type Error = redis::RedisError;

    const ACTION: &'static str = "writing a batch to Redis";

    fn prepare(
        &self,
        key: &StreamKey,
        runs: &[SkippedRun<StreamKey>],
        envelopes: &[Pending<StreamKey>],
    ) -> redis::Pipeline {
        self.pipeline(key, runs, envelopes)
    }

    async fn write(
        &mut self,
        pipeline: &mut redis::Pipeline,
        deadline: Instant,
    ) -> Result<(), WriteError<redis::RedisError>> {
        self.attempt(pipeline, deadline).await.map_err(|error| {
            self.connection = None;
            WriteError {
                // All or nothing: a failed transaction stored none of the part.
                stored: 0,
                transient: is_transient(&error),
                cause: error,
            }
        })
    }
}
